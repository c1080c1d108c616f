//! The compiled, immutable policy index that decisions read.
//!
//! Built once from a validated [`Store`]: every statement lives once in an
//! arena; actions are interned; each user and role gets a [`StatementIndex`]
//! of its identity policies (own inline, attached managed, and its groups'),
//! grouped by the literal actions they name so a decision visits only
//! statements that can match; resource policies and role trust policies are
//! keyed by their exact resource ARN; SCPs are grouped per target account.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use super::principal::PrincipalMatcher;
use crate::catalog;
pub use crate::finding::StatementLocation;
use crate::model::{NamedPolicy, ResourcePolicy, Store};
use crate::policy::{ActionElement, Condition, Effect, Policy, ResourceElement};

pub type StmtId = u32;
pub type PolicyId = u32;
pub type ActionId = u32;

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

/// One policy document in the snapshot.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    /// The policy's identity: a managed policy or resource ARN, an SCP name,
    /// or `OWNER-ARN/inline/NAME` for inline policies.
    pub name: Box<str>,
    pub policy_type: PolicyType,
    pub statements: std::ops::Range<StmtId>,
}

/// One statement, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledStatement {
    pub policy: PolicyId,
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

/// Statements of a set of policies, grouped by the literal actions they name.
///
/// Most indexes hold a handful of actions, so the buckets are one sorted
/// array searched by bisection: smaller and faster than a hash map there.
#[derive(Debug, Clone, Default)]
pub struct StatementIndex {
    /// `(action, end)` sorted by action; the bucket of entry `i` is
    /// `bucket_items[end(i-1)..end(i)]`.
    buckets: Box<[(ActionId, u32)]>,
    /// Statements whose `Action` lists only literal actions, under each of them.
    bucket_items: Box<[StmtId]>,
    /// Statements with wildcard actions or `NotAction`: always candidates.
    other: Box<[StmtId]>,
    /// The policies indexed, for exhaustive evaluation and explanations.
    pub(crate) policies: Box<[PolicyId]>,
}

impl StatementIndex {
    /// The same index after its statements and policies moved up by the
    /// given offsets and its actions were renumbered by `action`.
    fn renumbered(
        self,
        statements: u32,
        policies: u32,
        action: &dyn Fn(ActionId) -> ActionId,
    ) -> StatementIndex {
        let shift = |ids: Box<[u32]>, by: u32| -> Box<[u32]> {
            let mut ids = ids;
            ids.iter_mut().for_each(|id| *id += by);
            ids
        };
        let mut buckets = self.buckets;
        let mut bucket_items = shift(self.bucket_items, statements);
        buckets.iter_mut().for_each(|(a, _)| *a = action(*a));
        // Renumbered actions may fall out of order: sort the buckets again,
        // carrying their statements along.
        if !buckets.is_sorted_by_key(|(a, _)| *a) {
            let mut start = 0;
            let mut runs: Vec<(ActionId, Vec<StmtId>, u32)> = Vec::with_capacity(buckets.len());
            for &(a, end) in buckets.iter() {
                let items = bucket_items
                    .get(start as usize..end as usize)
                    .unwrap_or_default();
                runs.push((a, items.to_vec(), end - start));
                start = end;
            }
            runs.sort_by_key(|(a, _, _)| *a);
            let mut items = Vec::with_capacity(bucket_items.len());
            let mut sorted = Vec::with_capacity(runs.len());
            // The runs partition the old items, whose ends fit in a u32.
            let mut end = 0u32;
            for (a, run, len) in runs {
                items.extend(run);
                end += len;
                sorted.push((a, end));
            }
            buckets = sorted.into_boxed_slice();
            bucket_items = items.into_boxed_slice();
        }
        StatementIndex {
            buckets,
            bucket_items,
            other: shift(self.other, statements),
            policies: shift(self.policies, policies),
        }
    }

