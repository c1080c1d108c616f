//! Hot reload against the running binary: file edits, invalid stores, fixes,
//! Kubernetes ConfigMap symlink swaps, SIGHUP, decisions under a storm of
//! rewrites, a store directory removed, recreated or swapped by rename, and
//! writes that never pause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{parse_prometheus, request, sample, write_atomic, Iamd};
use iamd::server::pb::Decision;

const FUNCTION: &str = "arn:aws:lambda:us-east-1:111122223333:function:f";
const CALLER: &str = "arn:aws:iam::111122223333:user/partner";

/// A function policy letting the account's own users invoke `f` (a same-account `*` grant needs no identity policy), with the given effect.
fn policy(effect: &str) -> String {
    format!(
        r#"{{"Policy": {{"Version": "2012-10-17", "Id": "default", "Statement": [
  {{"Sid": "partner", "Effect": "{effect}", "Principal": "*", "Action": "lambda:InvokeFunction",
    "Resource": "{FUNCTION}", "Condition": {{"StringEquals": {{"aws:PrincipalAccount": "111122223333"}}}}}}]}}}}"#
    )
}

async fn decision(iamd: &Iamd) -> (Decision, u64) {
    let mut client = iamd.client().await;
    let r = client
        .authorize(request(CALLER, "lambda:InvokeFunction", FUNCTION, &[]))
        .await
        .unwrap()
        .into_inner();
    (r.decision(), r.revision)
}

/// Polls until the decision is `want`, returning how long it took.
async fn wait_decision(iamd: &Iamd, want: Decision, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (d, _) = decision(iamd).await;
        if d == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "decision did not become {want:?} within {within:?} (still {d:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The function policy with a Deny for the same call added to its Allow.
fn policy_with_deny() -> String {
    format!(
        r#"{{"Policy": {{"Version": "2012-10-17", "Id": "default", "Statement": [
  {{"Sid": "partner", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunction",
    "Resource": "{FUNCTION}", "Condition": {{"StringEquals": {{"aws:PrincipalAccount": "111122223333"}}}}}},
  {{"Sid": "lockout", "Effect": "Deny", "Principal": "*", "Action": "lambda:InvokeFunction", "Resource": "{FUNCTION}"}}]}}}}"#
    )
}

/// Polls `check` until it holds, failing with `what` after `within`.
async fn eventually<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the serving revision is at least `min`.
async fn wait_revision(iamd: &Iamd, min: u64, what: &str) {
    eventually(what, Duration::from_secs(10), || async {
        decision(iamd).await.1 >= min
    })
    .await;
}

fn metric(iamd: &Iamd, name: &str) -> Option<f64> {
    sample(&parse_prometheus(&iamd.metrics_text()), name, &[])
}

fn failures(iamd: &Iamd) -> f64 {
    sample(
        &parse_prometheus(&iamd.metrics_text()),
        "iamd_reloads_total",
        &[("result", "failure")],
    )
    .unwrap()
}

