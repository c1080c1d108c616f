//! The IAM JSON policy language as typed values.
//!
//! A policy document is parsed once ([`grammar`]) into a [`Policy`] whose
//! statements hold compiled patterns and conditions, and its typed elements
//! are linted ([`lint`]) as they are built; nothing downstream looks at
//! JSON again. The matching primitives here (`ActionElement`,
//! `ResourceElement`, `PrincipalElement`) are what the engine calls per
//! statement.

pub mod arn;
pub mod condition;
pub mod grammar;
pub mod lint;
pub mod pattern;

use std::fmt;

pub use arn::Arn;
pub use condition::{Condition, ConditionContext};
pub use grammar::{parse_policy, parse_policy_text};
pub use pattern::{ArnPattern, Pattern, VarSource};

use crate::finding::StatementLocation;

/// `Version`: 2012-10-17 enables policy variables; 2008-10-17 reads `${...}` literally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2012_10_17,
    V2008_10_17,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2012_10_17 => "2012-10-17",
            Version::V2008_10_17 => "2008-10-17",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    /// As written in a policy: `Allow` or `Deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Effect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a document is attached to; decides which elements it may hold and its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Inline policy of a user, group or role.
    Inline,
    /// Customer or AWS managed policy (also used as a permissions boundary).
    Managed,
    /// A resource-based policy (Lambda function, alias, version, layer version).
    Resource,
    /// A role's trust policy (`AssumeRolePolicyDocument`).
    Trust,
    /// An Organizations service control policy.
    Scp,
}

impl PolicyKind {
    pub(crate) fn is_identity_like(self) -> bool {
        matches!(
            self,
            PolicyKind::Inline | PolicyKind::Managed | PolicyKind::Scp
        )
    }

    /// Largest document, in non-white-space characters (IAM and Organizations quotas;
    /// Lambda's 20 KB for function policies; the raised maximum for trust policies).
    pub fn size_limit(self) -> usize {
        match self {
            PolicyKind::Inline => 10_240,
            PolicyKind::Managed => 6_144,
            PolicyKind::Resource => 20_480,
            PolicyKind::Trust => 8_192,
            PolicyKind::Scp => 5_120,
        }
    }

    /// What the kind is called in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            PolicyKind::Inline => "inline policy",
            PolicyKind::Managed => "managed policy",
            PolicyKind::Resource => "resource-based policy",
            PolicyKind::Trust => "role trust policy",
            PolicyKind::Scp => "service control policy",
        }
    }
}

/// A whole policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub version: Version,
    pub id: Option<Box<str>>,
    pub statements: Vec<Statement>,
    /// `Statement` was written as an array (rather than one object), so
    /// statement `i` is at `Statement[i]`: later findings name that path.
    pub statements_listed: bool,
    /// Size in non-white-space characters, as IAM's quotas count it.
    pub size: usize,
}

/// One statement, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<Box<str>>,
    pub effect: Effect,
    /// `Principal` / `NotPrincipal`; `None` in identity policies and SCPs.
    pub principal: Option<PrincipalElement>,
    pub action: ActionElement,
    /// `Resource` / `NotResource`; `None` only in role trust policies, where
    /// the statement is about the role itself.
    pub resource: Option<ResourceElement>,
    pub condition: Condition,
    /// Where the statement was written.
    pub location: StatementLocation,
}

/// `Action` or `NotAction`: patterns over `service:action`, matched ignoring case.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionElement {
    pub negated: bool,
    /// Lower-cased patterns.
    pub patterns: Vec<Pattern>,
}

impl ActionElement {
    /// Does the element cover `action` (already lower-cased)?
    pub fn matches(&self, action_lower: &str) -> bool {
        let listed = self
            .patterns
            .iter()
            .any(|p| p.matches(action_lower, &pattern::NoVars));
        listed != self.negated
    }

    /// The literal actions, if every pattern is literal and the element is not negated.
    pub fn literals(&self) -> Option<impl Iterator<Item = &str>> {
        if self.negated || self.patterns.iter().any(|p| p.as_literal().is_none()) {
            return None;
        }
        Some(self.patterns.iter().filter_map(Pattern::as_literal))
    }
}

/// `Resource` or `NotResource`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceElement {
    pub negated: bool,
    pub patterns: Vec<ArnPattern>,
}

impl ResourceElement {
    pub fn matches(&self, resource: &str, vars: &dyn VarSource) -> bool {
        let listed = self.patterns.iter().any(|p| p.matches(resource, vars));
        listed != self.negated
    }
}

/// `Principal` or `NotPrincipal`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrincipalElement {
    pub negated: bool,
    pub spec: PrincipalSpec,
}

/// Who a principal element names.
#[derive(Debug, Clone, PartialEq)]
pub enum PrincipalSpec {
    /// `"*"` or `{"AWS": "*"}`: everyone, anonymous callers and services included.
    Everyone,
    /// Boxed: most statements have no principal, and the six lists would
    /// otherwise widen every statement.
    Listed(Box<PrincipalList>),
}

/// The entries of a principal map, sorted by what they can match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalList {
    /// 12-digit account ids (`"111122223333"` and `arn:aws:iam::111122223333:root`).
    pub accounts: Vec<Box<str>>,
    /// IAM user, role, assumed-role session and federated-user ARNs.
    pub arns: Vec<Box<str>>,
    /// Unique ids (`AIDA...`, `AROA...`) that IAM stores for deleted or renamed entities.
    pub unique_ids: Vec<Box<str>>,
    pub services: Vec<Box<str>>,
    pub federated: Vec<Box<str>>,
    pub canonical_users: Vec<Box<str>>,
}

/// How strongly a resource-policy statement names the caller, which decides
/// whether its Allow stands alone within one account (IAM evaluation logic,
/// "resource-based policies" and the principal table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrincipalMatch {
    /// The account only: an IAM user or role still needs an identity-based Allow.
    Account,
    /// A role ARN matching one of its sessions: limited by a permissions boundary.
    Role,
    /// The caller itself (user, session, service, federated) or `*`: enough on its own.
    Direct,
}
