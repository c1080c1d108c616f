//! Incremental snapshots: after any sequence of changes to any documents
//! (new versions, deletions, documents with errors, changes that break a
//! check across documents), the workspace's snapshot decides every request
//! as a snapshot compiled from scratch on the documents it accepted, and a
//! document is rejected exactly when the store with it would be invalid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use iamd::engine::{self, ContextEntry, Request, Snapshot};
use iamd::store::workspace::Workspace;
use proptest::prelude::*;
use serde_json::{json, Value};

const A: &str = "111122223333";
const B: &str = "444455556666";

fn sel<T: Clone + std::fmt::Debug + 'static>(v: Vec<T>) -> impl Strategy<Value = T> {
    prop::sample::select(v)
}

fn arb_statement(resource_policy: bool) -> impl Strategy<Value = Value> {
    let effect = sel(vec!["Allow", "Allow", "Deny"]);
    let action = sel(vec![
        json!("lambda:InvokeFunction"),
        json!("lambda:*"),
        json!(["lambda:GetFunction", "lambda:InvokeFunction"]),
        json!("sts:AssumeRole"),
        json!("*"),
    ]);
    let resource = sel(vec![
        json!("*"),
        json!(format!("arn:aws:lambda:us-east-1:{A}:function:f0")),
        json!(format!("arn:aws:lambda:us-east-1:{A}:function:*")),
        json!(format!("arn:aws:iam::{A}:role/r0")),
    ]);
    let principal = sel(vec![
        json!({"AWS": format!("arn:aws:iam::{A}:root")}),
        json!({"AWS": format!("arn:aws:iam::{A}:user/u0")}),
        json!({"AWS": B}),
        json!({"Service": "s3.amazonaws.com"}),
        json!("*"),
    ]);
    let condition = sel(vec![
        None,
        Some(json!({"StringEquals": {"aws:username": "u0"}})),
        Some(json!({"StringLike": {"aws:PrincipalTag/team": "r*"}})),
    ]);
    (effect, action, resource, principal, condition).prop_map(
        move |(effect, action, resource, principal, condition)| {
            let mut s = json!({"Effect": effect, "Action": action, "Resource": resource});
            if resource_policy {
                s["Principal"] = principal;
            }
            if let Some(c) = condition {
                s["Condition"] = c;
            }
            s
        },
    )
}

fn arb_policy(resource_policy: bool) -> impl Strategy<Value = Value> {
    prop::collection::vec(arb_statement(resource_policy), 1..3)
        .prop_map(|s| json!({"Version": "2012-10-17", "Statement": s}))
}

fn managed_arn(name: &str) -> String {
    format!("arn:aws:iam::{A}:policy/{name}")
}

/// The documents the store may hold, by name.
const DOCS: &[&str] = &[
    "a/users.json",
    "a/groups.json",
    "a/managed.json",
    "a/roles.json",
    "b.json",
    "fn0.json",
    "fn1.json",
    "fn2.json",
    "org.json",
];

