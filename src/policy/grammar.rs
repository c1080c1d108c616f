//! The policy grammar: from a JSON tree to a typed [`Policy`], with an
//! ERROR finding for everything the grammar does not allow.
//!
//! Parsing and validation are one pass: every element is turned into its
//! typed form or reported (with file, JSON path, line and column), and the
//! pass goes on so that one run lists every problem. A document with any
//! ERROR yields no policy. Each typed element, once built, goes through its
//! lints ([`super::lint`]), which the grammar reports where the element is
//! written.

use super::condition::{Clause, Condition, ConditionError, Operator};
use super::lint::{self, Lint};
use super::pattern::{ArnPattern, Pattern, Syntax};
use super::{
    arn::{has_control, is_account_id, Arn},
    ActionElement, Effect, Policy, PolicyKind, PrincipalElement, PrincipalList, PrincipalSpec,
    ResourceElement, Statement, Version,
};
use crate::catalog;
use crate::finding::{echo, FindingType, Findings, IssueCode, Origin};
use crate::json::{self, JsonPath, Node, Value};

struct Ctx<'a> {
    kind: PolicyKind,
    origin: &'a Origin<'a>,
    findings: &'a mut Findings,
    errors: usize,
}

impl Ctx<'_> {
    fn report(&mut self, code: IssueCode, path: &JsonPath, node: &Node, msg: impl Into<String>) {
        if code.severity() == FindingType::Error {
            self.errors += 1;
        }
        let loc = self.origin.location(path, node.pos);
        self.findings.push(code, loc, msg);
    }

    /// Reports the lints of an element written at `path`.
    fn lint(&mut self, path: &JsonPath, node: &Node, lints: impl IntoIterator<Item = Lint>) {
        for l in lints {
            self.report(l.code, path, node, l.message);
        }
    }
}

/// Parses a policy given as JSON text: the form GAAD and `get-policy` use,
/// where a document may also be URL-encoded.
pub fn parse_policy_text(
    text: &str,
    at: &Node,
    kind: PolicyKind,
    origin: &Origin,
    findings: &mut Findings,
) -> Option<Policy> {
    let decoded;
    let text = if text.trim_start().starts_with('{') {
        text
    } else {
        match percent_encoding::percent_decode_str(text).decode_utf8() {
            Ok(d) => {
                decoded = d.into_owned();
                &decoded
            }
            Err(_) => {
                findings.push(
                    IssueCode::InvalidEncoding,
                    origin.location(&JsonPath::root(), at.pos),
                    "the policy document is neither JSON nor URL-encoded UTF-8 JSON",
                );
                return None;
            }
        }
    };
    let budget = json::budget_for(text.len());
    match json::parse_within(text, budget) {
        Ok((node, _)) => parse_policy(&node, kind, origin, findings),
        Err(e) if e.over_budget => {
            findings.push(
                IssueCode::FileTooComplex,
                origin.location(&JsonPath::root(), at.pos),
                format!(
                    "the policy document's JSON values would take more than {budget} bytes of memory ({} per byte of its {} plus {}): too many small values",
                    json::BUDGET_PER_BYTE,
                    text.len(),
                    json::BUDGET_BASE
                ),
            );
            None
        }
        Err(e) => {
            findings.push(
                IssueCode::JsonSyntaxError,
                origin.location(&JsonPath::root(), at.pos),
                format!("the policy document is not valid JSON: {e}"),
            );
            None
        }
    }
}

