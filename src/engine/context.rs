//! The request context as conditions and policy variables read it.
//!
//! Keys the caller sent are used as given. Keys AWS always adds and iamd can
//! derive (aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalType,
//! aws:username, aws:userid, aws:PrincipalTag/*, aws:CurrentTime,
//! aws:EpochTime) are filled in when absent. Derived strings that need
//! formatting are written once per decision into inline buffers, so reading
//! the context never allocates.

use std::cell::OnceCell;
use std::fmt::{self, Write as _};

use super::principal::Caller;
use super::request::{Principal, Request};
use crate::policy::condition::{ConditionContext, Values};
use crate::policy::VarSource;

/// A short string kept inline.
pub(crate) struct InlineStr {
    buf: [u8; 256],
    len: usize,
}

impl InlineStr {
    fn new() -> Self {
        InlineStr {
            buf: [0; 256],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

impl fmt::Write for InlineStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn inline(args: fmt::Arguments<'_>) -> InlineStr {
    let mut s = InlineStr::new();
    // Overlong values are cut to empty rather than failing the decision.
    if s.write_fmt(args).is_err() {
        s.len = 0;
    }
    s
}

pub(crate) struct EvalContext<'r> {
    pub req: &'r Request<'r>,
    pub caller: Caller<'r>,
    current_time: OnceCell<InlineStr>,
    epoch_time: OnceCell<InlineStr>,
    root_arn: OnceCell<InlineStr>,
    role_arn: OnceCell<InlineStr>,
    userid: OnceCell<InlineStr>,
}

impl<'r> EvalContext<'r> {
    pub fn new(req: &'r Request<'r>, caller: Caller<'r>) -> Self {
        EvalContext {
            req,
            caller,
            current_time: OnceCell::new(),
            epoch_time: OnceCell::new(),
            root_arn: OnceCell::new(),
            role_arn: OnceCell::new(),
            userid: OnceCell::new(),
        }
    }

    fn given(&self, key: &str) -> Option<&'r [String]> {
        self.req
            .context
            .iter()
            .find(|e| e.key.eq_ignore_ascii_case(key))
            .map(|e| e.values.as_slice())
    }

    /// A key AWS puts in every request context, derived from the principal and time.
    fn derived(&self, key: &str) -> Option<&str> {
        let eq = |k: &str| key.eq_ignore_ascii_case(k);
        let p = self.caller.principal;
        if eq("aws:CurrentTime") {
            return Some(
                self.current_time
                    .get_or_init(|| {
                        inline(format_args!(
                            "{}",
                            self.req.now.strftime("%Y-%m-%dT%H:%M:%SZ")
                        ))
                    })
                    .as_str(),
            );
        }
        if eq("aws:EpochTime") {
            return Some(
                self.epoch_time
                    .get_or_init(|| inline(format_args!("{}", self.req.now.as_second())))
                    .as_str(),
            );
        }
        if eq("aws:PrincipalAccount") {
            // Present for every request; "anonymous" for unsigned ones (IAM UG, global keys).
            return match p {
                Principal::Anonymous => Some("anonymous"),
                _ => p.account(),
            };
        }
        if eq("aws:PrincipalType") {
            return match p {
                Principal::Anonymous => Some("Anonymous"),
                Principal::Root { .. } => Some("Account"),
                Principal::User { .. } => Some("User"),
                Principal::Role { .. } | Principal::AssumedRole { .. } => Some("AssumedRole"),
                Principal::FederatedUser { .. } => Some("FederatedUser"),
                Principal::Service { .. } => None,
            };
        }
        if eq("aws:PrincipalArn") {
            return match p {
                Principal::Anonymous | Principal::Service { .. } => None,
                Principal::Root { account } => Some(
                    self.root_arn
                        .get_or_init(|| inline(format_args!("arn:aws:iam::{account}:root")))
                        .as_str(),
                ),
                Principal::User { arn, .. }
                | Principal::Role { arn, .. }
                | Principal::FederatedUser { arn, .. } => Some(arn),
                // For a session, the role's ARN (with its path when the store knows the role).
                Principal::AssumedRole { account, role, .. } => Some(match self.caller.entity {
                    Some(e) => &e.arn,
                    None => self
                        .role_arn
                        .get_or_init(|| inline(format_args!("arn:aws:iam::{account}:role/{role}")))
                        .as_str(),
                }),
            };
        }
        if eq("aws:username") {
            return match p {
                Principal::User { name, .. } => Some(name),
                _ => None,
            };
        }
        if eq("aws:userid") {
            let id = self.caller.entity.and_then(|e| e.id.as_deref());
            return match p {
                Principal::Anonymous => Some("anonymous"),
                Principal::Root { account } => Some(account),
                Principal::User { .. } => id,
                Principal::Role { .. } => id,
                Principal::AssumedRole { session, .. } => {
                    let id = id?;
                    Some(
                        self.userid
                            .get_or_init(|| inline(format_args!("{id}:{session}")))
                            .as_str(),
                    )
                }
                Principal::FederatedUser { account, name, .. } => Some(
                    self.userid
                        .get_or_init(|| inline(format_args!("{account}:{name}")))
                        .as_str(),
                ),
                Principal::Service { .. } => None,
            };
        }
        const TAG: &str = "aws:PrincipalTag/";
        if key.len() > TAG.len()
            && key
                .get(..TAG.len())
                .is_some_and(|k| k.eq_ignore_ascii_case(TAG))
        {
            let tag = key.get(TAG.len()..)?;
            let entity = self.caller.entity?;
            return entity
                .tags
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(tag))
                .map(|(_, v)| v.as_ref());
        }
        None
    }
}

impl VarSource for EvalContext<'_> {
    fn var(&self, key: &str) -> Option<&str> {
        match self.given(key) {
            Some([one]) => Some(one),
            // Multivalued keys cannot be policy variables.
            Some(_) => None,
            None => self.derived(key),
        }
    }
}

impl ConditionContext for EvalContext<'_> {
    fn values(&self, key: &str) -> Option<Values<'_>> {
        match self.given(key) {
            Some(v) => Some(Values::Many(v)),
            None => self.derived(key).map(Values::One),
        }
    }

    fn is_unknown(&self, key: &str) -> bool {
        // A value given for the key wins over the caller's doubt.
        !self.req.unknown_keys.is_empty() && self.given(key).is_none() && self.req.is_unknown(key)
    }
}
