//! The etcd v3 store backend: the documents of a store as the keys below a
//! prefix (`/PREFIX/account-1/authorization-details.json`), read at one
//! revision, followed by a watch, and replaced whole by a push.
//!
//! A push may need more than one transaction (etcd takes at most 128
//! operations and 1.5 MiB per request by default), so it is made atomic for
//! readers by a marker: the push first creates `/PREFIX/.push`, writes and
//! deletes documents in as many transactions as it takes, each guarded by
//! the marker still being its own, and commits by deleting the marker and
//! writing `/PREFIX/.pushed` in one last transaction. A reader applies
//! nothing while the marker exists; the push's changes reach it together, at
//! the commit's revision. A push that dies leaves the marker: readers keep
//! the last complete store until a new push (`--force`) replaces it.
//!
//! A document too large for one etcd request (an account's authorization
//! details can be tens of megabytes) is stored in chunks of at most
//! [`CHUNK_BYTES`] under `/PREFIX/.chunks/P/ID/N`, and its key `/PREFIX/P`
//! holds a small pointer, `{"iamd.chunked.v1": {"id": ID, "chunks": K,
//! "bytes": B}}`, written after the chunks; readers put the document back
//! together, and a pointer whose chunks are missing or of the wrong size is
//! an error for that document.
//!
//! The client speaks etcd's gRPC API through stubs compiled from
//! `proto/etcd/` (see its README for why not the `etcd-client` crate).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::location::{EtcdOptions, EtcdTarget};

/// etcd's v3 API, generated at build time.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod api {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use api::etcdserverpb::{
    auth_client::AuthClient, compare, kv_client::KvClient, request_op, response_op,
    watch_client::WatchClient, watch_request, AuthenticateRequest, Compare, DeleteRangeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};

/// Where the chunks of large documents live below the prefix.
pub const CHUNKS: &str = ".chunks/";
/// The largest chunk of a large document (and the largest document kept
/// whole), well within one etcd request.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The pointer's one member, which names its format.
const CHUNKED: &str = "iamd.chunked.v1";

/// The key below the prefix that marks a push in progress.
pub const PUSH_MARKER: &str = ".push";
/// The key below the prefix a push's commit writes (so the commit revision
/// is a key's `mod_revision`, and a sidecar that starts later computes it).
pub const PUSHED: &str = ".pushed";

/// etcd's default `--max-request-bytes` (1.5 MiB): one document and its key
/// must fit in one request.
pub const MAX_REQUEST_BYTES: usize = 1_572_864;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// What one push transaction carries at most: well under etcd's limits.
const BATCH_BYTES: usize = 1 << 20;
/// Pages take as many keys as the last page's largest value says fit in
/// [`PAGE_BYTES`], from [`PAGE_MIN`] (the first page) to [`PAGE_MAX`].
/// Fewer pages matter: etcd 3.4 collects every revision from a page's first
/// key to the end of the range for each page, so reading n keys in pages of
/// k costs it n²/2k.
const PAGE_BYTES: usize = 32 << 20;
const PAGE_MIN: i64 = 16;
const PAGE_MAX: i64 = 8192;
/// A page of this many keys always fits [`MAX_RESPONSE_BYTES`], even of the
/// largest values etcd takes: a page that did not is read again this size.
const PAGE_SAFE: i64 = 256;
/// Largest etcd response iamd accepts ([`PAGE_SAFE`] documents of up to 1.5 MiB).
const MAX_RESPONSE_BYTES: usize = 512 << 20;
/// A unary call that takes longer failed (a cluster with no member
/// reachable would otherwise leave it waiting).
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Why talking to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot read --etcd-{flag} `{}`: {source}", path.display())]
    TlsFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the etcd connection: {0}")]
    Transport(#[source] tonic::transport::Error),
    #[error("etcd failed {what}: {}", describe(.status))]
    Rpc {
        what: &'static str,
        #[source]
        status: Status,
    },
    #[error("etcd did not answer {what} within {} s", RPC_TIMEOUT.as_secs())]
    Timeout { what: &'static str },
    #[error("etcd compacted the history past revision {0}: the store is read again")]
    Compacted(i64),
    #[error("etcd ended the watch: {0}")]
    WatchEnded(String),
    #[error(
        "`{key}` is {bytes} bytes; iamd stores documents of at most {} bytes",
        super::MAX_FILE_BYTES
    )]
    DocumentTooLarge { key: String, bytes: usize },
    #[error("another push is in progress (marker `{key}`: {marker}); if it died, push again with --force")]
    PushInProgress { key: String, marker: String },
    #[error(
        "the push was taken over by another (its marker `{key}` changed); nothing more was written"
    )]
    PushTakenOver { key: String },
}

