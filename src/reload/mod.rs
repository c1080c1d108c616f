//! The serving snapshot and its hot reload.
//!
//! The snapshot lives in an `ArcSwapOption`: a request takes one guard,
//! decides synchronously and drops it, so readers never block and never see
//! half a store. A reload builds a complete new snapshot off the request
//! path and swaps it in; a store that fails validation is rejected whole and
//! the last good snapshot keeps serving. Watcher callbacks and SIGHUP only
//! send on a channel; one task debounces, rebuilds and swaps, so reloads
//! never overlap.
//!
//! The watch survives the store directory going away: the store's parent is
//! watched (not recursively) for the store's name coming, going or being
//! renamed, and the store itself recursively. Before every reload the path
//! is resolved again; when the directory there is not the one watched (it
//! was replaced, or removed and recreated) the watches are set up afresh.
//! A periodic check does the same in case events were missed, and keeps
//! retrying while the store is missing. A load is kept only if the tree did
//! not change while it was read (a fingerprint taken before and after).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::engine::{Snapshot, Stats};
use crate::store::fingerprint::Fingerprint;
use crate::store::workspace::{LoadDirFailure, LoadFailure, Workspace};
use crate::store::{self, LoadError};

pub mod etcd;

/// Loads of a tree that changed while it was read are tried this many times
/// in all, waiting [`SETTLE_BACKOFF`] (doubling) in between.
const SETTLE_ATTEMPTS: u32 = 5;
const SETTLE_BACKOFF: Duration = Duration::from_millis(25);

/// A compiled store and when it began serving.
#[derive(Debug)]
pub struct Served {
    pub snapshot: Snapshot,
    /// A directory store: 1 for the first store loaded, one more per
    /// successful reload. An etcd store: the etcd revision of the last
    /// change applied.
    pub revision: u64,
    pub loaded_at: SystemTime,
    /// Findings below ERROR, counted for logs.
    pub warnings: usize,
}

/// The current snapshot, shared by every request handler.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwapOption<Served>,
    /// The serving revision, for requests that wait for one (0: none yet).
    revision: tokio::sync::watch::Sender<u64>,
    /// A directory store's documents as applied (only the reload task
    /// takes the lock).
    dir: std::sync::Mutex<DirState>,
}

impl Default for SnapshotCell {
    fn default() -> Self {
        SnapshotCell {
            current: ArcSwapOption::default(),
            revision: tokio::sync::watch::Sender::new(0),
            dir: std::sync::Mutex::default(),
        }
    }
}

/// What a directory store's reloads keep between them.
#[derive(Debug, Default)]
struct DirState {
    dir: PathBuf,
    /// `None` until a whole store loads (and after a failed build).
    workspace: Option<Workspace>,
    /// The tree as the last whole read or full check saw it.
    fingerprint: Option<Fingerprint>,
}

/// A document's new content in a change read from disk: `None` when it
/// is gone, the reason when it cannot be read.
type ReadContent = Option<Result<Vec<u8>, String>>;

