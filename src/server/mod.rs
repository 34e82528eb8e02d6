//! The HTTP endpoints. Every probe is answered from the cached snapshot; a
//! request never runs a check.
//!
//! | method    | path                                  | status     |
//! |-----------|---------------------------------------|------------|
//! | GET, HEAD | `/healthz`                            | 200: the sidecar itself answers |
//! | GET, HEAD | `/startupz`, `/livez`, `/readyz`      | 200 or 503 |
//! | GET, HEAD | `/startupz/NAME`, `/livez/NAME`, `/readyz/NAME` | 200 or 503; 404 for an unknown check |
//! | GET, HEAD | `/containers/CONTAINER/livez` (and `readyz`, `startupz`) | 200 or 503; 404 for an unknown container |
//! | GET, POST | `/prestop`                            | 200 once the drain is done; 401 without the token, 403 off loopback when none is set |
//! | POST      | `/drain`                              | 202: the drain has started; 401 / 403 as `/prestop` |
//! | POST      | `/exit`                               | 200, then the process exits 0; 401 / 403 as `/prestop` |
//! | POST      | `/reload`                             | 200: the config file reloaded; 400: rejected, the running one stays; 401 / 403 as `/prestop` |
//! | GET, HEAD | `/metrics`                            | 200: Prometheus text format |
//! | GET, HEAD | `/status`                             | 200: every check's state and recent transitions, JSON (`healthproxy status`) |
//!
//! Probes take `?verbose`, `?exclude=NAME` (repeatable) and `?format=json`,
//! and honour `Accept: application/json` and `application/health+json`.
//! Other methods get 405, other paths 404.
//!
//! Each request's path is parsed once into a `Route` (`route`): the
//! router is built from its patterns, the handlers answer from it, and
//! `healthproxy_http_requests_total` is counted by it. The kubelet's probes
//! (`GET` or `HEAD` of `/healthz`, `/startupz`, `/livez` or `/readyz`, no
//! query, no JSON asked for) skip the router (`fast`) and call the same
//! answer code; one that arrives whole as a connection's next bytes is
//! answered from them before hyper sees it (`front`), with the bytes
//! hyper would write.

mod answers;
mod fast;
mod front;
pub mod grpc;
pub(crate) mod held;
mod listen;
mod render;
mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, RawQuery, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::Full;
use tower_http::timeout::TimeoutLayer;

pub(crate) use fast::Endpoints;
pub(crate) use listen::{SHUTDOWN_GRACE, bind, connection_cap, serve};
pub use listen::{memory_budget, memory_limit, raise_fd_limit};
pub use render::{Format, Options, Probe, Scope};
pub(crate) use route::Route;

use crate::config::ProbeKind;
use crate::lifecycle::{Lifecycle, Refusal};
use crate::metrics::{Metrics, RouteRequests};
use crate::reload::{Reloads, Trigger};
use crate::state::State;
use crate::whole_ms;

/// What the handlers share, behind one `Arc`: extracting it for a request
/// is one reference count, not one per field.
pub(crate) type AppState = Arc<Shared>;

/// The fields of [`AppState`].
#[derive(Debug)]
pub(crate) struct Shared {
    state: State,
    lifecycle: Lifecycle,
    metrics: Metrics,
    /// Asks for a reload (`POST /reload`); none without a config file.
    reloads: Option<Reloads>,
    /// The request counters, one per route, indexed by [`Route::index`].
    requests: [RouteRequests; route::LABELS.len()],
    /// How many more refused lifecycle requests may be logged now.
    refusals_logged: std::sync::Mutex<LogBudget>,
    /// What large answers waiting for their clients may hold.
    answers: answers::Answers,
    /// `/metrics` renderings shared by the scrapes waiting for them.
    scrapes: answers::Scrapes<Result<Bytes, Unsent>>,
    /// One permit: the rendering of a large answer under way.
    renders: tokio::sync::Semaphore,
    /// Requests waiting for that permit.
    waiting_renders: answers::Waiters,
}

/// Why a large answer is not sent.
#[derive(Debug, Clone, Copy)]
enum Unsent {
    /// Rendering it failed.
    Failed,
    /// The answers' budget is spent, or too many wait to render.
    Busy,
}