/// Parses a policy document object. Returns `None` when it has any ERROR.
pub fn parse_policy(
    node: &Node,
    kind: PolicyKind,
    origin: &Origin,
    findings: &mut Findings,
) -> Option<Policy> {
    let mut cx = Ctx {
        kind,
        origin,
        findings,
        errors: 0,
    };
    let root = JsonPath::root();
    let Some(members) = node.members() else {
        cx.report(
            IssueCode::InvalidDocument,
            &root,
            node,
            format!(
                "a policy document must be a JSON object, found {}",
                node.value.kind()
            ),
        );
        return None;
    };
    check_duplicate_keys(&mut cx, &root, node);

    let size = node.compact_len as usize;
    if size > kind.size_limit() {
        cx.report(
            IssueCode::PolicySizeExceeded,
            &root,
            node,
            format!(
                "the {} has {size} non-white-space characters; the limit is {}",
                kind.name(),
                kind.size_limit()
            ),
        );
    }

    let mut version = None;
    let mut id = None;
    let mut statement_node = None;
    for m in members {
        let path = root.key(&m.key);
        match m.key.as_ref() {
            "Version" => match m.value.as_str() {
                Some("2012-10-17") => version = Some(Version::V2012_10_17),
                Some("2008-10-17") => version = Some(Version::V2008_10_17),
                _ => cx.report(
                    IssueCode::InvalidVersion,
                    &path,
                    &m.value,
                    "`Version` must be \"2012-10-17\" or \"2008-10-17\"",
                ),
            },
            "Id" => match m.value.as_str() {
                Some(s) => id = Some(Box::from(s)),
                None => cx.report(
                    IssueCode::InvalidId,
                    &path,
                    &m.value,
                    "`Id` must be a string",
                ),
            },
            "Statement" => statement_node = Some(&m.value),
            other => cx.report(
                IssueCode::UnknownElement,
                &path,
                &m.value,
                format!(
                    "unknown policy element `{}` (element names are case-sensitive)",
                    echo(other)
                ),
            ),
        }
    }
    let version = match version {
        Some(v) => v,
        None => {
            if node.get("Version").is_none() {
                cx.lint(&root, node, [lint::missing_version()]);
            }
            Version::V2008_10_17
        }
    };
    if version == Version::V2008_10_17
        && kind == PolicyKind::Managed
        && node.get("Version").is_some()
    {
        cx.report(
            IssueCode::InvalidVersion,
            &root.key("Version"),
            node.get("Version").unwrap_or(node),
            "managed policies must be Version 2012-10-17",
        );
    }
    let variables = version == Version::V2012_10_17;

    // Sized exactly (below): a policy's statements and their lists live as
    // long as the snapshot, and a Vec grown by pushing keeps room for four.
    let mut statements = Vec::new();
    match statement_node {
        None => cx.report(
            IssueCode::MissingStatement,
            &root,
            node,
            "the policy has no `Statement`",
        ),
        Some(st) => {
            let spath = root.key("Statement");
            let items: Vec<(JsonPath, &Node)> = match &st.value {
                Value::Object(_) => vec![(spath, st)],
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (spath.index(i), n))
                    .collect(),
                other => {
                    cx.report(
                        IssueCode::InvalidStatement,
                        &spath,
                        st,
                        format!(
                            "`Statement` must be an object or an array of objects, found {}",
                            other.kind()
                        ),
                    );
                    Vec::new()
                }
            };
            statements.reserve_exact(items.len());
            for (path, item) in items {
                if let Some(s) = parse_statement(&mut cx, &path, item, variables) {
                    // Size quotas keep policies to a few dozen statements:
                    // comparing with the earlier ones beats hashing copies.
                    if let Some(sid) = &s.sid {
                        if statements
                            .iter()
                            .any(|earlier: &Statement| earlier.sid.as_ref() == Some(sid))
                        {
                            cx.report(
                                IssueCode::DuplicateSid,
                                &path.key("Sid"),
                                item.get("Sid").unwrap_or(item),
                                format!(
                                    "duplicate `Sid` `{}`: Sids must be unique within a policy",
                                    echo(sid)
                                ),
                            );
                        }
                    }
                    statements.push(s);
                }
            }
            if !variables {
                cx.lint(&spath, st, lint::variables_in_2008_policy(st));
            }
        }
    }
    let statements_listed = matches!(statement_node.map(|n| &n.value), Some(Value::Array(_)));
    (cx.errors == 0).then_some(Policy {
        version,
        id,
        statements,
        statements_listed,
        size,
    })
}

fn check_duplicate_keys(cx: &mut Ctx<'_>, path: &JsonPath, node: &Node) {
    let Some(members) = node.members() else {
        return;
    };
    // Policy objects are small: a quadratic scan beats hashing (and allocating).
    for (i, m) in members.iter().enumerate() {
        if members
            .get(..i)
            .is_some_and(|before| before.iter().any(|b| b.key == m.key))
        {
            cx.report(
                IssueCode::DuplicateKey,
                &path.key(&m.key),
                &m.value,
                format!("the element `{}` appears more than once", echo(&m.key)),
            );
        }
    }
}

/// The strings of a value that may be a string or an array of strings.
fn string_list<'n, 'a, 'p>(
    cx: &mut Ctx<'_>,
    path: &'p JsonPath<'p>,
    node: &'n Node<'a>,
    what: &str,
) -> Vec<(JsonPath<'p>, &'n Node<'a>, &'n str)> {
    match &node.value {
        Value::String(s) => vec![(*path, node, s.as_ref())],
        Value::Array(items) => {
            if items.is_empty() {
                cx.report(
                    IssueCode::EmptyArray,
                    path,
                    node,
                    format!("`{what}` must not be an empty array"),
                );
            }
            items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| match &n.value {
                    Value::String(s) => Some((path.index(i), n, s.as_ref())),
                    other => {
                        cx.report(
                            IssueCode::InvalidType,
                            &path.index(i),
                            n,
                            format!("`{what}` values must be strings, found {}", other.kind()),
                        );
                        None
                    }
                })
                .collect()
        }
        other => {
            cx.report(
                IssueCode::InvalidType,
                path,
                node,
                format!(
                    "`{what}` must be a string or an array of strings, found {}",
                    other.kind()
                ),
            );
            Vec::new()
        }
    }
}

