//! iamd against Cedar on the same synthetic store, at 1k, 10k and 100k statements.
//!
//! For each of iamd's six probe questions, four measurements:
//! - `iamd`: `decide` on the compiled snapshot;
//! - `cedar_sliced`: `Authorizer::is_authorized` over the policies that can
//!   apply to the request's resource (those naming it exactly, and every policy
//!   whose resource is a pattern, a list or any), looked up in a
//!   `HashMap<String, PolicySet>` by resource ARN;
//! - `cedar_sliced_pr`: the same, also dropping the policies whose principal
//!   scope names neither the caller nor one of its groups, accounts,
//!   attachments or SCPs (looked up by principal, then resource);
//! - `cedar`: `is_authorized` over the whole policy set.
//!
//! The two slow cases (`cedar_sliced`, `cedar`) take 20 samples with flat sampling.
//!
//! Before measuring, every probe's answer from Cedar is checked against iamd's.
//! After each size the medians and the ratios to iamd are printed; at the end
//! the medians go to `target/criterion/peers-results.json`, and to
//! `results.json` beside Cargo.toml when every size, probe and engine ran.
//!
//! `cargo bench -- --warm-up-time 1 --measurement-time 2`; `PEERS_SIZES=1000,10000`
//! picks the sizes.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use cedar_policy::{Authorizer, PolicySet};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use iamd_peers::Fixture;

const DEFAULT_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// The engines `results.json` holds (`cedar_sliced_pr` is printed and kept in
/// `target/criterion/peers-results.json` only).
const RESULT_ENGINES: [&str; 3] = ["iamd", "cedar", "cedar_sliced"];

fn sizes() -> Vec<usize> {
    std::env::var("PEERS_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_SIZES.to_vec())
}

fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("criterion")
}

