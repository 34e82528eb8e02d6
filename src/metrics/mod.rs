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

mod collector;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use self::collector::{CheckCollector, CheckFamilies, CheckSeries, DURATION_BUCKETS, desc};
use crate::check::Verdict;
use crate::config::{CheckConfig, ProbeKind};
use crate::lifecycle::Report;
use crate::state::{CheckStatus, Health, LastRun};

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
        if let Some(reason) = outcome.reason {
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
    use crate::check::Reason;

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
        let failed = status(&configs[0], Outcome::failure(Reason::Refused, refused), 20_000);
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
}
