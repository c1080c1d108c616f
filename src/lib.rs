//! iamd: AWS IAM policy evaluation for Lambda-style resources, as a library.
//!
//! The decision core ([`engine::decide`]) is synchronous and pure: it takes a
//! compiled [`engine::Snapshot`] and a [`engine::Request`] and returns a
//! [`engine::Decision`]. Loading a store directory ([`store`]) and the
//! adapters (CLI, gRPC, Envoy) live around it.

pub mod app;
pub mod catalog;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod finding;
pub mod json;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reload;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;

// Bench and test tooling, not part of iamd's API: the synthetic store
// generator behind the benches, the load scripts and the hidden
// `iamd gen-store`. Nothing above depends on it.
#[doc(hidden)]
pub mod synth;
