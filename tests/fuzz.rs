//! Fuzzing harness (issue 11): byte-level and structure-aware `proptest`
//! strategies against every parser that reads untrusted input: the JSON
//! loader, the ARN and principal parsers, the pattern matcher, the Lambda
//! route table and the proto conversion of both gRPC services.
//!
//! Inputs are raw bytes, real seeds mutated byte by byte (the example store
//! and every store the conformance corpus builds), seeds edited as JSON trees,
//! deep nesting, huge numbers, escapes, invalid UTF-8 and control characters.
//! Every property runs its case on a watchdog thread, so a hang fails the
//! case instead of the whole run.
//!
//! Case counts: a fast default, so plain `cargo test` stays quick; the long
//! CI step sets `IAMD_FUZZ_CASES=N` and each property then runs `N / cost`
//! cases, `cost` being its price relative to the cheapest ones (see
//! docs/operations.md, "Fuzzing"). The random stream is fixed unless
//! `IAMD_FUZZ_SEED` says otherwise, so CI never fails by chance.
//!
//! Bugs found are kept at the end: fixed ones as `regression_*` tests with
//! their minimal input; one not yet fixed as a `known_bug_*` test, marked
//! `#[ignore]`, with a `known_bug_*_class` filter that sets its class of
//! inputs aside in the properties until src/ is fixed.
//!
//! The cargo-fuzz alternative needs a nightly toolchain, which the project's
//! machines do not have; these run on stable with the rest of the suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/oracle.rs"]
mod oracle;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use iamd::engine::{self, ContextEntry, Principal, Request, Snapshot};
use iamd::json;
use iamd::policy::pattern::Syntax;
use iamd::policy::{Arn, ArnPattern, Pattern, VarSource};
use iamd::routes::{ArnDefaults, Body, HttpCall, RouteTable};
use iamd::server::pb;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;
use prost::Message;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Harness: case counts, the watchdog, seeds and mutations.

/// `default` cases normally; `IAMD_FUZZ_CASES / cost` in the long run.
/// The random stream is fixed (the same cases every run, so CI never fails
/// by chance); `IAMD_FUZZ_SEED=N` picks another stream and
/// `IAMD_FUZZ_SEED=random` a new one each run, for exploring.
fn config(default: u32, cost: u32) -> ProptestConfig {
    let cases = std::env::var("IAMD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(default, |n| (n / cost).max(1));
    let rng_seed = match std::env::var("IAMD_FUZZ_SEED")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") => RngSeed::Fixed(FIXED_SEED),
        Some("random") => RngSeed::Random,
        Some(n) => RngSeed::Fixed(
            n.parse()
                .unwrap_or_else(|_| panic!("IAMD_FUZZ_SEED=`{n}`: expected a number or `random`")),
        ),
    };
    ProptestConfig {
        cases,
        rng_seed,
        max_shrink_iters: 4096,
        // Failures are reported with their minimal input; a found bug gets
        // a named regression test rather than a file of seeds.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The stream CI runs.
const FIXED_SEED: u64 = 0x1a3d_0011;

/// Longest a single case may run before it counts as a hang. Inputs are
/// bounded (a few hundred KB at most), so anything near this is a
/// super-linear or endless loop, even in a debug build on a busy machine.
const HANG: Duration = Duration::from_secs(30);

/// Runs `f` on its own thread (default stack size, as the service's
/// threads have) and fails the case if it does not finish within [`HANG`].
/// A panic inside is passed on, so proptest sees it and shrinks the input.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(HANG) {
        Ok(Ok(v)) => v,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("{what} did not finish within {HANG:?}: a hang"),
    }
}

/// Runs a property body on the watchdog; `Err` is a failed property.
fn guarded(
    what: &str,
    f: impl FnOnce() -> Result<(), TestCaseError> + Send + 'static,
) -> Result<(), TestCaseError> {
    within(what, f)
}

/// Runs a service handler to its end. Batches and explanations go to a
/// blocking thread, so the handlers need a runtime.
fn ready<F: Future>(f: F) -> F::Output {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    RUNTIME.block_on(f)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What the fuzzers start from: real store files and whole stores, and the
/// requests and strings that appear in them.
struct Seeds {
    /// Single store files (name, text), deduplicated.
    files: Vec<(String, String)>,
    /// Whole stores: the example store and each conformance case's store.
    stores: Vec<Vec<(String, String)>>,
    /// (principal, action, resource) of the conformance cases.
    requests: Vec<(String, String, String)>,
    /// Every string value in the seeds that looks like an ARN.
    arns: Vec<String>,
}

static SEEDS: LazyLock<Seeds> = LazyLock::new(load_seeds);

fn walk_files(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            walk_files(&e.path(), &rel, out);
        } else if rel.ends_with(".json") {
            out.push((rel, std::fs::read_to_string(e.path()).unwrap()));
        }
    }
}

fn collect_arns(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains("arn:") => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_arns(i, out)),
        Value::Object(m) => m.values().for_each(|i| collect_arns(i, out)),
        _ => {}
    }
}

