//! The router and its handlers: every request the front path leaves to
//! hyper (`front`), with its [`Route`] and [`Peer`] in the request's
//! extensions.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, RawQuery, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tower_http::timeout::TimeoutLayer;

use super::admission::Unsent;
use super::answer::{Answer, accepts, format};
use super::render::{self, Format, Options};
use super::route::Route;
use super::shared::AppState;
use crate::config::ProbeKind;
use crate::lifecycle::Refusal;
use crate::reload::Trigger;
use crate::text::whole_ms;

/// The longest query string accepted; a longer one gets 414.
pub(crate) const MAX_QUERY_BYTES: usize = 2048;

/// The router: every request the fast path leaves to it, with its
/// [`Route`] in the request's extensions. Its patterns are the routes'.
pub(super) fn router(app: AppState, request_timeout: Duration) -> Router {
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
        .admission
        .scrapes
        .get(async || {
            let body = app.render(|app| app.metrics.render(&app.state)).await?;
            app.admission.answers.hold(Bytes::from(body)).ok_or(Unsent::Busy)
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
            match app.admission.answers.hold(Bytes::from(body)) {
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
    let log = app.admission.refusals_logged.lock().expect("not poisoned").take();
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
