//! Every endpoint behind one handle: the router for what hyper reads, and
//! [`Endpoints::plain`] for the plain probes the front path (`front`)
//! answers from a connection's bytes. Both count the request by its
//! [`Route`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use tower::ServiceExt as _;

use super::answer::{Answer, format};
use super::handlers::{Peer, router};
use super::render::Format;
use super::route::Route;
use super::shared::{AppState, shared};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::reload::Reloads;
use crate::state::State;

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
    let router = router(Arc::clone(&app), request_timeout);
    Endpoints { app, router }
}

/// A routed request's response to come. Boxed: held inline, the router's
/// future would make every connection that hyper serves that much larger
/// (752 bytes instead of a pointer), idle ones too.
pub(crate) type Call = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Every endpoint. A cheap handle.
#[derive(Clone)]
pub(crate) struct Endpoints {
    app: AppState,
    router: Router,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoints")
    }
}

impl Endpoints {
    /// Answers `request` from `peer` through the router, whose handlers
    /// see the peer as a [`Peer`] extension and the route as a [`Route`].
    pub(crate) fn call<B>(&self, request: Request<B>, peer: SocketAddr) -> Call
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let route = Route::parse(request.uri().path());
        let app = AppState::clone(&self.app);
        let router = self.router.clone();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(route.clone());
        request.extensions_mut().insert(Peer(peer));
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            app.count(&route, response.status());
            Ok(response)
        })
    }

    /// The answer to `GET` or `HEAD` of `route` with no query, given the
    /// values of its `Accept` headers and a way to get its first
    /// `Authorization`: a plain probe's, or `None` for the router's — any
    /// other request, and a failing probe that lists too many checks to
    /// render on this thread (`Shared::plain_probe`). The front path asks
    /// it; the router's handlers give the same answer.
    pub(crate) fn plain<'h>(
        &self,
        route: &Route,
        accepts: impl IntoIterator<Item = &'h [u8]>,
        authorization: impl FnOnce() -> Option<&'h [u8]>,
        peer: SocketAddr,
    ) -> Option<Answer> {
        match route {
            Route::Healthz => Some(Answer::healthz()),
            Route::Probe(_) => {
                if format(accepts, false) != Format::Text {
                    return None;
                }
                let messages = self.app.may_see_messages(peer, authorization);
                self.app.plain_probe(route, messages)
            }
            _ => None,
        }
    }

    /// Counts a request to `route` answered with `status` (the router's
    /// requests count themselves).
    pub(crate) fn count(&self, route: &Route, status: StatusCode) {
        self.app.count(route, status);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use axum::http::{Method, header};

    use super::*;

    use crate::config::Config;
    use crate::lifecycle::{Drain, Lifecycle};
    use crate::metrics::Metrics;
    use crate::state::State;

    /// Endpoints over one failing readiness check, `a`.
    pub(in crate::server) fn endpoints() -> (Endpoints, State, Metrics) {
        endpoints_of("[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\ntcp = { port = 1 }\n")
    }

    fn endpoints_of(toml: &str) -> (Endpoints, State, Metrics) {
        let config = Config::from_toml_str(toml, "t", &|_: &str| None).unwrap();
        let state = State::new(&config.checks);
        let lifecycle = Lifecycle::new(Drain::new(config.drain.clone(), state.clone()), None);
        let metrics = Metrics::new();
        let endpoints = super::endpoints(
            state.clone(),
            lifecycle,
            metrics.clone(),
            None,
            Duration::from_secs(1),
        );
        (endpoints, state, metrics)
    }

    const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    fn request(method: &Method, uri: &str, accept: Option<&str>) -> Request<Body> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        request.body(Body::empty()).unwrap()
    }

    /// `healthproxy_http_requests_total` of `route` and `code`.
    fn requests(metrics: &Metrics, state: &State, route: &str, code: StatusCode) -> u64 {
        let series = format!(
            "healthproxy_http_requests_total{{code=\"{}\",route=\"{route}\"}} ",
            code.as_str()
        );
        metrics
            .render(state)
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test]
    async fn both_paths_count_by_route() {
        let (endpoints, state, metrics) = endpoints();
        // The front path's plain probes, counted by the front path.
        for _ in 0..3 {
            let route = Route::parse("/readyz");
            let answer = endpoints.plain(&route, None::<&[u8]>, || None, LOOPBACK).unwrap();
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            endpoints.count(&route, answer.status);
        }
        // The router's, counted by the router.
        for uri in ["/readyz", "/readyz?verbose", "/readyz/a"] {
            let response = endpoints
                .call(request(&Method::GET, uri, None), LOOPBACK)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        }
        let response = endpoints
            .call(request(&Method::HEAD, "/livez", None), LOOPBACK)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = endpoints
            .call(request(&Method::POST, "/livez", None), LOOPBACK)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let count = |route, code| requests(&metrics, &state, route, code);
        assert_eq!(count("/readyz", StatusCode::SERVICE_UNAVAILABLE), 5);
        assert_eq!(count("/readyz/{name}", StatusCode::SERVICE_UNAVAILABLE), 1);
        assert_eq!(count("/livez", StatusCode::OK), 1);
        assert_eq!(count("/livez", StatusCode::METHOD_NOT_ALLOWED), 1);
        assert_eq!(count("/readyz", StatusCode::OK), 0);
    }

    #[test]
    fn only_plain_probes_are_answered_for_the_front_path() {
        let (endpoints, _, _) = endpoints();
        let plain = |uri: &str, accept: Option<&str>| {
            endpoints
                .plain(&Route::parse(uri), accept.map(str::as_bytes), || None, LOOPBACK)
                .is_some()
        };
        for uri in ["/readyz", "/livez", "/healthz"] {
            assert!(plain(uri, None), "{uri}");
            assert!(plain(uri, Some("*/*")), "{uri}");
        }
        let cases = [
            ("/readyz", Some("application/json")),
            ("/livez", Some("application/health+json")),
            ("/readyz/a", None),
            ("/metrics", None),
            ("/prestop", None),
        ];
        for (uri, accept) in cases {
            assert!(!plain(uri, accept), "{uri} accept={accept:?}");
        }
    }

    #[tokio::test]
    async fn a_failing_probe_that_lists_many_checks_is_rendered_off_the_probe_thread() {
        let config = |n| -> String {
            (0..n)
                .map(|i| {
                    format!(
                        "[[check]]\nname = \"c{i}\"\nprobes = [\"readiness\", \"liveness\"]\ntcp = {{ port = 1 }}\n"
                    )
                })
                .collect()
        };
        let inline_lines = super::super::shared::INLINE_LINES;
        for (checks, inline) in [(inline_lines, true), (inline_lines + 1, false)] {
            let (endpoints, _, _) = endpoints_of(&config(checks));
            let plain = |uri: &str| endpoints.plain(&Route::parse(uri), None::<&[u8]>, || None, LOOPBACK);
            // Readiness fails until a first success: every check listed.
            assert_eq!(plain("/readyz").is_some(), inline, "{checks} checks");
            // Passing, or one check: cheap whatever the count.
            let livez = plain("/livez").expect("a passing probe is answered at once");
            assert_eq!(livez.status, StatusCode::OK);
            let one = Route::parse("/readyz/c0");
            assert!(endpoints.app.plain_probe(&one, true).is_some(), "{checks} checks");
            // The router renders it: the same 503 with every check listed.
            let response = endpoints
                .call(request(&Method::GET, "/readyz", None), LOOPBACK)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let lines = std::str::from_utf8(&body)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("[-]c"))
                .count();
            assert_eq!(lines, checks);
        }
    }
}