fn load_seeds() -> Seeds {
    let mut stores = Vec::new();
    let mut example = Vec::new();
    walk_files(&root().join("examples/store"), "", &mut example);
    assert!(!example.is_empty(), "examples/store has no files");
    stores.push(example);
    let mut requests = Vec::new();
    // The conformance corpus, built into stores the way tests/conformance.rs does.
    let mut topics: Vec<_> = std::fs::read_dir(root().join("tests/conformance"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    topics.sort();
    let render = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap(),
    };
    for path in topics {
        let topic: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let empty = serde_json::Map::new();
        let shared = topic["stores"].as_object().unwrap_or(&empty);
        for case in topic["cases"].as_array().into_iter().flatten() {
            let mut files: BTreeMap<String, String> = BTreeMap::new();
            if let Some(store) = case["store"].as_str().and_then(|n| shared.get(n)) {
                for (name, content) in store.as_object().into_iter().flatten() {
                    files.insert(name.clone(), render(content));
                }
            }
            if let Some(p) = case.get("user_policy") {
                let doc = serde_json::json!({"UserDetailList": [{
                    "UserName": "tester", "UserId": "AIDATESTERTESTER00001",
                    "Arn": "arn:aws:iam::111122223333:user/tester", "Path": "/",
                    "GroupList": [], "AttachedManagedPolicies": [],
                    "UserPolicyList": [{"PolicyName": "case", "PolicyDocument": p}],
                    "Tags": [{"Key": "team", "Value": "blue"}]}]});
                files.insert("tester.json".into(), render(&doc));
            }
            if let Some(p) = case.get("function_policy") {
                let doc = serde_json::json!({"Policy": p,
                    "ResourceArn": "arn:aws:lambda:us-east-1:111122223333:function:f"});
                files.insert("function-f.json".into(), render(&doc));
            }
            for (name, content) in case["files"].as_object().into_iter().flatten() {
                files.insert(name.clone(), render(content));
            }
            if !files.is_empty() {
                stores.push(files.into_iter().collect());
            }
            let field = |k: &str, d: &str| case[k].as_str().unwrap_or(d).to_owned();
            requests.push((
                field("principal", "arn:aws:iam::111122223333:user/tester"),
                field("action", "lambda:InvokeFunction"),
                field(
                    "resource",
                    "arn:aws:lambda:us-east-1:111122223333:function:f",
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    let files: Vec<(String, String)> = stores
        .iter()
        .flatten()
        .filter(|(_, text)| seen.insert(text.clone()))
        .cloned()
        .collect();
    let mut arns = Vec::new();
    for (_, text) in &files {
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            collect_arns(&v, &mut arns);
        }
    }
    arns.sort();
    arns.dedup();
    requests.sort();
    requests.dedup();
    Seeds {
        files,
        stores,
        requests,
        arns,
    }
}

/// Byte strings worth inserting: JSON syntax, escapes (valid, lone
/// surrogates, bad), numbers out of every range, control and format
/// characters, invalid UTF-8, wide characters and policy vocabulary.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\n",
    b"\r\n",
    b"\r",
    b"\t",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"-",
    b"1e999999999",
    b"-1E-999999999",
    b"123456789012345678901234567890123456789",
    b"0.10000000000000000000000000000000000001e+1",
    b".5",
    b"01",
    b"1.",
    b"\\u0000",
    b"\\u001f",
    b"\\u0020",
    b"\\ud800",
    b"\\udfff",
    b"\\ud83d\\ude00",
    b"\\ud83d\\u0041",
    b"\\u00e9",
    b"\\u00E9",
    b"\\u12",
    b"\\x41",
    b"\\/",
    b"\\n",
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc0\x80",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xae",
    b"\xe2\x80\xa8",
    "é".as_bytes(),
    "😀".as_bytes(),
    "İ".as_bytes(),
    "\u{a0}".as_bytes(),
    b"*",
    b"?",
    b"$",
    b"${",
    b"${aws:username}",
    b"${aws:PrincipalTag/team, 'x'}",
    b"${*}",
    b"${?}",
    b"${$}",
    b"${}",
    b"arn:",
    b"arn:aws:lambda:*:*:function:*",
    b"arn:aws:iam::111122223333:root",
    b"111122223333",
    b"\"Deny\"",
    b"\"Allow\"",
    b"\"*\"",
    b"\"Statement\"",
    b"\"Effect\"",
    b"\"Action\"",
    b"\"NotAction\"",
    b"\"Resource\"",
    b"\"NotResource\"",
    b"\"Principal\"",
    b"\"NotPrincipal\"",
    b"\"Condition\"",
    b"\"Version\"",
    b"\"2012-10-17\"",
    b"\"2008-10-17\"",
    b"\"Policy\"",
    b"\"ResourceArn\"",
    b"\"UserDetailList\"",
    b"\"RoleDetailList\"",
    b"\"GroupDetailList\"",
    b"\"Policies\"",
    b"\"ServiceControlPolicies\"",
    b"\"PermissionsBoundary\"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
];

/// One edit of a byte string; positions are proptest indices, so they fit
/// any length and shrink toward the start.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, u16),
    /// Copies the `len` bytes at a position `times` times right after them.
    Repeat(Index, u16, u8),
    Truncate(Index),
}

fn arb_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 1..8),
    ]
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        4 => (any::<Index>(), arb_token()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        1 => (any::<Index>(), 1u16..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1u16..48, 1u8..6).prop_map(|(i, n, r)| Mutation::Repeat(i, n, r)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
        Mutation::Set(i, v) if len > 0 => bytes[i.index(len)] = *v,
        Mutation::Insert(i, t) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, t.iter().copied());
        }
        Mutation::Delete(i, n) if len > 0 => {
            let at = i.index(len);
            bytes.drain(at..(at + usize::from(*n)).min(len));
        }
        Mutation::Repeat(i, n, times) if len > 0 => {
            let at = i.index(len);
            let end = (at + usize::from(*n)).min(len);
            let chunk = bytes[at..end].to_vec();
            for _ in 0..*times {
                bytes.splice(end..end, chunk.iter().copied());
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        _ => {}
    }
}

fn mutate(text: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for m in ms {
        apply(&mut b, m);
    }
    b
}

/// Raw JSON texts a tree edit puts in place of a value: every type, numbers
/// no float holds, hostile strings, policy fragments that fail late checks.
const HOSTILE: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5",
    "-0",
    "1e400",
    "-1e-400",
    "123456789012345678901234567890",
    "111122223333",
    "\"\"",
    "\" \"",
    "\"*\"",
    "\"?\"",
    "\"Allow\"",
    "\"Deny\"",
    "\"allow\"",
    "\"2012-10-17\"",
    "\"2008-10-17\"",
    "\"111122223333\"",
    "\"1111222233334\"",
    "\"arn:aws:lambda:us-east-1:111122223333:function:f\"",
    "\"arn:aws:lambda:us-east-1:111122223333:function:*\"",
    "\"arn:aws:iam::111122223333:user/alice\"",
    "\"arn:aws:iam::111122223333:root\"",
    "\"arn::lambda:us-east-1:111122223333:function:f\"",
    "\"arn:aws::us-east-1:111122223333:function:f\"",
    "\"arn:aws:lambda:us-east-1:111122223333:\"",
    "\"arn:aws:lam*:us-east-1:111122223333:function:f\"",
    "\"arn:aws:iam::${aws:username}:user/x\"",
    "\"arn:aws:lambda:us-east-1:111122223333:function:${aws:username}\"",
    "\"arn:aws:lambda:us-east-1:111122223333:function:${aws:PrincipalTag/team, 'f'}\"",
    "\"arn:aws:lambda:us-east-1:111122223333:function:${\"",
    "\"${}\"",
    "\"${aws:username, x}\"",
    "\"lambda:*\"",
    "\"lambda:Invoke*\"",
    "\"lambda:?nvokeFunction\"",
    "\"*:*\"",
    "\"lambda\"",
    "\"s3.amazonaws.com\"",
    "\"\\u0000\"",
    "\"\\ud83d\\ude00\"",
    "\"\\u00e9 \\u00a0\"",
    "\"é😀İ\"",
    "\"a\\nb\\tc\"",
    "\"\\u202e\"",
    "[]",
    "{}",
    "[\"*\"]",
    "[[]]",
    "[null]",
    "[\"Allow\", \"Deny\"]",
    "{\"AWS\": \"*\"}",
    "{\"AWS\": []}",
    "{\"AWS\": [\"111122223333\", \"arn:aws:iam::444455556666:root\"]}",
    "{\"Service\": \"s3.amazonaws.com\"}",
    "{\"Federated\": \"cognito-identity.amazonaws.com\"}",
    "{\"CanonicalUser\": \"abc\"}",
    "{\"aws\": \"*\"}",
    "{\"StringEquals\": {\"aws:username\": \"x\"}}",
    "{\"StringEquals\": {\"aws:username\": []}}",
    "{\"StringEquals\": {}}",
    "{\"StringLike\": {\"aws:PrincipalTag/team\": \"*${aws:username}*\"}}",
    "{\"DateGreaterThan\": {\"aws:CurrentTime\": \"not a date\"}}",
    "{\"DateLessThan\": {\"aws:CurrentTime\": \"99999-01-01T00:00:00Z\"}}",
    "{\"DateLessThan\": {\"aws:EpochTime\": \"1e400\"}}",
    "{\"NumericLessThan\": {\"aws:MultiFactorAuthAge\": \"1e999\"}}",
    "{\"NumericEquals\": {\"aws:MultiFactorAuthAge\": 123456789012345678901234567890}}",
    "{\"IpAddress\": {\"aws:SourceIp\": \"10.0.0.0/33\"}}",
    "{\"IpAddress\": {\"aws:SourceIp\": [\"::/0\", \"0.0.0.0/0\"]}}",
    "{\"Bool\": {\"aws:SecureTransport\": \"maybe\"}}",
    "{\"BinaryEquals\": {\"k\": \"!!!\"}}",
    "{\"Null\": {\"aws:SourceArn\": \"yes\"}}",
    "{\"ArnLike\": {\"aws:SourceArn\": \"arn:aws:s3:::*\"}}",
    "{\"ArnEquals\": {\"aws:SourceArn\": \"not-an-arn\"}}",
    "{\"ForAnyValue:StringLike\": {\"aws:TagKeys\": [\"*\"]}}",
    "{\"ForAllValues:StringEqualsIfExists\": {\"aws:TagKeys\": \"a\"}}",
    "{\"StringEqualsIgnoreCaseIfExists\": {\"aws:username\": \"X\"}}",
    "{\"NoSuchOperator\": {\"k\": \"v\"}}",
    "{\"Effect\": \"Deny\", \"Action\": \"*\", \"Resource\": \"*\"}",
    "{\"Effect\": \"Allow\", \"NotAction\": \"*\", \"NotResource\": \"*\", \"Principal\": \"*\"}",
    "{\"Effect\": \"Deny\", \"Action\": \"*\", \"Resource\": \"*\", \"NotPrincipal\": {\"AWS\": \"111122223333\"}}",
    "{\"Version\": \"2012-10-17\", \"Statement\": []}",
    "{\"Version\": \"2012-10-17\", \"Statement\": {\"Effect\": \"Allow\", \"Action\": \"lambda:*\", \"Resource\": \"*\"}}",
    "\"{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":[]}\"",
    "\"{\\\"Statement\\\": [{\\\"Effect\\\": \\\"Allow\\\", \\\"Principal\\\": \\\"*\\\", \\\"Action\\\": \\\"lambda:*\\\", \\\"Resource\\\": \\\"*\\\"}]}\"",
    "\"{not json\"",
];

/// An edit of one node of a JSON tree.
#[derive(Debug, Clone)]
enum Edit {
    Replace(String),
    /// Repeats an object's first member with another value (IAM rejects repeats).
    DuplicateKey(String),
    Remove,
    WrapInArray,
    /// A value written as a JSON string holding its text (`Policy` is one).
    Stringify,
    /// Byte mutations of a string's content, re-escaped.
    MutateString(Vec<Mutation>),
    /// Keys of an object in other case (`effect`, `EFFECT`).
    CaseKeys(bool),
    /// The value many times over in an array.
    Multiply(u16),
}

fn arb_hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
        1 => "[ -~é😀\\t\\n]{0,24}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => (1usize..6000).prop_map(|n| "9".repeat(n)),
        1 => (1usize..4000).prop_map(|n| format!("\"{}\"", "a".repeat(n))),
        1 => (100usize..140).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => arb_hostile().prop_map(Edit::Replace),
        1 => arb_hostile().prop_map(Edit::DuplicateKey),
        2 => Just(Edit::Remove),
        1 => Just(Edit::WrapInArray),
        1 => Just(Edit::Stringify),
        2 => prop::collection::vec(arb_mutation(), 1..4).prop_map(Edit::MutateString),
        1 => any::<bool>().prop_map(Edit::CaseKeys),
        1 => (2u16..400).prop_map(Edit::Multiply),
    ]
}

/// Writes `v` as JSON with `edit` applied to its node number `target`
/// (preorder); `next` counts the nodes seen.
fn render(v: &Value, target: usize, edit: &Edit, next: &mut usize, out: &mut String) {
    let me = *next;
    *next += 1;
    // Copies written by an edit target nothing more.
    let copy = |v: &Value, out: &mut String| render(v, usize::MAX, edit, &mut 0, out);
    if me == target {
        match edit {
            Edit::Replace(raw) => return out.push_str(raw),
            Edit::Remove => return out.push_str("null"),
            Edit::WrapInArray => {
                out.push('[');
                copy(v, out);
                return out.push(']');
            }
            Edit::Stringify => {
                let mut inner = String::new();
                copy(v, &mut inner);
                return out.push_str(&serde_json::to_string(&inner).unwrap());
            }
            Edit::Multiply(n) => {
                out.push('[');
                for i in 0..*n {
                    if i > 0 {
                        out.push(',');
                    }
                    copy(v, out);
                }
                return out.push(']');
            }
            Edit::MutateString(ms) => {
                if let Value::String(s) = v {
                    let bytes = mutate(s, ms);
                    let s = String::from_utf8_lossy(&bytes);
                    return out.push_str(&serde_json::to_string(&s).unwrap());
                }
            }
            Edit::DuplicateKey(_) | Edit::CaseKeys(_) => {}
        }
    }
    // A removed member or item is left out (its nodes still counted).
    let removed = |next: &usize| matches!(edit, Edit::Remove) && *next == target;
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut first = true;
            for (k, item) in m {
                if removed(next) {
                    render(item, usize::MAX, edit, next, &mut String::new());
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                let key = match edit {
                    Edit::CaseKeys(true) if me == target => k.to_uppercase(),
                    Edit::CaseKeys(false) if me == target => k.to_lowercase(),
                    _ => k.clone(),
                };
                out.push_str(&serde_json::to_string(&key).unwrap());
                out.push(':');
                render(item, target, edit, next, out);
            }
            if let (Edit::DuplicateKey(raw), true) = (edit, me == target) {
                if let Some(k) = m.keys().next() {
                    out.push(',');
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    out.push_str(raw);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            let mut first = true;
            for item in items {
                if removed(next) {
                    render(item, usize::MAX, edit, next, &mut String::new());
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                render(item, target, edit, next, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(count_nodes).sum(),
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        _ => 0,
    }
}

/// A seed file edited as a tree: still JSON (mostly), so the loader's
/// later checks see it.
fn tree_edited(text: &str, at: &[(Index, Edit)]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return text.as_bytes().to_vec();
    };
    let mut out = String::new();
    for (i, edit) in at {
        let target = i.index(count_nodes(&v));
        out.clear();
        render(&v, target, edit, &mut 0, &mut out);
        match serde_json::from_str::<Value>(&out) {
            // Duplicate keys and huge numbers do not survive a re-parse: stop there.
            Ok(next) if !matches!(edit, Edit::DuplicateKey(_)) => v = next,
            _ => return out.into_bytes(),
        }
    }
    if out.is_empty() {
        out = v.to_string();
    }
    out.into_bytes()
}

fn seed_file(i: &Index) -> &'static str {
    let files = &SEEDS.files;
    &files[i.index(files.len())].1
}

/// Deep nesting around a policy-shaped core, in the places the loader recurses.
fn deep_nesting() -> impl Strategy<Value = Vec<u8>> {
    (
        100usize..140,
        prop::sample::select(vec![
            ("[", "]"),
            ("{\"a\":", "}"),
            ("{\"Statement\":", "}"),
            ("[{\"Condition\":", "}]"),
        ]),
        prop::sample::select(vec![
            "{\"Policy\": {}, \"ResourceArn\": \"arn:aws:lambda:us-east-1:111122223333:function:f\"}",
            "{\"ServiceControlPolicies\": [{\"Name\": \"s\", \"Content\": {}, \"Targets\": [\"111122223333\"]}]}",
            "{\"UserDetailList\": [{\"UserName\": \"u\", \"Arn\": \"arn:aws:iam::111122223333:user/u\", \"UserPolicyList\": [{\"PolicyName\": \"p\", \"PolicyDocument\": {}}]}]}",
            "{}",
        ]),
    )
        .prop_map(|(n, (open, close), wrapper)| {
            let deep = format!("{}1{}", open.repeat(n), close.repeat(n));
            wrapper.replacen("{}", &deep, 1).into_bytes()
        })
}

/// The text of one store file: raw bytes, a mutated seed, an edited seed,
/// deep nesting, or a seed with a hostile value spliced into a policy.
fn arb_file_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => "\\PC{0,128}".prop_map(String::into_bytes),
        4 => (any::<Index>(), prop::collection::vec(arb_mutation(), 1..8))
            .prop_map(|(i, ms)| mutate(seed_file(&i), &ms)),
        4 => (any::<Index>(), prop::collection::vec((any::<Index>(), arb_edit()), 1..4))
            .prop_map(|(i, edits)| tree_edited(seed_file(&i), &edits)),
        1 => (
            any::<Index>(),
            prop::collection::vec((any::<Index>(), arb_edit()), 1..3),
            prop::collection::vec(arb_mutation(), 1..3),
        )
            .prop_map(|(i, edits, ms)| {
                let edited = String::from_utf8_lossy(&tree_edited(seed_file(&i), &edits)).into_owned();
                mutate(&edited, &ms)
            }),
        1 => deep_nesting(),
        1 => any::<Index>().prop_map(|i| seed_file(&i).as_bytes().to_vec()),
    ]
}

/// A store: one or more files (a seed store with files changed, or new
/// files), some in a sub-folder. Names sort in the loader's walk order.
fn arb_store_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop_oneof![
        prop::collection::vec(arb_file_bytes(), 1..4).prop_map(|files| {
            files
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("{i:02}.json"), b))
                .collect()
        }),
        (
            any::<Index>(),
            prop::collection::vec((any::<Index>(), arb_file_bytes()), 0..3),
        )
            .prop_map(|(s, changes)| {
                let stores = &SEEDS.stores;
                let mut files: Vec<(String, Vec<u8>)> = stores[s.index(stores.len())]
                    .iter()
                    .map(|(n, t)| (n.clone(), t.as_bytes().to_vec()))
                    .collect();
                for (at, bytes) in changes {
                    let k = at.index(files.len() + 1);
                    match files.get_mut(k) {
                        Some(f) => f.1 = bytes,
                        None => files.push((format!("zz-new-{k}.json"), bytes)),
                    }
                }
                files
            }),
    ]
}

