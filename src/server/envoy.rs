//! Envoy's ext_authz `Check`: an HTTP request seen by Envoy becomes an IAM
//! request (principal from a trusted header or the peer's SPIFFE ID, action
//! and resource from the Lambda route table or per-route overrides, context
//! from the connection), and the decision becomes Envoy's answer.
//!
//! Every deny, and every error, sets a non-OK status: Envoy reads an unset
//! status as an allow. A deny carries what Lambda itself returns for
//! AccessDeniedException (HTTP 403, `x-amzn-ErrorType`, a JSON body with
//! `Message`), so AWS SDKs surface iamd's message. With no snapshot loaded
//! the RPC fails (UNAVAILABLE), so Envoy's `status_on_error` reports an
//! outage rather than a deny.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::{ApiError, AppState};
use crate::engine::{self, ContextEntry, DecisionKind};
use crate::finding::{echo_max, MESSAGE_LIMIT};
use crate::metrics::Api;
use crate::routes::{ArnDefaults, Body, CallKeys, HttpCall, RouteTable};

/// How Envoy's view of a request maps to an IAM request.
#[derive(Debug, Clone, Default)]
pub struct EnvoyConfig {
    /// Partition, region and account for ARNs the path does not spell out.
    pub arn_defaults: ArnDefaults,
    /// A request header, set by the mesh and trusted, that names the principal.
    pub principal_header: Option<String>,
    /// SPIFFE IDs (peer certificate URI SANs) to IAM role ARNs.
    pub spiffe_roles: HashMap<String, String>,
}

/// The ext_authz service.
pub struct EnvoyAuthorizer {
    state: Arc<AppState>,
    converter: CheckConverter,
    decision_seq: AtomicU64,
    instance: u32,
}

/// gRPC status codes Envoy reads in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;

/// The body Envoy forwarded, owned.
enum CallBody {
    Absent,
    Truncated,
    NotText,
    Complete(String),
}

impl CallBody {
    fn as_body(&self) -> Body<'_> {
        match self {
            CallBody::Absent => Body::Absent,
            CallBody::Truncated => Body::Truncated,
            CallBody::NotText => Body::NotText,
            CallBody::Complete(s) => Body::Complete(s),
        }
    }
}

/// What Envoy asked, extracted from the CheckRequest.
struct Call {
    method: String,
    path: String,
    body: CallBody,
    headers: HashMap<String, String>,
    scheme: String,
    source_ip: Option<String>,
    peer_principal: String,
    extensions: HashMap<String, String>,
    time: Option<jiff::Timestamp>,
}

impl Call {
    fn from_request(req: CheckRequest) -> Call {
        let CheckRequest { attributes } = req;
        let attributes = attributes.unwrap_or_default();
        let source = attributes.source.unwrap_or_default();
        let source_ip = source.address.and_then(|a| match a.address {
            Some(Address::SocketAddress(s)) => Some(s.address),
            _ => None,
        });
        let request = attributes.request.unwrap_or_default();
        let time = request
            .time
            .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok());
        let http = request.http.unwrap_or_default();
        // Envoy marks a body cut at `max_request_bytes`; it also counts
        // `size` (the whole body's length, when known) beside what it sent.
        let partial = http
            .headers
            .get("x-envoy-auth-partial-body")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let sent = http.raw_body.len().max(http.body.len());
        let larger = usize::try_from(http.size).is_ok_and(|size| size > sent);
        let body = if partial || (larger && sent > 0) {
            CallBody::Truncated
        } else if !http.raw_body.is_empty() {
            match String::from_utf8(http.raw_body) {
                Ok(s) => CallBody::Complete(s),
                Err(_) => CallBody::NotText,
            }
        } else if !http.body.is_empty() {
            CallBody::Complete(http.body)
        } else {
            CallBody::Absent
        };
        Call {
            method: http.method,
            path: http.path,
            body,
            headers: http.headers,
            scheme: http.scheme,
            source_ip,
            peer_principal: source.principal,
            extensions: attributes.context_extensions,
            time,
        }
    }
}

/// The IAM request for a call, with the keys the call could not determine.
struct IamRequest {
    action: String,
    resource: String,
    context: Vec<ContextEntry>,
    unknown: Vec<String>,
}

/// Turns Envoy's view of a request into the IAM request iamd decides. Built
/// once, from the configuration: the route table compiles with it.
pub struct CheckConverter {
    config: EnvoyConfig,
    /// The trusted principal header, lowercased as Envoy sends header names.
    principal_header: Option<String>,
    routes: &'static RouteTable,
}

