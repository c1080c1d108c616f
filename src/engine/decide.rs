//! The IAM evaluation logic: which policies apply, and how their verdicts combine.
//!
//! [`decide`] visits only the statements the index says can match and stops
//! at the first explicit deny. [`explain`] evaluates every statement of every
//! applicable policy, found by plain scans with no index, and records why
//! each statement did or did not apply; both share the statement test and
//! the decision rule ([`combine`]), so the index is the only difference
//! between them.

use super::context::EvalContext;
use super::explain::{Explanation, Miss, Recorder};
use super::principal::Caller;
use super::request::{Principal, Request};
use super::snapshot::{ActionId, CompiledStatement, PolicyType, Snapshot, StatementIndex, StmtId};
use crate::policy::condition::IfUnknown;
use crate::policy::{Effect, PrincipalMatch};

/// The three outcomes of an IAM evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl DecisionKind {
    /// The name used in `iamd check --json`: `Allow`, `ExplicitDeny`, `ImplicitDeny`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "Allow",
            DecisionKind::ExplicitDeny => "ExplicitDeny",
            DecisionKind::ImplicitDeny => "ImplicitDeny",
        }
    }
}

/// Which policy type decided a deny; AWS names one in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenySource {
    ServiceControlPolicy,
    ResourceBasedPolicy,
    RoleTrustPolicy,
    IdentityBasedPolicy,
    PermissionsBoundary,
}

impl DenySource {
    fn phrase(self) -> &'static str {
        match self {
            DenySource::ServiceControlPolicy => "service control policy",
            DenySource::ResourceBasedPolicy => "resource-based policy",
            DenySource::RoleTrustPolicy => "role trust policy",
            DenySource::IdentityBasedPolicy => "identity-based policy",
            DenySource::PermissionsBoundary => "permissions boundary",
        }
    }

    fn article(self) -> &'static str {
        match self {
            DenySource::IdentityBasedPolicy => "an",
            DenySource::RoleTrustPolicy => "the",
            _ => "a",
        }
    }
}

/// A decision and the policy type that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    pub kind: DecisionKind,
    /// For a deny: the policy type named in the message.
    pub source: Option<DenySource>,
}

impl Decision {
    pub const ALLOW: Decision = Decision {
        kind: DecisionKind::Allow,
        source: None,
    };

    fn explicit(source: DenySource) -> Self {
        Decision {
            kind: DecisionKind::ExplicitDeny,
            source: Some(source),
        }
    }

    fn implicit(source: DenySource) -> Self {
        Decision {
            kind: DecisionKind::ImplicitDeny,
            source: Some(source),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.kind == DecisionKind::Allow
    }

    /// The AWS-style AccessDenied message; empty for an allow.
    pub fn message(&self, request: &Request<'_>) -> String {
        let who = match request.principal {
            Principal::Anonymous => "anonymous",
            _ => request.principal_text,
        };
        let Some(source) = self.source else {
            return String::new();
        };
        let head = format!(
            "User: {who} is not authorized to perform: {} on resource: {}",
            request.action, request.resource
        );
        match self.kind {
            DecisionKind::Allow => String::new(),
            DecisionKind::ExplicitDeny => format!(
                "{head} with an explicit deny in {} {}",
                source.article(),
                source.phrase()
            ),
            DecisionKind::ImplicitDeny => format!(
                "{head} because no {} allows the {} action",
                source.phrase(),
                request.action
            ),
        }
    }
}

/// What one policy slot (SCPs, resource, identity, boundary) said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotVerdict {
    pub deny: bool,
    /// The strongest way an allowing statement named the caller.
    pub allow: Option<PrincipalMatch>,
}

impl SlotVerdict {
    fn allows(&self) -> bool {
        self.allow.is_some()
    }
}

/// The verdicts of every applicable slot; `None` where a slot does not apply.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verdicts {
    pub scp: Option<SlotVerdict>,
    pub resource: Option<SlotVerdict>,
    /// The resource side is a role trust policy (must allow, even in one account).
    pub resource_is_trust: bool,
    pub identity: Option<SlotVerdict>,
    pub boundary: Option<SlotVerdict>,
}

