//! Admission of gRPC requests, in front of every service: what a request may
//! cost before a handler sees it.
//!
//! For the decision RPCs (`Authorize`, `AuthorizeBatch`, Envoy's `Check`) it
//! - caps the RPCs in flight across all connections (RESOURCE_EXHAUSTED past
//!   it, at once: a queue would only hold memory and make every caller late);
//! - reads the one request message itself, charging its declared length to a
//!   budget of bytes in flight before the bytes arrive, so half-sent streams
//!   hold a bounded amount of memory and only until the deadline;
//! - scans the message's wire format against the limits before prost
//!   decodes it ([`super::wire`]);
//! - gives the whole RPC a deadline (the server's, or the caller's
//!   `grpc-timeout` if sooner), after which it fails with DEADLINE_EXCEEDED,
//!   which Envoy turns into a deny.
//!
//! Health and reflection pass straight through: they must answer whatever
//! the decision RPCs are doing. Every request, of any service, marks its
//! connection busy while it runs, for the idle timeout ([`super::listener`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::Status;

use super::listener::ConnectionActivity;
use super::wire::{self, ScanLimits, Shape};

/// Bounds on the decision RPCs, from the server's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Longest an RPC may take, from its headers to its response.
    pub request_timeout: Duration,
    /// Most decision RPCs in flight at once.
    pub max_in_flight: usize,
    /// Most request bytes held at once by decision RPCs in flight.
    pub max_in_flight_bytes: usize,
    /// Largest `Authorize` / `AuthorizeBatch` message.
    pub max_authorize_bytes: usize,
    /// Largest Envoy `Check` message.
    pub max_check_bytes: usize,
    pub scan: ScanLimits,
}

/// The deadline of an RPC, put in the request's extensions for handlers
/// that work in steps and can stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

struct Shared {
    config: AdmissionConfig,
    in_flight: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// The tower layer, added to the tonic server.
#[derive(Clone)]
pub struct AdmissionLayer(Arc<Shared>);

impl AdmissionLayer {
    pub fn new(config: AdmissionConfig) -> Self {
        AdmissionLayer(Arc::new(Shared {
            config,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            bytes: Arc::new(Semaphore::new(
                config.max_in_flight_bytes.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }))
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            shared: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// A decision RPC: its message shape and size limit.
fn decision_rpc(path: &str, config: &AdmissionConfig) -> Option<(&'static Shape, usize)> {
    match path {
        "/iamd.v1.Authorizer/Authorize" => {
            Some((&wire::AUTHORIZE_REQUEST, config.max_authorize_bytes))
        }
        "/iamd.v1.Authorizer/AuthorizeBatch" => {
            Some((&wire::AUTHORIZE_BATCH_REQUEST, config.max_authorize_bytes))
        }
        "/envoy.service.auth.v3.Authorization/Check" => {
            Some((&wire::CHECK_REQUEST, config.max_check_bytes))
        }
        _ => None,
    }
}

/// The caller's `grpc-timeout` (`<digits><unit>`), if it is well formed.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn reply(status: Status) -> http::Response<Body> {
    status.into_http()
}

impl<S> tower::Service<http::Request<Body>> for Admission<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The service polled ready is the one that serves; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let _busy = req
                .extensions()
                .get::<ConnectionActivity>()
                .map(ConnectionActivity::begin);
            let Some((shape, max_bytes)) = decision_rpc(req.uri().path(), &shared.config) else {
                return inner.call(req).await;
            };
            let Ok(_slot) = shared.in_flight.clone().try_acquire_owned() else {
                crate::metrics::admission_rejected("in_flight");
                return Ok(reply(Status::resource_exhausted(format!(
                    "iamd is deciding {} requests already, its limit; retry with backoff",
                    shared.config.max_in_flight
                ))));
            };
            let timeout = grpc_timeout(req.headers()).map_or(shared.config.request_timeout, |t| {
                t.min(shared.config.request_timeout)
            });
            let deadline = Instant::now() + timeout;
            let admitted = tokio::time::timeout_at(
                deadline.into(),
                admit(req, shape, max_bytes, &shared, deadline),
            )
            .await;
            let (req, _bytes) = match admitted {
                Ok(Ok(admitted)) => admitted,
                Ok(Err(Refused { reason, status })) => {
                    crate::metrics::admission_rejected(reason);
                    return Ok(reply(status));
                }
                Err(_) => {
                    crate::metrics::admission_rejected("deadline");
                    return Ok(reply(Status::deadline_exceeded(format!(
                        "the request did not arrive within its deadline of {} ms",
                        timeout.as_millis()
                    ))));
                }
            };
            match tokio::time::timeout_at(deadline.into(), inner.call(req)).await {
                Ok(result) => result,
                Err(_) => {
                    crate::metrics::admission_rejected("deadline");
                    Ok(reply(Status::deadline_exceeded(format!(
                        "iamd did not decide within the deadline of {} ms; denied",
                        timeout.as_millis()
                    ))))
                }
            }
        })
    }
}