/// A `Check` converted: the call, its principal, and the IAM request or the
/// message of the refusal. It owns what the engine request borrows.
pub struct Converted {
    call: Call,
    principal: String,
    question: Result<IamRequest, String>,
}

impl Converted {
    /// The action the call is authorized as, unless it was refused.
    pub fn action(&self) -> Option<&str> {
        self.question.as_ref().ok().map(|q| q.action.as_str())
    }

    /// The resource the call is authorized on, unless it was refused.
    pub fn resource(&self) -> Option<&str> {
        self.question.as_ref().ok().map(|q| q.resource.as_str())
    }

    /// The engine's request, at the time Envoy gave (`now` if it gave none);
    /// `None` when the call was refused before one could be built.
    pub fn request(
        &self,
        now: jiff::Timestamp,
    ) -> Option<Result<engine::Request<'_>, engine::RequestError>> {
        let q = self.question.as_ref().ok()?;
        Some(
            engine::Request::new(
                &self.principal,
                &q.action,
                &q.resource,
                &q.context,
                self.call.time.unwrap_or(now),
            )
            .map(|r| r.with_unknown_keys(&q.unknown)),
        )
    }
}

impl CheckConverter {
    pub fn new(config: EnvoyConfig) -> Self {
        CheckConverter {
            principal_header: config
                .principal_header
                .as_deref()
                .map(str::to_ascii_lowercase),
            config,
            routes: RouteTable::lambda(),
        }
    }

    /// Converts one `Check`.
    pub fn convert(&self, request: CheckRequest) -> Converted {
        let call = Call::from_request(request);
        let principal = self.principal(&call);
        let question = self.iam_request(&call);
        Converted {
            call,
            principal,
            question,
        }
    }

    /// The principal: the trusted header if configured and present, else the
    /// peer's SPIFFE ID mapped to a role, else anonymous.
    fn principal(&self, call: &Call) -> String {
        if let Some(h) = &self.principal_header {
            if let Some(v) = call.headers.get(h).filter(|v| !v.trim().is_empty()) {
                return v.trim().to_owned();
            }
        }
        if let Some(role) = self.config.spiffe_roles.get(&call.peer_principal) {
            return role.clone();
        }
        "*".to_owned()
    }

    /// Builds the IAM request; an `Err` is a refusal with its message.
    fn iam_request(&self, call: &Call) -> Result<IamRequest, String> {
        let ext = Extensions::of(&call.extensions);
        let over_action = ext.action.filter(|s| !s.is_empty());
        let over_resource = ext.resource.filter(|s| !s.is_empty());
        let (action, resource, keys, region) = match (over_action, over_resource) {
            (Some(a), Some(r)) => (
                a.clone(),
                r.clone(),
                CallKeys::default(),
                self.config.arn_defaults.region.clone(),
            ),
            (over_a, over_r) => {
                let resolved = self
                    .routes
                    .resolve(
                        HttpCall {
                            method: &call.method,
                            path: &call.path,
                            body: call.body.as_body(),
                        },
                        &self.config.arn_defaults,
                    )
                    .map_err(|e| e.to_string())?;
                // The keys belong to the route's action; an overridden
                // action has none of them, so they are all unknown to it.
                let keys = match over_a {
                    Some(_) => CallKeys::default(),
                    None => resolved.keys,
                };
                (
                    over_a.cloned().unwrap_or(resolved.action),
                    over_r.cloned().unwrap_or(resolved.resource),
                    keys,
                    resolved.region,
                )
            }
        };
        // In key order, as the engine sees them. A body's tags are a key
        // each, as many as the body holds: no search per key.
        let mut context: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut unknown = keys.unknown;
        match &call.source_ip {
            Some(ip) => {
                context.insert("aws:SourceIp".into(), vec![ip.clone()]);
            }
            None => unknown.push("aws:SourceIp".into()),
        }
        let secure = if call.scheme.eq_ignore_ascii_case("https") {
            "true"
        } else {
            "false"
        };
        context.insert("aws:SecureTransport".into(), vec![secure.into()]);
        match region {
            Some(r) => {
                context.insert("aws:RequestedRegion".into(), vec![r]);
            }
            None => unknown.push("aws:RequestedRegion".into()),
        }
        for (key, values) in keys.context {
            context.insert(key, values);
        }
        // Headers a route names: `context_headers: "x-tenant=custom:Tenant,..."`.
        if let Some(spec) = ext.context_headers {
            for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (header, key) = pair.split_once('=').ok_or_else(|| {
                    format!("bad context_headers entry `{pair}`: expected header=key")
                })?;
                match header_value(&call.headers, header.trim()) {
                    Some(v) => context
                        .entry(key.trim().to_owned())
                        .or_default()
                        .push(v.clone()),
                    // A header the route reads but the request lacks must
                    // not let a Deny on its key be dodged by leaving it out.
                    None => unknown.push(key.trim().to_owned()),
                }
            }
        }
        let context = context
            .into_iter()
            .map(|(key, values)| ContextEntry { key, values })
            .collect();
        Ok(IamRequest {
            action,
            resource,
            context,
            unknown,
        })
    }
}

