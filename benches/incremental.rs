//! Applying one change to a large store, against building it whole.
//!
//! Generates a store (`iamd::synth`, 1M statements by default), loads it
//! into a [`Workspace`] (what a sidecar does at start, and what every
//! change cost before snapshots were incremental), then applies, round
//! after round, one function policy's new version and one account's
//! authorization details' new version, keeping the serving snapshot alive
//! while the next is built (as the sidecar does until the swap). Reports
//! the median and p99 of each change against the whole build, in one run,
//! and the heap while both snapshots live against the heap of one (a
//! counting allocator over mimalloc; it is on throughout, so times include
//! its atomic add per allocation, whole build as much as changes).
//!
//! Then the directory backend end to end: the store written to disk,
//! loaded by a `SnapshotCell`, and one function policy file rewritten and
//! reloaded by the path the watch reports, event to swapped snapshot.
//!
//! `cargo bench --bench incremental [-- STATEMENTS [ROUNDS]]`; writes
//! `target/iamd-bench/incremental.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

#[path = "common/counting.rs"]
mod counting;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use counting::{CURRENT, PEAK};
use iamd::reload::SnapshotCell;
use iamd::store::workspace::Workspace;
use iamd::synth::{generate, GenParams};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The same document with its first `"Allow"` turned into `"Deny"`: still
/// valid, and a different decision.
fn flipped(text: &str) -> String {
    text.replacen("\"Allow\"", "\"Deny\"", 1)
}

struct Rounds {
    times: Vec<Duration>,
    /// Largest heap while the old snapshot still served (the workspace and
    /// one snapshot, plus what the change added), over `one`.
    peak_ratio: f64,
}

/// Applies `name`'s two versions in turn, `rounds` times; `one` is the heap
/// of the workspace with its one snapshot.
fn rounds(
    ws: &mut Workspace,
    one: usize,
    name: &str,
    versions: [&str; 2],
    rounds: usize,
) -> Rounds {
    let mut serving = Some(ws.snapshot().unwrap());
    let mut times = Vec::with_capacity(rounds);
    let mut peak_ratio: f64 = 0.0;
    for i in 0..rounds {
        let text = versions[(i + 1) % 2];
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let start = Instant::now();
        let applied = ws
            .apply([(name, Some(Ok(text.as_bytes())))])
            .expect("the change compiles");
        let took = start.elapsed();
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        let next = applied.snapshot.expect("the change changed the snapshot");
        let peak = PEAK.load(Ordering::Relaxed);
        // The old snapshot goes only now: it served while the next was built.
        serving = Some(next);
        times.push(took);
        let extra = peak.saturating_sub(before);
        peak_ratio = peak_ratio.max((one + extra) as f64 / one as f64);
    }
    drop(serving);
    times.sort();
    Rounds { times, peak_ratio }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let statements = args.first().copied().unwrap_or(1_000_000);
    let n = args.get(1).copied().unwrap_or(41);

    let files = generate(&GenParams::for_statements(statements, 42));
    let base = CURRENT.load(Ordering::Relaxed);
    let start = Instant::now();
    let (mut ws, snapshot, _) = Workspace::load(
        files
            .iter()
            .map(|(name, text)| (name.as_str(), Ok(text.as_bytes()))),
    )
    .expect("the generated store loads");
    let whole = start.elapsed();
    let stats = snapshot.stats();
    drop(snapshot);
    let one = CURRENT.load(Ordering::Relaxed) - base;
    println!(
        "store: {} statements, {} principals, {} documents; whole build {:.0} ms, heap {:.0} MiB",
        stats.statements,
        stats.principals,
        files.len(),
        ms(whole),
        one as f64 / (1 << 20) as f64
    );

    let function = files
        .iter()
        .find(|(name, _)| name.contains("/functions/"))
        .expect("a function policy");
    let account = files
        .iter()
        .find(|(name, _)| name.ends_with("authorization-details.json"))
        .expect("an account");
    let function_flipped = flipped(&function.1);
    let account_flipped = flipped(&account.1);
    let f = rounds(
        &mut ws,
        one,
        &function.0,
        [&function.1, &function_flipped],
        n,
    );
    let a = rounds(
        &mut ws,
        one,
        &account.0,
        [&account.1, &account_flipped],
        n.min(11),
    );
    let accounts = stats.accounts.max(1);

    let mut rows = Vec::new();
    let header = format!(
        "{:<38} {:>10} {:>10} {:>14} {:>16}",
        "change", "median ms", "p99 ms", "whole / median", "peak / one heap"
    );
    println!("{header}");
    for (what, r) in [
        (format!("one function policy ({})", function.0), &f),
        (
            format!("one account of {accounts} ({} KiB)", account.1.len() / 1024),
            &a,
        ),
    ] {
        let median = percentile(&r.times, 0.5);
        let p99 = percentile(&r.times, 0.99);
        println!(
            "{:<38} {:>10.3} {:>10.3} {:>13.0}x {:>15.3}x",
            what.chars().take(38).collect::<String>(),
            ms(median),
            ms(p99),
            whole.as_secs_f64() / median.as_secs_f64(),
            r.peak_ratio
        );
        rows.push(serde_json::json!({"change": what, "median_ms": ms(median), "p99_ms": ms(p99),
            "whole_over_median": whole.as_secs_f64() / median.as_secs_f64(), "peak_over_one": r.peak_ratio}));
    }
    drop(ws);

    // The directory backend, event to swapped snapshot.
    let dir = tempfile::tempdir().unwrap();
    iamd::synth::write(dir.path(), &files).unwrap();
    let cell = SnapshotCell::new();
    let start = Instant::now();
    cell.reload(dir.path()).unwrap();
    let dir_whole = start.elapsed();
    let path = dir.path().join(&function.0);
    let paths: BTreeSet<_> = [path.clone()].into_iter().collect();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let text = if i % 2 == 0 {
            &function_flipped
        } else {
            &function.1
        };
        std::fs::write(&path, text).unwrap();
        let start = Instant::now();
        let r = cell.reload_paths(dir.path(), &paths).unwrap();
        times.push(start.elapsed());
        assert!(r.rejected.is_empty());
    }
    times.sort();
    let (median, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "directory: whole load {:.0} ms; one function policy file, reported path to swapped snapshot: median {:.3} ms, p99 {:.3} ms ({:.0}x faster than whole)",
        ms(dir_whole),
        ms(median),
        ms(p99),
        dir_whole.as_secs_f64() / median.as_secs_f64()
    );
    rows.push(
        serde_json::json!({"change": "directory: one function policy file", "median_ms": ms(median),
        "p99_ms": ms(p99), "whole_ms": ms(dir_whole)}),
    );

    let out = serde_json::json!({"statements": stats.statements, "whole_ms": ms(whole),
        "heap_mib": one as f64 / (1 << 20) as f64, "rows": rows});
    std::fs::create_dir_all("target/iamd-bench").unwrap();
    std::fs::write(
        "target/iamd-bench/incremental.json",
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
}