/// The median (ns) criterion estimated for `group/engine/probe` in this run
/// (an estimate older than `since`, from an earlier or filtered-out run, is ignored).
fn median_ns(group: &str, engine: &str, probe: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(engine)
        .join(probe)
        .join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut rows = Vec::new();
    let mut expected_rows = 0;
    for size in sizes() {
        let t0 = Instant::now();
        let fx = Fixture::new(size).unwrap_or_else(|e| panic!("{size}: {e}"));
        let setup = t0.elapsed();
        let answers = fx.answers().unwrap_or_else(|e| panic!("{size}: {e}"));
        println!(
            "\n== {size}: {} IAM statements, {} Cedar policies, set up in {:.1} s",
            fx.statements,
            fx.cedar.policy_set.policies().count(),
            setup.as_secs_f64()
        );
        println!(
            "{:<16} {:>13} {:>13} {:>13} {:>15} {:>11} {:>14}",
            "probe",
            "iamd",
            "cedar",
            "cedar_sliced",
            "cedar_sliced_pr",
            "slice size",
            "pr slice size"
        );
        for a in &answers {
            println!(
                "{:<16} {:>13} {:>13} {:>13} {:>15} {:>11} {:>14}",
                a.probe,
                a.iamd,
                a.cedar,
                a.cedar_sliced,
                a.cedar_sliced_pr,
                a.slice_size,
                a.slice_pr_size
            );
            assert_eq!(a.iamd, a.expect, "{size} {}: iamd's answer", a.probe);
            assert!(a.agree(), "{size}: Cedar and iamd differ: {a:?}");
            assert_eq!(a.cedar_errors, 0, "{size}: Cedar evaluation errors: {a:?}");
        }

        let n = fx.probes.len();
        let iamd_requests: Vec<_> = (0..n)
            .map(|i| fx.iamd_request(i).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let cedar_requests: Vec<_> = (0..n)
            .map(|i| fx.cedar_request(i).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let mut by_resource: HashMap<String, PolicySet> = HashMap::new();
        let mut by_principal: HashMap<String, HashMap<String, PolicySet>> = HashMap::new();
        for p in &fx.probes {
            by_resource
                .entry(p.resource.clone())
                .or_insert_with(|| fx.cedar.slice_by_resource(&p.resource));
            by_principal
                .entry(p.principal.clone())
                .or_default()
                .entry(p.resource.clone())
                .or_insert_with(|| {
                    fx.cedar
                        .slice_by_principal_and_resource(&p.principal, &p.resource)
                });
        }
        let authorizer = Authorizer::new();
        let entities = &fx.cedar.entities;

        let started = SystemTime::now();
        let fast = format!("n{size}");
        let mut g = c.benchmark_group(&fast);
        for (i, p) in fx.probes.iter().enumerate() {
            g.bench_function(BenchmarkId::new("iamd", p.name), |b| {
                b.iter(|| iamd::engine::decide(&fx.snapshot, black_box(&iamd_requests[i])))
            });
            g.bench_function(BenchmarkId::new("cedar_sliced_pr", p.name), |b| {
                b.iter(|| {
                    let set = &by_principal[black_box(p.principal.as_str())][p.resource.as_str()];
                    authorizer.is_authorized(&cedar_requests[i], set, entities)
                })
            });
        }
        g.finish();

        // The slow cases: 20 samples of equal iteration counts.
        let sliced = format!("n{size}-sliced");
        let mut g = c.benchmark_group(&sliced);
        g.sample_size(20).sampling_mode(SamplingMode::Flat);
        for (i, p) in fx.probes.iter().enumerate() {
            g.bench_function(BenchmarkId::new("cedar_sliced", p.name), |b| {
                b.iter(|| {
                    let set = &by_resource[black_box(p.resource.as_str())];
                    authorizer.is_authorized(&cedar_requests[i], set, entities)
                })
            });
        }
        g.finish();

        let whole = format!("n{size}-whole");
        let mut g = c.benchmark_group(&whole);
        g.sample_size(20).sampling_mode(SamplingMode::Flat);
        for (i, p) in fx.probes.iter().enumerate() {
            g.bench_function(BenchmarkId::new("cedar", p.name), |b| {
                b.iter(|| {
                    authorizer.is_authorized(
                        black_box(&cedar_requests[i]),
                        &fx.cedar.policy_set,
                        entities,
                    )
                })
            });
        }
        g.finish();

        println!("\n== {size}: medians (ns) and ratios to iamd");
        println!(
            "{:<16} {:>10} {:>13} {:>13} {:>13} {:>10} {:>10} {:>10}",
            "probe",
            "iamd",
            "cedar_sliced",
            "cedar_sl_pr",
            "cedar",
            "sliced/x",
            "sl_pr/x",
            "whole/x"
        );
        for p in &fx.probes {
            let m = |engine: &str| {
                let group = match engine {
                    "cedar" => &whole,
                    "cedar_sliced" => &sliced,
                    _ => &fast,
                };
                median_ns(group, engine, p.name, started)
            };
            let (iamd, sliced, pr, cedar) = (
                m("iamd"),
                m("cedar_sliced"),
                m("cedar_sliced_pr"),
                m("cedar"),
            );
            let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
            let ratio = |v: Option<f64>| match (v, iamd) {
                (Some(v), Some(i)) if i > 0.0 => format!("{:.1}", v / i),
                _ => "-".to_owned(),
            };
            println!(
                "{:<16} {:>10} {:>13} {:>13} {:>13} {:>10} {:>10} {:>10}",
                p.name,
                show(iamd),
                show(sliced),
                show(pr),
                show(cedar),
                ratio(sliced),
                ratio(pr),
                ratio(cedar)
            );
            for (engine, v) in [
                ("iamd", iamd),
                ("cedar", cedar),
                ("cedar_sliced", sliced),
                ("cedar_sliced_pr", pr),
            ] {
                if RESULT_ENGINES.contains(&engine) {
                    expected_rows += 1;
                }
                if let Some(median_ns) = v {
                    rows.push(serde_json::json!({
                        "size": size,
                        "statements": fx.statements,
                        "probe": p.name,
                        "engine": engine,
                        "median_ns": median_ns,
                    }));
                }
            }
        }
    }
    c.final_summary();

    let all = serde_json::to_string_pretty(&rows).unwrap_or_default();
    let home = criterion_home();
    let _ = std::fs::create_dir_all(&home);
    let _ = std::fs::write(home.join("peers-results.json"), &all);
    let main: Vec<_> = rows
        .iter()
        .filter(|r| RESULT_ENGINES.iter().any(|e| r["engine"] == *e))
        .collect();
    if main.len() == expected_rows && sizes() == DEFAULT_SIZES {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results.json");
        let text = serde_json::to_string_pretty(&main).unwrap_or_default();
        match std::fs::write(&path, text + "\n") {
            Ok(()) => println!("medians written to {}", path.display()),
            Err(e) => println!("cannot write {}: {e}", path.display()),
        }
    } else {
        println!(
            "partial run: medians written to {} only",
            home.join("peers-results.json").display()
        );
    }
}