/// What a successful reload produced.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub revision: u64,
    pub stats: Stats,
    pub warnings: usize,
    /// Documents this change rejected, each with its findings: the
    /// snapshot keeps their previous version.
    pub rejected: Vec<(String, crate::finding::Findings)>,
    /// Documents whose current content is rejected, this change's included.
    pub held: usize,
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
    /// The first load reads the whole store (any ERROR rejects it). Later
    /// ones read only the files that changed since (their file system
    /// versions differ), and apply them document by document: a bad
    /// document is rejected alone and its last good version serves.
    ///
    /// A tree that changed while it was read (a file added, removed or
    /// rewritten, the directory replaced) is read again, a few times with a
    /// short backoff; if it never holds still the attempt fails and the last
    /// good snapshot keeps serving.
    pub fn reload(&self, dir: &Path) -> Result<Reloaded, LoadError> {
        self.reload_with(dir, None, Fingerprint::of)
    }

    /// [`SnapshotCell::reload`] after the store watch reported changes to
    /// `paths`: when each is a plain document file (or a document gone),
    /// only those are read, with no walk of the tree; anything else (a
    /// directory, a link, a ConfigMap's `..data` swap) checks the whole tree.
    pub fn reload_paths(
        &self,
        dir: &Path,
        paths: &BTreeSet<PathBuf>,
    ) -> Result<Reloaded, LoadError> {
        self.reload_with(dir, Some(paths), Fingerprint::of)
    }

    /// [`SnapshotCell::reload`], with the fingerprint taken by `fingerprint`.
    fn reload_with(
        &self,
        dir: &Path,
        paths: Option<&BTreeSet<PathBuf>>,
        mut fingerprint: impl FnMut(&Path) -> Result<Fingerprint, LoadError>,
    ) -> Result<Reloaded, LoadError> {
        let mut state = self
            .dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.dir != dir {
            *state = DirState {
                dir: dir.to_owned(),
                ..DirState::default()
            };
        }
        // Only the reload task calls this, so the read-increment-store cannot race.
        let revision = self.current.load().as_ref().map_or(0, |s| s.revision) + 1;
        let Some(mut ws) = state.workspace.take() else {
            let (ws, snapshot, findings, fp) = load_settled(dir, &mut fingerprint)?;
            state.workspace = Some(ws);
            state.fingerprint = Some(fp);
            return Ok(self.swap(snapshot, revision, findings.len()));
        };
        let targeted = paths.and_then(|p| read_targeted(dir, &ws, p));
        let changes = match targeted {
            Some(changes) => changes,
            None => match read_changed(dir, &ws, state.fingerprint.as_ref(), &mut fingerprint) {
                Ok((changes, fp)) => {
                    state.fingerprint = Some(fp);
                    changes
                }
                Err(e) => {
                    state.workspace = Some(ws);
                    return Err(e);
                }
            },
        };
        let applied = ws.apply(changes.iter().map(|(name, content)| {
            let content = content
                .as_ref()
                .map(|c| c.as_deref().map_err(String::as_str));
            (name.as_str(), content)
        }));
        let compile = |source| LoadError::Compile {
            path: dir.to_owned(),
            source,
        };
        // A failed build spends the workspace: the next reload reads everything.
        let applied = applied.map_err(compile)?;
        let snapshot = match applied.snapshot {
            Some(snapshot) => snapshot,
            None => ws.snapshot().map_err(compile)?,
        };
        let held = ws.held().len();
        let mut reloaded = self.swap(snapshot, revision, ws.warnings());
        reloaded.rejected = applied.rejected;
        reloaded.held = held;
        state.workspace = Some(ws);
        Ok(reloaded)
    }

    /// Applies an etcd store's documents and swaps the result in at
    /// `revision`. Blocking. `store` names the store in errors.
    ///
    /// Without a workspace the documents are loaded whole (any ERROR
    /// rejects them all, and nothing serves from them); with one, only the
    /// `changed` documents (all of them when `None`) are applied, each
    /// rejected alone when it is bad. A workspace that fails to compile is
    /// dropped, so the next change loads the store whole again.
    pub fn install(
        &self,
        store: &str,
        workspace: &mut Option<Workspace>,
        documents: &BTreeMap<String, Vec<u8>>,
        chunks: &BTreeMap<String, Vec<u8>>,
        changed: Option<&BTreeSet<String>>,
        revision: u64,
    ) -> Result<Reloaded, LoadError> {
        let compile = |source| LoadError::Compile {
            path: PathBuf::from(store),
            source,
        };
        let Some(ws) = workspace else {
            let assembled = store::etcd::assemble(documents, chunks);
            let parts = assembled
                .iter()
                .map(|(rel, doc)| (*rel, doc.as_deref().map_err(String::as_str)));
            let (ws, snapshot, findings) = Workspace::load(parts).map_err(|e| match e {
                LoadFailure::Rejected(findings) => {
                    LoadError::rejected(PathBuf::from(store), findings)
                }
                LoadFailure::Compile(source) => compile(source),
            })?;
            *workspace = Some(ws);
            return Ok(self.swap(snapshot, revision, findings.len()));
        };
        let applied = match changed {
            None => {
                let assembled = store::etcd::assemble(documents, chunks);
                ws.sync(
                    assembled
                        .iter()
                        .map(|(rel, doc)| (*rel, doc.as_deref().map_err(String::as_str))),
                )
            }
            Some(names) => {
                let assembled: Vec<(&str, Option<_>)> = names
                    .iter()
                    .map(|name| {
                        let doc = documents
                            .get(name)
                            .map(|doc| store::etcd::assemble_one(name, doc, chunks));
                        (name.as_str(), doc)
                    })
                    .collect();
                ws.apply(assembled.iter().map(|(name, doc)| {
                    let content = doc.as_ref().map(|d| d.as_deref().map_err(String::as_str));
                    (*name, content)
                }))
            }
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(source) => {
                *workspace = None;
                return Err(compile(source));
            }
        };
        let held = ws.held().len();
        let warnings = ws.warnings();
        // Nothing the snapshot holds changed (every document rejected, or
        // back to what serves): the same snapshot serves at the new revision.
        let snapshot = match applied.snapshot {
            Some(snapshot) => snapshot,
            None => ws.snapshot().map_err(compile)?,
        };
        let mut reloaded = self.swap(snapshot, revision, warnings);
        reloaded.rejected = applied.rejected;
        reloaded.held = held;
        Ok(reloaded)
    }

    /// Waits until the serving revision is at least `min`, at most `within`;
    /// the revision serving when it gives up is the error.
    pub async fn wait_for(&self, min: u64, within: Duration) -> Result<(), u64> {
        let mut revision = self.revision.subscribe();
        let reached = tokio::time::timeout(within, revision.wait_for(|r| *r >= min))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            Ok(())
        } else {
            Err(*self.revision.borrow())
        }
    }

    fn swap(&self, snapshot: Snapshot, revision: u64, warnings: usize) -> Reloaded {
        let stats = snapshot.stats();
        self.current.store(Some(Arc::new(Served {
            snapshot,
            revision,
            loaded_at: SystemTime::now(),
            warnings,
        })));
        // After the store: a waiter woken by this finds the snapshot in place.
        self.revision.send_replace(revision);
        Reloaded {
            revision,
            stats,
            warnings,
            rejected: Vec::new(),
            held: 0,
        }
    }
}

