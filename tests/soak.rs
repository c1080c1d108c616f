//! A bounded soak on loopback: normal clients decide while hostile ones
//! (oversized batches, expensive explanations, stalled streams, idle and
//! slowloris connections, ambiguous Envoy checks) run beside them and the
//! store is rewritten underneath. Normal requests never fail, health answers
//! promptly throughout, and resident memory stays under a fixed bound.
//!
//! `IAMD_SOAK_SECS` sets the length (default 12 s); every loop stops by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hostile::{health_ok, raw_call, rss_kib};
use common::{copy_dir, example_store, request, write_atomic, Iamd};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use iamd::server::pb;

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const ERIN: &str = "arn:aws:iam::444455556666:user/erin";
const HELLO: &str = "arn:aws:lambda:us-east-1:111122223333:function:HelloWorld";
/// Resident memory iamd (a debug build) must stay under throughout.
const RSS_BOUND_KIB: u64 = 256 * 1024;

fn check(path: &str, body: &str, partial: bool) -> CheckRequest {
    let mut headers = std::collections::HashMap::new();
    headers.insert("x-iamd-principal".to_owned(), ALICE.to_owned());
    if partial {
        headers.insert("x-envoy-auth-partial-body".to_owned(), "true".to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: path.into(),
                    headers,
                    body: body.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn normal_clients_are_served_while_hostile_ones_and_rewrites_run() {
    let secs: u64 = std::env::var("IAMD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_store(), dir.path());
    let iamd = Arc::new(Iamd::start_loaded(
        dir.path(),
        &[
            "--lambda-region",
            "us-east-1",
            "--lambda-account",
            "111122223333",
            "--principal-header",
            "x-iamd-principal",
            "--request-timeout-ms",
            "1000",
            "--first-request-timeout-secs",
            "2",
            "--reload-debounce-ms",
            "50",
        ],
    ));
    // What the normal clients must keep getting.
    let normal = [
        request(ALICE, "lambda:ListFunctions", "*", &[]),
        request(ALICE, "lambda:InvokeFunction", HELLO, &[]),
        request(ERIN, "lambda:InvokeFunction", HELLO, &[]),
    ];
    let mut expected = Vec::new();
    let mut c = iamd.client().await;
    for r in &normal {
        expected.push(
            c.authorize(r.clone())
                .await
                .unwrap()
                .into_inner()
                .decision(),
        );
    }
    assert!(
        expected.contains(&pb::Decision::Allow)
            && expected.iter().any(|d| *d != pb::Decision::Allow)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();

    // Hostile: a million empty batch items, over and over.
    for _ in 0..2 {
        let (iamd, stop) = (iamd.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let e = raw_call(
                    &iamd,
                    "/iamd.v1.Authorizer/AuthorizeBatch",
                    [0x0a, 0x00].repeat(1_000_000),
                )
                .await;
                assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            }
        });
    }
    // Hostile: expensive explanation batches.
    for _ in 0..3 {
        let (iamd, stop) = (iamd.clone(), stop.clone());
        tasks.spawn(async move {
            let mut client = iamd.client().await;
            let batch = pb::AuthorizeBatchRequest {
                requests: vec![
                    pb::AuthorizeRequest {
                        explain: true,
                        ..request(ALICE, "lambda:InvokeFunction", HELLO, &[])
                    };
                    1000
                ],
                ..Default::default()
            };
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = client.authorize_batch(batch.clone()).await {
                    assert!(
                        matches!(
                            e.code(),
                            tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
                        ),
                        "{e:?}"
                    );
                }
            }
        });
    }
    // Hostile: stalled half-sent streams.
    {
        let (iamd, stop) = (iamd.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let tcp = tokio::net::TcpStream::connect(iamd.grpc).await.unwrap();
                let Ok((client, connection)) = h2::client::handshake(tcp).await else {
                    continue;
                };
                tokio::spawn(connection);
                let mut held = Vec::new();
                let mut client = client;
                for _ in 0..50 {
                    let Ok(c) = client.ready().await else { break };
                    client = c;
                    let req = http::Request::post(format!(
                        "http://{}/iamd.v1.Authorizer/Authorize",
                        iamd.grpc
                    ))
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                    if let Ok((resp, mut body)) = client.send_request(req, false) {
                        let _ = body.send_data(vec![0, 0, 0x10, 0, 0, 0x0a].into(), false);
                        held.push((resp, body));
                    }
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        });
    }
    // Hostile: idle connections and a slowloris on /metrics.
    {
        let (iamd, stop) = (iamd.clone(), stop.clone());
        tasks.spawn_blocking(move || {
            let mut idle: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if idle.len() > 200 {
                    idle.drain(..100);
                }
                for _ in 0..20 {
                    if let Ok(s) = TcpStream::connect(iamd.grpc) {
                        idle.push(s);
                    }
                }
                if let Ok(mut s) = TcpStream::connect(iamd.metrics) {
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX: ");
                    idle.push(s);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
    // Hostile: Envoy checks with hidden or ambiguous inputs: always denied.
    {
        let (iamd, stop) = (iamd.clone(), stop.clone());
        tasks.spawn(async move {
            let mut client = AuthorizationClient::new(iamd.channel().await);
            let cases = [
                check("/2015-03-31/event-source-mappings", r#"{"FunctionName":"HelloWorld""#, true),
                check("/2015-03-31/event-source-mappings", r#"{"FunctionName": 5}"#, false),
                check("/2015-03-31/functions/HelloWorld/invocations?Qualifier=prod&Qualifier=%24LATEST", "", false),
            ];
            while !stop.load(Ordering::Relaxed) {
                for c in &cases {
                    let r = client.check(c.clone()).await.unwrap().into_inner();
                    assert_ne!(r.status.unwrap().code, 0, "a hostile check was allowed");
                }
            }
        });
    }
    // The store is rewritten underneath: same decisions, new revisions.
    {
        let (stop, root) = (stop.clone(), dir.path().to_path_buf());
        tasks.spawn_blocking(move || {
            let details = root.join("account-111122223333/authorization-details.json");
            let text = std::fs::read_to_string(&details).unwrap();
            let extra = root.join("extra.json");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                write_atomic(&details, &text);
                if n % 2 == 0 {
                    write_atomic(&extra, &format!(r#"{{"Policy": {{"Version": "2012-10-17", "Statement": [{{"Sid": "s{n}", "Effect": "Allow", "Principal": {{"Service": "s3.amazonaws.com"}}, "Action": "lambda:InvokeFunction", "Resource": "arn:aws:lambda:us-east-1:111122223333:function:other"}}]}}}}"#));
                } else {
                    let _ = std::fs::remove_file(&extra);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
        });
    }

    // Normal clients, a health prober and a memory sampler, until the end.
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        let (iamd, failures, served) = (iamd.clone(), failures.clone(), served.clone());
        let (normal, expected) = (normal.clone(), expected.clone());
        tasks.spawn(async move {
            let mut client = iamd.client().await;
            while Instant::now() < until {
                for (r, want) in normal.iter().zip(&expected) {
                    match client.authorize(r.clone()).await {
                        Ok(resp) if resp.get_ref().decision() == *want => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("normal request failed: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let mut worst_health = Duration::ZERO;
    let mut peak_rss = 0;
    let mut probes = 0;
    while Instant::now() < until {
        worst_health = worst_health.max(health_ok(&iamd).await);
        peak_rss = peak_rss.max(rss_kib(iamd.pid()));
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tokio::time::timeout(Duration::from_secs(30), tasks.join_next())
        .await
        .expect("the soak's loops stop by themselves")
    {
        if let Err(e) = done {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let mut metrics = String::new();
    if let Ok(mut s) = TcpStream::connect(iamd.metrics) {
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let _ = s.read_to_string(&mut metrics);
    }
    eprintln!(
        "soak: {secs} s, {} normal requests, {probes} health probes (worst {worst_health:?}), peak RSS {} MiB",
        served.load(Ordering::Relaxed),
        peak_rss / 1024
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "normal requests failed"
    );
    assert!(served.load(Ordering::Relaxed) > 100);
    // Generous for a shared 2-core CI machine; typically a few milliseconds.
    assert!(
        worst_health < Duration::from_millis(500),
        "health took {worst_health:?}"
    );
    assert!(
        peak_rss < RSS_BOUND_KIB,
        "resident memory reached {peak_rss} KiB"
    );
    assert!(
        metrics.contains("iamd_admission_rejected_total"),
        "{metrics}"
    );
}