/// A status with what caused it (a refused TLS handshake, a reset
/// connection), which its message alone does not say.
fn describe(status: &Status) -> String {
    let mut out = format!("{} ({:?})", status.message(), status.code());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// The prefix read at one revision.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The etcd revision the read saw.
    pub revision: i64,
    /// Documents by relative path, as etcd holds them (a large one as its
    /// pointer: see [`assemble`]).
    pub documents: BTreeMap<String, Vec<u8>>,
    /// The chunks of large documents, by their path below `.chunks/`.
    pub chunks: BTreeMap<String, Vec<u8>>,
    /// The push marker's value, when a push is in progress.
    pub push: Option<String>,
    /// The newest `mod_revision` among the documents, the push marker and
    /// the last push's commit: the revision of the last change to the store.
    pub modified: i64,
}

/// What a key below the prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'k> {
    Document(&'k str),
    /// A piece of a large document: its path below `.chunks/`.
    Chunk(&'k str),
    PushMarker,
    Pushed,
    /// Not part of the store (not `*.json`, or a part starting with `.`),
    /// as a directory store skips such files.
    Other,
}

/// Whether a relative path names a store document: `*.json`, no empty part,
/// no part starting with `.` (the directory store's rules).
pub fn is_document(rel: &str) -> bool {
    rel.ends_with(".json")
        && rel
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.'))
}

impl EtcdTarget {
    /// The keys' common start: the prefix and a slash.
    pub fn dir(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The key of a relative path.
    pub fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    pub fn classify<'k>(&self, key: &'k [u8]) -> Key<'k> {
        let Some(rel) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
            .and_then(|k| k.strip_prefix('/'))
        else {
            return Key::Other;
        };
        match rel {
            PUSH_MARKER => Key::PushMarker,
            PUSHED => Key::Pushed,
            rel if is_document(rel) => Key::Document(rel),
            rel => match rel.strip_prefix(CHUNKS) {
                Some(chunk) if !chunk.is_empty() => Key::Chunk(chunk),
                _ => Key::Other,
            },
        }
    }
}

