//! The sidecar's lifecycle: bind, serve, reload, drain.
//!
//! Listeners are bound first so health checks answer NOT_SERVING while the
//! store loads; the first good snapshot flips health to SERVING. SIGHUP
//! forces a reload; SIGTERM or SIGINT turns health to NOT_SERVING, stops
//! accepting, and lets in-flight RPCs finish within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::config::ServeArgs;
use crate::metrics::{self, Metrics};
use crate::reload::{self, ReloadObserver, Reloaded, SnapshotCell, Trigger};
use crate::server::listener::{self, ConnectionTable};
use crate::server::{pb, AdmissionLayer, AppState, AuthorizerService, EnvoyAuthorizer};
use crate::store::{etcd, LoadError, StoreLocation};

type AuthorizerServer = pb::authorizer_server::AuthorizerServer<AuthorizerService>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {what} `{addr}`: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot watch the store `{path}`: {source}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
    #[error("cannot connect to the store's etcd cluster: {0}")]
    Etcd(#[source] crate::store::etcd::EtcdError),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[source] tonic::transport::Error),
    #[error("the gRPC server task failed: {0}")]
    ServerTask(#[source] tokio::task::JoinError),
    /// A server returned without being asked to stop.
    #[error("a gRPC server stopped unexpectedly")]
    ServerStopped,
}

/// Reacts to reloads: health, metrics and logs.
struct Observer {
    health: HealthReporter,
    store: String,
}

impl ReloadObserver for Observer {
    fn reloaded(&self, result: &Result<Reloaded, LoadError>, trigger: Trigger) {
        match result {
            Ok(r) => {
                metrics::snapshot_loaded(
                    r.revision,
                    r.stats,
                    reload::unix_seconds(std::time::SystemTime::now()),
                );
                tracing::info!(
                    revision = r.revision,
                    accounts = r.stats.accounts,
                    principals = r.stats.principals,
                    policies = r.stats.policies,
                    statements = r.stats.statements,
                    warnings = r.warnings,
                    trigger = ?trigger,
                    "store loaded"
                );
                metrics::documents_rejected(r.rejected.len(), r.held);
                for (document, findings) in &r.rejected {
                    tracing::error!(
                        store = %self.store,
                        document = %document,
                        errors = findings.errors().count(),
                        first_error = findings
                            .errors()
                            .next()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        "document rejected; its last good version keeps serving"
                    );
                }
                let health = self.health.clone();
                tokio::spawn(async move {
                    health.set_serving::<AuthorizerServer>().await;
                    health.set_service_status("", ServingStatus::Serving).await;
                });
            }
            Err(e) => {
                metrics::reload_failed();
                let first = match e {
                    LoadError::Rejected { findings, .. } => {
                        findings.errors().next().map(ToString::to_string)
                    }
                    LoadError::Dir { .. } | LoadError::Compile { .. } | LoadError::Etcd { .. } => {
                        None
                    }
                };
                tracing::error!(
                    store = %self.store,
                    error = %e,
                    first_error = first.as_deref().unwrap_or(""),
                    trigger = ?trigger,
                    "store rejected; the last good snapshot keeps serving"
                );
            }
        }
    }
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// The signals iamd reacts to. Installed before anything else at start-up:
/// until a handler exists, SIGHUP's default action kills the process, and
/// an operator's reload must never do that.
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, ServeError> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup()).map_err(ServeError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(ServeError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(ServeError::Signals)?,
        })
    }
}

/// Which file a socket iamd bound is (device and inode), so that iamd
/// removes that socket and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketIdentity {
    dev: u64,
    ino: u64,
}