/// Loads the whole store, insisting that its fingerprint is the same
/// before and after the load.
fn load_settled(
    dir: &Path,
    fingerprint: &mut impl FnMut(&Path) -> Result<Fingerprint, LoadError>,
) -> Result<(Workspace, Snapshot, crate::finding::Findings, Fingerprint), LoadError> {
    settled(dir, fingerprint, |before| {
        Workspace::load_dir(dir)
            .map(|(ws, snapshot, findings)| (ws, snapshot, findings, before.clone()))
            .map_err(|e| match e {
                LoadDirFailure::Dir(e) => e,
                LoadDirFailure::Load(LoadFailure::Rejected(findings)) => {
                    LoadError::rejected(dir.to_owned(), findings)
                }
                LoadDirFailure::Load(LoadFailure::Compile(source)) => LoadError::Compile {
                    path: dir.to_owned(),
                    source,
                },
            })
    })
}

/// The changes since `old` (the tree as last seen): every file whose
/// version differs, read, and every known document no longer listed, gone;
/// with the tree's fingerprint, the same before and after the read.
fn read_changed(
    dir: &Path,
    ws: &Workspace,
    old: Option<&Fingerprint>,
    fingerprint: &mut impl FnMut(&Path) -> Result<Fingerprint, LoadError>,
) -> Result<(Vec<(String, ReadContent)>, Fingerprint), LoadError> {
    settled(dir, fingerprint, |before| {
        let mut buf = Vec::new();
        let mut changes: Vec<(String, ReadContent)> = before
            .changed_since(old)
            .into_iter()
            .map(|path| (relative(dir, path), Some(read_owned(path, &mut buf))))
            .collect();
        let listed: BTreeSet<String> = before.paths().map(|p| relative(dir, p)).collect();
        changes.extend(
            ws.names()
                .filter(|n| !listed.contains(*n))
                .map(|n| (n.to_owned(), None)),
        );
        Ok((changes, before.clone()))
    })
}

