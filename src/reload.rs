//! The serving snapshot and its hot reload.
//!
//! The snapshot lives in an `ArcSwapOption`: a request takes one guard,
//! decides synchronously and drops it, so readers never block and never see
//! half a store. A reload builds a complete new snapshot off the request
//! path and swaps it in; a store that fails validation is rejected whole and
//! the last good snapshot keeps serving. Watcher callbacks and SIGHUP only
//! send on a channel; one task debounces, rebuilds and swaps, so reloads
//! never overlap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::engine::{Snapshot, Stats};
use crate::store::{self, LoadError};

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
    pub fn reload(&self, dir: &Path) -> Result<Reloaded, LoadError> {
        let loaded = store::load(dir)?;
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

/// Starts watching `dir` and returns the sender that also takes SIGHUP and
/// startup triggers. The returned task runs until the sender side closes.
pub fn spawn_reloader(
    cell: Arc<SnapshotCell>,
    dir: PathBuf,
    debounce: Duration,
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
            let mut trigger = first;
            // Debounce: wait until changes stop arriving, keeping the strongest reason.
            if first != Trigger::Startup {
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(t)) => {
                            if t == Trigger::Signal {
                                trigger = t;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
            }
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
}
