//! From a Lambda REST API call (method, path, query, body) to the IAM action
//! and resource ARN it is authorized as.
//!
//! The route table is `data/lambda-rest-routes.tsv` (every operation of the
//! botocore Lambda models). It is compiled once, at start-up: one `matchit`
//! router per method, each resource template parsed into typed parts, and
//! every `${Name}` a template reads tied to where its value comes from (a
//! path capture, a query parameter or a body member), so a call costs one
//! router lookup and reads nothing but its own text. Function names follow
//! Lambda's `FunctionName` rules: a name, `name:qualifier`, a partial ARN
//! `ACCOUNT:function:NAME` or a full ARN, with the `Qualifier` query
//! parameter selecting a version or alias ARN; region and account come from
//! the ARN or from configuration.
//!
//! Resolution fails closed: a call whose decision needs its body gets none
//! unless the proxy sent all of it as JSON, a query parameter given twice
//! or also spelled in the path is refused (an upstream might read the other
//! copy), and the action's condition keys come with it (see [`keys`]).

mod keys;

use std::borrow::Cow;
use std::sync::LazyLock;

use crate::catalog::ActionInfo;
use crate::policy::arn::{is_account_id, Arn};

/// Where ARNs that the path does not spell out come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnDefaults {
    pub partition: String,
    pub region: Option<String>,
    pub account: Option<String>,
}

impl Default for ArnDefaults {
    fn default() -> Self {
        ArnDefaults {
            partition: "aws".into(),
            region: None,
            account: None,
        }
    }
}

pub use keys::CallKeys;

/// An HTTP request as ext_authz sees it.
#[derive(Debug, Clone, Copy)]
pub struct HttpCall<'a> {
    pub method: &'a str,
    /// The path, optionally with `?query`.
    pub path: &'a str,
    /// The request body, as the proxy forwarded it.
    pub body: Body<'a>,
}

/// The request body as the proxy forwarded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// No body reached iamd: the request had none, or the proxy does not
    /// forward bodies (Envoy without `with_request_body`).
    Absent,
    /// Only the first bytes reached iamd (Envoy's `max_request_bytes` with
    /// `allow_partial_message`, marked `x-envoy-auth-partial-body: true`).
    Truncated,
    /// A body that is not UTF-8 text.
    NotText,
    Complete(&'a str),
}

/// What a call is authorized as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub action: String,
    /// An ARN, or `*`.
    pub resource: String,
    /// The region the resource is in, for `aws:RequestedRegion`.
    pub region: Option<String>,
    /// The botocore operation, for logs.
    pub operation: &'static str,
    /// The action's condition keys as the call gives them.
    pub keys: CallKeys,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no AWS Lambda API route matches `{method} {path}`")]
    NoRoute { method: String, path: String },
    #[error("`{method} {path}` is {operation}, but {reason}")]
    Unresolvable {
        method: String,
        path: String,
        operation: &'static str,
        reason: String,
    },
}

/// Most captures in one route's path (the table's longest has three), so a
/// call's decoded captures fit in an array.
const MAX_CAPTURES: usize = 4;
/// Most body members one route's resource reads.
const MAX_BODY_CAPTURES: usize = 2;

/// Where a template's `${Name}` takes its value, settled when the table
/// compiles. A name the path captures comes from the path, one of a route's
/// `body_captures` from the JSON body (a query parameter of either name is
/// refused); any other from the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The path's n-th capture.
    Path(usize),
    /// The query parameter of exactly this name.
    Query(&'static str),
    /// The route's n-th body capture.
    Body(usize),
}

impl Source {
    fn of(name: &'static str, captures: &[&'static str], body: &[&'static str]) -> Source {
        if let Some(i) = captures.iter().position(|c| *c == name) {
            Source::Path(i)
        } else if let Some(i) = body.iter().position(|b| *b == name) {
            Source::Body(i)
        } else {
            Source::Query(name)
        }
    }
}

/// A piece of an ARN template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Lit(&'static str),
    Partition,
    Region,
    Account,
    /// A captured identifier; a captured value that is itself an ARN is the
    /// whole resource.
    Var(&'static str, Source),
}

/// What a function ARN template does with a qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualified {
    /// `...function:${FunctionName}`: the unqualified function.
    Never,
    /// `...function:${FunctionName}[:${Qualifier}]`.
    IfGiven,
    /// `...function:${FunctionName}:${Qualifier}`.
    Always,
}

/// A route's resource template, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    /// `*`: the action has no resource-level permissions.
    Any,
    /// `${ResourceArn}`: the captured value is the ARN.
    Whole(&'static str, Source),
    /// `arn:${Partition}:lambda:${Region}:${Account}:function:${FunctionName}`
    /// and its qualifier, by Lambda's `FunctionName` rules.
    Function {
        name: Source,
        qualifier: Source,
        qualified: Qualified,
    },
    /// Any other ARN template.
    Template(Box<[Part]>),
}

const FUNCTION_TEMPLATE: &str =
    "arn:${Partition}:lambda:${Region}:${Account}:function:${FunctionName}";

