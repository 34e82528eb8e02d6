//! Prometheus metrics: an owned registry, families with fixed label sets,
//! and per-check series held as plain atomics so that recording a run is a
//! few atomic adds. Every label value comes from the config or from a
//! fixed set (`result`, `probe`, `reason`, `to`, `route`, `code`), so label
//! sets stay bounded whatever the traffic. See docs/metrics.md.
//!
//! The check families are not `prometheus` metric vectors: a vector's child
//! carries its own copy of the family's description and label pairs, about
//! 0.7 KiB per series and 12.7 KiB per check (BENCHMARKS.md, "Idle RSS").
//! Here a check's series are ~0.3 KiB of counters, turned into metric
//! families only while a scrape is encoded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::check::Verdict;
use crate::config::{CheckConfig, ProbeKind};
use crate::lifecycle::Report;
use crate::state::{CheckStatus, Health, LastRun};

/// Buckets from half a millisecond (an in-process TCP connect) to ten
/// seconds (a slow exec).
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why a run failed, for `healthproxy_check_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The run did not finish within its timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake or certificate failed.
    Tls,
    /// An HTTP status outside 200–399.
    Status,
    /// A command exited non-zero or was killed.
    ExitCode,
    /// A gRPC service that is not `SERVING`.
    NotServing,
    /// A heartbeat file too old or missing.
    Stale,
    /// A response body without the expected text.
    Output,
    /// Anything else.
    Other,
}

impl Reason {
    /// Every reason, in declaration order: `reason as usize` indexes it.
    const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::Refused,
        Reason::Dns,
        Reason::Tls,
        Reason::Status,
        Reason::ExitCode,
        Reason::NotServing,
        Reason::Stale,
        Reason::Output,
        Reason::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Dns => "dns",
            Reason::Tls => "tls",
            Reason::Status => "status",
            Reason::ExitCode => "exit_code",
            Reason::NotServing => "not_serving",
            Reason::Stale => "stale",
            Reason::Output => "output",
            Reason::Other => "other",
        }
    }

    /// Classifies a failed run of a `kind` check from its message. The
    /// messages are the checks' own (the kubelet's words), each pinned by
    /// the checks' tests; an exec check's message is the command's output,
    /// so any exec failure that is not a timeout is an exit code.
    pub fn of(kind: &str, message: &str) -> Reason {
        let has = |s: &str| message.contains(s);
        if has(": lookup ") {
            Reason::Dns
        } else if has("timed out")
            || has("deadline exceeded")
            || has("i/o timeout")
            || message.starts_with("timeout:")
        {
            Reason::Timeout
        } else if kind == "exec" {
            Reason::ExitCode
        } else if kind == "file" {
            Reason::Stale
        } else if has("statuscode") {
            Reason::Status
        } else if has("service unhealthy") {
            Reason::NotServing
        } else if has("does not contain") {
            Reason::Output
        } else if has("connection refused") {
            Reason::Refused
        } else if has("failed to lookup") || has("not known") || has("name resolution") {
            Reason::Dns
        } else if has("tls") || has("certificate") {
            Reason::Tls
        } else {
            Reason::Other
        }
    }
}

/// The process's metrics: a cheap handle to one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    checks: Arc<CheckFamilies>,
    probe_ok: IntGaugeVec,
    draining: IntGauge,
    drain_seconds: GaugeVec,
    drain_timed_out: IntGauge,
    requests: IntCounterVec,
}

/// The `result` label of `healthproxy_check_runs_total`, by index.
const RESULTS: [&str; 3] = ["success", "failure", "unknown"];

/// One check's series.
struct CheckSeries {
    name: String,
    kind: &'static str,
    probes: crate::config::ProbeSet,
    /// Indexed like [`RESULTS`].
    runs: [AtomicU64; 3],
    /// Runs per bucket, not cumulative: `buckets[i]` counts durations in
    /// (`DURATION_BUCKETS[i-1]`, `DURATION_BUCKETS[i]`], the last one those
    /// above every bound. The histogram's count is their sum, so that it
    /// always equals the `+Inf` bucket.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of the durations, in nanoseconds.
    sum_nanos: AtomicU64,
    /// Indexed by `ProbeKind as usize` (the order of `ProbeKind::ALL`).
    healthy: [AtomicBool; 3],
    /// Indexed by `Reason as usize`.
    failures: [AtomicU64; Reason::ALL.len()],
    consecutive_failures: AtomicU32,
    to_healthy: AtomicU64,
    to_failed: AtomicU64,
}

impl CheckSeries {
    fn new(c: &CheckConfig) -> Self {
        let series = CheckSeries {
            name: c.name.clone(),
            kind: c.kind.as_str(),
            probes: c.probes,
            runs: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            healthy: Default::default(),
            failures: Default::default(),
            consecutive_failures: AtomicU32::new(0),
            to_healthy: AtomicU64::new(0),
            to_failed: AtomicU64::new(0),
        };
        // Before the first run the gauges show the initial state.
        series.set_state(&CheckStatus::new(c));
        series
    }

    fn set_state(&self, status: &CheckStatus) {
        self.consecutive_failures
            .store(status.consecutive_failures, Relaxed);
        for kind in ProbeKind::ALL {
            self.healthy[kind as usize].store(status.passes(kind), Relaxed);
        }
    }
}

/// The per-check families, collected from the atomics at scrape time.
/// Reading them takes no lock a check run could hold.
struct CheckFamilies {
    runs: Desc,
    duration: Desc,
    healthy: Desc,
    failures: Desc,
    consecutive: Desc,
    transitions: Desc,
    checks: Vec<CheckSeries>,
}

/// The per-check families as a registry collector.
struct CheckCollector(Arc<CheckFamilies>);

fn desc(name: &str, help: &str, labels: &[&str]) -> Desc {
    Desc::new(
        name.into(),
        help.into(),
        labels.iter().map(|l| l.to_string()).collect(),
        HashMap::new(),
    )
    .expect("valid metric and label names")
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

fn gauge(labels: &[(&str, &str)], value: i64) -> proto::Metric {
    let mut m = metric(labels);
    let mut g = proto::Gauge::default();
    g.set_value(value as f64);
    m.set_gauge(g);
    m
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for CheckCollector {
    fn desc(&self) -> Vec<&Desc> {
        let f = &self.0;
        vec![
            &f.runs,
            &f.duration,
            &f.healthy,
            &f.failures,
            &f.consecutive,
            &f.transitions,
        ]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = &self.0;
        let n = f.checks.len();
        let (mut runs, mut duration, mut healthy) = (
            Vec::with_capacity(3 * n),
            Vec::with_capacity(n),
            Vec::with_capacity(2 * n),
        );
        let (mut failures, mut consecutive, mut transitions) =
            (Vec::new(), Vec::with_capacity(n), Vec::with_capacity(2 * n));
        for s in &f.checks {
            let name = s.name.as_str();
            for (result, count) in RESULTS.iter().zip(&s.runs) {
                runs.push(counter(
                    &[("check", name), ("kind", s.kind), ("result", result)],
                    count.load(Relaxed),
                ));
            }

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
            let mut m = metric(&[("check", name), ("kind", s.kind)]);
            m.set_histogram(h);
            duration.push(m);

            for kind in ProbeKind::ALL.into_iter().filter(|k| s.probes.contains(*k)) {
                healthy.push(gauge(
                    &[("check", name), ("probe", kind.as_str())],
                    i64::from(s.healthy[kind as usize].load(Relaxed)),
                ));
            }
            // A reason's series appears with its first failure: most of
            // them stay zero for a check's life (docs/metrics.md).
            for (reason, count) in Reason::ALL.iter().zip(&s.failures) {
                let count = count.load(Relaxed);
                if count > 0 {
                    failures.push(counter(&[("check", name), ("reason", reason.as_str())], count));
                }
            }
            consecutive.push(gauge(
                &[("check", name)],
                i64::from(s.consecutive_failures.load(Relaxed)),
            ));
            transitions.push(counter(
                &[("check", name), ("to", "failed")],
                s.to_failed.load(Relaxed),
            ));
            transitions.push(counter(
                &[("check", name), ("to", "healthy")],
                s.to_healthy.load(Relaxed),
            ));
        }
        vec![
            family(&f.runs, MetricType::COUNTER, runs),
            family(&f.duration, MetricType::HISTOGRAM, duration),
            family(&f.healthy, MetricType::GAUGE, healthy),
            family(&f.failures, MetricType::COUNTER, failures),
            family(&f.consecutive, MetricType::GAUGE, consecutive),
            family(&f.transitions, MetricType::COUNTER, transitions),
        ]
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// A registry with every family, and series for `checks`.
    pub fn new(checks: &[CheckConfig]) -> Metrics {
        let r = Registry::new();
        let checks = Arc::new(CheckFamilies {
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
            transitions: desc(
                "healthproxy_check_transitions_total",
                "Changes of a check's state after thresholds, by the state changed to.",
                &["check", "to"],
            ),
            checks: checks.iter().map(CheckSeries::new).collect(),
        });
        r.register(Box::new(CheckCollector(Arc::clone(&checks))))
            .expect("metric names are unique");
        let probe_ok = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "healthproxy_probe_ok",
                    "Whether the probe endpoint answers 200 (1) or 503 (0), by probe kind.",
                ),
                &["probe"],
            )
            .unwrap(),
        );
        let draining = register(
            &r,
            IntGauge::new(
                "healthproxy_draining",
                "Whether a drain has begun (1) or not (0).",
            )
            .unwrap(),
        );
        let drain_seconds = register(
            &r,
            GaugeVec::new(
                Opts::new(
                    "healthproxy_drain_duration_seconds",
                    "Duration of the last finished drain, by phase (min_wait, connections, total).",
                ),
                &["phase"],
            )
            .unwrap(),
        );
        let drain_timed_out = register(
            &r,
            IntGauge::new(
                "healthproxy_drain_timed_out",
                "Whether the last finished drain ended at drain.max with connections open (1) or not (0).",
            )
            .unwrap(),
        );
        let requests = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "healthproxy_http_requests_total",
                    "HTTP requests served, by route and status code.",
                ),
                &["route", "code"],
            )
            .unwrap(),
        );
        let build = register(
            &r,
            IntGaugeVec::new(
                Opts::new("healthproxy_build_info", "Always 1; the version is a label."),
                &["version"],
            )
            .unwrap(),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric names are unique");

        for kind in ProbeKind::ALL {
            probe_ok.with_label_values(&[kind.as_str()]);
        }
        drain_timed_out.set(0);
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                checks,
                probe_ok,
                draining,
                drain_seconds,
                drain_timed_out,
                requests,
            }),
        }
    }

    /// Records the last run of check `index` and the state it led to.
    pub fn record_run(&self, index: usize, status: &CheckStatus) {
        let s = &self.inner.checks.checks[index];
        let Some(LastRun {
            outcome, duration, ..
        }) = &status.last
        else {
            return;
        };
        let result = match outcome.verdict {
            Verdict::Success | Verdict::Warning => 0,
            Verdict::Failure => 1,
            Verdict::Unknown => 2,
        };
        s.runs[result].fetch_add(1, Relaxed);
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        s.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        s.sum_nanos.fetch_add(nanos, Relaxed);
        if outcome.verdict == Verdict::Failure {
            let reason = Reason::of(status.kind, &outcome.message);
            s.failures[reason as usize].fetch_add(1, Relaxed);
        }
        s.set_state(status);
    }

    /// Sets the gauges of check `index` to its state after thresholds.
    pub fn record_state(&self, index: usize, status: &CheckStatus) {
        self.inner.checks.checks[index].set_state(status);
    }

    /// Counts a state transition of check `index`.
    pub fn record_transition(&self, index: usize, to: Health) {
        let s = &self.inner.checks.checks[index];
        match to {
            Health::Healthy => s.to_healthy.fetch_add(1, Relaxed),
            Health::Failed => s.to_failed.fetch_add(1, Relaxed),
            Health::Initial => 0,
        };
    }

    /// Counts a served request. `route` is the router's pattern, never the
    /// request's path. Looks the series up by its labels: for the routes
    /// the kubelet probes many times a second, use
    /// [`Metrics::route_requests`].
    pub fn record_request(&self, route: &str, code: axum::http::StatusCode) {
        self.inner
            .requests
            .with_label_values(&[route, code.as_str()])
            .inc();
    }

    /// The request counters of one `route` pattern.
    pub fn route_requests(&self, route: &str) -> RouteRequests {
        RouteRequests {
            family: self.inner.requests.clone(),
            route: route.into(),
            by_code: Default::default(),
        }
    }

    /// The text exposition, after setting the gauges read at scrape time:
    /// whether each probe passes, the drain flag and the last drain.
    pub fn render(&self, probe_ok: [(ProbeKind, bool); 3], draining: bool, drain: Option<Report>) -> String {
        let i = &self.inner;
        for (kind, ok) in probe_ok {
            i.probe_ok.with_label_values(&[kind.as_str()]).set(i64::from(ok));
        }
        i.draining.set(i64::from(draining));
        if let Some(report) = drain {
            for (phase, d) in [
                ("min_wait", report.min_wait),
                ("connections", report.connection_wait),
                ("total", report.total()),
            ] {
                i.drain_seconds.with_label_values(&[phase]).set(d.as_secs_f64());
            }
            i.drain_timed_out.set(i64::from(report.timed_out));
        }
        let mut out = Vec::with_capacity(8 * 1024);
        let families = i.registry.gather();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The status codes the endpoints answer, whose series a [`RouteRequests`]
/// keeps once resolved. Hyper answers 400 and 431 itself, uncounted.
const CODES: [u16; 8] = [200, 202, 401, 404, 405, 408, 414, 503];

/// `healthproxy_http_requests_total` of one route: each code's series is
/// looked up on the first request answered with it and kept, so that
/// counting a request is an atomic add rather than hashing its labels and
/// taking the family's lock. Series appear on their first request, as they
/// did when every request looked its series up.
pub struct RouteRequests {
    family: IntCounterVec,
    route: Box<str>,
    by_code: [OnceLock<IntCounter>; CODES.len()],
}

impl RouteRequests {
    /// Counts a request to this route answered with `code`.
    pub fn record(&self, code: axum::http::StatusCode) {
        let labels = [&*self.route, code.as_str()];
        match CODES.iter().position(|c| *c == code.as_u16()) {
            Some(at) => self.by_code[at]
                .get_or_init(|| self.family.with_label_values(&labels))
                .inc(),
            None => self.family.with_label_values(&labels).inc(),
        }
    }
}

impl std::fmt::Debug for RouteRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouteRequests").field(&self.route).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `healthproxy_http_requests_total` lines of a scrape.
    fn request_series(metrics: &Metrics) -> Vec<String> {
        metrics
            .render(ProbeKind::ALL.map(|k| (k, true)), false, None)
            .lines()
            .filter(|l| l.starts_with("healthproxy_http_requests_total"))
            .map(String::from)
            .collect()
    }

    #[test]
    fn route_requests_count_the_series_record_request_counts() {
        use axum::http::StatusCode;
        let metrics = Metrics::new(&[]);
        let readyz = metrics.route_requests("/readyz");
        assert_eq!(
            request_series(&metrics),
            Vec::<String>::new(),
            "no series before a request"
        );
        readyz.record(StatusCode::OK);
        readyz.record(StatusCode::OK);
        readyz.record(StatusCode::SERVICE_UNAVAILABLE);
        readyz.record(StatusCode::IM_A_TEAPOT);
        metrics.record_request("/readyz", StatusCode::OK);
        assert_eq!(
            request_series(&metrics),
            [
                "healthproxy_http_requests_total{code=\"200\",route=\"/readyz\"} 3",
                "healthproxy_http_requests_total{code=\"418\",route=\"/readyz\"} 1",
                "healthproxy_http_requests_total{code=\"503\",route=\"/readyz\"} 1",
            ]
        );
    }

    #[test]
    fn reasons_index_their_own_list() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        for (i, kind) in ProbeKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }

    fn status(config: &CheckConfig, outcome: crate::check::Outcome, ms: u64) -> CheckStatus {
        let mut status = CheckStatus::new(config);
        status.observe(
            outcome,
            std::time::Duration::from_millis(ms),
            std::time::SystemTime::now(),
        );
        status
    }

    #[test]
    fn the_exposition_of_a_check_counts_its_runs_and_shows_a_reason_from_its_first_failure() {
        use crate::check::Outcome;
        let configs = crate::config::Config::from_toml_str(
            "[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\ntcp = { port = 1 }\n",
            "t",
            &|_: &str| None,
        )
        .unwrap()
        .checks;
        let metrics = Metrics::new(&configs);
        let render = || metrics.render([(ProbeKind::Readiness, false); 3], false, None);
        let text = render();
        assert!(
            text.contains("healthproxy_check_runs_total{check=\"db\",kind=\"tcp\",result=\"unknown\"} 0\n")
        );
        assert!(text.contains("healthproxy_check_healthy{check=\"db\",probe=\"readiness\"} 0\n"));
        assert!(!text.contains("healthproxy_check_failures_total"), "{text}");

        metrics.record_run(0, &status(&configs[0], Outcome::success("ok"), 3));
        let refused = "dial tcp 127.0.0.1:1: connect: connection refused";
        let failed = status(&configs[0], Outcome::failure(refused), 20_000);
        metrics.record_run(0, &failed);
        metrics.record_run(0, &failed);
        metrics.record_transition(0, Health::Failed);
        let text = render();
        for line in [
            "healthproxy_check_runs_total{check=\"db\",kind=\"tcp\",result=\"success\"} 1",
            "healthproxy_check_runs_total{check=\"db\",kind=\"tcp\",result=\"failure\"} 2",
            "healthproxy_check_failures_total{check=\"db\",reason=\"refused\"} 2",
            "healthproxy_check_consecutive_failures{check=\"db\"} 1",
            "healthproxy_check_transitions_total{check=\"db\",to=\"failed\"} 1",
            "healthproxy_check_transitions_total{check=\"db\",to=\"healthy\"} 0",
            "healthproxy_check_duration_seconds_bucket{check=\"db\",kind=\"tcp\",le=\"0.0025\"} 0",
            "healthproxy_check_duration_seconds_bucket{check=\"db\",kind=\"tcp\",le=\"0.005\"} 1",
            "healthproxy_check_duration_seconds_bucket{check=\"db\",kind=\"tcp\",le=\"10\"} 1",
            "healthproxy_check_duration_seconds_bucket{check=\"db\",kind=\"tcp\",le=\"+Inf\"} 3",
            "healthproxy_check_duration_seconds_sum{check=\"db\",kind=\"tcp\"} 40.003",
            "healthproxy_check_duration_seconds_count{check=\"db\",kind=\"tcp\"} 3",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
        assert_eq!(
            text.matches("healthproxy_check_failures_total{").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn failure_reasons_from_the_checks_messages() {
        let cases = [
            ("http", "HTTP probe failed with statuscode: 500", Reason::Status),
            (
                "http",
                "Get \"http://127.0.0.1:1/\": dial tcp 127.0.0.1:1: connect: connection refused",
                Reason::Refused,
            ),
            (
                "http",
                "Get \"http://x/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                Reason::Timeout,
            ),
            (
                "http",
                "HTTP probe failed: response body does not contain \"ok\"",
                Reason::Output,
            ),
            (
                "http",
                "Get \"https://127.0.0.1:1/\": tls: invalid peer certificate: UnknownIssuer",
                Reason::Tls,
            ),
            (
                "http",
                "Get \"http://127.0.0.1/\": stopped after 10 redirects",
                Reason::Other,
            ),
            ("tcp", "dial tcp 10.0.0.1:5432: i/o timeout", Reason::Timeout),
            (
                "tcp",
                "dial tcp nope.invalid:1: connect: failed to lookup address information: Name or service not known",
                Reason::Dns,
            ),
            (
                "grpc",
                "service unhealthy (responded with \"NOT_SERVING\")",
                Reason::NotServing,
            ),
            (
                "grpc",
                "timeout: health rpc did not complete within 1s",
                Reason::Timeout,
            ),
            ("exec", "command \"sleep 5\" timed out", Reason::Timeout),
            ("exec", "database is not ready", Reason::ExitCode),
            (
                "file",
                "heartbeat file /tmp/hb is 40s old, older than max_age 30s",
                Reason::Stale,
            ),
            (
                "tcp",
                "dial tcp no-such-host.invalid:80: lookup no-such-host.invalid: failed to lookup address information",
                Reason::Dns,
            ),
        ];
        for (kind, message, reason) in cases {
            assert_eq!(Reason::of(kind, message), reason, "{kind}: {message}");
        }
    }
}
