//! The serving snapshot and its hot reload.
//!
//! The snapshot lives in an `ArcSwapOption`: a request takes one guard,
//! decides synchronously and drops it, so readers never block and never see
//! half a store. A reload builds a complete new snapshot off the request
//! path and swaps it in; a store that fails validation is rejected whole and
//! the last good snapshot keeps serving. Watcher callbacks and SIGHUP only
//! send on a channel; one task debounces, rebuilds and swaps, so reloads
//! never overlap. A load is kept only if the tree did not change while it
//! was read (a fingerprint taken before and after).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::{Snapshot, Stats};
use crate::store::fingerprint::Fingerprint;
use crate::store::{self, LoadError};

/// Loads of a tree that changed while it was read are tried this many times
/// in all, waiting [`SETTLE_BACKOFF`] (doubling) in between.
const SETTLE_ATTEMPTS: u32 = 5;
const SETTLE_BACKOFF: Duration = Duration::from_millis(25);

/// A compiled store and when it began serving.
#[derive(Debug)]
pub struct Served {
    pub snapshot: Snapshot,
    /// 1 for the first store loaded, one more per successful reload.
    pub revision: u64,
    pub loaded_at: SystemTime,
    /// Findings below ERROR, counted for logs.
    pub warnings: usize,
}

/// The current snapshot, shared by every request handler.
#[derive(Debug, Default)]
pub struct SnapshotCell {
    current: ArcSwapOption<Served>,
}

/// What a successful reload produced.
#[derive(Debug, Clone, Copy)]
pub struct Reloaded {
    pub revision: u64,
    pub stats: Stats,
    pub warnings: usize,
}

impl SnapshotCell {
    pub fn new() -> Self {
        SnapshotCell::default()
    }

    /// The snapshot serving now, if any. Hold the guard only while deciding.
    pub fn load(&self) -> arc_swap::Guard<Option<Arc<Served>>> {
        self.current.load()
    }

    /// Loads, validates and compiles the store, then swaps it in. Blocking:
    /// call it off the async runtime's worker threads.
    ///
    /// A tree that changed while it was read (a file added, removed or
    /// rewritten, the directory replaced) is read again, a few times with a
    /// short backoff; if it never holds still the attempt fails and the last
    /// good snapshot keeps serving.
    pub fn reload(&self, dir: &Path) -> Result<Reloaded, LoadError> {
        self.reload_with(dir, Fingerprint::of)
    }

    /// [`SnapshotCell::reload`], with the fingerprint taken by `fingerprint`.
    fn reload_with(
        &self,
        dir: &Path,
        mut fingerprint: impl FnMut(&Path) -> Result<Fingerprint, LoadError>,
    ) -> Result<Reloaded, LoadError> {
        let loaded = load_settled(dir, &mut fingerprint)?;
        let warnings = loaded.findings.len();
        let snapshot = Snapshot::compile_owned(loaded.store);
        let stats = snapshot.stats();
        // Only the reload task calls this, so the read-increment-store cannot race.
        let revision = self.current.load().as_ref().map_or(0, |s| s.revision) + 1;
        self.current.store(Some(Arc::new(Served {
            snapshot,
            revision,
            loaded_at: SystemTime::now(),
            warnings,
        })));
        Ok(Reloaded {
            revision,
            stats,
            warnings,
        })
    }
}

/// Loads the store, insisting that its fingerprint is the same before and
/// after the load.
fn load_settled(
    dir: &Path,
    fingerprint: &mut impl FnMut(&Path) -> Result<Fingerprint, LoadError>,
) -> Result<store::Loaded, LoadError> {
    let mut backoff = SETTLE_BACKOFF;
    for attempt in 1..=SETTLE_ATTEMPTS {
        let before = fingerprint(dir)?;
        let loaded = store::load(dir);
        // A tree that went away under the load changed too: the next
        // attempt's first fingerprint reports it missing.
        if fingerprint(dir).is_ok_and(|after| after == before) {
            return loaded;
        }
        tracing::debug!(
            store = %dir.display(),
            attempt,
            "the store changed while it was read; reading it again"
        );
        if attempt < SETTLE_ATTEMPTS {
            std::thread::sleep(backoff);
            backoff = backoff.saturating_mul(2);
        }
    }
    Err(LoadError::Dir {
        path: dir.to_owned(),
        source: std::io::Error::other(format!(
            "the store changed while it was read, {SETTLE_ATTEMPTS} times in a row; it is read again on the next change"
        )),
    })
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    FileChange,
    Signal,
}

