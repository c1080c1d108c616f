//! The question iamd answers: principal, action, resource and context.
//!
//! [`Request::new`] parses the strings once (principal kind, action shape,
//! resource ARN, typed values of well-known context keys) and rejects bad
//! input with an error naming the field; a `Request` that exists is one the
//! engine can decide without failing. It borrows everything, so building
//! one does not allocate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use jiff::Timestamp;

use crate::finding::echo;
use crate::policy::arn::{is_account_id, Arn};
use crate::policy::condition::parse_date;

/// Longest action name accepted (`service:Action`).
pub const MAX_ACTION_LEN: usize = 128;
/// Longest principal or resource accepted.
pub const MAX_ARN_LEN: usize = 2048;

/// One context key with its values (several for a multivalued key such as `aws:TagKeys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    pub key: String,
    pub values: Vec<String>,
}

impl ContextEntry {
    pub fn new(
        key: impl Into<String>,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        ContextEntry {
            key: key.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

/// Who is asking, parsed from the principal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// `*`: an unsigned request.
    Anonymous,
    /// The account root user: `arn:aws:iam::A:root` or a bare account id.
    Root { account: &'a str },
    /// `arn:aws:iam::A:user/path/name`.
    User {
        arn: &'a str,
        account: &'a str,
        name: &'a str,
    },
    /// `arn:aws:iam::A:role/path/name`, evaluated as a session of that role.
    Role {
        arn: &'a str,
        account: &'a str,
        name: &'a str,
    },
    /// `arn:aws:sts::A:assumed-role/ROLE/SESSION`.
    AssumedRole {
        arn: &'a str,
        account: &'a str,
        role: &'a str,
        session: &'a str,
    },
    /// `arn:aws:sts::A:federated-user/NAME`.
    FederatedUser {
        arn: &'a str,
        account: &'a str,
        name: &'a str,
    },
    /// A service principal (`s3.amazonaws.com`) or a web identity provider
    /// (`cognito-identity.amazonaws.com`): only resource-based policies apply.
    Service { name: &'a str },
}

impl<'a> Principal<'a> {
    pub fn parse(s: &'a str) -> Result<Self, RequestError> {
        let bad = |why: &str| RequestError::Principal(format!("`{}` {why}", echo(s)));
        if s.is_empty() {
            return Err(RequestError::Principal("the principal is empty".into()));
        }
        if s.len() > MAX_ARN_LEN {
            return Err(bad("is too long"));
        }
        if s == "*" {
            return Ok(Principal::Anonymous);
        }
        if is_account_id(s) {
            return Ok(Principal::Root { account: s });
        }
        if s.starts_with("arn:") {
            let arn = Arn::parse(s).map_err(|e| RequestError::Principal(e.to_string()))?;
            if !is_account_id(arn.account) {
                return Err(bad("does not have a 12-digit account id"));
            }
            let account = arn.account;
            let last = |rest: &'a str| rest.rsplit('/').next().unwrap_or_default();
            return match (arn.service, arn.resource.split_once('/')) {
                ("iam", None) if arn.resource == "root" => Ok(Principal::Root { account }),
                ("iam", Some(("user", rest))) if !last(rest).is_empty() => Ok(Principal::User {
                    arn: s,
                    account,
                    name: last(rest),
                }),
                ("iam", Some(("role", rest))) if !last(rest).is_empty() => Ok(Principal::Role {
                    arn: s,
                    account,
                    name: last(rest),
                }),
                ("sts", Some(("assumed-role", rest))) => match rest.split_once('/') {
                    Some((role, session)) if !role.is_empty() && !session.is_empty() && !session.contains('/') => {
                        Ok(Principal::AssumedRole {
                            arn: s,
                            account,
                            role,
                            session,
                        })
                    }
                    _ => Err(bad("is not an assumed-role ARN (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION)")),
                },
                ("sts", Some(("federated-user", name))) if !name.is_empty() && !name.contains('/') => {
                    Ok(Principal::FederatedUser {
                        arn: s,
                        account,
                        name,
                    })
                }
                _ => Err(bad(
                    "is not an IAM user, role, root, assumed-role or federated-user ARN",
                )),
            };
        }
        let dns_like = s.contains('.')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !s.starts_with('.')
            && !s.ends_with('.');
        if dns_like {
            return Ok(Principal::Service { name: s });
        }
        Err(bad(
            "is not a principal: expected an IAM ARN, a 12-digit account id, a service principal such as s3.amazonaws.com, or *",
        ))
    }

    /// The account the principal belongs to, if any.
    pub fn account(&self) -> Option<&'a str> {
        match *self {
            Principal::Anonymous | Principal::Service { .. } => None,
            Principal::Root { account }
            | Principal::User { account, .. }
            | Principal::Role { account, .. }
            | Principal::AssumedRole { account, .. }
            | Principal::FederatedUser { account, .. } => Some(account),
        }
    }
}

/// A request the engine can decide.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The principal string as given (for messages).
    pub principal_text: &'a str,
    pub principal: Principal<'a>,
    /// `service:Action` as given.
    pub action: &'a str,
    action_lower: ActionBuf,
    /// An ARN, or `*` for actions without resource-level permissions.
    pub resource: &'a str,
    pub resource_arn: Option<Arn<'a>>,
    pub context: &'a [ContextEntry],
    /// Keys AWS would add to this request whose values the caller could not
    /// determine (see `ConditionContext::is_unknown`). A key ending in `/`
    /// stands for every key it prefixes (`aws:RequestTag/`).
    pub unknown_keys: &'a [String],
    /// When the request is made (fills aws:CurrentTime and aws:EpochTime).
    pub now: Timestamp,
}

/// The lower-cased action, kept inline so a request needs no heap.
#[derive(Clone, Copy)]
struct ActionBuf {
    buf: [u8; MAX_ACTION_LEN],
    len: usize,
}

impl fmt::Debug for ActionBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ActionBuf {
    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// Why a request was refused before evaluation; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid principal: {0}")]
    Principal(String),
    #[error("invalid action: {0}")]
    Action(String),
    #[error("invalid resource: {0}")]
    Resource(String),
    #[error("invalid context: {0}")]
    Context(String),
}

fn parse_action(action: &str) -> Result<ActionBuf, RequestError> {
    let bad = |why: &str| RequestError::Action(format!("`{}` {why}", echo(action)));
    if action.is_empty() {
        return Err(RequestError::Action("the action is empty".into()));
    }
    if action.len() > MAX_ACTION_LEN {
        return Err(bad(&format!("is longer than {MAX_ACTION_LEN} characters")));
    }
    let Some((service, name)) = action.split_once(':') else {
        return Err(bad("is not `service:Action`"));
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !ok(service) || !ok(name) {
        return Err(bad(
            "is not `service:Action` (letters, digits, `-` and `_`, no wildcards)",
        ));
    }
    let mut buf = [0u8; MAX_ACTION_LEN];
    for (dst, src) in buf.iter_mut().zip(action.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    Ok(ActionBuf {
        buf,
        len: action.len(),
    })
}

/// Checks the values of context keys whose type iamd knows and relies on.
fn check_context(context: &[ContextEntry]) -> Result<(), RequestError> {
    for entry in context {
        let key = entry.key.as_str();
        if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
            return Err(RequestError::Context(format!(
                "bad context key `{}`",
                echo(key)
            )));
        }
        let ty = crate::catalog::condition_key_type(key);
        for v in &entry.values {
            let valid = match ty {
                Some(crate::catalog::KeyType::IpAddress) => IpAddr::from_str(v.trim()).is_ok(),
                Some(crate::catalog::KeyType::Date) => parse_date(v).is_some(),
                Some(crate::catalog::KeyType::Bool) => {
                    v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
                }
                Some(crate::catalog::KeyType::Numeric) => {
                    v.trim().parse::<f64>().is_ok_and(f64::is_finite)
                }
                _ => true,
            };
            if !valid {
                return Err(RequestError::Context(format!(
                    "`{}` is not a valid value for `{}` (type {:?})",
                    echo(v),
                    echo(key),
                    ty.unwrap_or(crate::catalog::KeyType::String)
                )));
            }
        }
    }
    Ok(())
}

impl<'a> Request<'a> {
    pub fn new(
        principal: &'a str,
        action: &'a str,
        resource: &'a str,
        context: &'a [ContextEntry],
        now: Timestamp,
    ) -> Result<Self, RequestError> {
        let parsed_principal = Principal::parse(principal)?;
        let action_lower = parse_action(action)?;
        if resource.is_empty() {
            return Err(RequestError::Resource("the resource is empty".into()));
        }
        if resource.len() > MAX_ARN_LEN {
            return Err(RequestError::Resource(format!(
                "the resource is longer than {MAX_ARN_LEN} characters"
            )));
        }
        let resource_arn = if resource == "*" {
            None
        } else {
            Some(Arn::parse(resource).map_err(|e| RequestError::Resource(e.to_string()))?)
        };
        check_context(context)?;
        Ok(Request {
            principal_text: principal,
            principal: parsed_principal,
            action,
            action_lower,
            resource,
            resource_arn,
            context,
            unknown_keys: &[],
            now,
        })
    }

    /// The request with `keys` marked as undeterminable.
    pub fn with_unknown_keys(self, keys: &'a [String]) -> Self {
        Request {
            unknown_keys: keys,
            ..self
        }
    }

    /// Is `key` one the caller could not determine?
    pub fn is_unknown(&self, key: &str) -> bool {
        self.unknown_keys.iter().any(|u| {
            if u.ends_with('/') {
                key.len() > u.len()
                    && key
                        .get(..u.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(u))
            } else {
                u.eq_ignore_ascii_case(key)
            }
        })
    }

    /// The action in lower case, as the engine matches it.
    pub fn action_lower(&self) -> &str {
        self.action_lower.as_str()
    }

    /// The account that owns the resource; `None` for `*` or an ARN without
    /// one (such as an S3 bucket), which is read as the caller's own account.
    pub fn resource_account(&self) -> Option<&'a str> {
        self.resource_arn
            .map(|a| a.account)
            .filter(|a| !a.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_forms() {
        assert_eq!(Principal::parse("*").unwrap(), Principal::Anonymous);
        assert_eq!(
            Principal::parse("111122223333").unwrap(),
            Principal::Root {
                account: "111122223333"
            }
        );
        assert_eq!(
            Principal::parse("arn:aws:iam::111122223333:root").unwrap(),
            Principal::Root {
                account: "111122223333"
            }
        );
        assert!(matches!(
            Principal::parse("arn:aws:iam::111122223333:user/dev/alice").unwrap(),
            Principal::User { name: "alice", .. }
        ));
        assert!(matches!(
            Principal::parse("arn:aws:iam::111122223333:role/app").unwrap(),
            Principal::Role { name: "app", .. }
        ));
        assert!(matches!(
            Principal::parse("arn:aws:sts::111122223333:assumed-role/app/s1").unwrap(),
            Principal::AssumedRole {
                role: "app",
                session: "s1",
                ..
            }
        ));
        assert!(matches!(
            Principal::parse("arn:aws:sts::111122223333:federated-user/bob").unwrap(),
            Principal::FederatedUser { name: "bob", .. }
        ));
        assert_eq!(
            Principal::parse("s3.amazonaws.com").unwrap(),
            Principal::Service {
                name: "s3.amazonaws.com"
            }
        );
        for bad in [
            "",
            "alice",
            "arn:aws:iam::1111:user/a",
            "arn:aws:iam::111122223333:group/g",
            "arn:aws:sts::111122223333:assumed-role/app",
            "arn:aws:iam::111122223333:user/",
            "S3.AMAZONAWS.COM ",
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_validation_names_the_field() {
        let now = Timestamp::UNIX_EPOCH;
        let p = "arn:aws:iam::111122223333:user/alice";
        let r = "arn:aws:lambda:us-east-1:111122223333:function:f";
        let req = Request::new(p, "Lambda:InvokeFunction", r, &[], now).unwrap();
        assert_eq!(req.action_lower(), "lambda:invokefunction");
        assert_eq!(req.resource_account(), Some("111122223333"));
        assert!(matches!(
            Request::new("", "a:b", r, &[], now),
            Err(RequestError::Principal(_))
        ));
        assert!(matches!(
            Request::new(p, "", r, &[], now),
            Err(RequestError::Action(_))
        ));
        assert!(matches!(
            Request::new(p, "lambda:*", r, &[], now),
            Err(RequestError::Action(_))
        ));
        assert!(matches!(
            Request::new(p, "invoke", r, &[], now),
            Err(RequestError::Action(_))
        ));
        assert!(matches!(
            Request::new(p, "a:b", "", &[], now),
            Err(RequestError::Resource(_))
        ));
        assert!(matches!(
            Request::new(p, "a:b", "function:f", &[], now),
            Err(RequestError::Resource(_))
        ));
        let long = "a:".to_string() + &"b".repeat(200);
        assert!(matches!(
            Request::new(p, &long, r, &[], now),
            Err(RequestError::Action(_))
        ));
        let ctx = [ContextEntry::new("aws:SourceIp", ["not-an-ip"])];
        assert!(matches!(
            Request::new(p, "a:b", r, &ctx, now),
            Err(RequestError::Context(_))
        ));
        let ctx = [ContextEntry::new("aws:CurrentTime", ["noon"])];
        assert!(matches!(
            Request::new(p, "a:b", r, &ctx, now),
            Err(RequestError::Context(_))
        ));
        let ok = [
            ContextEntry::new("aws:SourceIp", ["10.0.0.1"]),
            ContextEntry::new("custom:x", ["anything"]),
        ];
        assert!(Request::new(p, "a:b", "*", &ok, now).is_ok());
    }

    #[test]
    fn control_characters_and_long_text_are_refused_and_echoed_safely() {
        let now = Timestamp::UNIX_EPOCH;
        let r = "arn:aws:lambda:us-east-1:111122223333:function:f";
        for p in [
            "arn:aws:iam::111122223333:user/al\u{0}ice",
            "arn:aws:iam::111122223333:role/app\nstore OK",
            "arn:aws:sts::111122223333:assumed-role/app/s\u{1b}[2J",
        ] {
            let e = Request::new(p, "a:b", r, &[], now).unwrap_err();
            assert!(matches!(e, RequestError::Principal(_)), "{p:?}: {e:?}");
            assert!(!e.to_string().contains(char::is_control), "{e}");
        }
        let e = Request::new("*", "a:b", &format!("{r}\u{0}"), &[], now).unwrap_err();
        assert!(matches!(e, RequestError::Resource(_)), "{e:?}");
        // A megabyte principal is refused, and the message quotes a little of it.
        let huge = format!("arn:aws:iam::111122223333:user/{}", "a".repeat(1 << 20));
        let e = Request::new(&huge, "a:b", r, &[], now)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
        assert!(e.contains(&format!("…({} bytes)", huge.len())), "{e}");
    }
}
