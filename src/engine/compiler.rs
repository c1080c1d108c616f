//! Building snapshots: from a whole store, or from the last snapshot and a
//! change.
//!
//! The [`Compiler`] keeps what a change needs beyond the snapshot itself:
//! the compiled managed and group policies, and who uses each of them (the
//! users, roles and groups that attach a managed policy, the members of a
//! group). A change replaces or removes users, groups, roles, managed
//! policies, resource policies or SCPs; [`Compiler::snapshot`] then rebuilds
//! the indexes of exactly the principals the change reaches (a changed
//! managed policy: the principals that attach it, directly, as a boundary or
//! through a group) and shares everything else with the previous snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::principal::PrincipalMatcher;
use super::snapshot::{
    ActionId, CompiledPolicy, CompiledStatement, Entity, EntityKind, Links, NameKey, NameRef,
    PolicyType, ResourceEntry, ResourcePolicyKind, SharedMap, Snapshot, StatementAt,
    StatementIndex, Stats,
};
use crate::catalog;
use crate::model::{
    Group, ManagedPolicy, NamedPolicy, ResourcePolicy, Role, ServiceControlPolicy, Store, User,
};
use crate::policy::Policy;

/// A kind of thing a snapshot numbers with 32-bit ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSpace {
    /// Statements of one policy.
    Statements,
    /// Policies of one index.
    Policies,
    Actions,
    /// Literal actions of statements, and statements under them in one index.
    ActionEntries,
}

impl IdSpace {
    fn name(self) -> &'static str {
        match self {
            IdSpace::Statements => "statements in one policy",
            IdSpace::Policies => "policies for one principal",
            IdSpace::Actions => "distinct actions",
            IdSpace::ActionEntries => "literal actions in one principal's statements",
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

/// A principal or group whose indexes depend on something that changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Dependent {
    User(NameKey),
    Role(NameKey),
    Group(NameKey),
}

#[derive(Debug)]
struct Managed {
    policy: Arc<CompiledPolicy>,
    /// Its index as a permissions boundary, built when first needed.
    boundary: Option<Arc<StatementIndex>>,
}

/// An SCP and the accounts it targets.
type Scp = (Arc<CompiledPolicy>, Box<[Box<str>]>);

#[derive(Debug)]
struct GroupPolicies {
    inline: Box<[Arc<CompiledPolicy>]>,
    attached: Box<[Arc<str>]>,
}

/// Builds snapshots, whole or change by change. Not shared: the reload
/// task owns it, and the snapshots it hands out are immutable.
///
/// After any method fails the compiler is spent: every later
/// [`Compiler::snapshot`] fails with the same error, and the caller builds a
/// new one from the whole store.
#[derive(Debug)]
pub struct Compiler {
    limit: usize,
    failed: Option<CompileError>,
    actions: Arc<FxHashMap<Box<str>, ActionId>>,
    /// One `Arc` per distinct account id, name and managed policy ARN.
    strings: FxHashSet<Arc<str>>,
    managed: FxHashMap<Arc<str>, Managed>,
    groups: FxHashMap<NameKey, GroupPolicies>,
    users: SharedMap<NameKey, Arc<Entity>>,
    roles: SharedMap<NameKey, Arc<Entity>>,
    resources: SharedMap<Arc<str>, Arc<ResourceEntry>>,
    /// SCPs by the document that holds them, in document order.
    scp_sources: BTreeMap<String, Vec<Scp>>,
    scps: Arc<FxHashMap<Box<str>, Arc<StatementIndex>>>,
    /// Managed policy ARN → who attaches it (as permissions or boundary).
    attachers: FxHashMap<Arc<str>, FxHashSet<Dependent>>,
    /// (account, group) → the names of the users in it.
    members: FxHashMap<NameKey, FxHashSet<Arc<str>>>,
    dirty: FxHashSet<Dependent>,
    scps_dirty: bool,
    accounts: usize,
    policies: usize,
    statements: usize,
    /// Scratch for [`Compiler::index`], reused across every index built.
    pairs: Vec<(ActionId, StatementAt)>,
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler::within(ID_LIMIT)
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
    pub(crate) fn compile_within(store: Store, limit: usize) -> Result<Snapshot, CompileError> {
        let mut c = Compiler::within(limit);
        c.add_store(store);
        c.snapshot()
    }
}

impl Compiler {
    /// An empty compiler: its snapshot holds nothing.
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// A compiler with at most `limit` items of each [`IdSpace`].
    pub(crate) fn within(limit: usize) -> Compiler {
        let mut c = Compiler {
            limit,
            failed: None,
            actions: Arc::default(),
            strings: FxHashSet::default(),
            managed: FxHashMap::default(),
            groups: FxHashMap::default(),
            users: SharedMap::default(),
            roles: SharedMap::default(),
            resources: SharedMap::default(),
            scp_sources: BTreeMap::new(),
            scps: Arc::default(),
            attachers: FxHashMap::default(),
            members: FxHashMap::default(),
            dirty: FxHashSet::default(),
            scps_dirty: false,
            accounts: 0,
            policies: 0,
            statements: 0,
            pairs: Vec::new(),
        };
        // The catalog's actions first, so every snapshot numbers them alike.
        let known = catalog::lambda_actions()
            .iter()
            .map(|a| a.name.to_lowercase())
            .chain(catalog::OTHER_ACTIONS.iter().map(|a| a.to_lowercase()));
        for a in known {
            if let Err(e) = c.intern(&a) {
                c.failed = Some(e);
            }
        }
        c
    }