    /// Statements that may match `action`: `(known to match the action, id)`.
    pub fn candidates(
        &self,
        action: Option<ActionId>,
    ) -> impl Iterator<Item = (bool, StmtId)> + '_ {
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
            .map(|&s| (true, s))
            .chain(self.other.iter().map(|&s| (false, s)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    User,
    Role,
}

/// An IAM user or role with its compiled policies.
#[derive(Debug, Clone)]
pub struct Entity {
    pub kind: EntityKind,
    pub arn: Box<str>,
    pub account: Box<str>,
    pub name: Box<str>,
    /// `UserId` / `RoleId` (AIDA..., AROA...).
    pub id: Option<Box<str>>,
    pub tags: Box<[(Box<str>, Box<str>)]>,
    pub permissions: StatementIndex,
    pub boundary: Option<StatementIndex>,
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
    pub arn: Box<str>,
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
    pub(crate) statements: Vec<CompiledStatement>,
    pub(crate) policies: Vec<PolicyInfo>,
    actions: FxHashMap<Box<str>, ActionId>,
    pub(crate) entities: Vec<Entity>,
    /// account → name → entity, one map for users and one for roles.
    users: FxHashMap<Box<str>, FxHashMap<Box<str>, u32>>,
    roles: FxHashMap<Box<str>, FxHashMap<Box<str>, u32>>,
    pub(crate) resources: Vec<ResourceEntry>,
    resources_by_arn: FxHashMap<Box<str>, u32>,
    /// target account → its SCPs.
    pub(crate) scps: Vec<(Box<str>, StatementIndex)>,
    scps_by_account: FxHashMap<Box<str>, u32>,
    stats: Stats,
}

/// A kind of thing a snapshot numbers with 32-bit ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSpace {
    Statements,
    Policies,
    Actions,
    Principals,
    Resources,
    ScpTargets,
    /// Literal actions of statements, and statements under them in one index.
    ActionEntries,
}

impl IdSpace {
    fn name(self) -> &'static str {
        match self {
            IdSpace::Statements => "statements",
            IdSpace::Policies => "policies",
            IdSpace::Actions => "distinct actions",
            IdSpace::Principals => "users and roles",
            IdSpace::Resources => "resource policies",
            IdSpace::ScpTargets => "SCP target accounts",
            IdSpace::ActionEntries => "literal actions in statements",
        }
    }
}

/// Why a validated store could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the store holds more {} than a snapshot can number (at most {limit})", .space.name())]
    TooLarge { space: IdSpace, limit: usize },
}

/// The most items of one kind a snapshot numbers: ids are `u32`.
const ID_LIMIT: usize = u32::MAX as usize;

struct Builder {
    snap: Snapshot,
    /// The most items of each [`IdSpace`]; [`ID_LIMIT`] but in tests.
    limit: usize,
    /// Per statement, the range of `literal_actions` holding its interned
    /// literal actions, or `None` when its `Action` is a wildcard or a
    /// `NotAction`. Computed once per statement, however many indexes hold it.
    statement_actions: Vec<Option<std::ops::Range<u32>>>,
    literal_actions: Vec<ActionId>,
    /// Scratch for [`Builder::index`], reused across the million indexes of a large store.
    pairs: Vec<(ActionId, StmtId)>,
}

impl Builder {
    /// An empty builder with room for `statements` and the catalog's actions
    /// interned first, so builders agree on the ids of known actions.
    fn new(statements: usize, limit: usize) -> Result<Builder, CompileError> {
        let mut b = Builder {
            snap: Snapshot::default(),
            limit,
            statement_actions: Vec::with_capacity(statements),
            literal_actions: Vec::with_capacity(statements),
            pairs: Vec::new(),
        };
        // Sized up front: the arena is the bulk of the snapshot, and growing
        // it by doubling would copy (and first touch) it again and again.
        b.snap.statements.reserve_exact(statements);
        for a in catalog::lambda_actions() {
            b.intern(&a.name.to_lowercase())?;
        }
        for a in catalog::OTHER_ACTIONS {
            b.intern(&a.to_lowercase())?;
        }
        Ok(b)
    }

    /// `len` as an id in `space`, or the error that the store is too large.
    fn id(&self, len: usize, space: IdSpace) -> Result<u32, CompileError> {
        u32::try_from(len)
            .ok()
            .filter(|_| len <= self.limit)
            .ok_or(CompileError::TooLarge {
                space,
                limit: self.limit,
            })
    }

