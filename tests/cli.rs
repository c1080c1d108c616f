//! `iamd validate` and `iamd check` as a user runs them: the real binary,
//! real store directories, exit codes and output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn iamd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(args)
        .output()
        .unwrap()
}

fn example_store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const F: &str = "arn:aws:lambda:us-east-1:111122223333:function";

#[test]
fn validate_accepts_the_example_store() {
    let store = example_store();
    let o = iamd(&["validate", "--store", store.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("store OK: 2 accounts"),
        "{}",
        stdout(&o)
    );

    let o = iamd(&["validate", "--store", store.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["stats"]["accounts"], 2);
    assert!(v["stats"]["statements"].as_u64().unwrap() >= 15);
}

#[test]
fn validate_lists_every_error_with_file_path_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.json"),
        "{\"Policy\": {\"Version\": \"2012-10-17\", \"Statement\": [\n  {\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"lambda:InvokeFunction\",\n   \"Resource\": \"arn:aws:lambda:us-east-1:111122223333:function:f\",\n   \"Condition\": {\"DateGreaterThan\": {\"aws:CurrentTime\": \"tomorrow\"}}}]}}",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.json"), "{\"UserDetailList\": [").unwrap();
    std::fs::write(dir.path().join(".hidden.json"), "not even json").unwrap();
    let o = iamd(&[
        "validate",
        "--store",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let findings = v["findings"].as_array().unwrap();
    let date = findings
        .iter()
        .find(|f| f["issueCode"] == "INVALID_CONDITION_VALUE")
        .expect("the bad date is reported");
    assert_eq!(date["findingType"], "ERROR");
    assert_eq!(date["location"]["file"], "bad.json");
    assert_eq!(
        date["location"]["path"],
        "Policy.Statement[0].Condition.DateGreaterThan.aws:CurrentTime"
    );
    assert_eq!(date["location"]["line"], 4);
    assert!(findings
        .iter()
        .any(|f| f["issueCode"] == "JSON_SYNTAX_ERROR" && f["location"]["file"] == "broken.json"));
    assert!(!findings
        .iter()
        .any(|f| f["location"]["file"] == ".hidden.json"));

    let o = iamd(&["validate", "--store", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("bad.json:4:"), "{text}");
    assert!(text.contains("store rejected: 2 error(s)"), "{text}");
}

#[test]
fn validate_reports_a_missing_directory() {
    let o = iamd(&["validate", "--store", "/nonexistent/iamd-store"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/iamd-store"));
}

fn check(args: &[&str]) -> (Option<i32>, Value) {
    let store = example_store();
    let mut all = vec!["check", "--store", store.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let o = iamd(&all);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code(), v)
}

#[test]
fn check_answers_the_seed_scenarios() {
    let (code, v) = check(&[
        "--principal",
        "arn:aws:iam::111122223333:user/alice",
        "--action",
        "lambda:ListFunctions",
        "--resource",
        "*",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(v["decision"], "Allow");

    let hello = format!("{F}:HelloWorld");
    let (_, v) = check(&[
        "--principal",
        "s3.amazonaws.com",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
        "--context",
        "aws:SourceAccount=111122223333",
        "--context",
        "aws:SourceArn=arn:aws:s3:::ExampleBucket",
    ]);
    assert_eq!(v["decision"], "Allow");
    let (code, v) = check(&[
        "--principal",
        "s3.amazonaws.com",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
        "--explain",
    ]);
    assert_eq!(code, Some(0), "a deny still exits 0");
    assert_eq!(v["decision"], "ImplicitDeny");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("because no resource-based policy allows the lambda:InvokeFunction action"));
    let missing = v["explanation"]["missingContextValues"].as_array().unwrap();
    assert!(missing.iter().any(|k| k == "AWS:SourceArn"));

    let role = "arn:aws:iam::111122223333:role/lambda-cross-account";
    let (_, v) = check(&[
        "--principal",
        "arn:aws:iam::444455556666:user/dave",
        "--action",
        "sts:AssumeRole",
        "--resource",
        role,
    ]);
    assert_eq!(v["decision"], "Allow");
    let (_, v) = check(&[
        "--principal",
        "arn:aws:iam::444455556666:user/erin",
        "--action",
        "sts:AssumeRole",
        "--resource",
        role,
    ]);
    assert_eq!(v["decision"], "ImplicitDeny");
    let (_, v) = check(&[
        "--principal",
        "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/dave",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
        "--explain",
    ]);
    assert_eq!(v["decision"], "Allow");
    let matched = v["explanation"]["matchedStatements"].as_array().unwrap();
    assert!(matched.iter().any(|s| s["policyType"] == "managed"
        && s["sourcePolicyId"] == "arn:aws:iam::111122223333:policy/InvokeAccountAFunctions"));
}

#[test]
fn check_repeated_context_keys_are_multivalued_and_explicit_denies_are_named() {
    let hello = format!("{F}:HelloWorld");
    let (_, v) = check(&[
        "--principal",
        "arn:aws:iam::111122223333:user/alice",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
        "--context",
        "aws:SourceIp=198.51.100.7",
        "--context",
        "aws:ViaAWSService=false",
        "--explain",
    ]);
    assert_eq!(v["decision"], "ExplicitDeny");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .ends_with("with an explicit deny in an identity-based policy"));
    let matched = v["explanation"]["matchedStatements"].as_array().unwrap();
    assert!(matched
        .iter()
        .any(|s| s["sid"] == "OnlyFromTheOffice" && s["effect"] == "Deny"));

    let (_, v) = check(&[
        "--principal",
        "arn:aws:iam::111122223333:user/alice",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
        "--context",
        "aws:SourceIp=203.0.113.9",
        "--context",
        "aws:ViaAWSService=false",
    ]);
    assert_eq!(v["decision"], "Allow");
}

#[test]
fn check_exit_codes() {
    let hello = format!("{F}:HelloWorld");
    let (code, _) = check(&[
        "--principal",
        "nobody",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
    ]);
    assert_eq!(code, Some(2));
    let (code, _) = check(&[
        "--principal",
        "*",
        "--action",
        "lambda:*",
        "--resource",
        &hello,
    ]);
    assert_eq!(code, Some(2));
    let (code, _) = check(&[
        "--principal",
        "*",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
        "--context",
        "novalue",
    ]);
    assert_eq!(code, Some(2));
    let o = iamd(&[
        "check",
        "--store",
        "/nonexistent",
        "--principal",
        "*",
        "--action",
        "a:b",
        "--resource",
        "*",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = iamd(&["check", "--store", "x"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "clap reports missing arguments with 2"
    );

    let (code, v) = check(&[
        "--principal",
        "*",
        "--action",
        "lambda:InvokeFunction",
        "--resource",
        &hello,
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(v["decision"], "ImplicitDeny");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("User: anonymous is not authorized"));
}

/// A function policy file around `statements` (JSON text).
fn function_policy(statements: &str) -> String {
    format!(
        "{{\"ResourceArn\": \"{F}:f\", \"Policy\": {{\"Version\": \"2012-10-17\", \"Statement\": [{statements}]}}}}"
    )
}

#[test]
fn validate_output_cannot_be_forged_by_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let forged = r"\nstore OK: 9 accounts, 9 principals, 9 policies, 9 statements; 0 finding(s), none rejecting";
    let statement = |sid: &str, extra: &str| {
        format!(
            r#"{{"Sid": "{sid}", "Effect": "Allow", "Principal": {{"Service": "s3.amazonaws.com"}}, "Action": "lambda:InvokeFunction", "Resource": "{F}:f", "Condition": {{"StringEquals": {{"AWS:SourceAccount": "111122223333"}}}}{extra}}}"#
        )
    };
    // In a Sid (of two statements), keys (one with a bidi override), a
    // principal ARN, and a file name.
    let text = function_policy(&format!(
        "{}, {}",
        statement(&format!("a{forged}"), &format!(r#", "x\r{forged}": 1"#)),
        statement(&format!("a{forged}"), "")
    ));
    std::fs::write(dir.path().join("f.json"), text).unwrap();
    let principal = function_policy(&format!(
        r#"{{"Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:user/a{forged}"}}, "Action": "lambda:InvokeFunction", "Resource": "{F}:g", "evil\u202etxt.exe": 1}}"#
    ));
    std::fs::write(dir.path().join("g.json"), principal).unwrap();
    std::fs::write(
        dir.path().join("h\nstore OK: 1 accounts.json"),
        "{\"UserDetailList\": [",
    )
    .unwrap();

    let o = iamd(&["validate", "--store", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    for line in text.lines() {
        assert!(
            !line.starts_with("store OK"),
            "forged line {line:?} in\n{text}"
        );
    }
    assert!(
        text.lines().last().unwrap().starts_with("store rejected"),
        "{text}"
    );
    // The input is still shown, escaped: each finding on its own line.
    assert!(text.contains(r"`a\nstore OK: 9 accounts"), "{text}");
    assert!(text.contains(r"x\r\nstore OK"), "{text}");
    assert!(text.contains(r"h\nstore OK: 1 accounts.json:1:"), "{text}");
    assert!(text.contains(r"\u{202e}"), "{text}");
    assert!(!text.contains(['\r', '\u{202e}']), "{text:?}");
    assert_eq!(text.lines().count(), findings_of(dir.path()).len() + 1);
}

/// The findings `iamd validate --json` lists for `store`.
fn findings_of(store: &Path) -> Vec<Value> {
    let o = iamd(&["validate", "--store", store.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["findings"].as_array().unwrap().clone()
}

#[test]
fn validate_cuts_long_values_short() {
    let dir = tempfile::tempdir().unwrap();
    let long = "a".repeat(1 << 20);
    let text = function_policy(&format!(
        r#"{{"Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::111122223333:user/{long}*"}}, "Action": "lambda:InvokeFunction", "Resource": "{F}:f", "{long}": 1}}"#
    ));
    std::fs::write(dir.path().join("f.json"), text).unwrap();
    let o = iamd(&["validate", "--store", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.len() < 8_000, "{} bytes of output", text.len());
    let arn_len = "arn:aws:iam::111122223333:user/*".len() + long.len();
    assert!(text.contains(&format!("…({arn_len} bytes)")), "{text}");
    assert!(text.contains(&format!("…({} bytes)", long.len())), "{text}");

    let findings = findings_of(dir.path());
    assert!(!findings.is_empty());
    for f in &findings {
        let (message, path) = (
            f["message"].as_str().unwrap(),
            f["location"]["path"].as_str().unwrap(),
        );
        assert!(message.len() < 2_000 && path.len() < 2_000, "{f}");
    }
}

#[test]
fn check_refuses_control_characters_and_echoes_them_escaped() {
    for (principal, resource) in [
        ("arn:aws:iam::111122223333:user/a\u{1}b", format!("{F}:f")),
        (
            "arn:aws:iam::111122223333:user/a",
            format!("{F}:f\nstore OK"),
        ),
    ] {
        let store = example_store();
        let o = iamd(&[
            "check",
            "--store",
            store.to_str().unwrap(),
            "--principal",
            principal,
            "--action",
            "lambda:InvokeFunction",
            "--resource",
            &resource,
        ]);
        assert_eq!(o.status.code(), Some(2), "{principal:?} {resource:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("control character"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    }
}