fn identity(meta: &std::fs::Metadata) -> SocketIdentity {
    use std::os::unix::fs::MetadataExt;
    SocketIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Binds the Unix socket. Something already at the path is removed only if
/// it is a socket nobody listens on (one left by an iamd that died);
/// anything else is refused, never deleted.
fn bind_uds(path: &std::path::Path) -> Result<(UnixListener, SocketIdentity), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let refuse = |why: String| ServeError::Bind {
        what: "the Unix socket",
        addr: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, why),
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(format!("cannot inspect what is there: {e}"))),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(refuse(
                "something that is not a socket is there; iamd replaces only a stale socket".into(),
            ))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(refuse("another process is listening on it".into())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| refuse(format!("cannot remove the stale socket: {e}")))?;
            }
            Err(e) => return Err(refuse(format!("cannot tell whether it is in use: {e}"))),
        },
    }
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        what: "the Unix socket",
        addr: path.display().to_string(),
        source,
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| ServeError::Bind {
        what: "the Unix socket",
        addr: path.display().to_string(),
        source,
    })?;
    Ok((listener, identity(&meta)))
}

/// Removes the socket iamd bound, if it is still the file at `path`.
fn remove_own_socket(path: &std::path::Path, id: SocketIdentity) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if identity(&meta) == id => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the Unix socket");
            }
        }
        Ok(_) => tracing::warn!(
            path = %path.display(),
            "the Unix socket was replaced while iamd ran; leaving what is there"
        ),
        Err(_) => {}
    }
}

