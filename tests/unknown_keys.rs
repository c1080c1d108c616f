//! Keys the caller could not determine fail closed: a Deny conditioned on
//! one applies, an Allow conditioned on one does not, and a value given for
//! the key settles it as usual.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iamd::engine::{self, ContextEntry, DecisionKind, Request, Snapshot};

const A: &str = "111122223333";

fn snapshot() -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let details = serde_json::json!({
        "UserDetailList": [{
            "UserName": "ops", "UserId": "AIDAEXAMPLEOPS000001", "Path": "/",
            "Arn": format!("arn:aws:iam::{A}:user/ops"), "GroupList": [], "AttachedManagedPolicies": [],
            "UserPolicyList": [{"PolicyName": "ops", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "lambda:GetEventSourceMapping", "Resource": "*"},
                {"Effect": "Deny", "Action": "lambda:GetEventSourceMapping", "Resource": "*",
                 "Condition": {"StringEquals": {"lambda:FunctionArn": format!("arn:aws:lambda:us-east-1:{A}:function:secret")}}},
                {"Effect": "Allow", "Action": "lambda:DeleteEventSourceMapping", "Resource": "*",
                 "Condition": {"StringEquals": {"lambda:FunctionArn": format!("arn:aws:lambda:us-east-1:{A}:function:mine")}}},
                {"Effect": "Allow", "Action": "lambda:TagResource", "Resource": "*"},
                {"Effect": "Deny", "Action": "lambda:TagResource", "Resource": "*",
                 "Condition": {"StringEquals": {"aws:RequestTag/owner": "root"}}}
            ]}}]
        }],
        "GroupDetailList": [], "RoleDetailList": [], "Policies": []
    });
    std::fs::write(dir.path().join("details.json"), details.to_string()).unwrap();
    Snapshot::compile_owned(iamd::store::load(dir.path()).unwrap().store).unwrap()
}

fn decide(
    snap: &Snapshot,
    action: &str,
    context: &[ContextEntry],
    unknown: &[&str],
) -> DecisionKind {
    let unknown: Vec<String> = unknown.iter().map(|s| (*s).to_owned()).collect();
    let principal = format!("arn:aws:iam::{A}:user/ops");
    let resource = format!("arn:aws:lambda:us-east-1:{A}:event-source-mapping:u-1");
    let req = Request::new(
        &principal,
        action,
        &resource,
        context,
        jiff::Timestamp::now(),
    )
    .unwrap()
    .with_unknown_keys(&unknown);
    let decision = engine::decide(snap, &req).kind();
    // The exhaustive evaluator behind explanations agrees.
    assert_eq!(engine::explain(snap, &req).decision.kind(), decision);
    decision
}

#[test]
fn unknown_keys_make_denies_apply_and_allows_lapse() {
    let snap = snapshot();
    let get = "lambda:GetEventSourceMapping";
    let delete = "lambda:DeleteEventSourceMapping";
    let fa = "lambda:FunctionArn";
    // Absent: the Deny's StringEquals is false, so the Allow stands.
    assert_eq!(decide(&snap, get, &[], &[]), DecisionKind::Allow);
    // Unknown: the Deny may apply, so it does.
    assert_eq!(decide(&snap, get, &[], &[fa]), DecisionKind::ExplicitDeny);
    // A value settles it either way.
    let other = [ContextEntry::new(
        fa,
        [format!("arn:aws:lambda:us-east-1:{A}:function:other")],
    )];
    assert_eq!(decide(&snap, get, &other, &[fa]), DecisionKind::Allow);
    // An Allow conditioned on an unknown key does not grant.
    let mine = [ContextEntry::new(
        fa,
        [format!("arn:aws:lambda:us-east-1:{A}:function:mine")],
    )];
    assert_eq!(decide(&snap, delete, &mine, &[]), DecisionKind::Allow);
    assert_eq!(
        decide(&snap, delete, &[], &[fa]),
        DecisionKind::ImplicitDeny
    );
    // A prefix stands for every key it begins.
    let tag = "lambda:TagResource";
    assert_eq!(decide(&snap, tag, &[], &[]), DecisionKind::Allow);
    assert_eq!(
        decide(&snap, tag, &[], &["aws:RequestTag/"]),
        DecisionKind::ExplicitDeny
    );
    assert_eq!(
        decide(&snap, tag, &[], &["aws:RequestTag"]),
        DecisionKind::Allow
    );
}