/// The decision rule, in one place (IAM User Guide, policy evaluation logic):
/// an explicit deny anywhere wins; SCPs must allow an IAM identity; within
/// one account a resource policy that names the caller is enough on its own,
/// one that names a role is bounded by the boundary, one that names only the
/// account needs an identity allow; across accounts both sides must allow.
pub(crate) fn combine(
    caller: &Principal<'_>,
    resource_account: Option<&str>,
    v: &Verdicts,
) -> Decision {
    let resource_source = if v.resource_is_trust {
        DenySource::RoleTrustPolicy
    } else {
        DenySource::ResourceBasedPolicy
    };
    let denied = |s: Option<SlotVerdict>| s.is_some_and(|s| s.deny);
    if denied(v.scp) {
        return Decision::explicit(DenySource::ServiceControlPolicy);
    }
    if denied(v.resource) {
        return Decision::explicit(resource_source);
    }
    if denied(v.identity) {
        return Decision::explicit(DenySource::IdentityBasedPolicy);
    }
    if denied(v.boundary) {
        return Decision::explicit(DenySource::PermissionsBoundary);
    }

    let resource_allow = v.resource.and_then(|r| r.allow);
    let Some(account) = caller.account() else {
        // Services, web identities and anonymous callers: only resource policies apply.
        return match resource_allow {
            Some(_) => Decision::ALLOW,
            None => Decision::implicit(resource_source),
        };
    };
    if v.scp.is_some_and(|s| !s.allows()) {
        return Decision::implicit(DenySource::ServiceControlPolicy);
    }
    let boundary_ok = v.boundary.is_none_or(|b| b.allows());
    let is_root = matches!(caller, Principal::Root { .. });
    // The root user has every identity-side permission in its own account.
    let identity_ok = is_root || (v.identity.is_some_and(|i| i.allows()) && boundary_ok);
    let identity_denial = if v.identity.is_some_and(|i| i.allows()) {
        DenySource::PermissionsBoundary
    } else {
        DenySource::IdentityBasedPolicy
    };
    let same_account = resource_account.is_none_or(|r| r == account);

    match (same_account, resource_allow, v.resource_is_trust) {
        (_, None, true) => Decision::implicit(DenySource::RoleTrustPolicy),
        (true, _, _) if is_root && !v.resource_is_trust => Decision::ALLOW,
        (true, Some(PrincipalMatch::Direct), _) => Decision::ALLOW,
        (true, Some(PrincipalMatch::Role), _) if boundary_ok => Decision::ALLOW,
        (true, _, _) if identity_ok => Decision::ALLOW,
        (true, _, _) => Decision::implicit(identity_denial),
        (false, _, _) if !identity_ok => Decision::implicit(identity_denial),
        (false, Some(_), _) => Decision::ALLOW,
        (false, None, _) => Decision::implicit(resource_source),
    }
}

/// Does one statement apply to the request? `Ok` carries how it named the caller.
pub(crate) fn test_statement(
    stmt: &CompiledStatement,
    action_known: bool,
    cx: &EvalContext<'_>,
) -> Result<PrincipalMatch, Miss> {
    if !action_known && !stmt.action.matches(cx.req.action_lower()) {
        return Err(Miss::Action);
    }
    if let Some(r) = &stmt.resource {
        if !r.matches(cx.req.resource, cx) {
            return Err(Miss::Resource);
        }
    }
    let named = match &stmt.principal {
        Some(p) => p.matches(&cx.caller).ok_or(Miss::Principal)?,
        None => PrincipalMatch::Direct,
    };
    let if_unknown = match stmt.effect {
        Effect::Deny => IfUnknown::Holds,
        Effect::Allow => IfUnknown::Fails,
    };
    stmt.condition
        .evaluate(cx, if_unknown)
        .map_err(Miss::Condition)?;
    Ok(named)
}

fn fold(verdict: &mut SlotVerdict, effect: Effect, named: PrincipalMatch) {
    match effect {
        Effect::Deny => verdict.deny = true,
        Effect::Allow => verdict.allow = verdict.allow.max(Some(named)),
    }
}

/// Indexed evaluation of one slot; stops at the first deny.
fn eval_indexed(
    snap: &Snapshot,
    index: &StatementIndex,
    action: Option<ActionId>,
    cx: &EvalContext<'_>,
) -> SlotVerdict {
    let mut v = SlotVerdict::default();
    for (known, id) in index.candidates(action) {
        let Some(stmt) = snap.statement(id) else {
            continue;
        };
        if stmt.effect == Effect::Allow && v.allow == Some(PrincipalMatch::Direct) {
            continue; // cannot improve on it; only a deny matters now
        }
        if let Ok(named) = test_statement(stmt, known, cx) {
            fold(&mut v, stmt.effect, named);
            if v.deny {
                break;
            }
        }
    }
    v
}