/// Runs the sidecar until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs, signals: Signals) -> Result<(), ServeError> {
    let Signals {
        terminate: mut sigterm,
        interrupt: mut sigint,
        hangup: mut sighup,
    } = signals;
    let envoy_config = args.envoy()?;
    let metrics = Arc::new(Metrics::install()?);
    let cell = Arc::new(SnapshotCell::new());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<AuthorizerServer>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let admission = args.admission()?;
    let heavy = match args.max_heavy_decisions {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    };
    let state = Arc::new(AppState {
        snapshots: cell.clone(),
        metrics: metrics.clone(),
        limits: args.limits(),
        heavy: Arc::new(tokio::sync::Semaphore::new(heavy)),
    });
    let authorizer = AuthorizerService::new(state.clone());
    // tonic's own limits back up the admission layer's.
    let authorizer_server = AuthorizerServer::new(authorizer.clone())
        .max_decoding_message_size(admission.max_authorize_bytes)
        .max_encoding_message_size(64 << 20);
    let envoy_server = envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
        EnvoyAuthorizer::new(state.clone(), envoy_config),
    )
    .max_decoding_message_size(admission.max_check_bytes);
    let admission_layer = AdmissionLayer::new(admission);
    let keepalive = (args.keepalive_interval_secs > 0)
        .then(|| Duration::from_secs(args.keepalive_interval_secs));
    let keepalive_timeout = Duration::from_secs(args.keepalive_timeout_secs.max(1));
    let max_streams = args.max_concurrent_streams.max(1);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let router = move || {
        tonic::transport::Server::builder()
            .max_concurrent_streams(max_streams)
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(Some(keepalive_timeout))
            // HTTP/2 flow control bounds what a connection's unread streams
            // can hold; the admission layer bounds what iamd reads.
            .initial_stream_window_size(256 << 10)
            .initial_connection_window_size(1 << 20)
            .http2_max_header_list_size(16 << 10)
            .http2_max_pending_accept_reset_streams(Some(64))
            .layer(admission_layer.clone())
            .add_service(health_service.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(authorizer_server.clone())
            .add_service(envoy_server.clone())
    };

    let grpc = bind_tcp("the gRPC address", args.grpc_addr).await?;
    let grpc_addr = grpc.local_addr().map_err(|source| ServeError::Bind {
        what: "the gRPC address",
        addr: args.grpc_addr.to_string(),
        source,
    })?;
    let metrics_listener = bind_tcp("the metrics address", args.metrics_addr).await?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "the metrics address",
            addr: args.metrics_addr.to_string(),
            source,
        })?;
    let uds = match &args.uds {
        None => None,
        Some(path) => Some(bind_uds(path)?),
    };
    // Connection limits leave descriptors for everything else iamd opens.
    let descriptors = listener::raise_descriptor_limit();
    let wanted = args.connection_limits();
    let metrics_limits = listener::ConnectionLimits {
        max_connections: listener::fit_to_descriptors(
            args.metrics_max_connections.max(1),
            0,
            descriptors,
        ),
        idle_timeout: Duration::from_secs(60),
        first_request_timeout: crate::server::metrics_http::HEADER_READ_TIMEOUT,
    };
    let grpc_listeners = if uds.is_some() { 2 } else { 1 };
    let per_listener = listener::fit_to_descriptors(
        wanted.max_connections.saturating_mul(grpc_listeners),
        metrics_limits.max_connections,
        descriptors,
    ) / grpc_listeners;
    let grpc_limits = listener::ConnectionLimits {
        max_connections: per_listener.max(1),
        ..wanted
    };
    let grpc_table = ConnectionTable::new("grpc", grpc_limits);
    let uds_table = uds
        .is_some()
        .then(|| ConnectionTable::new("uds", grpc_limits));
    let metrics_table = ConnectionTable::new("metrics", metrics_limits);
    tracing::info!(
        grpc_addr = %grpc_addr,
        metrics_addr = %metrics_addr,
        descriptor_limit = descriptors,
        max_connections = grpc_limits.max_connections,
        metrics_max_connections = metrics_limits.max_connections,
        uds = args.uds.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        store = %args.store,
        "iamd listening"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let observer = Arc::new(Observer {
        health: health.clone(),
        store: args.store.to_string(),
    });
    // A directory is watched and reloaded; an etcd store is followed.
    let reload_tx = match &args.store {
        StoreLocation::Dir(dir) => {
            let (reload_tx, _reload_task) = reload::spawn_reloader(
                cell.clone(),
                dir.clone(),
                reload::Timing {
                    debounce: Duration::from_millis(args.reload_debounce_ms),
                    max_wait: Duration::from_millis(args.reload_max_wait_ms),
                    recheck: Duration::from_millis(args.reload_recheck_ms),
                },
                observer,
            )
            .map_err(|source| ServeError::Watch {
                path: dir.display().to_string(),
                source,
            })?;
            let _ = reload_tx.send(Trigger::Startup);
            Some(reload_tx)
        }
        StoreLocation::Etcd(target) => {
            let client = etcd::Client::connect(target, &args.etcd)
                .await
                .map_err(ServeError::Etcd)?;
            let _follower = reload::etcd::spawn_follower(cell.clone(), client, observer);
            None
        }
    };

    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(router().serve_with_incoming_shutdown(
        listener::incoming(grpc, grpc_table),
        stopped(shutdown_rx.clone()),
    ));
    let uds_identity = uds.as_ref().map(|(_, id)| *id);
    if let (Some((uds, _)), Some(table)) = (uds, uds_table) {
        servers.spawn(router().serve_with_incoming_shutdown(
            listener::incoming(uds, table),
            stopped(shutdown_rx.clone()),
        ));
    }
    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    let metrics_task = tokio::spawn(crate::server::metrics_http::serve(
        metrics_listener,
        metrics_table,
        metrics_app,
        stopped(shutdown_rx.clone()),
    ));

    let failure = loop {
        tokio::select! {
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            _ = sighup.recv() => match &reload_tx {
                Some(reload_tx) => {
                    tracing::info!("SIGHUP: reloading the store");
                    let _ = reload_tx.send(Trigger::Signal);
                }
                None => tracing::info!("SIGHUP: an etcd store is followed as it changes; nothing to reload"),
            },
            Some(done) = servers.join_next() => {
                // A server stopped without being asked to: report it and stop.
                break Some(match done {
                    Ok(Ok(())) => ServeError::ServerStopped,
                    Ok(Err(e)) => ServeError::Transport(e),
                    Err(e) => ServeError::ServerTask(e),
                });
            }
        }
    };

    tracing::info!(
        grace_secs = args.shutdown_grace_secs,
        "shutting down: draining in-flight RPCs"
    );
    health.set_not_serving::<AuthorizerServer>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = shutdown_tx.send(true);
    let drain = async {
        while servers.join_next().await.is_some() {}
        let _ = metrics_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(args.shutdown_grace_secs), drain)
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    if let (Some(path), Some(id)) = (&args.uds, uds_identity) {
        remove_own_socket(path, id);
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
