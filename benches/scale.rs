//! Load-and-compile time and memory at store sizes from 1k to 1M statements.
//!
//! For each size: generate a store with `iamd::synth` onto disk, load and
//! validate it (`store::load`), compile it (`Snapshot::compile_owned`), and
//! measure with a counting allocator (over mimalloc, as in the binary) the
//! heap the snapshot keeps and the peak during load and compile. Memory
//! comes from a first pass with counting on, times from a second with it
//! off: one shared counter updated by every allocation on both threads
//! would slow the parallel load being timed. The files are flushed to disk
//! before either pass, so write-back does not run during the load. Prints a table and writes
//! `target/iamd-bench/scale.json`.
//! `cargo bench --bench scale [-- 1000 10000]` (sizes default to 1k..1M).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Instant;

use iamd::engine::Snapshot;
use iamd::synth::{generate, GenParams};

#[path = "common/counting.rs"]
mod counting;
use counting::{COUNTING, CURRENT, PEAK};

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if args.is_empty() {
        vec![1_000, 10_000, 100_000, 1_000_000]
    } else {
        args
    };
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/iamd-bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut rows = Vec::new();
    println!(
        "{:>10} {:>10} {:>9} {:>9} {:>9} {:>11} {:>11} {:>10}",
        "target",
        "statements",
        "files MB",
        "load s",
        "compile s",
        "snapshot MB",
        "peak MB",
        "B/stmt"
    );
    for size in sizes {
        let params = GenParams::for_statements(size, 42);
        let files = generate(&params);
        let dir = tempfile::tempdir().unwrap();
        iamd::synth::write(dir.path(), &files).unwrap();
        let file_bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
        drop(files);

        // Write-back of the fresh files must not overlap the passes.
        let _ = std::process::Command::new("sync").status();

        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let snapshot =
            Snapshot::compile_owned(iamd::store::load(dir.path()).unwrap().store).unwrap();
        let kept = CURRENT.load(Ordering::Relaxed) - base;
        let peak = PEAK.load(Ordering::Relaxed) - base;
        drop(snapshot);

        COUNTING.store(false, Ordering::Relaxed);
        let t0 = Instant::now();
        let store = iamd::store::load(dir.path()).unwrap().store;
        let load_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let snapshot = Snapshot::compile_owned(store).expect("the generated store compiles");
        let compile_s = t1.elapsed().as_secs_f64();
        let statements = snapshot.stats().statements;
        let per = kept as f64 / statements as f64;
        println!(
            "{size:>10} {statements:>10} {:>9.1} {load_s:>9.2} {compile_s:>9.2} {:>11.1} {:>11.1} {per:>10.0}",
            file_bytes as f64 / 1e6,
            kept as f64 / 1048576.0,
            peak as f64 / 1048576.0
        );
        rows.push(serde_json::json!({
            "target": size, "statements": statements, "file_bytes": file_bytes,
            "load_seconds": load_s, "compile_seconds": compile_s,
            "snapshot_bytes": kept, "peak_bytes": peak, "bytes_per_statement": per,
            "rss_bytes": rss_bytes(),
        }));
        // Freed uncounted, as it was allocated.
        drop(snapshot);
        COUNTING.store(true, Ordering::Relaxed);
    }
    std::fs::write(
        out_dir.join("scale.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
}
