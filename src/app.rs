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
use tokio_stream::wrappers::UnixListenerStream;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::config::ServeArgs;
use crate::metrics::{self, Metrics};
use crate::reload::{self, ReloadObserver, Reloaded, SnapshotCell, Trigger};
use crate::server::{pb, AppState, AuthorizerService, EnvoyAuthorizer};
use crate::store::LoadError;

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
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(String),
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
                    LoadError::Dir { .. } => None,
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

/// Runs the sidecar until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let envoy_config = args.envoy()?;
    let metrics = Arc::new(Metrics::install()?);
    let cell = Arc::new(SnapshotCell::new());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<AuthorizerServer>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let state = Arc::new(AppState {
        snapshots: cell.clone(),
        metrics: metrics.clone(),
        limits: args.limits(),
    });
    let authorizer = AuthorizerService::new(state.clone());
    // tonic's own limit backs up the friendlier check in the handlers.
    let hard_limit = args.max_message_bytes.saturating_mul(2).max(4096);
    let authorizer_server = AuthorizerServer::new(authorizer.clone())
        .max_decoding_message_size(hard_limit)
        .max_encoding_message_size(64 << 20);
    let envoy_server = envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
        EnvoyAuthorizer::new(state.clone(), envoy_config),
    )
    .max_decoding_message_size(hard_limit.max(4 << 20));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let router = move || {
        tonic::transport::Server::builder()
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
        Some(path) => {
            // A socket left by a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok() {
                let _ = std::fs::remove_file(path);
            }
            Some(UnixListener::bind(path).map_err(|source| ServeError::Bind {
                what: "the Unix socket",
                addr: path.display().to_string(),
                source,
            })?)
        }
    };
    tracing::info!(
        grpc_addr = %grpc_addr,
        metrics_addr = %metrics_addr,
        uds = args.uds.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        store = %args.store.display(),
        "iamd listening"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let observer = Arc::new(Observer {
        health: health.clone(),
        store: args.store.display().to_string(),
    });
    let (reload_tx, _reload_task) = reload::spawn_reloader(
        cell.clone(),
        args.store.clone(),
        reload::Timing {
            debounce: Duration::from_millis(args.reload_debounce_ms),
            max_wait: Duration::from_millis(args.reload_max_wait_ms),
            recheck: Duration::from_millis(args.reload_recheck_ms),
        },
        observer,
    )
    .map_err(|source| ServeError::Watch {
        path: args.store.display().to_string(),
        source,
    })?;
    let _ = reload_tx.send(Trigger::Startup);

    let mut servers = tokio::task::JoinSet::new();
    // TCP_NODELAY: a response written in several segments must not wait
    // for the client's delayed ACK (tens of milliseconds on small RPCs).
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    servers.spawn(router().serve_with_incoming_shutdown(incoming, stopped(shutdown_rx.clone())));
    if let Some(uds) = uds {
        servers.spawn(router().serve_with_incoming_shutdown(
            UnixListenerStream::new(uds),
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
    let metrics_shutdown = stopped(shutdown_rx.clone());
    let metrics_task = tokio::spawn(async move {
        axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(metrics_shutdown)
            .await
    });

    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;
    let failure = loop {
        tokio::select! {
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the store");
                let _ = reload_tx.send(Trigger::Signal);
            }
            Some(done) = servers.join_next() => {
                // A server stopped without being asked to: report it and stop.
                break Some(match done {
                    Ok(Ok(())) => "a gRPC server stopped unexpectedly".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
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
    if let Some(path) = &args.uds {
        let _ = std::fs::remove_file(path);
    }
    match failure {
        Some(e) => Err(ServeError::Transport(e)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