/// The end of the range of keys starting with `start` (etcd's prefix range).
fn range_end(start: &str) -> Vec<u8> {
    let mut end = start.as_bytes().to_vec();
    // The start ends with '/', so the last byte can always be incremented.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Adds the auth token, when there is one, to every call.
#[derive(Clone)]
struct Token(Arc<RwLock<Option<AsciiMetadataValue>>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = self.0.read().ok().and_then(|t| t.clone()) {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

type Service = InterceptedService<Channel, Token>;

/// A connection to an etcd cluster, for one store prefix. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: Token,
    credentials: Option<(String, String)>,
    target: EtcdTarget,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn read_pem(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::TlsFile {
        flag,
        path: path.clone(),
        source,
    })
}

impl Client {
    /// Sets up the connection, lazily: members are dialled on first use
    /// (so a sidecar starts while etcd is down), calls go to whichever
    /// members answer, and a user given logs in before the first call.
    pub async fn connect(target: &EtcdTarget, options: &EtcdOptions) -> Result<Client, EtcdError> {
        let tls = match &options.etcd_ca {
            None => None,
            Some(ca) => {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read_pem("ca", ca)?));
                if let (Some(cert), Some(key)) = (&options.etcd_cert, &options.etcd_key) {
                    tls = tls.identity(Identity::from_pem(
                        read_pem("cert", cert)?,
                        read_pem("key", key)?,
                    ));
                }
                Some(tls)
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoints = Vec::with_capacity(target.endpoints.len());
        for member in &target.endpoints {
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{member}"))
                .map_err(EtcdError::Transport)?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                // A member that vanishes without a reset (a partition, a
                // paused VM) is noticed within seconds, and the watch moves.
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            if let Some(tls) = &tls {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(EtcdError::Transport)?;
            }
            endpoints.push(endpoint);
        }
        let client = Client {
            channel: Channel::balance_list(endpoints.into_iter()),
            token: Token(Arc::new(RwLock::new(None))),
            credentials: options.etcd_user.clone().zip(options.etcd_password.clone()),
            target: target.clone(),
        };
        Ok(client)
    }

    pub fn target(&self) -> &EtcdTarget {
        &self.target
    }

    /// Drops a token etcd refused (expired, or the cluster restarted), so
    /// the next call logs in again.
    fn refused(&self, what: &'static str, status: Status) -> EtcdError {
        if self.credentials.is_some() && status.message().contains("token") {
            if let Ok(mut slot) = self.token.0.write() {
                *slot = None;
            }
        }
        EtcdError::Rpc { what, status }
    }

    /// Logs in if a user is given and no token is held yet.
    async fn ensure_token(&self) -> Result<(), EtcdError> {
        let missing = self.token.0.read().map_or(true, |t| t.is_none());
        if missing && self.credentials.is_some() {
            self.authenticate().await?;
        }
        Ok(())
    }

    async fn authenticate(&self) -> Result<(), EtcdError> {
        let Some((name, password)) = self.credentials.clone() else {
            return Ok(());
        };
        let mut auth = AuthClient::new(self.channel.clone());
        let response = tokio::time::timeout(
            RPC_TIMEOUT,
            auth.authenticate(AuthenticateRequest { name, password }),
        )
        .await
        .map_err(|_| EtcdError::Timeout {
            what: "the authentication",
        })?
        .map_err(|status| EtcdError::Rpc {
            what: "the authentication",
            status,
        })?;
        let token = AsciiMetadataValue::try_from(response.into_inner().token).map_err(|_| {
            EtcdError::Rpc {
                what: "the authentication",
                status: Status::internal("etcd returned a token that is not ASCII"),
            }
        })?;
        if let Ok(mut slot) = self.token.0.write() {
            *slot = Some(token);
        }
        Ok(())
    }

    fn kv(&self) -> KvClient<Service> {
        KvClient::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES * 2)
    }

    /// A unary KV call with a timeout; an expired auth token is renewed
    /// and the call made once more.
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, EtcdError>
    where
        F: Fn(KvClient<Service>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.ensure_token().await?;
        for attempt in 0..2 {
            let result = tokio::time::timeout(RPC_TIMEOUT, f(self.kv()))
                .await
                .map_err(|_| EtcdError::Timeout { what })?;
            match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if attempt == 0
                        && self.credentials.is_some()
                        && matches!(
                            status.code(),
                            Code::Unauthenticated | Code::InvalidArgument
                        )
                        && status.message().contains("token") =>
                {
                    self.authenticate().await?;
                }
                Err(status) => return Err(self.refused(what, status)),
            }
        }
        Err(EtcdError::Timeout { what })
    }

    /// Reads every key below the prefix at one revision, a page at a time.
    pub async fn list(&self) -> Result<Listing, EtcdError> {
        let dir = self.target.dir();
        let end = range_end(&dir);
        let mut listing = Listing::default();
        let mut from = dir.clone().into_bytes();
        let mut limit = PAGE_MIN;
        loop {
            let request = RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit,
                revision: listing.revision,
                ..Default::default()
            };
            let page = self
                .call("reading the store", |mut kv| {
                    let request = request.clone();
                    async move { kv.range(request).await }
                })
                .await;
            let page = match page {
                Ok(page) => page,
                // A large page of large values may pass the response cap:
                // that page again at the size that always fits.
                Err(EtcdError::Rpc { .. }) if limit > PAGE_SAFE => {
                    limit = PAGE_SAFE;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let largest = page.kvs.iter().map(|kv| kv.value.len()).max().unwrap_or(0);
            limit = i64::try_from(PAGE_BYTES / largest.max(1))
                .unwrap_or(PAGE_MAX)
                .clamp(PAGE_MIN, PAGE_MAX);
            if listing.revision == 0 {
                listing.revision = page.header.map_or(0, |h| h.revision);
            }
            let Some(last) = page.kvs.last().map(|kv| kv.key.clone()) else {
                break;
            };
            for kv in page.kvs {
                match self.target.classify(&kv.key) {
                    Key::Document(rel) => {
                        listing.modified = listing.modified.max(kv.mod_revision);
                        listing.documents.insert(rel.to_owned(), kv.value);
                    }
                    Key::PushMarker => {
                        listing.modified = listing.modified.max(kv.mod_revision);
                        listing.push = Some(String::from_utf8_lossy(&kv.value).into_owned());
                    }
                    Key::Pushed => listing.modified = listing.modified.max(kv.mod_revision),
                    Key::Chunk(chunk) => {
                        listing.chunks.insert(chunk.to_owned(), kv.value);
                    }
                    Key::Other => {}
                }
            }
            if !page.more {
                break;
            }
            from = last;
            from.push(0);
        }
        Ok(listing)
    }

    /// Watches the prefix from `revision` (inclusive). The first response
    /// confirms the watch; a compacted start revision comes back as
    /// [`EtcdError::Compacted`].
    pub async fn watch(&self, revision: i64) -> Result<tonic::Streaming<WatchResponse>, EtcdError> {
        self.ensure_token().await?;
        let dir = self.target.dir();
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: dir.clone().into_bytes(),
                    range_end: range_end(&dir),
                    start_revision: revision,
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        // The request side stays open: closing it would end the watch.
        let requests =
            tokio_stream::StreamExt::chain(tokio_stream::once(create), tokio_stream::pending());
        let mut request = Request::new(requests);
        // A member cut off from the leader ends the watch instead of
        // serving stale events (etcd's require-leader metadata).
        request
            .metadata_mut()
            .insert("hasleader", AsciiMetadataValue::from_static("true"));
        let mut watch = WatchClient::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut stream = tokio::time::timeout(RPC_TIMEOUT, watch.watch(request))
            .await
            .map_err(|_| EtcdError::Timeout { what: "the watch" })?
            .map_err(|status| self.refused("the watch", status))?
            .into_inner();
        let first = tokio::time::timeout(RPC_TIMEOUT, stream.message())
            .await
            .map_err(|_| EtcdError::Timeout { what: "the watch" })?
            .map_err(|status| self.refused("the watch", status))?
            .ok_or_else(|| {
                EtcdError::WatchEnded("the stream closed before the watch began".into())
            })?;
        if first.compact_revision > 0 {
            return Err(EtcdError::Compacted(first.compact_revision));
        }
        if first.canceled {
            return Err(EtcdError::WatchEnded(first.cancel_reason));
        }
        Ok(stream)
    }

    async fn txn(&self, what: &'static str, request: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.call(what, |mut kv| {
            let request = request.clone();
            async move { kv.txn(request).await }
        })
        .await
    }

    /// Replaces the store's documents with `documents` (relative path to
    /// content) as one change readers see whole. Documents whose content is
    /// already there are not written again.
    pub async fn push(
        &self,
        documents: &BTreeMap<String, Vec<u8>>,
        force: bool,
    ) -> Result<PushReport, EtcdError> {
        for (rel, value) in documents {
            if value.len() as u64 > super::MAX_FILE_BYTES {
                return Err(EtcdError::DocumentTooLarge {
                    key: self.target.key(rel),
                    bytes: value.len(),
                });
            }
        }
        let marker_key = self.target.key(PUSH_MARKER);
        let started = jiff::Timestamp::now();
        let marker = serde_json::json!({
            "id": format!("{}-{}", std::process::id(), started.as_nanosecond()),
            "host": hostname(),
            "started": started.to_string(),
            "documents": documents.len(),
        })
        .to_string();
        let put = |key: String, value: Vec<u8>| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.into_bytes(),
                value,
                ..Default::default()
            })),
        };
        let absent = Compare {
            key: marker_key.clone().into_bytes(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        };
        let ours = Compare {
            key: marker_key.clone().into_bytes(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            target_union: Some(compare::TargetUnion::Value(marker.clone().into_bytes())),
            ..Default::default()
        };
        let begin = TxnRequest {
            compare: if force { Vec::new() } else { vec![absent] },
            success: vec![put(marker_key.clone(), marker.clone().into_bytes())],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: marker_key.clone().into_bytes(),
                    ..Default::default()
                })),
            }],
        };
        let begun = self.txn("starting the push", begin).await?;
        if !begun.succeeded {
            let other = begun
                .responses
                .into_iter()
                .find_map(|r| match r.response {
                    Some(response_op::Response::ResponseRange(range)) => {
                        range.kvs.into_iter().next()
                    }
                    _ => None,
                })
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                .unwrap_or_default();
            return Err(EtcdError::PushInProgress {
                key: marker_key,
                marker: other,
            });
        }
        let listing = self.list().await?;
        let existing = assemble(&listing.documents, &listing.chunks);
        let delete = |key: String| RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.into_bytes(),
                    ..Default::default()
                },
            )),
        };
        let id = format!("{}-{}", std::process::id(), started.as_nanosecond());
        let mut report = PushReport::default();
        let mut ops = Vec::new();
        // The chunks the store keeps: those of large documents that stay as they are.
        let mut kept_chunks = std::collections::BTreeSet::new();
        for (rel, value) in documents {
            let same = existing
                .get(rel.as_str())
                .is_some_and(|d| d.as_deref() == Ok(value.as_slice()));
            if same {
                report.unchanged += 1;
                if let Some(pointer) = listing.documents.get(rel).and_then(|d| Pointer::parse(d)) {
                    kept_chunks.extend((0..pointer.chunks).map(|n| pointer.chunk(rel, n)));
                }
                continue;
            }
            report.written += 1;
            if value.len() <= CHUNK_BYTES {
                ops.push(put(self.target.key(rel), value.clone()));
                continue;
            }
            // The chunks first: the pointer after them names only chunks that exist.
            let pointer = Pointer {
                id: id.clone(),
                chunks: value.len().div_ceil(CHUNK_BYTES),
                bytes: value.len(),
            };
            for (n, piece) in value.chunks(CHUNK_BYTES).enumerate() {
                let chunk = format!("{CHUNKS}{}", pointer.chunk(rel, n));
                ops.push(put(self.target.key(&chunk), piece.to_vec()));
            }
            ops.push(put(self.target.key(rel), pointer.to_json().into_bytes()));
        }
        for rel in listing
            .documents
            .keys()
            .filter(|rel| !documents.contains_key(*rel))
        {
            report.removed += 1;
            ops.push(delete(self.target.key(rel)));
        }
        // Chunks nothing points at any more go last, after the pointers moved on.
        for chunk in listing.chunks.keys().filter(|c| !kept_chunks.contains(*c)) {
            ops.push(delete(self.target.key(&format!("{CHUNKS}{chunk}"))));
        }
        for batch in batches(ops) {
            let written = self
                .txn(
                    "a push batch",
                    TxnRequest {
                        compare: vec![ours.clone()],
                        success: batch,
                        failure: Vec::new(),
                    },
                )
                .await?;
            if !written.succeeded {
                return Err(EtcdError::PushTakenOver { key: marker_key });
            }
        }
        let pushed = serde_json::json!({
            "marker": serde_json::from_str::<serde_json::Value>(&marker).unwrap_or_default(),
            "finished": jiff::Timestamp::now().to_string(),
            "written": report.written,
            "unchanged": report.unchanged,
            "removed": report.removed,
        })
        .to_string();
        let commit = self
            .txn(
                "committing the push",
                TxnRequest {
                    compare: vec![ours],
                    success: vec![
                        RequestOp {
                            request: Some(request_op::Request::RequestDeleteRange(
                                DeleteRangeRequest {
                                    key: marker_key.clone().into_bytes(),
                                    ..Default::default()
                                },
                            )),
                        },
                        put(self.target.key(PUSHED), pushed.into_bytes()),
                    ],
                    failure: Vec::new(),
                },
            )
            .await?;
        if !commit.succeeded {
            return Err(EtcdError::PushTakenOver { key: marker_key });
        }
        report.revision = commit.header.map_or(0, |h| h.revision);
        Ok(report)
    }
}