/// Runs `read` between two fingerprints of `dir` until they agree.
fn settled<T>(
    dir: &Path,
    fingerprint: &mut impl FnMut(&Path) -> Result<Fingerprint, LoadError>,
    mut read: impl FnMut(&Fingerprint) -> Result<T, LoadError>,
) -> Result<T, LoadError> {
    let mut backoff = SETTLE_BACKOFF;
    for attempt in 1..=SETTLE_ATTEMPTS {
        let before = fingerprint(dir)?;
        let result = read(&before);
        // A tree that went away under the read changed too: the next
        // attempt's first fingerprint reports it missing.
        if fingerprint(dir).is_ok_and(|after| after == before) {
            return result;
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

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// A store file's content as a change carries it.
fn read_owned(path: &Path, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    store::read_file(path, buf).map(|text| text.as_bytes().to_vec())
}

/// The changes the watch reported, read without walking the tree, when
/// every path is a plain document file or a document gone. `None` when one
/// is anything else: the caller checks the whole tree then.
fn read_targeted(
    dir: &Path,
    ws: &Workspace,
    paths: &BTreeSet<PathBuf>,
) -> Option<Vec<(String, ReadContent)>> {
    let mut buf = Vec::new();
    let mut changes = Vec::with_capacity(paths.len());
    for path in paths {
        let rel = path.strip_prefix(dir).ok()?;
        // The store itself, or a hidden name (a ConfigMap's `..data` swap
        // changes what every visible link points at).
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if rel.as_os_str().is_empty() || hidden {
            return None;
        }
        let name = rel.to_string_lossy().into_owned();
        let document = rel.extension().is_some_and(|e| e == "json");
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() => {
                if document {
                    changes.push((name, Some(read_settled(path, &mut buf)?)));
                }
                // Any other file is not part of the store.
            }
            // A directory or a link: what it holds or points at is unknown.
            Ok(_) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if ws.knows_under(&name) {
                    return None; // a directory of documents went away
                }
                if ws.knows(&name) {
                    changes.push((name, None));
                }
            }
            Err(_) => return None,
        }
    }
    Some(changes)
}

/// Reads one file, insisting that it did not change while read.
fn read_settled(path: &Path, buf: &mut Vec<u8>) -> Option<Result<Vec<u8>, String>> {
    let version = |p: &Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec(), m.ctime_nsec()))
    };
    let mut backoff = SETTLE_BACKOFF;
    for _ in 0..SETTLE_ATTEMPTS {
        let before = version(path);
        let content = read_owned(path, buf);
        if before.is_some() && version(path) == before {
            return Some(content);
        }
        std::thread::sleep(backoff);
        backoff = backoff.saturating_mul(2);
    }
    None
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    FileChange,
    Signal,
    /// An etcd store: the watch delivered a change (or the store was read again).
    StoreChange,
    /// The periodic check found the watch stale or down, or the last
    /// attempt could not read the store.
    Recheck,
}

/// The store watch, as reported to the observer when it changes.
#[derive(Debug, Clone)]
pub struct WatchState {
    /// The directory now at the store path is watched.
    pub up: bool,
    /// The watches were just set up again (the directory was replaced, or
    /// came back).
    pub restarted: bool,
    /// Why the store is not watched.
    pub error: Option<String>,
}

/// Called after each reload attempt (health, metrics, logs live outside this module).
pub trait ReloadObserver: Send + Sync + 'static {
    fn reloaded(&self, result: &Result<Reloaded, LoadError>, trigger: Trigger);

    /// Called when the store watch comes up, goes down or is set up again.
    /// The default records `iamd_store_watch_up` and
    /// `iamd_store_watch_restarts_total` and logs the change.
    fn watch(&self, store: &Path, state: &WatchState) {
        crate::metrics::store_watch(state.up, state.restarted);
        match (&state.error, state.restarted) {
            (Some(error), _) => tracing::warn!(
                store = %store.display(),
                error = %error,
                "store watch down: changes are not seen until the store directory is back"
            ),
            (None, true) => tracing::info!(
                store = %store.display(),
                "store watch set up again: the store directory was replaced"
            ),
            (None, false) => {}
        }
    }

    /// Called by an etcd store's follower on every contact with etcd and
    /// on every failure. The default records `iamd_store_connected`,
    /// `iamd_store_last_contact_timestamp_seconds` and
    /// `iamd_store_applied_revision`, and logs when the connection goes
    /// down or comes back.
    fn contact(&self, store: &str, was_connected: bool, contact: &Contact) {
        crate::metrics::store_contact(contact.connected, contact.applied);
        match (&contact.error, was_connected) {
            (Some(error), true) => tracing::warn!(
                store = %store,
                error = %error,
                applied_revision = contact.applied,
                "lost the store's etcd cluster: the last snapshot keeps serving"
            ),
            (Some(error), false) => {
                tracing::debug!(store = %store, error = %error, "etcd still unreachable")
            }
            (None, false) => tracing::info!(
                store = %store,
                applied_revision = contact.applied,
                "connected to the store's etcd cluster"
            ),
            (None, true) => {}
        }
    }
}

/// An etcd store's connection, as reported to the observer.
#[derive(Debug, Clone)]
pub struct Contact {
    pub connected: bool,
    /// Why the connection is down.
    pub error: Option<String>,
    /// The etcd revision last applied (0 before the first).
    pub applied: i64,
}

/// How the reloader paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet time after a change before reloading.
    pub debounce: Duration,
    /// Longest a change waits for its reload while changes keep coming.
    pub max_wait: Duration,
    /// How often the watch is checked against the path (not zero).
    pub recheck: Duration,
}

/// A directory's identity: (device, inode), following links.
type DirId = (u64, u64);

fn dir_id(path: &Path) -> Option<DirId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What the store's parent and the store resolved to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ids {
    parent: Option<DirId>,
    store: Option<DirId>,
}

