//! The IAM evaluation logic: which policies apply, and how their verdicts combine.
//!
//! Both [`decide`] and [`explain`] find the applicable policies with the
//! snapshot's hash lookups ([`Applicable`]). `decide` then visits only the
//! statements the index says can match and stops at the first explicit
//! deny; `explain` evaluates every statement of those policies and records
//! why each did or did not apply. They share the statement test and the
//! decision rule ([`combine`]), so the statement index is the only
//! difference between them.

use super::context::EvalContext;
use super::explain::{Explanation, Miss, Recorder};
use super::principal::Caller;
use super::request::{Principal, Request};
use super::snapshot::{
    ActionId, CompiledStatement, Entity, PolicyType, ResourceEntry, ResourcePolicyKind, Snapshot,
    StatementIndex,
};
use crate::policy::condition::IfUnknown;
use crate::policy::{Effect, PrincipalMatch};

/// The three outcomes of an IAM evaluation, without the policy that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// Every spelling of a [`DecisionKind`] iamd writes, side by side so they
/// cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionNames {
    /// `iamd check`: `Allow`, `ExplicitDeny`, `ImplicitDeny`.
    pub cli: &'static str,
    /// The IAM policy simulator's `EvalDecision` (explanations).
    pub simulator: &'static str,
    /// The `decision` label of iamd's metrics.
    pub metric: &'static str,
    /// The gRPC enum's name, also Envoy's dynamic metadata.
    pub wire: &'static str,
}

impl DecisionKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [DecisionKind; 3] = [
        DecisionKind::Allow,
        DecisionKind::ExplicitDeny,
        DecisionKind::ImplicitDeny,
    ];

    pub const fn names(self) -> DecisionNames {
        let (cli, simulator, metric, wire) = match self {
            DecisionKind::Allow => ("Allow", "allowed", "allow", "ALLOW"),
            DecisionKind::ExplicitDeny => (
                "ExplicitDeny",
                "explicitDeny",
                "explicit_deny",
                "EXPLICIT_DENY",
            ),
            DecisionKind::ImplicitDeny => (
                "ImplicitDeny",
                "implicitDeny",
                "implicit_deny",
                "IMPLICIT_DENY",
            ),
        };
        DecisionNames {
            cli,
            simulator,
            metric,
            wire,
        }
    }

    /// The name used in `iamd check --json`: `Allow`, `ExplicitDeny`, `ImplicitDeny`.
    pub const fn as_str(self) -> &'static str {
        self.names().cli
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

/// A decision; a deny names the policy type that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    /// A statement with `"Effect": "Deny"` applied.
    ExplicitDeny(DenySource),
    /// No statement allowed where an Allow was needed.
    ImplicitDeny(DenySource),
}

impl Decision {
    pub fn kind(self) -> DecisionKind {
        match self {
            Decision::Allow => DecisionKind::Allow,
            Decision::ExplicitDeny(_) => DecisionKind::ExplicitDeny,
            Decision::ImplicitDeny(_) => DecisionKind::ImplicitDeny,
        }
    }

    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }

    /// For a deny: the policy type named in the message.
    pub fn deny_source(self) -> Option<DenySource> {
        match self {
            Decision::Allow => None,
            Decision::ExplicitDeny(source) | Decision::ImplicitDeny(source) => Some(source),
        }
    }

    /// The AWS-style AccessDenied message; empty for an allow.
    pub fn message(&self, request: &Request<'_>) -> String {
        let who = match request.principal {
            Principal::Anonymous => "anonymous",
            _ => request.principal_text,
        };
        let head = || {
            format!(
                "User: {who} is not authorized to perform: {} on resource: {}",
                request.action, request.resource
            )
        };
        match *self {
            Decision::Allow => String::new(),
            Decision::ExplicitDeny(source) => format!(
                "{} with an explicit deny in {} {}",
                head(),
                source.article(),
                source.phrase()
            ),
            Decision::ImplicitDeny(source) => format!(
                "{} because no {} allows the {} action",
                head(),
                source.phrase(),
                request.action
            ),
        }
    }
}