/// A token bucket for log lines that clients can cause: `BURST` at once,
/// then `PER_SECOND`; what it holds back is counted and said with the next
/// line it lets through. A flood of refused requests from the pod network
/// then costs a few lines a second, not one per request (the metric counts
/// every one).
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: f64,
    at: std::time::Instant,
    held_back: u64,
}

impl LogBudget {
    const BURST: f64 = 20.0;
    const PER_SECOND: f64 = 1.0;

    pub(crate) fn new() -> Self {
        LogBudget {
            tokens: Self::BURST,
            at: std::time::Instant::now(),
            held_back: 0,
        }
    }

    /// `Some(n)` when a line may be logged, `n` being how many were held
    /// back since the last; `None` when this one is held back.
    pub(crate) fn take(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.at = now;
        if self.tokens < 1.0 {
            self.held_back += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.held_back))
    }
}

/// The longest query string accepted; a longer one gets 414.
pub(crate) const MAX_QUERY_BYTES: usize = 2048;

/// The endpoints over `state`, `lifecycle` and `metrics`. Requests other
/// than `/prestop` (which lasts as long as the drain) get 408 after
/// `request_timeout`.
pub(crate) fn endpoints(
    state: State,
    lifecycle: Lifecycle,
    metrics: Metrics,
    reloads: Option<Reloads>,
    request_timeout: Duration,
) -> Endpoints {
    let app = shared(state, lifecycle, metrics, reloads);
    Endpoints::new(Arc::clone(&app), router(app, request_timeout))
}

/// What the handlers share.
fn shared(state: State, lifecycle: Lifecycle, metrics: Metrics, reloads: Option<Reloads>) -> AppState {
    let requests = route::LABELS.map(|label| metrics.route_requests(label));
    Arc::new(Shared {
        state,
        lifecycle,
        metrics,
        reloads,
        requests,
        refusals_logged: std::sync::Mutex::new(LogBudget::new()),
        answers: answers::Answers::new(),
        scrapes: answers::Scrapes::default(),
        renders: tokio::sync::Semaphore::new(1),
        waiting_renders: answers::Waiters::default(),
    })
}

/// The router: every request the fast path leaves to it, with its
/// [`Route`] in the request's extensions. Its patterns are the routes'.
fn router(app: AppState, request_timeout: Duration) -> Router {
    let mut router = Router::new().route(Route::Healthz.label(), get(healthz));
    for kind in ProbeKind::ALL {
        router = router
            .route(Route::Probe(kind).label(), get(probe))
            .route(Route::Check(kind, String::new()).label(), get(probe));
    }
    let container = Route::Container {
        container: String::new(),
        probe: String::new(),
    };
    router
        .route(container.label(), get(probe))
        .route(Route::Drain.label(), post(drain))
        .route(Route::Exit.label(), post(exit))
        .route(Route::Reload.label(), post(reload))
        .route(Route::Metrics.label(), get(scrape))
        .route(Route::Status.label(), get(status))
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .route(Route::Prestop.label(), get(prestop).post(prestop))
        .fallback(not_found)
        .layer(middleware::from_fn(limit_query))
        .with_state(app)
}

/// Answers 414 to a query string longer than [`MAX_QUERY_BYTES`].
async fn limit_query(request: Request, next: Next) -> Response {
    if request.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return (StatusCode::URI_TOO_LONG, "query string too long\n").into_response();
    }
    next.run(request).await
}

/// `/metrics`: every gauge is computed from the snapshot as it is now,
/// off the thread that answers the probes ([`Shared::render`]). Scrapes
/// that arrive together share one rendering (see [`answers`]).
async fn scrape(AxumState(app): AxumState<AppState>) -> Response {
    let rendered = app
        .scrapes
        .get(async || {
            let body = app.render(|app| app.metrics.render(&app.state)).await?;
            app.answers.hold(Bytes::from(body)).ok_or(Unsent::Busy)
        })
        .await
        .unwrap_or(Err(Unsent::Busy));
    match rendered {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            )],
            body,
        )
            .into_response(),
        Err(Unsent::Failed) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the metrics\n").into_response()
        }
        Err(Unsent::Busy) => Answer::busy().response(false).map(Body::new),
    }
}

