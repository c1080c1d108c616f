//! Explanations shaped like the IAM policy simulator's `EvaluationResult`:
//! the decision, the statements that matched, the context keys conditions
//! needed but the request lacked, the verdict of each policy type, and for an
//! implicit deny the nearest statements with the element that failed.

use serde::Serialize;

use super::context::EvalContext;
use super::decide::{policy_type_in, Decision, Slot, SlotVerdict, Verdicts};
use super::snapshot::{CompiledPolicy, CompiledStatement, PolicyType};
use crate::policy::condition::ClauseFailure;
use crate::policy::{ConditionContext, Effect, PrincipalMatch};

/// Why a statement did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Action,
    Resource,
    Principal,
    Condition(ClauseFailure),
}

/// A statement named in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementRef {
    /// The policy's id: managed policy ARN, resource ARN, SCP name, or `OWNER/inline/NAME`.
    pub source_policy_id: String,
    pub policy_type: PolicyType,
    pub sid: Option<String>,
    pub statement_index: u32,
    pub effect: Effect,
    /// `file:line:column` where the statement is written.
    pub location: String,
}

/// A statement that came close, and the element that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NearMiss {
    pub statement: StatementRef,
    /// `action`, `resource`, `principal` or `condition`.
    pub failed_element: &'static str,
    /// A sentence saying what failed.
    pub reason: String,
}

/// The verdict of one policy type, as the simulator reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TypeDecision {
    Allowed,
    ExplicitDeny,
    ImplicitDeny,
}

impl From<SlotVerdict> for TypeDecision {
    fn from(v: SlotVerdict) -> Self {
        match v {
            SlotVerdict::Deny => TypeDecision::ExplicitDeny,
            SlotVerdict::Allow(_) => TypeDecision::Allowed,
            SlotVerdict::NoAllow => TypeDecision::ImplicitDeny,
        }
    }
}

/// Verdicts per policy type; absent where that type did not apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizations: Option<TypeDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_based: Option<TypeDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_based: Option<TypeDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_boundary: Option<TypeDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    #[serde(skip)]
    pub decision: Decision,
    /// `allowed`, `explicitDeny` or `implicitDeny`.
    pub eval_decision: &'static str,
    pub matched_statements: Vec<StatementRef>,
    pub missing_context_values: Vec<String>,
    pub decision_details: DecisionDetails,
    /// For an implicit deny: statements whose action matched but that did not apply.
    pub near_misses: Vec<NearMiss>,
}

/// How many near misses an explanation lists.
const NEAR_MISSES: usize = 5;

pub(crate) struct Recorder<'a> {
    cx: &'a EvalContext<'a>,
    matched: Vec<StatementRef>,
    missing: Vec<String>,
    near: Vec<(u8, NearMiss)>,
}

impl<'a> Recorder<'a> {
    pub fn new(cx: &'a EvalContext<'a>) -> Self {
        Recorder {
            cx,
            matched: Vec::new(),
            missing: Vec::new(),
            near: Vec::new(),
        }
    }

    fn reference(slot: Slot, policy: &CompiledPolicy, stmt: &CompiledStatement) -> StatementRef {
        StatementRef {
            source_policy_id: policy.name.to_string(),
            policy_type: policy_type_in(slot, policy.policy_type),
            sid: stmt.sid.as_deref().map(str::to_owned),
            statement_index: stmt.index,
            effect: stmt.effect,
            location: format!(
                "{}:{}:{}",
                stmt.location.file, stmt.location.line, stmt.location.column
            ),
        }
    }

    pub fn statement(
        &mut self,
        slot: Slot,
        policy: &CompiledPolicy,
        stmt: &CompiledStatement,
        outcome: &Result<PrincipalMatch, Miss>,
    ) {
        // A condition's keys are needed only once action, resource and principal matched.
        if matches!(outcome, Ok(_) | Err(Miss::Condition(_))) {
            for key in stmt
                .condition
                .missing_keys(self.cx as &dyn ConditionContext)
            {
                if !self.missing.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                    self.missing.push(key.to_owned());
                }
            }
        }
        match outcome {
            Ok(_) => {
                let r = Self::reference(slot, policy, stmt);
                self.matched.push(r);
            }
            Err(Miss::Action) => {}
            Err(miss) => {
                let (element, rank, reason) = describe(stmt, *miss, self.cx);
                // Allows rank before denies: they are what could have granted access.
                let rank = rank + if stmt.effect == Effect::Allow { 0 } else { 10 };
                let statement = Self::reference(slot, policy, stmt);
                self.near.push((
                    rank,
                    NearMiss {
                        statement,
                        failed_element: element,
                        reason,
                    },
                ));
            }
        }
    }

    pub fn finish(mut self, decision: Decision, v: &Verdicts) -> Explanation {
        let near_misses = if let Decision::ImplicitDeny(_) = decision {
            self.near.sort_by_key(|(rank, _)| *rank);
            self.near
                .into_iter()
                .take(NEAR_MISSES)
                .map(|(_, n)| n)
                .collect()
        } else {
            Vec::new()
        };
        Explanation {
            decision,
            eval_decision: decision.kind().names().simulator,
            matched_statements: self.matched,
            missing_context_values: self.missing,
            decision_details: DecisionDetails {
                organizations: v.scp.map(Into::into),
                resource_based: v.resource.verdict().map(Into::into),
                identity_based: v.identity.map(Into::into),
                permissions_boundary: v.boundary.map(Into::into),
            },
            near_misses,
        }
    }
}

/// The failed element's name, a closeness rank (lower is nearer) and a sentence.
fn describe(
    stmt: &CompiledStatement,
    miss: Miss,
    cx: &EvalContext<'_>,
) -> (&'static str, u8, String) {
    match miss {
        Miss::Action => (
            "action",
            4,
            format!("the action `{}` is not covered", cx.req.action),
        ),
        Miss::Resource => (
            "resource",
            2,
            format!(
                "the resource `{}` is not covered by the statement's Resource",
                cx.req.resource
            ),
        ),
        Miss::Principal => (
            "principal",
            1,
            format!(
                "the statement's Principal does not name `{}`",
                cx.req.principal_text
            ),
        ),
        Miss::Condition(f) => {
            let clause = stmt.condition.clauses.get(f.clause);
            let (op, key) = clause.map_or((String::new(), ""), |c| {
                (c.operator.to_string(), c.key.as_ref())
            });
            let reason = if f.key_unknown {
                format!(
                    "the condition `{op}` reads the context key `{key}`, which iamd could not determine for this request, so the statement cannot grant"
                )
            } else if f.key_absent {
                format!(
                    "the condition `{op}` needs the context key `{key}`, which the request lacks"
                )
            } else {
                format!("the condition `{op}` on `{key}` is false for the request's value")
            };
            ("condition", 0, reason)
        }
    }
}
