//! The HTTP endpoints. Every probe is answered from the cached snapshot; a
//! request never runs a check.
//!
//! | method    | path                                  | status     |
//! |-----------|---------------------------------------|------------|
//! | GET, HEAD | `/healthz`                            | 200: the sidecar itself answers |
//! | GET, HEAD | `/startupz`, `/livez`, `/readyz`      | 200 or 503 |
//! | GET, HEAD | `/startupz/NAME`, `/livez/NAME`, `/readyz/NAME` | 200 or 503; 404 for an unknown check |
//! | GET, HEAD | `/containers/CONTAINER/livez` (and `readyz`, `startupz`) | 200 or 503; 404 for an unknown container |
//! | GET, POST | `/prestop`                            | 200 once the drain is done; 401 without the token |
//! | POST      | `/drain`                              | 202: the drain has started; 401 without the token |
//! | POST      | `/exit`                               | 200, then the process exits 0; 401 without the token |
//! | GET, HEAD | `/metrics`                            | 200: Prometheus text format |
//!
//! Probes take `?verbose`, `?exclude=NAME` (repeatable) and `?format=json`,
//! and honour `Accept: application/json` and `application/health+json`.
//! Other methods get 405, other paths 404.
//!
//! The kubelet's probes (`GET` or `HEAD` of `/healthz`, `/startupz`,
//! `/livez` or `/readyz`, no query, no JSON asked for) are answered by a
//! fast path in front of the router (`fast`), with the router's answers.

mod fast;
mod listen;
mod render;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use fast::Endpoints;
pub use listen::{SHUTDOWN_GRACE, bind, serve};
pub use render::{Format, Options, Probe, Scope};

use std::time::Duration;

use tower_http::timeout::TimeoutLayer;

use crate::config::ProbeKind;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::state::State;

/// What the handlers share, behind one `Arc`: extracting it for a request
/// is one reference count, not one per field.
pub type AppState = Arc<Shared>;

/// The fields of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    state: State,
    containers: Arc<[String]>,
    lifecycle: Lifecycle,
    metrics: Metrics,
}

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The longest query string accepted; a longer one gets 414.
pub const MAX_QUERY_BYTES: usize = 2048;

/// The endpoints over `state`, `lifecycle` and `metrics`. Requests other
/// than `/prestop` (which lasts as long as the drain) get 408 after
/// `request_timeout`.
pub fn endpoints(
    state: State,
    lifecycle: Lifecycle,
    metrics: Metrics,
    request_timeout: Duration,
) -> Endpoints {
    let app = shared(state, lifecycle, metrics);
    Endpoints::new(Arc::clone(&app), router(app, request_timeout))
}

/// What the handlers share.
fn shared(state: State, lifecycle: Lifecycle, metrics: Metrics) -> AppState {
    let mut containers: Vec<String> = state
        .borrow()
        .checks
        .iter()
        .filter_map(|c| c.container.clone())
        .collect();
    containers.sort();
    containers.dedup();
    Arc::new(Shared {
        state,
        containers: containers.into(),
        lifecycle,
        metrics,
    })
}

/// The router: every request the fast path leaves to it.
fn router(app: AppState, request_timeout: Duration) -> Router {
    let mut router = Router::new().route("/healthz", get(healthz));
    for kind in ProbeKind::ALL {
        router = router
            .route(
                &format!("/{}", kind.endpoint()),
                get(move |s, q, h| probe(s, kind, None, q, h)),
            )
            .route(
                &format!("/{}/{{name}}", kind.endpoint()),
                get(move |s, Path(name): Path<String>, q, h| probe(s, kind, Some(Named::Check(name)), q, h)),
            );
    }
    router
        .route("/containers/{container}/{probe}", get(container_probe))
        .route("/drain", post(drain))
        .route("/exit", post(exit))
        .route("/metrics", get(scrape))
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .route("/prestop", get(prestop).post(prestop))
        .route_layer(middleware::from_fn(keep_matched_path))
        .fallback(not_found)
        .layer(middleware::from_fn(limit_query))
        .layer(middleware::from_fn_with_state(app.clone(), count_request))
        .with_state(app)
}

/// Answers 414 to a query string longer than [`MAX_QUERY_BYTES`].
async fn limit_query(request: Request, next: Next) -> Response {
    if request.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return (StatusCode::URI_TOO_LONG, "query string too long\n").into_response();
    }
    next.run(request).await
}

