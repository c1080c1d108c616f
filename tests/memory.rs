//! The loader's memory: a hostile store file (small enough to be read, made
//! of the tiniest JSON values) must not take many times its size, and a
//! rejected load must give its memory back to the OS.
//!
//! Its own test binary, with one test and the allocator `iamd` uses, so
//! the process's resident size is this test's alone.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A field of /proc/self/status, in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// Writes `[0,0,...,0]` of about `len` bytes without holding it in memory.
fn write_zeros(path: &std::path::Path, len: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"[0").unwrap();
    for _ in 0..(len - 3) / 2 {
        f.write_all(b",0").unwrap();
    }
    f.write_all(b"]").unwrap();
    f.flush().unwrap();
}

#[test]
fn a_hostile_file_is_rejected_within_its_budget_and_its_memory_given_back() {
    const LEN: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    write_zeros(&dir.path().join("zeros.json"), LEN);
    let base = status_bytes("VmRSS");

    let result = iamd::store::load(dir.path());
    let peak = status_bytes("VmHWM");
    let codes: Vec<_> = match &result {
        Err(iamd::store::LoadError::Rejected { findings, .. }) => findings
            .iter()
            .map(|f| {
                (
                    f.issue_code,
                    f.location.file.to_string(),
                    f.location.path.clone(),
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    drop(result);
    let kept = status_bytes("VmRSS");
    iamd::store::release_memory();
    let after = status_bytes("VmRSS");
    println!(
        "file {LEN} bytes: resident before {base}, peak {peak}, after the load {kept}, after release_memory {after}"
    );

    assert_eq!(codes.len(), 1, "{codes:?}");
    let (code, file, path) = &codes[0];
    assert_eq!(
        (*code, file.as_str()),
        (iamd::finding::IssueCode::FileTooComplex, "zeros.json")
    );
    // It names where reading stopped: an item of the array.
    assert!(path.starts_with('['), "{path}");
    // All of it took some small multiple of the file (the densest JSON
    // would take 24 bytes of tree per byte, and twice that while parsing).
    assert!(
        peak - base < 16 * LEN,
        "peak {peak} is {} MiB above the {base} before, for a {LEN}-byte file",
        (peak - base) >> 20
    );
    // And what the load took is given back.
    assert!(
        after < base + LEN,
        "resident {after} after release_memory, {base} before the load"
    );
}