// ---------------------------------------------------------------------------
// 1. The JSON loader.

/// Every (line, column) the parser can report, with its byte offset: lines
/// split at `\n` only, columns count characters from 1.
fn position_map(text: &str) -> HashMap<(u32, u32), usize> {
    let mut m = HashMap::new();
    let (mut line, mut col) = (1u32, 1u32);
    for (i, c) in text.char_indices() {
        m.insert((line, col), i);
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    m.insert((line, col), text.len());
    m
}

/// IAM's compact length by walking the finished tree (as src/json.rs's unit test does).
fn compact_len_by_walking(node: &json::Node) -> usize {
    match &node.value {
        json::Value::Null | json::Value::Bool(true) => 4,
        json::Value::Bool(false) => 5,
        json::Value::Number(n) => n.len(),
        json::Value::String(s) => s.chars().filter(|c| !c.is_whitespace()).count() + 2,
        json::Value::Array(items) => {
            2 + items.len().saturating_sub(1)
                + items.iter().map(compact_len_by_walking).sum::<usize>()
        }
        json::Value::Object(members) => {
            2 + members.len().saturating_sub(1)
                + members
                    .iter()
                    .map(|m| m.key.len() + 3 + compact_len_by_walking(&m.value))
                    .sum::<usize>()
        }
    }
}

/// Every node's position is where its text starts, and its compact length is right.
fn check_node(n: &json::Node, text: &str, at: &HashMap<(u32, u32), usize>) -> Result<(), String> {
    let Some(&off) = at.get(&(n.pos.line, n.pos.column)) else {
        return Err(format!("{:?} is not a position in the text", n.pos));
    };
    let rest = &text[off..];
    let starts = match &n.value {
        json::Value::Null => rest.starts_with("null"),
        json::Value::Bool(b) => rest.starts_with(if *b { "true" } else { "false" }),
        json::Value::Number(s) => rest.starts_with(s),
        json::Value::String(_) => rest.starts_with('"'),
        json::Value::Array(_) => rest.starts_with('['),
        json::Value::Object(_) => rest.starts_with('{'),
    };
    if !starts {
        return Err(format!(
            "a {} at {:?} points at `{}`",
            n.value.kind(),
            n.pos,
            rest.chars().take(12).collect::<String>()
        ));
    }
    let want = compact_len_by_walking(n).min(u32::MAX as usize);
    if n.compact_len as usize != want {
        return Err(format!(
            "compact_len {} of the {} at {:?}, by walking {want}",
            n.compact_len,
            n.value.kind(),
            n.pos
        ));
    }
    match &n.value {
        json::Value::Array(items) => items.iter().try_for_each(|i| check_node(i, text, at)),
        json::Value::Object(members) => {
            members
                .iter()
                .try_for_each(|m| match at.get(&(m.key_pos.line, m.key_pos.column)) {
                    Some(&k) if text[k..].starts_with('"') => check_node(&m.value, text, at),
                    _ => Err(format!(
                        "key `{}` at {:?} is not at its quote",
                        m.key, m.key_pos
                    )),
                })
        }
        _ => Ok(()),
    }
}

/// Our tree as serde's (duplicate keys: the last wins, as in serde).
fn to_serde(n: &json::Node) -> Value {
    match &n.value {
        json::Value::Null => Value::Null,
        json::Value::Bool(b) => Value::Bool(*b),
        json::Value::Number(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        json::Value::String(s) => Value::String(s.to_string()),
        json::Value::Array(items) => Value::Array(items.iter().map(to_serde).collect()),
        json::Value::Object(members) => {
            let mut m = serde_json::Map::new();
            for member in members {
                m.insert(member.key.to_string(), to_serde(&member.value));
            }
            Value::Object(m)
        }
    }
}

fn check_json_text(text: &str) -> Result<(), TestCaseError> {
    let ours = json::parse(text);
    let theirs = serde_json::from_str::<Value>(text);
    let at = position_map(text);
    match (&ours, &theirs) {
        (Ok(node), _) => {
            check_node(node, text, &at).map_err(TestCaseError::fail)?;
        }
        (Err(e), _) => {
            prop_assert!(
                at.contains_key(&(e.pos.line, e.pos.column)),
                "error {e} is not at a position of the text"
            );
        }
    }
    // Agree with serde_json, except where serde's own limits differ: it
    // rejects numbers no f64 holds (we keep their text) and counts its
    // nesting bound one level earlier.
    let serde_limit = theirs.as_ref().err().is_some_and(|e| {
        let m = e.to_string();
        m.contains("number out of range") || m.contains("recursion limit")
    });
    let our_limit = ours
        .as_ref()
        .err()
        .is_some_and(|e| e.message.contains("nesting deeper"));
    if !serde_limit && !our_limit {
        match (&ours, &theirs) {
            (Ok(node), Ok(v)) => prop_assert_eq!(&to_serde(node), v),
            (Err(e), Err(_)) => prop_assert!(!e.message.is_empty()),
            (o, t) => prop_assert!(
                false,
                "json::parse says {:?}, serde_json says {:?}",
                o.as_ref().map(|_| "ok").map_err(ToString::to_string),
                t.as_ref().map(|_| "ok").map_err(ToString::to_string)
            ),
        }
    }
    Ok(())
}

/// Principals, actions and resources to decide on a store that loaded.
fn requests_for(store: &iamd::model::Store) -> Vec<(String, String, String)> {
    let mut principals: Vec<String> = vec![
        "*".into(),
        "111122223333".into(),
        "s3.amazonaws.com".into(),
        "arn:aws:iam::444455556666:root".into(),
    ];
    principals.extend(store.users.iter().take(4).map(|u| u.arn.clone()));
    for r in store.roles.iter().take(3) {
        principals.push(r.arn.clone());
        principals.push(format!(
            "arn:aws:sts::{}:assumed-role/{}/fuzz",
            r.account, r.name
        ));
    }
    let mut resources: Vec<String> = vec![
        "*".into(),
        "arn:aws:lambda:us-east-1:111122223333:function:f".into(),
    ];
    resources.extend(
        store
            .resource_policies
            .iter()
            .take(3)
            .map(|r| r.resource_arn.clone()),
    );
    resources.extend(store.roles.iter().take(2).map(|r| r.arn.clone()));
    let actions = [
        "lambda:InvokeFunction",
        "lambda:GetFunction",
        "sts:AssumeRole",
    ];
    let mut out = Vec::new();
    for p in &principals {
        for r in &resources {
            for a in actions {
                out.push((p.clone(), a.to_owned(), r.clone()));
            }
        }
    }
    out
}

fn fixed_now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_780_000_000).unwrap()
}

fn context_for_decisions() -> Vec<ContextEntry> {
    vec![
        ContextEntry::new("aws:SourceIp", ["10.1.2.3"]),
        ContextEntry::new("aws:SecureTransport", ["true"]),
        ContextEntry::new("aws:TagKeys", ["team"]),
        ContextEntry::new("aws:username", ["f"]),
    ]
}

/// An accepted store compiles, and every decision agrees with the
/// exhaustive explainer.
fn decide_everything(store: iamd::model::Store) -> Result<(), TestCaseError> {
    let requests = requests_for(&store);
    let snap = Snapshot::compile_owned(store).unwrap();
    let ctx = context_for_decisions();
    for (p, a, r) in &requests {
        let Ok(req) = Request::new(p, a, r, &ctx, fixed_now()) else {
            continue; // a stored ARN that is no request principal
        };
        let fast = engine::decide(&snap, &req);
        let slow = engine::explain(&snap, &req);
        prop_assert_eq!(fast, slow.decision, "{} {} {}", p, a, r);
        prop_assert_eq!(
            fast,
            oracle::decide_by_scan(&snap, &req),
            "{} {} {}",
            p,
            a,
            r
        );
        let _ = fast.message(&req);
    }
    Ok(())
}

