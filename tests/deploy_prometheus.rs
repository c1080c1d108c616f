//! `deploy/prometheus/alerts.yaml`, checked by the real tools (Debian
//! `prometheus`, installed by `.ci/run`): `promtool check rules` and
//! `promtool test rules`, then loaded by a real Prometheus that scrapes a
//! running iamd, where the rules evaluate and every query of the Grafana
//! dashboard answers with data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod envoy;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::deploy::{
    alert_rule_names, read, repo, run_ok, system_tool, text, wait_until, yaml_docs, Killed, ALICE,
    ERIN, HELLO,
};
use common::{example_store, parse_prometheus, request, Iamd};
use iamd::server::pb::Decision;
use serde_json::Value;

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let promtool = system_tool("promtool");
    let o = run_ok(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(repo().join("deploy/prometheus/alerts.yaml")),
    );
    assert!(text(&o).contains("SUCCESS: 13 rules found"), "{}", text(&o));
    let o = run_ok(
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(repo().join("deploy/prometheus/alerts.test.yaml")),
    );
    assert!(text(&o).contains("SUCCESS"), "{}", text(&o));

    // Every alert has a unit test in which it fires.
    let tests = &yaml_docs(&read("deploy/prometheus/alerts.test.yaml"))[0];
    let alerts = alert_rule_names("alert");
    let fired: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fired, alerts, "alerts without a firing test");

    // The check bites: a broken rule file fails.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("alerts.yaml");
    std::fs::write(
        &broken,
        read("deploy/prometheus/alerts.yaml").replace("> 0.001", "> > 0.001"),
    )
    .unwrap();
    let o = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
}

/// The dashboard's template variables, as a Prometheus that scrapes one iamd
/// under `job="iamd"` sees them.
fn substitute_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "iamd")
        .replace("$instance", ".+")
}

