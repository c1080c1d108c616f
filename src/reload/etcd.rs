//! Following an etcd store: read the prefix once, then apply the watch's
//! changes as they come, each as a new snapshot at the change's etcd
//! revision.
//!
//! The follower keeps a mirror of the documents. It applies nothing while a
//! push marker exists (a push's changes arrive across several revisions and
//! must be seen together), and otherwise applies after each watch response,
//! whose events never split a revision. A lost watch resumes from the last
//! revision seen, with the mirror kept; a resume that etcd has compacted
//! away reads the whole prefix again. While etcd is unreachable the last
//! snapshot keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::store::etcd::{api::mvccpb::event::EventType, Client, EtcdError, Key};
use crate::store::workspace::Workspace;
use crate::store::LoadError;

use super::{Contact, ReloadObserver, SnapshotCell, Trigger};

/// Waits between attempts to reach etcd: doubling up to the cap.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The documents as of `seen`, and what is not applied yet.
#[derive(Debug, Default)]
struct Mirror {
    documents: BTreeMap<String, Vec<u8>>,
    /// The chunks of large documents.
    chunks: BTreeMap<String, Vec<u8>>,
    /// Every event up to this revision is in `documents`.
    seen: i64,
    /// The marker of a push in progress.
    push: Option<String>,
    /// The revision of the newest change not yet in the serving snapshot.
    unapplied: Option<i64>,
    /// The revision of the serving snapshot (0 before the first).
    applied: i64,
    /// The documents changed since the last apply; `None`: maybe any
    /// (the prefix was read again).
    changed: Option<BTreeSet<String>>,
}

impl Mirror {
    fn touched(&mut self, document: &str) {
        if let Some(changed) = &mut self.changed {
            changed.insert(document.to_owned());
        }
    }
}

/// Starts following the store; the task runs until the runtime stops.
pub fn spawn_follower(
    cell: Arc<SnapshotCell>,
    client: Client,
    observer: Arc<dyn ReloadObserver>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let store = crate::store::StoreLocation::Etcd(client.target().clone()).to_string();
        let mut follower = Follower {
            cell,
            client,
            observer,
            store,
            connected: false,
            mirror: Mirror::default(),
            workspace: None,
        };
        follower.run().await;
    })
}

struct Follower {
    cell: Arc<SnapshotCell>,
    client: Client,
    observer: Arc<dyn ReloadObserver>,
    store: String,
    connected: bool,
    mirror: Mirror,
    /// The applied documents, to apply the next change to; `None` until
    /// the first complete store loads (and after a failed build).
    workspace: Option<Workspace>,
}