fn check_store(files: Vec<(String, Vec<u8>)>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let names: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let (store, findings) = iamd::store::load_with_findings(dir.path())
        .map_err(|e| TestCaseError::fail(format!("the store folder was unreadable: {e}")))?;
    for f in &findings {
        prop_assert!(
            names.contains(&*f.location.file),
            "finding names file `{}`, not one of {:?}: {}",
            f.location.file,
            names,
            f
        );
        prop_assert!(f.location.line >= 1 && f.location.column >= 1, "{}", f);
    }
    // The same files from memory give the same findings (when they are text).
    let texts: Option<Vec<(&str, &str)>> = files
        .iter()
        .map(|(n, b)| std::str::from_utf8(b).ok().map(|t| (n.as_str(), t)))
        .collect();
    if let Some(texts) = texts {
        let (mem, mem_findings) = iamd::store::from_texts(texts);
        let show =
            |f: &iamd::finding::Findings| f.iter().map(ToString::to_string).collect::<Vec<_>>();
        prop_assert_eq!(show(&findings), show(&mem_findings));
        prop_assert_eq!(store.is_some(), mem.is_some());
    }
    match store {
        None => {
            prop_assert!(
                findings.has_errors(),
                "a rejected store has no ERROR finding"
            );
        }
        Some(store) => {
            prop_assert!(
                !findings.has_errors(),
                "an accepted store has an ERROR finding"
            );
            decide_everything(store)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256, 1))]

    /// The located JSON parser on hostile text: never panics, agrees with
    /// serde_json on what is JSON and what it holds, and every node and
    /// error position points where it should.
    #[test]
    fn json_parser_agrees_and_locates(bytes in arb_file_bytes()) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        guarded("json::parse", move || check_json_text(&text))?;
    }
}

proptest! {
    #![proptest_config(config(64, 4))]

    /// The store loader on hostile files written to a folder: never panics
    /// or hangs; every finding names one of the files; a rejected store
    /// has an ERROR; disk and memory loading agree; an accepted store
    /// compiles and decides as the exhaustive explainer does.
    #[test]
    fn loader_on_hostile_store_files(files in arb_store_files()) {
        guarded("the store loader", move || check_store(files))?;
    }
}

// ---------------------------------------------------------------------------
// 2. ARNs, principals and requests.

fn arb_arnish() -> impl Strategy<Value = String> {
    let arns = || {
        let a = &SEEDS.arns;
        any::<Index>().prop_map(move |i| a[i.index(a.len())].clone())
    };
    prop_oneof![
        1 => "\\PC{0,48}",
        2 => "[a:*/é0-9]{0,24}",
        3 => "arn:[a-z:-]{0,6}:[a-z:]{0,6}:[a-z0-9:-]{0,10}:[0-9:]{0,13}:[a-z:/*-]{0,12}",
        3 => arns(),
        3 => (arns(), prop::collection::vec(arb_mutation(), 1..4))
            .prop_map(|(s, ms)| String::from_utf8_lossy(&mutate(&s, &ms)).into_owned()),
        1 => (0usize..3000).prop_map(|n| format!("arn:aws:iam::111122223333:user/{}", "a".repeat(n))),
        1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// The ARN model: split at the first five colons; `arn`, a partition, a
/// service and a resource are required.
fn arn_model(s: &str) -> Option<[&str; 5]> {
    let p: Vec<&str> = s.splitn(6, ':').collect();
    match p.as_slice() {
        // No AWS name holds a control character: such text is refused.
        _ if s.chars().any(char::is_control) => None,
        ["arn", partition, service, region, account, resource]
            if !partition.is_empty() && !service.is_empty() && !resource.is_empty() =>
        {
            Some([*partition, *service, *region, *account, *resource])
        }
        _ => None,
    }
}

fn check_principal(s: &str) -> Result<(), TestCaseError> {
    let twelve = |a: &str| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit());
    let Ok(p) = Principal::parse(s) else {
        return Ok(());
    };
    prop_assert!(s.len() <= engine::MAX_ARN_LEN);
    match p {
        Principal::Anonymous => prop_assert_eq!(s, "*"),
        Principal::Root { account } => {
            prop_assert!(twelve(account));
            prop_assert!(
                s == account || s.ends_with(&format!(":{account}:root")),
                "root `{}` of `{}`",
                account,
                s
            );
        }
        Principal::User { arn, account, name }
        | Principal::Role { arn, account, name }
        | Principal::FederatedUser { arn, account, name } => {
            prop_assert_eq!(arn, s);
            prop_assert!(twelve(account));
            prop_assert!(!name.is_empty() && s.ends_with(name) && !name.contains('/'));
            prop_assert_eq!(Arn::parse(s).map(|a| a.account), Ok(account));
        }
        Principal::AssumedRole {
            arn,
            account,
            role,
            session,
        } => {
            prop_assert_eq!(arn, s);
            prop_assert!(twelve(account));
            prop_assert!(!role.is_empty() && !session.is_empty());
            let tail = format!("{role}/{session}");
            prop_assert!(s.ends_with(&tail));
            prop_assert_eq!(Arn::parse(s).map(|a| a.account), Ok(account));
        }
        Principal::Service { name } => {
            prop_assert_eq!(name, s);
            prop_assert!(s.contains('.') && p.account().is_none());
        }
    }
    if !matches!(p, Principal::Anonymous | Principal::Service { .. }) {
        prop_assert!(p.account().is_some_and(twelve));
    }
    Ok(())
}

/// Context values of the keys whose types iamd checks, right and wrong.
fn arb_context() -> impl Strategy<Value = Vec<ContextEntry>> {
    let keys = prop::sample::select(vec![
        "aws:SourceIp",
        "aws:CurrentTime",
        "aws:EpochTime",
        "aws:TokenIssueTime",
        "aws:SecureTransport",
        "aws:MultiFactorAuthPresent",
        "aws:MultiFactorAuthAge",
        "aws:PrincipalTag/team",
        "aws:TagKeys",
        "aws:username",
        "aws:SourceArn",
        "aws:SourceAccount",
        "aws:RequestedRegion",
        "lambda:FunctionArn",
        "AWS:SOURCEIP",
        "",
        "k\u{0}",
        "custom:Key",
    ]);
    let values = prop_oneof![
        3 => prop::sample::select(vec![
            "10.0.0.1", " 10.0.0.1 ", "::1", "2001:db8::1", "fe80::1%eth0", "10.0.0.0/8", "1.2.3",
            "256.0.0.1", "2026-01-01T00:00:00Z", "2026-01-01", "2026-13-45T99:99:99Z", "1780000000",
            "-1", "1e400", "NaN", "inf", "-0", "0x10", "true", "TRUE", "false", "yes", "", " ",
            "f", "team", "arn:aws:s3:::bucket", "111122223333", "é😀",
        ]).prop_map(str::to_owned),
        1 => "\\PC{0,24}",
        1 => (300usize..800).prop_map(|n| "9".repeat(n)),
    ];
    prop::collection::vec(
        (keys, prop::collection::vec(values, 0..3)).prop_map(|(k, v)| ContextEntry::new(k, v)),
        0..4,
    )
}

fn arb_action() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "lambda:InvokeFunction", "LAMBDA:invokefunction", "lambda:GetFunction", "sts:AssumeRole",
            "s3:GetObject", "lambda:*", "lambda:", ":x", "lambda", "lambda:Invoke Function", "a:b:c",
            "lambda:InvokeFunctioné",
        ]).prop_map(str::to_owned),
        1 => seed_request(1),
        1 => "[a-zA-Z0-9:_*-]{0,20}",
        1 => "\\PC{0,20}",
        1 => (120usize..140).prop_map(|n| format!("lambda:{}", "a".repeat(n))),
    ]
}

fn arb_principal() -> impl Strategy<Value = String> {
    let users = prop::sample::select(vec![
        "arn:aws:iam::111122223333:user/alice",
        "arn:aws:iam::111122223333:user/contractors/bob",
        "arn:aws:iam::444455556666:user/dave",
        "arn:aws:iam::111122223333:role/lambda-cross-account",
        "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/s",
        "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/",
        "arn:aws:sts::111122223333:federated-user/x",
        "arn:aws:iam::111122223333:root",
        "111122223333",
        "*",
        "s3.amazonaws.com",
        ".amazonaws.com",
        "S3.amazonaws.com",
        "arn:aws:iam::11112222333:user/x",
        "arn:aws:iam::111122223333:user/",
        "arn:aws:iam::111122223333:group/developers",
    ])
    .prop_map(str::to_owned);
    prop_oneof![3 => users, 1 => seed_request(0), 2 => arb_arnish()]
}

/// Field `k` (principal, action, resource) of a conformance case's request.
fn seed_request(k: usize) -> impl Strategy<Value = String> {
    let r = &SEEDS.requests;
    any::<Index>().prop_map(move |i| {
        let (p, a, res) = &r[i.index(r.len())];
        [p, a, res][k].clone()
    })
}

fn arb_resource() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "*",
        "arn:aws:lambda:us-east-1:111122223333:function:hello-world",
        "arn:aws:lambda:us-east-1:111122223333:function:hello-world:prod",
        "arn:aws:lambda:us-east-1:444455556666:function:x",
        "arn:aws:s3:::bucket",
        "arn:aws:lambda:us-east-1:111122223333:function:*",
        "**",
        "",
    ])
    .prop_map(str::to_owned);
    prop_oneof![3 => known, 1 => seed_request(2), 2 => arb_arnish()]
}

/// The example store, compiled once, for deciding arbitrary requests.
static EXAMPLE: LazyLock<Snapshot> = LazyLock::new(|| {
    let loaded = iamd::store::load(&root().join("examples/store")).unwrap();
    Snapshot::compile_owned(loaded.store).unwrap()
});

fn check_request(
    principal: String,
    action: String,
    resource: String,
    context: Vec<ContextEntry>,
) -> Result<(), TestCaseError> {
    let Ok(req) = Request::new(&principal, &action, &resource, &context, fixed_now()) else {
        return Ok(());
    };
    prop_assert!(Principal::parse(&principal).is_ok());
    prop_assert_eq!(req.action_lower(), action.to_ascii_lowercase());
    prop_assert!(action.len() <= engine::MAX_ACTION_LEN);
    prop_assert!(!resource.is_empty() && resource.len() <= engine::MAX_ARN_LEN);
    prop_assert_eq!(req.resource_arn.is_none(), resource == "*");
    if let Some(a) = req.resource_arn {
        prop_assert_eq!(a.to_string(), resource.clone());
    }
    let snap: &Snapshot = &EXAMPLE;
    let fast = engine::decide(snap, &req);
    let slow = engine::explain(snap, &req);
    prop_assert_eq!(fast, slow.decision);
    let _ = fast.message(&req);
    Ok(())
}