/// What the statements of one policy slot (SCPs, resource, identity,
/// boundary) said together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotVerdict {
    /// No statement applied with `Allow` (nor with `Deny`).
    NoAllow,
    /// Some `Allow` applied; the strongest way one named the caller.
    Allow(PrincipalMatch),
    /// Some `Deny` applied.
    Deny,
}

impl SlotVerdict {
    /// The verdict after one more applying statement.
    fn with(self, effect: Effect, named: PrincipalMatch) -> SlotVerdict {
        match (self, effect) {
            (SlotVerdict::Deny, _) | (_, Effect::Deny) => SlotVerdict::Deny,
            (SlotVerdict::Allow(had), Effect::Allow) => SlotVerdict::Allow(had.max(named)),
            (SlotVerdict::NoAllow, Effect::Allow) => SlotVerdict::Allow(named),
        }
    }

    fn allows(self) -> bool {
        matches!(self, SlotVerdict::Allow(_))
    }
}

/// The resource side of a request: the resource-based policy of a Lambda
/// resource, or the trust policy of the role being assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceSide {
    /// The resource has no policy (or it was not evaluated).
    Absent,
    /// A function's (alias's, version's, layer's) resource-based policy.
    FunctionPolicy(SlotVerdict),
    /// A role trust policy: it must allow, even within one account.
    RoleTrust(SlotVerdict),
}

impl ResourceSide {
    pub(crate) fn verdict(self) -> Option<SlotVerdict> {
        match self {
            ResourceSide::Absent => None,
            ResourceSide::FunctionPolicy(v) | ResourceSide::RoleTrust(v) => Some(v),
        }
    }
}

/// The verdicts of every applicable slot; `None` where a slot does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdicts {
    pub scp: Option<SlotVerdict>,
    pub resource: ResourceSide,
    pub identity: Option<SlotVerdict>,
    pub boundary: Option<SlotVerdict>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            scp: None,
            resource: ResourceSide::Absent,
            identity: None,
            boundary: None,
        }
    }
}

/// The caller's identity side, as the decision rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdentitySide {
    /// Services, web identities and anonymous callers: no IAM account, so
    /// only resource-based policies apply.
    NotIam,
    /// An account's root user: every identity-side permission in its own account.
    Root,
    /// An IAM user or role (or a role's session).
    Iam {
        /// Some identity-based policy allows.
        allows: bool,
        /// No permissions boundary, or the boundary allows.
        within_boundary: bool,
    },
}

/// Whether the resource lives in the caller's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    SameAccount,
    OtherAccount,
}