/// The route's `context_extensions` iamd reads. Envoy sends one or two, so
/// one pass over them costs less than hashing each name.
struct Extensions<'c> {
    action: Option<&'c String>,
    resource: Option<&'c String>,
    context_headers: Option<&'c String>,
}

impl<'c> Extensions<'c> {
    fn of(map: &'c HashMap<String, String>) -> Self {
        let mut ext = Extensions {
            action: None,
            resource: None,
            context_headers: None,
        };
        for (k, v) in map {
            match k.as_str() {
                "action" => ext.action = Some(v),
                "resource" => ext.resource = Some(v),
                "context_headers" => ext.context_headers = Some(v),
                _ => {}
            }
        }
        ext
    }
}

/// A request header by name, in any case (Envoy sends names lowercased).
fn header_value<'h>(headers: &'h HashMap<String, String>, name: &str) -> Option<&'h String> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        headers.get(&name.to_ascii_lowercase())
    } else {
        headers.get(name)
    }
}

/// The outcome handed back to Envoy.
struct Outcome<'a> {
    decision: Option<DecisionKind>,
    message: String,
    principal: Cow<'a, str>,
    action: Cow<'a, str>,
    resource: Cow<'a, str>,
    revision: u64,
}

impl EnvoyAuthorizer {
    pub fn new(state: Arc<AppState>, config: EnvoyConfig) -> Self {
        // Decision ids: this process's start time, then a sequence number.
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        EnvoyAuthorizer {
            state,
            converter: CheckConverter::new(config),
            decision_seq: AtomicU64::new(0),
            instance,
        }
    }

    /// `{instance:08x}-{sequence:016x}`, written by hand: the format
    /// machinery costs more than the rest of the answer's strings.
    fn decision_id(&self) -> String {
        let seq = self.decision_seq.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(25);
        push_hex(&mut id, u64::from(self.instance), 8);
        id.push('-');
        push_hex(&mut id, seq, 16);
        id
    }

    fn decide<'c>(
        &self,
        converted: &'c Converted,
        revision: u64,
        snapshot: &engine::Snapshot,
    ) -> Outcome<'c> {
        let principal = converted.principal.as_str();
        let action = Cow::Borrowed(converted.action().unwrap_or_default());
        let resource = Cow::Borrowed(converted.resource().unwrap_or_default());
        let request = match converted.request(jiff::Timestamp::now()) {
            None => {
                let message = converted.question.as_ref().err().map_or("", String::as_str);
                return Outcome {
                    decision: None,
                    message: echo_max(message, MESSAGE_LIMIT).to_string(),
                    principal: Cow::Owned(echo_max(principal, MESSAGE_LIMIT).to_string()),
                    action,
                    resource,
                    revision,
                };
            }
            Some(Err(e)) => {
                return Outcome {
                    decision: None,
                    message: format!(
                        "iamd refused the request: {}",
                        echo_max(&e.to_string(), MESSAGE_LIMIT)
                    ),
                    principal: Cow::Borrowed(principal),
                    action,
                    resource,
                    revision,
                }
            }
            Some(Ok(r)) => r,
        };
        let start = Instant::now();
        let decision = engine::decide(snapshot, &request);
        self.state
            .metrics
            .decision(Api::EnvoyCheck, decision.kind(), start.elapsed());
        Outcome {
            decision: Some(decision.kind()),
            message: decision.message(&request),
            principal: Cow::Borrowed(principal),
            action,
            resource,
            revision,
        }
    }
}