/// Where a large document's chunks are, as its key holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointer {
    id: String,
    chunks: usize,
    bytes: usize,
}

impl Pointer {
    /// The pointer a document's value is, if it is one.
    fn parse(value: &[u8]) -> Option<Pointer> {
        // Cheap test first: a document is almost never a pointer.
        let marked = value.len() <= 512
            && value
                .windows(CHUNKED.len())
                .any(|w| w == CHUNKED.as_bytes());
        if !marked {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        let p = v.as_object().filter(|o| o.len() == 1)?.get(CHUNKED)?;
        let id = p.get("id")?.as_str()?;
        let safe = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        Some(Pointer {
            id: safe.then(|| id.to_owned())?,
            chunks: usize::try_from(p.get("chunks")?.as_u64()?).ok()?,
            bytes: usize::try_from(p.get("bytes")?.as_u64()?).ok()?,
        })
    }

    fn to_json(&self) -> String {
        serde_json::json!({CHUNKED: {"id": self.id, "chunks": self.chunks, "bytes": self.bytes}})
            .to_string()
    }

    /// The path below `.chunks/` of chunk `n` of the document at `rel`.
    fn chunk(&self, rel: &str, n: usize) -> String {
        format!("{rel}/{}/{n:06}", self.id)
    }
}

type Assembled<'d> = Result<std::borrow::Cow<'d, [u8]>, String>;

/// The documents put back together: each as its bytes, or, for a pointer
/// whose chunks are not all there, why not.
pub fn assemble<'d>(
    documents: &'d BTreeMap<String, Vec<u8>>,
    chunks: &BTreeMap<String, Vec<u8>>,
) -> BTreeMap<&'d str, Assembled<'d>> {
    documents
        .iter()
        .map(|(rel, doc)| (rel.as_str(), assemble_one(rel, doc, chunks)))
        .collect()
}

