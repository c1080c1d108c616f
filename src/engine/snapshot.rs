//! The compiled, immutable policy index that decisions read.
//!
//! Built once from a validated [`Store`]: every statement lives once in an
//! arena; actions are interned; each user and role gets a [`StatementIndex`]
//! of its identity policies (own inline, attached managed, and its groups'),
//! grouped by the literal actions they name so a decision visits only
//! statements that can match; resource policies and role trust policies are
//! keyed by their exact resource ARN; SCPs are grouped per target account.

use rustc_hash::FxHashMap;

use super::principal::PrincipalMatcher;
use crate::catalog;
use crate::finding::Location;
use crate::policy::{ActionElement, Condition, Effect, Policy, ResourceElement};
use crate::store::{NamedPolicy, Store};

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

impl PolicyType {
    pub fn as_str(self) -> &'static str {
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
    pub location: Option<Location>,
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
    pub location: Location,
}

/// Statements of a set of policies, grouped by the literal actions they name.
#[derive(Debug, Clone, Default)]
pub struct StatementIndex {
    /// Statements whose `Action` lists only literal actions, under each of them.
    by_action: FxHashMap<ActionId, Box<[StmtId]>>,
    /// Statements with wildcard actions or `NotAction`: always candidates.
    other: Box<[StmtId]>,
    /// The policies indexed, for exhaustive evaluation and explanations.
    pub(crate) policies: Box<[PolicyId]>,
}

impl StatementIndex {
    /// Statements that may match `action`: `(known to match the action, id)`.
    pub fn candidates(
        &self,
        action: Option<ActionId>,
    ) -> impl Iterator<Item = (bool, StmtId)> + '_ {
        let exact = action
            .and_then(|a| self.by_action.get(&a))
            .map(|b| b.as_ref())
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

/// A resource-based policy (or trust policy) keyed by its resource ARN.
#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub arn: Box<str>,
    pub index: StatementIndex,
    /// Role trust policies must allow even within one account.
    pub requires_allow: bool,
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

struct Builder {
    snap: Snapshot,
}

impl Builder {
    fn intern(&mut self, action_lower: &str) -> ActionId {
        if let Some(&id) = self.snap.actions.get(action_lower) {
            return id;
        }
        let id = u32::try_from(self.snap.actions.len()).unwrap_or(u32::MAX);
        self.snap.actions.insert(action_lower.into(), id);
        id
    }

    fn add_policy(
        &mut self,
        name: String,
        policy_type: PolicyType,
        policy: &Policy,
        location: Option<Location>,
    ) -> PolicyId {
        let pid = u32::try_from(self.snap.policies.len()).unwrap_or(u32::MAX);
        let start = u32::try_from(self.snap.statements.len()).unwrap_or(u32::MAX);
        for (i, s) in policy.statements.iter().enumerate() {
            self.snap.statements.push(CompiledStatement {
                policy: pid,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                sid: s.sid.clone(),
                effect: s.effect,
                action: s.action.clone(),
                resource: s.resource.clone(),
                principal: s.principal.as_ref().map(PrincipalMatcher::compile),
                condition: s.condition.clone(),
                location: s.location.clone(),
            });
        }
        let end = u32::try_from(self.snap.statements.len()).unwrap_or(u32::MAX);
        self.snap.policies.push(PolicyInfo {
            name: name.into(),
            policy_type,
            statements: start..end,
            location,
        });
        pid
    }

    fn index(&mut self, policies: Vec<PolicyId>) -> StatementIndex {
        let mut policies = policies;
        // A managed policy reached through the user and a group counts once.
        let mut seen = rustc_hash::FxHashSet::default();
        policies.retain(|p| seen.insert(*p));
        let mut by_action: FxHashMap<ActionId, Vec<StmtId>> = FxHashMap::default();
        let mut other = Vec::new();
        for &pid in &policies {
            let range = self
                .snap
                .policies
                .get(pid as usize)
                .map(|p| p.statements.clone())
                .unwrap_or_default();
            for sid in range {
                let literals: Option<Vec<String>> = self
                    .snap
                    .statements
                    .get(sid as usize)
                    .and_then(|s| s.action.literals().map(|l| l.map(str::to_owned).collect()));
                match literals {
                    Some(lits) => {
                        for l in lits {
                            let a = self.intern(&l);
                            by_action.entry(a).or_default().push(sid);
                        }
                    }
                    None => other.push(sid),
                }
            }
        }
        StatementIndex {
            by_action: by_action
                .into_iter()
                .map(|(a, mut v)| {
                    v.dedup();
                    (a, v.into_boxed_slice())
                })
                .collect(),
            other: other.into_boxed_slice(),
            policies: policies.into_boxed_slice(),
        }
    }

