//! A pass over a request's protobuf bytes before prost decodes them, so that
//! what decoding would allocate is bounded by the limits first.
//!
//! Decoding a message of tiny repeated elements costs far more than its
//! size: an empty `AuthorizeRequest` is 2 bytes on the wire and over a
//! hundred in memory. The scan walks the wire format with the shape of each
//! message iamd accepts, counts the repeated fields whose elements allocate,
//! and refuses the message, naming the field, before anything is built. It
//! allocates nothing and reads each byte at most once per nesting level.

/// What a repeated field may hold, per message instance that contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    BatchRequests,
    ContextKeys,
    ContextValues,
    Headers,
    Extensions,
}

/// The counts allowed, from the server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    pub batch_requests: usize,
    pub context_keys: usize,
    pub context_values: usize,
    pub headers: usize,
    pub extensions: usize,
    /// Bytes of a field iamd does not read (Envoy metadata, TLS session).
    pub unread_field_bytes: usize,
}

impl ScanLimits {
    fn limit(&self, c: Counted) -> usize {
        match c {
            Counted::BatchRequests => self.batch_requests,
            Counted::ContextKeys => self.context_keys,
            Counted::ContextValues => self.context_values,
            Counted::Headers => self.headers,
            Counted::Extensions => self.extensions,
        }
    }
}

/// How the scan treats one field of a message.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// A nested message, scanned with its own shape.
    Message(&'static Shape),
    /// A repeated element (string, map entry or message) counted against a
    /// limit; the element is scanned when it has a shape.
    Repeated(Counted, Option<&'static Shape>),
    /// A field iamd never reads, bounded in size.
    Unread,
}

/// The fields of a message that the scan looks into; others are skipped.
#[derive(Debug)]
pub struct Shape {
    pub name: &'static str,
    pub fields: &'static [(u32, &'static str, Rule)],
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("{field} has more than {limit} elements")]
    TooMany { field: String, limit: usize },
    #[error("{field} is {len} bytes; iamd accepts at most {limit} there")]
    TooLarge {
        field: String,
        len: usize,
        limit: usize,
    },
    #[error("the request is not a valid protobuf message ({0})")]
    Malformed(&'static str),
    #[error("the request nests messages too deeply")]
    TooDeep,
}

const MAX_DEPTH: usize = 16;
const MAX_FIELDS: usize = 8;

pub static CONTEXT_VALUES: Shape = Shape {
    name: "ContextValues",
    fields: &[(1, "values", Rule::Repeated(Counted::ContextValues, None))],
};
static CONTEXT_ENTRY: Shape = Shape {
    name: "context entry",
    fields: &[(2, "value", Rule::Message(&CONTEXT_VALUES))],
};
pub static AUTHORIZE_REQUEST: Shape = Shape {
    name: "AuthorizeRequest",
    fields: &[(
        4,
        "context",
        Rule::Repeated(Counted::ContextKeys, Some(&CONTEXT_ENTRY)),
    )],
};
pub static AUTHORIZE_BATCH_REQUEST: Shape = Shape {
    name: "AuthorizeBatchRequest",
    fields: &[(
        1,
        "requests",
        Rule::Repeated(Counted::BatchRequests, Some(&AUTHORIZE_REQUEST)),
    )],
};

static HEADER_MAP: Shape = Shape {
    name: "HeaderMap",
    fields: &[(1, "headers", Rule::Repeated(Counted::Headers, None))],
};
static HTTP_REQUEST: Shape = Shape {
    name: "HttpRequest",
    fields: &[
        (3, "headers", Rule::Repeated(Counted::Headers, None)),
        (13, "header_map", Rule::Message(&HEADER_MAP)),
    ],
};
static REQUEST: Shape = Shape {
    name: "Request",
    fields: &[(2, "http", Rule::Message(&HTTP_REQUEST))],
};
static PEER: Shape = Shape {
    name: "Peer",
    fields: &[(3, "labels", Rule::Repeated(Counted::Extensions, None))],
};
static ATTRIBUTE_CONTEXT: Shape = Shape {
    name: "AttributeContext",
    fields: &[
        (1, "source", Rule::Message(&PEER)),
        (2, "destination", Rule::Message(&PEER)),
        (4, "request", Rule::Message(&REQUEST)),
        (
            10,
            "context_extensions",
            Rule::Repeated(Counted::Extensions, None),
        ),
        (11, "metadata_context", Rule::Unread),
        (12, "tls_session", Rule::Unread),
        (13, "route_metadata_context", Rule::Unread),
    ],
};
pub static CHECK_REQUEST: Shape = Shape {
    name: "CheckRequest",
    fields: &[(1, "attributes", Rule::Message(&ATTRIBUTE_CONTEXT))],
};

