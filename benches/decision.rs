//! Latency of the decision core at store sizes from 1k to 1M statements.
//!
//! Each size is a synthetic store from `iamd::synth` (the same generator as
//! `iamd gen-store`), and each asks the same six questions: an allow, an
//! explicit deny, an implicit deny, a cross-account allow through a function
//! policy, a condition-heavy service-principal request, and a request that
//! resolves a policy variable. Cost should not grow with unrelated policies,
//! for decisions (`decide/…`) nor for explanations (`explain/…`).
//! `IAMD_BENCH_SIZES=1000,10000 cargo bench --bench decision` limits the sizes.
#![allow(clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use iamd::engine::{self, ContextEntry, Request, Snapshot};
use iamd::synth::{generate, probe_requests, GenParams};

fn sizes() -> Vec<usize> {
    std::env::var("IAMD_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000])
}

fn bench(c: &mut Criterion) {
    let now = jiff::Timestamp::from_second(1_780_000_000).expect("valid time");
    let probes = probe_requests();
    let contexts: Vec<Vec<ContextEntry>> = probes
        .iter()
        .map(|p| {
            p.context
                .iter()
                .map(|(k, v)| ContextEntry::new(*k, [v]))
                .collect()
        })
        .collect();
    for size in sizes() {
        let files = generate(&GenParams::for_statements(size, 42));
        let (store, findings) =
            iamd::store::from_texts(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        drop(files);
        let store = store
            .unwrap_or_else(|| panic!("generated store rejected: {:?}", findings.errors().next()));
        let snap = Snapshot::compile_owned(store).expect("the generated store compiles");
        let statements = snap.stats().statements;
        eprintln!("store of {size} target statements: {statements} statements");
        let requests: Vec<_> = probes
            .iter()
            .zip(&contexts)
            .map(|(probe, ctx)| {
                let req = Request::new(&probe.principal, probe.action, &probe.resource, ctx, now)
                    .expect("valid probe");
                assert_eq!(
                    engine::decide(&snap, &req).kind().as_str(),
                    probe.expect,
                    "{}",
                    probe.name
                );
                assert_eq!(
                    engine::explain(&snap, &req).decision,
                    engine::decide(&snap, &req)
                );
                (probe.name, req)
            })
            .collect();
        let mut group = c.benchmark_group("decide");
        for (name, req) in &requests {
            group.bench_with_input(BenchmarkId::new(*name, size), req, |b, req| {
                b.iter(|| engine::decide(black_box(&snap), black_box(req)))
            });
        }
        group.finish();
        // Explanations find their policies as decisions do (hash lookups)
        // and only skip the statement index: their cost must not grow
        // with the store either.
        let mut group = c.benchmark_group("explain");
        for (name, req) in &requests {
            group.bench_with_input(BenchmarkId::new(*name, size), req, |b, req| {
                b.iter(|| engine::explain(black_box(&snap), black_box(req)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