struct Prometheus {
    _child: Killed,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = envoy::free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n- {}\nscrape_configs:\n- job_name: iamd\n  static_configs:\n  - targets: ['{target}']\n",
            repo().join("deploy/prometheus/alerts.yaml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(system_tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = Prometheus {
            _child: Killed(child),
            port,
            _dir: dir,
        };
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            envoy::http(port, "GET", "/-/ready", &[], "")
                .ok()
                .filter(|r| r.status == 200)
        });
        me
    }

    fn api(&self, path: &str) -> Value {
        let r = envoy::http(self.port, "GET", path, &[], "").unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let data = self.api(&format!("/api/v1/query?query={q}"));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().unwrap().clone()
    }

    /// The single value of an instant query, if it has one.
    fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        assert!(r.len() <= 1, "{promql}: {r:?}");
        r.first()
            .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_iamd_and_evaluates_the_rules_and_dashboard() {
    let iamd = Iamd::start_loaded(&example_store(), &[]);
    let prom = Prometheus::start(iamd.metrics);
    let q = |name: &str, labels: &str| format!("{name}{{job=\"iamd\"{labels}}}");
    // A first scrape before any decision, so rates see the counters rise.
    wait_until("the first scrape", Duration::from_secs(30), || {
        prom.value(&q(
            "iamd_decisions_total",
            ",api=\"authorize\",decision=\"allow\"",
        ))
    });

    let mut client = iamd.client().await;
    let decide = |principal: &str, action: &str, resource: &str| {
        let req = request(principal, action, resource, &[]);
        let mut c = client.clone();
        async move { c.authorize(req).await }
    };
    for _ in 0..3 {
        let r = decide(ALICE, "lambda:ListFunctions", "*").await.unwrap();
        assert_eq!(r.into_inner().decision(), Decision::Allow);
    }
    for _ in 0..2 {
        let r = decide(ALICE, "lambda:DeleteFunction", &format!("{HELLO}:prod"))
            .await
            .unwrap();
        assert_eq!(r.into_inner().decision(), Decision::ExplicitDeny);
    }
    let r = decide(ERIN, "lambda:InvokeFunction", HELLO).await.unwrap();
    assert_eq!(r.into_inner().decision(), Decision::ImplicitDeny);
    let rejected = client
        .authorize(request("", "lambda:ListFunctions", "*", &[]))
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), tonic::Code::InvalidArgument);

    // The counters, as Prometheus stored them.
    let decisions = |d: &str| {
        q(
            "iamd_decisions_total",
            &format!(",api=\"authorize\",decision=\"{d}\""),
        )
    };
    wait_until(
        "Prometheus to see the decisions",
        Duration::from_secs(30),
        || {
            (prom.value(&decisions("allow")) == Some(3.0)
                && prom.value(&q("iamd_requests_rejected_total", ",api=\"authorize\""))
                    == Some(1.0))
            .then_some(())
        },
    );
    assert_eq!(prom.value(&decisions("explicit_deny")), Some(2.0));
    assert_eq!(prom.value(&decisions("implicit_deny")), Some(1.0));
    assert_eq!(
        prom.value(&q(
            "iamd_decisions_total",
            ",api=\"envoy_check\",decision=\"allow\""
        )),
        Some(0.0)
    );
    assert_eq!(
        prom.value(&q(
            "iamd_decision_duration_seconds_count",
            ",api=\"authorize\""
        )),
        Some(6.0)
    );
    assert_eq!(
        prom.value(&q(
            "iamd_decision_duration_seconds_bucket",
            ",api=\"authorize\",le=\"+Inf\""
        )),
        Some(6.0)
    );
    assert_eq!(
        prom.value(&q("iamd_reloads_total", ",result=\"success\"")),
        Some(1.0)
    );
    assert_eq!(
        prom.value(&q("iamd_reloads_total", ",result=\"failure\"")),
        Some(0.0)
    );
    assert_eq!(prom.value(&q("iamd_snapshot_loaded", "")), Some(1.0));
    assert_eq!(prom.value(&q("iamd_snapshot_revision", "")), Some(1.0));
    assert_eq!(prom.value(&q("iamd_snapshot_accounts", "")), Some(2.0));
    let policies = parse_prometheus(&iamd.metrics_text())
        .into_iter()
        .find(|s| s.name == "iamd_snapshot_policies")
        .unwrap()
        .value;
    assert_eq!(prom.value(&q("iamd_snapshot_policies", "")), Some(policies));
    let age = prom
        .value("time() - iamd_last_reload_success_timestamp_seconds")
        .unwrap();
    assert!((0.0..120.0).contains(&age), "{age}");

    // Prometheus holds every series name iamd exports.
    let names: BTreeSet<String> = prom
        .api("/api/v1/label/__name__/values")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("iamd_"))
        .collect();
    let exported: BTreeSet<String> = parse_prometheus(&iamd.metrics_text())
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, exported);

    // The rules load and evaluate: the deny ratio is 3 of 6, and the 1 in 7
    // rejected requests puts IamdRequestsRejected in pending (for: 5m).
    wait_until("every rule evaluated", Duration::from_secs(30), || {
        let groups = prom.api("/api/v1/rules")["groups"].clone();
        let rules: Vec<Value> = groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(rules.len(), 13);
        for r in &rules {
            assert_ne!(r["health"], "err", "{r}");
        }
        rules.iter().all(|r| r["health"] == "ok").then_some(())
    });
    let ratio = wait_until("the deny ratio", Duration::from_secs(30), || {
        prom.value("iamd:deny_ratio:rate5m{job=\"iamd\"}")
    });
    assert!((ratio - 0.5).abs() < 1e-9, "{ratio}");
    let alerts = wait_until(
        "IamdRequestsRejected pending",
        Duration::from_secs(30),
        || {
            let alerts = prom.api("/api/v1/alerts")["alerts"].clone();
            let alerts = alerts.as_array().unwrap().clone();
            (!alerts.is_empty()).then_some(alerts)
        },
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["alertname"], "IamdRequestsRejected");
    assert_eq!(alerts[0]["labels"]["instance"], iamd.metrics.to_string());
    assert_eq!(alerts[0]["state"], "pending");

    // Every dashboard query answers, with data.
    let dash: Value = serde_json::from_str(&read("deploy/grafana/iamd.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = substitute_grafana(t["expr"].as_str().unwrap());
            let result = prom.query(&expr);
            assert!(
                !result.is_empty(),
                "panel {}: `{expr}` has no data",
                p["title"]
            );
        }
    }
    let p99 = prom.query(&substitute_grafana(
        r#"histogram_quantile(0.99, sum by (le) (rate(iamd_decision_duration_seconds_bucket{job=~"$job", instance=~"$instance"}[$__rate_interval])))"#,
    ));
    let p99: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p99 > 0.0 && p99 <= 0.01, "{p99}");
}
