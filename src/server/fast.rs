//! The fast path: `GET` and `HEAD` of `/healthz`, `/startupz`, `/livez`
//! and `/readyz` with no query string and no `Accept` asking for JSON —
//! what the kubelet sends, many times a second across a node — answered
//! from the snapshot without the router, its middleware and most of
//! their allocations. Every other request goes to the router. The answers are
//! the router's, header for header and byte for byte (the tests below and
//! `tests/it/endpoints.rs`), and are counted in the same series.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::{Either, Full};
use tower::ServiceExt as _;

use super::{AppState, Format, Options, Probe, Scope, TEXT, format, probe_headers};
use crate::config::ProbeKind;
use crate::metrics::RouteRequests;

/// The paths answered here and the probe each evaluates (`None`: the
/// sidecar itself).
pub(super) const PATHS: [(&str, Option<ProbeKind>); 4] = [
    ("/healthz", None),
    ("/startupz", Some(ProbeKind::Startup)),
    ("/livez", Some(ProbeKind::Liveness)),
    ("/readyz", Some(ProbeKind::Readiness)),
];

/// A response body: a fast-path answer, or the router's.
pub type ResponseBody = Either<Full<Bytes>, Body>;

/// Every endpoint: the fast path in front of the router. A cheap handle.
#[derive(Clone)]
pub struct Endpoints {
    app: AppState,
    router: Router,
    /// The request counters of [`PATHS`], in its order.
    counters: Arc<[RouteRequests; PATHS.len()]>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoints")
    }
}

impl Endpoints {
    pub(super) fn new(app: AppState, router: Router) -> Endpoints {
        let counters = Arc::new(PATHS.map(|(path, _)| app.metrics.route_requests(path)));
        Endpoints {
            app,
            router,
            counters,
        }
    }

    /// Answers `request`.
    pub fn call<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + use<B>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let routed = match self.answer(&request) {
            Some(response) => Ok(response),
            None => Err(self.router.clone().oneshot(request.map(Body::new))),
        };
        async move {
            match routed {
                Ok(response) => Ok(response.map(Either::Left)),
                Err(routed) => routed.await.map(|response| response.map(Either::Right)),
            }
        }
    }

    /// The answer to `request` if it is a plain probe; `None` leaves it to
    /// the router.
    fn answer<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if request.uri().query().is_some() {
            return None;
        }
        let at = PATHS.iter().position(|(path, _)| *path == request.uri().path())?;
        // The headers in the order the router's answers have them, which
        // is the order they go out in.
        let mut headers = HeaderMap::with_capacity(4);
        let (status, body) = match PATHS[at].1 {
            None => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
                (StatusCode::OK, Bytes::from_static(b"ok"))
            }
            Some(kind) => {
                if format(request.headers(), &Options::default()) != Format::Text {
                    return None;
                }
                for (name, value) in probe_headers(TEXT) {
                    headers.insert(name, value);
                }
                self.probe(kind)
            }
        };
        // As axum does: the length of the body a GET would have, for HEAD
        // too, whose body is left out.
        headers.insert(header::CONTENT_LENGTH, content_length(body.len()));
        self.counters[at].record(status);
        let body = if head { Bytes::new() } else { body };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Some(response)
    }

    /// The status and text body of probe `kind` over every check.
    fn probe(&self, kind: ProbeKind) -> (StatusCode, Bytes) {
        let snapshot = self.app.state.borrow();
        if snapshot.passes(kind) {
            return (StatusCode::OK, Bytes::from_static(b"ok"));
        }
        let options = Options::default();
        let body = Probe::evaluate(&snapshot, kind, Scope::All, &options).text(options.verbose);
        (StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body))
    }
}

