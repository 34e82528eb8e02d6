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

use std::sync::{Arc, OnceLock};

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use self::collector::CheckFamilies;
use crate::lifecycle::Refusal;
use crate::state::State;

/// The process's metrics: a cheap handle to one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    checks: CheckFamilies,
    requests: IntCounterVec,
    refused: IntCounterVec,
}

/// The routes that start or end things, guarded by the token or loopback.
pub(crate) const LIFECYCLE_ROUTES: [&str; 3] = ["/prestop", "/drain", "/exit"];

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

/// `healthproxy_lifecycle_refused_total`, with every series from the
/// start, so that an alert sees the first refusal as an increase.
fn register_refused(registry: &Registry) -> IntCounterVec {
    let refused = register(
        registry,
        IntCounterVec::new(
            Opts::new(
                "healthproxy_lifecycle_refused_total",
                "Lifecycle requests (/prestop, /drain, /exit) refused, by route and reason (token, not_loopback).",
            ),
            &["route", "reason"],
        )
        .unwrap(),
    );
    for route in LIFECYCLE_ROUTES {
        for reason in [Refusal::Token, Refusal::NotLoopback] {
            refused.with_label_values(&[route, reason.as_str()]);
        }
    }
    refused
}

/// `healthproxy_build_info`: always 1, the build's facts as labels.
fn register_build_info(registry: &Registry) {
    let build = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "healthproxy_build_info",
                "Always 1; the version, git revision and rustc version are labels.",
            ),
            &["version", "revision", "rustversion"],
        )
        .unwrap(),
    );
    build
        .with_label_values(&[
            crate::version::VERSION,
            crate::version::REVISION,
            crate::version::RUSTC_VERSION,
        ])
        .set(1);
}

