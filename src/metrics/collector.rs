//! The families read at scrape time: each check's counters (plain atomics
//! the engine adds to, which the snapshot holds: `state::CheckCounters`),
//! and the gauges of the checks, the probes and the drain, computed from
//! the snapshot that owns those facts.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use prometheus::core::Desc;
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use crate::check::{Phases, Reason};
use crate::config::ProbeKind;
use crate::state::{CheckCounters, CheckStatus, DURATION_BUCKETS, Snapshot};

/// The `result` label of `healthproxy_check_runs_total`, by index.
const RESULTS: [&str; 3] = ["success", "failure", "unknown"];

/// The families built at each scrape: the checks' series and the
/// process's gauges. Reading the counters takes no lock a check run could
/// hold; the gauges are read from one snapshot.
pub(super) struct CheckFamilies {
    checks: PerCheck,
    process: Process,
}

/// The families with one or more series per check.
struct PerCheck {
    runs: Desc,
    duration: Desc,
    healthy: Desc,
    failures: Desc,
    consecutive: Desc,
    last_success: Desc,
    tls_expiry: Desc,
    http_phases: Desc,
    transitions: Desc,
}

/// The families of the probes, the drain and the reloads: one series each,
/// or one per probe kind or drain phase.
struct Process {
    probe_ok: Desc,
    draining: Desc,
    drain_seconds: Desc,
    drain_timed_out: Desc,
    drain_new_connections: Desc,
    drain_last_new_connection: Desc,
    app_restarts: Desc,
    reload_successful: Desc,
    reload_success_time: Desc,
}

fn desc(name: &str, help: &str, labels: &[&str]) -> Desc {
    Desc::new(
        name.into(),
        help.into(),
        labels.iter().map(|l| l.to_string()).collect(),
        HashMap::new(),
    )
    .expect("valid metric and label names")
}

impl CheckFamilies {
    /// The families' names, help texts and labels.
    pub(super) fn new() -> CheckFamilies {
        CheckFamilies {
            checks: PerCheck::new(),
            process: Process::new(),
        }
    }
}

impl PerCheck {
    fn new() -> PerCheck {
        PerCheck {
            runs: desc(
                "healthproxy_check_runs_total",
                "Check runs, by result.",
                &["check", "kind", "result"],
            ),
            duration: desc(
                "healthproxy_check_duration_seconds",
                "Duration of check runs.",
                &["check", "kind"],
            ),
            healthy: desc(
                "healthproxy_check_healthy",
                "Whether the check passes the probe kind, after thresholds (1) or not (0).",
                &["check", "probe"],
            ),
            failures: desc(
                "healthproxy_check_failures_total",
                "Failed check runs, by reason.",
                &["check", "reason"],
            ),
            consecutive: desc(
                "healthproxy_check_consecutive_failures",
                "Failed runs in a row, ending with the last counted run.",
                &["check"],
            ),
            last_success: desc(
                "healthproxy_check_last_success_timestamp_seconds",
                "When the check's last successful run finished, in seconds since the epoch; absent before the first.",
                &["check"],
            ),
            tls_expiry: desc(
                "healthproxy_check_tls_cert_expiry_timestamp_seconds",
                "When the earliest certificate of the chain the server presented at the last TLS handshake expires, in seconds since the epoch.",
                &["check"],
            ),
            http_phases: desc(
                "healthproxy_check_http_phase_seconds",
                "How long each phase (resolve, connect, tls, processing, transfer) of the check's last HTTP run took.",
                &["check", "phase"],
            ),
            transitions: desc(
                "healthproxy_check_transitions_total",
                "Changes of a check's state after thresholds, by the state changed to.",
                &["check", "to"],
            ),
        }
    }
}

