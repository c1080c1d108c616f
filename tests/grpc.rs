//! `iamd serve` over gRPC with a real tonic client: decisions, explanations,
//! health, reflection, the Unix socket, bad requests, metrics and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{example_store, parse_prometheus, request, sample, Iamd};
use iamd::server::pb::{self, Decision};
use tonic::Code;

const F: &str = "arn:aws:lambda:us-east-1:111122223333:function";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_allow_explicit_and_implicit_deny_on_the_example_store() {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    let mut client = iamd.client().await;
    let hello = format!("{F}:HelloWorld");

    let r = client
        .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow);
    assert_eq!(r.message, "");
    assert_eq!(r.revision, 1);
    assert!(r.explanation.is_none());

    let r = client
        .authorize(request(
            ALICE,
            "lambda:DeleteFunction",
            &format!("{hello}:prod"),
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::ExplicitDeny);
    assert!(
        r.message
            .ends_with("with an explicit deny in an identity-based policy"),
        "{}",
        r.message
    );

    let mut req = request("s3.amazonaws.com", "lambda:InvokeFunction", &hello, &[]);
    req.explain = true;
    let r = client.authorize(req).await.unwrap().into_inner();
    assert_eq!(r.decision(), Decision::ImplicitDeny);
    assert!(r
        .message
        .contains("because no resource-based policy allows the lambda:InvokeFunction action"));
    let x = r.explanation.unwrap();
    assert!(x.missing_context_keys.iter().any(|k| k == "AWS:SourceArn"));
    assert_eq!(
        x.details.unwrap().resource_based(),
        pb::PolicyVerdict::ImplicitDeny
    );
    assert!(x
        .near_misses
        .iter()
        .any(|n| n.failed_element == "condition"));

    // The seed's S3 scenario with its source keys.
    let r = client
        .authorize(request(
            "s3.amazonaws.com",
            "lambda:InvokeFunction",
            &hello,
            &[
                ("aws:SourceAccount", &["111122223333"]),
                ("aws:SourceArn", &["arn:aws:s3:::ExampleBucket"]),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow);

    // The seed's cross-account scenario, explained.
    let mut req = request(
        "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/dave",
        "lambda:InvokeFunction",
        &hello,
        &[],
    );
    req.explain = true;
    let r = client.authorize(req).await.unwrap().into_inner();
    assert_eq!(r.decision(), Decision::Allow);
    let m = &r.explanation.unwrap().matched_statements;
    assert!(m.iter().any(|s| s.policy
        == "arn:aws:iam::111122223333:policy/InvokeAccountAFunctions"
        && s.policy_type == "managed"
        && s.effect() == pb::Effect::Allow
        && s.sid == "InvokeAndRead"
        && s.location
            .starts_with("account-111122223333/authorization-details.json:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_decides_every_request_on_one_snapshot() {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    let mut client = iamd.client().await;
    let hello = format!("{F}:HelloWorld");
    let r = client
        .authorize_batch(pb::AuthorizeBatchRequest {
            requests: vec![
                request(ALICE, "lambda:InvokeFunction", &hello, &[]),
                request(
                    "arn:aws:iam::444455556666:user/erin",
                    "lambda:InvokeFunction",
                    &hello,
                    &[],
                ),
                request(
                    ALICE,
                    "lambda:DeleteFunction",
                    &format!("{hello}:prod"),
                    &[],
                ),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let d: Vec<_> = r.responses.iter().map(|r| r.decision()).collect();
    assert_eq!(
        d,
        [
            Decision::Allow,
            Decision::ImplicitDeny,
            Decision::ExplicitDeny
        ]
    );
    assert_eq!(r.revision, 1);
    assert!(r.responses.iter().all(|x| x.revision == r.revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("iamd.sock");
    let iamd = Iamd::start_loaded(&example_store(), &["--uds", sock.to_str().unwrap()]);

    let mut health = tonic_health::pb::health_client::HealthClient::new(iamd.channel().await);
    for service in ["", "iamd.v1.Authorizer"] {
        let s = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            s.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(iamd.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "iamd.v1.Authorizer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }

    // The same API over the Unix domain socket.
    let channel = common::uds_channel(&sock).await;
    let mut client = pb::authorizer_client::AuthorizerClient::new(channel);
    let r = client
        .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_a_store_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"Policy\": 1}").unwrap();
    let iamd = Iamd::start(dir.path(), &["--reload-debounce-ms", "50"]);
    iamd.wait_for_log(Duration::from_secs(20), |v| {
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("store rejected"))
    })
    .expect("the bad store is reported");
    let mut health = tonic_health::pb::health_client::HealthClient::new(iamd.channel().await);
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status(),
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    let mut client = iamd.client().await;
    let e = client
        .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // Fix the store: health flips to SERVING and decisions start.
    std::fs::remove_file(dir.path().join("bad.json")).unwrap();
    common::copy_dir(&example_store(), dir.path());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.status() == tonic_health::pb::health_check_response::ServingStatus::Serving {
            break;
        }
        assert!(Instant::now() < deadline, "health never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_invalid_argument_naming_the_field() {
    let iamd = Iamd::start_loaded(
        &example_store(),
        &[
            "--max-batch",
            "3",
            "--max-context-keys",
            "2",
            "--max-context-values",
            "2",
            "--max-context-value-bytes",
            "64",
            "--max-message-bytes",
            "4096",
        ],
    );
    let mut client = iamd.client().await;
    let hello = format!("{F}:HelloWorld");
    let long = "x".repeat(5000);
    let cases: Vec<(pb::AuthorizeRequest, &str)> = vec![
        (
            request("", "lambda:InvokeFunction", &hello, &[]),
            "principal is required",
        ),
        (request(ALICE, "", &hello, &[]), "action is required"),
        (
            request(ALICE, "lambda:InvokeFunction", "", &[]),
            "resource is required",
        ),
        (
            request("alice", "lambda:InvokeFunction", &hello, &[]),
            "invalid principal",
        ),
        (
            request(
                "arn:aws:iam::1:user/a",
                "lambda:InvokeFunction",
                &hello,
                &[],
            ),
            "invalid principal",
        ),
        (request(ALICE, "lambda:*", &hello, &[]), "invalid action"),
        (
            request(ALICE, "InvokeFunction", &hello, &[]),
            "invalid action",
        ),
        (
            request(ALICE, "lambda:InvokeFunction", "function:f", &[]),
            "invalid resource",
        ),
        (
            request(
                ALICE,
                "lambda:InvokeFunction",
                &hello,
                &[("a", &["1"]), ("b", &["1"]), ("c", &["1"])],
            ),
            "context has 3 keys",
        ),
        (
            request(
                ALICE,
                "lambda:InvokeFunction",
                &hello,
                &[("a", &["1", "2", "3"])],
            ),
            "context[a] has 3 values",
        ),
        (
            request(
                ALICE,
                "lambda:InvokeFunction",
                &hello,
                &[("a", &[&"v".repeat(65)])],
            ),
            "value of 65 bytes",
        ),
        (
            request(
                ALICE,
                "lambda:InvokeFunction",
                &hello,
                &[("aws:SourceIp", &["not-an-ip"])],
            ),
            "invalid context",
        ),
        (
            request(ALICE, "lambda:InvokeFunction", &hello, &[("", &["x"])]),
            "empty key",
        ),
        (
            request(&long, "lambda:InvokeFunction", &hello, &[]),
            "the limit is 4096 bytes",
        ),
    ];
    for (req, want) in cases {
        let e = client.authorize(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(
            e.message().contains(want),
            "{want:?} not in {:?}",
            e.message()
        );
    }
    let batch = |n: usize| pb::AuthorizeBatchRequest {
        requests: vec![request(ALICE, "lambda:ListFunctions", "*", &[]); n],
        ..Default::default()
    };
    let e = client.authorize_batch(batch(4)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e
        .message()
        .contains("the batch has 4 requests; the limit is 3"));
    let e = client.authorize_batch(batch(0)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut b = batch(2);
    b.requests[1].action = "nope".into();
    let e = client.authorize_batch(b).await.unwrap_err();
    assert!(
        e.message().starts_with("requests[1].") || e.message().contains("invalid action"),
        "{}",
        e.message()
    );
    assert_eq!(e.code(), Code::InvalidArgument);

    // Bytes that are not a valid AuthorizeRequest (invalid UTF-8 in `principal`).
    let mut grpc = tonic::client::Grpc::new(iamd.channel().await);
    grpc.ready().await.unwrap();
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawRequest {
        #[prost(bytes = "vec", tag = "1")]
        principal: Vec<u8>,
    }
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/iamd.v1.Authorizer/Authorize");
    let e = grpc
        .unary::<RawRequest, pb::AuthorizeResponse, _>(
            tonic::Request::new(RawRequest {
                principal: vec![0xff, 0xfe],
            }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A message far past every limit is refused by the transport, and the server lives on.
    let huge = "y".repeat(64 * 1024);
    let e = client
        .authorize(request(&huge, "lambda:InvokeFunction", &hello, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let r = client
        .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_counters_move() {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    let before = parse_prometheus(&iamd.metrics_text());
    let allow = |s: &[common::Sample]| {
        sample(
            s,
            "iamd_decisions_total",
            &[("api", "authorize"), ("decision", "allow")],
        )
        .unwrap_or(0.0)
    };
    let implicit = |s: &[common::Sample]| {
        sample(
            s,
            "iamd_decisions_total",
            &[("api", "authorize"), ("decision", "implicit_deny")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(sample(&before, "iamd_snapshot_revision", &[]), Some(1.0));
    assert_eq!(sample(&before, "iamd_snapshot_loaded", &[]), Some(1.0));
    assert_eq!(sample(&before, "iamd_snapshot_accounts", &[]), Some(2.0));
    assert_eq!(sample(&before, "iamd_snapshot_principals", &[]), Some(7.0));
    assert!(sample(&before, "iamd_snapshot_statements", &[]).unwrap() >= 15.0);
    assert!(sample(&before, "iamd_snapshot_policies", &[]).unwrap() >= 10.0);
    assert_eq!(
        sample(&before, "iamd_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "iamd_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert!(sample(&before, "iamd_last_reload_success_timestamp_seconds", &[]).unwrap() > 1.7e9);

    let mut client = iamd.client().await;
    for _ in 0..5 {
        client
            .authorize(request(ALICE, "lambda:ListFunctions", "*", &[]))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        client
            .authorize(request(
                "arn:aws:iam::444455556666:user/erin",
                "lambda:GetFunction",
                &format!("{F}:x"),
                &[],
            ))
            .await
            .unwrap();
    }
    client
        .authorize(request("", "a:b", "*", &[]))
        .await
        .unwrap_err();
    let after = parse_prometheus(&iamd.metrics_text());
    assert_eq!(allow(&after) - allow(&before), 5.0);
    assert_eq!(implicit(&after) - implicit(&before), 3.0);
    assert_eq!(
        sample(
            &after,
            "iamd_requests_rejected_total",
            &[("api", "authorize")]
        ),
        Some(1.0)
    );
    let count = sample(
        &after,
        "iamd_decision_duration_seconds_count",
        &[("api", "authorize")],
    )
    .unwrap();
    assert_eq!(count, 8.0);
    let inf = sample(
        &after,
        "iamd_decision_duration_seconds_bucket",
        &[("api", "authorize"), ("le", "+Inf")],
    )
    .unwrap();
    assert_eq!(inf, 8.0);
    assert_eq!(
        sample(
            &after,
            "iamd_rpc_duration_seconds_count",
            &[("api", "authorize")]
        ),
        Some(9.0)
    );
    // Never a principal or an ARN in a label.
    for s in &after {
        for (k, v) in &s.labels {
            assert!(
                !v.contains("arn:") && !v.contains("amazonaws.com") && !v.contains("111122223333"),
                "{} {k}={v}",
                s.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_rpcs_and_exits_cleanly() {
    let mut iamd = Iamd::start_loaded(
        &example_store(),
        &["--shutdown-grace-secs", "5", "--max-batch", "5000"],
    );
    let mut client = iamd.client().await;
    // A batch that takes a while: every request explained.
    let mut req = request(
        ALICE,
        "lambda:InvokeFunction",
        &format!("{F}:HelloWorld"),
        &[],
    );
    req.explain = true;
    let batch = pb::AuthorizeBatchRequest {
        requests: vec![req; 4000],
        ..Default::default()
    };
    let call = tokio::spawn(async move { client.authorize_batch(batch).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        !call.is_finished(),
        "the batch must still be in flight when SIGTERM arrives"
    );
    iamd.signal("TERM");
    let r = call
        .await
        .unwrap()
        .expect("the in-flight batch completes")
        .into_inner();
    assert_eq!(r.responses.len(), 4000);
    assert!(r.responses.iter().all(|x| x.decision() == Decision::Allow));
    assert_eq!(iamd.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(iamd.count_logs(|v| v["fields"]["message"] == "stopped") == 1);
}
