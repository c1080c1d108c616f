//! `iamd.v1.Authorizer`: the proto request becomes an engine request, the
//! current snapshot decides it, and the decision becomes the proto response.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::convert::{check_size, parse_batch, parse_request, OwnedRequest};
use super::{pb, to_status, ApiError, AppState, Deadline};
use crate::engine::{self, DecisionKind, Explanation, TypeDecision};
use crate::metrics::Api;
use crate::policy::Effect;
use crate::reload::Served;

/// The service implementation.
#[derive(Clone)]
pub struct AuthorizerService {
    state: Arc<AppState>,
}

impl AuthorizerService {
    pub fn new(state: Arc<AppState>) -> Self {
        AuthorizerService { state }
    }

    /// Decides one request on the given snapshot; the only place the engine is called.
    fn decide(
        &self,
        served: &Served,
        req: &OwnedRequest,
        api: Api,
    ) -> Result<pb::AuthorizeResponse, ApiError> {
        let request = engine::Request::new(
            &req.principal,
            &req.action,
            &req.resource,
            &req.context,
            jiff::Timestamp::now(),
        )?;
        let start = Instant::now();
        let decision = engine::decide(&served.snapshot, &request);
        self.state
            .metrics
            .decision(api, decision.kind(), start.elapsed());
        let explanation = if req.explain {
            let x = engine::explain(&served.snapshot, &request);
            if x.decision != decision {
                // The exhaustive evaluation disagrees with the index: fail closed.
                return Err(ApiError::Internal(
                    "the explanation disagrees with the decision".into(),
                ));
            }
            Some(explanation_to_pb(&x))
        } else {
            None
        };
        Ok(pb::AuthorizeResponse {
            decision: decision_to_pb(decision.kind()) as i32,
            message: decision.message(&request),
            revision: served.revision,
            explanation,
        })
    }

    /// Waits until the serving snapshot is at `min_revision` or past it (a
    /// request's read-your-writes bound; 0 asks for nothing), at most
    /// `--max-revision-wait-ms`. Revisions only grow, so any snapshot loaded
    /// afterwards is recent enough.
    async fn reach(&self, min_revision: u64) -> Result<(), ApiError> {
        if min_revision == 0 {
            return Ok(());
        }
        let wait = self.state.limits.max_revision_wait;
        self.state
            .snapshots
            .wait_for(min_revision, wait)
            .await
            .map_err(|serving| {
                ApiError::RevisionNotReached(format!(
                    "this sidecar serves revision {serving}; min_revision {min_revision} did not arrive within {} ms",
                    wait.as_millis()
                ))
            })
    }

    /// Runs `f` on the serving snapshot: one guard per RPC, held only while
    /// the synchronous decisions run.
    fn with_snapshot<R>(
        &self,
        f: impl FnOnce(&Served) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let guard = self.state.snapshots.load();
        let served = guard.as_deref().ok_or(ApiError::NoSnapshot)?;
        f(served)
    }

    fn finish<T>(
        &self,
        api: Api,
        start: Instant,
        result: Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        self.state.metrics.rpc(api, start.elapsed());
        match result {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => {
                self.state.metrics.rejected(api);
                tracing::debug!(error = %e, api = api.label(), "request refused");
                Err(to_status(&e))
            }
        }
    }
}

pub fn decision_to_pb(d: DecisionKind) -> pb::Decision {
    match d {
        DecisionKind::Allow => pb::Decision::Allow,
        DecisionKind::ExplicitDeny => pb::Decision::ExplicitDeny,
        DecisionKind::ImplicitDeny => pb::Decision::ImplicitDeny,
    }
}

fn verdict(v: Option<TypeDecision>) -> i32 {
    (match v {
        None => pb::PolicyVerdict::NotApplicable,
        Some(TypeDecision::Allowed) => pb::PolicyVerdict::Allowed,
        Some(TypeDecision::ExplicitDeny) => pb::PolicyVerdict::ExplicitDeny,
        Some(TypeDecision::ImplicitDeny) => pb::PolicyVerdict::ImplicitDeny,
    }) as i32
}

fn statement_to_pb(s: &engine::StatementRef) -> pb::MatchedStatement {
    pb::MatchedStatement {
        policy: s.source_policy_id.clone(),
        policy_type: s.policy_type.as_str().to_owned(),
        sid: s.sid.clone().unwrap_or_default(),
        statement_index: s.statement_index,
        effect: match s.effect {
            Effect::Allow => pb::Effect::Allow as i32,
            Effect::Deny => pb::Effect::Deny as i32,
        },
        location: s.location.clone(),
    }
}

fn explanation_to_pb(x: &Explanation) -> pb::Explanation {
    pb::Explanation {
        matched_statements: x.matched_statements.iter().map(statement_to_pb).collect(),
        missing_context_keys: x.missing_context_values.clone(),
        details: Some(pb::DecisionDetails {
            organizations: verdict(x.decision_details.organizations),
            resource_based: verdict(x.decision_details.resource_based),
            identity_based: verdict(x.decision_details.identity_based),
            permissions_boundary: verdict(x.decision_details.permissions_boundary),
        }),
        near_misses: x
            .near_misses
            .iter()
            .map(|n| pb::NearMiss {
                statement: Some(statement_to_pb(&n.statement)),
                failed_element: n.failed_element.to_owned(),
                reason: n.reason.clone(),
            })
            .collect(),
    }
}