/// Scans `bytes` as a message of `shape`.
pub fn scan(bytes: &[u8], shape: &'static Shape, limits: &ScanLimits) -> Result<(), ScanError> {
    scan_message(bytes, shape, limits, &FieldPath::Root(shape.name), 0)
}

/// Where a scan is (`CheckRequest.attributes.request`), rendered only when
/// a refusal names it: every accepted message would otherwise pay for a
/// string per nested field.
enum FieldPath<'a> {
    Root(&'static str),
    Field(&'a FieldPath<'a>, &'static str),
}

impl FieldPath<'_> {
    fn render(&self) -> String {
        match self {
            FieldPath::Root(name) => (*name).to_owned(),
            FieldPath::Field(parent, name) => format!("{}.{name}", parent.render()),
        }
    }
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, ScanError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*at)
            .ok_or(ScanError::Malformed("truncated varint"))?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ScanError::Malformed("varint longer than ten bytes"))
}

fn scan_message(
    bytes: &[u8],
    shape: &'static Shape,
    limits: &ScanLimits,
    path: &FieldPath<'_>,
    depth: usize,
) -> Result<(), ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    // Counts per field of this message instance.
    // INVARIANT: no shape has more than MAX_FIELDS fields (a test checks).
    let mut counts = [0usize; MAX_FIELDS];
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let number = key >> 3;
        match key & 7 {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => at = at.checked_add(8).ok_or(ScanError::Malformed("overflow"))?,
            5 => at = at.checked_add(4).ok_or(ScanError::Malformed("overflow"))?,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| ScanError::Malformed("length overflows"))?;
                let end = at
                    .checked_add(len)
                    .filter(|&e| e <= bytes.len())
                    .ok_or(ScanError::Malformed("a length runs past the end"))?;
                let body = bytes.get(at..end).unwrap_or_default();
                at = end;
                let Some((slot, (_, name, rule))) = shape
                    .fields
                    .iter()
                    .enumerate()
                    .find(|(_, (n, _, _))| u64::from(*n) == number)
                else {
                    continue;
                };
                let here = FieldPath::Field(path, name);
                let field = || here.render();
                match rule {
                    Rule::Message(inner) => scan_message(body, inner, limits, &here, depth + 1)?,
                    Rule::Repeated(counted, inner) => {
                        let count = counts.get_mut(slot).ok_or(ScanError::TooDeep)?;
                        *count += 1;
                        let limit = limits.limit(*counted);
                        if *count > limit {
                            return Err(ScanError::TooMany {
                                field: field(),
                                limit,
                            });
                        }
                        if let Some(inner) = inner {
                            scan_message(body, inner, limits, &here, depth + 1)?;
                        }
                    }
                    Rule::Unread => {
                        if len > limits.unread_field_bytes {
                            return Err(ScanError::TooLarge {
                                field: field(),
                                len,
                                limit: limits.unread_field_bytes,
                            });
                        }
                    }
                }
            }
            _ => return Err(ScanError::Malformed("unsupported wire type")),
        }
    }
    if at > bytes.len() {
        return Err(ScanError::Malformed("a field runs past the end"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pb;
    use prost::Message;

    const LIMITS: ScanLimits = ScanLimits {
        batch_requests: 3,
        context_keys: 2,
        context_values: 2,
        headers: 4,
        extensions: 2,
        unread_field_bytes: 64,
    };

    fn req(keys: usize, values: usize) -> pb::AuthorizeRequest {
        pb::AuthorizeRequest {
            principal: "p".into(),
            context: (0..keys)
                .map(|k| {
                    (
                        format!("k{k}"),
                        pb::ContextValues {
                            values: (0..values).map(|v| v.to_string()).collect(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_repeated_fields_at_every_level() {
        let ok = pb::AuthorizeBatchRequest {
            requests: vec![req(2, 2), req(0, 0), req(1, 1)],
            ..Default::default()
        };
        assert_eq!(
            scan(&ok.encode_to_vec(), &AUTHORIZE_BATCH_REQUEST, &LIMITS),
            Ok(())
        );
        let many = pb::AuthorizeBatchRequest {
            requests: vec![req(0, 0); 4],
            ..Default::default()
        };
        assert_eq!(
            scan(&many.encode_to_vec(), &AUTHORIZE_BATCH_REQUEST, &LIMITS)
                .unwrap_err()
                .to_string(),
            "AuthorizeBatchRequest.requests has more than 3 elements"
        );
        let keys = pb::AuthorizeBatchRequest {
            requests: vec![req(3, 0)],
            ..Default::default()
        };
        assert!(matches!(
            scan(&keys.encode_to_vec(), &AUTHORIZE_BATCH_REQUEST, &LIMITS),
            Err(ScanError::TooMany { field, .. }) if field == "AuthorizeBatchRequest.requests.context"
        ));
        let values = req(1, 3).encode_to_vec();
        assert!(matches!(
            scan(&values, &AUTHORIZE_REQUEST, &LIMITS),
            Err(ScanError::TooMany { field, .. }) if field == "AuthorizeRequest.context.value.values"
        ));
    }

    #[test]
    fn every_shape_fits_the_field_counters() {
        for shape in [
            &CONTEXT_VALUES,
            &CONTEXT_ENTRY,
            &AUTHORIZE_REQUEST,
            &AUTHORIZE_BATCH_REQUEST,
            &HEADER_MAP,
            &HTTP_REQUEST,
            &REQUEST,
            &PEER,
            &ATTRIBUTE_CONTEXT,
            &CHECK_REQUEST,
        ] {
            assert!(shape.fields.len() <= MAX_FIELDS, "{}", shape.name);
        }
    }

    #[test]
    fn a_million_empty_items_are_refused_without_decoding() {
        // 1,000,000 empty AuthorizeRequests: 2 bytes each on the wire.
        let bytes: Vec<u8> = [0x0a, 0x00].repeat(1_000_000);
        let limits = ScanLimits {
            batch_requests: 1000,
            ..LIMITS
        };
        assert!(matches!(
            scan(&bytes, &AUTHORIZE_BATCH_REQUEST, &limits),
            Err(ScanError::TooMany { limit: 1000, .. })
        ));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &[0x0a, 0x05, 0x01][..],
            &[0x0a][..],
            &[0xff; 11][..],
            &[0x0b][..],
            &[0x09, 1, 2][..],
        ] {
            assert!(
                matches!(
                    scan(bytes, &AUTHORIZE_BATCH_REQUEST, &LIMITS),
                    Err(ScanError::Malformed(_))
                ),
                "{bytes:?}"
            );
        }
        // Deep nesting through a repeated message field of itself is bounded.
        static SELF: Shape = Shape {
            name: "Self",
            fields: &[(1, "inner", Rule::Message(&SELF))],
        };
        let mut nested: Vec<u8> = Vec::new();
        for _ in 0..40 {
            let mut outer = vec![0x0a];
            let mut len = nested.len();
            loop {
                let b = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    outer.push(b);
                    break;
                }
                outer.push(b | 0x80);
            }
            outer.extend_from_slice(&nested);
            nested = outer;
        }
        assert_eq!(scan(&nested, &SELF, &LIMITS), Err(ScanError::TooDeep));
    }

    #[test]
    fn envoy_headers_and_unread_fields_are_bounded() {
        use envoy_types::ext_authz::v3::pb::CheckRequest;
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        let check = |headers: usize, extensions: usize| CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        headers: (0..headers)
                            .map(|i| (format!("h{i}"), String::new()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: (0..extensions)
                    .map(|i| (format!("e{i}"), String::new()))
                    .collect(),
                ..Default::default()
            }),
        };
        assert_eq!(
            scan(&check(4, 2).encode_to_vec(), &CHECK_REQUEST, &LIMITS),
            Ok(())
        );
        assert!(matches!(
            scan(&check(5, 0).encode_to_vec(), &CHECK_REQUEST, &LIMITS),
            Err(ScanError::TooMany { field, .. }) if field == "CheckRequest.attributes.request.http.headers"
        ));
        assert!(scan(&check(0, 3).encode_to_vec(), &CHECK_REQUEST, &LIMITS).is_err());
        let mut with_metadata = check(0, 0);
        if let Some(a) = with_metadata.attributes.as_mut() {
            a.tls_session = Some(Default::default());
            if let Some(t) = a.tls_session.as_mut() {
                t.sni = "x".repeat(100);
            }
        }
        assert!(matches!(
            scan(&with_metadata.encode_to_vec(), &CHECK_REQUEST, &LIMITS),
            Err(ScanError::TooLarge { .. })
        ));
    }
}