/// Called after each reload attempt (health, metrics, logs live outside this module).
pub trait ReloadObserver: Send + Sync + 'static {
    fn reloaded(&self, result: &Result<Reloaded, LoadError>, trigger: Trigger);
}

/// How the reloader paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet time after a change before reloading.
    pub debounce: Duration,
    /// Longest a change waits for its reload while changes keep coming.
    pub max_wait: Duration,
}

/// Waits until changes stop arriving for `debounce`, but no longer than
/// `max_wait` after the first, keeping the strongest reason. `None` when
/// the channel closed.
async fn debounce(
    rx: &mut mpsc::UnboundedReceiver<Trigger>,
    first: Trigger,
    timing: Timing,
) -> Option<Trigger> {
    let mut trigger = first;
    let deadline = Instant::now() + timing.max_wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(trigger);
        }
        match tokio::time::timeout(timing.debounce.min(left), rx.recv()).await {
            Ok(Some(t)) => {
                if t == Trigger::Signal {
                    trigger = t;
                }
            }
            Ok(None) => return None,
            Err(_) => return Some(trigger),
        }
    }
}

/// Starts watching `dir` and returns the sender that also takes SIGHUP and
/// startup triggers. The returned task runs until the sender side closes.
pub fn spawn_reloader(
    cell: Arc<SnapshotCell>,
    dir: PathBuf,
    timing: Timing,
    observer: Arc<dyn ReloadObserver>,
) -> Result<(mpsc::UnboundedSender<Trigger>, tokio::task::JoinHandle<()>), notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let watch_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => !matches!(e.kind, notify::EventKind::Access(_)),
            Err(_) => true,
        };
        if relevant {
            let _ = watch_tx.send(Trigger::FileChange);
        }
    })?;
    // Watch the directory itself, recursively: a ConfigMap update replaces the
    // `..data` symlink, which only shows as events on the directory.
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    let task = tokio::spawn(async move {
        let _watcher = watcher; // dropped (and the watch ended) when the task ends
        while let Some(first) = rx.recv().await {
            let trigger = match first {
                Trigger::Startup => first,
                _ => match debounce(&mut rx, first, timing).await {
                    Some(t) => t,
                    None => return,
                },
            };
            let cell = cell.clone();
            let dir = dir.clone();
            let result = tokio::task::spawn_blocking(move || cell.reload(&dir))
                .await
                .unwrap_or_else(|e| {
                    Err(LoadError::Dir {
                        path: PathBuf::new(),
                        source: std::io::Error::other(format!("reload task failed: {e}")),
                    })
                });
            observer.reloaded(&result, trigger);
        }
    });
    Ok((tx, task))
}