    /// Adds everything a whole store holds, and counts its accounts.
    pub fn add_store(&mut self, store: Store) {
        self.set_accounts(store.accounts.len());
        self.add_document(store);
    }

    /// Adds what one or more documents hold (their SCPs under the file that
    /// holds them); the account count stays the caller's
    /// ([`Compiler::set_accounts`]).
    pub fn add_document(&mut self, store: Store) {
        let Store {
            accounts: _,
            users,
            groups,
            roles,
            managed,
            resource_policies,
            scps,
            files: _,
        } = store;
        for m in managed {
            self.upsert_managed(m);
        }
        for g in groups {
            self.upsert_group(g);
        }
        for u in users {
            self.upsert_user(u);
        }
        for r in roles {
            self.upsert_role(r);
        }
        for rp in resource_policies {
            self.upsert_resource_policy(rp);
        }
        let mut sources: BTreeMap<Arc<str>, Vec<ServiceControlPolicy>> = BTreeMap::new();
        for scp in scps {
            sources
                .entry(scp.location.file.clone())
                .or_default()
                .push(scp);
        }
        for (source, scps) in sources {
            self.set_scps(&source, scps);
        }
    }

    /// How many accounts the store knows, for [`Stats`].
    pub fn set_accounts(&mut self, accounts: usize) {
        self.accounts = accounts;
    }

    /// Adds or replaces a managed policy; whoever attaches it is rebuilt.
    pub fn upsert_managed(&mut self, m: ManagedPolicy) {
        let arn = self.shared(&m.arn);
        let Some(policy) = self.compile_policy(m.arn, PolicyType::Managed, m.policy) else {
            return;
        };
        if let Some(old) = self.managed.insert(
            arn.clone(),
            Managed {
                policy,
                boundary: None,
            },
        ) {
            self.uncount(&old.policy);
        }
        self.touch_attachers(&arn);
    }

    /// Removes a managed policy; whoever attached it is rebuilt without it
    /// (a boundary that is gone allows nothing).
    pub fn remove_managed(&mut self, arn: &str) {
        if let Some((arn, old)) = self.managed.remove_entry(arn) {
            self.uncount(&old.policy);
            self.touch_attachers(&arn);
        }
    }

    /// Adds or replaces a group; its members are rebuilt.
    pub fn upsert_group(&mut self, g: Group) {
        let key = self.name_key(&g.account, &g.name);
        let Some(inline) = self.inline(&g.arn, PolicyType::Group, g.inline) else {
            return;
        };
        let attached: Box<[Arc<str>]> = g.attached.iter().map(|a| self.shared(a)).collect();
        self.remove_group_entry(&key);
        let dependent = Dependent::Group(key.clone());
        for a in attached.iter() {
            self.link(a, &dependent);
        }
        inline.iter().for_each(|p| self.count(p));
        self.groups.insert(key, GroupPolicies { inline, attached });
        self.dirty.insert(dependent);
    }

    /// Removes a group; its members are rebuilt without it.
    pub fn remove_group(&mut self, account: &str, name: &str) {
        let key = self.name_key(account, name);
        if self.remove_group_entry(&key) {
            self.dirty.insert(Dependent::Group(key));
        }
    }

    fn remove_group_entry(&mut self, key: &NameKey) -> bool {
        let Some(old) = self.groups.remove(key) else {
            return false;
        };
        old.inline.iter().for_each(|p| self.uncount(p));
        let dependent = Dependent::Group(key.clone());
        for a in old.attached.iter() {
            self.unlink(a, &dependent);
        }
        true
    }