/// One document put back together (see [`assemble`]).
pub fn assemble_one<'d>(
    rel: &str,
    doc: &'d Vec<u8>,
    chunks: &BTreeMap<String, Vec<u8>>,
) -> Assembled<'d> {
    let Some(pointer) = Pointer::parse(doc) else {
        return Ok(std::borrow::Cow::Borrowed(doc.as_slice()));
    };
    if pointer.bytes as u64 > super::MAX_FILE_BYTES {
        return Err(format!(
            "the document is {} bytes in {} chunks; store files are limited to {}",
            pointer.bytes,
            pointer.chunks,
            super::MAX_FILE_BYTES
        ));
    }
    let mut value = Vec::with_capacity(pointer.bytes);
    for n in 0..pointer.chunks {
        let Some(piece) = chunks.get(&pointer.chunk(rel, n)) else {
            return Err(format!(
                "chunk {n} of {} (`{CHUNKS}{}`) is missing",
                pointer.chunks,
                pointer.chunk(rel, n)
            ));
        };
        value.extend_from_slice(piece);
    }
    if value.len() != pointer.bytes {
        return Err(format!(
            "its {} chunks hold {} bytes, not the {} its pointer says",
            pointer.chunks,
            value.len(),
            pointer.bytes
        ));
    }
    Ok(std::borrow::Cow::Owned(value))
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushReport {
    /// The revision of the commit: what sidecars report once they apply it.
    pub revision: i64,
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
}