impl Process {
    fn new() -> Process {
        Process {
            probe_ok: desc(
                "healthproxy_probe_ok",
                "Whether the probe endpoint answers 200 (1) or 503 (0), by probe kind.",
                &["probe"],
            ),
            draining: desc(
                "healthproxy_draining",
                "Whether a drain has begun (1) or not (0).",
                &[],
            ),
            drain_seconds: desc(
                "healthproxy_drain_duration_seconds",
                "Duration of the last finished drain, by phase (min_wait, connections, total).",
                &["phase"],
            ),
            drain_timed_out: desc(
                "healthproxy_drain_timed_out",
                "Whether the last finished drain ended at drain.max (1) rather than quiet with no connection left (0).",
                &[],
            ),
            drain_new_connections: desc(
                "healthproxy_drain_new_connections",
                "New connections to the app after readiness failed, in the last finished drain.",
                &[],
            ),
            drain_last_new_connection: desc(
                "healthproxy_drain_last_new_connection_seconds",
                "When the last new connection came in the last finished drain, in seconds from its start (0 when none came).",
                &[],
            ),
            app_restarts: desc(
                "healthproxy_app_restarts_total",
                "New app containers seen listening on drain.ports after the first (restarts).",
                &[],
            ),
            reload_successful: desc(
                "healthproxy_config_last_reload_successful",
                "Whether the last reload of the config was applied (1) or rejected (0).",
                &[],
            ),
            reload_success_time: desc(
                "healthproxy_config_last_reload_success_timestamp_seconds",
                "When a config was last applied (the start, or the last good reload), in Unix seconds.",
                &[],
            ),
        }
    }
}

/// A metric with `labels`, which must be sorted by name (as the registry
/// writes its own).
fn metric(labels: &[(&str, &str)]) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect();
    proto::Metric::from_label(pairs)
}

fn counter(labels: &[(&str, &str)], value: u64) -> proto::Metric {
    let mut m = metric(labels);
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    m.set_counter(c);
    m
}

fn gauge(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut m = metric(labels);
    let mut g = proto::Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    m
}