fn parse_statement(
    cx: &mut Ctx<'_>,
    path: &JsonPath,
    node: &Node,
    variables: bool,
) -> Option<Statement> {
    let errors_before = cx.errors;
    let Some(members) = node.members() else {
        cx.report(
            IssueCode::InvalidStatement,
            path,
            node,
            format!(
                "a statement must be a JSON object, found {}",
                node.value.kind()
            ),
        );
        return None;
    };
    check_duplicate_keys(cx, path, node);
    const KNOWN: [&str; 9] = [
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    for m in members {
        if !KNOWN.contains(&m.key.as_ref()) {
            cx.report(
                IssueCode::UnknownElement,
                &path.key(&m.key),
                &m.value,
                format!(
                    "unknown statement element `{}` (element names are case-sensitive)",
                    echo(&m.key)
                ),
            );
        }
    }

    let sid = match node.get("Sid") {
        None => None,
        Some(n) => match n.as_str() {
            Some(s) => {
                let ok = match cx.kind {
                    PolicyKind::Inline | PolicyKind::Managed => {
                        s.chars().all(|c| c.is_ascii_alphanumeric())
                    }
                    _ => s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'),
                };
                if !ok {
                    cx.report(
                        IssueCode::InvalidSid,
                        &path.key("Sid"),
                        n,
                        format!(
                            "`Sid` `{}` has characters a {} does not allow",
                            echo(s),
                            cx.kind.name()
                        ),
                    );
                }
                Some(Box::from(s))
            }
            None => {
                cx.report(
                    IssueCode::InvalidSid,
                    &path.key("Sid"),
                    n,
                    "`Sid` must be a string",
                );
                None
            }
        },
    };

    let effect = match node.get("Effect") {
        None => {
            cx.report(
                IssueCode::MissingEffect,
                path,
                node,
                "the statement has no `Effect`",
            );
            None
        }
        Some(n) => match n.as_str() {
            Some("Allow") => Some(Effect::Allow),
            Some("Deny") => Some(Effect::Deny),
            _ => {
                cx.report(
                    IssueCode::InvalidEffect,
                    &path.key("Effect"),
                    n,
                    "`Effect` must be \"Allow\" or \"Deny\" (case-sensitive)",
                );
                None
            }
        },
    };

    let principal = parse_principal(cx, path, node, effect);
    let action = parse_action(cx, path, node);
    let resource = parse_resource(cx, path, node, variables, effect);
    let condition = match node.get("Condition") {
        None => Condition::default(),
        Some(c) => parse_condition(cx, &path.key("Condition"), c, variables, effect),
    };

    if cx.errors > errors_before {
        return None;
    }
    let (Some(effect), Some(action)) = (effect, action) else {
        return None;
    };
    let statement = Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        condition,
        location: cx.origin.statement_location(node.pos),
    };
    cx.lint(
        &path.key("Principal"),
        node.get("Principal").unwrap_or(node),
        lint::statement(cx.kind, &statement),
    );
    Some(statement)
}

/// Which of an element and its negation (`Action` / `NotAction`) a
/// statement has: `(negated, name, value)`, `None` when it has neither, and
/// an error (reported) when it has both.
fn element_or_negation<'n, 'a>(
    cx: &mut Ctx<'_>,
    path: &JsonPath,
    node: &'n Node<'a>,
    name: &'static str,
    negation: &'static str,
    both_code: IssueCode,
) -> Result<Option<(bool, &'static str, &'n Node<'a>)>, ()> {
    match (node.get(name), node.get(negation)) {
        (Some(_), Some(n)) => {
            cx.report(
                both_code,
                &path.key(negation),
                n,
                format!("a statement cannot have both `{name}` and `{negation}`"),
            );
            Err(())
        }
        (Some(v), None) => Ok(Some((false, name, v))),
        (None, Some(v)) => Ok(Some((true, negation, v))),
        (None, None) => Ok(None),
    }
}