/// A version of document `doc`, from random policies and choices.
fn arb_version(doc: usize) -> BoxedStrategy<String> {
    let p = || arb_policy(false);
    let flags = || prop::collection::vec(any::<bool>(), 4);
    // Managed policies a principal may attach: m2 is never defined, so
    // attaching it breaks the cross-document check.
    let attached = || {
        sel(vec![
            vec![],
            vec!["m0"],
            vec!["m1"],
            vec!["m0", "m1"],
            vec!["m2"],
        ])
    };
    let refs = |names: &[&str]| -> Value {
        names
            .iter()
            .map(|n| json!({"PolicyName": n, "PolicyArn": managed_arn(n)}))
            .collect()
    };
    match DOCS[doc] {
        "a/users.json" => (p(), p(), attached(), flags())
            .prop_map(move |(p0, p1, att, f)| {
                let user = |name: &str, policy: &Value, group: bool, boundary: bool| {
                    let mut u = json!({"UserName": name, "Arn": format!("arn:aws:iam::{A}:user/{name}"),
                        "UserId": format!("AIDA{}XXXXXXXXXXXX", name.to_uppercase()),
                        "GroupList": if group { json!(["g0"]) } else { json!([]) },
                        "UserPolicyList": [{"PolicyName": "inline", "PolicyDocument": policy}],
                        "AttachedManagedPolicies": refs(&att),
                        "Tags": [{"Key": "team", "Value": "red"}]});
                    if boundary {
                        u["PermissionsBoundary"] = json!({"PermissionsBoundaryArn": managed_arn("m0")});
                    }
                    u
                };
                let mut list = vec![user("u0", &p0, f[0], f[1])];
                if f[2] {
                    list.push(user("u2", &p1, !f[0], false));
                }
                json!({"AccountId": A, "UserDetailList": list}).to_string()
            })
            .boxed(),
        "a/groups.json" => (p(), attached())
            .prop_map(move |(p0, att)| {
                json!({"AccountId": A, "GroupDetailList": [{"GroupName": "g0", "Arn": format!("arn:aws:iam::{A}:group/g0"),
                    "GroupPolicyList": [{"PolicyName": "gp", "PolicyDocument": p0}],
                    "AttachedManagedPolicies": refs(&att)}]})
                .to_string()
            })
            .boxed(),
        "a/managed.json" => (p(), p(), any::<bool>())
            .prop_map(|(p0, p1, both)| {
                let m = |name: &str, doc: &Value| json!({"PolicyName": name, "Arn": managed_arn(name),
                    "DefaultVersionId": "v1",
                    "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": true, "Document": doc}]});
                let mut list = vec![m("m0", &p0)];
                if both {
                    list.push(m("m1", &p1));
                }
                json!({"AccountId": A, "Policies": list}).to_string()
            })
            .boxed(),
        "a/roles.json" => (p(), attached(), flags())
            .prop_map(move |(p0, att, f)| {
                let trusted = if f[0] { json!({"AWS": format!("arn:aws:iam::{B}:root")}) } else { json!({"AWS": format!("arn:aws:iam::{A}:user/u0")}) };
                let mut r = json!({"RoleName": "r0", "RoleId": "AROAROLEZEROXXXXXXXX", "Arn": format!("arn:aws:iam::{A}:role/r0"),
                    "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": trusted, "Action": "sts:AssumeRole"}]},
                    "RolePolicyList": [{"PolicyName": "rp", "PolicyDocument": p0}],
                    "AttachedManagedPolicies": refs(&att)});
                if f[1] {
                    r["PermissionsBoundary"] = json!({"PermissionsBoundaryArn": managed_arn("m0")});
                }
                // Sometimes the role also defines user u0: a duplicate across documents.
                let mut doc = json!({"AccountId": A, "RoleDetailList": [r]});
                if f[2] && f[3] {
                    doc["UserDetailList"] = json!([{"UserName": "u0", "Arn": format!("arn:aws:iam::{A}:user/u0")}]);
                }
                doc.to_string()
            })
            .boxed(),
        "b.json" => p()
            .prop_map(|p0| {
                json!({"AccountId": B, "UserDetailList": [{"UserName": "u1", "Arn": format!("arn:aws:iam::{B}:user/u1"),
                    "UserPolicyList": [{"PolicyName": "inline", "PolicyDocument": p0}]}]})
                .to_string()
            })
            .boxed(),
        "org.json" => (p(), any::<bool>())
            .prop_map(|(p0, both)| {
                let targets = if both { json!([A, B]) } else { json!([B]) };
                json!({"ServiceControlPolicies": [{"Name": "s0", "Content": p0, "Targets": targets}]}).to_string()
            })
            .boxed(),
        name => {
            let i: usize = name[2..3].parse().unwrap();
            let arns = [
                format!("arn:aws:lambda:us-east-1:{A}:function:f0"),
                format!("arn:aws:lambda:us-east-1:{A}:function:f0:prod"),
                format!("arn:aws:lambda:us-east-1:{B}:function:f1"),
            ];
            let arn = arns[i].clone();
            (arb_policy(true), any::<bool>())
                .prop_map(move |(p0, dup)| {
                    // Sometimes fn2 claims fn0's function: a duplicate ARN.
                    let arn = if i == 2 && dup { arns[0].clone() } else { arn.clone() };
                    json!({"Policy": p0, "ResourceArn": arn}).to_string()
                })
                .boxed()
        }
    }
}

