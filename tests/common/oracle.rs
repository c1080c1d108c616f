//! The model-based tests' oracle: an evaluator with no index at all. It finds
//! the caller, the resource's policy and the SCPs by scanning every entity,
//! resource and SCP target of the snapshot (no hash lookup), then evaluates
//! every statement of those policies (no statement index). `decide` must
//! agree with it on every request.
#![allow(dead_code)]

use iamd::engine::Principal;
use iamd::engine::{self, Applicable, Decision, EntityKind, Request, Snapshot};

/// Decides `request` by scans alone.
pub fn decide_by_scan(snap: &Snapshot, request: &Request<'_>) -> Decision {
    explain_by_scan(snap, request).decision
}

/// Explains `request` from policies found by scans alone.
pub fn explain_by_scan<'s>(snap: &'s Snapshot, request: &Request<'s>) -> engine::Explanation {
    let find = |kind: EntityKind, account: &str, name: &str, arn: Option<&str>| {
        snap.entities().find(|e| {
            e.kind == kind
                && &*e.account == account
                && &*e.name == name
                && arn.is_none_or(|arn| &*e.arn == arn)
        })
    };
    let entity = match request.principal {
        Principal::User { arn, account, name } => find(EntityKind::User, account, name, Some(arn)),
        Principal::Role { arn, account, name } => find(EntityKind::Role, account, name, Some(arn)),
        Principal::AssumedRole { account, role, .. } => find(EntityKind::Role, account, role, None),
        _ => None,
    };
    let scps = request.principal.account().and_then(|account| {
        snap.scp_accounts()
            .find(|(target, _)| *target == account)
            .map(|(_, index)| index)
    });
    let resource = snap.resources().find(|r| &*r.arn == request.resource);
    engine::explain_with(request, Applicable::given(request, entity, scps, resource))
}