/// Seconds since the Unix epoch, for the last-reload gauge.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_increases_and_bad_stores_keep_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let cell = SnapshotCell::new();
        assert!(cell.load().is_none());
        let policy = r#"{"Policy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
            "Action": "lambda:InvokeFunction", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:f"}]}}"#;
        std::fs::write(dir.path().join("f.json"), policy).unwrap();
        assert_eq!(cell.reload(dir.path()).unwrap().revision, 1);
        assert_eq!(cell.reload(dir.path()).unwrap().revision, 2);
        std::fs::write(dir.path().join("g.json"), "{broken").unwrap();
        assert!(cell.reload(dir.path()).is_err());
        let served = cell.load();
        let served = served.as_ref().unwrap();
        assert_eq!(served.revision, 2);
        assert_eq!(served.snapshot.stats().statements, 1);
        std::fs::remove_file(dir.path().join("g.json")).unwrap();
        assert_eq!(cell.reload(dir.path()).unwrap().revision, 3);
    }

    fn function_policy(effect: &str, function: &str) -> String {
        format!(
            r#"{{"Policy": {{"Version": "2012-10-17", "Statement": [{{"Effect": "{effect}", "Principal": "*",
            "Action": "lambda:InvokeFunction", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:{function}"}}]}}}}"#
        )
    }

    #[test]
    fn a_tree_half_deleted_while_read_is_read_again_not_kept() {
        // Two files, and a "deployment" that deletes one just as the load
        // starts and puts it back (a new inode) just before the load ends:
        // the first attempt reads one file, sees the tree changed, and reads
        // it again whole.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, function_policy("Allow", "f")).unwrap();
        std::fs::write(&b, function_policy("Deny", "g")).unwrap();
        let cell = SnapshotCell::new();
        let mut calls = 0;
        let reloaded = cell
            .reload_with(dir.path(), |d| {
                calls += 1;
                let fp = Fingerprint::of(d);
                match calls {
                    1 => std::fs::remove_file(&b).unwrap(),
                    2 => std::fs::write(&b, function_policy("Deny", "g")).unwrap(),
                    _ => {}
                }
                fp
            })
            .unwrap();
        assert_eq!(
            reloaded.stats.statements, 2,
            "the whole tree, not the half read"
        );
        assert_eq!(calls, 4, "two attempts, two fingerprints each");
        assert_eq!(reloaded.revision, 1);
        assert_eq!(cell.load().as_ref().unwrap().snapshot.stats().statements, 2);
    }

    #[test]
    fn a_tree_that_never_holds_still_is_rejected_and_the_last_good_one_serves() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.json");
        std::fs::write(&f, function_policy("Allow", "f")).unwrap();
        let cell = SnapshotCell::new();
        assert_eq!(cell.reload(dir.path()).unwrap().revision, 1);

        // Every load is followed by a rewrite before its second fingerprint.
        let mut calls = 0u32;
        let err = cell
            .reload_with(dir.path(), |d| {
                calls += 1;
                if calls % 2 == 0 {
                    let effect = if calls % 4 == 0 { "Deny" } else { "Allow" };
                    let tmp = d.join("f.tmp");
                    std::fs::write(&tmp, function_policy(effect, "f")).unwrap();
                    std::fs::rename(&tmp, d.join("f.json")).unwrap();
                }
                Fingerprint::of(d)
            })
            .unwrap_err();
        assert_eq!(calls, 2 * SETTLE_ATTEMPTS);
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
        let served = cell.load();
        assert_eq!(served.as_ref().unwrap().revision, 1);

        // Once it holds still, it loads.
        assert_eq!(cell.reload(dir.path()).unwrap().revision, 2);
    }

    #[test]
    fn a_store_that_went_away_while_read_is_not_kept() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("store");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f.json"), function_policy("Allow", "f")).unwrap();
        let cell = SnapshotCell::new();
        let mut calls = 0;
        let err = cell
            .reload_with(&dir, |d| {
                calls += 1;
                let fp = Fingerprint::of(d);
                if calls == 1 {
                    std::fs::remove_dir_all(d).unwrap();
                }
                fp
            })
            .unwrap_err();
        assert!(matches!(err, LoadError::Dir { .. }), "{err}");
        assert_eq!(calls, 3, "the second attempt finds it missing");
        assert!(cell.load().is_none());
    }

    #[tokio::test]
    async fn debounce_waits_for_quiet_but_no_longer_than_max_wait() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let timing = Timing {
            debounce: Duration::from_secs(3600),
            max_wait: Duration::from_millis(50),
        };
        // Changes keep coming (faster than the debounce) until the sender
        // is told to stop: the debounce ends anyway, keeping the signal.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = tx.send(Trigger::Signal);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            debounce(&mut rx, Trigger::FileChange, timing),
        )
        .await
        .expect("the debounce ended while changes kept coming");
        assert_eq!(got, Some(Trigger::Signal));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
        // The channel closed: the debounce says so.
        let quiet = Timing {
            max_wait: Duration::from_secs(3600),
            ..timing
        };
        assert_eq!(debounce(&mut rx, Trigger::FileChange, quiet).await, None);
    }
}