/// `n` lowercase hex digits of `v`, zero-padded.
fn push_hex(out: &mut String, v: u64, n: u32) {
    for i in (0..n).rev() {
        let digit = (v >> (4 * i)) & 0xf;
        out.push(char::from(b"0123456789abcdef"[digit as usize]));
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value: false,
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// Envoy dynamic metadata for access logs and later filters.
fn metadata(outcome: &Outcome, decision_id: &str) -> Struct {
    let decision = outcome.decision.map_or("ERROR", |d| d.names().wire);
    let mut fields = HashMap::with_capacity(6);
    fields.insert("decision".to_owned(), string_value(decision));
    fields.insert("decision_id".to_owned(), string_value(decision_id));
    fields.insert(
        "revision".to_owned(),
        Value {
            kind: Some(Kind::NumberValue(outcome.revision as f64)),
        },
    );
    fields.insert("action".to_owned(), string_value(&outcome.action));
    fields.insert("resource".to_owned(), string_value(&outcome.resource));
    fields.insert("principal".to_owned(), string_value(&outcome.principal));
    Struct { fields }
}

/// The CheckResponse for an outcome: OK with upstream headers, or a 403
/// shaped like Lambda's AccessDeniedException.
fn check_response(outcome: &Outcome, decision_id: &str) -> CheckResponse {
    let dynamic_metadata = Some(metadata(outcome, decision_id));
    if outcome.decision == Some(DecisionKind::Allow) {
        return CheckResponse {
            status: Some(rpc::Status {
                code: OK,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    header("x-iamd-principal", &outcome.principal),
                    header("x-iamd-revision", &outcome.revision.to_string()),
                    header("x-iamd-decision-id", decision_id),
                ],
                ..Default::default()
            })),
            dynamic_metadata,
        };
    }
    let body = serde_json::json!({"Type": "User", "Message": outcome.message}).to_string();
    CheckResponse {
        status: Some(rpc::Status {
            code: PERMISSION_DENIED,
            message: outcome.message.clone(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: HttpStatusCode::Forbidden.into(),
            }),
            headers: vec![
                header("x-amzn-ErrorType", "AccessDeniedException"),
                header("content-type", "application/json"),
                header("x-amzn-RequestId", decision_id),
                header("x-iamd-decision-id", decision_id),
                header("x-iamd-revision", &outcome.revision.to_string()),
            ],
            body,
        })),
        dynamic_metadata,
    }
}

#[tonic::async_trait]
impl Authorization for EnvoyAuthorizer {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let start = Instant::now();
        let span = tracing::info_span!(
            "envoy.service.auth.v3.Authorization/Check",
            otel.kind = "server",
            decision = tracing::field::Empty
        );
        let result = span.in_scope(|| {
            // No snapshot is an outage (Envoy's status_on_error), whatever the request.
            let guard = self.state.snapshots.load();
            let served = guard.as_deref().ok_or(ApiError::NoSnapshot)?;
            let converted = self.converter.convert(request.into_inner());
            let outcome = self.decide(&converted, served.revision, &served.snapshot);
            let id = self.decision_id();
            if outcome.decision.is_none() {
                self.state.metrics.rejected(Api::EnvoyCheck);
            }
            span.record("decision", outcome.decision.map_or("error", |d| d.as_str()));
            tracing::debug!(method = %converted.call.method, path = %converted.call.path, decision_id = %id, message = %outcome.message, "ext_authz check");
            Ok(check_response(&outcome, &id))
        });
        self.state.metrics.rpc(Api::EnvoyCheck, start.elapsed());
        result.map(Response::new).map_err(|e| {
            self.state.metrics.rejected(Api::EnvoyCheck);
            super::to_status(&e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_always_carry_a_non_ok_status_and_the_lambda_error_shape() {
        let outcome = Outcome {
            decision: Some(DecisionKind::ImplicitDeny),
            message: "User: * is not authorized".into(),
            principal: "*".into(),
            action: "lambda:InvokeFunction".into(),
            resource: "arn:aws:lambda:us-east-1:111122223333:function:f".into(),
            revision: 4,
        };
        let r = check_response(&outcome, "id-1");
        assert_eq!(r.status.as_ref().unwrap().code, PERMISSION_DENIED);
        let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
            panic!()
        };
        assert_eq!(
            d.status.as_ref().unwrap().code,
            HttpStatusCode::Forbidden as i32
        );
        let hdr = |k: &str| {
            d.headers
                .iter()
                .find(|h| h.header.as_ref().unwrap().key == k)
                .map(|h| h.header.as_ref().unwrap().value.clone())
        };
        assert_eq!(
            hdr("x-amzn-ErrorType").as_deref(),
            Some("AccessDeniedException")
        );
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["Message"], "User: * is not authorized");
        let errored = Outcome {
            decision: None,
            ..outcome
        };
        assert_eq!(
            check_response(&errored, "id-2").status.unwrap().code,
            PERMISSION_DENIED
        );
    }
}
