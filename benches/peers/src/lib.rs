//! iamd's store in Cedar, for side-by-side benchmarks.
//!
//! [`CedarStore::translate`] turns every IAM statement of an iamd
//! [`Store`] into exactly one Cedar policy, and the store's users, groups,
//! roles, accounts and resources into Cedar entities:
//!
//! | IAM | Cedar |
//! | --- | --- |
//! | user / role inline statement | `principal == User::"arn"` / `Role::"arn"` |
//! | group inline statement | `principal in Group::"arn"` (users have their groups as parents) |
//! | managed policy statement | `principal in Attachment::"policy arn"` (users, groups and roles it is attached to have that parent) |
//! | permissions boundary (one Allow statement) | `forbid (principal in Boundary::"arn", ..) unless { what it allows }` |
//! | SCP Allow (one per SCP) / Deny | `forbid (principal in Scp::"name", ..) unless { .. }` / `forbid (..) when { .. }` (accounts have their SCPs as parents) |
//! | resource-based statement | `principal == Service::".."`, `== User::".."` or `in Account::".."`, `resource == Function::"arn"` |
//! | role trust statement | `action == Action::"sts:AssumeRole", resource == Role::"arn"` |
//! | action wildcard (`lambda:Get*`) | an action group `Action::"lambda:get*"` that every matching catalog action is a child of |
//! | resource wildcard | `resource.arn like ".."` on the resource's `arn` attribute |
//! | `${aws:username}` in a user's own policy | the user's name, substituted (Cedar has no string concatenation) |
//! | condition on a context key | `context has "key" && context["key"] ..`, keys lower-cased |
//! | `aws:PrincipalTag/x` | `principal.hasTag("x") && principal.getTag("x") ..` |
//!
//! Cedar's answer is Allow when a permit applies and no forbid does; IAM's
//! cross-account rule (both the identity and the resource side must allow)
//! and the difference between an implicit deny from a boundary or SCP and an
//! explicit one are not reproduced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, Response, RestrictedExpression,
};
use iamd::catalog::{self, KeyType};
use iamd::policy::condition::{BaseOperator, Clause, ClauseValues};
use iamd::policy::pattern::{NoVars, Pattern};
use iamd::policy::{ActionElement, Effect, PrincipalSpec, ResourceElement, Statement};
use iamd::model::Store;

/// A translation failure: a construct this translation does not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

fn unsupported<T>(what: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(what.into()))
}

/// A Cedar entity uid: type and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid {
    pub ty: &'static str,
    pub id: String,
}

impl Uid {
    pub fn new(ty: &'static str, id: impl Into<String>) -> Self {
        Uid { ty, id: id.into() }
    }

    fn to_cedar(&self) -> EntityUid {
        let ty = EntityTypeName::from_str(self.ty).unwrap_or_else(|_| unreachable!("fixed names"));
        EntityUid::from_type_name_and_id(ty, EntityId::new(&self.id))
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.ty, quote(&self.id))
    }
}

/// A Cedar string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Cedar `like` pattern from an IAM wildcard text (`*` only; `?` has no Cedar form).
fn like_pattern(s: &str) -> Result<String, Unsupported> {
    if s.contains('?') {
        return unsupported(format!("`?` wildcard in `{s}`"));
    }
    if s.contains("${") {
        return unsupported(format!("policy variable in `{s}`"));
    }
    Ok(quote(s))
}

/// The Cedar entity a resource ARN is.
pub fn resource_uid(arn: &str) -> Uid {
    if arn.starts_with("arn:aws:iam::") && arn.contains(":role/") {
        Uid::new("Role", arn)
    } else if arn.starts_with("arn:aws:lambda:") {
        Uid::new("Function", arn)
    } else {
        Uid::new("Resource", arn)
    }
}

/// The Cedar entity a request principal string is (user, role, account, or service).
pub fn principal_uid(principal: &str) -> Uid {
    let parts: Vec<&str> = principal.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", _, account, "root"] => Uid::new("Account", *account),
        ["arn", _, "iam", _, _, res] if res.starts_with("user/") => Uid::new("User", principal),
        ["arn", _, "iam", _, _, res] if res.starts_with("role/") => Uid::new("Role", principal),
        ["arn", p, "sts", _, account, res] if res.starts_with("assumed-role/") => {
            let role = res.split('/').nth(1).unwrap_or_default();
            Uid::new("Role", format!("arn:{p}:iam::{account}:role/{role}"))
        }
        _ if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) => {
            Uid::new("Account", principal)
        }
        _ => Uid::new("Service", principal),
    }
}

