//! Prometheus metrics, named `iamd_*` with units in the names and only
//! low-cardinality labels (never a principal or an ARN).
//!
//! Counters and gauges go through the `metrics` facade and
//! `metrics-exporter-prometheus`; the hot path holds pre-registered handles,
//! so counting a decision is one atomic add. Latency histograms are fixed
//! arrays of atomic buckets rendered next to the exporter's output, because
//! the exporter's histograms buffer samples in blocks that allocate.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::{DecisionKind, Stats};

/// Which API decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Authorize = 0,
    AuthorizeBatch = 1,
    EnvoyCheck = 2,
}

impl Api {
    pub const ALL: [Api; 3] = [Api::Authorize, Api::AuthorizeBatch, Api::EnvoyCheck];

    pub fn label(self) -> &'static str {
        match self {
            Api::Authorize => "authorize",
            Api::AuthorizeBatch => "authorize_batch",
            Api::EnvoyCheck => "envoy_check",
        }
    }
}

/// A histogram with fixed bucket bounds and atomic counts: recording is a
/// few atomic adds, with no lock and no allocation.
pub struct LatencyHistogram {
    name: &'static str,
    help: &'static str,
    label: (&'static str, &'static str),
    bounds_ns: &'static [u64],
    /// One count per bound, plus the overflow (+Inf) bucket.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// Bucket bounds for the decision core: 100 ns to 10 ms.
const DECISION_BOUNDS_NS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000, 10_000_000,
];
/// Bucket bounds for whole RPCs: 10 µs to 1 s.
const RPC_BOUNDS_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