fn parse_principal(
    cx: &mut Ctx<'_>,
    path: &JsonPath,
    node: &Node,
    effect: Option<Effect>,
) -> Option<PrincipalElement> {
    let found = element_or_negation(
        cx,
        path,
        node,
        "Principal",
        "NotPrincipal",
        IssueCode::PrincipalAndNotPrincipal,
    );
    let (negated, key, pnode) = match found {
        Err(()) => return None,
        Ok(Some(f)) => f,
        Ok(None) => {
            if matches!(cx.kind, PolicyKind::Resource | PolicyKind::Trust) {
                cx.report(
                    IssueCode::MissingPrincipal,
                    path,
                    node,
                    format!(
                        "a statement in a {} must have a `Principal`",
                        cx.kind.name()
                    ),
                );
            }
            return None;
        }
    };
    let ppath = path.key(key);
    if cx.kind.is_identity_like() {
        cx.report(
            IssueCode::PrincipalInIdentityPolicy,
            &ppath,
            pnode,
            format!("`{key}` is not allowed in an {}: the principal is whoever the policy is attached to", cx.kind.name()),
        );
        return None;
    }
    if negated {
        if cx.kind == PolicyKind::Trust {
            cx.report(
                IssueCode::NotPrincipalInTrustPolicy,
                &ppath,
                pnode,
                "`NotPrincipal` is not allowed in a role trust policy",
            );
        }
        if effect == Some(Effect::Allow) {
            cx.report(
                IssueCode::NotPrincipalWithAllow,
                &ppath,
                pnode,
                "`NotPrincipal` with \"Effect\": \"Allow\" is not supported; use \"Principal\" with a condition on aws:PrincipalArn",
            );
        }
    }
    let spec = match &pnode.value {
        Value::String(s) if s == "*" => PrincipalSpec::Everyone,
        Value::String(s) => {
            cx.report(
                IssueCode::InvalidPrincipal,
                &ppath,
                pnode,
                format!("a principal string must be \"*\"; write {{\"AWS\": \"{s}\"}} or {{\"Service\": \"{s}\"}}", s = echo(s)),
            );
            return None;
        }
        Value::Object(members) => {
            check_duplicate_keys(cx, &ppath, pnode);
            let mut list = PrincipalList::default();
            let mut everyone = false;
            for m in members {
                let mpath = ppath.key(&m.key);
                let values = string_list(cx, &mpath, &m.value, key);
                for (vpath, vnode, v) in values {
                    if has_control(v) {
                        cx.report(
                            IssueCode::InvalidPrincipal,
                            &vpath,
                            vnode,
                            format!(
                                "`{}` contains a control character; no principal is named so",
                                echo(v)
                            ),
                        );
                        continue;
                    }
                    match m.key.as_ref() {
                        "AWS" => {
                            if v == "*" {
                                everyone = true;
                            } else if let Err(msg) = add_aws_principal(&mut list, v) {
                                let code = if v.contains(['*', '?']) {
                                    IssueCode::WildcardInPrincipal
                                } else {
                                    IssueCode::InvalidPrincipal
                                };
                                cx.report(code, &vpath, vnode, msg);
                            }
                        }
                        "Service" => {
                            cx.lint(&vpath, vnode, lint::service_principal(v));
                            if v.contains(['*', '?']) || v.contains(char::is_whitespace) {
                                cx.report(IssueCode::InvalidPrincipal, &vpath, vnode, format!("`{}` is not a service principal such as `s3.amazonaws.com`", echo(v)));
                            }
                            list.services.push(v.into());
                        }
                        "Federated" => {
                            if v.is_empty() || v.contains(['*', '?']) {
                                cx.report(
                                    IssueCode::InvalidPrincipal,
                                    &vpath,
                                    vnode,
                                    format!("`{}` is not a federated identity provider", echo(v)),
                                );
                            }
                            list.federated.push(v.into());
                        }
                        "CanonicalUser" => {
                            list.canonical_users.push(v.into());
                            cx.lint(&vpath, vnode, [lint::canonical_user_principal()]);
                        }
                        other => {
                            cx.report(
                                IssueCode::InvalidPrincipal,
                                &mpath,
                                &m.value,
                                format!("unknown principal type `{}`: expected AWS, Service, Federated or CanonicalUser", echo(other)),
                            );
                            break;
                        }
                    }
                }
            }
            if everyone {
                PrincipalSpec::Everyone
            } else {
                PrincipalSpec::Listed(Box::new(list))
            }
        }
        other => {
            cx.report(
                IssueCode::InvalidPrincipal,
                &ppath,
                pnode,
                format!("`{key}` must be \"*\" or an object, found {}", other.kind()),
            );
            return None;
        }
    };
    Some(PrincipalElement { negated, spec })
}