proptest! {
    #![proptest_config(config(512, 1))]

    /// `Arn::parse` is exactly the split-at-five-colons model, and a parsed
    /// ARN's components rejoin to the input.
    #[test]
    fn arn_parse_is_the_split_model_and_round_trips(s in arb_arnish()) {
        match (Arn::parse(&s), arn_model(&s)) {
            (Ok(a), Some(parts)) => {
                prop_assert_eq!([a.partition, a.service, a.region, a.account, a.resource], parts);
                prop_assert_eq!(a.to_string(), s.clone());
                prop_assert!(![a.partition, a.service, a.region, a.account].iter().any(|c| c.contains(':')));
            }
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "`{}`: parse {:?}, model {:?}", s, got, want),
        }
    }

    /// `Principal::parse` never panics, and what it accepts is consistent
    /// with the ARN it came from.
    #[test]
    fn principal_parse_is_consistent(s in arb_principal()) {
        guarded("Principal::parse", move || check_principal(&s))?;
    }

    /// `Request::new` never panics on hostile fields and typed context
    /// values; what it accepts the example store decides, as the explainer does.
    #[test]
    fn request_new_and_decide(
        principal in arb_principal(),
        action in arb_action(),
        resource in arb_resource(),
        context in arb_context(),
    ) {
        guarded("Request::new", move || check_request(principal, action, resource, context))?;
    }

    /// ARN patterns never panic on hostile text, parsing or matching.
    #[test]
    fn arn_pattern_never_panics(p in arb_arnish(), t in arb_arnish(), vars in any::<bool>()) {
        guarded("ArnPattern", move || {
            if let Ok(pat) = ArnPattern::parse(&p, vars) {
                let _ = pat.matches(&t, &FixedVars(vec![("aws:username".into(), "a*".into())]));
                let _ = (pat.source(), pat.service(), pat.as_literal(), pat.has_variables());
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------
// 3. The pattern matcher, against a reference glob.

/// One token of a generated pattern.
#[derive(Debug, Clone)]
enum Tok {
    Ch(char),
    Star,
    One,
    /// `${*}`, `${?}`, `${$}`: the literal character.
    Escape(char),
    /// `${key}` or `${key, 'default'}`.
    Var(String, Option<String>),
}

/// KNOWN BUG (found by this harness, not fixed here: src/policy/pattern.rs
/// is being rewritten): ignoring case, an exact pattern folds whole strings
/// (`İ` lower-cases to the two characters `i̇`) but the general matcher
/// folds character by character, so `${k}` with `k = İ` does not match
/// `i̇` while the literal `İ` does: `StringEqualsIgnoreCase` answers
/// differently for a value written out and the same value from a variable.
/// `İ` (U+0130) is the one character whose lower case is longer than one
/// character. `known_bug_ignore_case_variable_vs_literal` (ignored) holds
/// the minimal input; the property sets this class aside until fixed.
fn known_bug_multi_char_lowercase_class(texts: &[&str]) -> bool {
    texts
        .iter()
        .any(|t| t.chars().any(|c| c.to_lowercase().count() > 1))
}

/// The exponential but obviously correct glob: `*` any run, `?` one character.
#[derive(Debug, Clone, PartialEq)]
enum G {
    C(char),
    Any,
    One,
}

fn glob_ref(p: &[G], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((G::Any, rest)) => (0..=t.len()).any(|i| glob_ref(rest, &t[i..])),
        Some((G::One, rest)) => !t.is_empty() && glob_ref(rest, &t[1..]),
        Some((G::C(c), rest)) => t.first() == Some(c) && glob_ref(rest, &t[1..]),
    }
}

/// A variable source backed by a list (keys case-insensitive).
struct FixedVars(Vec<(String, String)>);

impl VarSource for FixedVars {
    fn var(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

fn render_tokens(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        match t {
            Tok::Ch(c) => s.push(*c),
            Tok::Star => s.push('*'),
            Tok::One => s.push('?'),
            Tok::Escape(c) => {
                s.push_str("${");
                s.push(*c);
                s.push('}');
            }
            Tok::Var(k, None) => s.push_str(&format!("${{{k}}}")),
            Tok::Var(k, Some(d)) => s.push_str(&format!("${{{k}, '{d}'}}")),
        }
    }
    s
}

/// The reference pattern: variables replaced by their values as literal
/// text; `None` when a variable has no value (then nothing matches).
fn expand_tokens(toks: &[Tok], vars: &FixedVars, fold: bool) -> Option<Vec<G>> {
    let lower = |c: char| if fold { c.to_ascii_lowercase() } else { c };
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Ch(c) | Tok::Escape(c) => out.push(G::C(lower(*c))),
            Tok::Star => out.push(G::Any),
            Tok::One => out.push(G::One),
            Tok::Var(k, d) => {
                let v = vars.var(k.trim()).or(d.as_deref())?;
                out.extend(v.chars().map(|c| G::C(lower(c))));
            }
        }
    }
    Some(out)
}

fn arb_tokens(chars: &'static str, variables: bool) -> impl Strategy<Value = Vec<Tok>> {
    let ch = prop::sample::select(chars.chars().collect::<Vec<_>>()).prop_map(Tok::Ch);
    let var = (
        prop::sample::select(vec!["k", "aws:username", "AWS:UserName", " k ", "missing"]),
        prop::option::of(prop::sample::select(vec!["", "d", "a*b", "?", "é"])),
    )
        .prop_map(|(k, d)| Tok::Var(k.to_owned(), d.map(str::to_owned)));
    let esc = prop::sample::select(vec!['*', '?', '$']).prop_map(Tok::Escape);
    let tok = if variables {
        prop_oneof![5 => ch, 2 => Just(Tok::Star), 1 => Just(Tok::One), 1 => esc, 1 => var].boxed()
    } else {
        prop_oneof![5 => ch, 2 => Just(Tok::Star), 1 => Just(Tok::One)].boxed()
    };
    prop::collection::vec(tok, 0..12)
}

fn arb_vars() -> impl Strategy<Value = FixedVarsSpec> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["k", "aws:username", "other"]),
            "[ab*?$é]{0,4}",
        ),
        0..3,
    )
    .prop_map(|v| FixedVarsSpec(v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// Variable values as generated (a debuggable copy of [`FixedVars`]).
#[derive(Debug, Clone)]
struct FixedVarsSpec(Vec<(String, String)>);

fn check_pattern(
    toks: Vec<Tok>,
    text: String,
    spec: FixedVarsSpec,
    variables: bool,
) -> Result<(), TestCaseError> {
    let source = render_tokens(&toks);
    let syntax = Syntax {
        wildcards: true,
        variables,
    };
    let pat = Pattern::parse(&source, syntax)
        .map_err(|e| TestCaseError::fail(format!("`{source}` did not parse: {e}")))?;
    let vars = FixedVars(spec.0);
    let t: Vec<char> = text.chars().collect();
    let want = expand_tokens(&toks, &vars, false).is_some_and(|g| glob_ref(&g, &t));
    prop_assert_eq!(
        pat.matches(&text, &vars),
        want,
        "`{}` against `{}` (vars {:?})",
        source,
        text,
        vars.0
    );
    // Ignoring case: the reference folds both sides (ASCII alphabets only).
    if source.is_ascii() && text.is_ascii() && vars.0.iter().all(|(_, v)| v.is_ascii()) {
        let lt: Vec<char> = text.to_ascii_lowercase().chars().collect();
        let want = expand_tokens(&toks, &vars, true).is_some_and(|g| glob_ref(&g, &lt));
        prop_assert_eq!(
            pat.matches_ignore_case(&text, &vars),
            want,
            "`{}` against `{}` ignoring case (vars {:?})",
            source,
            text,
            vars.0
        );
    }
    // Without wildcards the text is compared as written.
    let plain = Pattern::parse(
        &source,
        Syntax {
            wildcards: false,
            variables: false,
        },
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(plain.matches(&text, &vars), source == text);
    Ok(())
}

/// The ARN-pattern model: six components split at the first five colons,
/// each a glob (no variables); `None` where the pattern must be refused.
fn arn_pattern_model(p: &str, t: &str) -> Option<bool> {
    if p == "*" {
        return Some(true);
    }
    let pc: Vec<&str> = p.splitn(6, ':').collect();
    let ["arn", partition, service, _, _, resource] = pc.as_slice() else {
        return None;
    };
    if partition.is_empty() || resource.is_empty() || service.contains(['*', '?']) {
        return None;
    }
    let tc: Vec<&str> = t.splitn(6, ':').collect();
    if tc.len() != 6 {
        return Some(false);
    }
    let glob = |p: &str| {
        p.chars()
            .map(|c| match c {
                '*' => G::Any,
                '?' => G::One,
                c => G::C(c),
            })
            .collect::<Vec<_>>()
    };
    Some(pc.iter().zip(&tc).all(|(p, t)| {
        let t: Vec<char> = t.chars().collect();
        glob_ref(&glob(p), &t)
    }))
}

fn arb_arn_pattern_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "arn(:[a*?é]{0,3}){5}[a:*?/]{0,4}",
        2 => "arn:[a*]{0,2}:[a]{0,2}:[a*?:]{0,4}:[a*?:]{0,4}:[a:/*?]{0,4}",
        1 => "[arn:*?]{0,14}",
    ]
}

proptest! {
    #![proptest_config(config(1024, 1))]

    /// `Pattern` (all its compiled forms: exact, prefix, suffix, general)
    /// matches as the reference glob does, with escapes and variables
    /// (whose values are always literal) and ignoring case.
    #[test]
    fn pattern_matches_like_the_reference_glob(
        toks in arb_tokens("ab:/é", true),
        text in "[ab:/é*?$]{0,12}",
        vars in arb_vars(),
    ) {
        guarded("Pattern", move || check_pattern(toks, text, vars, true))?;
    }

    /// The same with variables off: `$` and `{` are plain characters.
    #[test]
    fn pattern_without_variables_like_the_reference_glob(
        toks in arb_tokens("aB:${}'", false),
        text in "[aAbB:${}']{0,12}",
    ) {
        guarded("Pattern", move || check_pattern(toks, text, FixedVarsSpec(Vec::new()), false))?;
    }

    /// `ArnPattern` matches component by component as the model says, and
    /// refuses exactly the patterns the model refuses.
    #[test]
    fn arn_pattern_matches_like_the_component_model(
        p in arb_arn_pattern_text(),
        t in "arn(:[a*?é]{0,3}){5}[a:*?/]{0,4}|[arn:a]{0,12}",
    ) {
        guarded("ArnPattern", move || {
            let got = ArnPattern::parse(&p, false).ok().map(|pat| pat.matches(&t, &FixedVars(Vec::new())));
            prop_assert_eq!(got, arn_pattern_model(&p, &t), "`{}` against `{}`", p, t);
            Ok(())
        })?;
    }

    /// A variable's value is literal text: `${k}rest` with `k = v` matches
    /// exactly what `v` + `rest` written out does, with and without case,
    /// whichever compiled form each takes (Unicode case folding included:
    /// `StringEqualsIgnoreCase` takes any text).
    #[test]
    fn variable_values_match_as_written_out(
        value in "[aAiIİKkKéÉßẞ\u{307}*]{0,4}",
        rest in "[aAiIİKkKéÉßẞ\u{307}*]{0,4}",
        noise in "[aAiIİKkKéÉßẞ\u{307}xX]{0,8}",
        cases in prop::collection::vec(0u8..4, 8),
        wildcards in any::<bool>(),
        front in any::<bool>(),
    ) {
        guarded("Pattern variables", move || {
            // Texts near the pattern: its characters in other case, or noise.
            let near: String = if front { format!("{value}{rest}") } else { format!("{rest}{value}") }
                .chars()
                .zip(cases.iter().cycle())
                .flat_map(|(c, k)| match k {
                    0 => c.to_lowercase().collect::<Vec<_>>(),
                    1 => c.to_uppercase().collect(),
                    _ => vec![c],
                })
                .filter(|c| *c != '*')
                .collect();
            let text = if cases[7] == 0 { noise } else { near };
            let syntax = Syntax { wildcards, variables: true };
            let vars = FixedVars(vec![("k".into(), value.clone())]);
            // The value is literal; written out, its stars are escaped.
            let written = value.replace('*', "${*}");
            let (with_var, literal) = if front {
                (format!("${{k}}{rest}"), format!("{written}{rest}"))
            } else {
                (format!("{rest}${{k}}"), format!("{rest}{written}"))
            };
            let a = Pattern::parse(&with_var, syntax).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b = Pattern::parse(&literal, syntax).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(a.matches(&text, &vars), b.matches(&text, &vars),
                "`{}` (k = `{}`) and `{}` against `{}`", with_var, value, literal, text);
            if known_bug_multi_char_lowercase_class(&[&value, &rest, &text]) {
                return Ok(());
            }
            prop_assert_eq!(a.matches_ignore_case(&text, &vars), b.matches_ignore_case(&text, &vars),
                "`{}` (k = `{}`) and `{}` against `{}` ignoring case", with_var, value, literal, text);
            Ok(())
        })?;
    }

    /// Hostile pattern and value strings (any UTF-8, long runs of stars)
    /// never panic or hang the matcher.
    #[test]
    fn pattern_never_panics_or_hangs(
        p in prop_oneof!["\\PC{0,40}", "[a*?]{0,300}", "(\\$\\{[a-z:, ']{0,6}\\}?|[a*?$])*"],
        t in prop_oneof!["\\PC{0,40}", "a{0,4000}", "[ab]{0,400}"],
        wildcards in any::<bool>(),
        variables in any::<bool>(),
    ) {
        guarded("Pattern", move || {
            let vars = FixedVars(vec![("aws:username".into(), "a*".into())]);
            if let Ok(pat) = Pattern::parse(&p, Syntax { wildcards, variables }) {
                let _ = pat.matches(&t, &vars);
                let _ = pat.matches_ignore_case(&t, &vars);
                let _ = (pat.source(), pat.as_literal(), pat.has_variables(), pat.has_wildcards());
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------
// 4. The Lambda route table.

static ROUTES: LazyLock<Vec<(&'static str, String, &'static str)>> =
    LazyLock::new(|| RouteTable::lambda().routes().collect());

/// Capture and query values, in decoded form.
fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "my-fn", "f", "f:prod", "f:1", "f:$LATEST", "f:$LATEST.PUBLISHED", "f:",
            "111122223333:function:f", "111122223333:function:f:prod", "1111:function:f",
            "arn:aws:lambda:us-east-1:111122223333:function:f",
            "arn:aws:lambda:us-east-1:111122223333:function:f:prod",
            "arn:aws-cn:lambda:cn-north-1:444455556666:function:g",
            "arn::lambda:us-east-1:111122223333:function:f",
            "arn:aws:lambda::111122223333:function:f",
            "arn:aws:lambda:*:111122223333:function:f",
            "arn:aws:lambda:us-east-1:111122223333:function:f:a:b",
            "arn:aws:lambda:us-east-1:111122223333:layer:l:1",
            "arn:aws:lambda:us-east-1:111122223333:code-signing-config:csc-1",
            "arn:aws:s3:::bucket", "arn:", "arn:aws", ":", "::",
            "..", ".", "...", "$LATEST", "é", "f\u{0}", "f g", "prod", "1", "LayerVersion",
            "layer", "uuid-1234", "*",
        ]).prop_map(str::to_owned),
        2 => "[a-zA-Z0-9:._$*-]{0,16}",
        1 => "\\PC{0,12}",
        1 => (130usize..300).prop_map(|n| "a".repeat(n)),
        1 => (2000usize..5000).prop_map(|n| format!("f{}", ":".repeat(n))),
    ]
}

fn arb_query_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "Qualifier", "qualifier", "QUALIFIER", "FunctionName", "functionname", "tagKeys",
            "TagKeys", "TAGKEYS", "find", "Find", "Arn", "Marker", "MaxItems", "Name", "LayerName",
            "VersionNumber", "UUID", "FunctionVersion", "x", "",
        ]).prop_map(str::to_owned),
        1 => "[a-zA-Z]{0,8}",
    ]
}