/// Batches larger than this, and explanations, run on a blocking thread.
const INLINE_BATCH: usize = 8;

impl AuthorizerService {
    /// Runs expensive work (big batches, explanations) on a blocking thread,
    /// at most `AppState::heavy` at once, so the async threads stay free for
    /// health checks and cheap decisions. Waiting for a slot counts against
    /// the RPC's deadline.
    async fn off_the_reactor<R: Send + 'static>(
        &self,
        deadline: Option<Deadline>,
        work: impl FnOnce(&AuthorizerService) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let slot = self.state.heavy.clone().acquire_owned();
        let slot = match deadline {
            Some(d) => tokio::time::timeout_at(d.0.into(), slot).await.map_err(|_| {
                ApiError::DeadlineExceeded(
                    "iamd is busy with other batches and explanations; none finished within the deadline"
                        .into(),
                )
            })?,
            None => slot.await,
        }
        .map_err(|_| ApiError::Internal("iamd is shutting down".into()))?;
        let me = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            span.in_scope(|| work(&me))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the decision task failed: {e}")))?
    }

    fn decide_batch(
        &self,
        reqs: &[OwnedRequest],
        deadline: Option<Deadline>,
    ) -> Result<pb::AuthorizeBatchResponse, ApiError> {
        // Every request of the batch is decided on the same snapshot.
        self.with_snapshot(|served| {
            let mut responses = Vec::with_capacity(reqs.len());
            for r in reqs {
                if deadline.is_some_and(|d| d.passed()) {
                    return Err(ApiError::DeadlineExceeded(format!(
                        "the batch was not decided within its deadline ({} of {} done); no answer is given for any of it",
                        responses.len(),
                        reqs.len()
                    )));
                }
                responses.push(self.decide(served, r, Api::AuthorizeBatch)?);
            }
            tracing::Span::current().record("revision", served.revision);
            Ok(pb::AuthorizeBatchResponse {
                responses,
                revision: served.revision,
            })
        })
    }
}

#[tonic::async_trait]
impl pb::authorizer_server::Authorizer for AuthorizerService {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let start = Instant::now();
        let span = tracing::info_span!(
            "iamd.v1.Authorizer/Authorize",
            otel.kind = "server",
            decision = tracing::field::Empty,
            revision = tracing::field::Empty
        );
        let deadline = request.extensions().get::<Deadline>().copied();
        let min_revision = request.get_ref().min_revision;
        let parsed = span.in_scope(|| {
            let msg = request.into_inner();
            check_size(&msg, &self.state.limits)?;
            parse_request(msg, &self.state.limits, "")
        });
        let parsed = match parsed {
            Ok(req) => self.reach(min_revision).await.map(|()| req),
            Err(e) => Err(e),
        };
        let decide = |me: &AuthorizerService, req: &OwnedRequest| {
            let resp = me.with_snapshot(|served| me.decide(served, req, Api::Authorize))?;
            let span = tracing::Span::current();
            span.record("decision", resp.decision().as_str_name());
            span.record("revision", resp.revision);
            Ok(resp)
        };
        let result = match parsed {
            Err(e) => Err(e),
            Ok(req) if req.explain => {
                self.off_the_reactor(deadline, move |me| decide(me, &req))
                    .instrument(span)
                    .await
            }
            Ok(req) => span.in_scope(|| decide(self, &req)),
        };
        self.finish(Api::Authorize, start, result)
    }

    async fn authorize_batch(
        &self,
        request: Request<pb::AuthorizeBatchRequest>,
    ) -> Result<Response<pb::AuthorizeBatchResponse>, Status> {
        let start = Instant::now();
        let span = tracing::info_span!(
            "iamd.v1.Authorizer/AuthorizeBatch",
            otel.kind = "server",
            batch_size = tracing::field::Empty,
            revision = tracing::field::Empty
        );
        let deadline = request.extensions().get::<Deadline>().copied();
        let batch = request.get_ref();
        let min_revision = batch
            .requests
            .iter()
            .map(|r| r.min_revision)
            .fold(batch.min_revision, u64::max);
        let parsed = span.in_scope(|| {
            let msg = request.into_inner();
            check_size(&msg, &self.state.limits)?;
            let reqs = parse_batch(msg, &self.state.limits)?;
            tracing::Span::current().record("batch_size", reqs.len());
            Ok(reqs)
        });
        let parsed = match parsed {
            Ok(reqs) => self.reach(min_revision).await.map(|()| reqs),
            Err(e) => Err(e),
        };
        let result = match parsed {
            Err(e) => Err(e),
            Ok(reqs) if reqs.len() > INLINE_BATCH || reqs.iter().any(|r| r.explain) => {
                self.off_the_reactor(deadline, move |me| me.decide_batch(&reqs, deadline))
                    .instrument(span)
                    .await
            }
            Ok(reqs) => span.in_scope(|| self.decide_batch(&reqs, deadline)),
        };
        self.finish(Api::AuthorizeBatch, start, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's metadata spells a decision as the gRPC enum names it.
    #[test]
    fn a_decision_has_one_wire_name() {
        for kind in DecisionKind::ALL {
            assert_eq!(kind.names().wire, decision_to_pb(kind).as_str_name());
        }
    }
}