/// One translated statement.
#[derive(Debug, Clone)]
pub struct Translated {
    pub id: String,
    pub text: String,
    /// The principals the scope names (`==` or `in`); `None` when any principal can match.
    pub principals: Option<Vec<Uid>>,
    /// The one resource ARN the scope names; `None` for a pattern, a list or any resource.
    pub resource: Option<String>,
}

/// Where a statement is attached, which decides its principal scope.
#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    User { arn: &'a str, name: &'a str },
    Group { arn: &'a str },
    Role { arn: &'a str },
    Managed { arn: &'a str },
    Boundary { arn: &'a str },
    Scp { name: &'a str },
    Resource,
    Trust { role: &'a str },
}

#[derive(Debug, Default)]
struct EntityDef {
    attrs: Vec<(String, RestrictedExpression)>,
    parents: BTreeSet<Uid>,
    tags: Vec<(String, RestrictedExpression)>,
}

/// The translation state: action groups and catalog seen so far.
struct Translator {
    /// Lower-cased action name to its canonical spelling.
    actions: BTreeMap<String, String>,
    /// Action groups by lower-cased pattern.
    groups: BTreeMap<String, Pattern>,
}

impl Translator {
    fn action_uid(&mut self, p: &Pattern) -> Uid {
        if let Some(lit) = p.as_literal() {
            let name = self
                .actions
                .entry(lit.to_owned())
                .or_insert_with(|| lit.to_owned());
            Uid::new("Action", name.clone())
        } else {
            self.groups
                .entry(p.source().to_string())
                .or_insert_with(|| p.clone());
            Uid::new("Action", p.source())
        }
    }

    /// The action constraint: `None` for any action, else an expression over `action`.
    fn action(&mut self, a: &ActionElement) -> Option<String> {
        if !a.negated && a.patterns.iter().any(Pattern::is_any) {
            return None;
        }
        let uids: Vec<Uid> = a.patterns.iter().map(|p| self.action_uid(p)).collect();
        let expr = match uids.as_slice() {
            [one] if one.id.contains('*') => format!("action in {one}"),
            [one] => format!("action == {one}"),
            many => format!(
                "action in [{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Some(if a.negated {
            format!("!({expr})")
        } else {
            expr
        })
    }

    fn push(
        &mut self,
        out: &mut Vec<Translated>,
        st: &Statement,
        owner: Owner<'_>,
    ) -> Result<(), Unsupported> {
        let id = format!("s{}", out.len());
        let t = self.statement(id, st, owner)?;
        out.push(t);
        Ok(())
    }

    fn statement(
        &mut self,
        id: String,
        st: &Statement,
        owner: Owner<'_>,
    ) -> Result<Translated, Unsupported> {
        // Principal scope.
        let (principal_scope, principals, principal_cond): (
            String,
            Option<Vec<Uid>>,
            Option<String>,
        ) = match owner {
            Owner::User { arn, .. } => {
                let u = Uid::new("User", arn);
                (format!("principal == {u}"), Some(vec![u]), None)
            }
            Owner::Role { arn } => {
                let u = Uid::new("Role", arn);
                (format!("principal == {u}"), Some(vec![u]), None)
            }
            Owner::Group { arn } => in_scope(Uid::new("Group", arn)),
            Owner::Managed { arn } => in_scope(Uid::new("Attachment", arn)),
            Owner::Boundary { arn } => in_scope(Uid::new("Boundary", arn)),
            Owner::Scp { name } => in_scope(Uid::new("Scp", name)),
            Owner::Resource | Owner::Trust { .. } => principal_element(st)?,
        };

        let action = self.action(&st.action);

        // Resource scope or condition.
        let (resource_scope, resource_key, resource_cond) = match (owner, &st.resource) {
            (Owner::Trust { role }, _) => {
                let u = Uid::new("Role", role);
                (format!("resource == {u}"), Some(role.to_owned()), None)
            }
            (_, None) => ("resource".to_owned(), None, None),
            (_, Some(r)) => resource_element(r, owner)?,
        };

        let mut conds: Vec<String> = principal_cond.into_iter().collect();
        conds.extend(resource_cond);
        for clause in st.condition.clauses.iter() {
            conds.push(condition(clause)?);
        }

        let limiting = matches!(owner, Owner::Boundary { .. } | Owner::Scp { .. });
        let text = if limiting && st.effect == Effect::Allow {
            // A guard rail: everything it does not allow is forbidden.
            let mut all: Vec<String> = action.into_iter().collect();
            if resource_scope != "resource" {
                return unsupported("a boundary or SCP naming one resource");
            }
            all.extend(conds);
            let allowed = if all.is_empty() {
                "true".to_owned()
            } else {
                all.join(" && ")
            };
            format!(
                "forbid (\n  {principal_scope},\n  action,\n  resource\n) unless {{ {allowed} }};"
            )
        } else {
            let effect = match st.effect {
                Effect::Allow => "permit",
                Effect::Deny => "forbid",
            };
            let (action_scope, action_cond) = match action {
                None => ("action".to_owned(), None),
                Some(a) if a.starts_with('!') => ("action".to_owned(), Some(a)),
                Some(a) => (a, None),
            };
            conds.extend(action_cond);
            let mut t = format!(
                "{effect} (\n  {principal_scope},\n  {action_scope},\n  {resource_scope}\n)"
            );
            if !conds.is_empty() {
                let _ = write!(t, " when {{\n  {}\n}}", conds.join(" &&\n  "));
            }
            t.push(';');
            t
        };
        Ok(Translated {
            id,
            text,
            principals,
            resource: resource_key,
        })
    }
}

fn in_scope(u: Uid) -> (String, Option<Vec<Uid>>, Option<String>) {
    (format!("principal in {u}"), Some(vec![u]), None)
}

/// The principal of a resource-based or trust statement.
#[allow(clippy::type_complexity)]
fn principal_element(
    st: &Statement,
) -> Result<(String, Option<Vec<Uid>>, Option<String>), Unsupported> {
    let Some(p) = &st.principal else {
        return unsupported("a resource-based statement without a principal");
    };
    if p.negated {
        return unsupported("NotPrincipal");
    }
    let list = match &p.spec {
        PrincipalSpec::Everyone => return Ok(("principal".to_owned(), None, None)),
        PrincipalSpec::Listed(list) => list,
    };
    if !list.unique_ids.is_empty() || !list.federated.is_empty() || !list.canonical_users.is_empty()
    {
        return unsupported("unique-id, federated or canonical-user principals");
    }
    let mut terms: Vec<(bool, Uid)> = Vec::new(); // (is `in`, uid)
    for a in list.accounts.iter() {
        terms.push((true, Uid::new("Account", a.as_ref())));
    }
    for arn in list.arns.iter() {
        terms.push((false, principal_uid(arn)));
    }
    for s in list.services.iter() {
        terms.push((false, Uid::new("Service", s.as_ref())));
    }
    let op = |is_in: bool| if is_in { "in" } else { "==" };
    let uids = terms.iter().map(|(_, u)| u.clone()).collect();
    Ok(match terms.as_slice() {
        [] => return unsupported("an empty principal element"),
        [(is_in, u)] => (format!("principal {} {u}", op(*is_in)), Some(uids), None),
        many => (
            "principal".to_owned(),
            Some(uids),
            Some(format!(
                "({})",
                many.iter()
                    .map(|(is_in, u)| format!("principal {} {u}", op(*is_in)))
                    .collect::<Vec<_>>()
                    .join(" || ")
            )),
        ),
    })
}

/// The resource scope, its key for slicing, and a condition for patterns.
fn resource_element(
    r: &ResourceElement,
    owner: Owner<'_>,
) -> Result<(String, Option<String>, Option<String>), Unsupported> {
    if !r.negated && r.patterns.iter().any(|p| p.is_any()) {
        return Ok(("resource".to_owned(), None, None));
    }
    if let (false, [one]) = (r.negated, r.patterns.as_slice()) {
        if let Some(arn) = one.as_literal() {
            let u = resource_uid(arn);
            return Ok((format!("resource == {u}"), Some(arn.to_owned()), None));
        }
    }
    let mut terms = Vec::new();
    for p in &r.patterns {
        let mut text = p.source().to_string();
        if p.has_variables() {
            // Cedar has no string concatenation: a user's own policy gets the name written in.
            let Owner::User { name, .. } = owner else {
                return unsupported(format!(
                    "policy variable in `{text}` outside a user's inline policy"
                ));
            };
            text = replace_ignore_case(&text, "${aws:username}", name);
        }
        if let Some(lit) = p.as_literal() {
            terms.push(format!("resource.arn == {}", quote(lit)));
        } else {
            terms.push(format!("resource.arn like {}", like_pattern(&text)?));
        }
    }
    let any = if terms.len() == 1 {
        terms.remove(0)
    } else {
        format!("({})", terms.join(" || "))
    };
    let cond = if r.negated { format!("!({any})") } else { any };
    Ok(("resource".to_owned(), None, Some(cond)))
}

fn replace_ignore_case(text: &str, needle: &str, with: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = lower[i..].find(needle) {
        out.push_str(&text[i..i + pos]);
        out.push_str(with);
        i += pos + needle.len();
    }
    out.push_str(&text[i..]);
    out
}

/// One condition clause as a Cedar expression.
fn condition(c: &Clause) -> Result<String, Unsupported> {
    let op = c.operator;
    if op.qualifier.is_some() {
        return unsupported(format!("set qualifier `{op}`"));
    }
    let key = c.key.to_ascii_lowercase();
    let (has, value) = match key.strip_prefix("aws:principaltag/") {
        Some(_) => {
            // The tag key as written (Cedar tag names are case-sensitive).
            let tag = &c.key["aws:principaltag/".len()..];
            (
                format!("principal.hasTag({})", quote(tag)),
                format!("principal.getTag({})", quote(tag)),
            )
        }
        None => (
            format!("context has {}", quote(&key)),
            format!("context[{}]", quote(&key)),
        ),
    };
    use BaseOperator as B;
    if op.base == B::Null {
        let ClauseValues::Bools(b) = &c.values else {
            return unsupported("Null with non-boolean values");
        };
        return Ok(match b.first() {
            Some(true) => format!("!({has})"),
            _ => has,
        });
    }
    let no_vars = |p: &Pattern| -> Result<(), Unsupported> {
        if p.has_variables() {
            unsupported(format!(
                "policy variable in condition value `{}`",
                p.source()
            ))
        } else {
            Ok(())
        }
    };
    let matches: Vec<String> = match (&op.base, &c.values) {
        (B::StringEquals | B::StringNotEquals, ClauseValues::Strings(v)) => v
            .iter()
            .map(|p| no_vars(p).map(|()| format!("{value} == {}", quote(&p.source()))))
            .collect::<Result<_, _>>()?,
        (B::StringLike | B::StringNotLike, ClauseValues::Strings(v)) => v
            .iter()
            .map(|p| {
                no_vars(p)?;
                Ok(format!("{value} like {}", like_pattern(&p.source())?))
            })
            .collect::<Result<_, Unsupported>>()?,
        (B::ArnEquals | B::ArnLike | B::ArnNotEquals | B::ArnNotLike, ClauseValues::Arns(v)) => v
            .iter()
            .map(|p| Ok(format!("{value} like {}", like_pattern(&p.source())?)))
            .collect::<Result<_, Unsupported>>()?,
        (B::Bool, ClauseValues::Bools(v)) => v.iter().map(|b| format!("{value} == {b}")).collect(),
        (B::IpAddress | B::NotIpAddress, ClauseValues::Cidrs(v)) => v
            .iter()
            .map(|n| format!("{value}.isInRange(ip({}))", quote(&n.to_string())))
            .collect(),
        (B::NumericEquals | B::NumericNotEquals, ClauseValues::Numbers(v))
            if v.iter().all(|n| n.fract() == 0.0) =>
        {
            v.iter().map(|n| format!("{value} == {n}")).collect()
        }
        (base, _) => return unsupported(format!("condition operator `{}`", base.name())),
    };
    let any = if matches.len() == 1 {
        matches.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", matches.join(" || "))
    };
    Ok(if op.base.is_negated() {
        format!("!({has} && {any})")
    } else if op.if_exists {
        format!("(!({has}) || {any})")
    } else {
        format!("({has} && {any})")
    })
}

/// iamd's store as Cedar policies and entities.
pub struct CedarStore {
    /// One per IAM statement, in store order.
    pub policies: Vec<Translated>,
    pub policy_set: PolicySet,
    pub entities: Entities,
    parsed: HashMap<String, Policy>,
    /// Each entity's ancestors (transitive), for slicing by principal.
    ancestors: HashMap<Uid, HashSet<Uid>>,
    /// Lower-cased action name to its canonical spelling.
    actions: BTreeMap<String, String>,
}

impl CedarStore {
    /// Translates `store`; `resources` are ARNs that requests may name
    /// although no policy is attached to them (Cedar needs the entity and
    /// its `arn` attribute to evaluate a pattern).
    pub fn translate<'r>(
        store: &Store,
        resources: impl IntoIterator<Item = &'r str>,
    ) -> Result<CedarStore, Unsupported> {
        let mut tr = Translator {
            actions: catalog::lambda_actions()
                .iter()
                .map(|a| a.name)
                .chain(catalog::OTHER_ACTIONS.iter().copied())
                .map(|n| (n.to_ascii_lowercase(), n.to_owned()))
                .collect(),
            groups: BTreeMap::new(),
        };
        let mut entities: BTreeMap<Uid, EntityDef> = BTreeMap::new();
        let mut out = Vec::with_capacity(store.statement_count());

        // Accounts and the SCPs that apply to them.
        for a in &store.accounts {
            entities.entry(Uid::new("Account", a.as_str())).or_default();
        }
        for scp in &store.scps {
            for t in &scp.targets {
                entities
                    .entry(Uid::new("Account", t.as_str()))
                    .or_default()
                    .parents
                    .insert(Uid::new("Scp", scp.name.as_str()));
            }
            let allows = scp
                .policy
                .statements
                .iter()
                .filter(|s| s.effect == Effect::Allow)
                .count();
            if allows > 1 {
                return unsupported(format!("SCP `{}` with several Allow statements", scp.name));
            }
            for st in &scp.policy.statements {
                tr.push(&mut out, st, Owner::Scp { name: &scp.name })?;
            }
        }

        // Managed policies: attached ones grant, boundaries limit.
        let boundaries: HashSet<&str> = store
            .users
            .iter()
            .filter_map(|u| u.boundary.as_deref())
            .chain(store.roles.iter().filter_map(|r| r.boundary.as_deref()))
            .collect();
        let attached: HashSet<&str> = store
            .users
            .iter()
            .flat_map(|u| u.attached.iter())
            .chain(store.groups.iter().flat_map(|g| g.attached.iter()))
            .chain(store.roles.iter().flat_map(|r| r.attached.iter()))
            .map(String::as_str)
            .collect();
        for m in &store.managed {
            let is_boundary = boundaries.contains(m.arn.as_str());
            if is_boundary && attached.contains(m.arn.as_str()) {
                return unsupported(format!(
                    "`{}` is both attached and a boundary (two Cedar policies per statement)",
                    m.arn
                ));
            }
            if is_boundary
                && m.policy
                    .statements
                    .iter()
                    .filter(|s| s.effect == Effect::Allow)
                    .count()
                    > 1
            {
                return unsupported(format!(
                    "boundary `{}` with several Allow statements",
                    m.arn
                ));
            }
            for st in &m.policy.statements {
                let owner = if is_boundary {
                    Owner::Boundary { arn: &m.arn }
                } else {
                    Owner::Managed { arn: &m.arn }
                };
                tr.push(&mut out, st, owner)?;
            }
        }

        let mut group_arns: HashMap<(&str, &str), &str> = HashMap::new();
        for g in &store.groups {
            group_arns.insert((g.account.as_str(), g.name.as_str()), g.arn.as_str());
            let e = entities
                .entry(Uid::new("Group", g.arn.as_str()))
                .or_default();
            e.parents.insert(Uid::new("Account", g.account.as_str()));
            for m in &g.attached {
                e.parents.insert(Uid::new("Attachment", m.as_str()));
            }
            for p in &g.inline {
                for st in &p.policy.statements {
                    tr.push(&mut out, st, Owner::Group { arn: &g.arn })?;
                }
            }
        }

        let tags = |t: &[(String, String)]| {
            t.iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())))
                .collect::<Vec<_>>()
        };
        for u in &store.users {
            let e = entities
                .entry(Uid::new("User", u.arn.as_str()))
                .or_default();
            e.attrs.push((
                "name".into(),
                RestrictedExpression::new_string(u.name.clone()),
            ));
            e.attrs.push((
                "account".into(),
                RestrictedExpression::new_string(u.account.clone()),
            ));
            e.tags = tags(&u.tags);
            e.parents.insert(Uid::new("Account", u.account.as_str()));
            for g in &u.groups {
                let arn = group_arns
                    .get(&(u.account.as_str(), g.as_str()))
                    .map_or_else(
                        || format!("arn:aws:iam::{}:group/{g}", u.account),
                        |a| (*a).to_owned(),
                    );
                e.parents.insert(Uid::new("Group", arn));
            }
            for m in &u.attached {
                e.parents.insert(Uid::new("Attachment", m.as_str()));
            }
            if let Some(b) = &u.boundary {
                e.parents.insert(Uid::new("Boundary", b.as_str()));
            }
            for p in &u.inline {
                for st in &p.policy.statements {
                    tr.push(
                        &mut out,
                        st,
                        Owner::User {
                            arn: &u.arn,
                            name: &u.name,
                        },
                    )?;
                }
            }
        }

        for r in &store.roles {
            let e = entities
                .entry(Uid::new("Role", r.arn.as_str()))
                .or_default();
            e.attrs.push((
                "name".into(),
                RestrictedExpression::new_string(r.name.clone()),
            ));
            e.attrs.push((
                "account".into(),
                RestrictedExpression::new_string(r.account.clone()),
            ));
            e.attrs.push((
                "arn".into(),
                RestrictedExpression::new_string(r.arn.clone()),
            ));
            e.tags = tags(&r.tags);
            e.parents.insert(Uid::new("Account", r.account.as_str()));
            for m in &r.attached {
                e.parents.insert(Uid::new("Attachment", m.as_str()));
            }
            if let Some(b) = &r.boundary {
                e.parents.insert(Uid::new("Boundary", b.as_str()));
            }
            for p in &r.inline {
                for st in &p.policy.statements {
                    tr.push(&mut out, st, Owner::Role { arn: &r.arn })?;
                }
            }
            if let Some(trust) = &r.trust {
                for st in &trust.statements {
                    tr.push(&mut out, st, Owner::Trust { role: &r.arn })?;
                }
            }
        }

        let mut resource_arns: BTreeSet<&str> = resources.into_iter().collect();
        for rp in &store.resource_policies {
            resource_arns.insert(rp.resource_arn.as_str());
            for st in &rp.policy.statements {
                tr.push(&mut out, st, Owner::Resource)?;
            }
        }
        for arn in resource_arns {
            let uid = resource_uid(arn);
            let e = entities.entry(uid).or_default();
            if !e.attrs.iter().any(|(k, _)| k == "arn") {
                e.attrs.push((
                    "arn".into(),
                    RestrictedExpression::new_string(arn.to_owned()),
                ));
            }
            if let Some(account) = arn.split(':').nth(4).filter(|a| !a.is_empty()) {
                e.parents.insert(Uid::new("Account", account));
            }
        }

        // Actions: every catalog action is a child of each group whose pattern matches it.
        for (lower, name) in &tr.actions {
            let e = entities
                .entry(Uid::new("Action", name.as_str()))
                .or_default();
            for (pattern, p) in &tr.groups {
                if p.matches(lower, &NoVars) {
                    e.parents.insert(Uid::new("Action", pattern.as_str()));
                }
            }
        }
        for pattern in tr.groups.keys() {
            entities
                .entry(Uid::new("Action", pattern.as_str()))
                .or_default();
        }

        // Parse.
        let mut policy_set = PolicySet::new();
        let mut parsed = HashMap::with_capacity(out.len());
        for t in &out {
            let policy = Policy::parse(Some(PolicyId::new(&t.id)), &t.text)
                .map_err(|e| Unsupported(format!("Cedar rejects {}: {e}\n{}", t.id, t.text)))?;
            policy_set
                .add(policy.clone())
                .map_err(|e| Unsupported(format!("{}: {e}", t.id)))?;
            parsed.insert(t.id.clone(), policy);
        }

        // Every parent named is an entity too (Scp, Attachment, Boundary).
        let named: Vec<Uid> = entities
            .values()
            .flat_map(|d| d.parents.iter().cloned())
            .collect();
        for uid in named {
            entities.entry(uid).or_default();
        }

        let ancestors = transitive(&entities);
        let mut list = Vec::with_capacity(entities.len());
        for (uid, def) in entities {
            let cedar_uid = uid.to_cedar();
            let entity = Entity::new_with_tags(
                cedar_uid,
                def.attrs,
                def.parents.iter().map(Uid::to_cedar),
                def.tags,
            )
            .map_err(|e| Unsupported(format!("entity {uid}: {e}")))?;
            list.push(entity);
        }
        let entities = Entities::from_entities(list, None)
            .map_err(|e| Unsupported(format!("entities: {e}")))?;
        Ok(CedarStore {
            policies: out,
            policy_set,
            entities,
            parsed,
            ancestors,
            actions: tr.actions,
        })
    }

    /// A Cedar request for an iamd-style question. Context keys are typed
    /// as iamd's catalog types them and lower-cased.
    pub fn request(
        &self,
        principal: &str,
        action: &str,
        resource: &str,
        context: &[(&str, String)],
    ) -> Result<Request, Unsupported> {
        let action = self
            .actions
            .get(&action.to_ascii_lowercase())
            .map_or(action, String::as_str);
        let mut pairs = Vec::with_capacity(context.len());
        for (k, v) in context {
            let value = match catalog::condition_key_type(k) {
                Some(KeyType::Bool) => {
                    RestrictedExpression::new_bool(v.eq_ignore_ascii_case("true"))
                }
                Some(KeyType::IpAddress) => RestrictedExpression::new_ip(v),
                Some(KeyType::Numeric) => match v.parse::<i64>() {
                    Ok(n) => RestrictedExpression::new_long(n),
                    Err(_) => return unsupported(format!("non-integer `{k}`")),
                },
                _ => RestrictedExpression::new_string(v.clone()),
            };
            pairs.push((k.to_ascii_lowercase(), value));
        }
        let context = Context::from_pairs(pairs).map_err(|e| Unsupported(e.to_string()))?;
        Request::new(
            principal_uid(principal).to_cedar(),
            Uid::new("Action", action).to_cedar(),
            resource_uid(resource).to_cedar(),
            context,
            None,
        )
        .map_err(|e| Unsupported(e.to_string()))
    }

    /// The policies that can apply to `resource`: those naming it, and those
    /// with a pattern, a list or any resource.
    pub fn slice_by_resource(&self, resource: &str) -> PolicySet {
        self.slice(|t| t.resource.as_deref().is_none_or(|r| r == resource))
    }

    /// The policies that can apply to `principal` acting on `resource`: the
    /// resource slice, less the policies whose principal scope names neither
    /// the principal nor one of its groups, accounts or attachments.
    pub fn slice_by_principal_and_resource(&self, principal: &str, resource: &str) -> PolicySet {
        let p = principal_uid(principal);
        let empty = HashSet::new();
        let ancestors = self.ancestors.get(&p).unwrap_or(&empty);
        self.slice(|t| {
            t.resource.as_deref().is_none_or(|r| r == resource)
                && t.principals
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|u| *u == p || ancestors.contains(u)))
        })
    }

    fn slice(&self, keep: impl Fn(&Translated) -> bool) -> PolicySet {
        let mut set = PolicySet::new();
        for t in self.policies.iter().filter(|t| keep(t)) {
            if let Some(p) = self.parsed.get(&t.id) {
                // Ids are unique, so adding cannot fail.
                let _ = set.add(p.clone());
            }
        }
        set
    }
}