fn validate(dir: &Path) -> (Option<i32>, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(["validate", "--store"])
        .arg(dir)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_flip_decisions_and_bad_stores_keep_the_last_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.json");
    write_atomic(&file, &policy("Allow"));
    let iamd = Iamd::start_loaded(dir.path(), &[]);
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1));

    // A policy change flips the decision within 2 seconds.
    write_atomic(&file, &policy("Deny"));
    let took = wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(2)).await;
    assert_eq!(
        decision(&iamd).await.1,
        2,
        "one reload, one revision (took {took:?})"
    );

    // An invalid file: rejected alone, the old decision holds, the
    // rejection is counted, logged with the file and named by validate.
    let rejections = || metric(&iamd, "iamd_store_document_rejections_total").unwrap();
    let before = rejections();
    std::fs::write(
        dir.path().join("broken.json"),
        "{\"Policy\": {\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Permit\"}]}}",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rejections() <= before {
        assert!(
            Instant::now() < deadline,
            "the rejected document was not counted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(decision(&iamd).await.0, Decision::ExplicitDeny);
    assert_eq!(metric(&iamd, "iamd_store_documents_rejected"), Some(1.0));
    let log = iamd
        .wait_for_log(Duration::from_secs(2), |v| {
            v["fields"]["message"] == "document rejected; its last good version keeps serving"
        })
        .unwrap();
    assert_eq!(log["fields"]["document"], "broken.json", "{log}");
    assert!(
        log["fields"]["first_error"]
            .as_str()
            .unwrap()
            .contains("broken.json:1:"),
        "{log}"
    );
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(1));
    assert!(
        out.contains("broken.json:1:") && out.contains("INVALID_EFFECT"),
        "{out}"
    );

    // Fix it: the reload succeeds and the new policy applies.
    write_atomic(
        &dir.path().join("broken.json"),
        &policy("Allow").replace(FUNCTION, &format!("{FUNCTION}:prod")),
    );
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(2)).await;
    write_atomic(&file, &policy("Allow"));
    wait_decision(&iamd, Decision::Allow, Duration::from_secs(2)).await;
    assert_eq!(metric(&iamd, "iamd_store_documents_rejected"), Some(0.0));
    let samples = parse_prometheus(&iamd.metrics_text());
    let revision = sample(&samples, "iamd_snapshot_revision", &[]).unwrap();
    assert!(revision >= 3.0, "{revision}");
    assert_eq!(decision(&iamd).await.1 as f64, revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_is_picked_up() {
    // The layout the kubelet writes: a timestamped folder, `..data` pointing at
    // it, and visible names linking through `..data`.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v1 = root.join("..2026_11_27_10_00_00.000000001");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("f.json"), policy("Allow")).unwrap();
    std::os::unix::fs::symlink("..2026_11_27_10_00_00.000000001", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/f.json", root.join("f.json")).unwrap();
    let iamd = Iamd::start_loaded(root, &[]);
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1));
    let loaded = iamd
        .wait_for_log(Duration::from_secs(1), |v| {
            v["fields"]["message"] == "store loaded"
        })
        .unwrap();
    assert_eq!(
        loaded["fields"]["statements"], 1,
        "the file is read once, through the visible link"
    );

    // The update: a new folder, a new `..data_tmp` link, renamed over `..data`, old folder removed.
    let v2 = root.join("..2026_11_27_10_05_00.000000002");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("f.json"), policy("Deny")).unwrap();
    std::os::unix::fs::symlink("..2026_11_27_10_05_00.000000002", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_forces_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(&dir.path().join("f.json"), &policy("Allow"));
    let iamd = Iamd::start_loaded(dir.path(), &[]);
    assert_eq!(decision(&iamd).await.1, 1);
    iamd.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while decision(&iamd).await.1 != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(iamd.count_logs(|v| v["fields"]["message"] == "SIGHUP: reloading the store") == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_stay_consistent_while_the_store_is_rewritten_50_times() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.json");
    write_atomic(&file, &policy("Allow"));
    let iamd = Iamd::start_loaded(dir.path(), &["--reload-debounce-ms", "5"]);
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut client = iamd.client().await;
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let (mut n, mut last_revision) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                let r = client
                    .authorize(request(CALLER, "lambda:InvokeFunction", FUNCTION, &[]))
                    .await
                    .expect("no request fails during reloads")
                    .into_inner();
                // Old store (Allow) or new store (Deny), never anything else.
                assert!(
                    matches!(r.decision(), Decision::Allow | Decision::ExplicitDeny),
                    "{r:?}"
                );
                assert!(r.revision >= last_revision, "revisions never go back");
                last_revision = r.revision;
                n += 1;
            }
            n
        }));
    }
    for i in 0..50 {
        write_atomic(&file, &policy(if i % 2 == 0 { "Deny" } else { "Allow" }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // The last write (i = 49) allows: wait for it to be served, then stop.
    wait_decision(&iamd, Decision::Allow, Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let n = c.await.unwrap();
        assert!(n > 0, "every client got answers");
        total += n;
    }
    let samples = parse_prometheus(&iamd.metrics_text());
    let reloads = sample(&samples, "iamd_reloads_total", &[("result", "success")]).unwrap();
    assert!(
        reloads >= 10.0,
        "reloads happened during the storm ({reloads})"
    );
    assert_eq!(
        sample(&samples, "iamd_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert!(total > 100, "clients kept deciding ({total})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_removed_and_recreated_is_watched_again() {
    let parent = tempfile::tempdir().unwrap();
    let store = parent.path().join("store");
    std::fs::create_dir(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy("Allow"));
    // No periodic check to help: the watch on the parent sees the store return.
    let iamd = Iamd::start_loaded(&store, &["--reload-recheck-ms", "3600000"]);
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1));
    let before = failures(&iamd);

    // `rm -rf` and a new directory in its place, filled the usual way.
    std::fs::remove_dir_all(&store).unwrap();
    eventually(
        "the reload of a missing store was not counted as a failure",
        Duration::from_secs(10),
        || async { failures(&iamd) > before },
    )
    .await;
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1), "last good");
    std::fs::create_dir(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy("Allow"));
    wait_revision(&iamd, 2, "the recreated store was not loaded").await;

    // A Deny added afterwards takes effect: the new directory is watched.
    write_atomic(&store.join("f.json"), &policy_with_deny());
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(10)).await;
    assert_eq!(metric(&iamd, "iamd_store_watch_up"), Some(1.0));
    assert!(metric(&iamd, "iamd_store_watch_restarts_total").unwrap() >= 1.0);
    assert!(
        iamd.count_logs(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("store watch down")))
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_swap_is_followed_and_later_edits_apply() {
    let parent = tempfile::tempdir().unwrap();
    let (store, new, old) = (
        parent.path().join("store"),
        parent.path().join("store.new"),
        parent.path().join("store.old"),
    );
    std::fs::create_dir(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy("Allow"));
    let iamd = Iamd::start_loaded(&store, &[]);
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1));

    // The next version prepared beside the store, then swapped in by rename.
    std::fs::create_dir(&new).unwrap();
    write_atomic(&new.join("f.json"), &policy_with_deny());
    std::fs::rename(&store, &old).unwrap();
    std::fs::rename(&new, &store).unwrap();
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(10)).await;

    // An edit to the directory now at the path applies.
    write_atomic(&store.join("f.json"), &policy("Allow"));
    wait_decision(&iamd, Decision::Allow, Duration::from_secs(10)).await;
    assert!(metric(&iamd, "iamd_store_watch_restarts_total").unwrap() >= 1.0);
    assert_eq!(metric(&iamd, "iamd_store_watch_up"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rearms_a_watch_that_died_with_the_store() {
    // The store's parent goes too, so no watch sees the store come back,
    // and the periodic check is too rare to help: only SIGHUP re-arms.
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("etc");
    let store = parent.join("store");
    std::fs::create_dir_all(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy("Allow"));
    let iamd = Iamd::start_loaded(&store, &["--reload-recheck-ms", "3600000"]);
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1));
    let before = failures(&iamd);
    std::fs::remove_dir_all(&parent).unwrap();
    eventually(
        "the reload of a missing store was not counted as a failure",
        Duration::from_secs(10),
        || async { failures(&iamd) > before },
    )
    .await;

    std::fs::create_dir_all(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy_with_deny());
    iamd.signal("HUP");
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(10)).await;
    assert_eq!(decision(&iamd).await.1, 2);

    // A later edit, without SIGHUP, is seen.
    write_atomic(&store.join("f.json"), &policy("Allow"));
    wait_decision(&iamd, Decision::Allow, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_on_every_attempt_while_the_store_is_missing() {
    let parent = tempfile::tempdir().unwrap();
    let store = parent.path().join("store");
    std::fs::create_dir(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy("Allow"));
    let iamd = Iamd::start_loaded(&store, &["--reload-recheck-ms", "200"]);
    let at_start = (
        metric(&iamd, "iamd_store_watch_up"),
        metric(&iamd, "iamd_store_watch_restarts_total"),
    );
    let before = failures(&iamd);

    // Nothing else happens, yet every periodic attempt fails and counts.
    std::fs::remove_dir_all(&store).unwrap();
    eventually(
        "failures stopped being counted while the store was missing",
        Duration::from_secs(30),
        || async { failures(&iamd) >= before + 3.0 },
    )
    .await;
    assert_eq!(at_start, (Some(1.0), Some(0.0)));
    assert_eq!(metric(&iamd, "iamd_store_watch_up"), Some(0.0));
    // SIGHUP is an attempt too.
    let counted = failures(&iamd);
    iamd.signal("HUP");
    eventually(
        "the SIGHUP attempt was not counted",
        Duration::from_secs(10),
        || async { failures(&iamd) > counted },
    )
    .await;
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1), "last good");

    // Back: watched again and loaded.
    std::fs::create_dir(&store).unwrap();
    write_atomic(&store.join("f.json"), &policy_with_deny());
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(10)).await;
    assert_eq!(metric(&iamd, "iamd_store_watch_up"), Some(1.0));
    assert!(metric(&iamd, "iamd_store_watch_restarts_total").unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_never_pause_still_reload() {
    // A writer rewrites the store every 50 to 150 ms, always inside the
    // 200 ms debounce: the maximum wait (2 s by default) still reloads
    // while it writes.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.json");
    write_atomic(&file, &policy("Allow"));
    let iamd = Iamd::start_loaded(dir.path(), &[]);
    assert_eq!(decision(&iamd).await.1, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            let pauses = [50u64, 130, 70, 150, 90, 110, 60, 140, 80, 120, 100];
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                write_atomic(&file, &policy(if i % 2 == 0 { "Deny" } else { "Allow" }));
                std::thread::sleep(Duration::from_millis(pauses[i % pauses.len()]));
                i += 1;
            }
        })
    };
    loop {
        if decision(&iamd).await.1 >= 2 {
            break;
        }
        assert!(
            !writer.is_finished(),
            "no reload while the store was rewritten for 20 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_at_the_store_path_switched_is_followed() {
    // `store -> v1`, then switched to `v2` by renaming a new link over it:
    // no event happens inside v1, only the parent sees the name change.
    let parent = tempfile::tempdir().unwrap();
    let (v1, v2, store) = (
        parent.path().join("v1"),
        parent.path().join("v2"),
        parent.path().join("store"),
    );
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    write_atomic(&v1.join("f.json"), &policy("Allow"));
    write_atomic(&v2.join("f.json"), &policy_with_deny());
    std::os::unix::fs::symlink("v1", &store).unwrap();
    let iamd = Iamd::start_loaded(&store, &["--reload-recheck-ms", "3600000"]);
    assert_eq!(decision(&iamd).await, (Decision::Allow, 1));
    std::os::unix::fs::symlink("v2", parent.path().join("store.tmp")).unwrap();
    std::fs::rename(parent.path().join("store.tmp"), &store).unwrap();
    wait_decision(&iamd, Decision::ExplicitDeny, Duration::from_secs(10)).await;
    // And v2 is the one watched now.
    write_atomic(&v2.join("f.json"), &policy("Allow"));
    wait_decision(&iamd, Decision::Allow, Duration::from_secs(10)).await;
}
