//! Helpers for the deployment tests (`tests/deploy_*.rs`, one per tool):
//! the repository's files, the tools `.ci/run` installs (pip console
//! scripts and Debian binaries), YAML read by PyYAML, the flags of
//! `iamd serve --help` (every flag any artefact passes to iamd must be one
//! it lists), the kustomize build of `deploy/kubernetes/`, and child
//! processes killed when a test ends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
pub const ERIN: &str = "arn:aws:iam::444455556666:user/erin";
pub const HELLO: &str = "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Where pip puts the console scripts of the packages `.ci/run` installs.
pub fn pip_script(name: &str) -> PathBuf {
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
pub fn system_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run .ci/run");
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command and insists that it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    o
}

/// YAML (one or more documents) to JSON values, by PyYAML (a dependency of
/// kubernetes-validate, pinned in tests/python/requirements.txt).
pub fn yaml_docs(yaml: &str) -> Vec<Value> {
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
pub fn serve_help() -> &'static (BTreeSet<String>, BTreeSet<String>) {
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
pub fn iamd_flags(args: &[String], what: &str) -> BTreeMap<String, String> {
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

/// A child process killed when the test ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl kustomize deploy/kubernetes`: the YAML and its documents.
pub fn kustomize_build() -> (String, Vec<Value>) {
    kustomize_build_at("deploy/kubernetes")
}

/// `kubectl kustomize` of a kustomization below the repository.
pub fn kustomize_build_at(dir: &str) -> (String, Vec<Value>) {
    let o = run_ok(
        Command::new(pip_script("kubectl"))
            .arg("kustomize")
            .arg(repo().join(dir)),
    );
    let yaml = String::from_utf8(o.stdout).unwrap();
    let docs = yaml_docs(&yaml);
    (yaml, docs)
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}* in the build"))
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The names the rules of `deploy/prometheus/alerts.yaml` give under `key`:
/// `alert` for the alerts, `record` for the recording rules.
pub fn alert_rule_names(key: &str) -> BTreeSet<String> {
    let rules = &yaml_docs(&read("deploy/prometheus/alerts.yaml"))[0];
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r[key].as_str().map(str::to_owned))
        .collect()
}