/// A `content-length` value; `ok`'s without formatting or allocating.
fn content_length(len: usize) -> HeaderValue {
    match len {
        2 => HeaderValue::from_static("2"),
        len => HeaderValue::from(len),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::check::{Outcome, Reason};
    use crate::config::Config;
    use crate::lifecycle::{Drain, Lifecycle};
    use crate::metrics::Metrics;
    use crate::state::{Phase, State};

    /// One check in every probe, failing at its first failure.
    fn endpoints() -> (Endpoints, State, Metrics) {
        let config = Config::from_toml_str(
            "[[check]]\nname = \"a\"\nprobes = [\"startup\", \"liveness\", \"readiness\"]\n\
             tcp = { port = 1 }\nfailure_threshold = 1\n",
            "t",
            &|_: &str| None,
        )
        .unwrap();
        let state = State::new(&config.checks);
        let lifecycle = Lifecycle::new(Drain::new(config.drain.clone(), state.clone()), None);
        let metrics = Metrics::new(&config.checks);
        let endpoints =
            super::super::endpoints(state.clone(), lifecycle, metrics.clone(), Duration::from_secs(1));
        (endpoints, state, metrics)
    }

    fn request(method: &Method, uri: &str, accept: Option<&str>) -> Request<Body> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        request.body(Body::empty()).unwrap()
    }

    /// What goes out on the wire: status, headers in order (hyper adds
    /// `date` to both), body.
    async fn wire<B>(response: Response<B>) -> (StatusCode, Vec<(String, String)>, Bytes)
    where
        B: hyper::body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        (parts.status, headers, body.collect().await.unwrap().to_bytes())
    }

    /// `healthproxy_http_requests_total` of `route` and `code`.
    fn requests(metrics: &Metrics, route: &str, code: StatusCode) -> u64 {
        let series = format!(
            "healthproxy_http_requests_total{{code=\"{}\",route=\"{route}\"}} ",
            code.as_str()
        );
        metrics
            .render(&State::new(&[]))
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Asserts that every plain probe gets the router's answer from the
    /// fast path, and is counted in the router's series.
    async fn fast_path_answers_as_the_router(endpoints: &Endpoints, metrics: &Metrics, expected: [u16; 4]) {
        for ((path, _), expected) in PATHS.into_iter().zip(expected) {
            for method in [Method::GET, Method::HEAD] {
                for accept in [None, Some("*/*"), Some("text/plain")] {
                    let what = format!("{method} {path} accept={accept:?}");
                    let fast = endpoints.answer(&request(&method, path, accept));
                    let fast = wire(fast.unwrap_or_else(|| panic!("{what}: not on the fast path"))).await;
                    assert_eq!(fast.0.as_u16(), expected, "{what}");
                    let before = requests(metrics, path, fast.0);
                    let routed = endpoints.router.clone().oneshot(request(&method, path, accept));
                    let routed = wire(routed.await.unwrap()).await;
                    assert_eq!(fast, routed, "{what}");
                    assert_eq!(
                        requests(metrics, path, fast.0),
                        before + 1,
                        "{what}: the router counts in the same series"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn the_fast_path_answers_as_the_router_in_every_state() {
        let (endpoints, state, metrics) = endpoints();
        // Not started: startup and readiness fail, liveness passes.
        fast_path_answers_as_the_router(&endpoints, &metrics, [200, 503, 200, 503]).await;
        state.record(0, 0, Outcome::success("up"), Duration::ZERO);
        fast_path_answers_as_the_router(&endpoints, &metrics, [200, 200, 200, 200]).await;
        let drain = |phase| state.step_drain(|p| std::mem::replace(p, phase) != phase);
        drain(Phase::Draining);
        fast_path_answers_as_the_router(&endpoints, &metrics, [200, 200, 200, 503]).await;
        drain(Phase::Serving(None));
        state.record(0, 0, Outcome::failure(Reason::Refused, "down"), Duration::ZERO);
        fast_path_answers_as_the_router(&endpoints, &metrics, [200, 200, 503, 503]).await;
    }

    #[tokio::test]
    async fn the_fast_path_counts_its_answers() {
        let (endpoints, _, metrics) = endpoints();
        for _ in 0..3 {
            let response = endpoints
                .call(request(&Method::GET, "/readyz", None))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let response = endpoints
            .call(request(&Method::HEAD, "/livez", None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(requests(&metrics, "/readyz", StatusCode::SERVICE_UNAVAILABLE), 3);
        assert_eq!(requests(&metrics, "/livez", StatusCode::OK), 1);
        assert_eq!(requests(&metrics, "/readyz", StatusCode::OK), 0);
    }

    #[test]
    fn everything_else_goes_to_the_router() {
        let (endpoints, _, _) = endpoints();
        let cases = [
            (Method::POST, "/readyz", None),
            (Method::OPTIONS, "/livez", None),
            (Method::GET, "/readyz?verbose", None),
            (Method::GET, "/readyz?", None),
            (Method::GET, "/readyz?format=json", None),
            (Method::GET, "/readyz", Some("application/json")),
            (Method::HEAD, "/livez", Some("application/health+json")),
            (Method::GET, "/readyz/a", None),
            (Method::GET, "/readyz/", None),
            (Method::GET, "/READYZ", None),
            (Method::GET, "/read%79z", None),
            (Method::GET, "/metrics", None),
            (Method::GET, "/prestop", None),
            (Method::GET, "/healthz?x", None),
        ];
        for (method, uri, accept) in cases {
            assert!(
                endpoints.answer(&request(&method, uri, accept)).is_none(),
                "{method} {uri} accept={accept:?}"
            );
        }
    }
}
