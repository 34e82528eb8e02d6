//! The fast path: `GET` and `HEAD` of `/healthz`, `/startupz`, `/livez`
//! and `/readyz` with no query string and no `Accept` asking for JSON —
//! what the kubelet sends, many times a second across a node — answered
//! by the handlers' own code without the router, its middleware and most
//! of their allocations. Every other request goes to the router with its
//! [`Route`]. Both count the request by that route. Most plain probes
//! never reach hyper: the front path (`front`) answers them from the
//! connection's bytes with [`Endpoints::plain`], the code this path uses.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, header};
use bytes::Bytes;
use http_body_util::{Either, Full};
use tower::ServiceExt as _;

use super::{Answer, AppState, Format, Peer, Route, accepts, format};

/// A response body: a fast-path answer, or the router's.
pub(crate) type ResponseBody = Either<Full<Bytes>, Body>;

/// A response to come: ready at once from the fast path, or the router's.
pub(crate) enum Call {
    /// Taken when polled.
    Answered(Option<Response<ResponseBody>>),
    Routed(Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>),
}

impl Future for Call {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Call::Answered(response) => Poll::Ready(Ok(response.take().expect("polled once"))),
            Call::Routed(routed) => routed.as_mut().poll(cx),
        }
    }
}

/// Every endpoint: the fast path in front of the router. A cheap handle.
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
    pub(super) fn new(app: AppState, router: Router) -> Endpoints {
        Endpoints { app, router }
    }

    /// Answers `request` from `peer`: a plain probe at once, anything else
    /// through the router. The router's handlers see the peer as a
    /// [`Peer`] extension; the fast path has no use for it.
    pub(crate) fn call<B>(&self, request: Request<B>, peer: SocketAddr) -> Call
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let route = Route::parse(request.uri().path());
        if let Some(response) = self.answer(&route, &request, peer) {
            self.app.count(&route, response.status());
            return Call::Answered(Some(response.map(Either::Left)));
        }
        let app = AppState::clone(&self.app);
        let router = self.router.clone();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(route.clone());
        request.extensions_mut().insert(Peer(peer));
        // Boxed: held inline, the router's future would make every call
        // that large (752 bytes instead of a pointer), a fast one's too.
        Call::Routed(Box::pin(async move {
            let response = router.oneshot(request).await?;
            app.count(&route, response.status());
            Ok(response.map(Either::Right))
        }))
    }

    /// The answer to a plain probe of `route`; `None` leaves the request
    /// to the router.
    fn answer<B>(
        &self,
        route: &Route,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Option<Response<Full<Bytes>>> {
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if request.uri().query().is_some() {
            return None;
        }
        let headers = request.headers();
        let authorization = || headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let answer = self.plain(route, accepts(headers), authorization, peer)?;
        Some(answer.response(head))
    }

    /// The answer to `GET` or `HEAD` of `route` with no query, given the
    /// values of its `Accept` headers and a way to get its first
    /// `Authorization`: a plain probe's, or `None` for the router's — any
    /// other request, and a failing probe that lists too many checks to
    /// render here (`Shared::plain_probe`). Both fast paths, hyper's and
    /// the front one, come here.
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
    pub(crate) fn count(&self, route: &Route, status: axum::http::StatusCode) {
        self.app.count(route, status);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use axum::http::{StatusCode, header};

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
        let endpoints = super::super::endpoints(
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
        for _ in 0..3 {
            let response = endpoints
                .call(request(&Method::GET, "/readyz", None), LOOPBACK)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        for uri in ["/readyz?verbose", "/readyz/a"] {
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
        assert_eq!(count("/readyz", StatusCode::SERVICE_UNAVAILABLE), 4);
        assert_eq!(count("/readyz/{name}", StatusCode::SERVICE_UNAVAILABLE), 1);
        assert_eq!(count("/livez", StatusCode::OK), 1);
        assert_eq!(count("/livez", StatusCode::METHOD_NOT_ALLOWED), 1);
        assert_eq!(count("/readyz", StatusCode::OK), 0);
    }

    #[test]
    fn only_plain_probes_take_the_fast_path() {
        let (endpoints, _, _) = endpoints();
        let fast = |method: &Method, uri: &str, accept| {
            let request = request(method, uri, accept);
            endpoints
                .answer(&Route::parse(request.uri().path()), &request, LOOPBACK)
                .is_some()
        };
        for (method, uri) in [
            (Method::GET, "/readyz"),
            (Method::HEAD, "/livez"),
            (Method::GET, "/healthz"),
        ] {
            assert!(fast(&method, uri, None), "{method} {uri}");
            assert!(fast(&method, uri, Some("*/*")), "{method} {uri}");
        }
        let cases = [
            (Method::POST, "/readyz", None),
            (Method::OPTIONS, "/livez", None),
            (Method::GET, "/readyz?verbose", None),
            (Method::GET, "/readyz?", None),
            (Method::GET, "/readyz", Some("application/json")),
            (Method::HEAD, "/livez", Some("application/health+json")),
            (Method::GET, "/readyz/a", None),
            (Method::GET, "/metrics", None),
            (Method::GET, "/prestop", None),
            (Method::GET, "/healthz?x", None),
        ];
        for (method, uri, accept) in cases {
            assert!(!fast(&method, uri, accept), "{method} {uri} accept={accept:?}");
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
        let inline_lines = super::super::INLINE_LINES;
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
