//! Property tests: hostile input never panics the parsers or the loader; the
//! located JSON parser agrees with serde_json; adding a Deny never grants;
//! and the compiled index decides exactly as the index-free oracle
//! (`common/oracle.rs`: policies found by scanning, every statement tested)
//! and as `explain`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/oracle.rs"]
mod oracle;

use iamd::engine::{self, ContextEntry, DecisionKind, Request, Snapshot};
use iamd::policy::Arn;
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "Allow",
            "Deny",
            "2012-10-17",
            "*",
            "lambda:InvokeFunction",
            "arn:aws:lambda:us-east-1:111122223333:function:f",
            "s3.amazonaws.com",
            "StringEquals",
            "aws:SourceArn",
            "${aws:username}",
            "111122223333",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "Version",
            "Statement",
            "Effect",
            "Action",
            "NotAction",
            "Resource",
            "NotResource",
            "Principal",
            "NotPrincipal",
            "Condition",
            "Sid",
            "Policy",
            "AWS",
            "Service",
            "UserDetailList",
            "RoleDetailList",
            "UserName",
            "Arn",
            "UserPolicyList",
            "PolicyDocument",
            "PolicyName",
            "ServiceControlPolicies",
            "Content",
            "Targets",
            "StringLike",
            "IpAddress",
            "ResourceArn",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arn_parser_never_panics(s in "\\PC{0,64}") {
        let _ = Arn::parse(&s);
        let _ = iamd::policy::ArnPattern::parse(&s, true);
        let _ = engine::Principal::parse(&s);
    }

    #[test]
    fn json_parser_never_panics_and_agrees_with_serde(s in "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,40}") {
        let ours = iamd::json::parse(&s);
        let theirs = serde_json::from_str::<Value>(&s);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "disagree on {:?}", s);
    }

    #[test]
    fn loader_never_panics_on_arbitrary_json(v in arb_json()) {
        let text = v.to_string();
        let _ = iamd::store::from_texts([("f.json", text.as_str())]);
        let _ = iamd::store::from_texts([("p.json", json!({"Policy": v.clone()}).to_string().as_str())]);
        let gaad = json!({"UserDetailList": [{"UserName": "u", "Arn": "arn:aws:iam::111122223333:user/u",
            "UserPolicyList": [{"PolicyName": "p", "PolicyDocument": v}]}]}).to_string();
        let _ = iamd::store::from_texts([("g.json", gaad.as_str())]);
    }

    #[test]
    fn loader_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = iamd::store::from_texts([("f.json", s.as_str())]);
    }
}

const A: &str = "111122223333";
const B: &str = "444455556666";

fn sel<T: Clone + std::fmt::Debug + 'static>(v: Vec<T>) -> impl Strategy<Value = T> {
    prop::sample::select(v)
}

fn arb_action_pattern() -> impl Strategy<Value = String> {
    sel(vec![
        "lambda:InvokeFunction",
        "lambda:invokefunction",
        "lambda:GetFunction",
        "lambda:ListFunctions",
        "lambda:*",
        "lambda:Get*",
        "lambda:?nvokeFunction",
        "*",
        "sts:AssumeRole",
        "s3:GetObject",
        "s3:*",
    ])
    .prop_map(str::to_owned)
}

fn arb_resource_pattern() -> impl Strategy<Value = String> {
    sel(vec![
        "*".to_string(),
        format!("arn:aws:lambda:us-east-1:{A}:function:f0"),
        format!("arn:aws:lambda:us-east-1:{A}:function:f0*"),
        format!("arn:aws:lambda:us-east-1:{A}:function:f0:*"),
        format!("arn:aws:lambda:*:{A}:function:*"),
        format!("arn:aws:lambda:us-east-1:{B}:function:f1"),
        format!("arn:aws:lambda:us-east-1:{A}:function:${{aws:username}}"),
        format!("arn:aws:lambda:us-east-1:{A}:function:${{aws:PrincipalTag/team, 'f0'}}"),
        format!("arn:aws:iam::{A}:role/r0"),
        format!("arn:aws:iam::{A}:role/*"),
        "arn:aws:s3:::bucket/*".to_string(),
    ])
}