/// One step: a document gets a new version, is deleted, or gets a version
/// with an ERROR of its own.
#[derive(Debug, Clone)]
enum Edit {
    Put(usize, String),
    Delete(usize),
    Broken(usize, &'static str),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let doc = 0..DOCS.len();
    prop_oneof![
        6 => doc.clone().prop_flat_map(|d| arb_version(d).prop_map(move |v| Edit::Put(d, v))),
        1 => doc.clone().prop_map(Edit::Delete),
        1 => (doc, sel(vec!["{not json", r#"{"Policy": {"Version": "2012-10-17", "Statement": {"Effect": "Maybe"}}, "ResourceArn": "arn:aws:lambda:us-east-1:111122223333:function:f9"}"#, "[]"]))
            .prop_map(|(d, t)| Edit::Broken(d, t)),
    ]
}

/// A step changes one document, or sometimes two at once.
fn arb_step() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(arb_edit(), 1..3)
}

fn requests() -> Vec<(String, &'static str, String)> {
    let principals = [
        format!("arn:aws:iam::{A}:user/u0"),
        format!("arn:aws:iam::{A}:user/u2"),
        format!("arn:aws:iam::{B}:user/u1"),
        format!("arn:aws:sts::{A}:assumed-role/r0/s"),
        format!("arn:aws:iam::{A}:role/r0"),
        format!("arn:aws:iam::{B}:root"),
        "s3.amazonaws.com".to_string(),
    ];
    let actions = [
        "lambda:InvokeFunction",
        "lambda:GetFunction",
        "sts:AssumeRole",
    ];
    let resources = [
        format!("arn:aws:lambda:us-east-1:{A}:function:f0"),
        format!("arn:aws:lambda:us-east-1:{A}:function:f0:prod"),
        format!("arn:aws:lambda:us-east-1:{B}:function:f1"),
        format!("arn:aws:iam::{A}:role/r0"),
    ];
    let mut out = Vec::new();
    for p in &principals {
        for a in actions {
            for r in &resources {
                out.push((p.clone(), a, r.clone()));
            }
        }
    }
    out
}

/// The snapshot compiled from scratch, or `None` when the store has an ERROR.
fn compile(docs: &BTreeMap<String, String>) -> Option<Snapshot> {
    let (store, findings) =
        iamd::store::from_texts(docs.iter().map(|(n, t)| (n.as_str(), t.as_str())));
    match store {
        Some(s) if !findings.has_errors() => Some(Snapshot::compile(&s).unwrap()),
        _ => None,
    }
}

fn load(docs: &BTreeMap<String, String>) -> (Workspace, Snapshot) {
    let (ws, snap, _) = Workspace::load(docs.iter().map(|(n, t)| (n.as_str(), Ok(t.as_bytes()))))
        .unwrap_or_else(|e| panic!("the first store is valid: {e:?}"));
    (ws, snap)
}

fn assert_same(incremental: &Snapshot, scratch: &Snapshot) -> Result<(), TestCaseError> {
    prop_assert_eq!(incremental.stats(), scratch.stats());
    let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
    let context = [ContextEntry::new("aws:SourceAccount", [A])];
    for (p, a, r) in requests() {
        let req = Request::new(&p, a, &r, &context, now).unwrap();
        prop_assert_eq!(
            engine::decide(incremental, &req),
            engine::decide(scratch, &req),
            "{} {} {}",
            p,
            a,
            r
        );
        let (mut x, mut y) = (
            engine::explain(incremental, &req).matched_statements,
            engine::explain(scratch, &req).matched_statements,
        );
        x.sort_by(|a, b| a.location.cmp(&b.location));
        y.sort_by(|a, b| a.location.cmp(&b.location));
        prop_assert_eq!(x, y, "{} {} {}", p, a, r);
    }
    Ok(())
}

/// A valid first store: every document in a version that validates.
fn arb_first() -> impl Strategy<Value = BTreeMap<String, String>> {
    (0..DOCS.len())
        .map(arb_version)
        .collect::<Vec<_>>()
        .prop_map(|versions| {
            DOCS.iter()
                .map(|d| (*d).to_owned())
                .zip(versions)
                .collect::<BTreeMap<_, _>>()
        })
        .prop_filter("the first store validates", |docs| compile(docs).is_some())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, max_global_rejects: 20_000, .. ProptestConfig::default() })]

    #[test]
    fn incremental_changes_decide_as_a_compile_from_scratch(
        first in arb_first(),
        steps in prop::collection::vec(arb_step(), 1..12),
    ) {
        let (mut ws, snap) = load(&first);
        assert_same(&snap, &compile(&first).unwrap())?;
        let mut accepted = first;
        for step in steps {
            let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
            for edit in &step {
                match edit {
                    Edit::Put(d, v) => changes.insert(DOCS[*d].to_owned(), Some(v.clone())),
                    Edit::Delete(d) => changes.insert(DOCS[*d].to_owned(), None),
                    Edit::Broken(d, t) => changes.insert(DOCS[*d].to_owned(), Some((*t).to_owned())),
                };
            }
            let applied = ws
                .apply(changes.iter().map(|(n, c)| (n.as_str(), c.as_deref().map(|t| Ok(t.as_bytes())))))
                .unwrap();
            // With one document changed, it is rejected exactly when the
            // store with it would not validate.
            if changes.len() == 1 {
                let (name, content) = changes.iter().next().unwrap();
                let mut with = accepted.clone();
                match content {
                    Some(t) => with.insert(name.clone(), t.clone()),
                    None => with.remove(name),
                };
                let unchanged = accepted.get(name) == content.as_ref();
                let valid = compile(&with).is_some();
                prop_assert_eq!(
                    applied.rejected.iter().any(|(n, _)| n == name),
                    !valid && !unchanged,
                    "{} {:?}", name, applied.rejected
                );
            }
            for name in &applied.applied {
                match changes.get(name).cloned().flatten() {
                    Some(t) => accepted.insert(name.clone(), t),
                    None => accepted.remove(name),
                };
            }
            for (name, findings) in &applied.rejected {
                prop_assert!(findings.has_errors(), "{} rejected without an ERROR", name);
                prop_assert!(!applied.applied.contains(name));
            }
            // What the workspace accepted is a valid store, and it decides
            // as that store compiled from scratch.
            let scratch = compile(&accepted);
            prop_assert!(scratch.is_some(), "the accepted documents do not validate: {:?}", accepted.keys());
            if let Some(snap) = applied.snapshot {
                assert_same(&snap, scratch.as_ref().unwrap())?;
            }
            prop_assert_eq!(ws.stats().unwrap(), scratch.unwrap().stats());
        }
    }
}
