//! What the endpoints share: the snapshot, the lifecycle, the metrics and
//! the reloads they answer from, and the probes' answers built from them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;

use super::admission::{Admission, Unsent};
use super::answer::Answer;
use super::render::{Format, Options, Probe, Scope};
use super::route::{self, Route};
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, RouteRequests};
use crate::reload::Reloads;
use crate::state::State;

/// What the handlers share, behind one `Arc`: extracting it for a request
/// is one reference count, not one per field.
pub(crate) type AppState = Arc<Shared>;

/// The fields of [`AppState`]: what the endpoints answer from, and the
/// bounds of their work for clients ([`Admission`]).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) state: State,
    pub(super) lifecycle: Lifecycle,
    pub(super) metrics: Metrics,
    /// Asks for a reload (`POST /reload`); none without a config file.
    pub(super) reloads: Option<Reloads>,
    /// The request counters, one per route, indexed by [`Route::index`].
    pub(super) requests: [RouteRequests; route::LABELS.len()],
    /// What clients may make the endpoints hold or do at once.
    pub(super) admission: Admission,
}

/// What the handlers share.
pub(super) fn shared(
    state: State,
    lifecycle: Lifecycle,
    metrics: Metrics,
    reloads: Option<Reloads>,
) -> AppState {
    let requests = route::LABELS.map(|label| metrics.route_requests(label));
    Arc::new(Shared {
        state,
        lifecycle,
        metrics,
        reloads,
        requests,
        admission: Admission::new(),
    })
}

/// The most checks a failing plain probe's answer lists and still is
/// rendered on the thread that answers the probes ([`Shared::plain_probe`]):
/// a pod's checks, a few KiB of text.
pub(super) const INLINE_LINES: usize = 100;

impl Shared {
    /// What `render` returns, rendered within [`Admission::render`]'s
    /// bounds: off the thread that answers the probes, one at a time.
    pub(super) async fn render<T: Send + 'static>(
        self: &Arc<Self>,
        render: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> Result<T, Unsent> {
        let app = Arc::clone(self);
        self.admission.render(move || render(&app)).await
    }

    /// Whether a request from `peer` may see the checks' messages: it
    /// comes from the loopback interface (the pod itself, or a `kubectl
    /// port-forward`), or it carries the lifecycle token
    /// (`drain.token_file`) in its first `Authorization` header, which
    /// `authorization` gives when asked. Clients on the pod network get
    /// names and verdicts only (`reason withheld`).
    pub(crate) fn may_see_messages<'h>(
        &self,
        peer: SocketAddr,
        authorization: impl FnOnce() -> Option<&'h [u8]>,
    ) -> bool {
        peer.ip().to_canonical().is_loopback()
            || self
                .lifecycle
                .token
                .as_ref()
                .is_some_and(|token| token.accepts(authorization()))
    }

    /// The answer of a probe `route` (`/livez`, `/livez/NAME`,
    /// `/containers/NAME/livez`) with `options`, in `format`; with the
    /// checks' messages if `messages`.
    pub(crate) fn probe(
        &self,
        route: &Route,
        options: &Options<'_>,
        format: Format,
        messages: bool,
    ) -> Answer {
        self.probe_within(route, options, format, messages, usize::MAX)
            .expect("no bound on the lines")
    }

    /// The plain answer of a probe `route`, in text without options, when
    /// it is cheap enough for the thread that answers the probes: a
    /// passing one (`ok`), or a failing one that lists at most
    /// [`INLINE_LINES`] checks. `None` leaves it to [`Shared::render`]: a
    /// failing answer lists every check, which takes milliseconds with
    /// thousands, and a flood of them on this thread would hold the
    /// kubelet's probes behind it (measured: /livez answered in 0.6–0.9 s
    /// with 10,000 failing checks and 1,000 clients asking for /readyz).
    /// Rendered or busy, such an answer is a 503: the verdict is the same.
    pub(crate) fn plain_probe(&self, route: &Route, messages: bool) -> Option<Answer> {
        self.probe_within(route, &Options::default(), Format::Text, messages, INLINE_LINES)
    }

    /// [`Shared::probe`], or `None` when the answer would list more than
    /// `most` checks.
    fn probe_within(
        &self,
        route: &Route,
        options: &Options<'_>,
        format: Format,
        messages: bool,
        most: usize,
    ) -> Option<Answer> {
        let snapshot = self.state.borrow();
        let (kind, scope) = match route {
            Route::Probe(kind) => (*kind, Scope::All),
            Route::Check(kind, name) => {
                if !snapshot
                    .check_named(name)
                    .is_some_and(|c| c.probes.contains(*kind))
                {
                    return Some(Answer::not_found(format!("no {kind} check named {name:?}\n")));
                }
                (*kind, Scope::Check(name))
            }
            Route::Container { container, probe } => {
                let Some(kind) = route::kind(probe) else {
                    return Some(Answer::not_found("not found\n".into()));
                };
                if snapshot.container_checks(container).next().is_none() {
                    return Some(Answer::not_found(format!("no container named {container:?}\n")));
                }
                (kind, Scope::Container(container))
            }
            _ => return Some(Answer::not_found("not found\n".into())),
        };
        let plain = format == Format::Text && options.is_plain();
        // The kubelet's probe of a passing pod: no body to build.
        if plain && matches!(scope, Scope::All) && snapshot.passes(kind) {
            return Some(Answer::probe(
                StatusCode::OK,
                Format::Text,
                Bytes::from_static(b"ok"),
            ));
        }
        // Every check of the kind is listed, at most all of them: known
        // without a scan.
        if matches!(scope, Scope::All) && snapshot.checks.len() > most {
            return None;
        }
        let mut probe = Probe::evaluate(&snapshot, kind, scope, options);
        if probe.listed() > most && !(plain && probe.ok()) {
            return None;
        }
        if !messages {
            probe = probe.withhold_messages();
        }
        let status = if probe.ok() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = match format {
            Format::Text => probe.text(options.verbose),
            Format::Json => probe.json().to_string(),
            Format::HealthJson => probe.health_json().to_string(),
        };
        Some(match self.admission.answers.hold(Bytes::from(body)) {
            Some(body) => Answer::probe(status, format, body),
            None => Answer::busy(),
        })
    }

    /// Counts a request to `route` answered with `status`.
    pub(crate) fn count(&self, route: &Route, status: StatusCode) {
        self.requests[route.index()].record(status);
    }
}