/// The watches on the store: its parent (not recursively), for the store's
/// name appearing, disappearing or being renamed over, and the store itself
/// (recursively; a ConfigMap update replaces the `..data` link, which only
/// shows as events on the directory).
struct StoreWatch {
    dir: PathBuf,
    parent: Option<PathBuf>,
    /// Weak, so the channel closes (and the task ends) when the caller drops
    /// its sender.
    tx: mpsc::WeakUnboundedSender<Trigger>,
    /// The paths the store watch reported since the last reload.
    pending: Arc<std::sync::Mutex<Pending>>,
    parent_watch: Option<parent::ParentWatch>,
    parent_watched: bool,
    watcher: Option<notify::RecommendedWatcher>,
    /// What the paths resolved to when the watches were set up.
    armed: Ids,
    store_watched: bool,
}

/// Reported paths kept between reloads at most; more check the whole tree.
const MAX_PENDING_PATHS: usize = 4096;

/// Paths the store watch reported, or that it may have missed some.
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeSet<PathBuf>,
    /// Events were lost (a queue overflow, an error): check the whole tree.
    lost: bool,
}

impl Pending {
    /// Notes what an event names; an error, a rescan or too many paths
    /// mean the whole tree must be checked.
    fn record(&mut self, event: &notify::Result<notify::Event>) {
        match event {
            Ok(_) if self.lost => {}
            Ok(e) if !e.need_rescan() => {
                self.paths.extend(e.paths.iter().cloned());
                // Past this many, checking the whole tree is cheaper than
                // reading each, and the set stops growing.
                if self.paths.len() > MAX_PENDING_PATHS {
                    self.paths.clear();
                    self.lost = true;
                }
            }
            _ => self.lost = true,
        }
    }

    /// The reported paths, unless the whole tree must be checked.
    fn take(pending: &std::sync::Mutex<Pending>) -> Option<BTreeSet<PathBuf>> {
        let mut p = pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = std::mem::take(&mut *p);
        (!taken.lost).then_some(taken.paths)
    }
}

/// What [`StoreWatch::ensure`] found.
struct Checked {
    /// The watches were set up (again).
    rebuilt: bool,
    /// `Ok` when the store is watched.
    result: Result<(), notify::Error>,
}

impl StoreWatch {
    fn new(
        dir: PathBuf,
        tx: mpsc::WeakUnboundedSender<Trigger>,
        pending: Arc<std::sync::Mutex<Pending>>,
    ) -> StoreWatch {
        let parent = match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
            p => p.map(Path::to_path_buf),
        };
        let parent_watch = match parent::ParentWatch::start(dir.file_name(), tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the store's parent directory");
                None
            }
        };
        StoreWatch {
            dir,
            parent,
            tx,
            pending,
            parent_watch,
            parent_watched: false,
            watcher: None,
            armed: Ids::default(),
            store_watched: false,
        }
    }

    fn ids(&self) -> Ids {
        Ids {
            parent: self.parent.as_deref().and_then(dir_id),
            store: dir_id(&self.dir),
        }
    }

    /// The watches are set up on what the paths resolve to now. `false`
    /// also while the store is missing or could not be watched.
    fn is_current(&self) -> bool {
        self.watcher.is_some() && self.store_watched && self.ids() == self.armed
    }

    /// Sets the watches up again unless they are on what the paths resolve
    /// to now (a missing store stays as it is until it comes back).
    fn ensure(&mut self) -> Checked {
        let ids = self.ids();
        let settled = self.store_watched || ids.store.is_none();
        if self.watcher.is_some() && ids == self.armed && settled {
            return Checked {
                rebuilt: false,
                result: self.status(),
            };
        }
        // Resolved before watching: if a path changes in between, the next
        // check sees a difference and sets the watches up again.
        if ids.parent != self.armed.parent || !self.parent_watched {
            self.parent_watched = false;
            if let Some(w) = &mut self.parent_watch {
                let parent = self.parent.as_deref().filter(|_| ids.parent.is_some());
                match w.set(parent) {
                    Ok(()) => self.parent_watched = true,
                    // The periodic check still notices the store coming back.
                    Err(e) => tracing::warn!(
                        parent = %parent.unwrap_or(Path::new("")).display(),
                        error = %e,
                        "cannot watch the store's parent directory"
                    ),
                }
            }
        }
        self.armed = ids;
        self.store_watched = false;
        self.watcher = None; // ends the old store watches
        let mut watcher = match notify::recommended_watcher(self.handler()) {
            Ok(w) => w,
            Err(e) => {
                return Checked {
                    rebuilt: true,
                    result: Err(e),
                }
            }
        };
        let result = match ids.store {
            Some(_) => watcher.watch(&self.dir, RecursiveMode::Recursive),
            None => Err(notify::Error::path_not_found().add_path(self.dir.clone())),
        };
        self.watcher = Some(watcher);
        self.store_watched = result.is_ok();
        Checked {
            rebuilt: true,
            result,
        }
    }

    fn status(&self) -> Result<(), notify::Error> {
        if self.store_watched {
            Ok(())
        } else {
            Err(notify::Error::path_not_found().add_path(self.dir.clone()))
        }
    }

    /// Turns the store watch's events into reload triggers.
    fn handler(&self) -> impl notify::EventHandler {
        let tx = self.tx.clone();
        let pending = self.pending.clone();
        move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => !matches!(e.kind, notify::EventKind::Access(_)),
                Err(_) => true,
            };
            if relevant {
                pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(&event);
                if let Some(tx) = tx.upgrade() {
                    let _ = tx.send(Trigger::FileChange);
                }
            }
        }
    }
}