impl LatencyHistogram {
    fn new(
        name: &'static str,
        help: &'static str,
        label: (&'static str, &'static str),
        bounds_ns: &'static [u64],
    ) -> Self {
        LatencyHistogram {
            name,
            help,
            label,
            bounds_ns,
            counts: (0..=bounds_ns.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, with_header: bool) {
        let (k, v) = self.label;
        if with_header {
            let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
            let _ = writeln!(out, "# TYPE {} histogram", self.name);
        }
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match self.bounds_ns.get(i) {
                Some(&b) => {
                    let le = b as f64 / 1e9;
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{k}=\"{v}\",le=\"{le}\"}} {cumulative}",
                        self.name
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{k}=\"{v}\",le=\"+Inf\"}} {cumulative}",
                        self.name
                    );
                }
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{}_sum{{{k}=\"{v}\"}} {sum}", self.name);
        let _ = writeln!(
            out,
            "{}_count{{{k}=\"{v}\"}} {}",
            self.name,
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// The handles the request path uses.
pub struct Metrics {
    decisions: Vec<Counter>,
    rejected: Vec<Counter>,
    decision_latency: Vec<LatencyHistogram>,
    rpc_latency: Vec<LatencyHistogram>,
    prometheus: PrometheusHandle,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(#[source] metrics_exporter_prometheus::BuildError);

impl Metrics {
    /// Installs the global recorder and registers every series, so they all
    /// show in `/metrics` from the start.
    pub fn install() -> Result<Self, MetricsError> {
        let prometheus = PrometheusBuilder::new()
            .install_recorder()
            .map_err(MetricsError)?;
        metrics::describe_counter!(
            "iamd_decisions_total",
            "Decisions made, by API and decision."
        );
        metrics::describe_counter!(
            "iamd_requests_rejected_total",
            "Requests refused before a decision (bad input, no snapshot), by API."
        );
        metrics::describe_counter!(
            "iamd_reloads_total",
            "Store reloads, by result (success or failure)."
        );
        metrics::describe_gauge!(
            "iamd_snapshot_revision",
            "Revision of the snapshot serving decisions (0 before the first load)."
        );
        metrics::describe_gauge!(
            "iamd_snapshot_loaded",
            "1 once a snapshot serves decisions."
        );
        metrics::describe_gauge!(
            "iamd_snapshot_accounts",
            "Accounts in the serving snapshot."
        );
        metrics::describe_gauge!(
            "iamd_snapshot_principals",
            "Users and roles in the serving snapshot."
        );
        metrics::describe_gauge!(
            "iamd_snapshot_policies",
            "Policy documents in the serving snapshot."
        );
        metrics::describe_gauge!(
            "iamd_snapshot_statements",
            "Statements in the serving snapshot."
        );
        metrics::describe_gauge!(
            "iamd_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load."
        );
        metrics::describe_gauge!(
            "iamd_store_watch_up",
            "1 while the store directory at the configured path is watched for changes."
        );
        metrics::describe_counter!(
            "iamd_store_watch_restarts_total",
            "Times the store watch was set up again (the directory was replaced, or removed and recreated)."
        );
        // An etcd store's gauges; a directory store never sets them.
        metrics::describe_gauge!(
            "iamd_store_connected",
            "etcd store: 1 while the watch on the store's etcd cluster is up."
        );
        metrics::describe_gauge!(
            "iamd_store_last_contact_timestamp_seconds",
            "etcd store: Unix time of the last answer from the store's etcd cluster."
        );
        metrics::describe_gauge!(
            "iamd_store_applied_revision",
            "etcd store: the etcd revision of the last change applied to the serving snapshot."
        );
        metrics::describe_gauge!(
            "iamd_store_documents_rejected",
            "Store documents whose current content is rejected (an ERROR, or a broken reference across documents); each keeps its last good version."
        );
        metrics::describe_counter!(
            "iamd_store_document_rejections_total",
            "Changes to one store document rejected alone."
        );
        metrics::describe_gauge!("iamd_build_info", "Always 1; the version is a label.");
        gauge!("iamd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        counter!("iamd_reloads_total", "result" => "success").absolute(0);
        counter!("iamd_reloads_total", "result" => "failure").absolute(0);
        gauge!("iamd_snapshot_revision").set(0.0);
        gauge!("iamd_snapshot_loaded").set(0.0);
        gauge!("iamd_store_watch_up").set(0.0);
        counter!("iamd_store_watch_restarts_total").absolute(0);
        gauge!("iamd_store_documents_rejected").set(0.0);
        counter!("iamd_store_document_rejections_total").absolute(0);
        describe_admission();
        let mut decisions = Vec::new();
        let mut rejected = Vec::new();
        let mut decision_latency = Vec::new();
        let mut rpc_latency = Vec::new();
        for api in Api::ALL {
            for d in DecisionKind::ALL {
                decisions.push(counter!("iamd_decisions_total", "api" => api.label(), "decision" => d.names().metric));
            }
            rejected.push(counter!("iamd_requests_rejected_total", "api" => api.label()));
            decision_latency.push(LatencyHistogram::new(
                "iamd_decision_duration_seconds",
                "Time the decision core takes per decision.",
                ("api", api.label()),
                DECISION_BOUNDS_NS,
            ));
            rpc_latency.push(LatencyHistogram::new(
                "iamd_rpc_duration_seconds",
                "Time to answer an RPC, from request to response.",
                ("api", api.label()),
                RPC_BOUNDS_NS,
            ));
        }
        Ok(Metrics {
            decisions,
            rejected,
            decision_latency,
            rpc_latency,
            prometheus,
        })
    }

    pub fn decision(&self, api: Api, d: DecisionKind, core: Duration) {
        // `DecisionKind::ALL` lists the kinds in declaration order.
        let i = api as usize * DecisionKind::ALL.len() + d as usize;
        if let Some(c) = self.decisions.get(i) {
            c.increment(1);
        }
        if let Some(h) = self.decision_latency.get(api as usize) {
            h.record(core);
        }
    }

    pub fn rejected(&self, api: Api) {
        if let Some(c) = self.rejected.get(api as usize) {
            c.increment(1);
        }
    }

    pub fn rpc(&self, api: Api, elapsed: Duration) {
        if let Some(h) = self.rpc_latency.get(api as usize) {
            h.record(elapsed);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = self.prometheus.render();
        for (i, h) in self.decision_latency.iter().enumerate() {
            h.render(&mut out, i == 0);
        }
        for (i, h) in self.rpc_latency.iter().enumerate() {
            h.render(&mut out, i == 0);
        }
        out
    }
}

/// Records a successful load (not on the request path).
pub fn snapshot_loaded(revision: u64, stats: Stats, at_unix: f64) {
    counter!("iamd_reloads_total", "result" => "success").increment(1);
    gauge!("iamd_snapshot_revision").set(revision as f64);
    gauge!("iamd_snapshot_loaded").set(1.0);
    gauge!("iamd_snapshot_accounts").set(stats.accounts as f64);
    gauge!("iamd_snapshot_principals").set(stats.principals as f64);
    gauge!("iamd_snapshot_policies").set(stats.policies as f64);
    gauge!("iamd_snapshot_statements").set(stats.statements as f64);
    gauge!("iamd_last_reload_success_timestamp_seconds").set(at_unix);
}

/// The listener and admission series: what was refused or closed to keep
/// iamd within its limits.
fn describe_admission() {
    metrics::describe_gauge!(
        "iamd_connections_open",
        "Connections open, by listener (grpc, uds, metrics)."
    );
    metrics::describe_counter!(
        "iamd_connections_refused_total",
        "Connections refused at the connection limit (every open one busy), by listener."
    );
    metrics::describe_counter!(
        "iamd_connections_evicted_total",
        "Idle connections closed to make room at the connection limit, by listener."
    );
    metrics::describe_counter!(
        "iamd_accept_exhausted_total",
        "Accepts that failed for lack of file descriptors or memory (then backed off), by listener."
    );
    metrics::describe_counter!(
        "iamd_admission_rejected_total",
        "Decision RPCs refused before a handler ran or cut off by their deadline, by reason."
    );
    for listener in ["grpc", "uds", "metrics"] {
        gauge!("iamd_connections_open", "listener" => listener).set(0.0);
        counter!("iamd_connections_refused_total", "listener" => listener).absolute(0);
        counter!("iamd_connections_evicted_total", "listener" => listener).absolute(0);
        counter!("iamd_accept_exhausted_total", "listener" => listener).absolute(0);
    }
    for reason in ADMISSION_REASONS {
        counter!("iamd_admission_rejected_total", "reason" => reason).absolute(0);
    }
}

/// Why the admission layer refused a decision RPC.
pub const ADMISSION_REASONS: [&str; 5] =
    ["in_flight", "too_large", "malformed", "deadline", "limits"];

pub fn admission_rejected(reason: &'static str) {
    counter!("iamd_admission_rejected_total", "reason" => reason).increment(1);
}

pub fn accept_exhausted(listener: &'static str) {
    counter!("iamd_accept_exhausted_total", "listener" => listener).increment(1);
}

pub fn connections(listener: &'static str, open: usize, refused: bool, evicted: bool) {
    gauge!("iamd_connections_open", "listener" => listener).set(open as f64);
    if refused {
        counter!("iamd_connections_refused_total", "listener" => listener).increment(1);
    }
    if evicted {
        counter!("iamd_connections_evicted_total", "listener" => listener).increment(1);
    }
}

/// Records the documents a change rejected alone, and how many are held back now.
pub fn documents_rejected(now: usize, held: usize) {
    counter!("iamd_store_document_rejections_total").increment(now as u64);
    gauge!("iamd_store_documents_rejected").set(held as f64);
}

/// Records a rejected store.
pub fn reload_failed() {
    counter!("iamd_reloads_total", "result" => "failure").increment(1);
}

/// Records whether the store is watched, and a watch set up again.
/// An etcd store's follower reached etcd (or failed to).
pub fn store_contact(connected: bool, applied_revision: i64) {
    gauge!("iamd_store_connected").set(if connected { 1.0 } else { 0.0 });
    if connected {
        gauge!("iamd_store_last_contact_timestamp_seconds")
            .set(crate::reload::unix_seconds(std::time::SystemTime::now()));
    }
    gauge!("iamd_store_applied_revision").set(applied_revision as f64);
}

pub fn store_watch(up: bool, restarted: bool) {
    gauge!("iamd_store_watch_up").set(if up { 1.0 } else { 0.0 });
    if restarted {
        counter!("iamd_store_watch_restarts_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = LatencyHistogram::new("t_seconds", "help", ("api", "x"), DECISION_BOUNDS_NS);
        h.record(Duration::from_nanos(50));
        h.record(Duration::from_nanos(300));
        h.record(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, true);
        assert!(out.contains("# TYPE t_seconds histogram"));
        assert!(
            out.contains("t_seconds_bucket{api=\"x\",le=\"0.0000001\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{api=\"x\",le=\"0.0000005\"} 2"),
            "{out}"
        );
        assert!(out.contains("t_seconds_bucket{api=\"x\",le=\"+Inf\"} 3"));
        assert!(out.contains("t_seconds_count{api=\"x\"} 3"));
    }
}
