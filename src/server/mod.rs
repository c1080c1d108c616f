//! The gRPC adapters: iamd's own `Authorizer` service, Envoy's ext_authz
//! `Check`, health and reflection, all over one tonic router.

pub mod admission;
mod authorizer;
pub mod codec;
mod convert;
mod envoy;
pub mod listener;
pub mod metrics_http;
pub mod wire;

use std::sync::Arc;

pub use admission::{AdmissionConfig, AdmissionLayer, Deadline};
pub use authorizer::AuthorizerService;
pub use convert::Limits;
pub use envoy::{CheckConverter, Converted, EnvoyAuthorizer, EnvoyConfig};
pub use listener::{ConnectionLimits, ConnectionTable};
pub use wire::ScanLimits;

use crate::metrics::Metrics;
use crate::reload::SnapshotCell;

/// Code generated from `proto/iamd/v1/authorizer.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]
pub mod pb {
    tonic::include_proto!("iamd.v1");

    /// The encoded descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/iamd_descriptor.bin"));
}

/// What every handler shares.
pub struct AppState {
    pub snapshots: Arc<SnapshotCell>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Batches and explanations run on blocking threads, this many at once.
    pub heavy: Arc<tokio::sync::Semaphore>,
}

/// Why an RPC was refused before (or instead of) a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no policy snapshot is loaded yet; the store has not loaded successfully")]
    NoSnapshot,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The snapshot a request asked for (`min_revision`) did not arrive in time.
    #[error("{0}")]
    RevisionNotReached(String),
}

impl From<crate::engine::RequestError> for ApiError {
    fn from(e: crate::engine::RequestError) -> Self {
        ApiError::InvalidArgument(e.to_string())
    }
}

/// The one place where errors become gRPC statuses. Messages quote the
/// request, so they are escaped and cut.
pub fn to_status(e: &ApiError) -> tonic::Status {
    match e {
        ApiError::InvalidArgument(m) => tonic::Status::invalid_argument(
            crate::finding::echo_max(m, crate::finding::MESSAGE_LIMIT).to_string(),
        ),
        ApiError::NoSnapshot => tonic::Status::unavailable(e.to_string()),
        ApiError::Internal(_) => tonic::Status::internal(e.to_string()),
        ApiError::DeadlineExceeded(m) => tonic::Status::deadline_exceeded(m.clone()),
        ApiError::RevisionNotReached(m) => tonic::Status::unavailable(m.clone()),
    }
}