fn transitive(entities: &BTreeMap<Uid, EntityDef>) -> HashMap<Uid, HashSet<Uid>> {
    fn walk(
        uid: &Uid,
        entities: &BTreeMap<Uid, EntityDef>,
        memo: &mut HashMap<Uid, HashSet<Uid>>,
    ) -> HashSet<Uid> {
        if let Some(done) = memo.get(uid) {
            return done.clone();
        }
        let mut all = HashSet::new();
        if let Some(def) = entities.get(uid) {
            for parent in &def.parents {
                all.insert(parent.clone());
                all.extend(walk(parent, entities, memo));
            }
        }
        memo.insert(uid.clone(), all.clone());
        all
    }
    let mut memo = HashMap::new();
    for uid in entities.keys() {
        if uid.ty != "Action" {
            walk(uid, entities, &mut memo);
        }
    }
    memo
}

/// Cedar's answer in iamd's terms: `Allow`, `ExplicitDeny` when a forbid
/// applied, `ImplicitDeny` when nothing did.
pub fn kind(response: &Response) -> &'static str {
    match response.decision() {
        Decision::Allow => "Allow",
        Decision::Deny if response.diagnostics().reason().next().is_some() => "ExplicitDeny",
        Decision::Deny => "ImplicitDeny",
    }
}

