//! The cost of Envoy's ext_authz `Check` inside iamd, without the network.
//!
//! `check_conversion`: a `CheckRequest` into the request iamd decides (the
//! principal, the route table's match and resolution, the context, and the
//! engine's `Request` with its ARNs parsed), for the load test's invoke and
//! a few heavier calls. `route`: the route table's part alone.
//! `check_handler`: the whole `Authorization::check` on the example store
//! (conversion, decision, metrics, the span, and the response with its
//! headers and dynamic metadata), then the response encoded as it goes on
//! the wire. `cargo bench --bench check`.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use futures_util::FutureExt;
use iamd::routes::{ArnDefaults, Body, HttpCall, RouteTable};
use iamd::server::{CheckConverter, EnvoyAuthorizer, EnvoyConfig};
use prost::Message;

const ACCOUNT: &str = "111122223333";
const PRINCIPAL: &str = "arn:aws:iam::111122223333:user/alice";

fn config() -> EnvoyConfig {
    EnvoyConfig {
        arn_defaults: ArnDefaults {
            partition: "aws".into(),
            region: Some("us-east-1".into()),
            account: Some(ACCOUNT.into()),
        },
        principal_header: Some("x-iamd-principal".into()),
        spiffe_roles: HashMap::new(),
    }
}

/// A `Check` as Envoy sends it for `deploy/envoy/envoy.yaml`'s Lambda route.
fn check(method: &str, path: &str, body: &str) -> CheckRequest {
    let headers = [
        (":authority", "127.0.0.1:8080"),
        (":method", method),
        (":path", path),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("user-agent", "h2load nghttp2/1.52.0"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "4d1c3a52-6f0e-4a8e-9f57-1d2c3b4a5f60"),
        ("x-iamd-principal", PRINCIPAL),
        ("content-length", "2"),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    scheme: "http".into(),
                    host: "127.0.0.1:8080".into(),
                    protocol: "HTTP/2".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    body: body.into(),
                    size: body.len() as i64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: HashMap::from([(
                "context_headers".to_owned(),
                "x-amz-source-arn=aws:SourceArn,x-amz-source-account=aws:SourceAccount".to_owned(),
            )]),
            ..Default::default()
        }),
    }
}

/// The calls timed: the load test's invoke first.
fn calls() -> Vec<(&'static str, CheckRequest)> {
    vec![
        (
            "invoke",
            check("POST", "/2015-03-31/functions/HelloWorld/invocations", "{}"),
        ),
        (
            "invoke_arn_qualifier",
            check(
                "POST",
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Afunction%3AHelloWorld/invocations?Qualifier=prod",
                "{}",
            ),
        ),
        (
            "create_function_body",
            check(
                "POST",
                "/2015-03-31/functions",
                r#"{"FunctionName": "new-fn", "Runtime": "python3.13", "Role": "arn:aws:iam::111122223333:role/r",
                    "Layers": ["arn:aws:lambda:us-east-1:111122223333:layer:l:1"], "Tags": {"team": "red"}}"#,
            ),
        ),
        (
            "layer_version_by_arn",
            check(
                "GET",
                "/2018-10-31/layers?find=LayerVersion&Arn=arn%3Aaws%3Alambda%3Aus-east-1%3A111122223333%3Alayer%3Al%3A2",
                "",
            ),
        ),
        ("unknown_route", check("GET", "/2015-03-31/nope", "")),
    ]
}

fn bench(c: &mut Criterion) {
    let converter = CheckConverter::new(config());
    let now = jiff::Timestamp::from_second(1_780_000_000).expect("valid time");
    let mut group = c.benchmark_group("check_conversion");
    for (name, request) in calls() {
        let converted = converter.convert(request.clone());
        let built = converted.request(now).map(|r| r.is_ok());
        assert_eq!(
            built.is_some(),
            name != "unknown_route",
            "{name}: {:?}",
            converted.action()
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || request.clone(),
                |request| {
                    let converted = converter.convert(request);
                    let built = converted
                        .request(now)
                        .map(|r| r.map(|r| black_box(r).action.len()));
                    black_box(&built);
                    converted
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let defaults = config().arn_defaults;
    c.bench_function("route/invoke", |b| {
        b.iter(|| {
            RouteTable::lambda().resolve(
                black_box(HttpCall {
                    method: "POST",
                    path: "/2015-03-31/functions/HelloWorld/invocations",
                    body: Body::Complete("{}"),
                }),
                &defaults,
            )
        })
    });

    let snapshots = Arc::new(iamd::reload::SnapshotCell::new());
    snapshots
        .reload(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"))
        .expect("the example store loads");
    let state = Arc::new(iamd::server::AppState {
        snapshots,
        metrics: Arc::new(iamd::metrics::Metrics::install().expect("metrics install")),
        limits: iamd::server::Limits::default(),
        heavy: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    let envoy = EnvoyAuthorizer::new(state, config());
    let invoke = check("POST", "/2015-03-31/functions/HelloWorld/invocations", "{}");
    let answer = |request: CheckRequest| {
        envoy
            .check(tonic::Request::new(request))
            .now_or_never()
            .expect("Check answers without waiting")
            .expect("Check answers")
            .into_inner()
    };
    let allowed = answer(invoke.clone());
    assert_eq!(
        allowed.status.as_ref().map(|s| s.code),
        Some(0),
        "{allowed:?}"
    );
    c.bench_function("check_handler/invoke", |b| {
        b.iter_batched(|| invoke.clone(), answer, BatchSize::SmallInput)
    });
    c.bench_function("check_handler/invoke_encoded", |b| {
        b.iter_batched(
            || invoke.clone(),
            |request| answer(request).encode_to_vec(),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