/// The watch on the store's parent directory. On Linux it is an inotify
/// watch of its own, for entries created, deleted or renamed only: notify's
/// watches take every event in the directory, writes to unrelated files
/// included. Elsewhere there is none, and the periodic check notices the
/// store coming back.
#[cfg(target_os = "linux")]
mod parent {
    use std::ffi::{OsStr, OsString};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use tokio::sync::mpsc;

    use super::Trigger;

    /// Whether an event in the parent concerns the store called `store`:
    /// its name, or the parent itself (moved, deleted, or events lost to
    /// a queue overflow). `IGNORED` only follows a watch being removed.
    fn about_store(mask: EventMask, name: Option<&OsStr>, store: Option<&OsStr>) -> bool {
        !mask.contains(EventMask::IGNORED) && name.is_none_or(|n| Some(n) == store)
    }

    pub(super) struct ParentWatch {
        watches: Watches,
        current: Option<WatchDescriptor>,
        stop: Arc<AtomicBool>,
    }

    impl ParentWatch {
        /// Starts a thread that reads the parent's events and sends a
        /// trigger for those about `name` (or about the parent itself).
        pub(super) fn start(
            name: Option<&OsStr>,
            tx: mpsc::WeakUnboundedSender<Trigger>,
        ) -> std::io::Result<ParentWatch> {
            let mut inotify = Inotify::init()?;
            let watches = inotify.watches();
            let stop = Arc::new(AtomicBool::new(false));
            let name: Option<OsString> = name.map(OsStr::to_os_string);
            let stopped = stop.clone();
            std::thread::Builder::new()
                .name("iamd-store-parent".into())
                .spawn(move || {
                    let mut buffer = [0u8; 4096];
                    loop {
                        let relevant = match inotify.read_events_blocking(&mut buffer) {
                            Ok(mut events) => {
                                events.any(|e| about_store(e.mask, e.name, name.as_deref()))
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                            Err(e) => {
                                tracing::warn!(error = %e, "the watch on the store's parent directory failed");
                                return;
                            }
                        };
                        if stopped.load(Ordering::Relaxed) {
                            return;
                        }
                        if relevant {
                            match tx.upgrade() {
                                Some(tx) => {
                                    let _ = tx.send(Trigger::FileChange);
                                }
                                None => return,
                            }
                        }
                    }
                })?;
            Ok(ParentWatch {
                watches,
                current: None,
                stop,
            })
        }

        /// Watches `parent` (or nothing) instead of what was watched so far.
        pub(super) fn set(&mut self, parent: Option<&Path>) -> std::io::Result<()> {
            if let Some(wd) = self.current.take() {
                // Fails when the kernel already dropped it (the directory is gone).
                let _ = self.watches.remove(wd);
            }
            if let Some(parent) = parent {
                let mask = WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF
                    | WatchMask::ONLYDIR;
                self.current = Some(self.watches.add(parent, mask)?);
            }
            Ok(())
        }
    }