/// Runs one request and returns its answer in iamd's terms and the number of evaluation errors.
pub fn answer(request: &Request, set: &PolicySet, entities: &Entities) -> (&'static str, usize) {
    let response = Authorizer::new().is_authorized(request, set, entities);
    (kind(&response), response.diagnostics().errors().count())
}

/// A generated store, compiled for iamd and translated for Cedar, with the
/// six probe questions in both forms.
pub struct Fixture {
    pub target: usize,
    pub statements: usize,
    pub snapshot: iamd::engine::Snapshot,
    pub cedar: CedarStore,
    pub probes: Vec<iamd::synth::Probe>,
    contexts: Vec<Vec<iamd::engine::ContextEntry>>,
    pub now: jiff::Timestamp,
}

impl Fixture {
    /// Generates a store of about `statements` statements (seed 42, as iamd's scale bench).
    pub fn new(statements: usize) -> Result<Self, Unsupported> {
        let files = iamd::synth::generate(&iamd::synth::GenParams::for_statements(statements, 42));
        let (store, findings) =
            iamd::store::from_texts(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        let Some(store) = store else {
            let first: Vec<String> = findings.errors().take(3).map(|f| f.to_string()).collect();
            return unsupported(format!("the generated store is rejected: {first:?}"));
        };
        let snapshot =
            iamd::engine::Snapshot::compile(&store).expect("the generated store compiles");
        let probes = iamd::synth::probe_requests();
        let cedar = CedarStore::translate(&store, probes.iter().map(|p| p.resource.as_str()))?;
        let contexts = probes
            .iter()
            .map(|p| {
                p.context
                    .iter()
                    .map(|(k, v)| iamd::engine::ContextEntry::new(*k, [v]))
                    .collect()
            })
            .collect();
        Ok(Fixture {
            target: statements,
            statements: store.statement_count(),
            snapshot,
            cedar,
            probes,
            contexts,
            now: jiff::Timestamp::from_second(1_780_000_000)
                .map_err(|e| Unsupported(e.to_string()))?,
        })
    }

    /// Probe `i` as an iamd request.
    pub fn iamd_request(&self, i: usize) -> Result<iamd::engine::Request<'_>, Unsupported> {
        let p = &self.probes[i];
        iamd::engine::Request::new(
            &p.principal,
            p.action,
            &p.resource,
            &self.contexts[i],
            self.now,
        )
        .map_err(|e| Unsupported(e.to_string()))
    }

