//! Latency of the decision core on the example store: a request that an
//! identity policy allows, one no policy allows, an explicit deny, a
//! cross-account request through a function policy, a condition-heavy
//! service-principal request, and a policy-variable request.
#![allow(clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use iamd::engine::{self, ContextEntry, Request, Snapshot};

const F: &str = "arn:aws:lambda:us-east-1:111122223333:function";

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store");
    let loaded = iamd::store::load(&dir).expect("example store loads");
    let snap = Snapshot::compile(&loaded.store);
    let now = jiff::Timestamp::from_second(1_780_000_000).expect("valid time");
    let s3_ctx = [
        ContextEntry::new("aws:SourceAccount", ["111122223333"]),
        ContextEntry::new("aws:SourceArn", ["arn:aws:s3:::ExampleBucket"]),
    ];
    let hello = format!("{F}:HelloWorld");
    let prod = format!("{F}:HelloWorld:prod");
    let shared = format!("{F}:shared-report");
    let bobs = format!("{F}:bob-test");
    let cases: Vec<(&str, Request<'_>, engine::DecisionKind)> = vec![
        (
            "allow",
            Request::new(
                "arn:aws:iam::111122223333:user/alice",
                "lambda:InvokeFunction",
                &hello,
                &[],
                now,
            )
            .expect("request"),
            engine::DecisionKind::Allow,
        ),
        (
            "implicit_deny",
            Request::new(
                "arn:aws:iam::444455556666:user/erin",
                "lambda:GetFunction",
                &hello,
                &[],
                now,
            )
            .expect("request"),
            engine::DecisionKind::ImplicitDeny,
        ),
        (
            "explicit_deny",
            Request::new(
                "arn:aws:iam::111122223333:user/alice",
                "lambda:DeleteFunction",
                &prod,
                &[],
                now,
            )
            .expect("request"),
            engine::DecisionKind::ExplicitDeny,
        ),
        (
            "cross_account",
            Request::new(
                "arn:aws:iam::444455556666:user/dave",
                "lambda:InvokeFunction",
                &shared,
                &[],
                now,
            )
            .expect("request"),
            engine::DecisionKind::Allow,
        ),
        (
            "conditions",
            Request::new(
                "s3.amazonaws.com",
                "lambda:InvokeFunction",
                &hello,
                &s3_ctx,
                now,
            )
            .expect("request"),
            engine::DecisionKind::Allow,
        ),
        (
            "policy_variable",
            Request::new(
                "arn:aws:iam::111122223333:user/contractors/bob",
                "lambda:GetFunction",
                &bobs,
                &[],
                now,
            )
            .expect("request"),
            engine::DecisionKind::Allow,
        ),
    ];
    let mut group = c.benchmark_group("decide");
    for (name, req, want) in &cases {
        assert_eq!(engine::decide(&snap, req).kind, *want, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| engine::decide(black_box(&snap), black_box(req)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
