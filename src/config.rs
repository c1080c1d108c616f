//! `iamd serve` configuration: flags, each with an `IAMD_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::server::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `iamd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The store directory (watched; changes are reloaded).
    #[arg(long, env = "IAMD_STORE")]
    pub store: PathBuf,

    /// gRPC listen address (Authorizer, Envoy ext_authz, health, reflection).
    #[arg(long, env = "IAMD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Also serve gRPC on this Unix domain socket (the usual sidecar transport).
    #[arg(long, env = "IAMD_UDS")]
    pub uds: Option<PathBuf>,

    /// Prometheus listen address (`GET /metrics`).
    #[arg(long, env = "IAMD_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: SocketAddr,

    /// Export traces over OTLP/gRPC to this endpoint (e.g. http://127.0.0.1:4317); off when unset.
    #[arg(long, env = "IAMD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format.
    #[arg(long, env = "IAMD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "IAMD_LOG", default_value = "info")]
    pub log: String,

    /// Quiet time after a store change before reloading, in milliseconds.
    #[arg(long, env = "IAMD_RELOAD_DEBOUNCE_MS", default_value_t = 200)]
    pub reload_debounce_ms: u64,

    /// Largest request message, in bytes.
    #[arg(long, env = "IAMD_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Most requests in one AuthorizeBatch.
    #[arg(long, env = "IAMD_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,

    /// Most context keys in one request.
    #[arg(long, env = "IAMD_MAX_CONTEXT_KEYS", default_value_t = 64)]
    pub max_context_keys: usize,

    /// Most values of one context key.
    #[arg(long, env = "IAMD_MAX_CONTEXT_VALUES", default_value_t = 64)]
    pub max_context_values: usize,

    /// Longest context value, in bytes.
    #[arg(long, env = "IAMD_MAX_CONTEXT_VALUE_BYTES", default_value_t = 4096)]
    pub max_context_value_bytes: usize,

    /// On SIGTERM/SIGINT, how long in-flight RPCs may take to finish, in seconds.
    #[arg(long, env = "IAMD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_batch: self.max_batch,
            max_context_keys: self.max_context_keys,
            max_context_values: self.max_context_values,
            max_context_value_bytes: self.max_context_value_bytes,
        }
    }

    /// The OTLP endpoint: the flag, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp(&self) -> Option<String> {
        self.otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|s| !s.trim().is_empty())
    }
}
