//! The etcd store backend against a real three-member etcd cluster (Debian's
//! `etcd-server`, on loopback ports): `iamd store push` and `pull`, two
//! sidecars following one store, changes by push and by plain `etcdctl put`,
//! a push seen whole, a leader killed under load, the whole cluster down, a
//! compacted watch, and a bad document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use common::{copy_dir, example_store, parse_prometheus, request, sample, Iamd};
use iamd::server::pb::{self, Decision};

const ACCOUNT: &str = "111122223333";
const CALLER: &str = "arn:aws:iam::111122223333:user/partner";

fn function(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}")
}

/// A function policy letting the account's own users invoke `name`, or
/// denying them.
fn policy(name: &str, effect: &str) -> String {
    let arn = function(name);
    format!(
        r#"{{"Policy": {{"Version": "2012-10-17", "Id": "default", "Statement": [
  {{"Sid": "partner", "Effect": "{effect}", "Principal": "*", "Action": "lambda:InvokeFunction",
    "Resource": "{arn}", "Condition": {{"StringEquals": {{"aws:PrincipalAccount": "{ACCOUNT}"}}}}}}]}}}}"#
    )
}

fn policy_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("account-{ACCOUNT}/function-policies/{name}.json"))
}

fn key(name: &str) -> String {
    format!("/iamd/account-{ACCOUNT}/function-policies/{name}.json")
}

/// The example store plus function `f`'s policy with `effect`.
fn store_dir(effect: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_store(), dir.path());
    std::fs::write(policy_path(dir.path(), "f"), policy("f", effect)).unwrap();
    dir
}

fn iamd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(args)
        .output()
        .unwrap()
}