fn op_bytes(op: &RequestOp) -> usize {
    match &op.request {
        Some(request_op::Request::RequestPut(p)) => p.key.len() + p.value.len(),
        Some(request_op::Request::RequestDeleteRange(d)) => d.key.len(),
        _ => 0,
    }
}

/// Splits operations into transactions within etcd's default limits (one
/// operation is kept for the guard's headroom, and an oversized document
/// travels alone).
fn batches(ops: Vec<RequestOp>) -> Vec<Vec<RequestOp>> {
    let mut out: Vec<Vec<RequestOp>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = op_bytes(&op);
        let full = out
            .last()
            .is_none_or(|b| b.len() + 1 >= MAX_TXN_OPS || bytes + size > BATCH_BYTES);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(batch) = out.last_mut() {
            batch.push(op);
        }
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> EtcdTarget {
        EtcdTarget {
            endpoints: vec!["h:1".into()],
            prefix: "/iamd".into(),
        }
    }

    #[test]
    fn keys_below_the_prefix_are_documents_markers_or_ignored() {
        let t = target();
        assert_eq!(
            t.classify(b"/iamd/account-1/authorization-details.json"),
            Key::Document("account-1/authorization-details.json")
        );
        assert_eq!(t.classify(b"/iamd/.push"), Key::PushMarker);
        assert_eq!(t.classify(b"/iamd/.pushed"), Key::Pushed);
        for other in [
            &b"/iamd/notes.txt"[..],
            b"/iamd/.hidden/x.json",
            b"/iamd/a//x.json",
            b"/iamdx/a.json",
            b"/other/a.json",
            b"/iamd/\xff.json",
        ] {
            assert_eq!(t.classify(other), Key::Other, "{other:?}");
        }
        assert_eq!(range_end("/iamd/"), b"/iamd0");
    }

    #[test]
    fn large_documents_are_put_back_together_or_say_what_is_missing() {
        let pointer = Pointer {
            id: "7-42".into(),
            chunks: 2,
            bytes: 5,
        };
        assert_eq!(
            Pointer::parse(pointer.to_json().as_bytes()),
            Some(pointer.clone())
        );
        let doc = |value: &[u8]| value.to_vec();
        let documents = BTreeMap::from([
            ("a.json".to_owned(), doc(pointer.to_json().as_bytes())),
            ("b.json".to_owned(), doc(br#"{"Policy": {}}"#)),
        ]);
        let mut chunks = BTreeMap::from([
            ("a.json/7-42/000000".to_owned(), b"abc".to_vec()),
            ("a.json/7-42/000001".to_owned(), b"de".to_vec()),
        ]);
        let whole = assemble(&documents, &chunks);
        assert_eq!(whole["a.json"].as_deref(), Ok(&b"abcde"[..]));
        assert_eq!(whole["b.json"].as_deref(), Ok(&br#"{"Policy": {}}"#[..]));

        chunks.insert("a.json/7-42/000001".to_owned(), b"d".to_vec());
        let short = assemble(&documents, &chunks);
        assert!(short["a.json"]
            .as_ref()
            .unwrap_err()
            .contains("hold 4 bytes, not the 5"));
        chunks.remove("a.json/7-42/000001");
        let missing = assemble(&documents, &chunks);
        assert!(missing["a.json"]
            .as_ref()
            .unwrap_err()
            .contains("chunk 1 of 2 (`.chunks/a.json/7-42/000001`) is missing"));
        // An id that could climb out of the chunk folder is no pointer.
        assert_eq!(
            Pointer::parse(br#"{"iamd.chunked.v1": {"id": "../x", "chunks": 1, "bytes": 1}}"#),
            None
        );
        assert_eq!(
            target().classify(b"/iamd/.chunks/a.json/7-42/000000"),
            Key::Chunk("a.json/7-42/000000")
        );
    }

    #[test]
    fn batches_stay_within_etcds_limits() {
        let put = |n: usize| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: vec![0; n],
                ..Default::default()
            })),
        };
        let many = batches((0..300).map(|_| put(10)).collect());
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            [127, 127, 46]
        );
        let big = batches(vec![put(900_000), put(900_000), put(10)]);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
        assert!(batches(Vec::new()).is_empty());
    }
}
