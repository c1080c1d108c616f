//! `envoy.service.auth.v3.Authorization/Check` called directly over gRPC:
//! principal sources (trusted header only when configured, SPIFFE IDs mapped
//! to roles), per-route overrides, and fail-closed answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::{example_store, Iamd};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    peer: &str,
    ext: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "10.0.0.7".into(),
                        ..Default::default()
                    })),
                }),
                principal: peer.into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    scheme: "https".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ext
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }),
    }
}

fn ok_headers(r: &CheckResponse) -> Option<HashMap<String, String>> {
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => Some(
            ok.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        ),
        _ => None,
    }
}

fn denied_message(r: &CheckResponse) -> String {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let v: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            v["Message"].as_str().unwrap().to_owned()
        }
        other => panic!("not a denial: {other:?}"),
    }
}

const INVOKE: &str = "/2015-03-31/functions/HelloWorld/invocations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_ids_map_to_roles_and_headers_are_ignored_unless_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let roles = dir.path().join("spiffe.json");
    std::fs::write(
        &roles,
        r#"{"spiffe://cluster.local/ns/reports/sa/runner": "arn:aws:iam::111122223333:role/lambda-cross-account"}"#,
    )
    .unwrap();
    let iamd = Iamd::start_loaded(
        &example_store(),
        &[
            "--lambda-region",
            "us-east-1",
            "--lambda-account",
            "111122223333",
            "--spiffe-roles",
            roles.to_str().unwrap(),
        ],
    );
    let mut client = AuthorizationClient::new(iamd.channel().await);

    // The workload's certificate names a SPIFFE ID mapped to the role.
    let r = client
        .check(check_request(
            "POST",
            INVOKE,
            &[],
            "spiffe://cluster.local/ns/reports/sa/runner",
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    let h = ok_headers(&r).unwrap();
    assert_eq!(
        h["x-iamd-principal"],
        "arn:aws:iam::111122223333:role/lambda-cross-account"
    );
    assert_eq!(h["x-iamd-revision"], "1");

    // No --principal-header: a client-supplied header is not trusted; an unmapped peer is anonymous.
    let r = client
        .check(check_request(
            "POST",
            INVOKE,
            &[("x-iamd-principal", "arn:aws:iam::111122223333:user/alice")],
            "spiffe://other",
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.as_ref().unwrap().code, 7);
    assert!(
        denied_message(&r).starts_with("User: anonymous is not authorized"),
        "{}",
        denied_message(&r)
    );

    // Per-route overrides name the action and resource.
    let r = client
        .check(check_request(
            "GET",
            "/anything",
            &[],
            "spiffe://cluster.local/ns/reports/sa/runner",
            &[
                ("action", "lambda:GetFunction"),
                (
                    "resource",
                    "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld",
                ),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.as_ref().unwrap().code, 0, "{r:?}");
    // A bad override is a refusal that says why.
    let r = client
        .check(check_request(
            "GET",
            "/anything",
            &[],
            "",
            &[("action", "not an action"), ("resource", "*")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.as_ref().unwrap().code, 7);
    assert!(
        denied_message(&r).contains("invalid action"),
        "{}",
        denied_message(&r)
    );
    // An empty CheckRequest is refused, not allowed.
    let r = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.as_ref().unwrap().code, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spiffe_tables_stop_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let roles = dir.path().join("spiffe.json");
    std::fs::write(
        &roles,
        r#"{"spiffe://x": "arn:aws:iam::111122223333:user/alice"}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(["serve", "--store"])
        .arg(example_store())
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--spiffe-roles",
        ])
        .arg(&roles)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not an IAM role ARN") && err.contains("spiffe.json"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_snapshot_is_an_error_not_an_allow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "[]").unwrap();
    let iamd = Iamd::start(
        dir.path(),
        &[
            "--principal-header",
            "x-iamd-principal",
            "--lambda-region",
            "us-east-1",
        ],
    );
    let mut client = AuthorizationClient::new(iamd.channel().await);
    let e = client
        .check(check_request(
            "POST",
            INVOKE,
            &[("x-iamd-principal", "arn:aws:iam::111122223333:user/alice")],
            "",
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
}