/// `iamd store push`; the revision it reports.
fn push(url: &str, dir: &Path) -> u64 {
    let out = iamd(&["store", "push", "--store", url, dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "push failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .trim()
        .rsplit_once("revision ")
        .and_then(|(_, r)| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in `{stdout}`"))
}

/// A three-member cluster with the example store (and `f` allowed) pushed
/// to the prefix `iamd`: the cluster, the `--store` URL, the directory
/// pushed and the push's revision.
fn pushed_store() -> (Cluster, String, tempfile::TempDir, u64) {
    let cluster = Cluster::start(3);
    let url = cluster.store("iamd");
    let dir = store_dir("Allow");
    let revision = push(&url, dir.path());
    (cluster, url, dir, revision)
}

async fn decide(
    client: &mut pb::authorizer_client::AuthorizerClient<tonic::transport::Channel>,
    name: &str,
) -> (Decision, u64) {
    let r = client
        .authorize(request(
            CALLER,
            "lambda:InvokeFunction",
            &function(name),
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    (r.decision(), r.revision)
}

/// Polls until `f` is decided `want` at `revision`; how long it took.
async fn wait_for(iamd: &Iamd, want: Decision, revision: u64, within: Duration) -> Duration {
    let mut client = iamd.client().await;
    let start = Instant::now();
    loop {
        let (d, r) = decide(&mut client, "f").await;
        if d == want && r == revision {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not {want:?} at revision {revision} within {within:?}: {d:?} at {r}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn metric(iamd: &Iamd, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&parse_prometheus(&iamd.metrics_text()), name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_follow_one_pushed_store_and_agree() {
    let (cluster, url, dir, first) = pushed_store();

    let a = Iamd::start_loaded(Path::new(&url), &[]);
    let b = Iamd::start_loaded(Path::new(&url), &["--max-revision-wait-ms", "300"]);
    for sidecar in [&a, &b] {
        let (d, r) = decide(&mut sidecar.client().await, "f").await;
        assert_eq!(
            (d, r),
            (Decision::Allow, first),
            "the pushed store at the push's revision"
        );
        assert_eq!(metric(sidecar, "iamd_store_connected", &[]), Some(1.0));
        assert_eq!(
            metric(sidecar, "iamd_store_applied_revision", &[]),
            Some(first as f64)
        );
    }

    // An edited copy, pushed: both flip, at the push's revision.
    std::fs::write(policy_path(dir.path(), "f"), policy("f", "Deny")).unwrap();
    let second = push(&url, dir.path());
    assert!(second > first);
    for sidecar in [&a, &b] {
        let took = wait_for(
            sidecar,
            Decision::ExplicitDeny,
            second,
            Duration::from_secs(1),
        )
        .await;
        eprintln!("push to decision: {took:?}");
    }

    // A plain etcdctl put of one key: both flip again.
    let third = cluster.put(&key("f"), &policy("f", "Allow"));
    for sidecar in [&a, &b] {
        let took = wait_for(sidecar, Decision::Allow, third, Duration::from_secs(1)).await;
        eprintln!("etcdctl put to decision: {took:?}");
    }

    // Read your writes: a request bound to the write's revision is answered
    // from that revision or later, on any sidecar, however soon it comes.
    let fourth = cluster.put(&key("f"), &policy("f", "Deny"));
    for sidecar in [&a, &b] {
        let mut client = sidecar.client().await;
        let mut bound = request(CALLER, "lambda:InvokeFunction", &function("f"), &[]);
        bound.min_revision = fourth;
        let r = client.authorize(bound.clone()).await.unwrap().into_inner();
        assert_eq!((r.decision(), r.revision), (Decision::ExplicitDeny, fourth));
        let batch = pb::AuthorizeBatchRequest {
            requests: vec![request(
                CALLER,
                "lambda:InvokeFunction",
                &function("f"),
                &[],
            )],
            min_revision: fourth,
        };
        let r = client.authorize_batch(batch).await.unwrap().into_inner();
        assert_eq!(r.revision, fourth);
    }
    // A revision that never comes: UNAVAILABLE after --max-revision-wait-ms.
    let mut future = request(CALLER, "lambda:InvokeFunction", &function("f"), &[]);
    future.min_revision = fourth + 1000;
    let started = Instant::now();
    let err = b.client().await.authorize(future).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains(&format!(
            "this sidecar serves revision {fourth}; min_revision {}",
            fourth + 1000
        )),
        "{}",
        err.message()
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let third = cluster.put(&key("f"), &policy("f", "Allow"));
    wait_for(&a, Decision::Allow, third, Duration::from_secs(1)).await;

    // validate and check read the same store.
    let out = iamd(&["validate", "--store", &url]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("store OK: 2 accounts"));
    let out = iamd(&[
        "check",
        "--store",
        &url,
        "--principal",
        CALLER,
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &function("f"),
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "Allow");

    // pull gives the documents back, the etcdctl edit included.
    let pulled = tempfile::tempdir().unwrap();
    let out = iamd(&[
        "store",
        "pull",
        "--store",
        &url,
        pulled.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(policy_path(dir.path(), "f"), policy("f", "Allow")).unwrap();
    let want = iamd::store::read_documents(dir.path()).unwrap();
    let got = iamd::store::read_documents(pulled.path()).unwrap();
    assert_eq!(got, want);
    // A pull never writes into a directory that holds something.
    let out = iamd(&[
        "store",
        "pull",
        "--store",
        &url,
        pulled.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_store_is_refused_before_anything_is_written() {
    let (cluster, url, dir, _) = pushed_store();
    let before = cluster.ctl(&["get", "--prefix", "/iamd/", "-w", "json"]);
    let keys = |json: &str| -> Vec<(String, i64)> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["kvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| {
                (
                    kv["key"].as_str().unwrap().to_owned(),
                    kv["mod_revision"].as_i64().unwrap(),
                )
            })
            .collect()
    };

    std::fs::write(
        policy_path(dir.path(), "g"),
        r#"{"Policy": {"Statement": [{"Effect": "Maybe"}]}}"#,
    )
    .unwrap();
    std::fs::write(policy_path(dir.path(), "f"), policy("f", "Deny")).unwrap();
    let out = iamd(&[
        "store",
        "push",
        "--store",
        &url,
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let validate = iamd(&["validate", "--store", dir.path().to_str().unwrap()]);
    // The same findings as `iamd validate`, word for word.
    assert_eq!(stdout, String::from_utf8_lossy(&validate.stdout));
    assert!(stdout.contains("function-policies/g.json"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was pushed"));
    let after = cluster.ctl(&["get", "--prefix", "/iamd/", "-w", "json"]);
    assert_eq!(keys(&after), keys(&before), "a refused push wrote nothing");

    // A second push while one is in progress is refused; --force takes over.
    cluster.put("/iamd/.push", r#"{"id": "dead-pusher"}"#);
    std::fs::remove_file(policy_path(dir.path(), "g")).unwrap();
    let out = iamd(&[
        "store",
        "push",
        "--store",
        &url,
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another push is in progress"),
        "{out:?}"
    );
    let out = iamd(&[
        "store",
        "push",
        "--force",
        "--store",
        &url,
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        cluster.ctl(&["get", "/iamd/.push"]).is_empty(),
        "the marker is gone after the commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_many_transactions_is_seen_whole() {
    let cluster = Cluster::start(3);
    let url = cluster.store("iamd");
    let dir = store_dir("Allow");
    // Enough documents that a push that rewrites them all takes several
    // transactions (etcd allows 128 operations in one).
    let fillers = 300;
    let write = |round: usize, f: &str, g: &str| {
        std::fs::write(policy_path(dir.path(), "f"), policy("f", f)).unwrap();
        std::fs::write(policy_path(dir.path(), "g"), policy("g", g)).unwrap();
        for i in 0..fillers {
            let name = format!("filler-{i}");
            let text = policy(&name, "Allow").replace("\"default\"", &format!("\"round-{round}\""));
            std::fs::write(policy_path(dir.path(), &name), text).unwrap();
        }
    };
    write(0, "Allow", "Deny");
    push(&url, dir.path());
    let sidecar = Iamd::start_loaded(Path::new(&url), &[]);

    let done = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let mut client = sidecar.client().await;
    let poller = {
        let done = done.clone();
        let polls = polls.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let batch = pb::AuthorizeBatchRequest {
                    requests: vec![
                        request(CALLER, "lambda:InvokeFunction", &function("f"), &[]),
                        request(CALLER, "lambda:InvokeFunction", &function("g"), &[]),
                    ],
                    ..Default::default()
                };
                let r = client.authorize_batch(batch).await.unwrap().into_inner();
                let pair: Vec<Decision> = r.responses.iter().map(|r| r.decision()).collect();
                // f and g always change together: never both allowed or both denied.
                assert_ne!(pair[0], pair[1], "a half-applied push: {pair:?}");
                seen.push(pair[0]);
                polls.fetch_add(1, Ordering::Relaxed);
            }
            seen
        })
    };
    for round in 1..=4 {
        let (f, g) = if round % 2 == 1 {
            ("Deny", "Allow")
        } else {
            ("Allow", "Deny")
        };
        write(round, f, g);
        let revision = push(&url, dir.path());
        let want = if f == "Deny" {
            Decision::ExplicitDeny
        } else {
            Decision::Allow
        };
        wait_for(&sidecar, want, revision, Duration::from_secs(10)).await;
    }
    done.store(true, Ordering::Relaxed);
    let seen = poller.await.unwrap();
    assert!(
        polls.load(Ordering::Relaxed) > 20,
        "the poller ran throughout"
    );
    assert!(seen.contains(&Decision::Allow) && seen.contains(&Decision::ExplicitDeny));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecars_ride_out_a_killed_leader_under_load() {
    let (mut cluster, url, _dir, _) = pushed_store();
    let a = Iamd::start_loaded(Path::new(&url), &[]);
    let b = Iamd::start_loaded(Path::new(&url), &[]);

    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..16 {
        let sidecar = if i % 2 == 0 { &a } else { &b };
        let mut client = sidecar.client().await;
        let done = done.clone();
        let answered = answered.clone();
        clients.push(tokio::spawn(async move {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                // Any failed RPC fails the test (unwrap).
                let (d, r) = decide(&mut client, "f").await;
                assert!(
                    matches!(d, Decision::Allow | Decision::ExplicitDeny),
                    "{d:?}"
                );
                assert!(r >= last, "revision went back from {last} to {r}");
                last = r;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let writer = {
        let done = done.clone();
        let endpoints = cluster.endpoints();
        tokio::task::spawn_blocking(move || {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let effect = if i % 2 == 0 { "Deny" } else { "Allow" };
                // etcdctl retries against the other members during the election.
                let _ = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &endpoints,
                        "--command-timeout",
                        "5s",
                        "put",
                        &key("f"),
                        &policy("f", effect),
                    ])
                    .output();
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.leader();
    cluster.kill_member(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 100);

    // After the election both converge on the last write.
    let last = cluster.put(&key("f"), &policy("f", "Deny"));
    for sidecar in [&a, &b] {
        wait_for(
            sidecar,
            Decision::ExplicitDeny,
            last,
            Duration::from_secs(15),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_the_last_snapshot_serves_and_catches_up_after() {
    let (mut cluster, url, _dir, first) = pushed_store();
    let sidecar = Iamd::start_loaded(Path::new(&url), &[]);

    cluster.kill_all();
    let mut client = sidecar.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&sidecar, "iamd_store_connected", &[]) != Some(0.0) {
        assert!(Instant::now() < deadline, "the outage does not show");
        // Answers keep coming from the last snapshot meanwhile.
        assert_eq!(decide(&mut client, "f").await, (Decision::Allow, first));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(decide(&mut client, "f").await, (Decision::Allow, first));
    assert_eq!(
        metric(&sidecar, "iamd_store_applied_revision", &[]),
        Some(first as f64)
    );
    assert!(sidecar
        .wait_for_log(Duration::from_secs(1), |v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("lost the store's etcd cluster")))
        .is_some());

    cluster.start_all();
    let next = cluster.put(&key("f"), &policy("f", "Deny"));
    wait_for(
        &sidecar,
        Decision::ExplicitDeny,
        next,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(metric(&sidecar, "iamd_store_connected", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_compacted_away_reads_the_store_again() {
    let (mut cluster, url, _dir, _) = pushed_store();
    let sidecar = Iamd::start_loaded(Path::new(&url), &[]);

    // The sidecar stops and its connections to etcd die with the members;
    // then the store changes and etcd compacts its history, so the watch
    // the sidecar makes again cannot resume where it stopped.
    sidecar.signal("STOP");
    cluster.kill_all();
    cluster.start_all();
    for effect in ["Deny", "Allow", "Deny"] {
        cluster.put(&key("f"), &policy("f", effect));
    }
    let latest = cluster.put(&key("g"), &policy("g", "Allow"));
    cluster.ctl(&["compaction", &latest.to_string()]);
    sidecar.signal("CONT");

    wait_for(
        &sidecar,
        Decision::ExplicitDeny,
        latest,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        decide(&mut sidecar.client().await, "g").await,
        (Decision::Allow, latest)
    );
    assert!(
        sidecar
            .wait_for_log(Duration::from_secs(1), |v| v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("compacted past")))
            .is_some(),
        "{:?}",
        sidecar.logs.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_document_is_rejected_alone_keeps_its_last_good_version_and_names_its_key() {
    let (cluster, url, _dir, first) = pushed_store();
    let sidecar = Iamd::start_loaded(Path::new(&url), &[]);
    let mut client = sidecar.client().await;
    let rejection = |document: &'static str| {
        move |v: &serde_json::Value| {
            v["fields"]["message"] == "document rejected; its last good version keeps serving"
                && v["fields"]["document"] == document
        }
    };

    // A document with an ERROR of its own.
    let bad = cluster.put(&key("f"), r#"{"Policy": {"Statement": [{"Effect": "Deny""#);
    let logged = sidecar
        .wait_for_log(
            Duration::from_secs(10),
            rejection("account-111122223333/function-policies/f.json"),
        )
        .expect("the bad document is reported");
    let first_error = logged["fields"]["first_error"].as_str().unwrap();
    assert!(
        first_error.contains("account-111122223333/function-policies/f.json"),
        "{first_error}"
    );
    // Its last good version decides, at the revision of the bad put: the
    // store as of that revision is applied as far as it can be.
    assert!(bad > first);
    assert_eq!(decide(&mut client, "f").await, (Decision::Allow, bad));
    assert_eq!(
        metric(&sidecar, "iamd_store_documents_rejected", &[]),
        Some(1.0)
    );
    assert!(metric(&sidecar, "iamd_store_document_rejections_total", &[]).unwrap() >= 1.0);
    let out = iamd(&["validate", "--store", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("account-111122223333/function-policies/f.json"),
        "{stdout}"
    );

    // Other documents still change while it is held back.
    let g = cluster.put(&key("g"), &policy("g", "Deny"));
    wait_revision(&sidecar, g).await;
    assert_eq!(decide(&mut client, "g").await, (Decision::ExplicitDeny, g));
    assert_eq!(decide(&mut client, "f").await, (Decision::Allow, g));

    // A document that breaks a check across documents: it attaches a
    // managed policy no document defines.
    let extra = "/iamd/account-111122223333/extra.json";
    let broken = cluster.put(
        extra,
        r#"{"UserDetailList": [{"UserName": "x", "Arn": "arn:aws:iam::111122223333:user/x",
            "AttachedManagedPolicies": [{"PolicyName": "nope", "PolicyArn": "arn:aws:iam::111122223333:policy/nope"}]}]}"#,
    );
    let logged = sidecar
        .wait_for_log(
            Duration::from_secs(10),
            rejection("account-111122223333/extra.json"),
        )
        .expect("the broken reference is reported");
    let first_error = logged["fields"]["first_error"].as_str().unwrap();
    assert!(
        first_error.contains("UNKNOWN_MANAGED_POLICY"),
        "{first_error}"
    );
    assert!(
        first_error.contains("account-111122223333/extra.json"),
        "{first_error}"
    );
    wait_revision(&sidecar, broken).await;
    assert_eq!(
        metric(&sidecar, "iamd_store_documents_rejected", &[]),
        Some(2.0)
    );

    // Fixed, f applies; deleted, the broken document no longer counts.
    let fixed = cluster.put(&key("f"), &policy("f", "Deny"));
    wait_for(
        &sidecar,
        Decision::ExplicitDeny,
        fixed,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(&sidecar, "iamd_store_documents_rejected", &[]),
        Some(1.0)
    );
    cluster.ctl(&["del", extra]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&sidecar, "iamd_store_documents_rejected", &[]) != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the deleted document is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `iamd validate` names nothing now; the whole store validates.
    let out = iamd(&["validate", "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_while_etcd_is_down_serves_once_it_has_read_the_store() {
    let (mut cluster, url, _dir, first) = pushed_store();
    cluster.kill_all();

    let sidecar = Iamd::start(Path::new(&url), &[]);
    let mut client = sidecar.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = client
        .authorize(request(
            CALLER,
            "lambda:InvokeFunction",
            &function("f"),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    cluster.start_all();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client
            .authorize(request(
                CALLER,
                "lambda:InvokeFunction",
                &function("f"),
                &[],
            ))
            .await;
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                assert_eq!((r.decision(), r.revision), (Decision::Allow, first));
                break;
            }
            Err(e) => assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot after etcd came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_with_auth_takes_a_user_and_password() {
    let cluster = Cluster::start(3);
    cluster.ctl(&["user", "add", "root:root-secret"]);
    cluster.ctl(&["auth", "enable"]);
    let url = cluster.store("iamd");
    let dir = store_dir("Allow");
    let pushed = iamd_with_env(
        &[
            "store",
            "push",
            "--store",
            &url,
            dir.path().to_str().unwrap(),
        ],
        &[
            ("IAMD_ETCD_USER", "root"),
            ("IAMD_ETCD_PASSWORD", "root-secret"),
        ],
    );
    assert!(pushed.status.success(), "{pushed:?}");

    let sidecar = Iamd::start_loaded(
        Path::new(&url),
        &["--etcd-user", "root", "--etcd-password", "root-secret"],
    );
    assert_eq!(
        decide(&mut sidecar.client().await, "f").await.0,
        Decision::Allow
    );

    // Without the password, or with a wrong one, nothing is read.
    let out = iamd(&["validate", "--store", &url]);
    assert_eq!(out.status.code(), Some(1));
    let out = iamd_with_env(
        &["validate", "--store", &url],
        &[("IAMD_ETCD_USER", "root"), ("IAMD_ETCD_PASSWORD", "wrong")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("etcd failed the authentication"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is never printed: {stderr}"
    );
}

fn iamd_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_over_tls_takes_a_ca_and_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let tls = common::etcd::Tls::generate(certs.path());
    let cluster = Cluster::start_tls(1, tls.clone());
    let url = cluster.store("iamd");
    let dir = store_dir("Allow");
    let flags: Vec<String> = [
        ("--etcd-ca", &tls.ca),
        ("--etcd-cert", &tls.client_cert),
        ("--etcd-key", &tls.client_key),
    ]
    .iter()
    .flat_map(|(flag, path)| [(*flag).to_owned(), path.display().to_string()])
    .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    let push_args = [
        &["store", "push", "--store", &url][..],
        &flags,
        &[dir.path().to_str().unwrap()],
    ]
    .concat();
    let out = iamd(&push_args);
    assert!(out.status.success(), "{out:?}");
    let sidecar = Iamd::start_loaded(Path::new(&url), &flags);
    assert_eq!(
        decide(&mut sidecar.client().await, "f").await.0,
        Decision::Allow
    );
    let revision = cluster.put(&key("f"), &policy("f", "Deny"));
    wait_for(
        &sidecar,
        Decision::ExplicitDeny,
        revision,
        Duration::from_secs(5),
    )
    .await;

    // Without the client certificate etcd refuses the connection; without
    // the CA iamd does not trust etcd's certificate (nor speaks TLS).
    let ca = tls.ca.to_str().unwrap();
    for args in [
        &["validate", "--store", &url, "--etcd-ca", ca][..],
        &["validate", "--store", &url],
    ] {
        let out = iamd(args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot read the store `{url}`")),
            "{stderr}"
        );
        eprintln!("{stderr}");
    }
    // A missing file is named.
    let out = iamd(&[
        "validate",
        "--store",
        &url,
        "--etcd-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read --etcd-ca `/nonexistent/ca.pem`"),
        "{out:?}"
    );
}

/// The revision a sidecar answers from.
async fn serving_revision(sidecar: &Iamd) -> u64 {
    let r = sidecar
        .client()
        .await
        .authorize(request("*", "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap()
        .into_inner();
    r.revision
}

async fn wait_revision(sidecar: &Iamd, revision: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving_revision(sidecar).await != revision {
        assert!(
            Instant::now() < deadline,
            "revision {revision} never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_larger_than_one_etcd_request_travel_in_chunks() {
    let cluster = Cluster::start(3);
    let url = cluster.store("iamd");
    let dir = tempfile::tempdir().unwrap();
    // Two accounts whose authorization details are 2.5 MB each: over etcd's
    // 1.5 MiB per request.
    let out = iamd(&[
        "gen-store",
        "--accounts",
        "2",
        "--functions-per-account",
        "5",
        "--principals",
        "4000",
        "--seed",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let details = dir
        .path()
        .join("account-100000000000/authorization-details.json");
    assert!(std::fs::metadata(&details).unwrap().len() > 2_000_000);
    let chunk_keys = || -> Vec<String> {
        cluster
            .ctl(&["get", "--prefix", "/iamd/.chunks/", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };

    let first = push(&url, dir.path());
    assert_eq!(
        chunk_keys().len(),
        6,
        "3 chunks of at most 1 MiB per account"
    );
    let sidecar = Iamd::start_loaded(Path::new(&url), &[]);
    assert_eq!(serving_revision(&sidecar).await, first);
    // The same store as the directory's, finding for finding.
    let from_etcd = iamd(&["validate", "--store", &url]);
    let from_dir = iamd(&["validate", "--store", dir.path().to_str().unwrap()]);
    assert!(from_etcd.status.success(), "{from_etcd:?}");
    assert_eq!(from_etcd.stdout, from_dir.stdout);
    let pulled = tempfile::tempdir().unwrap();
    let out = iamd(&[
        "store",
        "pull",
        "--store",
        &url,
        pulled.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        iamd::store::read_documents(pulled.path()).unwrap(),
        iamd::store::read_documents(dir.path()).unwrap()
    );

    // Nothing changed: nothing written, the chunks kept.
    let chunks_before = chunk_keys();
    let out = iamd(&[
        "store",
        "push",
        "--store",
        &url,
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0 written"),
        "{out:?}"
    );
    assert_eq!(chunk_keys(), chunks_before);

    // One large document changed: new chunks, the old ones gone.
    let mut text = std::fs::read_to_string(&details).unwrap();
    text.push('\n');
    std::fs::write(&details, text).unwrap();
    let second = push(&url, dir.path());
    wait_revision(&sidecar, second).await;
    let chunks_after = chunk_keys();
    assert_eq!(chunks_after.len(), 6, "{chunks_after:?}");
    assert_ne!(chunks_after, chunks_before);

    // A chunk lost: that document is an error, named, and its last good
    // version serves.
    let lost = chunks_after
        .iter()
        .find(|k| k.contains("account-100000000000"))
        .unwrap();
    cluster.ctl(&["del", lost]);
    let rejected = sidecar
        .wait_for_log(Duration::from_secs(10), |v| {
            v["fields"]["message"] == "document rejected; its last good version keeps serving"
                && v["fields"]["document"] == "account-100000000000/authorization-details.json"
        })
        .expect("the broken document is reported");
    let first_error = rejected["fields"]["first_error"].as_str().unwrap();
    assert!(
        first_error.contains("account-100000000000/authorization-details.json")
            && first_error.contains("is missing"),
        "{first_error}"
    );
    assert!(serving_revision(&sidecar).await > second);
    assert_eq!(
        metric(&sidecar, "iamd_store_documents_rejected", &[]),
        Some(1.0)
    );
}