    /// Adds or replaces a user.
    pub fn upsert_user(&mut self, u: User) {
        let key = self.name_key(&u.account, &u.name);
        let Some(inline) = self.inline(&u.arn, PolicyType::User, u.inline) else {
            return;
        };
        let links = Links {
            inline,
            attached: u.attached.iter().map(|a| self.shared(a)).collect(),
            groups: u.groups.iter().map(|g| self.shared(g)).collect(),
            boundary: u.boundary.as_deref().map(|b| self.shared(b)),
        };
        self.remove_user(&u.account, &u.name);
        let dependent = Dependent::User(key.clone());
        self.link_entity(&links, &dependent);
        for g in links.groups.iter() {
            self.members
                .entry((key.0.clone(), g.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        let entity = unbuilt(EntityKind::User, &key, u.arn, u.id, u.tags, links);
        self.users.insert(key, Arc::new(entity));
        self.dirty.insert(dependent);
    }

    /// Removes a user.
    pub fn remove_user(&mut self, account: &str, name: &str) {
        let Some(old) = self.users.remove(&NameRef(account, name)) else {
            return;
        };
        let key: NameKey = (old.account.clone(), old.name.clone());
        let dependent = Dependent::User(key.clone());
        self.unlink_entity(&old.links, &dependent);
        for g in old.links.groups.iter() {
            let group = (key.0.clone(), g.clone());
            if let Some(m) = self.members.get_mut(&group) {
                m.remove(&key.1);
                if m.is_empty() {
                    self.members.remove(&group);
                }
            }
        }
        self.dirty.remove(&dependent);
    }

    /// Adds or replaces a role, with its trust policy.
    pub fn upsert_role(&mut self, r: Role) {
        let key = self.name_key(&r.account, &r.name);
        let Some(inline) = self.inline(&r.arn, PolicyType::Role, r.inline) else {
            return;
        };
        let trust = match r.trust {
            Some(trust) => {
                let Some(policy) = self.compile_policy(r.arn.clone(), PolicyType::RoleTrust, trust)
                else {
                    return;
                };
                let Some(index) = self.index(vec![policy]) else {
                    return;
                };
                Some(index)
            }
            None => None,
        };
        let links = Links {
            inline,
            attached: r.attached.iter().map(|a| self.shared(a)).collect(),
            groups: Box::default(),
            boundary: r.boundary.as_deref().map(|b| self.shared(b)),
        };
        self.remove_role(&r.account, &r.name);
        let dependent = Dependent::Role(key.clone());
        self.link_entity(&links, &dependent);
        if let Some(index) = trust {
            let arn: Arc<str> = r.arn.as_str().into();
            self.resources.insert(
                arn.clone(),
                Arc::new(ResourceEntry {
                    arn,
                    index,
                    kind: ResourcePolicyKind::RoleTrust,
                }),
            );
        }
        let entity = unbuilt(EntityKind::Role, &key, r.arn, r.id, r.tags, links);
        self.roles.insert(key, Arc::new(entity));
        self.dirty.insert(dependent);
    }

    /// Removes a role and its trust policy.
    pub fn remove_role(&mut self, account: &str, name: &str) {
        let Some(old) = self.roles.remove(&NameRef(account, name)) else {
            return;
        };
        let dependent = Dependent::Role((old.account.clone(), old.name.clone()));
        self.unlink_entity(&old.links, &dependent);
        let trust = self
            .resources
            .get(&*old.arn)
            .is_some_and(|e| e.kind == ResourcePolicyKind::RoleTrust);
        if trust {
            if let Some(entry) = self.resources.remove(&*old.arn) {
                entry.index.policies.iter().for_each(|p| self.uncount(p));
            }
        }
        self.dirty.remove(&dependent);
    }

    /// Adds or replaces a function's resource-based policy.
    pub fn upsert_resource_policy(&mut self, rp: ResourcePolicy) {
        let arn: Arc<str> = rp.resource_arn.as_str().into();
        let Some(policy) = self.compile_policy(rp.resource_arn, PolicyType::Resource, rp.policy)
        else {
            return;
        };
        let Some(index) = self.index(vec![policy]) else {
            return;
        };
        let entry = ResourceEntry {
            arn: arn.clone(),
            index,
            kind: ResourcePolicyKind::Function,
        };
        if let Some(old) = self.resources.insert(arn, Arc::new(entry)) {
            old.index.policies.iter().for_each(|p| self.uncount(p));
        }
    }

    /// Removes a function's resource-based policy.
    pub fn remove_resource_policy(&mut self, arn: &str) {
        let function = self
            .resources
            .get(arn)
            .is_some_and(|e| e.kind == ResourcePolicyKind::Function);
        if function {
            if let Some(old) = self.resources.remove(arn) {
                old.index.policies.iter().for_each(|p| self.uncount(p));
            }
        }
    }

    /// Replaces the SCPs that `source` (a store document) holds; an empty
    /// list removes them.
    pub fn set_scps(&mut self, source: &str, scps: Vec<ServiceControlPolicy>) {
        let mut compiled = Vec::with_capacity(scps.len());
        for scp in scps {
            let Some(policy) = self.compile_policy(scp.name, PolicyType::Scp, scp.policy) else {
                return;
            };
            let targets = scp
                .targets
                .into_iter()
                .map(String::into_boxed_str)
                .collect();
            compiled.push((policy, targets));
        }
        let adds = !compiled.is_empty();
        let old = if adds {
            self.scp_sources.insert(source.to_owned(), compiled)
        } else {
            self.scp_sources.remove(source)
        };
        for (p, _) in old.iter().flatten() {
            self.uncount(p);
        }
        // A document that held no SCPs and holds none leaves them as they are.
        self.scps_dirty |= adds || old.is_some();
    }

    /// The snapshot of everything added so far: the principals a change
    /// reached get new indexes, everything else is shared with the last
    /// snapshot.
    pub fn snapshot(&mut self) -> Result<Snapshot, CompileError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut users: FxHashSet<NameKey> = FxHashSet::default();
        let mut roles: Vec<NameKey> = Vec::new();
        for d in std::mem::take(&mut self.dirty) {
            match d {
                Dependent::User(k) => {
                    users.insert(k);
                }
                Dependent::Role(k) => roles.push(k),
                Dependent::Group(g) => {
                    for name in self.members.get(&g).into_iter().flatten() {
                        users.insert((g.0.clone(), name.clone()));
                    }
                }
            }
        }
        for key in users {
            self.rebuild(EntityKind::User, &key);
        }
        for key in roles {
            self.rebuild(EntityKind::Role, &key);
        }
        if std::mem::take(&mut self.scps_dirty) {
            self.rebuild_scps();
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        Ok(Snapshot {
            actions: self.actions.clone(),
            users: self.users.clone(),
            roles: self.roles.clone(),
            resources: self.resources.clone(),
            scps: self.scps.clone(),
            stats: Stats {
                accounts: self.accounts,
                principals: self.users.len() + self.roles.len(),
                policies: self.policies,
                statements: self.statements,
            },
        })
    }

    /// Builds the indexes of one user or role again from its links.
    fn rebuild(&mut self, kind: EntityKind, key: &NameKey) {
        let map = match kind {
            EntityKind::User => &self.users,
            EntityKind::Role => &self.roles,
        };
        let Some(links) = map.get(key).map(|e| e.links.clone()) else {
            return; // removed since
        };
        let mut policies: Vec<Arc<CompiledPolicy>> = links.inline.to_vec();
        let managed = |arn: &Arc<str>| self.managed.get(arn).map(|m| m.policy.clone());
        policies.extend(links.attached.iter().filter_map(managed));
        for g in links.groups.iter() {
            if let Some(group) = self.groups.get(&(key.0.clone(), g.clone())) {
                policies.extend(group.inline.iter().cloned());
                policies.extend(group.attached.iter().filter_map(managed));
            }
        }
        let Some(permissions) = self.index(policies) else {
            return;
        };
        let boundary = match &links.boundary {
            None => None,
            Some(arn) => match self.boundary_index(arn) {
                Some(index) => Some(index),
                None => return,
            },
        };
        let map = match kind {
            EntityKind::User => &mut self.users,
            EntityKind::Role => &mut self.roles,
        };
        if let Some(slot) = map.get_mut(key) {
            match Arc::get_mut(slot) {
                // Not in any snapshot yet: fill it in place.
                Some(e) => {
                    e.permissions = permissions;
                    e.boundary = boundary;
                }
                None => {
                    let old = &**slot;
                    *slot = Arc::new(Entity {
                        kind: old.kind,
                        arn: old.arn.clone(),
                        account: old.account.clone(),
                        name: old.name.clone(),
                        id: old.id.clone(),
                        tags: old.tags.clone(),
                        permissions,
                        boundary,
                        links,
                    });
                }
            }
        }
    }

    /// A managed policy's index as a boundary, shared by every principal it
    /// bounds. A boundary the store does not define allows nothing.
    fn boundary_index(&mut self, arn: &Arc<str>) -> Option<Arc<StatementIndex>> {
        let Some(m) = self.managed.get(arn) else {
            return Some(Arc::default());
        };
        if let Some(index) = &m.boundary {
            return Some(index.clone());
        }
        let policy = m.policy.clone();
        let index = Arc::new(self.index(vec![policy])?);
        if let Some(m) = self.managed.get_mut(arn) {
            m.boundary = Some(index.clone());
        }
        Some(index)
    }

    fn rebuild_scps(&mut self) {
        let mut targets: BTreeMap<&str, Vec<Arc<CompiledPolicy>>> = BTreeMap::new();
        for (policy, accounts) in self.scp_sources.values().flatten() {
            for a in accounts.iter() {
                targets.entry(a).or_default().push(policy.clone());
            }
        }
        let targets: Vec<(Box<str>, Vec<Arc<CompiledPolicy>>)> =
            targets.into_iter().map(|(a, p)| (a.into(), p)).collect();
        let mut scps = FxHashMap::default();
        for (account, policies) in targets {
            let Some(index) = self.index(policies) else {
                return;
            };
            scps.insert(account, Arc::new(index));
        }
        self.scps = Arc::new(scps);
    }

    /// Records that `dependent` attaches managed policy `arn`.
    fn link(&mut self, arn: &Arc<str>, dependent: &Dependent) {
        self.attachers
            .entry(arn.clone())
            .or_default()
            .insert(dependent.clone());
    }

    fn unlink(&mut self, arn: &str, dependent: &Dependent) {
        if let Some(set) = self.attachers.get_mut(arn) {
            set.remove(dependent);
            if set.is_empty() {
                self.attachers.remove(arn);
            }
        }
    }

    fn link_entity(&mut self, links: &Links, dependent: &Dependent) {
        links.inline.iter().for_each(|p| self.count(p));
        for a in links.attached.iter().chain(links.boundary.iter()) {
            self.link(a, dependent);
        }
    }

    fn unlink_entity(&mut self, links: &Links, dependent: &Dependent) {
        links.inline.iter().for_each(|p| self.uncount(p));
        for a in links.attached.iter().chain(links.boundary.iter()) {
            self.unlink(a, dependent);
        }
    }

    fn touch_attachers(&mut self, arn: &str) {
        if let Some(set) = self.attachers.get(arn) {
            self.dirty.extend(set.iter().cloned());
        }
    }

    /// The one shared copy of a string (account id, name, managed policy ARN).
    fn shared(&mut self, s: &str) -> Arc<str> {
        if let Some(s) = self.strings.get(s) {
            return s.clone();
        }
        let s: Arc<str> = s.into();
        self.strings.insert(s.clone());
        s
    }

    fn name_key(&mut self, account: &str, name: &str) -> NameKey {
        (self.shared(account), self.shared(name))
    }

    fn count(&mut self, p: &CompiledPolicy) {
        self.policies += 1;
        self.statements += p.statements.len();
    }

    fn uncount(&mut self, p: &CompiledPolicy) {
        self.policies = self.policies.saturating_sub(1);
        self.statements = self.statements.saturating_sub(p.statements.len());
    }

    /// Records the first failure; `None` after any.
    fn fail<T>(&mut self, r: Result<T, CompileError>) -> Option<T> {
        match r {
            Ok(v) if self.failed.is_none() => Some(v),
            Ok(_) => None,
            Err(e) => {
                self.failed.get_or_insert(e);
                None
            }
        }
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

    fn intern(&mut self, action_lower: &str) -> Result<ActionId, CompileError> {
        if let Some(&id) = self.actions.get(action_lower) {
            return Ok(id);
        }
        // The id is the count before this one: the count after must fit.
        self.id(self.actions.len() + 1, IdSpace::Actions)?;
        let id = self.id(self.actions.len(), IdSpace::Actions)?;
        // Copies the table only when a snapshot still shares it.
        Arc::make_mut(&mut self.actions).insert(action_lower.into(), id);
        Ok(id)
    }

    /// Compiles inline policies, counted. `None` once compiling failed.
    fn inline(
        &mut self,
        owner_arn: &str,
        policy_type: PolicyType,
        list: Vec<NamedPolicy>,
    ) -> Option<Box<[Arc<CompiledPolicy>]>> {
        list.into_iter()
            .map(|n| {
                self.compile_policy(
                    format!("{owner_arn}/inline/{}", n.name),
                    policy_type,
                    n.policy,
                )
            })
            .collect()
    }

    /// Compiles one policy document (counted into the stats; whoever drops
    /// it uncounts it). `None` once compiling failed.
    fn compile_policy(
        &mut self,
        name: String,
        policy_type: PolicyType,
        policy: Policy,
    ) -> Option<Arc<CompiledPolicy>> {
        let r = self.compile_policy_inner(name, policy_type, policy);
        let p = self.fail(r)?;
        // Inline policies are counted with their entity.
        if !matches!(
            policy_type,
            PolicyType::User | PolicyType::Group | PolicyType::Role
        ) {
            self.count(&p);
        }
        Some(p)
    }

    fn compile_policy_inner(
        &mut self,
        name: String,
        policy_type: PolicyType,
        policy: Policy,
    ) -> Result<Arc<CompiledPolicy>, CompileError> {
        self.id(policy.statements.len(), IdSpace::Statements)?;
        let mut literals = Vec::new();
        let mut wildcards = Vec::new();
        let mut statements = Vec::with_capacity(policy.statements.len());
        // The statement count fits a u32: checked above.
        for (i, s) in (0u32..).zip(policy.statements) {
            match s.action.literals() {
                None => wildcards.push(i),
                Some(list) => {
                    for l in list {
                        literals.push((self.intern(l)?, i));
                    }
                }
            }
            statements.push(CompiledStatement {
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
        Ok(Arc::new(CompiledPolicy {
            name: name.into_boxed_str(),
            policy_type,
            statements: statements.into_boxed_slice(),
            literals: literals.into_boxed_slice(),
            wildcards: wildcards.into_boxed_slice(),
        }))
    }

    /// The index over `policies`. `None` once compiling failed.
    fn index(&mut self, policies: Vec<Arc<CompiledPolicy>>) -> Option<StatementIndex> {
        let r = self.index_inner(policies);
        self.fail(r)
    }

    fn index_inner(
        &mut self,
        policies: Vec<Arc<CompiledPolicy>>,
    ) -> Result<StatementIndex, CompileError> {
        let mut policies = policies;
        // A managed policy reached through the user and a group counts once.
        // Lists are short: a linear scan beats hashing them.
        let mut unique = 0;
        for i in 0..policies.len() {
            if !policies[..unique]
                .iter()
                .any(|p| Arc::ptr_eq(p, &policies[i]))
            {
                policies.swap(unique, i);
                unique += 1;
            }
        }
        policies.truncate(unique);
        self.id(policies.len(), IdSpace::Policies)?;
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.clear();
        let mut other = Vec::new();
        for (pi, p) in (0u32..).zip(&policies) {
            let at = |statement| StatementAt {
                policy: pi,
                statement,
            };
            pairs.extend(p.literals.iter().map(|&(a, s)| (a, at(s))));
            other.extend(p.wildcards.iter().map(|&s| at(s)));
        }
        // Within an action, statements keep policy order.
        pairs.sort_unstable();
        pairs.dedup();
        let checked = self.id(pairs.len(), IdSpace::ActionEntries);
        let mut buckets: Vec<(ActionId, u32)> = Vec::new();
        let mut bucket_items = Vec::with_capacity(pairs.len());
        for (end, &(a, r)) in (1u32..).zip(&pairs) {
            bucket_items.push(r);
            match buckets.last_mut() {
                Some((last, e)) if *last == a => *e = end,
                _ => buckets.push((a, end)),
            }
        }
        self.pairs = pairs;
        checked?;
        Ok(StatementIndex {
            buckets: buckets.into_boxed_slice(),
            bucket_items: bucket_items.into_boxed_slice(),
            other: other.into_boxed_slice(),
            policies: policies.into_boxed_slice(),
        })
    }
}

/// A user or role as the maps hold it until [`Compiler::snapshot`] builds
/// its indexes from `links`.
fn unbuilt(
    kind: EntityKind,
    key: &NameKey,
    arn: String,
    id: Option<String>,
    tags: Vec<(String, String)>,
    links: Links,
) -> Entity {
    Entity {
        kind,
        arn: arn.into_boxed_str(),
        account: key.0.clone(),
        name: key.1.clone(),
        id: id.map(String::into_boxed_str),
        tags: tags
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect(),
        permissions: StatementIndex::default(),
        boundary: None,
        links,
    }
}