    impl Drop for ParentWatch {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            // Removing the watch wakes the thread (an `IGNORED` event).
            let _ = self.set(None);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_the_store_name_and_the_parent_itself_count() {
            let store = Some(OsStr::new("store"));
            for (mask, name, want) in [
                (EventMask::CREATE | EventMask::ISDIR, Some("store"), true),
                (EventMask::DELETE | EventMask::ISDIR, Some("store"), true),
                (
                    EventMask::MOVED_FROM | EventMask::ISDIR,
                    Some("store"),
                    true,
                ),
                (EventMask::MOVED_TO | EventMask::ISDIR, Some("store"), true),
                (EventMask::CREATE, Some("store"), true),
                (
                    EventMask::CREATE | EventMask::ISDIR,
                    Some("store.new"),
                    false,
                ),
                (EventMask::MOVED_TO, Some("trace"), false),
                (EventMask::DELETE, Some("stor"), false),
                (EventMask::DELETE_SELF, None, true),
                (EventMask::MOVE_SELF, None, true),
                (EventMask::Q_OVERFLOW, None, true),
                (EventMask::IGNORED, None, false),
            ] {
                assert_eq!(
                    about_store(mask, name.map(OsStr::new), store),
                    want,
                    "{mask:?} {name:?}"
                );
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod parent {
    use std::ffi::OsStr;
    use std::path::Path;

    use tokio::sync::mpsc;

    use super::Trigger;

    pub(super) struct ParentWatch;

    impl ParentWatch {
        pub(super) fn start(
            _name: Option<&OsStr>,
            _tx: mpsc::WeakUnboundedSender<Trigger>,
        ) -> std::io::Result<ParentWatch> {
            Ok(ParentWatch)
        }

        pub(super) fn set(&mut self, _parent: Option<&Path>) -> std::io::Result<()> {
            Ok(())
        }
    }
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
/// Fails when the store cannot be watched at all at start.
pub fn spawn_reloader(
    cell: Arc<SnapshotCell>,
    dir: PathBuf,
    timing: Timing,
    observer: Arc<dyn ReloadObserver>,
) -> Result<(mpsc::UnboundedSender<Trigger>, tokio::task::JoinHandle<()>), notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let weak = tx.downgrade();
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
    let mut watch = StoreWatch::new(dir.clone(), weak.clone(), pending.clone());
    watch.ensure().result?;
    observer.watch(
        &dir,
        &WatchState {
            up: true,
            restarted: false,
            error: None,
        },
    );
    let task = tokio::spawn(async move {
        let mut watch = Some(watch);
        let mut up = true;
        // The last attempt could not read the store (missing, or changing
        // while read): the periodic check tries again.
        let mut retry = false;
        let mut recheck = tokio::time::interval_at(Instant::now() + timing.recheck, timing.recheck);
        recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                t = rx.recv() => match t {
                    Some(t) => t,
                    None => return,
                },
                _ = recheck.tick() => {
                    if watch.as_ref().is_some_and(StoreWatch::is_current) && !retry {
                        continue;
                    }
                    Trigger::Recheck
                }
            };
            let trigger = match first {
                Trigger::FileChange | Trigger::Signal => {
                    match debounce(&mut rx, first, timing).await {
                        Some(t) => t,
                        None => return,
                    }
                }
                Trigger::Startup | Trigger::Recheck | Trigger::StoreChange => first,
            };
            // Re-resolve the path and re-arm the watches first, then load:
            // a change made after the watches are set up is seen, and one
            // made before is read.
            let w = watch
                .take()
                .unwrap_or_else(|| StoreWatch::new(dir.clone(), weak.clone(), pending.clone()));
            let cell = cell.clone();
            let load_dir = dir.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let mut w = w;
                let checked = w.ensure();
                // Taken after the watches are (re)armed: a change after this
                // point is reported again. Only file events name what
                // changed; a signal, a recheck or re-armed watches check
                // the whole tree.
                let paths = Pending::take(&w.pending)
                    .filter(|_| trigger == Trigger::FileChange && !checked.rebuilt);
                let result = match &paths {
                    Some(paths) => cell.reload_paths(&load_dir, paths),
                    None => cell.reload(&load_dir),
                };
                // Above all after a rejected (perhaps hostile) store: give
                // back what the load took, or the pod stays at its peak.
                crate::store::release_memory();
                (w, checked, result)
            })
            .await;
            let result = match joined {
                Ok((w, checked, result)) => {
                    let now_up = checked.result.is_ok();
                    if checked.rebuilt || now_up != up {
                        observer.watch(
                            &dir,
                            &WatchState {
                                up: now_up,
                                // Only the first set-up (at start) is not a restart.
                                restarted: checked.rebuilt && now_up,
                                error: checked.result.err().map(|e| e.to_string()),
                            },
                        );
                    }
                    up = now_up;
                    watch = Some(w);
                    result
                }
                // The watch went with the task; the next attempt sets it up again.
                Err(e) => Err(LoadError::Dir {
                    path: PathBuf::new(),
                    source: std::io::Error::other(format!("reload task failed: {e}")),
                }),
            };
            retry = matches!(result, Err(LoadError::Dir { .. }));
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

    #[tokio::test]
    async fn a_wait_for_a_revision_ends_when_it_serves_or_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.json"), r#"{"Policy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
            "Action": "lambda:InvokeFunction", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:f"}]}}"#).unwrap();
        let cell = Arc::new(SnapshotCell::new());
        assert_eq!(cell.wait_for(1, Duration::from_millis(20)).await, Err(0));
        let waiter = {
            let cell = cell.clone();
            tokio::spawn(async move { cell.wait_for(2, Duration::from_secs(30)).await })
        };
        cell.reload(dir.path()).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "revision 1 is not 2");
        cell.reload(dir.path()).unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(cell.load().as_ref().unwrap().revision, 2);
        assert_eq!(
            cell.wait_for(1, Duration::ZERO).await,
            Ok(()),
            "past it is enough"
        );
    }

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
        // A bad document is rejected alone: the rest serves as before.
        std::fs::write(dir.path().join("g.json"), "{broken").unwrap();
        let reloaded = cell.reload(dir.path()).unwrap();
        assert_eq!(reloaded.revision, 3);
        assert_eq!(reloaded.held, 1);
        let names: Vec<&str> = reloaded.rejected.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["g.json"]);
        assert!(reloaded.rejected[0].1.has_errors());
        let served = cell.load();
        let served = served.as_ref().unwrap();
        assert_eq!(served.snapshot.stats().statements, 1);
        std::fs::remove_file(dir.path().join("g.json")).unwrap();
        let reloaded = cell.reload(dir.path()).unwrap();
        assert_eq!((reloaded.revision, reloaded.held), (4, 0));

