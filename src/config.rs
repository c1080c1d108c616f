//! `iamd serve` configuration: flags, each with an `IAMD_*` environment variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use std::time::Duration;

use crate::finding::echo;
use crate::routes::ArnDefaults;
use crate::server::{AdmissionConfig, ConnectionLimits, EnvoyConfig, Limits, ScanLimits};

/// A configuration value that cannot work, with the flag it came from.
///
/// Messages name the flag and include the cause (also given as the source):
/// `iamd serve` prints the message alone.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--max-in-flight-bytes {given} is smaller than one largest request ({needed} bytes)")]
    InFlightBytesBelowOneRequest { given: usize, needed: usize },
    #[error("--request-timeout-ms must be above 0")]
    ZeroRequestTimeout,
    #[error("--lambda-account `{}` is not a 12-digit account id", echo(.0))]
    LambdaAccount(String),
    #[error("cannot read --spiffe-roles `{}`: {source}", path.display())]
    SpiffeRolesUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--spiffe-roles `{}` is not a JSON object of strings: {source}", path.display())]
    SpiffeRolesNotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("--spiffe-roles `{}`: `{}` is not a SPIFFE ID", path.display(), echo(id))]
    NotSpiffeId { path: PathBuf, id: String },
    #[error("--spiffe-roles `{}`: `{}` (for `{}`) is not an IAM role ARN", path.display(), echo(role), echo(id))]
    NotRoleArn {
        path: PathBuf,
        id: String,
        role: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `iamd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The store: a directory (watched; changes are reloaded) or
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX (followed with a watch).
    #[arg(long, env = "IAMD_STORE")]
    pub store: crate::store::StoreLocation,
    #[command(flatten)]
    pub etcd: crate::store::EtcdOptions,

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

    /// Longest a store change waits for its reload while changes keep coming, in milliseconds.
    #[arg(long, env = "IAMD_RELOAD_MAX_WAIT_MS", default_value_t = 2000)]
    pub reload_max_wait_ms: u64,

    /// How often to check that the watched store directory is still the one at
    /// the path (a safety net for missed events), in milliseconds.
    #[arg(long, env = "IAMD_RELOAD_RECHECK_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub reload_recheck_ms: u64,

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

    /// Longest a request with `min_revision` waits for this sidecar to reach
    /// it before failing with UNAVAILABLE, in milliseconds.
    #[arg(long, env = "IAMD_MAX_REVISION_WAIT_MS", default_value_t = 1000)]
    pub max_revision_wait_ms: u64,

    /// Envoy ext_authz: the region of functions named without an ARN.
    #[arg(long, env = "IAMD_LAMBDA_REGION")]
    pub lambda_region: Option<String>,

    /// Envoy ext_authz: the account of functions named without an ARN.
    #[arg(long, env = "IAMD_LAMBDA_ACCOUNT")]
    pub lambda_account: Option<String>,

    /// Envoy ext_authz: the partition of ARNs iamd builds.
    #[arg(long, env = "IAMD_LAMBDA_PARTITION", default_value = "aws")]
    pub lambda_partition: String,

    /// Envoy ext_authz: a request header, set by the mesh and trusted, that
    /// names the principal (an IAM ARN). Off unless set: never trust a header
    /// a client can send straight through.
    #[arg(long, env = "IAMD_PRINCIPAL_HEADER")]
    pub principal_header: Option<String>,

    /// Envoy ext_authz: a JSON file mapping SPIFFE IDs (peer certificate URI
    /// SANs) to IAM role ARNs, e.g. {"spiffe://cluster.local/ns/a/sa/b": "arn:aws:iam::111122223333:role/b"}.
    #[arg(long, env = "IAMD_SPIFFE_ROLES")]
    pub spiffe_roles: Option<PathBuf>,

    /// Longest an RPC may take before it fails with DEADLINE_EXCEEDED (a deny
    /// for Envoy), in milliseconds; a caller's shorter `grpc-timeout` wins.
    #[arg(long, env = "IAMD_REQUEST_TIMEOUT_MS", default_value_t = 2000)]
    pub request_timeout_ms: u64,

    /// Most decision RPCs (Authorize, AuthorizeBatch, Check) in flight at once;
    /// past it, RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "IAMD_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Most request bytes the decision RPCs in flight may hold, in bytes.
    #[arg(long, env = "IAMD_MAX_IN_FLIGHT_BYTES", default_value_t = 64 << 20)]
    pub max_in_flight_bytes: usize,

    /// Most batches and explanations decided at once, off the async threads
    /// (0: one per core).
    #[arg(long, env = "IAMD_MAX_HEAVY_DECISIONS", default_value_t = 0)]
    pub max_heavy_decisions: usize,

    /// Largest Envoy Check message, in bytes.
    #[arg(long, env = "IAMD_MAX_CHECK_BYTES", default_value_t = 4 << 20)]
    pub max_check_bytes: usize,

    /// Most HTTP headers in one Envoy Check.
    #[arg(long, env = "IAMD_MAX_CHECK_HEADERS", default_value_t = 256)]
    pub max_check_headers: usize,

    /// Most gRPC connections (TCP and Unix socket each); at the limit the
    /// longest-idle one is closed to make room. Lowered to fit the file
    /// descriptor limit.
    #[arg(long, env = "IAMD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most concurrent HTTP/2 streams on one gRPC connection.
    #[arg(long, env = "IAMD_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,

    /// Close a gRPC connection with no request in flight for this long, in seconds.
    #[arg(long, env = "IAMD_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,

    /// Close a connection that has begun no request this long after it was
    /// accepted (it never spoke, or trickles its headers), in seconds.
    #[arg(long, env = "IAMD_FIRST_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub first_request_timeout_secs: u64,

    /// HTTP/2 keepalive: ping a gRPC client this often, in seconds (0: off).
    #[arg(long, env = "IAMD_KEEPALIVE_INTERVAL_SECS", default_value_t = 30)]
    pub keepalive_interval_secs: u64,

    /// HTTP/2 keepalive: close the connection if a ping is not answered within this, in seconds.
    #[arg(long, env = "IAMD_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10)]
    pub keepalive_timeout_secs: u64,

    /// Most connections to the metrics listener.
    #[arg(long, env = "IAMD_METRICS_MAX_CONNECTIONS", default_value_t = 32)]
    pub metrics_max_connections: usize,

    /// On SIGTERM/SIGINT, how long in-flight RPCs may take to finish, in seconds.
    #[arg(long, env = "IAMD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl ServeArgs {
    /// What the admission layer enforces. Its size limits stand behind the
    /// handlers' friendlier checks: twice the message limit, and twice the
    /// counts, so a request a little over a limit still gets the handler's
    /// precise message while a hostile one never reaches the decoder.
    pub fn admission(&self) -> Result<AdmissionConfig, ConfigError> {
        let hard = self.max_message_bytes.saturating_mul(2).max(4096);
        let check = self.max_check_bytes.max(hard);
        // `check` is at least `hard`: the largest request of any kind, framed.
        if self.max_in_flight_bytes < check + 5 {
            return Err(ConfigError::InFlightBytesBelowOneRequest {
                given: self.max_in_flight_bytes,
                needed: check + 5,
            });
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::ZeroRequestTimeout);
        }
        Ok(AdmissionConfig {
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_in_flight: self.max_in_flight.max(1),
            max_in_flight_bytes: self.max_in_flight_bytes,
            max_authorize_bytes: hard,
            max_check_bytes: check,
            scan: ScanLimits {
                batch_requests: self.max_batch.saturating_mul(2),
                context_keys: self.max_context_keys.saturating_mul(2),
                context_values: self.max_context_values.saturating_mul(2),
                headers: self.max_check_headers,
                extensions: 256,
                unread_field_bytes: 64 << 10,
            },
        })
    }

    /// Limits of the gRPC listeners, before fitting them to the descriptors.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections.max(1),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            first_request_timeout: Duration::from_secs(self.first_request_timeout_secs.max(1)),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_batch: self.max_batch,
            max_context_keys: self.max_context_keys,
            max_context_values: self.max_context_values,
            max_context_value_bytes: self.max_context_value_bytes,
            max_revision_wait: Duration::from_millis(self.max_revision_wait_ms),
        }
    }

    /// The ext_authz settings, with the SPIFFE role table read and checked.
    pub fn envoy(&self) -> Result<EnvoyConfig, ConfigError> {
        if let Some(a) = &self.lambda_account {
            if !crate::policy::arn::is_account_id(a) {
                return Err(ConfigError::LambdaAccount(a.clone()));
            }
        }
        let mut spiffe_roles = HashMap::new();
        if let Some(path) = &self.spiffe_roles {
            let text = std::fs::read_to_string(path).map_err(|source| {
                ConfigError::SpiffeRolesUnreadable {
                    path: path.clone(),
                    source,
                }
            })?;
            let map: HashMap<String, String> =
                serde_json::from_str(&text).map_err(|source| ConfigError::SpiffeRolesNotJson {
                    path: path.clone(),
                    source,
                })?;
            for (id, role) in map {
                if !id.starts_with("spiffe://") {
                    return Err(ConfigError::NotSpiffeId {
                        path: path.clone(),
                        id,
                    });
                }
                if !matches!(
                    crate::engine::Principal::parse(&role),
                    Ok(crate::engine::Principal::Role { .. })
                ) {
                    return Err(ConfigError::NotRoleArn {
                        path: path.clone(),
                        id,
                        role,
                    });
                }
                spiffe_roles.insert(id, role);
            }
        }
        Ok(EnvoyConfig {
            arn_defaults: ArnDefaults {
                partition: self.lambda_partition.clone(),
                region: self.lambda_region.clone(),
                account: self.lambda_account.clone(),
            },
            principal_header: self
                .principal_header
                .clone()
                .filter(|h| !h.trim().is_empty()),
            spiffe_roles,
        })
    }

    /// The OTLP endpoint: the flag, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp(&self) -> Option<String> {
        self.otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|s| !s.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let argv = ["iamd", "--store", "store"].iter().chain(flags);
        Cli::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn each_unworkable_value_has_its_own_error() {
        assert!(matches!(
            args(&["--request-timeout-ms", "0"]).admission(),
            Err(ConfigError::ZeroRequestTimeout)
        ));
        assert!(matches!(
            args(&["--max-in-flight-bytes", "10"]).admission(),
            Err(ConfigError::InFlightBytesBelowOneRequest { given: 10, .. })
        ));
        assert!(matches!(
            args(&["--lambda-account", "12"]).envoy(),
            Err(ConfigError::LambdaAccount(a)) if a == "12"
        ));

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = args(&["--spiffe-roles", missing.to_str().unwrap()])
            .envoy()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::SpiffeRolesUnreadable { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let cases = [
            (write("list.json", "[1]"), "is not a JSON object of strings"),
            (
                write(
                    "id.json",
                    r#"{"x\u0007": "arn:aws:iam::111122223333:role/r"}"#,
                ),
                r"`x\u{7}` is not a SPIFFE ID",
            ),
            (
                write(
                    "role.json",
                    r#"{"spiffe://a": "arn:aws:iam::111122223333:user/u"}"#,
                ),
                "(for `spiffe://a`) is not an IAM role ARN",
            ),
        ];
        for (path, says) in cases {
            let err = args(&["--spiffe-roles", &path]).envoy().unwrap_err();
            let shown = err.to_string();
            assert!(shown.contains(says) && shown.contains(&path), "{shown}");
        }
        let ok = write(
            "ok.json",
            r#"{"spiffe://a": "arn:aws:iam::111122223333:role/r"}"#,
        );
        assert_eq!(
            args(&["--spiffe-roles", &ok])
                .envoy()
                .unwrap()
                .spiffe_roles
                .len(),
            1
        );
    }
}
