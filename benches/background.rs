//! Decisions while another thread keeps swapping snapshots (STYLE habit 14,
//! after arc-swap's own `benches/background.rs`).
//!
//! iamd serves from an arc-swap cell (`reload::SnapshotCell`, an
//! `ArcSwapOption`): each request takes one guard, decides synchronously and
//! drops it, while a reload stores a new snapshot whenever the store
//! changes. This bench reads through a plain `ArcSwap<Snapshot>`, the same
//! load and store machinery, and asks the six probe questions of
//! `benches/decision.rs` three ways, in one run:
//!
//! - `direct`: `decide` on a `&Snapshot`, no cell at all;
//! - `quiet`: through `ArcSwap::load`, nothing else touching the cell;
//! - `swapping`: the same, while a background thread stores one of two
//!   snapshots compiled from the same store, then the other, every
//!   [`SWAP_EVERY`], as back-to-back reloads would without the cost of
//!   building them (each swap hands readers a snapshot cold in cache).
//!
//! `swapping` over `quiet` is what a reload in progress costs a decision;
//! `quiet` over `direct` is the guard's own cost. Both snapshots stay alive
//! throughout, so no reader ever frees one. The stores have about 100k
//! statements; `IAMD_BENCH_SIZES=10000,1000000` picks other sizes.
#![allow(clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use iamd::engine::{self, ContextEntry, Request, Snapshot};
use iamd::synth::{generate, probe_requests, GenParams, Probe};

/// How often the background thread stores a snapshot.
const SWAP_EVERY: Duration = Duration::from_millis(2);

fn sizes() -> Vec<usize> {
    std::env::var("IAMD_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000])
}

/// The synthetic store of about `size` statements that `benches/decision.rs`
/// measures, compiled.
fn snapshot(size: usize) -> Arc<Snapshot> {
    let files = generate(&GenParams::for_statements(size, 42));
    let (store, findings) =
        iamd::store::from_texts(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
    drop(files);
    let store =
        store.unwrap_or_else(|| panic!("generated store rejected: {:?}", findings.errors().next()));
    Arc::new(Snapshot::compile_owned(store).expect("the generated store compiles"))
}

/// Stores `a` and `b` into `cell` in turn, every [`SWAP_EVERY`], until
/// dropped; counts the swaps.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(cell: Arc<ArcSwap<Snapshot>>, a: Arc<Snapshot>, b: Arc<Snapshot>) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (stopped, count) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            let mut next = [a, b].into_iter().cycle();
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(SWAP_EVERY);
                if let Some(s) = next.next() {
                    cell.store(s);
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn request<'a>(probe: &'a Probe, ctx: &'a [ContextEntry], now: jiff::Timestamp) -> Request<'a> {
    Request::new(&probe.principal, probe.action, &probe.resource, ctx, now).expect("valid probe")
}

fn bench(c: &mut Criterion) {
    let now = jiff::Timestamp::from_second(1_780_000_000).expect("valid time");
    let probes = probe_requests();
    let contexts: Vec<Vec<ContextEntry>> = probes.iter().map(Probe::context_entries).collect();
    let mut group = c.benchmark_group("background");
    for size in sizes() {
        let (a, b) = (snapshot(size), snapshot(size));
        eprintln!(
            "store of {size} target statements: {} statements",
            a.stats().statements
        );
        for snap in [&a, &b] {
            for (probe, ctx) in probes.iter().zip(&contexts) {
                let decision = engine::decide(snap, &request(probe, ctx, now));
                assert_eq!(decision.kind().as_str(), probe.expect, "{}", probe.name);
            }
        }
        let cell = Arc::new(ArcSwap::new(a.clone()));
        let requests: Vec<Request<'_>> = probes
            .iter()
            .zip(&contexts)
            .map(|(p, ctx)| request(p, ctx, now))
            .collect();
        let id =
            |mode: &str, probe: &Probe| BenchmarkId::new(mode, format!("{}/{size}", probe.name));
        // Each probe's three runs back to back, so that other work on the
        // machine weighs on them alike; the swapper runs only for the third.
        let mut swaps = 0;
        for (probe, req) in probes.iter().zip(&requests) {
            group.bench_with_input(id("direct", probe), req, |bench, req| {
                bench.iter(|| engine::decide(black_box(&a), black_box(req)))
            });
            group.bench_with_input(id("quiet", probe), req, |bench, req| {
                bench.iter(|| engine::decide(&cell.load(), black_box(req)))
            });
            let swapper = Swapper::start(cell.clone(), b.clone(), a.clone());
            group.bench_with_input(id("swapping", probe), req, |bench, req| {
                bench.iter(|| engine::decide(&cell.load(), black_box(req)))
            });
            swaps += swapper.swaps.load(Ordering::Relaxed);
            drop(swapper);
            cell.store(a.clone());
        }
        eprintln!("the background thread stored {swaps} snapshots");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
