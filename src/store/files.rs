//! Reading each store file by its shape, and the checks that span files
//! (attached policies exist, group names resolve, no entity twice).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::finding::{echo, Findings, IssueCode, Location, Origin};
use crate::json::{self, JsonPath, Node, Value};
use crate::model::{
    Group, ManagedPolicy, NamedPolicy, ResourcePolicy, Role, ServiceControlPolicy, Store, User,
};
use crate::policy::arn::{has_control, is_account_id, Arn, ArnError};
use crate::policy::{parse_policy, parse_policy_text, Policy, PolicyKind};

#[derive(Default)]
pub(super) struct Builder {
    store: Store,
}

/// One file's reading context.
struct FileCx<'a> {
    origin: Origin<'static>,
    findings: &'a mut Findings,
}

impl FileCx<'_> {
    fn loc(&self, path: &JsonPath, node: &Node) -> Location {
        self.origin.location(path, node.pos)
    }

    fn report(&mut self, code: IssueCode, path: &JsonPath, node: &Node, msg: impl Into<String>) {
        let loc = self.loc(path, node);
        self.findings.push(code, loc, msg);
    }

    /// A required string member.
    fn string<'n>(&mut self, obj: &'n Node, path: &JsonPath, key: &str) -> Option<&'n str> {
        match obj.get(key) {
            Some(n) => match n.as_str() {
                Some(s) => Some(s),
                None => {
                    self.report(
                        IssueCode::InvalidType,
                        &path.key(key),
                        n,
                        format!("`{key}` must be a string"),
                    );
                    None
                }
            },
            None => {
                self.report(
                    IssueCode::MissingField,
                    path,
                    obj,
                    format!("`{key}` is missing"),
                );
                None
            }
        }
    }

    fn opt_string<'n>(&mut self, obj: &'n Node, path: &JsonPath, key: &str) -> Option<&'n str> {
        obj.get(key)?;
        self.string(obj, path, key)
    }

    /// The items of an optional array member. Callers size what they build
    /// from its length: most lists hold one or two, and a Vec grown by
    /// pushing keeps room for four.
    fn array<'n, 'a, 'p>(
        &mut self,
        obj: &'n Node<'a>,
        path: &'p JsonPath<'p>,
        key: &'p str,
    ) -> Vec<(JsonPath<'p>, &'n Node<'a>)> {
        match obj.get(key) {
            None => Vec::new(),
            Some(n) => match &n.value {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (path.key_index(key, i), item))
                    .collect(),
                other => {
                    self.report(
                        IssueCode::InvalidType,
                        &path.key(key),
                        n,
                        format!("`{key}` must be an array, found {}", other.kind()),
                    );
                    Vec::new()
                }
            },
        }
    }

    /// A policy document given as an object or as (URL-encoded) JSON text.
    fn document(
        &mut self,
        node: &Node,
        path: &JsonPath,
        kind: PolicyKind,
    ) -> Option<(Policy, usize)> {
        match &node.value {
            Value::Object(_) => {
                let origin = self.origin.nested(path);
                parse_policy(node, kind, &origin, self.findings).map(|p| {
                    let size = p.size;
                    (p, size)
                })
            }
            Value::String(text) => {
                let origin = self.origin.embedded(path, node.pos);
                parse_policy_text(text, node, kind, &origin, self.findings).map(|p| {
                    let size = p.size;
                    (p, size)
                })
            }
            other => {
                self.report(
                    IssueCode::InvalidDocument,
                    path,
                    node,
                    format!(
                        "a policy document must be an object or a JSON string, found {}",
                        other.kind()
                    ),
                );
                None
            }
        }
    }

    fn named_policies(&mut self, obj: &Node, path: &JsonPath, key: &str) -> Vec<NamedPolicy> {
        let items = self.array(obj, path, key);
        let mut out = Vec::with_capacity(items.len());
        for (ipath, item) in items {
            let name = self.string(item, &ipath, "PolicyName");
            let Some(doc) = item.get("PolicyDocument") else {
                self.report(
                    IssueCode::MissingField,
                    &ipath,
                    item,
                    "`PolicyDocument` is missing",
                );
                continue;
            };
            if let (Some(name), Some((policy, size))) = (
                name,
                self.document(doc, &ipath.key("PolicyDocument"), PolicyKind::Inline),
            ) {
                out.push(NamedPolicy {
                    name: name.to_owned(),
                    policy,
                    size,
                });
            }
        }
        out
    }

    fn attached(&mut self, obj: &Node, path: &JsonPath) -> Vec<String> {
        let items = self.array(obj, path, "AttachedManagedPolicies");
        let mut out = Vec::with_capacity(items.len());
        for (ipath, item) in items {
            if let Some(arn) = self.string(item, &ipath, "PolicyArn") {
                out.push(arn.to_owned());
            }
        }
        out
    }

    fn boundary(&mut self, obj: &Node, path: &JsonPath) -> Option<String> {
        let b = obj.get("PermissionsBoundary")?;
        let bpath = path.key("PermissionsBoundary");
        self.string(b, &bpath, "PermissionsBoundaryArn")
            .map(str::to_owned)
    }

    fn tags(&mut self, obj: &Node, path: &JsonPath) -> Vec<(String, String)> {
        let items = self.array(obj, path, "Tags");
        let mut out = Vec::with_capacity(items.len());
        for (ipath, item) in items {
            if let (Some(k), Some(v)) = (
                self.string(item, &ipath, "Key"),
                self.string(item, &ipath, "Value"),
            ) {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
        out
    }

    /// The account of an IAM entity ARN (`arn:aws:iam::ACCOUNT:user/...`), checked.
    fn entity_arn(
        &mut self,
        item: &Node,
        path: &JsonPath,
        kind: &str,
        name: &str,
        fallback: Option<&str>,
    ) -> Option<(String, String)> {
        let arn_text = match item.get("Arn") {
            Some(_) => self.string(item, path, "Arn")?.to_owned(),
            None => {
                let account = fallback?;
                let p = self.opt_string(item, path, "Path").unwrap_or("/");
                format!("arn:aws:iam::{account}:{kind}{p}{name}")
            }
        };
        let node = item.get("Arn").unwrap_or(item);
        match Arn::parse(&arn_text) {
            Ok(arn)
                if arn.service == "iam"
                    && is_account_id(arn.account)
                    && arn.resource.starts_with(&format!("{kind}/"))
                    && arn.resource.ends_with(&format!("/{name}")) =>
            {
                Some((arn_text.clone(), arn.account.to_owned()))
            }
            Ok(_) => {
                self.report(
                    IssueCode::InvalidArn,
                    &path.key("Arn"),
                    node,
                    format!("`{}` is not the IAM {kind} ARN of `{name}` (arn:aws:iam::ACCOUNT:{kind}/PATH/{name})", echo(&arn_text), name = echo(name)),
                );
                None
            }
            Err(e) => {
                self.report(IssueCode::InvalidArn, &path.key("Arn"), node, e.to_string());
                None
            }
        }
    }
}

impl Builder {
    /// Makes room for everything `parts` hold, so absorbing them moves each
    /// entity once instead of again at every doubling.
    pub(super) fn reserve_for<'b>(&mut self, parts: impl Iterator<Item = &'b Builder> + Clone) {
        let s = &mut self.store;
        s.users
            .reserve(parts.clone().map(|p| p.store.users.len()).sum());
        s.groups
            .reserve(parts.clone().map(|p| p.store.groups.len()).sum());
        s.roles
            .reserve(parts.clone().map(|p| p.store.roles.len()).sum());
        s.managed
            .reserve(parts.clone().map(|p| p.store.managed.len()).sum());
        s.resource_policies
            .reserve(parts.clone().map(|p| p.store.resource_policies.len()).sum());
        s.scps
            .reserve(parts.clone().map(|p| p.store.scps.len()).sum());
        s.files.reserve(parts.map(|p| p.store.files.len()).sum());
    }

    /// What this builder has read so far.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Adds what another builder read (files are read in parallel, then merged in order).
    pub(super) fn absorb(&mut self, other: Builder) {
        let Store {
            accounts,
            users,
            groups,
            roles,
            managed,
            resource_policies,
            scps,
            files,
        } = other.store;
        self.store.accounts.extend(accounts);
        self.store.users.extend(users);
        self.store.groups.extend(groups);
        self.store.roles.extend(roles);
        self.store.managed.extend(managed);
        self.store.resource_policies.extend(resource_policies);
        self.store.scps.extend(scps);
        self.store.files.extend(files);
    }

    /// Notes an account the store knows (without a copy when it is known already).
    fn add_account(&mut self, account: &str) {
        if !self.store.accounts.contains(account) {
            self.store.accounts.insert(account.to_owned());
        }
    }

    /// Reads one store file; returns the bytes of JSON tree it took (for
    /// the store's budget).
    pub(super) fn add_file(&mut self, rel: &str, text: &str, findings: &mut Findings) -> usize {
        self.store.files.push(rel.to_owned());
        let budget = json::budget_for(text.len());
        let (root, used) = match json::parse_within(text, budget) {
            Ok(parsed) => parsed,
            Err(e) => {
                let loc = Location {
                    file: rel.into(),
                    path: e.path,
                    line: e.pos.line,
                    column: e.pos.column,
                };
                if e.over_budget {
                    findings.push(
                        IssueCode::FileTooComplex,
                        loc,
                        format!(
                            "the file's JSON values would take more than {budget} bytes of memory ({} per byte of its {} plus {}): too many small values; reading stopped here",
                            json::BUDGET_PER_BYTE,
                            text.len(),
                            json::BUDGET_BASE
                        ),
                    );
                    return budget;
                }
                findings.push(
                    IssueCode::JsonSyntaxError,
                    loc,
                    format!("not valid JSON: {}", e.message),
                );
                return 0;
            }
        };
        let mut cx = FileCx {
            origin: Origin::file(rel),
            findings,
        };
        let has = |k: &str| root.get(k).is_some();
        if has("UserDetailList")
            || has("GroupDetailList")
            || has("RoleDetailList")
            || has("Policies")
        {
            self.authorization_details(&mut cx, &root);
        } else if has("Policy") {
            self.resource_policy(&mut cx, &root);
        } else if has("ServiceControlPolicies") {
            self.service_control_policies(&mut cx, &root);
        } else {
            cx.report(
                IssueCode::UnrecognizedFile,
                &JsonPath::root(),
                &root,
                "not a store file: expected `aws iam get-account-authorization-details` output (UserDetailList, GroupDetailList, RoleDetailList, Policies), `aws lambda get-policy` output (Policy), or {\"ServiceControlPolicies\": [...]}",
            );
        }
        used
    }

    fn authorization_details(&mut self, cx: &mut FileCx<'_>, root: &Node) {
        let top = JsonPath::root();
        let account_hint = match root.get("AccountId") {
            Some(n) => match n.as_str() {
                Some(a) if is_account_id(a) => Some(a.to_owned()),
                _ => {
                    cx.report(
                        IssueCode::InvalidAccountId,
                        &top.key("AccountId"),
                        n,
                        "`AccountId` must be a 12-digit string",
                    );
                    None
                }
            },
            None => None,
        };
        let hint = account_hint.as_deref();
        if let Some(a) = hint {
            self.add_account(a);
        }

        for (path, item) in cx.array(root, &top, "Policies") {
            let Some(arn) = cx.string(item, &path, "Arn").map(str::to_owned) else {
                continue;
            };
            if has_control(&arn) {
                let at = item.get("Arn").unwrap_or(item);
                cx.report(
                    IssueCode::InvalidArn,
                    &path.key("Arn"),
                    at,
                    ArnError::ControlCharacter(arn).to_string(),
                );
                continue;
            }
            let name = cx
                .opt_string(item, &path, "PolicyName")
                .unwrap_or_default()
                .to_owned();
            let default_id = cx
                .opt_string(item, &path, "DefaultVersionId")
                .map(str::to_owned);
            let versions = cx.array(item, &path, "PolicyVersionList");
            let chosen = versions.iter().find(|(_, v)| {
                matches!(
                    v.get("IsDefaultVersion").map(|n| &n.value),
                    Some(Value::Bool(true))
                ) || (default_id.is_some()
                    && v.get("VersionId").and_then(Node::as_str) == default_id.as_deref())
            });
            let Some((vpath, version)) = chosen else {
                cx.report(
                    IssueCode::MissingDefaultVersion,
                    &path,
                    item,
                    format!(
                        "managed policy `{}` has no default version in PolicyVersionList",
                        echo(&arn)
                    ),
                );
                continue;
            };
            let Some(doc) = version.get("Document") else {
                cx.report(
                    IssueCode::MissingField,
                    vpath,
                    version,
                    "`Document` is missing",
                );
                continue;
            };
            if let Some((policy, _)) = cx.document(doc, &vpath.key("Document"), PolicyKind::Managed)
            {
                self.store.managed.push(ManagedPolicy {
                    arn,
                    name,
                    policy,
                    location: cx.loc(&path, item),
                });
            }
        }

        for (path, item) in cx.array(root, &top, "UserDetailList") {
            let Some(name) = cx.string(item, &path, "UserName").map(str::to_owned) else {
                continue;
            };
            let Some((arn, account)) = cx.entity_arn(item, &path, "user", &name, hint) else {
                continue;
            };
            let groups = cx
                .array(item, &path, "GroupList")
                .into_iter()
                .filter_map(|(gpath, g)| match g.as_str() {
                    Some(s) => Some(s.to_owned()),
                    None => {
                        cx.report(
                            IssueCode::InvalidType,
                            &gpath,
                            g,
                            "group names must be strings",
                        );
                        None
                    }
                })
                .collect();
            let user = User {
                id: cx.opt_string(item, &path, "UserId").map(str::to_owned),
                inline: cx.named_policies(item, &path, "UserPolicyList"),
                attached: cx.attached(item, &path),
                boundary: cx.boundary(item, &path),
                tags: cx.tags(item, &path),
                location: cx.loc(&path, item),
                arn,
                account,
                name,
                groups,
            };
            self.add_account(&user.account);
            self.store.users.push(user);
        }

        for (path, item) in cx.array(root, &top, "GroupDetailList") {
            let Some(name) = cx.string(item, &path, "GroupName").map(str::to_owned) else {
                continue;
            };
            let Some((arn, account)) = cx.entity_arn(item, &path, "group", &name, hint) else {
                continue;
            };
            let group = Group {
                inline: cx.named_policies(item, &path, "GroupPolicyList"),
                attached: cx.attached(item, &path),
                location: cx.loc(&path, item),
                arn,
                account,
                name,
            };
            self.add_account(&group.account);
            self.store.groups.push(group);
        }

        for (path, item) in cx.array(root, &top, "RoleDetailList") {
            let Some(name) = cx.string(item, &path, "RoleName").map(str::to_owned) else {
                continue;
            };
            let Some((arn, account)) = cx.entity_arn(item, &path, "role", &name, hint) else {
                continue;
            };
            let trust = match item.get("AssumeRolePolicyDocument") {
                Some(doc) => cx
                    .document(
                        doc,
                        &path.key("AssumeRolePolicyDocument"),
                        PolicyKind::Trust,
                    )
                    .map(|(p, _)| p),
                None => {
                    cx.report(
                        IssueCode::MissingTrustPolicy,
                        &path,
                        item,
                        format!(
                            "role `{}` has no AssumeRolePolicyDocument: nobody can assume it",
                            echo(&name)
                        ),
                    );
                    None
                }
            };
            let role = Role {
                id: cx.opt_string(item, &path, "RoleId").map(str::to_owned),
                trust,
                inline: cx.named_policies(item, &path, "RolePolicyList"),
                attached: cx.attached(item, &path),
                boundary: cx.boundary(item, &path),
                tags: cx.tags(item, &path),
                location: cx.loc(&path, item),
                arn,
                account,
                name,
            };
            self.add_account(&role.account);
            self.store.roles.push(role);
        }
    }

    fn resource_policy(&mut self, cx: &mut FileCx<'_>, root: &Node) {
        let top = JsonPath::root();
        for m in root.members().unwrap_or_default() {
            if !matches!(m.key.as_ref(), "Policy" | "RevisionId" | "ResourceArn") {
                cx.report(
                    IssueCode::UnknownField,
                    &top.key(&m.key),
                    &m.value,
                    format!("`{}` is ignored in a resource policy file", echo(&m.key)),
                );
            }
        }
        let declared = cx.opt_string(root, &top, "ResourceArn").map(str::to_owned);
        let revision_id = cx.opt_string(root, &top, "RevisionId").map(str::to_owned);
        let Some(doc) = root.get("Policy") else {
            return;
        };
        let Some((policy, _)) = cx.document(doc, &top.key("Policy"), PolicyKind::Resource) else {
            return;
        };
        let location = cx.loc(&top.key("Policy"), doc);
        // The statements' literal resources decide, unless the file names one.
        let patterns = || {
            policy
                .statements
                .iter()
                .flat_map(|s| s.resource.iter().flat_map(|r| r.patterns.iter()))
        };
        let resource_arn = match declared {
            Some(arn) => {
                if let Err(e) = Arn::parse(&arn) {
                    cx.report(
                        IssueCode::InvalidArn,
                        &top.key("ResourceArn"),
                        root.get("ResourceArn").unwrap_or(root),
                        e.to_string(),
                    );
                    return;
                }
                for (i, s) in policy.statements.iter().enumerate() {
                    if let Some(r) = &s.resource {
                        if !r.matches(&arn, &crate::policy::pattern::NoVars)
                            && !r.patterns.iter().any(|p| p.has_variables())
                        {
                            let ppath = top.key("Policy");
                            let spath = if policy.statements_listed {
                                ppath.key_index("Statement", i)
                            } else {
                                ppath.key("Statement")
                            };
                            // The statement's own line and column, already
                            // resolved to the string that embeds it, if any.
                            let at = json::Pos {
                                line: s.location.line,
                                column: s.location.column,
                            };
                            cx.findings.push(
                                IssueCode::ResourceMismatch,
                                cx.origin.location(&spath, at),
                                format!("the statement's Resource does not cover `{}`, the resource this policy is attached to, so it never applies", echo(&arn)),
                            );
                        }
                    }
                }
                arn
            }
            None => {
                // Only literal ARNs can say which resource the policy is on.
                let literals: Option<BTreeSet<&str>> = patterns().map(|p| p.as_literal()).collect();
                let single = literals
                    .filter(|l| l.len() == 1)
                    .and_then(|l| l.into_iter().next())
                    .filter(|r| Arn::parse(r).is_ok());
                match single {
                    Some(r) => r.to_owned(),
                    None => {
                        let named: BTreeSet<String> =
                            patterns().map(|p| p.source().into_owned()).collect();
                        cx.report(
                            IssueCode::AmbiguousResource,
                            &top.key("Policy"),
                            doc,
                            format!(
                                "cannot tell which resource this policy is attached to: its statements name {} resources ({}); add \"ResourceArn\" to the file",
                                named.len(),
                                named
                                    .iter()
                                    .take(10)
                                    .map(|n| echo(n).to_string())
                                    .chain((named.len() > 10).then(|| "…".to_owned()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                        return;
                    }
                }
            }
        };
        if let Some(account) = Arn::parse(&resource_arn)
            .ok()
            .map(|arn| arn.account)
            .filter(|a| is_account_id(a))
        {
            self.add_account(account);
        }
        self.store.resource_policies.push(ResourcePolicy {
            resource_arn,
            revision_id,
            policy,
            location,
        });
    }

    fn service_control_policies(&mut self, cx: &mut FileCx<'_>, root: &Node) {
        let top = JsonPath::root();
        for (path, item) in cx.array(root, &top, "ServiceControlPolicies") {
            let Some(name) = cx.string(item, &path, "Name").map(str::to_owned) else {
                continue;
            };
            let Some(content) = item.get("Content") else {
                cx.report(IssueCode::MissingField, &path, item, "`Content` is missing");
                continue;
            };
            let mut targets = Vec::new();
            for (tpath, t) in cx.array(item, &path, "Targets") {
                match t.as_str() {
                    Some(a) if is_account_id(a) => targets.push(a.to_owned()),
                    _ => cx.report(
                        IssueCode::InvalidAccountId,
                        &tpath,
                        t,
                        "SCP targets must be 12-digit account ids",
                    ),
                }
            }
            if targets.is_empty() {
                cx.report(
                    IssueCode::UnattachedScp,
                    &path,
                    item,
                    format!(
                        "SCP `{}` has no Targets and affects no account",
                        echo(&name)
                    ),
                );
            }
            if let Some((policy, _)) = cx.document(content, &path.key("Content"), PolicyKind::Scp) {
                self.store.scps.push(ServiceControlPolicy {
                    name,
                    policy,
                    targets,
                    location: cx.loc(&path, item),
                });
            }
        }
    }

    /// Checks across files, then hands over the store.
    pub(super) fn finish(self, findings: &mut Findings) -> Store {
        let s = &self.store;
        // The two checks need only shared access and each walks a million
        // entities through its own hash maps: run them side by side.
        let (duplicates, references) = std::thread::scope(|scope| {
            let references = scope.spawn(|| reference_checks(s));
            (duplicate_checks(s), references.join())
        });
        findings.extend(duplicates);
        match references {
            Ok(f) => findings.extend(f),
            // Fail closed: a check that did not finish rejects the store.
            Err(_) => findings.push(
                IssueCode::InternalError,
                Location {
                    file: ".".into(),
                    path: "$".into(),
                    line: 1,
                    column: 1,
                },
                "the check of managed policy and group references failed unexpectedly; the store is rejected",
            ),
        }
        aggregate_checks(s, findings);
        self.store
    }

    /// Hands over what one document holds, with the checks that need only
    /// it; the checks across documents are the caller's.
    pub(super) fn into_document(self, findings: &mut Findings) -> Store {
        aggregate_checks(&self.store, findings);
        self.store
    }
}

/// IAM's aggregate quota on each principal's inline policies.
fn aggregate_checks(s: &Store, findings: &mut Findings) {
    let aggregate = |kind: &str,
                     name: &str,
                     policies: &[NamedPolicy],
                     loc: &Location,
                     findings: &mut Findings| {
        let total: usize = policies.iter().map(|p| p.size).sum();
        let limit = super::inline_aggregate_limit(kind);
        if total > limit {
            findings.push(
                IssueCode::PolicySizeExceeded,
                loc.clone(),
                format!("the inline policies of {kind} `{}` total {total} non-white-space characters; IAM allows {limit}", echo(name)),
            );
        }
    };
    for u in &s.users {
        aggregate("user", &u.name, &u.inline, &u.location, findings);
    }
    for g in &s.groups {
        aggregate("group", &g.name, &g.inline, &g.location, findings);
    }
    for r in &s.roles {
        aggregate("role", &r.name, &r.inline, &r.location, findings);
    }
}

/// Each entity defined once: by ARN, and by kind, account and case-folded name.
fn duplicate_checks(s: &Store) -> Findings {
    let mut findings = Findings::new();
    // Borrowed keys and locations: a million-entity store must not copy
    // every ARN and location to find the rare duplicate.
    let mut dup = |what: &str, key: &dyn std::fmt::Display, first: &Location, loc: &Location| {
        findings.push(
            IssueCode::DuplicateEntity,
            loc.clone(),
            format!(
                "{what} `{}` is defined twice (first at {first})",
                echo(&key.to_string())
            ),
        );
    };
    let mut seen: FxHashMap<&str, &Location> = FxHashMap::with_capacity_and_hasher(
        s.users.len()
            + s.groups.len()
            + s.roles.len()
            + s.managed.len()
            + s.resource_policies.len(),
        Default::default(),
    );
    let entities = (s.users.iter().map(|u| ("user", &u.arn, &u.location)))
        .chain(s.groups.iter().map(|g| ("group", &g.arn, &g.location)))
        .chain(s.roles.iter().map(|r| ("role", &r.arn, &r.location)))
        .chain(
            s.managed
                .iter()
                .map(|m| ("managed policy", &m.arn, &m.location)),
        )
        .chain(
            s.resource_policies
                .iter()
                .map(|r| ("the resource policy of", &r.resource_arn, &r.location)),
        );
    for (what, arn, loc) in entities {
        match seen.entry(arn) {
            Entry::Occupied(first) => dup(what, arn, first.get(), loc),
            Entry::Vacant(slot) => {
                slot.insert(loc);
            }
        }
    }
    // IAM names are unique per account, ignoring case.
    let mut names: FxHashMap<(&str, &str, Cow<'_, str>), &Location> =
        FxHashMap::with_capacity_and_hasher(
            s.users.len() + s.roles.len() + s.groups.len(),
            Default::default(),
        );
    for (kind, account, name, loc) in s
        .users
        .iter()
        .map(|u| ("user", &u.account, &u.name, &u.location))
        .chain(
            s.roles
                .iter()
                .map(|r| ("role", &r.account, &r.name, &r.location)),
        )
        .chain(
            s.groups
                .iter()
                .map(|g| ("group", &g.account, &g.name, &g.location)),
        )
    {
        let folded = if !name.is_ascii() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_lowercase())
        } else {
            Cow::Borrowed(name.as_str())
        };
        match names.entry((kind, account.as_str(), folded)) {
            Entry::Occupied(first) => {
                let key = &first.key().2;
                dup(
                    kind,
                    &format_args!("{kind}:{account}:{key}"),
                    first.get(),
                    loc,
                );
            }
            Entry::Vacant(slot) => {
                slot.insert(loc);
            }
        }
    }
    findings
}

/// The finding for a reference to a managed policy no document defines.
pub(super) fn unknown_managed(kind: &str, name: &str, arn: &str) -> String {
    format!(
        "{kind} `{}` refers to managed policy `{}`, which no store file defines",
        echo(name),
        echo(arn)
    )
}

/// The finding for a user in a group no document defines.
pub(super) fn unknown_group(user: &str, group: &str) -> String {
    format!(
        "user `{}` is in group `{}`, which no store file defines",
        echo(user),
        echo(group)
    )
}

/// Attached managed policies, boundaries and group memberships name
/// entities the store defines.
fn reference_checks(s: &Store) -> Findings {
    let mut findings = Findings::new();
    let managed: FxHashSet<&str> = s.managed.iter().map(|m| m.arn.as_str()).collect();
    let mut missing = |arn: &str, kind: &str, name: &str, loc: &Location| {
        if !managed.contains(arn) {
            findings.push(
                IssueCode::UnknownManagedPolicy,
                loc.clone(),
                unknown_managed(kind, name, arn),
            );
        }
    };
    for u in &s.users {
        for a in u.attached.iter().chain(u.boundary.iter()) {
            missing(a, "user", &u.name, &u.location);
        }
    }
    for g in &s.groups {
        for a in &g.attached {
            missing(a, "group", &g.name, &g.location);
        }
    }
    for r in &s.roles {
        for a in r.attached.iter().chain(r.boundary.iter()) {
            missing(a, "role", &r.name, &r.location);
        }
    }
    let group_names: FxHashSet<(&str, &str)> = s
        .groups
        .iter()
        .map(|g| (g.account.as_str(), g.name.as_str()))
        .collect();
    for u in &s.users {
        for g in &u.groups {
            if !group_names.contains(&(u.account.as_str(), g.as_str())) {
                findings.push(
                    IssueCode::UnknownGroup,
                    u.location.clone(),
                    unknown_group(&u.name, g),
                );
            }
        }
    }
    findings
}