/// A request the admission layer turned away, with its metric reason
/// (one of `metrics::ADMISSION_REASONS`).
struct Refused {
    reason: &'static str,
    status: Status,
}

impl Refused {
    fn malformed(status: Status) -> Self {
        Refused {
            reason: "malformed",
            status,
        }
    }
}

/// Reads and scans the request message; returns the request rebuilt around
/// it and the byte budget it holds.
async fn admit(
    req: http::Request<Body>,
    shape: &'static Shape,
    max_bytes: usize,
    shared: &Shared,
    deadline: Instant,
) -> Result<(http::Request<Body>, tokio::sync::OwnedSemaphorePermit), Refused> {
    let (mut parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut budget: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut want = 5usize;
    loop {
        if buf.len() >= want {
            if budget.is_none() {
                // The 5-byte gRPC frame header: compression flag, length.
                let compressed = buf.first().copied().unwrap_or(0);
                if compressed != 0 {
                    return Err(Refused::malformed(Status::unimplemented(
                        "iamd does not accept compressed requests",
                    )));
                }
                let len = buf
                    .get(1..5)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
                if len > max_bytes {
                    return Err(Refused {
                        reason: "too_large",
                        status: Status::out_of_range(format!(
                            "the request message is {len} bytes; the limit is {max_bytes} bytes"
                        )),
                    });
                }
                want = 5 + len;
                let permits = u32::try_from(want.max(1)).unwrap_or(u32::MAX);
                budget = Some(
                    shared
                        .bytes
                        .clone()
                        .acquire_many_owned(permits)
                        .await
                        .map_err(|_| {
                            Refused::malformed(Status::unavailable("iamd is shutting down"))
                        })?,
                );
                // Grow with what arrives, not with what the header claims.
                buf.reserve(want.saturating_sub(buf.len()).min(64 << 10));
                continue;
            }
            break;
        }
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                return Err(Refused::malformed(Status::cancelled(format!(
                    "the request body failed: {e}"
                ))));
            }
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    if buf.len() + data.remaining() > want.max(5) && budget.is_some() {
                        return Err(Refused::malformed(Status::invalid_argument(
                            "a unary request carries exactly one message",
                        )));
                    }
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        buf.extend_from_slice(chunk);
                        let n = chunk.len();
                        data.advance(n);
                    }
                }
            }
        }
    }
    let Some(budget) = budget else {
        return Err(Refused::malformed(Status::invalid_argument(
            "the request has no message",
        )));
    };
    if buf.len() != want {
        return Err(Refused::malformed(Status::invalid_argument(
            "the request ended before its message did",
        )));
    }
    let frozen: Bytes = buf.freeze();
    wire::scan(
        frozen.get(5..).unwrap_or_default(),
        shape,
        &shared.config.scan,
    )
    .map_err(|e| Refused {
        reason: match e {
            wire::ScanError::Malformed(_) => "malformed",
            _ => "limits",
        },
        status: Status::invalid_argument(format!("the request is refused before decoding: {e}")),
    })?;
    parts.extensions.insert(Deadline(deadline));
    let body = Body::new(Admitted {
        message: http_body_util::Full::new(frozen),
        _stream: body,
    });
    Ok((http::Request::from_parts(parts, body), budget))
}

/// The message read, as the handler's request body. The stream it came
/// from lives as long as the handler's body does, as it would without the
/// admission layer: an HTTP/2 stream whose request side is dropped early is
/// not kept open by a graceful shutdown, and its answer would be cut off.
struct Admitted {
    message: http_body_util::Full<Bytes>,
    _stream: Body,
}

impl http_body::Body for Admitted {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.message).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.message.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("100m"), Some(Duration::from_millis(100)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("5x"), None);
        assert_eq!(h(""), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