    /// `mine` as the first id of `theirs` more items in `space`, when all of
    /// them fit.
    fn offset(&self, mine: usize, theirs: usize, space: IdSpace) -> Result<u32, CompileError> {
        self.id(mine.saturating_add(theirs), space)?;
        self.id(mine, space)
    }

    /// Appends what `part` compiled (statements, policies, resources) after
    /// what this builder holds, renumbering statements, policies and actions.
    fn append(&mut self, part: Builder) -> Result<(), CompileError> {
        let Builder {
            snap,
            statement_actions,
            literal_actions,
            ..
        } = part;
        // Where the part's ids start; both together must fit, so the shifts
        // below cannot overflow.
        let statements = self.offset(
            self.snap.statements.len(),
            snap.statements.len(),
            IdSpace::Statements,
        )?;
        let policies = self.offset(
            self.snap.policies.len(),
            snap.policies.len(),
            IdSpace::Policies,
        )?;
        let resources = self.offset(
            self.snap.resources.len(),
            snap.resources.len(),
            IdSpace::Resources,
        )?;
        let literals = self.offset(
            self.literal_actions.len(),
            literal_actions.len(),
            IdSpace::ActionEntries,
        )?;
        // The part's action ids, as this builder numbers them.
        let mut actions = vec![0; snap.actions.len()];
        for (name, id) in snap.actions {
            if let Some(slot) = actions.get_mut(id as usize) {
                *slot = self.intern(&name)?;
            }
        }
        // INVARIANT: every id of the part is below its action count.
        let action = |id: ActionId| actions.get(id as usize).copied().unwrap_or(id);

        self.literal_actions
            .extend(literal_actions.into_iter().map(action));
        self.statement_actions.extend(
            statement_actions
                .into_iter()
                .map(|r| r.map(|r| r.start + literals..r.end + literals)),
        );
        self.snap
            .statements
            .extend(snap.statements.into_iter().map(|mut s| {
                s.policy += policies;
                s
            }));
        self.snap
            .policies
            .extend(snap.policies.into_iter().map(|mut p| {
                p.statements = p.statements.start + statements..p.statements.end + statements;
                p
            }));
        for mut entry in snap.resources {
            entry.index = entry.index.renumbered(statements, policies, &action);
            self.snap.resources.push(entry);
        }
        self.snap.resources_by_arn.extend(
            snap.resources_by_arn
                .into_iter()
                .map(|(arn, id)| (arn, id + resources)),
        );
        Ok(())
    }

    fn intern(&mut self, action_lower: &str) -> Result<ActionId, CompileError> {
        if let Some(&id) = self.snap.actions.get(action_lower) {
            return Ok(id);
        }
        let id = self.id(self.snap.actions.len(), IdSpace::Actions)?;
        self.snap.actions.insert(action_lower.into(), id);
        Ok(id)
    }

    fn add_policy(
        &mut self,
        name: String,
        policy_type: PolicyType,
        policy: &mut Policy,
    ) -> Result<PolicyId, CompileError> {
        let pid = self.id(self.snap.policies.len(), IdSpace::Policies)?;
        let statements = std::mem::take(&mut policy.statements);
        let start = self.offset(
            self.snap.statements.len(),
            statements.len(),
            IdSpace::Statements,
        )?;
        // Every statement's id, and its position, fit: checked just above.
        // The store is consumed: statements move into the arena.
        for (i, s) in (0u32..).zip(statements) {
            let actions = match s.action.literals() {
                None => None,
                Some(literals) => {
                    let from = self.id(self.literal_actions.len(), IdSpace::ActionEntries)?;
                    for l in literals {
                        let a = self.intern(l)?;
                        self.literal_actions.push(a);
                    }
                    Some(from..self.id(self.literal_actions.len(), IdSpace::ActionEntries)?)
                }
            };
            self.statement_actions.push(actions);
            self.snap.statements.push(CompiledStatement {
                policy: pid,
                index: i,
                principal: s.principal.as_ref().map(PrincipalMatcher::compile),
                sid: s.sid,
                effect: s.effect,
                action: s.action,
                resource: s.resource,
                condition: s.condition,
                location: s.location,
            });
        }
        let end = self.id(self.snap.statements.len(), IdSpace::Statements)?;
        self.snap.policies.push(PolicyInfo {
            name: name.into(),
            policy_type,
            statements: start..end,
        });
        Ok(pid)
    }