/// Resolves the caller to its user or role in the store.
pub(crate) fn caller<'s>(snap: &'s Snapshot, request: &Request<'s>) -> Caller<'s> {
    let entity = match request.principal {
        Principal::User { arn, account, name } => {
            snap.user(account, name).filter(|e| &*e.arn == arn)
        }
        Principal::Role { arn, account, name } => {
            snap.role(account, name).filter(|e| &*e.arn == arn)
        }
        Principal::AssumedRole { account, role, .. } => snap.role(account, role),
        _ => None,
    };
    Caller {
        principal: request.principal,
        entity,
    }
}

/// Decides a request. Pure, lock-free, and allocation-free unless a policy variable needs a value.
pub fn decide(snap: &Snapshot, request: &Request<'_>) -> Decision {
    let caller = caller(snap, request);
    let cx = EvalContext::new(request, caller);
    let action = snap.action_id(request.action_lower());
    let mut v = Verdicts::default();

    let scp_index = request.principal.account().and_then(|a| snap.scps_for(a));
    let resource = snap.resource(request.resource);
    let slots = [
        (Slot::Scp, scp_index),
        (Slot::Resource, resource.map(|r| &r.index)),
        (Slot::Identity, caller.entity.map(|e| &e.permissions)),
        (
            Slot::Boundary,
            caller.entity.and_then(|e| e.boundary.as_ref()),
        ),
    ];
    v.resource_is_trust = resource.is_some_and(|r| r.requires_allow);
    for (slot, index) in slots {
        let Some(index) = index else { continue };
        let verdict = eval_indexed(snap, index, action, &cx);
        *slot.of(&mut v) = Some(verdict);
        if verdict.deny {
            break;
        }
    }
    combine(&request.principal, request.resource_account(), &v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Scp,
    Resource,
    Identity,
    Boundary,
}

impl Slot {
    fn of(self, v: &mut Verdicts) -> &mut Option<SlotVerdict> {
        match self {
            Slot::Scp => &mut v.scp,
            Slot::Resource => &mut v.resource,
            Slot::Identity => &mut v.identity,
            Slot::Boundary => &mut v.boundary,
        }
    }
}

/// Evaluates every statement of every applicable policy, found without the
/// index, and says why the decision came out as it did.
pub fn explain(snap: &Snapshot, request: &Request<'_>) -> Explanation {
    let caller = caller(snap, request);
    let cx = EvalContext::new(request, caller);
    let mut rec = Recorder::new(snap, &cx);
    let mut v = Verdicts::default();

    // Applicable policies, by plain scans.
    let scp = request
        .principal
        .account()
        .and_then(|a| snap.scps.iter().find(|(acct, _)| &**acct == a))
        .map(|(_, idx)| idx);
    let resource = snap.resources.iter().find(|r| &*r.arn == request.resource);
    let entity = caller.entity.and_then(|e| {
        snap.entities
            .iter()
            .find(|x| x.kind == e.kind && x.account == e.account && x.name == e.name)
    });
    v.resource_is_trust = resource.is_some_and(|r| r.requires_allow);
    let slots = [
        (Slot::Scp, scp),
        (Slot::Resource, resource.map(|r| &r.index)),
        (Slot::Identity, entity.map(|e| &e.permissions)),
        (Slot::Boundary, entity.and_then(|e| e.boundary.as_ref())),
    ];
    for (slot, index) in slots {
        let Some(index) = index else { continue };
        let mut verdict = SlotVerdict::default();
        for &pid in index.policies.iter() {
            let Some(policy) = snap.policy(pid) else {
                continue;
            };
            for id in policy.statements.clone() {
                let Some(stmt) = snap.statement(id) else {
                    continue;
                };
                let outcome = test_statement(stmt, false, &cx);
                rec.statement(slot, id as StmtId, stmt, &outcome);
                if let Ok(named) = outcome {
                    fold(&mut verdict, stmt.effect, named);
                }
            }
        }
        *slot.of(&mut v) = Some(verdict);
    }
    let decision = combine(&request.principal, request.resource_account(), &v);
    rec.finish(decision, &v, request)
}

/// The type a statement's policy has in the slot it was evaluated in.
pub(crate) fn policy_type_in(slot: Slot, own: PolicyType) -> PolicyType {
    match slot {
        Slot::Boundary => PolicyType::Boundary,
        _ => own,
    }
}
