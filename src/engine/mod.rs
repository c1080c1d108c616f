//! The decision core: a compiled [`Snapshot`] and the pure function
//! [`decide`] that answers a [`Request`] from it.
//!
//! Nothing here does I/O, locks, or async; gRPC, Envoy, the CLI and reload
//! are adapters around these functions.

mod compiler;
mod context;
mod decide;
mod explain;
mod principal;
mod request;
mod snapshot;

pub use compiler::{CompileError, Compiler, IdSpace};
pub use decide::{
    decide, explain, explain_with, Applicable, Decision, DecisionKind, DecisionNames, DenySource,
};
pub use explain::{DecisionDetails, Explanation, NearMiss, StatementRef, TypeDecision};
pub use request::{ContextEntry, Principal, Request, RequestError, MAX_ACTION_LEN, MAX_ARN_LEN};
pub use snapshot::{
    CompiledPolicy, CompiledStatement, Entity, EntityKind, PolicyType, ResourceEntry,
    ResourcePolicyKind, Snapshot, StatementIndex, Stats,
};