/// Files an `AWS` principal value under the entry kind it can match.
fn add_aws_principal(list: &mut PrincipalList, v: &str) -> Result<(), String> {
    if is_account_id(v) {
        list.accounts.push(v.into());
        return Ok(());
    }
    if v.contains(['*', '?']) {
        return Err(format!(
            "`{}`: a wildcard cannot match part of a principal; use \"*\" alone, or a condition on aws:PrincipalArn",
            echo(v)
        ));
    }
    if let Ok(arn) = Arn::parse(v) {
        let ok_service = arn.service == "iam" || arn.service == "sts";
        if ok_service
            && arn.service == "iam"
            && arn.resource == "root"
            && is_account_id(arn.account)
        {
            list.accounts.push(arn.account.into());
            return Ok(());
        }
        let typ = arn.resource.split('/').next().unwrap_or_default();
        let known = matches!(
            (arn.service, typ),
            ("iam", "user") | ("iam", "role") | ("sts", "assumed-role") | ("sts", "federated-user")
        );
        if known && is_account_id(arn.account) {
            list.arns.push(v.into());
            return Ok(());
        }
        return Err(format!(
            "`{}` is not an account, IAM user, IAM role, assumed-role session or federated-user ARN",
            echo(v)
        ));
    }
    let unique_id = v.len() >= 16
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && ["AIDA", "AROA", "AIDQ", "AROQ"]
            .iter()
            .any(|p| v.starts_with(p));
    if unique_id {
        list.unique_ids.push(v.into());
        return Ok(());
    }
    Err(format!(
        "`{}` is not an AWS account id, an IAM ARN, or a unique id",
        echo(v)
    ))
}

fn parse_action(cx: &mut Ctx<'_>, path: &JsonPath, node: &Node) -> Option<ActionElement> {
    let found = element_or_negation(
        cx,
        path,
        node,
        "Action",
        "NotAction",
        IssueCode::ActionAndNotAction,
    );
    let (negated, key, anode) = match found {
        Err(()) => return None,
        Ok(Some(f)) => f,
        Ok(None) => {
            cx.report(
                IssueCode::MissingAction,
                path,
                node,
                "the statement has no `Action` or `NotAction`",
            );
            return None;
        }
    };
    let apath = path.key(key);
    let values = string_list(cx, &apath, anode, key);
    let mut patterns = Vec::with_capacity(values.len());
    for (vpath, vnode, v) in values {
        if v != "*" {
            let Some((service, name)) = v.split_once(':') else {
                cx.report(
                    IssueCode::InvalidAction,
                    &vpath,
                    vnode,
                    format!(
                        "`{}` is not an action: expected `service:Action` or `*`",
                        echo(v)
                    ),
                );
                continue;
            };
            if service.is_empty()
                || service.contains(['*', '?'])
                || !service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*' || c == '?')
            {
                cx.report(
                    IssueCode::InvalidAction,
                    &vpath,
                    vnode,
                    format!(
                        "`{}`: the service prefix must be a plain name without wildcards",
                        echo(v)
                    ),
                );
                continue;
            }
            if name.is_empty() || name.contains(':') {
                cx.report(
                    IssueCode::InvalidAction,
                    &vpath,
                    vnode,
                    format!("`{}` is not an action: expected `service:Action`", echo(v)),
                );
                continue;
            }
        }
        let lower = v.to_lowercase();
        match Pattern::parse(
            &lower,
            Syntax {
                wildcards: true,
                variables: false,
            },
        ) {
            Ok(p) => {
                cx.lint(&vpath, vnode, lint::action(&p, v));
                patterns.push(p);
            }
            Err(e) => cx.report(IssueCode::InvalidAction, &vpath, vnode, e.to_string()),
        }
    }
    // Patterns live as long as the snapshot: no spare capacity.
    patterns.shrink_to_fit();
    Some(ActionElement { negated, patterns })
}

fn parse_resource(
    cx: &mut Ctx<'_>,
    path: &JsonPath,
    node: &Node,
    variables: bool,
    effect: Option<Effect>,
) -> Option<ResourceElement> {
    let found = element_or_negation(
        cx,
        path,
        node,
        "Resource",
        "NotResource",
        IssueCode::ResourceAndNotResource,
    );
    let (negated, key, rnode) = match found {
        Err(()) => return None,
        Ok(Some(f)) => f,
        Ok(None) => {
            if cx.kind != PolicyKind::Trust {
                cx.report(
                    IssueCode::MissingResource,
                    path,
                    node,
                    "the statement has no `Resource` or `NotResource`",
                );
            }
            return None;
        }
    };
    let rpath = path.key(key);
    if negated {
        cx.lint(&rpath, rnode, lint::not_resource(effect));
    }
    let values = string_list(cx, &rpath, rnode, key);
    let mut patterns = Vec::with_capacity(values.len());
    for (vpath, vnode, v) in values {
        if has_control(v) {
            cx.report(
                IssueCode::InvalidArnResource,
                &vpath,
                vnode,
                format!(
                    "`{}` contains a control character; no resource is named so",
                    echo(v)
                ),
            );
            continue;
        }
        match ArnPattern::parse(v, variables) {
            Ok(p) => {
                cx.lint(&vpath, vnode, lint::resource(&p, v));
                patterns.push(p);
            }
            Err(e) => cx.report(IssueCode::InvalidArnResource, &vpath, vnode, e.to_string()),
        }
    }
    patterns.shrink_to_fit();
    Some(ResourceElement { negated, patterns })
}

