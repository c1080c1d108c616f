//! `deploy/grafana/iamd.json` and the alert rules: every metric their
//! queries name is one iamd exports (or a recording rule's), the dashboard
//! shows what an operator needs, and its panels are laid out well. (That
//! every dashboard query answers on a real Prometheus is checked in
//! `deploy_prometheus.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::deploy::{alert_rule_names, read, yaml_docs};
use common::{example_store, parse_prometheus, Iamd};
use serde_json::Value;

/// The metric names (and recording-rule names) a PromQL expression reads:
/// every identifier that is not a function, keyword, label list, label
/// matcher, string, duration or number.
fn promql_metric_names(expr: &str) -> Vec<String> {
    // Keywords followed by a label list, `by (job)`.
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // The other keywords.
    const KEYWORDS: &[&str] = &[
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "atan2",
        "inf",
        "nan",
        // Aggregation operators, which may be followed by `by (...)`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let b: Vec<char> = expr.chars().collect();
    let skip_to = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        let mut quote: Option<char> = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                None => {}
            }
            i += 1;
        }
        panic!("unbalanced `{open}` in {expr}");
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                if b[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_to(i, '{', '}');
        } else if c == '[' {
            i = skip_to(i, '[', ']');
        } else if c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                let e = b[i] == 'e' || b[i] == 'E';
                i += 1;
                if e && i < b.len() && (b[i] == '+' || b[i] == '-') {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let ident: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = ident.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) || KEYWORDS.contains(&lower.as_str()) {
                if LABEL_LISTS.contains(&lower.as_str()) && next == Some('(') {
                    i = skip_to(j, '(', ')');
                }
            } else if next != Some('(') {
                names.push(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names a running iamd exports (the names of its samples, so a
/// histogram contributes `_bucket`, `_sum` and `_count`).
/// What iamd exports on a directory store and, with the etcd store's own
/// gauges, on an etcd store (a one-member cluster holding the example store).
fn exported_metric_names() -> BTreeSet<String> {
    let names = |iamd: &Iamd| -> BTreeSet<String> {
        parse_prometheus(&iamd.metrics_text())
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    let mut exported = names(&Iamd::start_loaded(&example_store(), &[]));
    let cluster = common::etcd::Cluster::start(1);
    let url = cluster.store("iamd");
    let pushed = std::process::Command::new(env!("CARGO_BIN_EXE_iamd"))
        .args(["store", "push", "--store", &url])
        .arg(example_store())
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{pushed:?}");
    exported.extend(names(&Iamd::start_loaded(std::path::Path::new(&url), &[])));
    exported
}

/// Every PromQL expression of the alert rules and of the Grafana dashboard
/// (with its template variables), as (where, expression).
fn promql_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules = &yaml_docs(&read("deploy/prometheus/alerts.yaml"))[0];
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("alerts.yaml {name}"),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let dash: Value = serde_json::from_str(&read("deploy/grafana/iamd.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("iamd.json panel `{}` {}", p["title"], t["refId"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_and_alerts_read_only_metrics_iamd_exports() {
    // The extractor itself.
    assert_eq!(
        promql_metric_names(
            r#"histogram_quantile(0.99, sum by (api, le) (rate(x_bucket{job=~"$job", le!="1e-3"}[$__rate_interval]))) / ignoring (result) y offset 5m > bool 1e-3 and on (instance) rec:name"#
        ),
        ["x_bucket", "y", "rec:name"]
    );

    let exported = exported_metric_names();
    assert!(exported.contains("iamd_decision_duration_seconds_bucket"));
    let recorded = alert_rule_names("record");
    let mut used = BTreeSet::new();
    for (place, expr) in promql_expressions() {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in `{expr}`");
        for name in names {
            // `up` is Prometheus's own, per scrape target.
            assert!(
                exported.contains(&name) || recorded.contains(&name) || name == "up",
                "{place} reads `{name}`, which iamd does not export"
            );
            used.insert(name);
        }
    }

    // The dashboard's template variables read iamd's metrics too.
    let dash: Value = serde_json::from_str(&read("deploy/grafana/iamd.json")).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().unwrap();
        let metric = q
            .strip_prefix("label_values(")
            .and_then(|r| r.split([',', '{']).next())
            .unwrap_or_else(|| panic!("unexpected variable query {q}"));
        assert!(exported.contains(metric), "{q}");
    }

    // What the dashboard shows: decisions by result, latency percentiles,
    // reloads, revision, policy counts.
    let exprs: Vec<String> = promql_expressions().into_iter().map(|(_, e)| e).collect();
    let dash_text = exprs.join("\n");
    for needle in [
        "sum by (decision) (rate(iamd_decisions_total",
        "histogram_quantile(0.99, sum by (le) (rate(iamd_decision_duration_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(iamd_decision_duration_seconds_bucket",
        "iamd_reloads_total",
        "iamd_snapshot_revision",
        "iamd_snapshot_policies",
        "iamd_snapshot_statements",
    ] {
        assert!(dash_text.contains(needle), "no `{needle}` in the dashboard");
    }
    // Every panel has a unique id and a place on the grid.
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id");
        let g = &p["gridPos"];
        assert!(
            g["w"].as_i64().unwrap() > 0
                && g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24
        );
    }
}
