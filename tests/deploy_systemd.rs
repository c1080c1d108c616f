//! `deploy/systemd/iamd.service`, checked by the real tools (Debian
//! `systemd` and `strace`, installed by `.ci/run`): `systemd-analyze verify`
//! and `security`, and its syscall filter against the syscalls iamd makes
//! under `strace` through its whole life.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod envoy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::deploy::{
    iamd_flags, read, run_ok, system_tool, text, wait_until, Killed, ALICE, ERIN, HELLO,
};
use common::{example_store, request};
use iamd::server::pb::Decision;

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
    let uds = common::uds_channel(&socket).await;
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
