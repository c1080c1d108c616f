//! The compiled, immutable policy index that decisions read.
//!
//! Every policy compiles once into a shared [`CompiledPolicy`]; each user and
//! role gets a [`StatementIndex`] over the policies that apply to it (own
//! inline, attached managed, and its groups'), grouped by the literal
//! actions they name so a decision visits only statements that can match;
//! resource policies and role trust policies are keyed by their exact
//! resource ARN; SCPs are grouped per target account.
//!
//! Snapshots share what did not change: principals and resources sit behind
//! `Arc`s in persistent hash maps (imbl's hash array mapped tries), so the
//! snapshot after a change copies only the map nodes on the changed keys'
//! paths, and the old and new snapshot together cost little more than one.
//! [`super::Compiler`] builds them, whole or change by change.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxBuildHasher, FxHashMap};

use super::principal::PrincipalMatcher;
pub use crate::finding::StatementLocation;
use crate::policy::{ActionElement, Condition, Effect, ResourceElement};

pub type ActionId = u32;

/// A persistent hash map: cloning it is O(1), a change copies O(log n) nodes.
pub(crate) type SharedMap<K, V> =
    imbl::GenericHashMap<K, V, FxBuildHasher, imbl::shared_ptr::DefaultSharedPtr>;

/// An account and a name: how users and roles are found.
pub(crate) type NameKey = (Arc<str>, Arc<str>);

/// A borrowed [`NameKey`], to look one up without building it. Hashes as
/// the tuple of its strings, as the owned key does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameRef<'a>(pub &'a str, pub &'a str);

impl Hash for NameRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state);
    }
}

impl equivalent::Equivalent<NameKey> for NameRef<'_> {
    fn equivalent(&self, key: &NameKey) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

/// What kind of policy a statement came from, as the IAM policy simulator names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyType {
    /// Inline policy of a user.
    User,
    /// Inline policy of a group the user is in.
    Group,
    /// Inline policy of a role.
    Role,
    /// A managed policy attached as permissions.
    Managed,
    /// A resource-based policy.
    Resource,
    /// A role trust policy (the resource policy of `sts:AssumeRole`).
    RoleTrust,
    /// A managed policy used as a permissions boundary.
    Boundary,
    /// An Organizations service control policy.
    Scp,
}

impl std::fmt::Display for PolicyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for PolicyType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PolicyType {
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyType::User => "user",
            PolicyType::Group => "group",
            PolicyType::Role => "role",
            PolicyType::Managed => "managed",
            PolicyType::Resource => "resource",
            PolicyType::RoleTrust => "role-trust",
            PolicyType::Boundary => "boundary",
            PolicyType::Scp => "scp",
        }
    }
}

/// One policy document, compiled: shared by every index that holds it.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// The policy's identity: a managed policy or resource ARN, an SCP name,
    /// or `OWNER-ARN/inline/NAME` for inline policies.
    pub name: Box<str>,
    pub policy_type: PolicyType,
    pub statements: Box<[CompiledStatement]>,
    /// `(action, statement)` for each literal action of a statement whose
    /// `Action` lists only literals, in statement order.
    pub(crate) literals: Box<[(ActionId, u32)]>,
    /// Statements with wildcard actions or `NotAction`: always candidates.
    pub(crate) wildcards: Box<[u32]>,
}

/// One statement, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledStatement {
    /// Position in the policy's `Statement` array.
    pub index: u32,
    pub sid: Option<Box<str>>,
    pub effect: Effect,
    pub action: ActionElement,
    pub resource: Option<ResourceElement>,
    pub principal: Option<PrincipalMatcher>,
    pub condition: Condition,
    pub location: StatementLocation,
}

/// A statement of an index: its policy's place in the index, and its own
/// place in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StatementAt {
    pub policy: u32,
    pub statement: u32,
}

/// Statements of a set of policies, grouped by the literal actions they name.
///
/// Most indexes hold a handful of actions, so the buckets are one sorted
/// array searched by bisection: smaller and faster than a hash map there.
#[derive(Debug, Clone, Default)]
pub struct StatementIndex {
    /// `(action, end)` sorted by action; the bucket of entry `i` is
    /// `bucket_items[end(i-1)..end(i)]`.
    pub(crate) buckets: Box<[(ActionId, u32)]>,
    /// Statements whose `Action` lists only literal actions, under each of them.
    pub(crate) bucket_items: Box<[StatementAt]>,
    /// Statements with wildcard actions or `NotAction`: always candidates.
    pub(crate) other: Box<[StatementAt]>,
    /// The policies indexed, for exhaustive evaluation and explanations.
    pub policies: Box<[Arc<CompiledPolicy>]>,
}