impl Resource {
    fn compile(
        template: &'static str,
        captures: &[&'static str],
        body: &[&'static str],
    ) -> Result<Resource, String> {
        let source = |name| Source::of(name, captures, body);
        if template == "*" {
            return Ok(Resource::Any);
        }
        if template.contains("${FunctionName}") {
            let qualified = match template.strip_prefix(FUNCTION_TEMPLATE) {
                Some("") => Qualified::Never,
                Some("[:${Qualifier}]") => Qualified::IfGiven,
                Some(":${Qualifier}") => Qualified::Always,
                _ => {
                    return Err(format!(
                        "the function ARN template `{template}` has an unknown form"
                    ))
                }
            };
            return Ok(Resource::Function {
                name: source("FunctionName"),
                qualifier: source("Qualifier"),
                qualified,
            });
        }
        if let Some(name) = template
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .filter(|n| !n.contains(['$', '{', '}']))
        {
            return Ok(Resource::Whole(name, source(name)));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Lit(&rest[..start]));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("bad resource template `{template}`"))?;
            parts.push(match &after[..end] {
                "Partition" => Part::Partition,
                "Region" => Part::Region,
                "Account" => Part::Account,
                name => Part::Var(name, source(name)),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest));
        }
        Ok(Resource::Template(parts.into()))
    }
}

