//! `iamd.v1.Authorizer`: the proto request becomes an engine request, the
//! current snapshot decides it, and the decision becomes the proto response.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::convert::{check_size, parse_batch, parse_request, OwnedRequest};
use super::{pb, to_status, ApiError, AppState};
use crate::engine::{self, DecisionKind, Explanation, TypeDecision};
use crate::metrics::Api;
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
            .decision(api, decision.kind, start.elapsed());
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
            decision: decision_to_pb(decision.kind) as i32,
            message: decision.message(&request),
            revision: served.revision,
            explanation,
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
        policy_type: s.policy_type.to_owned(),
        sid: s.sid.clone().unwrap_or_default(),
        statement_index: s.statement_index,
        effect: if s.effect == "Deny" {
            pb::Effect::Deny as i32
        } else {
            pb::Effect::Allow as i32
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
        let result = span.in_scope(|| {
            let msg = request.into_inner();
            check_size(&msg, &self.state.limits)?;
            let req = parse_request(msg, &self.state.limits, "")?;
            let resp = self.with_snapshot(|served| self.decide(served, &req, Api::Authorize))?;
            let span = tracing::Span::current();
            span.record("decision", resp.decision().as_str_name());
            span.record("revision", resp.revision);
            Ok(resp)
        });
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
        let result = span.in_scope(|| {
            let msg = request.into_inner();
            check_size(&msg, &self.state.limits)?;
            let reqs = parse_batch(msg, &self.state.limits)?;
            tracing::Span::current().record("batch_size", reqs.len());
            // Every request of the batch is decided on the same snapshot.
            self.with_snapshot(|served| {
                let responses = reqs
                    .iter()
                    .map(|r| self.decide(served, r, Api::AuthorizeBatch))
                    .collect::<Result<Vec<_>, _>>()?;
                tracing::Span::current().record("revision", served.revision);
                Ok(pb::AuthorizeBatchResponse {
                    responses,
                    revision: served.revision,
                })
            })
        });
        self.finish(Api::AuthorizeBatch, start, result)
    }
}
