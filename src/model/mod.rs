//! The model: what a store holds, as pure data — accounts, users, groups,
//! roles, managed policies, resource-based policies and service control
//! policies, each with the place it was read from.
//!
//! The store backends build it ([`crate::store`]); the engine compiles it
//! ([`crate::engine::Snapshot`]). Neither the engine nor the policy language
//! knows where documents come from, so nothing here reads a file.

use std::collections::BTreeSet;

use crate::finding::Location;
use crate::policy::Policy;

/// A policy with the name it is attached under.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedPolicy {
    pub name: String,
    pub policy: Policy,
    /// Non-white-space size, for IAM's aggregate inline quotas.
    pub size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub id: Option<String>,
    pub groups: Vec<String>,
    pub inline: Vec<NamedPolicy>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    pub tags: Vec<(String, String)>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub inline: Vec<NamedPolicy>,
    pub attached: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub arn: String,
    pub account: String,
    pub name: String,
    pub id: Option<String>,
    /// The trust policy (`AssumeRolePolicyDocument`).
    pub trust: Option<Policy>,
    pub inline: Vec<NamedPolicy>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    pub tags: Vec<(String, String)>,
    pub location: Location,
}

/// A managed policy (its default version).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedPolicy {
    pub arn: String,
    pub name: String,
    pub policy: Policy,
    pub location: Location,
}

/// A resource-based policy attached to exactly one resource ARN.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePolicy {
    pub resource_arn: String,
    pub revision_id: Option<String>,
    pub policy: Policy,
    pub location: Location,
}

/// A service control policy and the accounts it is attached to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceControlPolicy {
    pub name: String,
    pub policy: Policy,
    pub targets: Vec<String>,
    pub location: Location,
}

/// Everything a store directory holds, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store {
    pub accounts: BTreeSet<String>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub roles: Vec<Role>,
    pub managed: Vec<ManagedPolicy>,
    pub resource_policies: Vec<ResourcePolicy>,
    pub scps: Vec<ServiceControlPolicy>,
    /// The files read, relative to the store directory.
    pub files: Vec<String>,
}

impl Store {
    /// Total statements, for metrics and limits.
    pub fn statement_count(&self) -> usize {
        let inline = |p: &[NamedPolicy]| p.iter().map(|n| n.policy.statements.len()).sum::<usize>();
        self.users.iter().map(|u| inline(&u.inline)).sum::<usize>()
            + self.groups.iter().map(|g| inline(&g.inline)).sum::<usize>()
            + self
                .roles
                .iter()
                .map(|r| inline(&r.inline) + r.trust.as_ref().map_or(0, |t| t.statements.len()))
                .sum::<usize>()
            + self
                .managed
                .iter()
                .map(|m| m.policy.statements.len())
                .sum::<usize>()
            + self
                .resource_policies
                .iter()
                .map(|r| r.policy.statements.len())
                .sum::<usize>()
            + self
                .scps
                .iter()
                .map(|s| s.policy.statements.len())
                .sum::<usize>()
    }

    /// Total policy documents.
    pub fn policy_count(&self) -> usize {
        self.users.iter().map(|u| u.inline.len()).sum::<usize>()
            + self.groups.iter().map(|g| g.inline.len()).sum::<usize>()
            + self
                .roles
                .iter()
                .map(|r| r.inline.len() + usize::from(r.trust.is_some()))
                .sum::<usize>()
            + self.managed.len()
            + self.resource_policies.len()
            + self.scps.len()
    }
}