impl Follower {
    async fn run(&mut self) {
        let mut backoff = BACKOFF_START;
        let mut listed = false;
        loop {
            let result = if listed {
                self.follow().await
            } else {
                self.list().await
            };
            match result {
                Ok(()) => {
                    listed = true;
                    backoff = BACKOFF_START;
                }
                Err(EtcdError::Compacted(at)) => {
                    tracing::warn!(
                        store = %self.store,
                        compacted = at,
                        seen = self.mirror.seen,
                        "etcd compacted past the last revision seen; reading the whole store again"
                    );
                    listed = false;
                }
                Err(e) => {
                    self.report(Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    fn report(&mut self, error: Option<String>) {
        let contact = Contact {
            connected: error.is_none(),
            error,
            applied: self.mirror.applied,
        };
        self.observer.contact(&self.store, self.connected, &contact);
        self.connected = contact.connected;
    }

    /// Reads the whole prefix into a fresh mirror, and applies it unless a
    /// push is half done.
    async fn list(&mut self) -> Result<(), EtcdError> {
        let listing = self.client.list().await?;
        self.report(None);
        let applied = self.mirror.applied;
        let unchanged = applied > 0
            && listing.modified == applied
            && listing.push.is_none()
            && listing.documents == self.mirror.documents
            && listing.chunks == self.mirror.chunks;
        // Revisions never go back: after the newest key was deleted the
        // newest remaining one is older than what serves, so the read's own
        // revision stands for the change.
        let at = if listing.modified >= applied {
            listing.modified
        } else {
            listing.revision
        };
        self.mirror = Mirror {
            documents: listing.documents,
            chunks: listing.chunks,
            seen: listing.revision,
            push: listing.push,
            unapplied: (!unchanged).then_some(at),
            applied,
            changed: None,
        };
        self.apply().await;
        Ok(())
    }

    /// Watches from the revision after the last seen until the watch fails.
    async fn follow(&mut self) -> Result<(), EtcdError> {
        let mut stream = self.client.watch(self.mirror.seen + 1).await?;
        self.report(None);
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Err(EtcdError::WatchEnded("the stream closed".into())),
                Err(status) => {
                    return Err(EtcdError::Rpc {
                        what: "the watch",
                        status,
                    })
                }
            };
            if response.compact_revision > 0 {
                return Err(EtcdError::Compacted(response.compact_revision));
            }
            if response.canceled {
                return Err(EtcdError::WatchEnded(response.cancel_reason));
            }
            self.report(None);
            let header = response.header.map_or(0, |h| h.revision);
            if response.events.is_empty() {
                // A progress notification: nothing up to `header` is missing.
                self.mirror.seen = self.mirror.seen.max(header);
                continue;
            }
            for event in response.events {
                let Some(kv) = event.kv else { continue };
                let put = event.r#type == EventType::Put as i32;
                self.mirror.seen = self.mirror.seen.max(kv.mod_revision);
                let target = self.client.target();
                match target.classify(&kv.key) {
                    Key::Document(rel) => {
                        self.mirror.touched(rel);
                        if put {
                            self.mirror.documents.insert(rel.to_owned(), kv.value);
                        } else {
                            self.mirror.documents.remove(rel);
                        }
                    }
                    Key::PushMarker => {
                        self.mirror.push =
                            put.then(|| String::from_utf8_lossy(&kv.value).into_owned());
                    }
                    Key::Chunk(chunk) => {
                        // `DOC/ID/NNNNNN`: the document it belongs to changed.
                        if let Some(doc) = chunk.rsplitn(3, '/').nth(2) {
                            self.mirror.touched(doc);
                        }
                        if put {
                            self.mirror.chunks.insert(chunk.to_owned(), kv.value);
                        } else {
                            self.mirror.chunks.remove(chunk);
                        }
                    }
                    Key::Pushed => {}
                    Key::Other => continue,
                }
                self.mirror.unapplied = Some(kv.mod_revision);
            }
            self.apply().await;
        }
    }

    /// Builds and swaps in the mirror's store, unless nothing is new or a
    /// push is half done. A rejected store keeps the last good snapshot.
    async fn apply(&mut self) {
        let Some(revision) = self.mirror.unapplied else {
            return;
        };
        if let Some(marker) = &self.mirror.push {
            tracing::info!(store = %self.store, marker = %marker, "a push is in progress; its changes apply when it commits");
            return;
        }
        let documents = std::mem::take(&mut self.mirror.documents);
        let chunks = std::mem::take(&mut self.mirror.chunks);
        let changed = self.mirror.changed.replace(BTreeSet::new());
        let mut workspace = self.workspace.take();
        let cell = self.cell.clone();
        let store = self.store.clone();
        // A store with no change yet (an empty prefix) still serves, at 1.
        let at = u64::try_from(revision.max(1)).unwrap_or(1);
        let joined = tokio::task::spawn_blocking(move || {
            let whole = workspace.is_none();
            let result = cell.install(
                &store,
                &mut workspace,
                &documents,
                &chunks,
                changed.as_ref(),
                at,
            );
            if whole {
                // A whole load (above all a rejected one) peaks: give it back.
                crate::store::release_memory();
            }
            (documents, chunks, workspace, result)
        })
        .await;
        let result = match joined {
            Ok((documents, chunks, workspace, result)) => {
                self.mirror.documents = documents;
                self.mirror.chunks = chunks;
                self.workspace = workspace;
                result
            }
            Err(e) => {
                // The documents went with the task: read everything again.
                self.mirror.seen = 0;
                Err(LoadError::Etcd {
                    store: self.store.clone(),
                    source: EtcdError::WatchEnded(format!("the snapshot build failed: {e}")),
                })
            }
        };
        self.mirror.unapplied = None;
        if result.is_ok() {
            self.mirror.applied = revision;
        }
        self.observer.reloaded(&result, Trigger::StoreChange);
        crate::metrics::store_contact(self.connected, self.mirror.applied);
    }
}