    /// Probe `i` as a Cedar request.
    pub fn cedar_request(&self, i: usize) -> Result<Request, Unsupported> {
        let p = &self.probes[i];
        self.cedar
            .request(&p.principal, p.action, &p.resource, &p.context)
    }

    /// Every probe's answer from iamd and from Cedar over the whole set, the
    /// resource slice and the principal-and-resource slice.
    pub fn answers(&self) -> Result<Vec<ProbeAnswers>, Unsupported> {
        let mut out = Vec::new();
        for (i, p) in self.probes.iter().enumerate() {
            let iamd = iamd::engine::decide(&self.snapshot, &self.iamd_request(i)?)
                .kind()
                .as_str();
            let req = self.cedar_request(i)?;
            let whole = answer(&req, &self.cedar.policy_set, &self.cedar.entities);
            let by_resource = self.cedar.slice_by_resource(&p.resource);
            let sliced = answer(&req, &by_resource, &self.cedar.entities);
            let by_pr = self
                .cedar
                .slice_by_principal_and_resource(&p.principal, &p.resource);
            let sliced_pr = answer(&req, &by_pr, &self.cedar.entities);
            out.push(ProbeAnswers {
                probe: p.name,
                expect: p.expect,
                iamd,
                cedar: whole.0,
                cedar_sliced: sliced.0,
                cedar_sliced_pr: sliced_pr.0,
                cedar_errors: whole.1 + sliced.1 + sliced_pr.1,
                slice_size: by_resource.policies().count(),
                slice_pr_size: by_pr.policies().count(),
            });
        }
        Ok(out)
    }
}

/// One probe's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswers {
    pub probe: &'static str,
    pub expect: &'static str,
    pub iamd: &'static str,
    pub cedar: &'static str,
    pub cedar_sliced: &'static str,
    pub cedar_sliced_pr: &'static str,
    /// Evaluation errors Cedar reported (a policy that errs is skipped).
    pub cedar_errors: usize,
    pub slice_size: usize,
    pub slice_pr_size: usize,
}

impl ProbeAnswers {
    /// Whether every Cedar variant gives iamd's allow/deny answer.
    pub fn agree(&self) -> bool {
        let allow = |k: &str| k == "Allow";
        [self.cedar, self.cedar_sliced, self.cedar_sliced_pr]
            .iter()
            .all(|k| allow(k) == allow(self.iamd))
    }

    /// Whether they also agree on explicit versus implicit deny.
    pub fn agree_exactly(&self) -> bool {
        [self.cedar, self.cedar_sliced, self.cedar_sliced_pr]
            .iter()
            .all(|k| *k == self.iamd)
    }
}