fn arb_condition() -> impl Strategy<Value = Option<Value>> {
    sel(vec![
        None,
        Some(json!({"StringEquals": {"aws:username": "u0"}})),
        Some(json!({"StringLike": {"aws:PrincipalTag/team": ["re*", "blue"]}})),
        Some(json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})),
        Some(json!({"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}})),
        Some(json!({"Null": {"aws:SourceArn": "false"}})),
        Some(
            json!({"ArnLike": {"aws:SourceArn": "arn:aws:s3:::b*"}, "StringEquals": {"aws:SourceAccount": A}}),
        ),
        Some(json!({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env"]}})),
        Some(json!({"ForAllValues:StringLike": {"aws:TagKeys": ["e*", "team"]}})),
        Some(json!({"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}})),
        Some(json!({"StringNotEqualsIfExists": {"aws:PrincipalAccount": B}})),
    ])
}

fn arb_principal_entry() -> impl Strategy<Value = Value> {
    sel(vec![
        json!("*"),
        json!({"AWS": "*"}),
        json!({"AWS": A}),
        json!({"AWS": format!("arn:aws:iam::{B}:root")}),
        json!({"AWS": format!("arn:aws:iam::{A}:user/u0")}),
        json!({"AWS": format!("arn:aws:iam::{B}:user/u1")}),
        json!({"AWS": format!("arn:aws:iam::{A}:role/r0")}),
        json!({"AWS": format!("arn:aws:sts::{A}:assumed-role/r0/s")}),
        json!({"Service": "s3.amazonaws.com"}),
        json!({"AWS": [A, format!("arn:aws:iam::{B}:user/u1")]}),
    ])
}

prop_compose! {
    fn arb_statement(resource_policy: bool)(
        deny in prop::bool::weighted(0.25),
        not_action in prop::bool::weighted(0.1),
        not_resource in prop::bool::weighted(0.1),
        actions in prop::collection::vec(arb_action_pattern(), 1..3),
        resources in prop::collection::vec(arb_resource_pattern(), 1..3),
        condition in arb_condition(),
        principal in arb_principal_entry(),
        not_principal in prop::bool::weighted(0.1),
    ) -> Value {
        let mut s = json!({"Effect": if deny { "Deny" } else { "Allow" }});
        s[if not_action { "NotAction" } else { "Action" }] = json!(actions);
        s[if not_resource { "NotResource" } else { "Resource" }] = json!(resources);
        if let Some(c) = condition {
            s["Condition"] = c;
        }
        if resource_policy {
            // NotPrincipal is only valid with Deny.
            let key = if not_principal && deny { "NotPrincipal" } else { "Principal" };
            s[key] = principal;
        }
        s
    }
}

fn policy(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn arb_policy(resource_policy: bool) -> impl Strategy<Value = Value> {
    prop::collection::vec(arb_statement(resource_policy), 1..4).prop_map(policy)
}

/// A random two-account store as files: users, a group, roles with trust
/// policies, a managed policy used as permissions and as a boundary, function
/// policies and SCPs.
fn arb_store() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::collection::vec(arb_policy(false), 4),
        prop::collection::vec(arb_policy(true), 3),
        prop::collection::vec(arb_policy(false), 2),
        prop::collection::vec(any::<bool>(), 6),
    )
        .prop_map(|(identity, resource, scps, flags)| {
            let managed_arn = format!("arn:aws:iam::{A}:policy/m0");
            let user = |account: &str, name: &str, inline: &Value, boundary: bool, group: bool| {
                let mut u = json!({
                    "UserName": name, "Arn": format!("arn:aws:iam::{account}:user/{name}"), "Path": "/",
                    "UserId": format!("AIDA{}{}", name.to_uppercase(), "X".repeat(12)),
                    "GroupList": if group { json!(["g0"]) } else { json!([]) },
                    "UserPolicyList": [{"PolicyName": "inline", "PolicyDocument": inline}],
                    "AttachedManagedPolicies": if account == A { json!([{"PolicyName": "m0", "PolicyArn": managed_arn}]) } else { json!([]) },
                    "Tags": [{"Key": "team", "Value": "red"}],
                });
                if boundary {
                    u["PermissionsBoundary"] = json!({"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": managed_arn});
                }
                u
            };
            let a = json!({
                "UserDetailList": [user(A, "u0", &identity[0], flags[0], flags[1])],
                "GroupDetailList": [{"GroupName": "g0", "Arn": format!("arn:aws:iam::{A}:group/g0"), "Path": "/",
                    "GroupPolicyList": [{"PolicyName": "gp", "PolicyDocument": identity[1]}], "AttachedManagedPolicies": []}],
                "RoleDetailList": [{"RoleName": "r0", "RoleId": "AROAROLEZEROXXXXXXXX", "Arn": format!("arn:aws:iam::{A}:role/r0"), "Path": "/",
                    "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                        "Principal": if flags[2] { json!({"AWS": format!("arn:aws:iam::{B}:root")}) } else { json!({"AWS": format!("arn:aws:iam::{A}:user/u0")}) },
                        "Action": "sts:AssumeRole"}]},
                    "RolePolicyList": [{"PolicyName": "rp", "PolicyDocument": identity[2]}],
                    "AttachedManagedPolicies": []}],
                "Policies": [{"PolicyName": "m0", "Arn": managed_arn, "DefaultVersionId": "v1",
                    "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": true, "Document": identity[3]}]}],
            });
            let mut a = a;
            if flags[3] {
                a["RoleDetailList"][0]["PermissionsBoundary"] = json!({"PermissionsBoundaryArn": managed_arn});
            }
            let b = json!({"UserDetailList": [user(B, "u1", &identity[0], false, false)]});
            let mut files = vec![
                ("a.json".to_string(), a.to_string()),
                ("b.json".to_string(), b.to_string()),
            ];
            let fns = [
                format!("arn:aws:lambda:us-east-1:{A}:function:f0"),
                format!("arn:aws:lambda:us-east-1:{A}:function:f0:prod"),
                format!("arn:aws:lambda:us-east-1:{B}:function:f1"),
            ];
            for (i, (arn, p)) in fns.iter().zip(resource).enumerate() {
                files.push((format!("fn{i}.json"), json!({"Policy": p, "ResourceArn": arn}).to_string()));
            }
            if flags[4] {
                let targets = if flags[5] { json!([A]) } else { json!([A, B]) };
                files.push((
                    "org.json".to_string(),
                    json!({"ServiceControlPolicies": [
                        {"Name": "s0", "Content": scps[0], "Targets": targets},
                        {"Name": "s1", "Content": scps[1], "Targets": [B]}]})
                    .to_string(),
                ));
            }
            files
        })
}

fn arb_request() -> impl Strategy<Value = (String, String, String, Vec<ContextEntry>)> {
    let principals = sel(vec![
        format!("arn:aws:iam::{A}:user/u0"),
        format!("arn:aws:iam::{B}:user/u1"),
        format!("arn:aws:iam::{A}:user/ghost"),
        format!("arn:aws:sts::{A}:assumed-role/r0/s"),
        format!("arn:aws:sts::{A}:assumed-role/r0/other"),
        format!("arn:aws:iam::{A}:role/r0"),
        A.to_string(),
        format!("arn:aws:iam::{B}:root"),
        "s3.amazonaws.com".to_string(),
        "*".to_string(),
    ]);
    let actions = sel(vec![
        "lambda:InvokeFunction",
        "lambda:GetFunction",
        "lambda:ListFunctions",
        "sts:AssumeRole",
        "s3:GetObject",
        "lambda:DeleteFunction",
    ]);
    let resources = sel(vec![
        format!("arn:aws:lambda:us-east-1:{A}:function:f0"),
        format!("arn:aws:lambda:us-east-1:{A}:function:f0:prod"),
        format!("arn:aws:lambda:us-east-1:{A}:function:u0"),
        format!("arn:aws:lambda:us-east-1:{B}:function:f1"),
        format!("arn:aws:iam::{A}:role/r0"),
        "arn:aws:s3:::bucket/key".to_string(),
        "*".to_string(),
    ]);
    let contexts = prop::collection::vec(
        sel(vec![
            ContextEntry::new("aws:SourceIp", ["10.1.2.3"]),
            ContextEntry::new("aws:SourceIp", ["2001:db8::1"]),
            ContextEntry::new("aws:SourceArn", ["arn:aws:s3:::bucket"]),
            ContextEntry::new("aws:SourceAccount", [A]),
            ContextEntry::new("aws:TagKeys", ["env", "team"]),
            ContextEntry::new("aws:TagKeys", Vec::<String>::new()),
            ContextEntry::new("aws:username", ["f0"]),
        ]),
        0..3,
    )
    .prop_map(|mut v| {
        v.dedup_by(|a, b| a.key == b.key);
        v
    });
    (
        principals,
        actions.prop_map(str::to_owned),
        resources,
        contexts,
    )
}

fn load(files: &[(String, String)]) -> Option<Snapshot> {
    let (store, _) = iamd::store::from_texts(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
    store.map(|s| Snapshot::compile(&s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// The compiled index agrees with exhaustive evaluation of every applicable statement.
    #[test]
    fn index_agrees_with_linear_evaluation(files in arb_store(), requests in prop::collection::vec(arb_request(), 8)) {
        let snap = load(&files).expect("generated stores are valid");
        let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
        for (p, a, r, ctx) in &requests {
            let req = Request::new(p, a, r, ctx, now).unwrap();
            let fast = engine::decide(&snap, &req);
            let slow = oracle::decide_by_scan(&snap, &req);
            prop_assert_eq!(fast, slow, "{} {} {} {:?}", p, a, r, ctx);
            prop_assert_eq!(fast, engine::explain(&snap, &req).decision, "{} {} {} {:?}", p, a, r, ctx);
        }
    }

    /// Adding a Deny statement anywhere never turns a deny into an allow.
    #[test]
    fn adding_a_deny_never_grants(
        files in arb_store(),
        requests in prop::collection::vec(arb_request(), 6),
        extra in arb_statement(true),
        target in 0usize..4,
    ) {
        let before = load(&files).expect("generated stores are valid");
        let mut extra = extra;
        extra["Effect"] = json!("Deny");
        // Add the statement to the identity policies, a function policy, or an SCP.
        let mut changed = files.clone();
        let strip_principal = |s: &Value| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("Principal");
                o.remove("NotPrincipal");
            }
            s
        };
        let scp_file = changed.iter().position(|(n, _)| n == "org.json");
        match (target, scp_file) {
            (1 | 2, _) => {
                let (_, text) = &mut changed[1 + target]; // fn0.json or fn1.json
                let mut v: Value = serde_json::from_str(text).unwrap();
                if extra.get("Principal").is_none() && extra.get("NotPrincipal").is_none() {
                    extra["Principal"] = json!("*");
                }
                v["Policy"]["Statement"].as_array_mut().unwrap().push(extra.clone());
                *text = v.to_string();
            }
            (3, Some(i)) => {
                let (_, text) = &mut changed[i];
                let mut v: Value = serde_json::from_str(text).unwrap();
                v["ServiceControlPolicies"][0]["Content"]["Statement"].as_array_mut().unwrap().push(strip_principal(&extra));
                *text = v.to_string();
            }
            _ => {
                let (_, text) = &mut changed[0];
                let mut v: Value = serde_json::from_str(text).unwrap();
                let s = strip_principal(&extra);
                v["UserDetailList"][0]["UserPolicyList"][0]["PolicyDocument"]["Statement"].as_array_mut().unwrap().push(s.clone());
                v["RoleDetailList"][0]["RolePolicyList"][0]["PolicyDocument"]["Statement"].as_array_mut().unwrap().push(s);
                *text = v.to_string();
            }
        }
        let after = load(&changed).expect("still valid");
        let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
        for (p, a, r, ctx) in &requests {
            let req = Request::new(p, a, r, ctx, now).unwrap();
            let d0 = engine::decide(&before, &req);
            let d1 = engine::decide(&after, &req);
            prop_assert!(!(d0.kind() != DecisionKind::Allow && d1.kind() == DecisionKind::Allow),
                "adding a Deny granted {} {} {}: {:?} -> {:?}", p, a, r, d0, d1);
            prop_assert!(!(d0.kind() == DecisionKind::ExplicitDeny && d1.kind() != DecisionKind::ExplicitDeny));
        }
    }
}