#[derive(Debug, Clone)]
enum BodySpec {
    Absent,
    Truncated,
    NotText,
    Complete(String),
}

impl BodySpec {
    fn as_body(&self) -> Body<'_> {
        match self {
            BodySpec::Absent => Body::Absent,
            BodySpec::Truncated => Body::Truncated,
            BodySpec::NotText => Body::NotText,
            BodySpec::Complete(s) => Body::Complete(s),
        }
    }
}

fn arb_body_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        arb_value().prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(3, 24, 4, |inner| {
        let keys = prop::sample::select(vec![
            "FunctionName",
            "Tags",
            "Layers",
            "VpcConfig",
            "SubnetIds",
            "SecurityGroupIds",
            "AuthType",
            "FunctionUrlAuthType",
            "CodeSigningConfigArn",
            "Principal",
            "CapacityProviderName",
            "SourceArn",
            "EventSourceArn",
            "team",
            "env",
            "",
            "aws:x",
            "k\u{0}",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..5).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    });
    prop_oneof![
        6 => prop::collection::vec(
            (prop::sample::select(vec!["FunctionName", "Tags", "Layers", "VpcConfig", "AuthType",
                "FunctionUrlAuthType", "CodeSigningConfigArn", "Principal", "CapacityProviderName"]),
             tree),
            0..5,
        ).prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).to_string()),
        1 => prop::sample::select(vec!["", " ", "null", "[]", "\"s\"", "{", "{\"FunctionName\": \"f\",}",
            "{\"Tags\": {\"a\": \"b\", \"a\": 1}}", "{\"FunctionName\": \"f\", \"FunctionName\": \"g\"}"])
            .prop_map(str::to_owned),
        1 => "\\PC{0,32}",
    ]
}

fn arb_body() -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        2 => Just(BodySpec::Absent),
        1 => Just(BodySpec::Truncated),
        1 => Just(BodySpec::NotText),
        6 => arb_body_json().prop_map(BodySpec::Complete),
    ]
}

/// A call built on a route of the table: its captures and query filled
/// with generated values (decoded form), a body, and optional path noise.
#[derive(Debug, Clone)]
struct CallSpec {
    method: String,
    route: Index,
    captures: Vec<String>,
    /// Keep the route's own `?name=value` requirement.
    route_query: bool,
    query: Vec<(String, String)>,
    body: BodySpec,
    noise: Option<(Index, String)>,
    defaults: ArnDefaults,
}

fn arb_defaults() -> impl Strategy<Value = ArnDefaults> {
    (
        prop::sample::select(vec!["aws", "aws-cn", "aws-us-gov"]),
        prop::option::of(prop::sample::select(vec!["us-east-1", "eu-west-1"])),
        prop::option::of(prop::sample::select(vec!["111122223333", "444455556666"])),
    )
        .prop_map(|(p, r, a)| ArnDefaults {
            partition: p.into(),
            region: r.map(Into::into),
            account: a.map(Into::into),
        })
}

fn arb_call() -> impl Strategy<Value = CallSpec> {
    let method = prop_oneof![
        8 => Just(None),
        1 => prop::sample::select(vec!["get", "Post", "PATCH", "HEAD", "", "GET ", "\u{0}"]).prop_map(Some),
    ];
    (
        method,
        any::<Index>(),
        prop::collection::vec(arb_value(), 4),
        prop::bool::weighted(0.9),
        prop::collection::vec((arb_query_key(), arb_value()), 0..4),
        arb_body(),
        prop::option::weighted(
            0.2,
            (
                any::<Index>(),
                prop::sample::select(vec![
                    "/", "//", "/..", "/../", "/./", "%2F", "%2e%2e/", "?", "&", "#", "%", "%zz",
                    "%C0%AF", "%FF", "%00", ";", "\u{0}", " ",
                ])
                .prop_map(str::to_owned),
            ),
        ),
        arb_defaults(),
    )
        .prop_map(
            |(method, route, captures, route_query, query, body, noise, defaults)| CallSpec {
                method: method.map(str::to_owned).unwrap_or_default(),
                route,
                captures,
                route_query,
                query,
                body,
                noise,
                defaults,
            },
        )
}