    fn index(&mut self, policies: Vec<PolicyId>) -> Result<StatementIndex, CompileError> {
        let mut policies = policies;
        // A managed policy reached through the user and a group counts once.
        // Lists are short: a linear scan beats hashing them.
        let mut unique = 0;
        for i in 0..policies.len() {
            let p = policies[i];
            if !policies[..unique].contains(&p) {
                policies[unique] = p;
                unique += 1;
            }
        }
        policies.truncate(unique);
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.clear();
        let mut other = Vec::new();
        for &pid in &policies {
            let range = self
                .snap
                .policies
                .get(pid as usize)
                .map(|p| p.statements.clone())
                .unwrap_or_default();
            for sid in range {
                match self.statement_actions.get(sid as usize).cloned().flatten() {
                    Some(r) => {
                        let ids = self
                            .literal_actions
                            .get(r.start as usize..r.end as usize)
                            .unwrap_or_default();
                        pairs.extend(ids.iter().map(|&a| (a, sid)));
                    }
                    None => other.push(sid),
                }
            }
        }
        // Stable: within an action, statements keep policy order.
        pairs.sort_by_key(|&(a, _)| a);
        pairs.dedup();
        let mut buckets: Vec<(ActionId, u32)> = Vec::new();
        let mut bucket_items = Vec::with_capacity(pairs.len());
        self.id(pairs.len(), IdSpace::ActionEntries)?;
        for (end, &(a, sid)) in (1u32..).zip(&pairs) {
            bucket_items.push(sid);
            match buckets.last_mut() {
                Some((last, e)) if *last == a => *e = end,
                _ => buckets.push((a, end)),
            }
        }
        self.pairs = pairs;
        Ok(StatementIndex {
            buckets: buckets.into_boxed_slice(),
            bucket_items: bucket_items.into_boxed_slice(),
            other: other.into_boxed_slice(),
            policies: policies.into_boxed_slice(),
        })
    }

    fn inline(
        &mut self,
        owner_arn: &str,
        policy_type: PolicyType,
        list: &mut [NamedPolicy],
    ) -> Result<Vec<PolicyId>, CompileError> {
        list.iter_mut()
            .map(|n| {
                self.add_policy(
                    format!("{owner_arn}/inline/{}", n.name),
                    policy_type,
                    &mut n.policy,
                )
            })
            .collect()
    }
}

impl Snapshot {
    /// Compiles a validated store (copying it; see [`Snapshot::compile_owned`]).
    pub fn compile(store: &Store) -> Result<Snapshot, CompileError> {
        Self::compile_owned(store.clone())
    }

    /// Compiles a validated store, consuming it: its statements move into
    /// the snapshot rather than being copied. A store with more of anything
    /// than 32-bit ids can number is an error, never a wrong index.
    pub fn compile_owned(store: Store) -> Result<Snapshot, CompileError> {
        Self::compile_within(store, ID_LIMIT)
    }