fn condition_values(cx: &mut Ctx<'_>, path: &JsonPath, node: &Node) -> Option<Vec<String>> {
    let scalar = |n: &Node| -> Option<String> {
        match &n.value {
            Value::String(s) => Some(s.to_string()),
            Value::Number(s) => Some((*s).to_owned()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    };
    match &node.value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match scalar(item) {
                    Some(s) => out.push(s),
                    None => {
                        cx.report(
                            IssueCode::InvalidConditionValue,
                            &path.index(i),
                            item,
                            format!(
                                "condition values must be strings, numbers or booleans, found {}",
                                item.value.kind()
                            ),
                        );
                        return None;
                    }
                }
            }
            Some(out)
        }
        _ => match scalar(node) {
            Some(s) => Some(vec![s]),
            None => {
                cx.report(
                    IssueCode::InvalidConditionValue,
                    path,
                    node,
                    format!("a condition value must be a string, number, boolean or an array of them, found {}", node.value.kind()),
                );
                None
            }
        },
    }
}

fn parse_condition(
    cx: &mut Ctx<'_>,
    path: &JsonPath,
    node: &Node,
    variables: bool,
    effect: Option<Effect>,
) -> Condition {
    let Some(ops) = node.members() else {
        cx.report(
            IssueCode::InvalidCondition,
            path,
            node,
            format!(
                "`Condition` must be an object of operators, found {}",
                node.value.kind()
            ),
        );
        return Condition::default();
    };
    check_duplicate_keys(cx, path, node);
    let keys = ops
        .iter()
        .map(|op| op.value.members().map_or(0, <[_]>::len));
    let mut clauses = Vec::with_capacity(keys.sum());
    for op_member in ops {
        let opath = path.key(&op_member.key);
        let operator = match Operator::parse(&op_member.key) {
            Ok(op) => op,
            Err(e) => {
                cx.report(
                    IssueCode::InvalidConditionOperator,
                    &opath,
                    &op_member.value,
                    e.to_string(),
                );
                continue;
            }
        };
        let Some(keys) = op_member.value.members() else {
            cx.report(
                IssueCode::InvalidCondition,
                &opath,
                &op_member.value,
                format!(
                    "`{}` must map condition keys to values",
                    echo(&op_member.key)
                ),
            );
            continue;
        };
        check_duplicate_keys(cx, &opath, &op_member.value);
        for key_member in keys {
            let kpath = opath.key(&key_member.key);
            let Some(values) = condition_values(cx, &kpath, &key_member.value) else {
                continue;
            };
            if let Some(bad) = values
                .iter()
                .find(|v| has_control(v))
                .filter(|_| arn_values(operator, &key_member.key))
            {
                cx.report(
                    IssueCode::InvalidConditionValue,
                    &kpath,
                    &key_member.value,
                    format!(
                        "`{}` contains a control character; no ARN is written so",
                        echo(bad)
                    ),
                );
                continue;
            }
            match Clause::compile(operator, &key_member.key, &values, variables) {
                Ok(clause) => {
                    cx.lint(&kpath, &key_member.value, lint::clause(&clause, effect));
                    clauses.push(clause);
                }
                Err(e) => {
                    let code = match e {
                        ConditionError::NoValues(_) => IssueCode::EmptyConditionValues,
                        _ => IssueCode::InvalidConditionValue,
                    };
                    cx.report(code, &kpath, &key_member.value, e.to_string());
                }
            }
        }
    }
    Condition {
        clauses: clauses.into_boxed_slice(),
    }
}

