//! The decision corpus: every `tests/conformance/*.json` topic file holds
//! stores and cases, each case citing the AWS behaviour it checks. Each case
//! writes its store to a temporary directory, loads it through the real
//! loader, and decides the request with both the indexed engine and the
//! exhaustive explainer, which must agree with each other and the case.
//!
//! Case shorthands: `user_policy` becomes an inline policy of the default
//! user `arn:aws:iam::111122223333:user/tester`; `function_policy` becomes the
//! resource policy of the default function
//! `arn:aws:lambda:us-east-1:111122223333:function:f`. `store` names a shared
//! store of the topic file, and `files` adds or replaces files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::path::Path;

use iamd::engine::{self, ContextEntry, DecisionKind, Request, Snapshot};
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_USER: &str = "arn:aws:iam::111122223333:user/tester";
const DEFAULT_FUNCTION: &str = "arn:aws:lambda:us-east-1:111122223333:function:f";
const DEFAULT_NOW: &str = "2026-06-01T12:00:00Z";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Topic {
    topic: String,
    #[serde(default)]
    stores: BTreeMap<String, BTreeMap<String, Value>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The AWS documentation behaviour the case checks.
    cite: String,
    store: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, Value>,
    user_policy: Option<Value>,
    function_policy: Option<Value>,
    principal: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    #[serde(default)]
    context: BTreeMap<String, OneOrMany>,
    now: Option<String>,
    /// `Allow`, `ExplicitDeny` or `ImplicitDeny`; absent for load-error cases.
    expect: Option<String>,
    /// A substring the AWS-style message must contain.
    expect_message: Option<String>,
    /// An issue code the store must be rejected with.
    expect_load_error: Option<String>,
}

fn build_store(topic: &Topic, case: &Case, dir: &Path) {
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(name) = &case.store {
        let shared = topic
            .stores
            .get(name)
            .unwrap_or_else(|| panic!("case `{}` names unknown store `{name}`", case.name));
        files.extend(shared.clone());
    }
    if let Some(p) = &case.user_policy {
        files.insert(
            "tester.json".into(),
            json!({
                "UserDetailList": [{
                    "UserName": "tester",
                    "UserId": "AIDATESTERTESTER00001",
                    "Arn": DEFAULT_USER,
                    "Path": "/",
                    "GroupList": [],
                    "AttachedManagedPolicies": [],
                    "UserPolicyList": [{"PolicyName": "case", "PolicyDocument": p}],
                    "Tags": [{"Key": "team", "Value": "blue"}]
                }]
            }),
        );
    }
    if let Some(p) = &case.function_policy {
        files.insert(
            "function-f.json".into(),
            json!({"Policy": p, "ResourceArn": DEFAULT_FUNCTION}),
        );
    }
    files.extend(case.files.clone());
    for (path, content) in files {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        let text = match content {
            Value::String(s) => s,
            other => serde_json::to_string_pretty(&other).unwrap(),
        };
        std::fs::write(full, text).unwrap();
    }
}

fn run_case(topic: &Topic, case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    build_store(topic, case, dir.path());
    if let Some(code) = &case.expect_load_error {
        let (store, findings) =
            iamd::store::load_with_findings(dir.path()).map_err(|e| e.to_string())?;
        if store.is_some() {
            return Err(format!("store loaded, expected rejection with {code}"));
        }
        if !findings.errors().any(|f| f.issue_code.as_str() == code) {
            let got: Vec<_> = findings.errors().map(|f| f.issue_code).collect();
            return Err(format!("expected {code}, got {got:?}"));
        }
        return Ok(());
    }
    let loaded = iamd::store::load(dir.path()).map_err(|e| format!("store did not load: {e}"))?;
    let snapshot = Snapshot::compile(&loaded.store).unwrap();
    let context: Vec<ContextEntry> = case
        .context
        .iter()
        .map(|(k, v)| match v {
            OneOrMany::One(s) => ContextEntry::new(k, [s]),
            OneOrMany::Many(m) => ContextEntry::new(k, m),
        })
        .collect();
    let now: jiff::Timestamp = case.now.as_deref().unwrap_or(DEFAULT_NOW).parse().unwrap();
    let principal = case.principal.as_deref().unwrap_or(DEFAULT_USER);
    let action = case.action.as_deref().unwrap_or("lambda:InvokeFunction");
    let resource = case.resource.as_deref().unwrap_or(DEFAULT_FUNCTION);
    let request = Request::new(principal, action, resource, &context, now)
        .map_err(|e| format!("bad request: {e}"))?;
    let decision = engine::decide(&snapshot, &request);
    let explained = engine::explain(&snapshot, &request);
    if explained.decision != decision {
        return Err(format!(
            "indexed decision {decision:?} disagrees with exhaustive {:?}",
            explained.decision
        ));
    }
    let scanned = oracle::explain_by_scan(&snapshot, &request);
    if scanned != explained {
        return Err(format!(
            "indexed explanation {explained:?} disagrees with the index-free one {scanned:?}"
        ));
    }
    let expect = case.expect.as_deref().ok_or("case has no `expect`")?;
    let want = match expect {
        "Allow" => DecisionKind::Allow,
        "ExplicitDeny" => DecisionKind::ExplicitDeny,
        "ImplicitDeny" => DecisionKind::ImplicitDeny,
        other => return Err(format!("unknown expectation `{other}`")),
    };
    let message = decision.message(&request);
    if decision.kind() != want {
        return Err(format!(
            "expected {expect}, got {} ({message}); matched {:?}; near misses {:?}",
            decision.kind().as_str(),
            explained
                .matched_statements
                .iter()
                .map(|s| format!(
                    "{} {}#{}",
                    s.policy_type, s.source_policy_id, s.statement_index
                ))
                .collect::<Vec<_>>(),
            explained
                .near_misses
                .iter()
                .map(|n| &n.reason)
                .collect::<Vec<_>>()
        ));
    }
    if let Some(m) = &case.expect_message {
        if !message.contains(m.as_str()) {
            return Err(format!("message `{message}` does not contain `{m}`"));
        }
    }
    Ok(())
}

#[test]
fn conformance_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut total = 0;
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let topic: Topic =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &topic.cases {
            total += 1;
            assert!(
                !case.cite.trim().is_empty(),
                "case `{}` cites nothing",
                case.name
            );
            if let Err(e) = run_case(&topic, case) {
                failures.push(format!("[{}] {}: {e}", topic.topic, case.name));
            }
        }
    }
    println!("{total} conformance cases in {} topic files", paths.len());
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        total >= 150,
        "the corpus must hold at least 150 cases, has {total}"
    );
}