impl Metrics {
    /// A registry with every family; the checks' series come from the
    /// snapshot at each scrape.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "healthproxy_http_requests_total",
                    "HTTP requests served, by route and status code.",
                ),
                &["route", "code"],
            )
            .unwrap(),
        );
        let refused = register_refused(&registry);
        register_build_info(&registry);
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        Metrics {
            inner: Arc::new(Inner {
                registry,
                checks: CheckFamilies::new(),
                requests,
                refused,
            }),
        }
    }

    /// The request counters of one `route` pattern.
    /// Counts a refused lifecycle request to `route`, one of
    /// [`LIFECYCLE_ROUTES`].
    pub(crate) fn record_refused(&self, route: &'static str, reason: Refusal) {
        self.inner
            .refused
            .with_label_values(&[route, reason.as_str()])
            .inc();
    }

    pub(crate) fn route_requests(&self, route: &str) -> RouteRequests {
        RouteRequests {
            family: self.inner.requests.clone(),
            route: route.into(),
            by_code: Default::default(),
        }
    }

    /// The text exposition: the registry's families, then the checks'
    /// counters and every gauge the snapshot owns (check health,
    /// consecutive failures, probe verdicts, the drain), read from `state`
    /// now.
    pub(crate) fn render(&self, state: &State) -> String {
        let i = &self.inner;
        let mut families = i.registry.gather();
        // A copy: the snapshot's lock is held only while it is copied, so
        // that the engine never waits for the families to be built.
        let snapshot = state.borrow().clone();
        families.extend(i.checks.collect(&snapshot));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(8 * 1024);
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
pub(crate) struct RouteRequests {
    family: IntCounterVec,
    route: Box<str>,
    by_code: [OnceLock<IntCounter>; CODES.len()],
}

impl RouteRequests {
    /// Counts a request to this route answered with `code`.
    pub(crate) fn record(&self, code: axum::http::StatusCode) {
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
    use std::time::Duration;

    use crate::check::{Outcome, Reason};
    use crate::config::ProbeKind;
    use crate::state::{Phase, Report};

    /// The `healthproxy_http_requests_total` lines of a scrape.
    fn request_series(metrics: &Metrics) -> Vec<String> {
        metrics
            .render(&State::new(&[]))
            .lines()
            .filter(|l| l.starts_with("healthproxy_http_requests_total"))
            .map(String::from)
            .collect()
    }

    #[test]
    fn route_requests_of_one_route_share_its_series() {
        use axum::http::StatusCode;
        let metrics = Metrics::new();
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
        metrics.route_requests("/readyz").record(StatusCode::OK);
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

    /// Records a run as the engine does: in the snapshot, then counted.
    fn run(state: &State, outcome: Outcome, ms: u64) {
        let (verdict, reason) = (outcome.verdict, outcome.reason);
        let duration = Duration::from_millis(ms);
        let recorded = state
            .record(&crate::state::Place::new(0, 0), 0, outcome, duration)
            .unwrap();
        let counters = state.borrow().checks[0].counters.clone();
        counters.record_run(verdict, reason, duration);
        if let Some(to) = recorded.transition {
            counters.record_transition(to);
        }
    }

    #[test]
    fn the_exposition_of_a_check_counts_its_runs_and_shows_a_reason_from_its_first_failure() {
        let configs = crate::config::Config::from_toml_str(
            "[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\ntcp = { port = 1 }\nfailure_threshold = 2\n",
            "t",
            &|_: &str| None,
        )
        .unwrap()
        .checks;
        let metrics = Metrics::new();
        let state = State::new(&configs);
        let render = || metrics.render(&state);
        let text = render();
        assert!(
            text.contains("healthproxy_check_runs_total{check=\"db\",kind=\"tcp\",result=\"unknown\"} 0\n")
        );
        assert!(text.contains("healthproxy_check_healthy{check=\"db\",probe=\"readiness\"} 0\n"));
        assert!(!text.contains("healthproxy_check_failures_total"), "{text}");

        run(&state, Outcome::success("ok"), 3);
        assert!(render().contains("healthproxy_check_healthy{check=\"db\",probe=\"readiness\"} 1\n"));
        let refused = "dial tcp 127.0.0.1:1: connect: connection refused";
        run(&state, Outcome::failure(Reason::Refused, refused), 20_000);
        run(&state, Outcome::failure(Reason::Refused, refused), 20_000);
        let text = render();
        for line in [
            "healthproxy_check_runs_total{check=\"db\",kind=\"tcp\",result=\"success\"} 1",
            "healthproxy_check_runs_total{check=\"db\",kind=\"tcp\",result=\"failure\"} 2",
            "healthproxy_check_failures_total{check=\"db\",reason=\"refused\"} 2",
            "healthproxy_check_consecutive_failures{check=\"db\"} 2",
            "healthproxy_check_healthy{check=\"db\",probe=\"readiness\"} 0",
            "healthproxy_check_transitions_total{check=\"db\",to=\"failed\"} 1",
            "healthproxy_check_transitions_total{check=\"db\",to=\"healthy\"} 1",
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
    fn the_probe_and_drain_gauges_are_read_from_the_snapshot_at_scrape_time() {
        let metrics = Metrics::new();
        let state = State::new(&[]);
        let text = metrics.render(&state);
        for line in [
            "healthproxy_probe_ok{probe=\"readiness\"} 1",
            "healthproxy_draining 0",
            "healthproxy_drain_timed_out 0",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
        assert!(!text.contains("healthproxy_drain_duration_seconds"), "{text}");

        state.step_drain(|p| {
            *p = Phase::Draining;
            true
        });
        let text = metrics.render(&state);
        assert!(
            text.contains("healthproxy_probe_ok{probe=\"readiness\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("healthproxy_probe_ok{probe=\"liveness\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("healthproxy_draining 1\n"), "{text}");

        let report = Report {
            trigger: "SIGTERM",
            min_wait: Duration::from_secs(5),
            connection_wait: Duration::from_millis(1500),
            connections_left: 2,
            timed_out: true,
            new_connections: 7,
            last_new_connection: Some(Duration::from_millis(2500)),
            last_traffic: Some(Duration::from_millis(2500)),
            in_pod_connections: 0,
        };
        state.step_drain(|p| {
            *p = Phase::Serving(Some(report));
            true
        });
        let text = metrics.render(&state);
        for line in [
            "healthproxy_draining 0",
            "healthproxy_drain_timed_out 1",
            "healthproxy_drain_duration_seconds{phase=\"connections\"} 1.5",
            "healthproxy_drain_duration_seconds{phase=\"min_wait\"} 5",
            "healthproxy_drain_duration_seconds{phase=\"total\"} 6.5",
            "healthproxy_drain_new_connections 7",
            "healthproxy_drain_last_new_connection_seconds 2.5",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
    }
}