/// True when the clause compares ARNs: an ARN operator, or an ARN-typed key.
fn arn_values(operator: Operator, key: &str) -> bool {
    use super::condition::BaseOperator as B;
    matches!(
        operator.base,
        B::ArnEquals | B::ArnLike | B::ArnNotEquals | B::ArnNotLike
    ) || catalog::condition_key_type(key) == Some(catalog::KeyType::Arn)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Parses `text` as a `kind` document of `test.json`.
    pub(in crate::policy) fn parse_with(
        kind: PolicyKind,
        text: &str,
    ) -> (Option<Policy>, Findings) {
        let mut f = Findings::new();
        let node = json::parse(text).unwrap();
        let p = parse_policy(&node, kind, &Origin::file("test.json"), &mut f);
        (p, f)
    }

    /// The codes of the findings, in order.
    pub(in crate::policy) fn codes(f: &Findings) -> Vec<IssueCode> {
        f.iter().map(|f| f.issue_code).collect()
    }

    #[test]
    fn control_characters_in_principals_resources_and_arn_conditions_are_errors() {
        let f = "arn:aws:lambda:us-east-1:111122223333:function:f";
        let statement = |principal: &str, resource: &str, condition: &str| {
            format!(
                r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny", {principal}, "Action": "lambda:InvokeFunction", {resource}, "Condition": {condition}}}}}"#
            )
        };
        let ok_principal = r#""Principal": {"AWS": "111122223333"}"#;
        let ok_resource = format!(r#""Resource": "{f}""#);
        let ok_condition = r#"{"StringEquals": {"aws:SourceAccount": "111122223333"}}"#;
        let cases = [
            (
                statement(
                    r#""Principal": {"AWS": "arn:aws:iam::111122223333:user/a\u0000"}"#,
                    &ok_resource,
                    ok_condition,
                ),
                IssueCode::InvalidPrincipal,
                "Statement.Principal.AWS",
            ),
            (
                statement(
                    r#""NotPrincipal": {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:role/r\u0007"]}"#,
                    &ok_resource,
                    ok_condition,
                ),
                IssueCode::InvalidPrincipal,
                "Statement.NotPrincipal.AWS[1]",
            ),
            (
                statement(
                    r#""Principal": {"Service": "s3.amazonaws.com\u0000"}"#,
                    &ok_resource,
                    ok_condition,
                ),
                IssueCode::InvalidPrincipal,
                "Statement.Principal.Service",
            ),
            (
                statement(
                    ok_principal,
                    &format!(r#""Resource": "{f}\u0000""#),
                    ok_condition,
                ),
                IssueCode::InvalidArnResource,
                "Statement.Resource",
            ),
            (
                statement(
                    ok_principal,
                    &format!(r#""NotResource": ["{f}", "{f}:\n"]"#),
                    ok_condition,
                ),
                IssueCode::InvalidArnResource,
                "Statement.NotResource[1]",
            ),
            (
                statement(
                    ok_principal,
                    &ok_resource,
                    &format!(r#"{{"ArnLike": {{"aws:SourceArn": "{f}\u001b"}}}}"#),
                ),
                IssueCode::InvalidConditionValue,
                "Statement.Condition.ArnLike.aws:SourceArn",
            ),
            (
                statement(
                    ok_principal,
                    &ok_resource,
                    &format!(r#"{{"StringEquals": {{"aws:PrincipalArn": ["{f}", "a\u0000"]}}}}"#),
                ),
                IssueCode::InvalidConditionValue,
                "Statement.Condition.StringEquals.aws:PrincipalArn",
            ),
        ];
        for (text, code, path) in cases {
            let (p, f) = parse_with(PolicyKind::Resource, &text);
            assert!(p.is_none(), "{text}");
            let errors: Vec<_> = f.errors().collect();
            assert_eq!(errors.len(), 1, "{text}: {f:?}");
            assert_eq!(errors[0].issue_code, code, "{text}");
            assert_eq!(errors[0].location.path, path, "{text}");
            assert!(
                errors[0].message.contains("control character"),
                "{:?}",
                errors[0]
            );
            assert!(
                !errors[0].message.contains(char::is_control),
                "{:?}",
                errors[0]
            );
        }
        // Control characters in other string conditions are values like any.
        let (p, f) = parse_with(
            PolicyKind::Resource,
            &statement(
                ok_principal,
                &ok_resource,
                r#"{"StringEquals": {"aws:UserAgent": "a\tb"}}"#,
            ),
        );
        assert!(p.is_some(), "{f:?}");
    }

    #[test]
    fn seed_identity_policy_parses() {
        let (p, f) = parse_with(
            PolicyKind::Managed,
            r#"{ "Version": "2012-10-17", "Statement": [ { "Sid": "ListExistingFunctions", "Effect": "Allow", "Action": [ "lambda:ListFunctions" ], "Resource": "*" } ] }"#,
        );
        let p = p.unwrap();
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(p.statements.len(), 1);
        assert!(p.statements[0].action.matches("lambda:listfunctions"));
    }

    #[test]
    fn errors_have_paths_and_positions() {
        let (p, f) = parse_with(
            PolicyKind::Managed,
            "{\"Version\":\"2012-10-17\",\"Statement\":[\n{\"Effect\":\"allow\",\"Action\":\"s3:*\",\"Resource\":\"*\"}]}",
        );
        assert!(p.is_none());
        let e = f.errors().next().unwrap();
        assert_eq!(e.issue_code, IssueCode::InvalidEffect);
        assert_eq!(e.location.path, "Statement[0].Effect");
        assert_eq!((e.location.line, e.location.column), (2, 11));
    }

    #[test]
    fn structural_errors() {
        let cases: &[(PolicyKind, &str, IssueCode)] = &[
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","NotAction":"s3:Get*","Resource":"*"}}"#,
                IssueCode::ActionAndNotAction,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
                IssueCode::PrincipalInIdentityPolicy,
            ),
            (
                PolicyKind::Resource,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"lambda:InvokeFunction","Resource":"*"}}"#,
                IssueCode::MissingPrincipal,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"bucket"}}"#,
                IssueCode::InvalidArnResource,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"soon"}}}}"#,
                IssueCode::InvalidConditionValue,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/99"}}}}"#,
                IssueCode::InvalidConditionValue,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEqualz":{"k":"v"}}}}"#,
                IssueCode::InvalidConditionOperator,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":"s3:*","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"s3:*","Resource":"*"}]}"#,
                IssueCode::DuplicateSid,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Effect":"Deny","Action":"s3:*","Resource":"*"}}"#,
                IssueCode::DuplicateKey,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","statement":[]}"#,
                IssueCode::UnknownElement,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s*:Get","Resource":"*"}}"#,
                IssueCode::InvalidAction,
            ),
            (
                PolicyKind::Resource,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/*"},"Action":"lambda:InvokeFunction","Resource":"*"}}"#,
                IssueCode::WildcardInPrincipal,
            ),
            (
                PolicyKind::Resource,
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotPrincipal":{"AWS":"111122223333"},"Action":"lambda:InvokeFunction","Resource":"*"}}"#,
                IssueCode::NotPrincipalWithAllow,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-17"}"#,
                IssueCode::MissingStatement,
            ),
            (
                PolicyKind::Managed,
                r#"{"Version":"2012-10-18","Statement":[]}"#,
                IssueCode::InvalidVersion,
            ),
        ];
        for (kind, text, code) in cases {
            let (p, f) = parse_with(*kind, text);
            assert!(p.is_none(), "{code}: accepted {text}");
            assert!(codes(&f).contains(code), "{code}: got {:?}", codes(&f));
        }
    }

    #[test]
    fn oversized_documents_are_rejected() {
        let actions: Vec<String> = (0..700).map(|i| format!("\"s3:Action{i}\"")).collect();
        let text = format!(
            r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":[{}],"Resource":"*"}}}}"#,
            actions.join(",")
        );
        let (p, f) = parse_with(PolicyKind::Managed, &text);
        assert!(p.is_none());
        assert!(codes(&f).contains(&IssueCode::PolicySizeExceeded));
    }

    #[test]
    fn principal_forms() {
        let (p, f) = parse_with(
            PolicyKind::Resource,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{
               "AWS":["111122223333","arn:aws:iam::444455556666:root","arn:aws:iam::111122223333:user/path/alice","arn:aws:iam::111122223333:role/r","arn:aws:sts::111122223333:assumed-role/r/s","AIDAJQABLZS4A3QDU576Q"],
               "Service":"s3.amazonaws.com","Federated":"cognito-identity.amazonaws.com","CanonicalUser":"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"},
               "Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-1:111122223333:function:f","Condition":{"StringEquals":{"aws:SourceAccount":"111122223333"}}}}"#,
        );
        let p = p.unwrap_or_else(|| panic!("{f:?}"));
        let PrincipalSpec::Listed(list) = &p.statements[0].principal.as_ref().unwrap().spec else {
            panic!()
        };
        assert_eq!(list.accounts.len(), 2);
        assert_eq!(list.arns.len(), 3);
        assert_eq!(list.unique_ids.len(), 1);
        assert_eq!(list.services.len(), 1);
        assert_eq!(list.federated.len(), 1);
        assert_eq!(list.canonical_users.len(), 1);
    }

    #[test]
    fn embedded_url_encoded_documents() {
        let node = json::parse("\"x\"").unwrap();
        let mut f = Findings::new();
        let text = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
        let p = parse_policy_text(text, &node, PolicyKind::Inline, &Origin::file("f"), &mut f);
        assert!(p.is_some(), "{f:?}");
        let bad = parse_policy_text(
            "{nope",
            &node,
            PolicyKind::Inline,
            &Origin::file("f"),
            &mut f,
        );
        assert!(bad.is_none());
        assert!(codes(&f).contains(&IssueCode::JsonSyntaxError));
    }
}