    /// [`Snapshot::compile_owned`] with at most `limit` items of each kind.
    pub(crate) fn compile_within(mut store: Store, limit: usize) -> Result<Snapshot, CompileError> {
        let mut b = Builder::new(store.statement_count(), limit)?;
        b.snap.policies.reserve_exact(store.policy_count());
        b.snap
            .entities
            .reserve_exact(store.users.len() + store.roles.len());
        let resources = store.resource_policies.len() + store.roles.len();
        b.snap.resources.reserve_exact(resources);
        b.snap.resources_by_arn.reserve(resources);
        // Function policies stand alone (no managed policy or group reaches
        // into them): a second thread compiles them while this one does the
        // principals, and their part is appended where it would have gone.
        let resource_policies = std::mem::take(&mut store.resource_policies);
        std::thread::scope(|scope| {
            let functions =
                scope.spawn(move || Builder::resource_policies(resource_policies, limit));
            let principals = b.principals(&mut store);
            match functions.join() {
                Ok(part) => principals.and_then(|()| b.append(part?)),
                // As if compiled on this thread: the panic goes on.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;

        let mut scp_targets: FxHashMap<String, Vec<PolicyId>> = FxHashMap::default();
        for scp in &mut store.scps {
            let pid = b.add_policy(scp.name.clone(), PolicyType::Scp, &mut scp.policy)?;
            for t in &scp.targets {
                scp_targets.entry(t.clone()).or_default().push(pid);
            }
        }
        let mut targets: Vec<_> = scp_targets.into_iter().collect();
        targets.sort();
        for (account, ids) in targets {
            let index = b.index(ids)?;
            let i = b.id(b.snap.scps.len(), IdSpace::ScpTargets)?;
            b.snap.scps.push((account.as_str().into(), index));
            b.snap.scps_by_account.insert(account.into(), i);
        }

        // The snapshot lives until the next reload: give back growth slack.
        b.snap.statements.shrink_to_fit();
        b.snap.policies.shrink_to_fit();
        b.snap.entities.shrink_to_fit();
        b.snap.resources.shrink_to_fit();
        b.snap.stats = Stats {
            accounts: store.accounts.len(),
            principals: b.snap.entities.len(),
            policies: b.snap.policies.len(),
            statements: b.snap.statements.len(),
        };
        Ok(b.snap)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn action_id(&self, action_lower: &str) -> Option<ActionId> {
        self.actions.get(action_lower).copied()
    }

    pub fn user(&self, account: &str, name: &str) -> Option<&Entity> {
        let id = *self.users.get(account)?.get(name)?;
        self.entities.get(id as usize)
    }

    pub fn role(&self, account: &str, name: &str) -> Option<&Entity> {
        let id = *self.roles.get(account)?.get(name)?;
        self.entities.get(id as usize)
    }

    pub fn resource(&self, arn: &str) -> Option<&ResourceEntry> {
        let id = *self.resources_by_arn.get(arn)?;
        self.resources.get(id as usize)
    }

    pub fn scps_for(&self, account: &str) -> Option<&StatementIndex> {
        let id = *self.scps_by_account.get(account)?;
        self.scps.get(id as usize).map(|(_, idx)| idx)
    }

    pub fn statement(&self, id: StmtId) -> Option<&CompiledStatement> {
        self.statements.get(id as usize)
    }

    pub fn policy(&self, id: PolicyId) -> Option<&PolicyInfo> {
        self.policies.get(id as usize)
    }

    /// Every user and role, in compile order (for tests that find them by scanning).
    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// Every resource and role trust policy, in compile order.
    pub fn resources(&self) -> &[ResourceEntry] {
        &self.resources
    }

    /// Every account with SCPs, and their index.
    pub fn scp_accounts(&self) -> impl Iterator<Item = (&str, &StatementIndex)> {
        self.scps.iter().map(|(a, i)| (&**a, i))
    }
}

impl Builder {
    /// Managed policies, groups, users and roles: everything identity-based
    /// and the role trust policies.
    fn principals(&mut self, store: &mut Store) -> Result<(), CompileError> {
        let mut managed: FxHashMap<&str, PolicyId> = FxHashMap::default();
        for m in &mut store.managed {
            let id = self.add_policy(m.arn.clone(), PolicyType::Managed, &mut m.policy)?;
            managed.insert(m.arn.as_str(), id);
        }
        let attached = |arns: &[String]| -> Vec<PolicyId> {
            arns.iter()
                .filter_map(|a| managed.get(a.as_str()).copied())
                .collect()
        };
        // A boundary is a managed policy evaluated in its own slot.
        let mut boundaries: FxHashMap<PolicyId, StatementIndex> = FxHashMap::default();
        let mut boundary_index = |b: &mut Builder,
                                  arn: &Option<String>|
         -> Result<Option<StatementIndex>, CompileError> {
            let Some(pid) = arn.as_deref().and_then(|a| managed.get(a)).copied() else {
                return Ok(None);
            };
            let index = match boundaries.entry(pid) {
                Entry::Occupied(e) => e.get().clone(),
                Entry::Vacant(e) => e.insert(b.index(vec![pid])?).clone(),
            };
            Ok(Some(index))
        };

        // Account, then group name: looked up by borrowed names, per user group.
        let mut group_policies: FxHashMap<&str, FxHashMap<&str, Vec<PolicyId>>> =
            FxHashMap::default();
        for g in &mut store.groups {
            let mut ids = self.inline(&g.arn, PolicyType::Group, &mut g.inline)?;
            ids.extend(attached(&g.attached));
            group_policies
                .entry(g.account.as_str())
                .or_default()
                .insert(g.name.as_str(), ids);
        }

        for u in &mut store.users {
            let mut ids = self.inline(&u.arn, PolicyType::User, &mut u.inline)?;
            ids.extend(attached(&u.attached));
            for g in &u.groups {
                if let Some(gp) = group_policies
                    .get(u.account.as_str())
                    .and_then(|a| a.get(g.as_str()))
                {
                    ids.extend(gp);
                }
            }
            let permissions = self.index(ids)?;
            let boundary = boundary_index(self, &u.boundary)?;
            // The entity takes the user's strings rather than copies.
            self.add_entity(Entity {
                kind: EntityKind::User,
                arn: std::mem::take(&mut u.arn).into_boxed_str(),
                account: std::mem::take(&mut u.account).into_boxed_str(),
                name: std::mem::take(&mut u.name).into_boxed_str(),
                id: u.id.take().map(String::into_boxed_str),
                tags: tags(std::mem::take(&mut u.tags)),
                permissions,
                boundary,
            })?;
        }

        for r in &mut store.roles {
            let mut ids = self.inline(&r.arn, PolicyType::Role, &mut r.inline)?;
            ids.extend(attached(&r.attached));
            let permissions = self.index(ids)?;
            let boundary = boundary_index(self, &r.boundary)?;
            if let Some(trust) = &mut r.trust {
                let pid = self.add_policy(r.arn.clone(), PolicyType::RoleTrust, trust)?;
                let index = self.index(vec![pid])?;
                self.add_resource(&r.arn, index, ResourcePolicyKind::RoleTrust)?;
            }
            self.add_entity(Entity {
                kind: EntityKind::Role,
                arn: std::mem::take(&mut r.arn).into_boxed_str(),
                account: std::mem::take(&mut r.account).into_boxed_str(),
                name: std::mem::take(&mut r.name).into_boxed_str(),
                id: r.id.take().map(String::into_boxed_str),
                tags: tags(std::mem::take(&mut r.tags)),
                permissions,
                boundary,
            })?;
        }
        Ok(())
    }

    /// A builder of the function (resource-based) policies alone.
    fn resource_policies(
        policies: Vec<ResourcePolicy>,
        limit: usize,
    ) -> Result<Builder, CompileError> {
        let statements = policies.iter().map(|p| p.policy.statements.len()).sum();
        let mut b = Builder::new(statements, limit)?;
        b.snap.policies.reserve_exact(policies.len());
        b.snap.resources.reserve_exact(policies.len());
        b.snap.resources_by_arn.reserve(policies.len());
        for mut rp in policies {
            let pid = b.add_policy(
                rp.resource_arn.clone(),
                PolicyType::Resource,
                &mut rp.policy,
            )?;
            let index = b.index(vec![pid])?;
            b.add_resource(&rp.resource_arn, index, ResourcePolicyKind::Function)?;
        }
        Ok(b)
    }

    /// Adds a user or role, found by account and name.
    fn add_entity(&mut self, entity: Entity) -> Result<(), CompileError> {
        let eid = self.id(self.snap.entities.len(), IdSpace::Principals)?;
        let by_account = match entity.kind {
            EntityKind::User => &mut self.snap.users,
            EntityKind::Role => &mut self.snap.roles,
        };
        by_account
            .entry(entity.account.clone())
            .or_default()
            .insert(entity.name.clone(), eid);
        self.snap.entities.push(entity);
        Ok(())
    }

    fn add_resource(
        &mut self,
        arn: &str,
        index: StatementIndex,
        kind: ResourcePolicyKind,
    ) -> Result<(), CompileError> {
        let id = self.id(self.snap.resources.len(), IdSpace::Resources)?;
        self.snap.resources.push(ResourceEntry {
            arn: arn.into(),
            index,
            kind,
        });
        self.snap.resources_by_arn.insert(arn.into(), id);
        Ok(())
    }
}

fn tags(t: Vec<(String, String)>) -> Box<[(Box<str>, Box<str>)]> {
    t.into_iter()
        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
        .collect()
}
