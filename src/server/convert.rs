//! Proto messages into domain requests: every field destructured (a new
//! proto field is a compile error until handled), limits enforced, and
//! every refusal naming the field.

use super::{pb, ApiError};
use crate::engine::ContextEntry;

/// Bounds on what one RPC may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded request, in bytes.
    pub max_message_bytes: usize,
    /// Most requests in one `AuthorizeBatch`.
    pub max_batch: usize,
    /// Most context keys in one request.
    pub max_context_keys: usize,
    /// Most values of one context key.
    pub max_context_values: usize,
    /// Longest context value, in bytes.
    pub max_context_value_bytes: usize,
    /// Longest a request waits for its `min_revision`.
    pub max_revision_wait: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_batch: 1000,
            max_context_keys: 64,
            max_context_values: 64,
            max_context_value_bytes: 4096,
            max_revision_wait: std::time::Duration::from_millis(1000),
        }
    }
}

/// A request with owned strings, ready to borrow into an engine `Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub context: Vec<ContextEntry>,
    pub explain: bool,
}

/// Checks the encoded size of a message against the limit.
pub fn check_size(msg: &impl prost::Message, limits: &Limits) -> Result<(), ApiError> {
    let len = msg.encoded_len();
    if len > limits.max_message_bytes {
        return Err(ApiError::InvalidArgument(format!(
            "the request is {len} bytes; the limit is {} bytes",
            limits.max_message_bytes
        )));
    }
    Ok(())
}

/// Converts one proto request; `field` prefixes messages (`requests[3].`).
pub fn parse_request(
    req: pb::AuthorizeRequest,
    limits: &Limits,
    field: &str,
) -> Result<OwnedRequest, ApiError> {
    let pb::AuthorizeRequest {
        principal,
        action,
        resource,
        context,
        explain,
        min_revision: _,
    } = req;
    for (name, value) in [
        ("principal", &principal),
        ("action", &action),
        ("resource", &resource),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::InvalidArgument(format!(
                "{field}{name} is required and must not be empty"
            )));
        }
    }
    if context.len() > limits.max_context_keys {
        return Err(ApiError::InvalidArgument(format!(
            "{field}context has {} keys; the limit is {}",
            context.len(),
            limits.max_context_keys
        )));
    }
    let mut entries: Vec<ContextEntry> = Vec::with_capacity(context.len());
    let mut keys: Vec<(String, pb::ContextValues)> = context.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, pb::ContextValues { values }) in keys {
        if key.is_empty() {
            return Err(ApiError::InvalidArgument(format!(
                "{field}context has an empty key"
            )));
        }
        if entries.iter().any(|e| e.key.eq_ignore_ascii_case(&key)) {
            return Err(ApiError::InvalidArgument(format!(
                "{field}context[{key}] repeats a key that differs only in case (condition keys are case-insensitive)"
            )));
        }
        if values.len() > limits.max_context_values {
            return Err(ApiError::InvalidArgument(format!(
                "{field}context[{key}] has {} values; the limit is {}",
                values.len(),
                limits.max_context_values
            )));
        }
        if let Some(v) = values
            .iter()
            .find(|v| v.len() > limits.max_context_value_bytes)
        {
            return Err(ApiError::InvalidArgument(format!(
                "{field}context[{key}] has a value of {} bytes; the limit is {}",
                v.len(),
                limits.max_context_value_bytes
            )));
        }
        entries.push(ContextEntry { key, values });
    }
    Ok(OwnedRequest {
        principal,
        action,
        resource,
        context: entries,
        explain,
    })
}

/// Converts a batch, checking its size first.
pub fn parse_batch(
    req: pb::AuthorizeBatchRequest,
    limits: &Limits,
) -> Result<Vec<OwnedRequest>, ApiError> {
    let pb::AuthorizeBatchRequest { requests, .. } = req;
    if requests.is_empty() {
        return Err(ApiError::InvalidArgument(
            "requests must hold at least one request".into(),
        ));
    }
    if requests.len() > limits.max_batch {
        return Err(ApiError::InvalidArgument(format!(
            "the batch has {} requests; the limit is {}",
            requests.len(),
            limits.max_batch
        )));
    }
    requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| parse_request(r, limits, &format!("requests[{i}].")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(p: &str, a: &str, r: &str) -> pb::AuthorizeRequest {
        pb::AuthorizeRequest {
            principal: p.into(),
            action: a.into(),
            resource: r.into(),
            context: Default::default(),
            explain: false,
            ..Default::default()
        }
    }

    #[test]
    fn empty_fields_are_named() {
        let l = Limits::default();
        let e = parse_request(req("", "a:b", "*"), &l, "").unwrap_err();
        assert_eq!(
            e,
            ApiError::InvalidArgument("principal is required and must not be empty".into())
        );
        let e = parse_request(req("*", " ", "*"), &l, "requests[2].").unwrap_err();
        assert!(e.to_string().starts_with("requests[2].action"));
    }

    #[test]
    fn context_limits() {
        let l = Limits {
            max_context_keys: 1,
            max_context_values: 2,
            max_context_value_bytes: 3,
            ..Limits::default()
        };
        let mut r = req("*", "a:b", "*");
        r.context.insert(
            "k".into(),
            pb::ContextValues {
                values: vec!["1".into(), "2".into(), "3".into()],
            },
        );
        assert!(parse_request(r.clone(), &l, "")
            .unwrap_err()
            .to_string()
            .contains("context[k] has 3 values"));
        r.context
            .insert("j".into(), pb::ContextValues { values: vec![] });
        assert!(parse_request(r, &l, "")
            .unwrap_err()
            .to_string()
            .contains("context has 2 keys"));
        let mut r = req("*", "a:b", "*");
        r.context.insert(
            "k".into(),
            pb::ContextValues {
                values: vec!["long".into()],
            },
        );
        assert!(parse_request(r, &l, "")
            .unwrap_err()
            .to_string()
            .contains("value of 4 bytes"));
    }

    #[test]
    fn batch_limits() {
        let l = Limits {
            max_batch: 2,
            ..Limits::default()
        };
        let b = pb::AuthorizeBatchRequest {
            requests: vec![req("*", "a:b", "*"); 3],
            ..Default::default()
        };
        assert!(parse_batch(b, &l)
            .unwrap_err()
            .to_string()
            .contains("3 requests"));
        assert!(parse_batch(
            pb::AuthorizeBatchRequest {
                requests: vec![],
                ..Default::default()
            },
            &l
        )
        .is_err());
    }
}