async fn healthz(method: Method) -> Response {
    Answer::healthz().response(method == Method::HEAD).map(Body::new)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The probes, one check and one container's checks: the answer of the
/// request's route.
async fn probe(
    AxumState(app): AxumState<AppState>,
    Extension(route): Extension<Route>,
    Extension(Peer(peer)): Extension<Peer>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let head = method == Method::HEAD;
    let messages = app.may_see_messages(peer, || headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()));
    let options = Options::parse(query.as_deref());
    let format = format(accepts(&headers), options.json);
    // A plain answer (what a kubelet probe of one check or one container
    // asks for) is answered here when it is cheap. Anything else takes
    // milliseconds with many checks: off this thread, one at a time, and
    // not begun when its bytes could not be kept.
    if options.is_plain()
        && format == Format::Text
        && let Some(answer) = app.plain_probe(&route, messages)
    {
        return answer.response(head).map(Body::new);
    }
    let answer = app
        .render(move |app| {
            let options = Options::parse(query.as_deref());
            app.probe(&route, &options, format, messages)
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(Unsent::Busy) => Answer::busy(),
        Err(Unsent::Failed) => Answer::failed(),
    };
    answer.response(head).map(Body::new)
}

/// `/status`: what `healthproxy status` shows, rendered off the thread
/// that answers the probes as other answers that grow with the checks;
/// the messages under the rule of the probes' answers
/// ([`Shared::may_see_messages`]).
async fn status(
    AxumState(app): AxumState<AppState>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let messages = app.may_see_messages(peer, || headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()));
    let answer = app
        .render(move |app| {
            let body = render::status(&app.state.borrow(), !messages).to_string();
            match app.answers.hold(Bytes::from(body)) {
                Some(body) => Answer {
                    status: StatusCode::OK,
                    format: Format::Json,
                    probe: true,
                    body,
                },
                None => Answer::busy(),
            }
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(Unsent::Busy) => Answer::busy(),
        Err(Unsent::Failed) => Answer::failed(),
    };
    answer.response(method == Method::HEAD).map(Body::new)
}

/// An answer, built the same way whichever path the request took.
pub(crate) struct Answer {
    status: StatusCode,
    format: Format,
    /// A probe's answer: never cached nor sniffed.
    probe: bool,
    body: Bytes,
}

impl Answer {
    /// `/healthz`: the sidecar answers.
    fn healthz() -> Answer {
        Answer {
            status: StatusCode::OK,
            format: Format::Text,
            probe: false,
            body: Bytes::from_static(b"ok"),
        }
    }

    /// Rendering the answer failed (it panicked).
    fn failed() -> Answer {
        Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            format: Format::Text,
            probe: true,
            body: Bytes::from_static(b"cannot render the answer\n"),
        }
    }

    /// Too many large answers wait for their clients to read them.
    fn busy() -> Answer {
        Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            format: Format::Text,
            probe: true,
            body: Bytes::from_static(
                b"busy: too many large answers are waiting for their clients to read them; try again\n",
            ),
        }
    }

    fn not_found(body: String) -> Answer {
        Answer {
            status: StatusCode::NOT_FOUND,
            format: Format::Text,
            probe: false,
            body: Bytes::from(body),
        }
    }

    /// The response, without its body for `head` (with the length a GET's
    /// body has, as axum does).
    pub(crate) fn response(self, head: bool) -> axum::http::Response<Full<Bytes>> {
        let headers = self.format.headers(self.probe, self.body.len());
        let body = if head { Bytes::new() } else { self.body };
        let mut response = axum::http::Response::new(Full::new(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }

    /// The head hyper writes for this answer to an HTTP/1.1 request, byte
    /// for byte, for the front path that answers without it (`front`):
    /// the status line, [`Format::headers`] in their order, `connection:
    /// close` when the connection ends after it, and the date. A `HEAD`
    /// answer has the same head.
    pub(crate) fn head(&self, close: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(224);
        if self.status == StatusCode::OK {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            let reason = self.status.canonical_reason().unwrap_or("<none>");
            for part in ["HTTP/1.1 ", self.status.as_str(), " ", reason, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
        out.extend_from_slice(&self.format.template(self.probe).lines);
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&front::date());
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

impl Format {
    const ALL: [Format; 3] = [Format::Text, Format::Json, Format::HealthJson];

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::HealthJson => "application/health+json",
        }
    }

    /// The headers of an answer in this format, `len` bytes long, a
    /// probe's (never cached nor sniffed) or not: the template, copied.
    fn headers(self, probe: bool, len: usize) -> HeaderMap {
        let mut headers = self.template(probe).headers.clone();
        if len != TEMPLATE_LEN {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        headers
    }

    /// The headers of an answer in this format, a probe's or not, for a
    /// body of [`TEMPLATE_LEN`] bytes (`ok`). Built once and copied: the
    /// kubelet's probes come many times a second, and inserting each
    /// header hashes it.
    fn template(self, probe: bool) -> &'static Template {
        static TEMPLATES: std::sync::LazyLock<Vec<Template>> = std::sync::LazyLock::new(|| {
            let mut all = Vec::new();
            for format in Format::ALL {
                for probe in [false, true] {
                    let mut headers = HeaderMap::with_capacity(4);
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    if probe {
                        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        headers.insert(
                            header::X_CONTENT_TYPE_OPTIONS,
                            HeaderValue::from_static("nosniff"),
                        );
                    }
                    let mut lines = Vec::new();
                    for (name, value) in &headers {
                        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                            lines.extend_from_slice(part);
                        }
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(TEMPLATE_LEN));
                    all.push(Template { headers, lines });
                }
            }
            all
        });
        &TEMPLATES[self as usize * 2 + usize::from(probe)]
    }
}

/// The headers of one kind of answer.
struct Template {
    headers: HeaderMap,
    /// The lines hyper writes for them, but the last, `content-length`.
    lines: Vec<u8>,
}

/// The most checks a failing plain probe's answer lists and still is
/// rendered on the thread that answers the probes ([`Shared::plain_probe`]):
/// a pod's checks, a few KiB of text.
const INLINE_LINES: usize = 100;

/// The body length the header templates are built for: `ok`.
const TEMPLATE_LEN: usize = b"ok".len();

impl Shared {
    /// What `render` returns, run on a blocking thread once no other
    /// rendering runs: answers that grow with the checks (JSON, verbose,
    /// `/metrics`) take milliseconds with thousands of checks, and a flood
    /// of them must neither hold the thread that answers the kubelet's
    /// probes nor take more than one core. Past [`answers::MAX_WAITING`]
    /// waiting, the answer is busy at once.
    async fn render<T: Send + 'static>(
        self: &Arc<Self>,
        render: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> Result<T, Unsent> {
        if self.answers.spent() {
            return Err(Unsent::Busy);
        }
        let turn = {
            let waiting = self.waiting_renders.enter().ok_or(Unsent::Busy)?;
            let turn = self.renders.acquire().await.expect("never closed");
            drop(waiting);
            turn
        };
        let app = Arc::clone(self);
        let rendered = tokio::task::spawn_blocking(move || render(&app)).await;
        drop(turn);
        rendered.map_err(|e| {
            tracing::error!("rendering an answer failed: {e}");
            Unsent::Failed
        })
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
                    .checks
                    .iter()
                    .any(|c| &c.name == name && c.probes.contains(*kind))
                {
                    return Some(Answer::not_found(format!("no {kind} check named {name:?}\n")));
                }
                (*kind, Scope::Check(name))
            }
            Route::Container { container, probe } => {
                let Some(kind) = route::kind(probe) else {
                    return Some(Answer::not_found("not found\n".into()));
                };
                if !snapshot
                    .checks
                    .iter()
                    .any(|c| c.container.as_ref() == Some(container))
                {
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
        Some(match self.answers.hold(Bytes::from(body)) {
            Some(body) => Answer::probe(status, format, body),
            None => Answer::busy(),
        })
    }

    /// Counts a request to `route` answered with `status`.
    pub(crate) fn count(&self, route: &Route, status: StatusCode) {
        self.requests[route.index()].record(status);
    }
}

impl Answer {
    fn probe(status: StatusCode, format: Format, body: Bytes) -> Answer {
        Answer {
            status,
            format,
            probe: true,
            body,
        }
    }
}

/// The client's address, which the server adds to every request the
/// router answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// Lets a lifecycle request to `route` through, or answers it: 401 without
/// the token when one is set, 403 off loopback when none is. Every refusal
/// is counted and logged at WARN with the client's address (at most 20 at
/// once, then one a second: see [`LogBudget`]): the kubelet
/// ignores a preStop hook's status, so a refused `/prestop` (a rotated
/// Secret) would otherwise pass unseen while the app is stopped undrained.
fn guard(
    app: &AppState,
    route: &'static str,
    peer: Option<Extension<Peer>>,
    headers: &HeaderMap,
) -> Option<Response> {
    let peer = peer.map(|Extension(Peer(addr))| addr);
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let refusal = app
        .lifecycle
        .authorize(peer.map(|p| p.ip()), authorization)
        .err()?;
    let source = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    app.metrics.record_refused(route, refusal);
    let log = app.refusals_logged.lock().expect("not poisoned").take();
    if let Some(held_back) = log.filter(|n| *n > 0) {
        tracing::warn!(
            held_back,
            "{held_back} more refused lifecycle requests were not logged (at most 20 at once, then one a second); healthproxy_lifecycle_refused_total counts every one"
        );
    }
    Some(match refusal {
        Refusal::Token => {
            if log.is_some() {
                tracing::warn!(
                    route,
                    source,
                    "lifecycle request refused: no valid bearer token (drain.token_file); a refused preStop hook drains nothing"
                );
            }
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid Authorization: Bearer token is required\n",
            )
                .into_response()
        }
        Refusal::NotLoopback => {
            if log.is_some() {
                tracing::warn!(
                    route,
                    source,
                    "lifecycle request refused: not from loopback and drain.token_file is not set"
                );
            }
            (
                StatusCode::FORBIDDEN,
                "without drain.token_file, /prestop, /drain and /exit answer loopback clients only: set drain.token_file and send Authorization: Bearer TOKEN\n",
            )
                .into_response()
        }
    })
}

/// The kubelet's preStop `httpGet`: drain, and answer once done. The
/// kubelet ignores the status and waits, so the time taken is the point.
async fn prestop(
    AxumState(app): AxumState<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = guard(&app, "/prestop", peer, &headers) {
        return refused;
    }
    let drain = &app.lifecycle.drain;
    drain.start("/prestop");
    let report = drain.drained().await;
    let body = format!(
        "drained in {} (min wait {}, connections {}{})\n",
        whole_ms(report.total()),
        whole_ms(report.min_wait),
        whole_ms(report.connection_wait),
        if report.timed_out {
            ", stopped at drain.max"
        } else {
            ""
        }
    );
    (StatusCode::OK, body).into_response()
}

async fn drain(
    AxumState(app): AxumState<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = guard(&app, "/drain", peer, &headers) {
        return refused;
    }
    app.lifecycle.drain.start("/drain");
    (StatusCode::ACCEPTED, "draining\n").into_response()
}

/// `POST /reload`: reads the config file again and applies it; 200 with
/// what changed, or 400 with the errors that rejected it (the running
/// config stays). Guarded as the lifecycle endpoints.
async fn reload(
    AxumState(app): AxumState<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = guard(&app, "/reload", peer, &headers) {
        return refused;
    }
    let Some(reloads) = &app.reloads else {
        return (StatusCode::NOT_FOUND, "no config file to reload\n").into_response();
    };
    match reloads.reload(Trigger::Request).await {
        Ok(summary) => (StatusCode::OK, summary).into_response(),
        Err(errors) => (
            StatusCode::BAD_REQUEST,
            format!("{errors}\nthe config is rejected: the running config stays\n"),
        )
            .into_response(),
    }
}

async fn exit(
    AxumState(app): AxumState<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = guard(&app, "/exit", peer, &headers) {
        return refused;
    }
    app.lifecycle.exit.cancel();
    (StatusCode::OK, "exiting\n").into_response()
}

/// The format an answer is asked for, from the values of its `Accept`
/// headers and `?format=json` (`json`): `application/health+json` in
/// `Accept` wins, then `?format=json` or `application/json`; else text. A
/// value that is not visible ASCII is skipped, as `HeaderValue::to_str`
/// would refuse it.
fn format<'h>(accepts: impl IntoIterator<Item = &'h [u8]>, mut json: bool) -> Format {
    for value in accepts {
        let Some(value) = visible(value) else { continue };
        if value.contains(Format::HealthJson.content_type()) {
            return Format::HealthJson;
        }
        json |= value.contains(Format::Json.content_type());
    }
    if json { Format::Json } else { Format::Text }
}

/// The values of the `Accept` headers. The headers are scanned rather than
/// looked up: a probe carries three or four, and a lookup hashes the name.
fn accepts(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|(name, _)| *name == header::ACCEPT)
        .map(|(_, value)| value.as_bytes())
}

/// `value` as text when it is visible ASCII (tabs allowed): the rule of
/// `HeaderValue::to_str`, for header values read from the bytes.
fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}