        // A whole store that is bad from the start does not load.
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join("g.json"), "{broken").unwrap();
        let fresh = SnapshotCell::new();
        assert!(matches!(
            fresh.reload(bad.path()),
            Err(LoadError::Rejected { .. })
        ));
        assert!(fresh.load().is_none());
    }

    #[test]
    fn pending_paths_are_bounded_and_lost_events_check_the_tree() {
        let pending = std::sync::Mutex::new(Pending::default());
        let event = |path: String| {
            Ok(notify::Event::new(notify::EventKind::Any).add_path(PathBuf::from(path)))
        };
        pending.lock().unwrap().record(&event("a.json".into()));
        assert_eq!(Pending::take(&pending).unwrap().len(), 1);
        for i in 0..=MAX_PENDING_PATHS {
            pending.lock().unwrap().record(&event(format!("{i}.json")));
        }
        assert!(
            pending.lock().unwrap().paths.is_empty(),
            "the set stopped growing"
        );
        assert!(
            Pending::take(&pending).is_none(),
            "too many: the tree is checked"
        );
        pending
            .lock()
            .unwrap()
            .record(&Err(notify::Error::generic("queue overflow")));
        assert!(Pending::take(&pending).is_none());
        assert_eq!(
            Pending::take(&pending),
            Some(BTreeSet::new()),
            "taken, it starts afresh"
        );
    }

    #[test]
    fn reported_paths_are_read_alone_and_anything_else_checks_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let (f, g) = (dir.path().join("f.json"), dir.path().join("g.json"));
        std::fs::write(&f, function_policy("Allow", "f")).unwrap();
        let cell = SnapshotCell::new();
        cell.reload(dir.path()).unwrap();
        let statements = || cell.load().as_ref().unwrap().snapshot.stats().statements;
        let paths = |p: &[&Path]| p.iter().map(|p| p.to_path_buf()).collect::<BTreeSet<_>>();

        // A reported file is read; an unreported change is not.
        std::fs::write(&g, function_policy("Deny", "g")).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("h.json"), function_policy("Deny", "h")).unwrap();
        cell.reload_paths(dir.path(), &paths(&[&g])).unwrap();
        assert_eq!(statements(), 2, "g alone");
        // Other files and a document gone.
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::remove_file(&g).unwrap();
        cell.reload_paths(dir.path(), &paths(&[&g, &dir.path().join("notes.txt")]))
            .unwrap();
        assert_eq!(statements(), 1);
        // A directory: the whole tree is checked, and h found.
        cell.reload_paths(dir.path(), &paths(&[&sub])).unwrap();
        assert_eq!(statements(), 2);
        // A directory of documents gone, reported by its name alone.
        std::fs::remove_dir_all(&sub).unwrap();
        cell.reload_paths(dir.path(), &paths(&[&sub])).unwrap();
        assert_eq!(statements(), 1);
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
            .reload_with(dir.path(), None, |d| {
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
            .reload_with(dir.path(), None, |d| {
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
            .reload_with(&dir, None, |d| {
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
            recheck: Duration::from_secs(3600),
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