/// The decision rule, in one exhaustive match. Pages of the IAM User Guide
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/…) named in the arms:
/// [DENYALLOW] reference_policies_evaluation-logic_policy-eval-denyallow.html,
/// [XACCT] reference_policies_evaluation-logic-cross-account.html,
/// [PB] access_policies_boundaries.html, [PRIN] reference_policies_elements_principal.html.
/// The
/// arms read top to bottom like the guide's flow chart: an explicit deny in
/// any policy wins; SCPs must allow an IAM caller; callers outside IAM are
/// decided by the resource policy alone; a role trust policy must allow;
/// within one account a resource policy that names the caller stands alone,
/// one that names the caller's role is bounded by the boundary, one that
/// names only the account needs an identity Allow; across accounts both
/// sides must allow.
pub(crate) fn combine(
    caller: &Principal<'_>,
    resource_account: Option<&str>,
    v: &Verdicts,
) -> Decision {
    use DenySource::*;
    use IdentitySide::{Iam, NotIam, Root};
    use Place::{OtherAccount, SameAccount};
    use PrincipalMatch::{Direct, Role};
    use ResourceSide::{Absent, FunctionPolicy, RoleTrust};
    use SlotVerdict::{Allow as Grants, Deny, NoAllow};

    let identity = match caller {
        _ if caller.account().is_none() => NotIam,
        Principal::Root { .. } => Root,
        _ => Iam {
            allows: v.identity.is_some_and(SlotVerdict::allows),
            within_boundary: v.boundary.is_none_or(SlotVerdict::allows),
        },
    };
    let place = match (caller.account(), resource_account) {
        (Some(mine), Some(theirs)) if mine != theirs => OtherAccount,
        _ => SameAccount,
    };

    match (v.scp, v.resource, v.identity, v.boundary, identity, place) {
        // 1. An explicit deny anywhere wins; the first slot evaluated names it [DENYALLOW].
        (Some(Deny), ..) => Decision::ExplicitDeny(ServiceControlPolicy),
        (_, FunctionPolicy(Deny), ..) => Decision::ExplicitDeny(ResourceBasedPolicy),
        (_, RoleTrust(Deny), ..) => Decision::ExplicitDeny(RoleTrustPolicy),
        (_, _, Some(Deny), ..) => Decision::ExplicitDeny(IdentityBasedPolicy),
        (_, _, _, Some(Deny), ..) => Decision::ExplicitDeny(PermissionsBoundary),

        // 2. Outside IAM accounts (services, web identities, anonymous) only
        // the resource-based policy can allow [PRIN].
        (_, FunctionPolicy(Grants(_)) | RoleTrust(Grants(_)), _, _, NotIam, _) => Decision::Allow,
        (_, Absent | FunctionPolicy(NoAllow), _, _, NotIam, _) => {
            Decision::ImplicitDeny(ResourceBasedPolicy)
        }
        (_, RoleTrust(NoAllow), _, _, NotIam, _) => Decision::ImplicitDeny(RoleTrustPolicy),

        // 3. The SCPs of the caller's account must allow [DENYALLOW].
        (Some(NoAllow), _, _, _, Root | Iam { .. }, _) => {
            Decision::ImplicitDeny(ServiceControlPolicy)
        }

        // 4. A role trust policy must allow, even within one account [DENYALLOW].
        (_, RoleTrust(NoAllow), _, _, Root | Iam { .. }, _) => {
            Decision::ImplicitDeny(RoleTrustPolicy)
        }

        // 5. Within one account either side may allow: a resource policy naming
        // the caller stands alone, one naming its role is bounded by the
        // boundary [PB], the root user has every identity permission, and
        // otherwise an identity Allow within the boundary [DENYALLOW].
        (_, _, _, _, Root, SameAccount) => Decision::Allow,
        (
            _,
            FunctionPolicy(Grants(Direct)) | RoleTrust(Grants(Direct)),
            _,
            _,
            Iam { .. },
            SameAccount,
        ) => Decision::Allow,
        (
            _,
            FunctionPolicy(Grants(Role)) | RoleTrust(Grants(Role)),
            _,
            _,
            Iam {
                within_boundary: true,
                ..
            },
            SameAccount,
        ) => Decision::Allow,
        (
            _,
            _,
            _,
            _,
            Iam {
                allows: true,
                within_boundary: true,
            },
            SameAccount,
        ) => Decision::Allow,

        // 6. Otherwise the caller's own policies must allow (the rest of one
        // account's cases, and every cross-account one) ... [XACCT]
        (_, _, _, _, Iam { allows: false, .. }, _) => Decision::ImplicitDeny(IdentityBasedPolicy),
        (
            _,
            _,
            _,
            _,
            Iam {
                allows: true,
                within_boundary: false,
            },
            _,
        ) => Decision::ImplicitDeny(PermissionsBoundary),
        // ... and across accounts so must the resource's [XACCT].
        (
            _,
            FunctionPolicy(Grants(_)) | RoleTrust(Grants(_)),
            _,
            _,
            Root | Iam { .. },
            OtherAccount,
        ) => Decision::Allow,
        (_, Absent | FunctionPolicy(NoAllow), _, _, Root | Iam { .. }, OtherAccount) => {
            Decision::ImplicitDeny(ResourceBasedPolicy)
        }
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

/// Indexed evaluation of one slot; stops at the first deny.
fn eval_indexed(
    index: &StatementIndex,
    action: Option<ActionId>,
    cx: &EvalContext<'_>,
) -> SlotVerdict {
    let mut v = SlotVerdict::NoAllow;
    for (known, stmt) in index.candidates(action) {
        // INVARIANT: an index refers only to its own policies' statements;
        // were one missing, the statement could be a Deny, so deny.
        let Some(stmt) = stmt else {
            return SlotVerdict::Deny;
        };
        if stmt.effect == Effect::Allow && v == SlotVerdict::Allow(PrincipalMatch::Direct) {
            continue; // cannot improve on it; only a deny matters now
        }
        if let Ok(named) = test_statement(stmt, known, cx) {
            v = v.with(stmt.effect, named);
            if v == SlotVerdict::Deny {
                break;
            }
        }
    }
    v
}

/// The policies that apply to a request: the caller's user or role, the
/// SCPs of the caller's account and the resource's policy, found by the
/// snapshot's hash lookups.
#[derive(Debug, Clone, Copy)]
pub struct Applicable<'s> {
    pub(crate) caller: Caller<'s>,
    pub(crate) scps: Option<&'s StatementIndex>,
    pub(crate) resource: Option<&'s ResourceEntry>,
}

impl<'s> Applicable<'s> {
    /// Looks the request's policies up in the snapshot.
    pub fn find(snap: &'s Snapshot, request: &Request<'s>) -> Self {
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
        Applicable {
            caller: Caller {
                principal: request.principal,
                entity,
            },
            scps: request.principal.account().and_then(|a| snap.scps_for(a)),
            resource: snap.resource(request.resource),
        }
    }

    /// The same policies, given by whoever found them (the model-based test
    /// finds them by scanning the snapshot).
    pub fn given(
        request: &Request<'s>,
        entity: Option<&'s Entity>,
        scps: Option<&'s StatementIndex>,
        resource: Option<&'s ResourceEntry>,
    ) -> Self {
        Applicable {
            caller: Caller {
                principal: request.principal,
                entity,
            },
            scps,
            resource,
        }
    }

    /// The slots to evaluate, in the order their denies are named.
    fn slots(&self) -> [(Slot, Option<&'s StatementIndex>); 4] {
        let entity = self.caller.entity;
        [
            (Slot::Scp, self.scps),
            (Slot::Resource, self.resource.map(|r| &r.index)),
            (Slot::Identity, entity.map(|e| &e.permissions)),
            (Slot::Boundary, entity.and_then(|e| e.boundary.as_deref())),
        ]
    }

    /// Records a slot's verdict.
    fn record(&self, v: &mut Verdicts, slot: Slot, verdict: SlotVerdict) {
        match slot {
            Slot::Scp => v.scp = Some(verdict),
            Slot::Resource => {
                v.resource = match self.resource.map(|r| r.kind) {
                    None => ResourceSide::Absent,
                    Some(ResourcePolicyKind::Function) => ResourceSide::FunctionPolicy(verdict),
                    Some(ResourcePolicyKind::RoleTrust) => ResourceSide::RoleTrust(verdict),
                }
            }
            Slot::Identity => v.identity = Some(verdict),
            Slot::Boundary => v.boundary = Some(verdict),
        }
    }
}

/// Decides a request. Pure, lock-free, and allocation-free unless a policy variable needs a value.
pub fn decide(snap: &Snapshot, request: &Request<'_>) -> Decision {
    let applicable = Applicable::find(snap, request);
    let cx = EvalContext::new(request, applicable.caller);
    let action = snap.action_id(request.action_lower());
    let mut v = Verdicts::default();
    for (slot, index) in applicable.slots() {
        let Some(index) = index else { continue };
        let verdict = eval_indexed(index, action, &cx);
        applicable.record(&mut v, slot, verdict);
        if verdict == SlotVerdict::Deny {
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

/// Evaluates every statement of every applicable policy, bypassing the
/// statement index, and says why the decision came out as it did. The
/// policies are found as [`decide`] finds them.
pub fn explain(snap: &Snapshot, request: &Request<'_>) -> Explanation {
    explain_with(request, Applicable::find(snap, request))
}

/// [`explain`] over policies found by the caller.
pub fn explain_with<'s>(request: &Request<'s>, applicable: Applicable<'s>) -> Explanation {
    let cx = EvalContext::new(request, applicable.caller);
    let mut rec = Recorder::new(&cx);
    let mut v = Verdicts::default();
    for (slot, index) in applicable.slots() {
        let Some(index) = index else { continue };
        let mut verdict = SlotVerdict::NoAllow;
        for policy in index.policies.iter() {
            for stmt in policy.statements.iter() {
                let outcome = test_statement(stmt, false, &cx);
                rec.statement(slot, policy, stmt, &outcome);
                if let Ok(named) = outcome {
                    verdict = verdict.with(stmt.effect, named);
                }
            }
        }
        applicable.record(&mut v, slot, verdict);
    }
    let decision = combine(&request.principal, request.resource_account(), &v);
    rec.finish(decision, &v)
}

/// The type a statement's policy has in the slot it was evaluated in.
pub(crate) fn policy_type_in(slot: Slot, own: PolicyType) -> PolicyType {
    match slot {
        Slot::Boundary => PolicyType::Boundary,
        _ => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DenySource::*;
    use ResourceSide::{Absent, FunctionPolicy, RoleTrust};
    use SlotVerdict::{Allow as Grants, Deny, NoAllow};

    const USER: &str = "arn:aws:iam::111122223333:user/alice";
    const ROOT: &str = "arn:aws:iam::111122223333:root";
    const SERVICE: &str = "s3.amazonaws.com";
    const MINE: Option<&str> = Some("111122223333");
    const THEIRS: Option<&str> = Some("444455556666");

    fn rule(
        principal: &str,
        resource_account: Option<&str>,
        (scp, resource, identity, boundary): (
            Option<SlotVerdict>,
            ResourceSide,
            Option<SlotVerdict>,
            Option<SlotVerdict>,
        ),
    ) -> Decision {
        let caller = Principal::parse(principal).unwrap();
        let v = Verdicts {
            scp,
            resource,
            identity,
            boundary,
        };
        combine(&caller, resource_account, &v)
    }

    /// One row per arm of the rule, each as the IAM User Guide states it.
    #[test]
    fn each_arm_of_the_rule() {
        let allow = Decision::Allow;
        let direct = Grants(PrincipalMatch::Direct);
        let role = Grants(PrincipalMatch::Role);
        let account = Grants(PrincipalMatch::Account);
        let cases = [
            // An explicit deny anywhere wins, over any Allow [DENYALLOW].
            (
                USER,
                MINE,
                (Some(Deny), FunctionPolicy(direct), Some(direct), None),
                Decision::ExplicitDeny(ServiceControlPolicy),
            ),
            (
                USER,
                MINE,
                (Some(direct), FunctionPolicy(Deny), Some(direct), None),
                Decision::ExplicitDeny(ResourceBasedPolicy),
            ),
            (
                USER,
                MINE,
                (None, RoleTrust(Deny), Some(direct), None),
                Decision::ExplicitDeny(RoleTrustPolicy),
            ),
            (
                USER,
                MINE,
                (None, FunctionPolicy(direct), Some(Deny), None),
                Decision::ExplicitDeny(IdentityBasedPolicy),
            ),
            (
                USER,
                MINE,
                (None, FunctionPolicy(direct), Some(direct), Some(Deny)),
                Decision::ExplicitDeny(PermissionsBoundary),
            ),
            // A service is decided by the resource policy alone [PRIN].
            (
                SERVICE,
                MINE,
                (None, FunctionPolicy(direct), None, None),
                allow,
            ),
            (
                SERVICE,
                MINE,
                (None, Absent, None, None),
                Decision::ImplicitDeny(ResourceBasedPolicy),
            ),
            (
                SERVICE,
                MINE,
                (None, RoleTrust(NoAllow), None, None),
                Decision::ImplicitDeny(RoleTrustPolicy),
            ),
            // SCPs must allow an IAM caller, the root user included.
            (
                USER,
                MINE,
                (Some(NoAllow), FunctionPolicy(direct), Some(direct), None),
                Decision::ImplicitDeny(ServiceControlPolicy),
            ),
            (
                ROOT,
                MINE,
                (Some(NoAllow), Absent, None, None),
                Decision::ImplicitDeny(ServiceControlPolicy),
            ),
            // A role trust policy must allow, even for the root user of the account.
            (
                ROOT,
                MINE,
                (None, RoleTrust(NoAllow), None, None),
                Decision::ImplicitDeny(RoleTrustPolicy),
            ),
            (
                USER,
                MINE,
                (None, RoleTrust(NoAllow), Some(direct), None),
                Decision::ImplicitDeny(RoleTrustPolicy),
            ),
            (ROOT, MINE, (None, RoleTrust(direct), None, None), allow),
            // Same account: the root user needs no identity policy ...
            (ROOT, MINE, (None, Absent, None, None), allow),
            // ... a grant naming the caller stands alone ...
            (
                USER,
                MINE,
                (None, FunctionPolicy(direct), None, Some(NoAllow)),
                allow,
            ),
            // ... one naming its role is bounded by the boundary [PB] ...
            (USER, MINE, (None, FunctionPolicy(role), None, None), allow),
            (
                USER,
                MINE,
                (None, FunctionPolicy(role), None, Some(NoAllow)),
                Decision::ImplicitDeny(IdentityBasedPolicy),
            ),
            // ... one naming only the account needs an identity Allow.
            (
                USER,
                MINE,
                (None, FunctionPolicy(account), None, None),
                Decision::ImplicitDeny(IdentityBasedPolicy),
            ),
            (
                USER,
                MINE,
                (None, FunctionPolicy(account), Some(direct), None),
                allow,
            ),
            (USER, MINE, (None, Absent, Some(direct), None), allow),
            (
                USER,
                MINE,
                (None, Absent, Some(direct), Some(NoAllow)),
                Decision::ImplicitDeny(PermissionsBoundary),
            ),
            (
                USER,
                MINE,
                (None, Absent, Some(NoAllow), None),
                Decision::ImplicitDeny(IdentityBasedPolicy),
            ),
            // Across accounts both sides must allow [XACCT].
            (
                USER,
                THEIRS,
                (None, FunctionPolicy(direct), None, None),
                Decision::ImplicitDeny(IdentityBasedPolicy),
            ),
            (
                USER,
                THEIRS,
                (None, FunctionPolicy(direct), Some(direct), Some(NoAllow)),
                Decision::ImplicitDeny(PermissionsBoundary),
            ),
            (
                USER,
                THEIRS,
                (None, Absent, Some(direct), None),
                Decision::ImplicitDeny(ResourceBasedPolicy),
            ),
            (
                USER,
                THEIRS,
                (None, FunctionPolicy(NoAllow), Some(direct), None),
                Decision::ImplicitDeny(ResourceBasedPolicy),
            ),
            (
                USER,
                THEIRS,
                (None, FunctionPolicy(account), Some(direct), None),
                allow,
            ),
            (
                USER,
                THEIRS,
                (None, RoleTrust(direct), Some(direct), None),
                allow,
            ),
            (
                ROOT,
                THEIRS,
                (None, FunctionPolicy(account), None, None),
                allow,
            ),
            (
                ROOT,
                THEIRS,
                (None, Absent, None, None),
                Decision::ImplicitDeny(ResourceBasedPolicy),
            ),
        ];
        for (i, (principal, place, verdicts, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                rule(principal, place, verdicts),
                want,
                "case {i}: {principal} {place:?} {verdicts:?}"
            );
        }
    }

    /// Metrics index their counters by `kind as usize` into `ALL`.
    #[test]
    fn all_decision_kinds_in_declaration_order() {
        for (i, kind) in DecisionKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
        }
    }

    #[test]
    fn a_slot_folds_to_its_strongest_allow_and_any_deny_wins() {
        let v = SlotVerdict::NoAllow
            .with(Effect::Allow, PrincipalMatch::Account)
            .with(Effect::Allow, PrincipalMatch::Direct)
            .with(Effect::Allow, PrincipalMatch::Role);
        assert_eq!(v, SlotVerdict::Allow(PrincipalMatch::Direct));
        assert_eq!(
            v.with(Effect::Deny, PrincipalMatch::Account),
            SlotVerdict::Deny
        );
        assert_eq!(
            SlotVerdict::Deny.with(Effect::Allow, PrincipalMatch::Direct),
            SlotVerdict::Deny
        );
    }
}