/// One row of the table, compiled.
#[derive(Debug)]
struct Route {
    method: &'static str,
    /// The path template, as the router reads it (`/2015-03-31/functions/{FunctionName}`).
    path: &'static str,
    /// The names of the path's captures, in order (the router's values come in that order).
    captures: Box<[&'static str]>,
    /// A `name=value` the query must contain (`find=LayerVersion`).
    query: Option<(&'static str, &'static str)>,
    action: &'static str,
    /// The Service Authorization Reference's entry for the action.
    info: Option<&'static ActionInfo>,
    resource: Resource,
    body_captures: Box<[&'static str]>,
    /// Deciding needs the JSON body (a body capture, or the action's keys).
    needs_body: bool,
    /// Where the function of `lambda:FunctionArn` comes from when the
    /// resource does not name one; none when the body names it (the keys
    /// read it there).
    function_name: Option<Source>,
    /// The action takes `lambda:FunctionArn`.
    takes_function_arn: bool,
    operation: &'static str,
}

impl Route {
    fn compile(line: &'static str) -> Result<Route, String> {
        let cols: Vec<&'static str> = line.split('\t').collect();
        let col = |i: usize| {
            cols.get(i)
                .copied()
                .ok_or_else(|| format!("the route `{line}` has no column {}", i + 1))
        };
        let method = col(0)?;
        let (path, query) = match col(1)?.split_once('?') {
            Some((p, q)) => {
                let q = q
                    .split_once('=')
                    .ok_or_else(|| format!("the route `{line}` has a query without `=`"))?;
                (p, Some(q))
            }
            None => (col(1)?, None),
        };
        if !path.starts_with('/') {
            return Err(format!("the route `{line}` has a relative path"));
        }
        let captures: Box<[&'static str]> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        if captures.len() > MAX_CAPTURES {
            return Err(format!(
                "the route `{line}` has over {MAX_CAPTURES} captures"
            ));
        }
        let action = col(2)?;
        let body_captures: Box<[&'static str]> = cols
            .get(4)
            .map(|b| b.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if body_captures.len() > MAX_BODY_CAPTURES {
            return Err(format!(
                "the route `{line}` has over {MAX_BODY_CAPTURES} body captures"
            ));
        }
        let resource = Resource::compile(col(3)?, &captures, &body_captures)?;
        let info = crate::catalog::lambda_action(action);
        Ok(Route {
            method,
            path,
            query,
            action,
            info,
            needs_body: !body_captures.is_empty() || keys::reads_body(action),
            function_name: (!body_captures.contains(&"FunctionName"))
                .then(|| Source::of("FunctionName", &captures, &body_captures)),
            takes_function_arn: info.is_some_and(|a| a.supports_key("lambda:FunctionArn")),
            resource,
            captures,
            body_captures,
            operation: cols.get(5).copied().unwrap_or_default(),
        })
    }

    /// Literal segments of the path: the more, the more specific the route.
    fn literals(&self) -> usize {
        self.path.split('/').skip(1).count() - self.captures.len()
    }
}

/// The Lambda REST routes, compiled.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Most specific first: a query requirement, then more literal segments.
    routes: Vec<Route>,
    /// Per method, a router from the path to its routes (indices into
    /// `routes`; several only where a query requirement tells them apart,
    /// the ones with one first).
    methods: Vec<(&'static str, matchit::Router<Box<[usize]>>)>,
}

static LAMBDA: LazyLock<RouteTable> = LazyLock::new(|| {
    RouteTable::compile(include_str!("../../data/lambda-rest-routes.tsv")).unwrap_or_else(|e| {
        // Fail closed: no route resolves. The unit tests compile the table.
        tracing::error!(error = %e, "the Lambda route table does not compile; every call will be denied");
        RouteTable::default()
    })
});

impl RouteTable {
    /// The table of `data/lambda-rest-routes.tsv`, compiled on first use.
    pub fn lambda() -> &'static RouteTable {
        &LAMBDA
    }

    fn compile(text: &'static str) -> Result<RouteTable, String> {
        let mut routes = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .skip(1)
            .map(Route::compile)
            .collect::<Result<Vec<Route>, String>>()?;
        routes.sort_by_key(|r| (r.query.is_none(), std::cmp::Reverse(r.literals())));
        // Routes of one method and path share a router entry.
        let mut entries: Vec<(&'static str, &'static str, Vec<usize>)> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match entries
                .iter_mut()
                .find(|(m, p, _)| *m == r.method && *p == r.path)
            {
                Some((_, _, ids)) => ids.push(i),
                None => entries.push((r.method, r.path, vec![i])),
            }
        }
        let mut methods: Vec<(&'static str, matchit::Router<Box<[usize]>>)> = Vec::new();
        for (method, path, ids) in entries {
            let i = match methods.iter().position(|(m, _)| *m == method) {
                Some(i) => i,
                None => {
                    methods.push((method, matchit::Router::new()));
                    methods.len() - 1
                }
            };
            methods[i]
                .1
                .insert(path, ids.into_boxed_slice())
                .map_err(|e| format!("the route `{method} {path}` does not fit the router: {e}"))?;
        }
        Ok(RouteTable { routes, methods })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route as `(method, path template, action)`, for tests and docs.
    pub fn routes(&self) -> impl Iterator<Item = (&'static str, String, &'static str)> + '_ {
        self.routes.iter().map(|r| {
            let mut path = r.path.to_owned();
            if let Some((k, v)) = r.query {
                path.push_str(&format!("?{k}={v}"));
            }
            (r.method, path, r.action)
        })
    }

    /// Resolves a call to its action and resource.
    pub fn resolve(
        &self,
        call: HttpCall<'_>,
        defaults: &ArnDefaults,
    ) -> Result<Resolved, RouteError> {
        let (path, query) = call.path.split_once('?').unwrap_or((call.path, ""));
        let query: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        let no_route = || RouteError::NoRoute {
            method: call.method.to_owned(),
            path: crate::finding::echo(call.path).to_string(),
        };
        let found = self
            .methods
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(call.method))
            .and_then(|(_, router)| router.at(path).ok())
            .ok_or_else(no_route)?;
        // A capture is a whole, non-empty segment (`/functions//invocations`
        // names no function). No two routes of a method overlap but by
        // their query requirement (a unit test checks), so refusing here
        // passes over no other route.
        let mut captured: [Cow<'_, str>; MAX_CAPTURES] = Default::default();
        for (slot, (_, v)) in captured.iter_mut().zip(found.params.iter()) {
            if v.is_empty() {
                return Err(no_route());
            }
            *slot = decode(v);
        }
        let route = found
            .value
            .iter()
            .filter_map(|&i| self.routes.get(i))
            .find(|r| {
                r.query
                    .is_none_or(|(k, v)| query.iter().any(|(qk, qv)| qk == k && qv == v))
            })
            .ok_or_else(no_route)?;
        let unresolvable = |reason: String| RouteError::Unresolvable {
            method: call.method.to_owned(),
            path: crate::finding::echo(call.path).to_string(),
            operation: route.operation,
            reason,
        };
        // One value per parameter: Lambda reads one, and an upstream that
        // reads another copy than iamd did must not be possible.
        let mut tag_keys: Vec<String> = Vec::new();
        for (i, (k, v)) in query.iter().enumerate() {
            if k == "tagKeys" {
                tag_keys.push(v.clone().into_owned());
                continue;
            }
            if k.eq_ignore_ascii_case("tagKeys") {
                return Err(unresolvable(format!(
                    "the query parameter `{}` differs from `tagKeys` only in case",
                    crate::finding::echo(k)
                )));
            }
            if let Some(c) = route.captures.iter().find(|c| c.eq_ignore_ascii_case(k)) {
                return Err(unresolvable(format!(
                    "the query parameter `{}` repeats the path's `{c}`",
                    crate::finding::echo(k)
                )));
            }
            // The body names what Lambda acts on (CreateFunction's function);
            // Lambda ignores a query parameter of the same name.
            if let Some(b) = route
                .body_captures
                .iter()
                .find(|b| b.eq_ignore_ascii_case(k))
            {
                return Err(unresolvable(format!(
                    "the query parameter `{}` repeats the request body's `{b}`",
                    crate::finding::echo(k)
                )));
            }
            if query[..i]
                .iter()
                .any(|(other, _)| other.eq_ignore_ascii_case(k))
            {
                return Err(unresolvable(format!(
                    "the query parameter `{}` is given more than once",
                    crate::finding::echo(k)
                )));
            }
        }
        // The body is parsed here, once; the keys read the same map.
        let body = if route.needs_body {
            Some(json_body(call.body).map_err(unresolvable)?)
        } else {
            None
        };
        let mut from_body: [&str; MAX_BODY_CAPTURES] = [""; MAX_BODY_CAPTURES];
        for (slot, name) in from_body.iter_mut().zip(&route.body_captures) {
            *slot = match body.as_ref().and_then(|b| b.get(*name)) {
                Some(serde_json::Value::String(s)) => s.as_str(),
                Some(_) => {
                    return Err(unresolvable(format!(
                        "the request body's `{name}` is not a string"
                    )))
                }
                None => return Err(unresolvable(format!("the request body has no `{name}`"))),
            };
        }
        let value = |source: Source| match source {
            Source::Path(i) => captured.get(i).map(AsRef::as_ref),
            Source::Query(name) => query_value(&query, name),
            Source::Body(i) => from_body.get(i).copied(),
        };
        let (resolved, named_function) =
            expand(&route.resource, &value, defaults).map_err(unresolvable)?;
        // lambda:FunctionArn, for the actions that support it, from a
        // function the path names (the body's are read with the keys).
        let function_arn = match named_function {
            Some(f) => Some(f),
            None => route
                .function_name
                .and_then(value)
                .map(|n| FunctionRef::parse(n).and_then(|f| f.arn(defaults, None)))
                .transpose()
                .map_err(unresolvable)?,
        }
        .filter(|_| route.takes_function_arn);
        let keys = keys::derive(
            route.info,
            route.action,
            body.as_ref(),
            function_arn.as_deref(),
            &tag_keys,
            defaults,
        )
        .map_err(unresolvable)?;
        Ok(Resolved {
            action: route.action.to_owned(),
            operation: route.operation,
            keys,
            ..resolved
        })
    }
}

/// The JSON object a call's decision reads, or why there is none.
fn json_body(body: Body<'_>) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let text = match body {
        Body::Complete(text) if !text.trim().is_empty() => text,
        Body::Complete(_) | Body::Absent => {
            return Err(
                "deciding it needs the JSON request body, which did not reach iamd (configure the proxy to send it: Envoy's `with_request_body`)".into(),
            )
        }
        Body::Truncated => {
            return Err(
                "deciding it needs the whole JSON request body and the proxy sent only its first bytes (raise Envoy's `with_request_body.max_request_bytes`)".into(),
            )
        }
        Body::NotText => return Err("its request body is not UTF-8 JSON".into()),
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("its request body is not a JSON object".into()),
        Err(e) => Err(format!("its request body is not valid JSON: {e}")),
    }
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

/// A `FunctionName` as Lambda accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FunctionRef<'a> {
    partition: Option<&'a str>,
    region: Option<&'a str>,
    account: Option<&'a str>,
    name: &'a str,
    qualifier: Option<&'a str>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 140
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_qualifier(s: &str) -> bool {
    s == "$LATEST"
        || s == "$LATEST.PUBLISHED"
        || (!s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

impl<'a> FunctionRef<'a> {
    fn parse(s: &'a str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a function name, `name:qualifier`, partial ARN or function ARN")
        };
        if s.len() > 256 {
            return Err(bad());
        }
        let parts: Vec<&str> = s.split(':').collect();
        let (partition, region, account, rest): (
            Option<&str>,
            Option<&str>,
            Option<&str>,
            &[&str],
        ) = match parts.as_slice() {
            ["arn", partition, "lambda", region, account, "function", rest @ ..] => {
                (Some(*partition), Some(*region), Some(*account), rest)
            }
            [account, "function", rest @ ..] if is_account_id(account) => {
                (None, None, Some(*account), rest)
            }
            rest => (None, None, None, rest),
        };
        let (name, qualifier) = match rest {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            _ => return Err(bad()),
        };
        // A full ARN names its partition and region (`arn::lambda:...` is no ARN).
        let label = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !valid_name(name)
            || qualifier.is_some_and(|q| !valid_qualifier(q))
            || account.is_some_and(|a| !is_account_id(a))
            || partition.is_some_and(|p| !label(p))
            || region.is_some_and(|r| !label(r))
        {
            return Err(bad());
        }
        Ok(FunctionRef {
            partition,
            region,
            account,
            name,
            qualifier,
        })
    }

    /// The function's ARN, with `qualifier` (or the name's own) appended.
    fn arn(&self, defaults: &ArnDefaults, qualifier: Option<&str>) -> Result<String, String> {
        let partition = self.partition.unwrap_or(&defaults.partition);
        let region = self.region.or(defaults.region.as_deref()).ok_or_else(|| {
            format!(
                "`{}` gives no region and iamd has no --lambda-region configured",
                self.name
            )
        })?;
        let account = self
            .account
            .or(defaults.account.as_deref())
            .ok_or_else(|| {
                format!(
                    "`{}` gives no account and iamd has no --lambda-account configured",
                    self.name
                )
            })?;
        let mut arn = String::with_capacity(
            40 + partition.len() + region.len() + self.name.len() + qualifier.map_or(0, str::len),
        );
        for part in [
            "arn:",
            partition,
            ":lambda:",
            region,
            ":",
            account,
            ":function:",
            self.name,
        ] {
            arn.push_str(part);
        }
        if let Some(q) = qualifier {
            arn.push(':');
            arn.push_str(q);
        }
        Ok(arn)
    }
}

/// The value of the query parameter named exactly `name` (`tagKeys`, a list,
/// is never one value).
fn query_value<'q>(query: &'q [(Cow<'_, str>, Cow<'_, str>)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name && k != "tagKeys")
        .map(|(_, v)| v.as_ref())
}

/// Expands a route's resource template with the call's values; with it,
/// the unqualified ARN of the function the template names, if any.
fn expand<'v>(
    resource: &Resource,
    value: &dyn Fn(Source) -> Option<&'v str>,
    defaults: &ArnDefaults,
) -> Result<(Resolved, Option<String>), String> {
    let resolved = |resource: String, function_arn: Option<String>, region: Option<String>| {
        let r = Resolved {
            action: String::new(),
            resource,
            region,
            operation: "",
            keys: CallKeys::default(),
        };
        (r, function_arn)
    };
    let var = |name: &str, source: Source| -> Result<&'v str, String> {
        value(source).ok_or_else(|| format!("its `{name}` is missing"))
    };
    let parts = match resource {
        Resource::Any => return Ok(resolved("*".into(), None, defaults.region.clone())),
        Resource::Whole(name, source) => {
            let value = var(name, *source)?;
            let arn = Arn::parse(value).map_err(|e| format!("its `{name}` is not an ARN: {e}"))?;
            let region = Some(arn.region.to_owned()).filter(|r| !r.is_empty());
            return Ok(resolved(value.to_owned(), None, region));
        }
        Resource::Function {
            name,
            qualifier,
            qualified,
        } => {
            let f = FunctionRef::parse(var("FunctionName", *name)?)?;
            let qualifier = match (f.qualifier, value(*qualifier)) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!("the qualifier in the function name (`{a}`) differs from the Qualifier parameter (`{b}`)"))
                }
                (Some(q), _) | (None, Some(q)) => Some(q),
                (None, None) => None,
            };
            if let Some(q) = qualifier.filter(|q| !valid_qualifier(q)) {
                return Err(format!("`{q}` is not a valid qualifier"));
            }
            let qualifier =
                match qualified {
                    Qualified::Never => None,
                    Qualified::IfGiven => qualifier,
                    Qualified::Always => Some(qualifier.ok_or(
                        "it needs a qualifier (the Qualifier parameter or `name:qualifier`)",
                    )?),
                };
            let unqualified = f.arn(defaults, None)?;
            let mut arn = unqualified.clone();
            if let Some(q) = qualifier {
                arn.push(':');
                arn.push_str(q);
            }
            let region = f
                .region
                .map(str::to_owned)
                .or_else(|| defaults.region.clone());
            return Ok(resolved(arn, Some(unqualified), region));
        }
        Resource::Template(parts) => parts,
    };
    // Any other ARN template: a captured value that is already an ARN wins.
    let mut out = String::with_capacity(128);
    for part in parts.iter() {
        let value = match *part {
            Part::Lit(text) => text,
            Part::Partition => defaults.partition.as_str(),
            Part::Region => defaults
                .region
                .as_deref()
                .ok_or("iamd has no --lambda-region configured to build its ARN")?,
            Part::Account => defaults
                .account
                .as_deref()
                .ok_or("iamd has no --lambda-account configured to build its ARN")?,
            Part::Var(name, source) => {
                let v = var(name, source)?;
                if v.starts_with("arn:") {
                    Arn::parse(v).map_err(|e| format!("its `{name}` is not an ARN: {e}"))?;
                    return Ok(resolved(v.to_owned(), None, defaults.region.clone()));
                }
                // Lambda's identifiers (names, versions, UUIDs) are letters,
                // digits, `-`, `_` and `.`; anything else cannot be one.
                let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
                if v.is_empty() || v.len() > 256 || !v.bytes().all(plain) {
                    return Err(format!(
                        "its `{name}` (`{}`) is not a plain identifier",
                        crate::finding::echo(v)
                    ));
                }
                v
            }
        };
        out.push_str(value);
    }
    Arn::parse(&out).map_err(|e| {
        format!(
            "it would name the resource `{}`: {e}",
            crate::finding::echo(&out)
        )
    })?;
    Ok(resolved(out, None, defaults.region.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ArnDefaults {
        ArnDefaults {
            partition: "aws".into(),
            region: Some("us-east-1".into()),
            account: Some("111122223333".into()),
        }
    }

    fn resolve(method: &str, path: &str) -> Result<Resolved, RouteError> {
        RouteTable::lambda().resolve(
            HttpCall {
                method,
                path,
                body: Body::Absent,
            },
            &defaults(),
        )
    }

    const F: &str = "arn:aws:lambda:us-east-1:111122223333:function";

    #[test]
    fn invoke_unqualified_alias_version_and_arns() {
        let r = resolve("POST", "/2015-03-31/functions/my-fn/invocations").unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("lambda:InvokeFunction", &*format!("{F}:my-fn"))
        );
        let r = resolve(
            "POST",
            "/2015-03-31/functions/my-fn/invocations?Qualifier=prod",
        )
        .unwrap();
        assert_eq!(r.resource, format!("{F}:my-fn:prod"));
        let r = resolve("POST", "/2015-03-31/functions/my-fn:7/invocations").unwrap();
        assert_eq!(r.resource, format!("{F}:my-fn:7"));
        let r = resolve("POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A444455556666%3Afunction%3Ax/invocations").unwrap();
        assert_eq!(
            r.resource,
            "arn:aws:lambda:eu-west-1:444455556666:function:x"
        );
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        let r = resolve(
            "POST",
            "/2015-03-31/functions/444455556666:function:x:prod/invocations",
        )
        .unwrap();
        assert_eq!(
            r.resource,
            "arn:aws:lambda:us-east-1:444455556666:function:x:prod"
        );
        let e = resolve(
            "POST",
            "/2015-03-31/functions/my-fn:1/invocations?Qualifier=2",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("differs from the Qualifier parameter"),
            "{e}"
        );
        let e = resolve("POST", "/2015-03-31/functions/bad%20name/invocations").unwrap_err();
        assert!(e.to_string().contains("is not a function name"), "{e}");
    }

    #[test]
    fn lists_layers_mappings_and_unknown_routes() {
        assert_eq!(
            resolve("GET", "/2015-03-31/functions").unwrap().resource,
            "*"
        );
        assert_eq!(
            resolve("GET", "/2015-03-31/functions/").unwrap_err(),
            RouteError::NoRoute {
                method: "GET".into(),
                path: "/2015-03-31/functions/".into()
            }
        );
        let r = resolve(
            "GET",
            "/2015-03-31/event-source-mappings/14e0db71-0000-4e2a-9c5f-6a6e0c2f7f11",
        )
        .unwrap();
        assert_eq!(r.action, "lambda:GetEventSourceMapping");
        assert_eq!(r.resource, "arn:aws:lambda:us-east-1:111122223333:event-source-mapping:14e0db71-0000-4e2a-9c5f-6a6e0c2f7f11");
        let r = resolve("GET", "/2018-10-31/layers/my-layer/versions/3").unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            (
                "lambda:GetLayerVersion",
                "arn:aws:lambda:us-east-1:111122223333:layer:my-layer:3"
            )
        );
        let r = resolve("GET", "/2018-10-31/layers?find=LayerVersion&Arn=arn%3Aaws%3Alambda%3Aus-east-1%3A444455556666%3Alayer%3Al%3A2").unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            (
                "lambda:GetLayerVersion",
                "arn:aws:lambda:us-east-1:444455556666:layer:l:2"
            )
        );
        assert_eq!(
            resolve("GET", "/2018-10-31/layers").unwrap().action,
            "lambda:ListLayers"
        );
        assert!(matches!(
            resolve("GET", "/nope"),
            Err(RouteError::NoRoute { .. })
        ));
        assert!(matches!(
            resolve("PATCH", "/2015-03-31/functions/f/invocations"),
            Err(RouteError::NoRoute { .. })
        ));
    }

    #[test]
    fn permissions_and_required_qualifiers() {
        let r = resolve_body(
            "POST",
            "/2015-03-31/functions/f/policy?Qualifier=prod",
            Body::Complete(r#"{"Principal": "s3.amazonaws.com"}"#),
        )
        .unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("lambda:AddPermission", &*format!("{F}:f:prod"))
        );
        let r = resolve("DELETE", "/2015-03-31/functions/f/policy/sid-1").unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("lambda:RemovePermission", &*format!("{F}:f"))
        );
        let e = resolve("GET", "/2019-09-30/functions/f/provisioned-concurrency").unwrap_err();
        assert!(e.to_string().contains("needs a qualifier"), "{e}");
        let r = resolve(
            "GET",
            "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1",
        )
        .unwrap();
        assert_eq!(r.resource, format!("{F}:f:1"));
    }

    #[test]
    fn function_url_actions_carry_the_function_arn() {
        let r = resolve("GET", "/2021-10-31/functions/f/url?Qualifier=live").unwrap();
        assert_eq!(key(&r, "lambda:FunctionArn"), Some(&[format!("{F}:f")][..]));
        assert_eq!(r.resource, format!("{F}:f:live"));
        let invoke = resolve("POST", "/2015-03-31/functions/f/invocations").unwrap();
        assert_eq!(key(&invoke, "lambda:FunctionArn"), None);
    }

    #[test]
    fn body_captures_and_missing_configuration() {
        let call = HttpCall {
            method: "POST",
            path: "/2015-03-31/functions",
            body: Body::Complete(r#"{"FunctionName": "new-fn", "Runtime": "python3.13"}"#),
        };
        let r = RouteTable::lambda().resolve(call, &defaults()).unwrap();
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            ("lambda:CreateFunction", &*format!("{F}:new-fn"))
        );
        let call = HttpCall {
            method: "POST",
            path: "/2015-03-31/functions",
            body: Body::Absent,
        };
        let e = RouteTable::lambda().resolve(call, &defaults()).unwrap_err();
        assert!(e.to_string().contains("request body"), "{e}");
        let e = RouteTable::lambda().resolve(
            HttpCall {
                method: "POST",
                path: "/2015-03-31/functions/f/invocations",
                body: Body::Absent,
            },
            &ArnDefaults::default(),
        );
        assert!(e.unwrap_err().to_string().contains("--lambda-region"));
    }

    /// Every route of the table resolves from a path built from its template.
    #[test]
    fn every_route_resolves() {
        let table = RouteTable::lambda();
        assert!(table.len() >= 160, "{}", table.len());
        for (method, template, action) in table.routes() {
            let mut path = String::new();
            for seg in template
                .split('?')
                .next()
                .unwrap_or_default()
                .split('/')
                .skip(1)
            {
                path.push('/');
                path.push_str(match seg {
                    "{FunctionName}" | "{functionName}" => "my-fn",
                    "{Qualifier}" => "prod",
                    "{VersionNumber}" => "3",
                    "{ResourceArn}" | "{resourceArn}" | "{Resource}" | "{resource}" => "arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Afunction%3Amy-fn",
                    "{CodeSigningConfigArn}" => "arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Acode-signing-config%3Acsc-0123456789abcdef0",
                    "{DurableExecutionArn}" => "arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Afunction%3Amy-fn%3A1%2Fdurable-execution%2Fe%2Fid",
                    s if s.starts_with('{') => "id-1",
                    s => s,
                });
            }
            let mut query = template
                .split_once('?')
                .map(|(_, q)| q.to_owned())
                .unwrap_or_default();
            if query.starts_with("find=") {
                query
                    .push_str("&Arn=arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Alayer%3Al%3A1");
            }
            if query.is_empty()
                && (template.contains("provisioned-concurrency")
                    || template.contains("function-scaling-config"))
            {
                query = "Qualifier=1".into();
            }
            let full = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            let body = r#"{"FunctionName": "my-fn", "CapacityProviderName": "cp", "imageIdentifier": "img",
                "Principal": "s3.amazonaws.com", "AuthType": "AWS_IAM", "Tags": {},
                "CodeSigningConfigArn": "arn:aws:lambda:us-east-1:111122223333:code-signing-config:csc-1"}"#;
            let r = table
                .resolve(
                    HttpCall {
                        method,
                        path: &full,
                        body: Body::Complete(body),
                    },
                    &defaults(),
                )
                .unwrap_or_else(|e| panic!("{method} {template}: {e}"));
            assert!(r.action.starts_with("lambda:"), "{method} {template}");
            assert!(
                r.resource == "*" || Arn::parse(&r.resource).is_ok(),
                "{method} {template}: {}",
                r.resource
            );
            // The route found is this route (or an identical one of another model).
            assert_eq!(r.action, action, "{method} {full}");
        }
    }

    fn resolve_body(method: &str, path: &str, body: Body<'_>) -> Result<Resolved, RouteError> {
        RouteTable::lambda().resolve(HttpCall { method, path, body }, &defaults())
    }

    fn key<'r>(r: &'r Resolved, name: &str) -> Option<&'r [String]> {
        r.keys
            .context
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn a_body_the_decision_needs_must_arrive_whole_and_well_typed() {
        let esm = "/2015-03-31/event-source-mappings";
        let r = resolve_body(
            "POST",
            esm,
            Body::Complete(r#"{"FunctionName": "f", "Tags": {"team": "red"}}"#),
        )
        .unwrap();
        assert_eq!(key(&r, "lambda:FunctionArn"), Some(&[format!("{F}:f")][..]));
        assert_eq!(
            key(&r, "aws:RequestTag/team"),
            Some(&["red".to_owned()][..])
        );
        assert_eq!(key(&r, "aws:TagKeys"), Some(&["team".to_owned()][..]));
        assert!(r.keys.unknown.is_empty(), "{:?}", r.keys.unknown);
        for (body, why) in [
            (Body::Absent, "did not reach iamd"),
            (Body::Complete("  "), "did not reach iamd"),
            (Body::Truncated, "only its first bytes"),
            (Body::NotText, "not UTF-8"),
            (Body::Complete("FunctionName=f"), "not valid JSON"),
            (Body::Complete("[1]"), "not a JSON object"),
            (
                Body::Complete(r#"{"FunctionName": 5}"#),
                "`FunctionName` is not a string",
            ),
            (Body::Complete(r#"{"Tags": {}}"#), "has no `FunctionName`"),
            (
                Body::Complete(r#"{"FunctionName": "f", "Tags": {"a": 1}}"#),
                "tag `a` is not a string",
            ),
            (
                Body::Complete(r#"{"FunctionName": "bad name"}"#),
                "is not a function name",
            ),
        ] {
            let e = resolve_body("POST", esm, body).unwrap_err().to_string();
            assert!(e.contains(why), "{body:?}: {e}");
        }
        // CreateFunction's resource and keys come from its body too.
        let e = resolve_body("POST", "/2015-03-31/functions", Body::Truncated).unwrap_err();
        assert!(e.to_string().contains("only its first bytes"), "{e}");
        let r = resolve_body(
            "POST",
            "/2015-03-31/functions",
            Body::Complete(r#"{"FunctionName": "g", "Layers": ["arn:aws:lambda:us-east-1:111122223333:layer:l:1"],
                "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": []}}"#),
        )
        .unwrap();
        assert_eq!(r.resource, format!("{F}:g"));
        assert_eq!(
            key(&r, "lambda:SubnetIds"),
            Some(&["subnet-1".to_owned()][..])
        );
        assert_eq!(key(&r, "lambda:SecurityGroupIds"), Some(&[][..]));
        assert_eq!(
            r.keys.unknown,
            ["lambda:VpcIds"],
            "Lambda derives the VPC from the subnets"
        );
        // Routes that do not read the body decide without it.
        assert!(resolve_body(
            "POST",
            "/2015-03-31/functions/f/invocations",
            Body::Truncated
        )
        .is_ok());
    }

    #[test]
    fn keys_only_lambda_knows_are_unknown_never_absent() {
        let r = resolve("GET", "/2015-03-31/event-source-mappings/u-1").unwrap();
        assert_eq!(r.keys.unknown, ["lambda:FunctionArn"]);
        let r = resolve_body(
            "PUT",
            "/2015-03-31/event-source-mappings/u-1",
            Body::Complete(r#"{"BatchSize": 5}"#),
        )
        .unwrap();
        assert_eq!(r.keys.unknown, ["lambda:FunctionArn"]);
        let r = resolve_body(
            "PUT",
            "/2015-03-31/event-source-mappings/u-1",
            Body::Complete(r#"{"FunctionName": "f"}"#),
        )
        .unwrap();
        assert!(r.keys.unknown.is_empty());
        assert_eq!(key(&r, "lambda:FunctionArn"), Some(&[format!("{F}:f")][..]));
        let r = resolve("DELETE", "/2015-03-31/functions/f/policy/sid-1").unwrap();
        assert_eq!(
            r.keys.unknown,
            ["lambda:Principal", "lambda:FunctionUrlAuthType"]
        );
        let r = resolve_body(
            "POST",
            "/2015-03-31/functions/f/policy",
            Body::Complete(r#"{"StatementId": "s", "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com"}"#),
        )
        .unwrap();
        assert_eq!(
            key(&r, "lambda:Principal"),
            Some(&["s3.amazonaws.com".to_owned()][..])
        );
        assert!(r.keys.unknown.is_empty(), "{:?}", r.keys.unknown);
        let r = resolve("DELETE", "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Afunction%3Af?tagKeys=a&tagKeys=b").unwrap();
        assert_eq!(
            key(&r, "aws:TagKeys"),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
    }

    #[test]
    fn repeated_or_ambiguous_parameters_are_refused() {
        let e = resolve(
            "POST",
            "/2015-03-31/functions/f/invocations?Qualifier=prod&Qualifier=%24LATEST",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`Qualifier` is given more than once"),
            "{e}"
        );
        let e = resolve(
            "POST",
            "/2015-03-31/functions/f/invocations?Qualifier=prod&qualifier=1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("given more than once"), "{e}");
        let e = resolve("POST", "/2015-03-31/functions/f/invocations?FunctionName=g").unwrap_err();
        assert!(
            e.to_string().contains("repeats the path's `FunctionName`"),
            "{e}"
        );
        let e = resolve(
            "DELETE",
            "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Afunction%3Af?TagKeys=a&tagKeys=b",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only in case"), "{e}");
        let e = resolve(
            "GET",
            "/2015-03-31/functions/arn::lambda:us-east-1:111122223333:function:f/aliases",
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not a function name"), "{e}");
        let e = resolve("GET", "/2015-03-31/functions?Marker=a&Marker=b").unwrap_err();
        assert!(
            e.to_string().contains("`Marker` is given more than once"),
            "{e}"
        );
    }

    /// Every row of the table compiles (a table that does not is replaced by
    /// an empty one, which refuses every call).
    #[test]
    fn the_table_compiles_whole() {
        let text = include_str!("../../data/lambda-rest-routes.tsv");
        let rows = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count()
            - 1;
        let table = RouteTable::compile(text).unwrap();
        assert_eq!(table.len(), rows);
        assert_eq!(RouteTable::lambda().len(), rows);
    }

    /// The router finds a route by its path alone, then tells routes of one
    /// path apart by their query requirement. That is the old first-match
    /// rule only if two routes of a method with different path templates
    /// never match one path; a capture matches any non-empty segment.
    #[test]
    fn routes_of_a_method_overlap_only_by_their_query() {
        let table = RouteTable::lambda();
        let segments = |r: &Route| r.path.split('/').skip(1).collect::<Vec<_>>();
        let capture = |s: &str| s.starts_with('{');
        for a in &table.routes {
            for b in &table.routes {
                if a.method != b.method || a.path == b.path {
                    continue;
                }
                let (sa, sb) = (segments(a), segments(b));
                let overlap = sa.len() == sb.len()
                    && sa.iter().zip(&sb).all(|(x, y)| {
                        x == y || (capture(x) && !y.is_empty()) || (capture(y) && !x.is_empty())
                    });
                assert!(!overlap, "{} {} and {}", a.method, a.path, b.path);
            }
        }
    }

    /// CreateFunction creates the function its body names; Lambda ignores a
    /// `FunctionName` query parameter, so it must not name the resource.
    #[test]
    fn a_query_parameter_cannot_stand_in_for_a_body_member() {
        let e = resolve_body(
            "POST",
            "/2015-03-31/functions?FunctionName=allowed-fn",
            Body::Complete(r#"{"FunctionName": "other-fn"}"#),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "the query parameter `FunctionName` repeats the request body's `FunctionName`"
            ),
            "{e}"
        );
        let e = resolve_body(
            "POST",
            "/2025-11-30/capacity-providers?capacityprovidername=a",
            Body::Complete(r#"{"CapacityProviderName": "b"}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("repeats the request body's"), "{e}");
    }

    #[test]
    fn empty_captures_and_relative_paths_match_no_route() {
        for path in [
            "/2015-03-31/functions//invocations",
            "2015-03-31/functions/f/invocations",
            "",
        ] {
            assert!(
                matches!(resolve("POST", path), Err(RouteError::NoRoute { .. })),
                "{path}"
            );
        }
        // A trailing empty segment is a literal of the legacy routes.
        assert_eq!(
            resolve("GET", "/2014-11-13/functions/").unwrap().action,
            "lambda:ListFunctions"
        );
    }
}