impl StatementIndex {
    /// Statements that may match `action`: `(known to match the action,
    /// the statement)`, `None` for a reference the index cannot resolve
    /// (which a decision must treat as a deny).
    pub fn candidates(
        &self,
        action: Option<ActionId>,
    ) -> impl Iterator<Item = (bool, Option<&CompiledStatement>)> + '_ {
        let exact = action
            .and_then(|a| {
                let i = self.buckets.binary_search_by_key(&a, |(id, _)| *id).ok()?;
                let start = i
                    .checked_sub(1)
                    .and_then(|p| self.buckets.get(p))
                    .map_or(0, |(_, e)| *e);
                let end = self.buckets.get(i)?.1;
                self.bucket_items.get(start as usize..end as usize)
            })
            .unwrap_or_default();
        exact
            .iter()
            .map(|r| (true, r))
            .chain(self.other.iter().map(|r| (false, r)))
            .map(|(known, r)| (known, self.resolve(*r)))
    }

    fn resolve(&self, r: StatementAt) -> Option<&CompiledStatement> {
        self.policies
            .get(r.policy as usize)?
            .statements
            .get(r.statement as usize)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    User,
    Role,
}

/// An IAM user or role with its compiled policies.
#[derive(Debug, Clone)]
pub struct Entity {
    pub kind: EntityKind,
    pub arn: Box<str>,
    pub account: Arc<str>,
    pub name: Arc<str>,
    /// `UserId` / `RoleId` (AIDA..., AROA...).
    pub id: Option<Box<str>>,
    pub tags: Box<[(Box<str>, Box<str>)]>,
    pub permissions: StatementIndex,
    pub boundary: Option<Arc<StatementIndex>>,
    /// What the indexes were built from, to build them again when a
    /// managed policy or group changes.
    pub(crate) links: Links,
}

/// The policies an entity's indexes draw on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    pub inline: Box<[Arc<CompiledPolicy>]>,
    pub attached: Box<[Arc<str>]>,
    /// Group names, in the entity's account (users only).
    pub groups: Box<[Arc<str>]>,
    pub boundary: Option<Arc<str>>,
}

/// Which policy guards a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourcePolicyKind {
    /// A Lambda resource's resource-based policy.
    Function,
    /// A role's trust policy, guarding `sts:AssumeRole` on the role: it must
    /// allow even within one account.
    RoleTrust,
}

/// A resource-based policy (or trust policy) keyed by its resource ARN.
#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub arn: Arc<str>,
    pub index: StatementIndex,
    pub kind: ResourcePolicyKind,
}

/// Counts, for metrics and `iamd validate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub accounts: usize,
    pub principals: usize,
    pub policies: usize,
    pub statements: usize,
}

/// An immutable, complete, compiled store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) actions: Arc<FxHashMap<Box<str>, ActionId>>,
    pub(crate) users: SharedMap<NameKey, Arc<Entity>>,
    pub(crate) roles: SharedMap<NameKey, Arc<Entity>>,
    pub(crate) resources: SharedMap<Arc<str>, Arc<ResourceEntry>>,
    /// target account → its SCPs.
    pub(crate) scps: Arc<FxHashMap<Box<str>, Arc<StatementIndex>>>,
    pub(crate) stats: Stats,
}

impl Snapshot {
    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn action_id(&self, action_lower: &str) -> Option<ActionId> {
        self.actions.get(action_lower).copied()
    }

    pub fn user(&self, account: &str, name: &str) -> Option<&Entity> {
        self.users.get(&NameRef(account, name)).map(|e| &**e)
    }

    pub fn role(&self, account: &str, name: &str) -> Option<&Entity> {
        self.roles.get(&NameRef(account, name)).map(|e| &**e)
    }

    pub fn resource(&self, arn: &str) -> Option<&ResourceEntry> {
        self.resources.get(arn).map(|r| &**r)
    }

    pub fn scps_for(&self, account: &str) -> Option<&StatementIndex> {
        self.scps.get(account).map(|i| &**i)
    }

    /// Every user and role (for tests that find them by scanning).
    pub fn entities(&self) -> impl Iterator<Item = &Entity> {
        self.users.values().chain(self.roles.values()).map(|e| &**e)
    }

    /// Every resource and role trust policy.
    pub fn resources(&self) -> impl Iterator<Item = &ResourceEntry> {
        self.resources.values().map(|r| &**r)
    }

    /// Every account with SCPs, and their index.
    pub fn scp_accounts(&self) -> impl Iterator<Item = (&str, &StatementIndex)> {
        self.scps.iter().map(|(a, i)| (&**a, &**i))
    }
}