/// Every byte as `%XX`.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Renders the call's method and path; `encode` writes every capture and
/// query byte percent-encoded, otherwise they go in as they are.
fn render_call(c: &CallSpec, encode: bool) -> (String, String) {
    let (method, template, _) = c.route.get(&ROUTES);
    let (path_t, route_q) = template.split_once('?').unwrap_or((template, ""));
    let esc = |s: &str| if encode { encode_all(s) } else { s.to_owned() };
    let mut path = String::new();
    let mut caps = c.captures.iter().cycle();
    for seg in path_t.split('/').skip(1) {
        path.push('/');
        if seg.starts_with('{') && seg.ends_with('}') {
            path.push_str(&esc(caps.next().map_or("x", String::as_str)));
        } else {
            path.push_str(seg);
        }
    }
    let mut query: Vec<String> = c
        .query
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect();
    if c.route_query && !route_q.is_empty() {
        query.insert(0, route_q.to_owned());
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    if let Some((at, noise)) = &c.noise {
        let bounds: Vec<usize> = path
            .char_indices()
            .map(|(i, _)| i)
            .chain([path.len()])
            .collect();
        let i = at.get(&bounds);
        path.insert_str(*i, noise);
    }
    let method = if c.method.is_empty() {
        (*method).to_owned()
    } else {
        c.method.clone()
    };
    (method, path)
}

/// Query parameters as the route table reads them: split at `&`, then `=`, decoded.
fn decoded_query(path: &str) -> Vec<(String, String)> {
    let q = path.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

type Resolution = Result<iamd::routes::Resolved, iamd::routes::RouteError>;

fn resolve(method: &str, path: &str, body: &BodySpec, defaults: &ArnDefaults) -> Resolution {
    RouteTable::lambda().resolve(
        HttpCall {
            method,
            path,
            body: body.as_body(),
        },
        defaults,
    )
}

fn check_resolution(path: &str, r: &Resolution) -> Result<(), TestCaseError> {
    let Ok(r) = r else {
        return Ok(());
    };
    prop_assert!(r.action.starts_with("lambda:"), "action {}", r.action);
    prop_assert!(
        r.resource == "*" || Arn::parse(&r.resource).is_ok(),
        "`{}` resolved to the resource `{}`, neither `*` nor an ARN",
        path,
        r.resource
    );
    let function_arns = r
        .keys
        .context
        .iter()
        .filter(|(k, _)| k == "lambda:FunctionArn");
    for f in function_arns.flat_map(|(_, v)| v) {
        prop_assert!(
            Arn::parse(f).is_ok_and(|a| a.service == "lambda"),
            "`{}` resolved to the function ARN `{}`",
            path,
            f
        );
    }
    // One value per parameter (tagKeys lists several).
    let q = decoded_query(path);
    for (i, (k, _)) in q.iter().enumerate() {
        let repeated = q[..i].iter().any(|(other, _)| {
            (other == k && k != "tagKeys")
                || (other.eq_ignore_ascii_case(k) && !other.eq_ignore_ascii_case("tagKeys"))
        });
        prop_assert!(!repeated, "`{}` repeats `{}` and still resolved", path, k);
    }
    Ok(())
}

fn check_call(c: CallSpec) -> Result<(), TestCaseError> {
    let (method, path) = render_call(&c, false);
    let plain = resolve(&method, &path, &c.body, &c.defaults);
    check_resolution(&path, &plain)?;
    // Percent-encoding every capture and query byte changes nothing, when
    // the plain values needed no encoding (no `/ ? % & = #`).
    let safe = |s: &String| !s.contains(['/', '?', '%', '&', '=', '#']);
    let safe = c.noise.is_none()
        && c.captures.iter().all(safe)
        && c.query.iter().all(|(k, v)| safe(k) && safe(v));
    if safe {
        let (_, encoded_path) = render_call(&c, true);
        let encoded = resolve(&method, &encoded_path, &c.body, &c.defaults);
        check_resolution(&encoded_path, &encoded)?;
        prop_assert_eq!(
            plain.as_ref().ok(),
            encoded.as_ref().ok(),
            "`{}` and `{}` resolve differently",
            path,
            encoded_path
        );
        prop_assert_eq!(plain.is_ok(), encoded.is_ok());
    }
    // The order of the query parameters does not decide whether a call resolves.
    if safe && c.query.len() > 1 {
        let mut reversed = c.clone();
        reversed.query.reverse();
        let (_, rpath) = render_call(&reversed, false);
        let r = resolve(&method, &rpath, &c.body, &c.defaults);
        prop_assert_eq!(
            plain.as_ref().map(|r| (&r.action, &r.resource)).ok(),
            r.as_ref().map(|r| (&r.action, &r.resource)).ok(),
            "`{}` and `{}` resolve differently",
            path,
            rpath
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512, 1))]

    /// Calls on the table's routes with hostile captures, repeated and
    /// case-varied query parameters, percent-encoding, path noise and every
    /// body state: never panic; a resolved call has a `lambda:` action and a
    /// resource that is `*` or an ARN; a repeated parameter never resolves;
    /// encoding and parameter order change nothing.
    #[test]
    fn routes_resolve_safely(c in arb_call()) {
        guarded("RouteTable::resolve", move || check_call(c))?;
    }

    /// Arbitrary methods, paths and bodies, down to raw bytes.
    #[test]
    fn routes_never_panic_on_arbitrary_calls(
        method in prop_oneof!["GET|POST|PUT|DELETE|PATCH", "\\PC{0,8}"],
        path in prop_oneof![
            "(/[a-zA-Z0-9%.:{}?=&-]{0,12}){0,8}",
            "\\PC{0,64}",
            (1usize..20000).prop_map(|n| format!("/2015-03-31/functions/{}/invocations", "a".repeat(n))),
            (1usize..2000).prop_map(|n| format!("/2015-03-31/functions/f/invocations?{}", "Qualifier=1&".repeat(n))),
            (1usize..2000).prop_map(|n| format!("/2015-03-31/functions{}", "/..".repeat(n))),
        ],
        body in arb_body(),
        defaults in arb_defaults(),
    ) {
        guarded("RouteTable::resolve", move || {
            let r = resolve(&method, &path, &body, &defaults);
            check_resolution(&path, &r)
        })?;
    }
}

// ---------------------------------------------------------------------------
// 5. The proto conversion: `iamd.v1.Authorizer` and Envoy's `Check`.

/// Small limits, so generated requests cross every one of them.
const LIMITS: iamd::server::Limits = iamd::server::Limits {
    max_message_bytes: 2048,
    max_batch: 4,
    max_context_keys: 3,
    max_context_values: 3,
    max_context_value_bytes: 16,
    max_revision_wait: std::time::Duration::from_millis(100),
};

struct Services {
    authorizer: iamd::server::AuthorizerService,
    envoy: iamd::server::EnvoyAuthorizer,
}

/// One process-wide state: the metrics recorder installs once.
static SERVICES: LazyLock<Services> = LazyLock::new(|| {
    let snapshots = Arc::new(iamd::reload::SnapshotCell::new());
    snapshots.reload(&root().join("examples/store")).unwrap();
    let state = Arc::new(iamd::server::AppState {
        snapshots,
        metrics: Arc::new(iamd::metrics::Metrics::install().unwrap()),
        limits: LIMITS,
        heavy: Arc::new(tokio::sync::Semaphore::new(2)),
    });
    let envoy = iamd::server::EnvoyConfig {
        arn_defaults: ArnDefaults {
            partition: "aws".into(),
            region: Some("us-east-1".into()),
            account: Some("111122223333".into()),
        },
        principal_header: Some("x-iamd-principal".into()),
        spiffe_roles: HashMap::from([(
            "spiffe://example.org/ns/a/sa/b".to_owned(),
            "arn:aws:iam::111122223333:role/lambda-cross-account".to_owned(),
        )]),
    };
    Services {
        authorizer: iamd::server::AuthorizerService::new(state.clone()),
        envoy: iamd::server::EnvoyAuthorizer::new(state, envoy),
    }
});

fn arb_context_map() -> impl Strategy<Value = HashMap<String, pb::ContextValues>> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "aws:SourceIp", "aws:sourceip", "AWS:SOURCEIP", "aws:CurrentTime", "aws:username",
            "aws:TagKeys", "aws:MultiFactorAuthAge", "aws:SecureTransport", "", " ", "k\u{0}",
        ]).prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec![
            "10.0.0.1", "::1", "2026-01-01T00:00:00Z", "f", "true", "nope", "", "1e400",
            "0123456789abcdef", "0123456789abcdefg",
        ]).prop_map(str::to_owned),
        1 => "\\PC{0,20}",
    ];
    prop::collection::hash_map(
        key,
        prop::collection::vec(value, 0..5).prop_map(|values| pb::ContextValues { values }),
        0..6,
    )
}

fn arb_pb_request() -> impl Strategy<Value = pb::AuthorizeRequest> {
    let blank = prop::sample::select(vec!["", " ", "\t\n"]).prop_map(str::to_owned);
    let hostile = (
        prop_oneof![8 => arb_principal(), 1 => blank.clone()],
        prop_oneof![8 => arb_action(), 1 => blank.clone()],
        prop_oneof![8 => arb_resource(), 1 => blank],
        arb_context_map(),
        any::<bool>(),
    );
    // Mostly within the limits and well formed, so decisions are reached too.
    let small_context = prop::collection::hash_map(
        prop::sample::select(vec![
            "aws:SourceIp",
            "aws:username",
            "aws:TagKeys",
            "aws:PrincipalTag/team",
        ])
        .prop_map(str::to_owned),
        prop::collection::vec(
            prop::sample::select(vec!["10.0.0.1", "f", "team", "blue"]).prop_map(str::to_owned),
            0..3,
        )
        .prop_map(|values| pb::ContextValues { values }),
        0..3,
    );
    let sane = (
        prop::sample::select(vec![
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::111122223333:user/contractors/bob",
            "arn:aws:iam::444455556666:user/dave",
            "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/s",
            "*",
            "111122223333",
        ])
        .prop_map(str::to_owned),
        prop::sample::select(vec![
            "lambda:InvokeFunction",
            "lambda:GetFunction",
            "lambda:ListFunctions",
        ])
        .prop_map(str::to_owned),
        prop::sample::select(vec![
            "arn:aws:lambda:us-east-1:111122223333:function:hello-world",
            "arn:aws:lambda:us-east-1:111122223333:function:hello-world:prod",
            "arn:aws:lambda:us-east-1:111122223333:function:shared-report",
            "*",
        ])
        .prop_map(str::to_owned),
        small_context,
        any::<bool>(),
    );
    prop_oneof![1 => hostile, 1 => sane].prop_map(
        |(principal, action, resource, context, explain)| pb::AuthorizeRequest {
            principal,
            action,
            resource,
            context,
            explain,
            ..Default::default()
        },
    )
}

/// The limit violations of one request, as the text its refusal must
/// contain (any one of them: the conversion checks in its own order).
fn violations(r: &pb::AuthorizeRequest, field: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (name, value) in [
        ("principal", &r.principal),
        ("action", &r.action),
        ("resource", &r.resource),
    ] {
        if value.trim().is_empty() {
            v.push(format!("{field}{name} is required"));
        }
    }
    if r.context.len() > LIMITS.max_context_keys {
        v.push(format!("{field}context has {} keys", r.context.len()));
    }
    let mut seen: Vec<String> = Vec::new();
    for (k, vals) in &r.context {
        if k.is_empty() {
            v.push(format!("{field}context has an empty key"));
        }
        let lower = k.to_ascii_lowercase();
        if seen.contains(&lower) {
            v.push(format!("{field}context["));
        }
        seen.push(lower);
        if vals.values.len() > LIMITS.max_context_values {
            v.push(format!("{field}context["));
        }
        if vals
            .values
            .iter()
            .any(|x| x.len() > LIMITS.max_context_value_bytes)
        {
            v.push(format!("{field}context["));
        }
    }
    v
}

