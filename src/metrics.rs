//! Prometheus metrics: an owned registry, families with fixed label sets,
//! and per-check handles resolved once at startup so that recording a run
//! is a few atomic adds. Every label value comes from the config or from a
//! fixed set (`result`, `probe`, `reason`, `to`, `route`, `code`), so label
//! sets stay bounded whatever the traffic. See docs/metrics.md.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    checks: Vec<CheckHandles>,
    probe_ok: IntGaugeVec,
    draining: IntGauge,
    drain_seconds: GaugeVec,
    drain_timed_out: IntGauge,
    requests: IntCounterVec,
}

/// One check's series, resolved at startup.
struct CheckHandles {
    runs: [IntCounter; 3],
    duration: Histogram,
    healthy: Vec<(ProbeKind, IntGauge)>,
    failures: Vec<IntCounter>,
    consecutive_failures: IntGauge,
    to_healthy: IntCounter,
    to_failed: IntCounter,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// A registry with every family, and handles for `checks`.
    pub fn new(checks: &[CheckConfig]) -> Metrics {
        let r = Registry::new();
        let runs = register(
            &r,
            IntCounterVec::new(
                Opts::new("healthproxy_check_runs_total", "Check runs, by result."),
                &["check", "kind", "result"],
            )
            .unwrap(),
        );
        let duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("healthproxy_check_duration_seconds", "Duration of check runs.")
                    .buckets(DURATION_BUCKETS.to_vec()),
                &["check", "kind"],
            )
            .unwrap(),
        );
        let healthy = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "healthproxy_check_healthy",
                    "Whether the check passes the probe kind, after thresholds (1) or not (0).",
                ),
                &["check", "probe"],
            )
            .unwrap(),
        );
        let failures = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "healthproxy_check_failures_total",
                    "Failed check runs, by reason.",
                ),
                &["check", "reason"],
            )
            .unwrap(),
        );
        let consecutive = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "healthproxy_check_consecutive_failures",
                    "Failed runs in a row, ending with the last counted run.",
                ),
                &["check"],
            )
            .unwrap(),
        );
        let transitions = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "healthproxy_check_transitions_total",
                    "Changes of a check's state after thresholds, by the state changed to.",
                ),
                &["check", "to"],
            )
            .unwrap(),
        );
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

        let checks = checks
            .iter()
            .map(|c| {
                let (name, kind) = (c.name.as_str(), c.kind.as_str());
                let handles = CheckHandles {
                    runs: ["success", "failure", "unknown"].map(|r| runs.with_label_values(&[name, kind, r])),
                    duration: duration.with_label_values(&[name, kind]),
                    healthy: ProbeKind::ALL
                        .into_iter()
                        .filter(|k| c.probes.contains(*k))
                        .map(|k| (k, healthy.with_label_values(&[name, k.as_str()])))
                        .collect(),
                    failures: Reason::ALL
                        .iter()
                        .map(|r| failures.with_label_values(&[name, r.as_str()]))
                        .collect(),
                    consecutive_failures: consecutive.with_label_values(&[name]),
                    to_healthy: transitions.with_label_values(&[name, "healthy"]),
                    to_failed: transitions.with_label_values(&[name, "failed"]),
                };
                // Before the first run the gauges show the initial state.
                let initial = CheckStatus::new(c);
                for (kind, gauge) in &handles.healthy {
                    gauge.set(i64::from(initial.passes(*kind)));
                }
                handles
            })
            .collect();
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
        let h = &self.inner.checks[index];
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
        h.runs[result].inc();
        h.duration.observe(duration.as_secs_f64());
        if outcome.verdict == Verdict::Failure {
            let reason = Reason::of(status.kind, &outcome.message);
            let at = Reason::ALL
                .iter()
                .position(|r| *r == reason)
                .expect("every reason is listed");
            h.failures[at].inc();
        }
        self.record_state(index, status);
    }

    /// Sets the gauges of check `index` to its state after thresholds.
    pub fn record_state(&self, index: usize, status: &CheckStatus) {
        let h = &self.inner.checks[index];
        h.consecutive_failures.set(i64::from(status.consecutive_failures));
        for (kind, gauge) in &h.healthy {
            gauge.set(i64::from(status.passes(*kind)));
        }
    }

    /// Counts a state transition of check `index`.
    pub fn record_transition(&self, index: usize, to: Health) {
        let h = &self.inner.checks[index];
        match to {
            Health::Healthy => h.to_healthy.inc(),
            Health::Failed => h.to_failed.inc(),
            Health::Initial => {}
        }
    }

    /// Counts a served request. `route` is the router's pattern, never the
    /// request's path. Looks the series up by its labels: for a route
    /// counted on every request, use [`Metrics::route_requests`].
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

    /// The route pattern counted.
    pub fn route(&self) -> &str {
        &self.route
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