/// Copies the matched route pattern onto the response, for
/// [`count_request`], which runs outside the routing.
async fn keep_matched_path(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// Counts every request by route pattern and status code; a path that
/// matched no route counts as `unmatched`, never as itself.
async fn count_request(AxumState(app): AxumState<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |m| m.as_str());
    app.metrics.record_request(route, response.status());
    response
}

/// `/metrics`: every gauge is computed from the snapshot as it is now.
async fn scrape(AxumState(app): AxumState<AppState>) -> Response {
    let body = app.metrics.render(&app.state);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus::TEXT_FORMAT),
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Whether the request carries the lifecycle token, when one is configured.
fn authorized(app: &AppState, headers: &HeaderMap) -> bool {
    match &app.lifecycle.token {
        Some(token) => token.accepts(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())),
        None => true,
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid Authorization: Bearer token is required\n",
    )
        .into_response()
}

/// The kubelet's preStop `httpGet`: drain, and answer once done. The
/// kubelet ignores the status and waits, so the time taken is the point.
async fn prestop(AxumState(app): AxumState<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let drain = &app.lifecycle.drain;
    drain.start("/prestop");
    let report = drain.drained().await;
    let body = format!(
        "drained in {} (min wait {}, connections {}{})\n",
        humantime::format_duration(ms(report.total())),
        humantime::format_duration(ms(report.min_wait)),
        humantime::format_duration(ms(report.connection_wait)),
        if report.timed_out {
            ", stopped at drain.max"
        } else {
            ""
        }
    );
    (StatusCode::OK, body).into_response()
}

async fn drain(AxumState(app): AxumState<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    app.lifecycle.drain.start("/drain");
    (StatusCode::ACCEPTED, "draining\n").into_response()
}

async fn exit(AxumState(app): AxumState<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    app.lifecycle.exit.cancel();
    (StatusCode::OK, "exiting\n").into_response()
}

fn ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

enum Named {
    Check(String),
    Container(String),
}

async fn container_probe(
    s: AxumState<AppState>,
    Path((container, probe_name)): Path<(String, String)>,
    q: RawQuery,
    h: HeaderMap,
) -> Response {
    match ProbeKind::ALL.into_iter().find(|k| k.endpoint() == probe_name) {
        Some(kind) => probe(s, kind, Some(Named::Container(container)), q, h).await,
        None => not_found().await,
    }
}

async fn probe(
    AxumState(app): AxumState<AppState>,
    kind: ProbeKind,
    named: Option<Named>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let options = Options::parse(query.as_deref());
    let format = format(&headers, &options);
    let snapshot = app.state.borrow();
    let scope = match &named {
        None => Scope::All,
        Some(Named::Check(name)) => {
            if !snapshot
                .checks
                .iter()
                .any(|c| &c.name == name && c.probes.contains(kind))
            {
                return (StatusCode::NOT_FOUND, format!("no {kind} check named {name:?}\n")).into_response();
            }
            Scope::Check(name)
        }
        Some(Named::Container(name)) => {
            if !app.containers.iter().any(|c| c == name) {
                return (StatusCode::NOT_FOUND, format!("no container named {name:?}\n")).into_response();
            }
            Scope::Container(name)
        }
    };
    let probe = Probe::evaluate(&snapshot, kind, scope, &options);
    let status = if probe.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let (content_type, body) = match format {
        Format::Text => (TEXT, probe.text(options.verbose)),
        Format::Json => ("application/json", probe.json().to_string()),
        Format::HealthJson => ("application/health+json", probe.health_json().to_string()),
    };
    drop(snapshot);
    (status, probe_headers(content_type), body).into_response()
}

/// The content type of the probes' text answers (and of `/healthz`'s).
const TEXT: &str = "text/plain; charset=utf-8";

/// The headers of a probe's answer, but its length: `content_type`, and
/// never cached nor sniffed.
fn probe_headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 3] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ]
}

fn format(headers: &HeaderMap, options: &Options<'_>) -> Format {
    let accepts = |media: &str| {
        headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(media)))
    };
    if accepts("application/health+json") {
        Format::HealthJson
    } else if options.json || accepts("application/json") {
        Format::Json
    } else {
        Format::Text
    }
}