/// A refusal's message is escaped: no raw control or bidi characters.
fn check_escaped(message: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !message
            .chars()
            .any(|c| c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
        "unescaped message {:?}",
        message
    );
    Ok(())
}

/// What the service must answer to `requests` (a batch when `batch`).
fn check_authorize(requests: Vec<pb::AuthorizeRequest>, batch: bool) -> Result<(), TestCaseError> {
    use pb::authorizer_server::Authorizer;
    let svc = &SERVICES.authorizer;
    let n = requests.len();
    let (result, size, per_request) = if batch {
        let msg = pb::AuthorizeBatchRequest {
            requests: requests.clone(),
            ..Default::default()
        };
        let size = msg.encoded_len();
        let per: Vec<Vec<String>> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| violations(r, &format!("requests[{i}].")))
            .collect();
        let r = ready(svc.authorize_batch(tonic::Request::new(msg))).map(|r| {
            r.into_inner()
                .responses
                .iter()
                .map(|x| x.decision)
                .collect::<Vec<_>>()
        });
        (r, size, per)
    } else {
        let msg = requests[0].clone();
        let size = msg.encoded_len();
        let r =
            ready(svc.authorize(tonic::Request::new(msg))).map(|r| vec![r.into_inner().decision]);
        (r, size, vec![violations(&requests[0], "")])
    };
    // The refusal expected first: size, then the batch's own bounds, then
    // the first request with a violation.
    let expected: Option<Vec<String>> = if size > LIMITS.max_message_bytes {
        Some(vec![format!("the request is {size} bytes")])
    } else if batch && n == 0 {
        Some(vec!["requests must hold at least one request".into()])
    } else if batch && n > LIMITS.max_batch {
        Some(vec![format!("the batch has {n} requests")])
    } else {
        per_request.into_iter().find(|v| !v.is_empty())
    };
    match (result, expected) {
        (Err(status), Some(markers)) => {
            prop_assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{}",
                status.message()
            );
            prop_assert!(
                markers
                    .iter()
                    .any(|m| status.message().starts_with(m.as_str())
                        || status.message().contains(m.as_str())),
                "refusal `{}` names none of {:?}",
                status.message(),
                markers
            );
            check_escaped(status.message())?;
        }
        (Ok(_), Some(markers)) => {
            prop_assert!(false, "over the limits ({:?}) and still decided", markers)
        }
        (Err(status), None) => {
            // Within the limits only the request's own fields may be refused.
            prop_assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{}",
                status.message()
            );
            prop_assert!(
                status.message().contains("invalid "),
                "{}",
                status.message()
            );
            check_escaped(status.message())?;
        }
        (Ok(decisions), None) => {
            prop_assert_eq!(decisions.len(), if batch { n } else { 1 });
            for d in decisions {
                prop_assert!(
                    [
                        pb::Decision::Allow,
                        pb::Decision::ExplicitDeny,
                        pb::Decision::ImplicitDeny
                    ]
                    .iter()
                    .any(|x| *x as i32 == d),
                    "decision {}",
                    d
                );
            }
        }
    }
    Ok(())
}

/// Bytes that decode as a message: encodings of generated messages,
/// mutated, or raw bytes.
fn arb_message_bytes<M: Message + std::fmt::Debug + Clone + 'static>(
    msg: impl Strategy<Value = M> + 'static,
) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..128),
        3 => (msg, prop::collection::vec(arb_mutation(), 0..4)).prop_map(|(m, ms)| {
            let mut b = m.encode_to_vec();
            for m in &ms {
                apply(&mut b, m);
            }
            b
        }),
    ]
}

fn arb_check_request() -> impl Strategy<Value = envoy_types::ext_authz::v3::pb::CheckRequest> {
    use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    (
        arb_call(),
        arb_principal(),
        prop::sample::select(vec!["10.0.0.7", "::1", "not an ip", ""]),
        prop::sample::select(vec!["spiffe://example.org/ns/a/sa/b", "", "x"]),
        prop::collection::hash_map(
            prop::sample::select(vec!["action", "resource", "context_headers"])
                .prop_map(str::to_owned),
            prop::sample::select(vec![
                "lambda:GetFunction",
                "*",
                "x-a=custom:A,bad",
                "",
                "s3:*",
            ])
            .prop_map(str::to_owned),
            0..3,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(c, principal, ip, peer, ext, raw, partial)| {
            let (method, path) = render_call(&c, false);
            let mut headers = HashMap::from([("x-iamd-principal".to_owned(), principal)]);
            if partial {
                headers.insert("x-envoy-auth-partial-body".into(), "true".into());
            }
            let (body, raw_body) = match &c.body {
                BodySpec::Complete(s) if raw => (String::new(), s.clone().into_bytes()),
                BodySpec::Complete(s) => (s.clone(), Vec::new()),
                BodySpec::NotText => (String::new(), vec![0xff, 0xfe]),
                _ => (String::new(), Vec::new()),
            };
            envoy_types::ext_authz::v3::pb::CheckRequest {
                attributes: Some(AttributeContext {
                    source: Some(Peer {
                        address: Some(Address {
                            address: Some(address::Address::SocketAddress(SocketAddress {
                                address: ip.into(),
                                ..Default::default()
                            })),
                        }),
                        principal: peer.into(),
                        ..Default::default()
                    }),
                    request: Some(Request {
                        http: Some(HttpRequest {
                            method,
                            path,
                            headers,
                            body,
                            raw_body,
                            scheme: "https".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    context_extensions: ext,
                    ..Default::default()
                }),
            }
        })
}

fn check_envoy(msg: envoy_types::ext_authz::v3::pb::CheckRequest) -> Result<(), TestCaseError> {
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
    let resp = ready(SERVICES.envoy.check(tonic::Request::new(msg)))
        .map_err(|s| TestCaseError::fail(format!("Check failed instead of answering: {s:?}")))?
        .into_inner();
    let code = resp.status.as_ref().map_or(0, |s| s.code);
    prop_assert!(code == 0 || code == 7, "status code {}", code);
    Ok(())
}

proptest! {
    #![proptest_config(config(256, 2))]

    /// `Authorize` on generated requests: over-limit requests are always
    /// refused with InvalidArgument naming the field; within the limits
    /// only the fields' own errors refuse; decisions are real decisions.
    #[test]
    fn authorize_enforces_limits(r in arb_pb_request()) {
        guarded("Authorize", move || check_authorize(vec![r], false))?;
    }

    /// `AuthorizeBatch` likewise, naming `requests[i]`.
    #[test]
    fn authorize_batch_enforces_limits(rs in prop::collection::vec(arb_pb_request(), 0..6)) {
        guarded("AuthorizeBatch", move || check_authorize(rs, true))?;
    }

    /// Arbitrary bytes decoded as either message first.
    #[test]
    fn authorize_on_decoded_bytes(
        one in arb_message_bytes(arb_pb_request()),
        many in arb_message_bytes(prop::collection::vec(arb_pb_request(), 0..6)
            .prop_map(|requests| pb::AuthorizeBatchRequest { requests, ..Default::default() })),
    ) {
        guarded("Authorize (decoded)", move || {
            if let Ok(r) = pb::AuthorizeRequest::decode(one.as_slice()) {
                check_authorize(vec![r], false)?;
            }
            if let Ok(b) = pb::AuthorizeBatchRequest::decode(many.as_slice()) {
                check_authorize(b.requests, true)?;
            }
            Ok(())
        })?;
    }

    /// Envoy's `Check` on generated calls and on decoded bytes: always an
    /// answer (OK or PERMISSION_DENIED), never a panic or an RPC error.
    #[test]
    fn envoy_check_always_answers(
        msg in arb_check_request(),
        bytes in arb_message_bytes(arb_check_request()),
    ) {
        guarded("Check", move || {
            check_envoy(msg)?;
            if let Ok(m) = envoy_types::ext_authz::v3::pb::CheckRequest::decode(bytes.as_slice()) {
                check_envoy(m)?;
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------
// Known bugs the harness found, as their minimal inputs. They assert the
// right behaviour, so they fail until src/ is fixed; `cargo test --test fuzz
// -- --ignored` runs them. When one passes, drop its `#[ignore]` and the
// matching `known_bug_*_class` filter above.

/// Found by `routes_resolve_safely`.
#[test]
fn regression_empty_partition_function_arn() {
    let path = "/2015-03-31/functions/arn::lambda:us-east-1:111122223333:function:f/aliases";
    let r = resolve("GET", path, &BodySpec::Absent, &ArnDefaults::default());
    if let Ok(r) = r {
        assert!(
            Arn::parse(&r.resource).is_ok(),
            "`GET {path}` resolved to the resource `{}`, which is not an ARN",
            r.resource
        );
    }
}

/// Found by `routes_resolve_safely` (the query-order property).
#[test]
fn regression_tag_keys_order() {
    let path =
        |q: &str| format!("/2017-03-31/tags/arn:aws:lambda:us-east-1:111122223333:function:f?{q}");
    let first = resolve(
        "DELETE",
        &path("TagKeys=a&tagKeys=b"),
        &BodySpec::Absent,
        &ArnDefaults::default(),
    );
    let second = resolve(
        "DELETE",
        &path("tagKeys=b&TagKeys=a"),
        &BodySpec::Absent,
        &ArnDefaults::default(),
    );
    assert_eq!(
        first.is_ok(),
        second.is_ok(),
        "`?TagKeys=a&tagKeys=b` gives {first:?}, `?tagKeys=b&TagKeys=a` gives {second:?}"
    );
}

/// Found by `variable_values_match_as_written_out`.
#[test]
#[ignore = "KNOWN BUG in src/policy/pattern.rs: ignoring case, `${k}` with k = `İ` and the literal `İ` match `i̇` differently"]
fn known_bug_ignore_case_variable_vs_literal() {
    let syntax = Syntax {
        wildcards: false,
        variables: true,
    };
    let vars = FixedVars(vec![("k".into(), "İ".into())]);
    let from_var = Pattern::parse("${k}", syntax).unwrap();
    let literal = Pattern::parse("İ", syntax).unwrap();
    let text = "i\u{307}";
    assert_eq!(
        from_var.matches_ignore_case(text, &vars),
        literal.matches_ignore_case(text, &vars),
        "`${{k}}` (k = `İ`) and `İ` disagree on `{text}` ignoring case"
    );
}

/// Found by `json_parser_agrees_and_locates`.
#[test]
fn regression_vertical_tab_compact_len() {
    let ascii = json::parse(r#""\u000ba""#).unwrap().compact_len;
    let wide = json::parse(r#""\u000bé""#).unwrap().compact_len;
    // `a` and `é` are one character each: the two lengths must be equal.
    assert_eq!(
        ascii, wide,
        "`\"\\u000ba\"` measures {ascii}, `\"\\u000bé\"` {wide}"
    );
}