    fn inline(
        &mut self,
        owner_arn: &str,
        policy_type: PolicyType,
        list: &[NamedPolicy],
        location: &Location,
    ) -> Vec<PolicyId> {
        list.iter()
            .map(|n| {
                self.add_policy(
                    format!("{owner_arn}/inline/{}", n.name),
                    policy_type,
                    &n.policy,
                    Some(location.clone()),
                )
            })
            .collect()
    }
}

impl Snapshot {
    /// Compiles a validated store.
    pub fn compile(store: &Store) -> Snapshot {
        let mut b = Builder {
            snap: Snapshot::default(),
        };
        for a in catalog::lambda_actions() {
            b.intern(&a.name.to_lowercase());
        }
        for a in catalog::OTHER_ACTIONS {
            b.intern(&a.to_lowercase());
        }

        let mut managed: FxHashMap<&str, PolicyId> = FxHashMap::default();
        for m in &store.managed {
            let id = b.add_policy(
                m.arn.clone(),
                PolicyType::Managed,
                &m.policy,
                Some(m.location.clone()),
            );
            managed.insert(&m.arn, id);
        }
        let attached = |arns: &[String]| -> Vec<PolicyId> {
            arns.iter()
                .filter_map(|a| managed.get(a.as_str()).copied())
                .collect()
        };
        // A boundary is a managed policy evaluated in its own slot.
        let mut boundaries: FxHashMap<PolicyId, StatementIndex> = FxHashMap::default();
        let mut boundary_index =
            |b: &mut Builder, arn: &Option<String>| -> Option<StatementIndex> {
                let pid = managed.get(arn.as_deref()?).copied()?;
                Some(
                    boundaries
                        .entry(pid)
                        .or_insert_with(|| b.index(vec![pid]))
                        .clone(),
                )
            };

        let mut group_policies: FxHashMap<(&str, &str), Vec<PolicyId>> = FxHashMap::default();
        for g in &store.groups {
            let mut ids = b.inline(&g.arn, PolicyType::Group, &g.inline, &g.location);
            ids.extend(attached(&g.attached));
            group_policies.insert((&g.account, &g.name), ids);
        }

        for u in &store.users {
            let mut ids = b.inline(&u.arn, PolicyType::User, &u.inline, &u.location);
            ids.extend(attached(&u.attached));
            for g in &u.groups {
                if let Some(gp) = group_policies.get(&(u.account.as_str(), g.as_str())) {
                    ids.extend(gp);
                }
            }
            let permissions = b.index(ids);
            let boundary = boundary_index(&mut b, &u.boundary);
            let eid = u32::try_from(b.snap.entities.len()).unwrap_or(u32::MAX);
            b.snap.entities.push(Entity {
                kind: EntityKind::User,
                arn: u.arn.as_str().into(),
                account: u.account.as_str().into(),
                name: u.name.as_str().into(),
                id: u.id.as_deref().map(Into::into),
                tags: tags(&u.tags),
                permissions,
                boundary,
            });
            b.snap
                .users
                .entry(u.account.as_str().into())
                .or_default()
                .insert(u.name.as_str().into(), eid);
        }

        for r in &store.roles {
            let mut ids = b.inline(&r.arn, PolicyType::Role, &r.inline, &r.location);
            ids.extend(attached(&r.attached));
            let permissions = b.index(ids);
            let boundary = boundary_index(&mut b, &r.boundary);
            let eid = u32::try_from(b.snap.entities.len()).unwrap_or(u32::MAX);
            b.snap.entities.push(Entity {
                kind: EntityKind::Role,
                arn: r.arn.as_str().into(),
                account: r.account.as_str().into(),
                name: r.name.as_str().into(),
                id: r.id.as_deref().map(Into::into),
                tags: tags(&r.tags),
                permissions,
                boundary,
            });
            b.snap
                .roles
                .entry(r.account.as_str().into())
                .or_default()
                .insert(r.name.as_str().into(), eid);
            if let Some(trust) = &r.trust {
                let pid = b.add_policy(
                    r.arn.clone(),
                    PolicyType::RoleTrust,
                    trust,
                    Some(r.location.clone()),
                );
                let index = b.index(vec![pid]);
                b.add_resource(&r.arn, index, true);
            }
        }

        for rp in &store.resource_policies {
            let pid = b.add_policy(
                rp.resource_arn.clone(),
                PolicyType::Resource,
                &rp.policy,
                Some(rp.location.clone()),
            );
            let index = b.index(vec![pid]);
            b.add_resource(&rp.resource_arn, index, false);
        }

        let mut scp_targets: FxHashMap<&str, Vec<PolicyId>> = FxHashMap::default();
        for scp in &store.scps {
            let pid = b.add_policy(
                scp.name.clone(),
                PolicyType::Scp,
                &scp.policy,
                Some(scp.location.clone()),
            );
            for t in &scp.targets {
                scp_targets.entry(t).or_default().push(pid);
            }
        }
        let mut targets: Vec<_> = scp_targets.into_iter().collect();
        targets.sort();
        for (account, ids) in targets {
            let index = b.index(ids);
            let i = u32::try_from(b.snap.scps.len()).unwrap_or(u32::MAX);
            b.snap.scps.push((account.into(), index));
            b.snap.scps_by_account.insert(account.into(), i);
        }

        b.snap.stats = Stats {
            accounts: store.accounts.len(),
            principals: b.snap.entities.len(),
            policies: b.snap.policies.len(),
            statements: b.snap.statements.len(),
        };
        b.snap
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
}

impl Builder {
    fn add_resource(&mut self, arn: &str, index: StatementIndex, requires_allow: bool) {
        let id = u32::try_from(self.snap.resources.len()).unwrap_or(u32::MAX);
        self.snap.resources.push(ResourceEntry {
            arn: arn.into(),
            index,
            requires_allow,
        });
        self.snap.resources_by_arn.insert(arn.into(), id);
    }
}

fn tags(t: &[(String, String)]) -> Box<[(Box<str>, Box<str>)]> {
    t.iter()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect()
}