/// A family of `metrics`, sorted by their label values as the registry
/// sorts its own.
fn family(desc: &Desc, kind: MetricType, mut metrics: Vec<proto::Metric>) -> MetricFamily {
    metrics.sort_by(|a, b| {
        let values = |m: &proto::Metric| {
            m.get_label()
                .iter()
                .map(|l| l.value().to_owned())
                .collect::<Vec<_>>()
        };
        values(a).cmp(&values(b))
    });
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl CheckFamilies {
    /// The families of one scrape, the gauges read from `snapshot`; those
    /// without a series are left out, as the registry leaves them out.
    pub(super) fn collect(&self, snapshot: &Snapshot) -> Vec<MetricFamily> {
        let mut series = CheckSeries::with_capacity(snapshot.checks.len());
        for status in &snapshot.checks {
            series.push(snapshot, status);
        }
        series
            .families(&self.checks)
            .into_iter()
            .chain(self.process.collect(snapshot))
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// The series of the [`PerCheck`] families, gathered check by check.
struct CheckSeries {
    runs: Vec<proto::Metric>,
    duration: Vec<proto::Metric>,
    healthy: Vec<proto::Metric>,
    failures: Vec<proto::Metric>,
    consecutive: Vec<proto::Metric>,
    last_success: Vec<proto::Metric>,
    tls_expiry: Vec<proto::Metric>,
    http_phases: Vec<proto::Metric>,
    transitions: Vec<proto::Metric>,
}

impl CheckSeries {
    /// Room for the series `n` checks always have.
    fn with_capacity(n: usize) -> CheckSeries {
        CheckSeries {
            runs: Vec::with_capacity(3 * n),
            duration: Vec::with_capacity(n),
            healthy: Vec::with_capacity(2 * n),
            failures: Vec::new(),
            consecutive: Vec::with_capacity(n),
            last_success: Vec::with_capacity(n),
            tls_expiry: Vec::new(),
            http_phases: Vec::new(),
            transitions: Vec::with_capacity(2 * n),
        }
    }

    /// Adds the series of the check `status`, one of `snapshot`'s.
    fn push(&mut self, snapshot: &Snapshot, status: &CheckStatus) {
        let s = &*status.counters;
        let name = s.name.as_str();
        for (result, count) in RESULTS.iter().zip(&s.runs) {
            self.runs.push(counter(
                &[("check", name), ("kind", s.kind), ("result", result)],
                count.load(Relaxed),
            ));
        }
        self.duration.push(duration(s));
        for kind in ProbeKind::ALL.into_iter().filter(|k| status.probes.contains(*k)) {
            self.healthy.push(gauge(
                &[("check", name), ("probe", kind.as_str())],
                bit(snapshot.check_passes(status, kind)),
            ));
        }
        // A reason's series appears with its first failure: most of
        // them stay zero for a check's life (docs/metrics.md).
        for (reason, count) in Reason::ALL.iter().zip(&s.failures) {
            let count = count.load(Relaxed);
            if count > 0 {
                self.failures
                    .push(counter(&[("check", name), ("reason", reason.as_str())], count));
            }
        }
        self.consecutive
            .push(gauge(&[("check", name)], f64::from(status.consecutive_failures)));
        if let Some(at) = status.last_success {
            self.last_success
                .push(gauge(&[("check", name)], unix_seconds(at)));
        }
        if let Some(at) = status.tls_expiry {
            self.tls_expiry.push(gauge(&[("check", name)], unix_seconds(at)));
        }
        if let Some(phases) = status.last.as_ref().and_then(|l| l.outcome.phases) {
            for (phase, took) in Phases::NAMES.iter().zip(phases.durations()) {
                self.http_phases
                    .push(gauge(&[("check", name), ("phase", phase)], took.as_secs_f64()));
            }
        }
        for (to, count) in [("failed", &s.to_failed), ("healthy", &s.to_healthy)] {
            self.transitions
                .push(counter(&[("check", name), ("to", to)], count.load(Relaxed)));
        }
    }

    fn families(self, c: &PerCheck) -> [MetricFamily; 9] {
        [
            family(&c.runs, MetricType::COUNTER, self.runs),
            family(&c.duration, MetricType::HISTOGRAM, self.duration),
            family(&c.healthy, MetricType::GAUGE, self.healthy),
            family(&c.failures, MetricType::COUNTER, self.failures),
            family(&c.consecutive, MetricType::GAUGE, self.consecutive),
            family(&c.last_success, MetricType::GAUGE, self.last_success),
            family(&c.tls_expiry, MetricType::GAUGE, self.tls_expiry),
            family(&c.http_phases, MetricType::GAUGE, self.http_phases),
            family(&c.transitions, MetricType::COUNTER, self.transitions),
        ]
    }
}

/// The `healthproxy_check_duration_seconds` series of one check: its
/// buckets made cumulative, the overflow bucket counted in the total.
fn duration(s: &CheckCounters) -> proto::Metric {
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let buckets = DURATION_BUCKETS
        .iter()
        .zip(&s.buckets)
        .map(|(bound, count)| {
            cumulative += count.load(Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    h.set_bucket(buckets);
    h.set_sample_count(cumulative + s.buckets[DURATION_BUCKETS.len()].load(Relaxed));
    h.set_sample_sum(s.sum_nanos.load(Relaxed) as f64 / 1e9);
    let mut m = metric(&[("check", s.name.as_str()), ("kind", s.kind)]);
    m.set_histogram(h);
    m
}

impl Process {
    /// The process's families, read from `snapshot`.
    fn collect(&self, snapshot: &Snapshot) -> [MetricFamily; 9] {
        let probe_ok = ProbeKind::ALL
            .map(|kind| gauge(&[("probe", kind.as_str())], bit(snapshot.passes(kind))))
            .into();
        let report = snapshot.report();
        let drain_seconds = report.map_or_else(Vec::new, |r| {
            [
                ("connections", r.connection_wait),
                ("min_wait", r.min_wait),
                ("total", r.total()),
            ]
            .map(|(phase, d)| gauge(&[("phase", phase)], d.as_secs_f64()))
            .into()
        });
        let timed_out = report.is_some_and(|r| r.timed_out);
        let new_connections = report.map_or(0, |r| r.new_connections);
        let last_new_connection = report
            .and_then(|r| r.last_new_connection)
            .map_or(0.0, |d| d.as_secs_f64());
        let gauge_of = |desc: &Desc, value: f64| family(desc, MetricType::GAUGE, vec![gauge(&[], value)]);
        [
            family(&self.probe_ok, MetricType::GAUGE, probe_ok),
            gauge_of(&self.draining, bit(snapshot.draining())),
            family(&self.drain_seconds, MetricType::GAUGE, drain_seconds),
            gauge_of(&self.drain_timed_out, bit(timed_out)),
            gauge_of(&self.drain_new_connections, new_connections as f64),
            gauge_of(&self.drain_last_new_connection, last_new_connection),
            family(
                &self.app_restarts,
                MetricType::COUNTER,
                vec![counter(&[], snapshot.app_restarts)],
            ),
            gauge_of(&self.reload_successful, bit(snapshot.reload.successful)),
            gauge_of(
                &self.reload_success_time,
                unix_seconds(snapshot.reload.last_success),
            ),
        ]
    }
}

/// A flag as a gauge's value.
fn bit(flag: bool) -> f64 {
    if flag { 1.0 } else { 0.0 }
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
