//! The webhook's two listeners: HTTPS with `POST /mutate` for the API
//! server, and plain HTTP with `/healthz` and `/metrics` for the kubelet
//! and Prometheus (which then need no certificate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;

use super::tls::{self, Reloading};
use super::{Outcome, review};
use crate::inject::Options;

/// The largest AdmissionReview read. The API server stores objects of up
/// to 1.5 MiB; a review carries the object (and, on updates, the old one).
pub const MAX_BODY: usize = 4 << 20;
/// Bound on a TLS handshake and on reading a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Admissions by result and their latency.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    admissions: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    /// Every result at zero.
    pub fn new() -> Metrics {
        let admissions = IntCounterVec::new(
            Opts::new(
                "healthproxy_webhook_admissions_total",
                "Admission requests answered, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "healthproxy_webhook_admission_duration_seconds",
                "Time to answer an admission request, from its body read to its answer.",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["result"],
        )
        .expect("valid metric");
        let registry = Registry::new();
        registry
            .register(Box::new(admissions.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        for outcome in Outcome::ALL {
            admissions.with_label_values(&[outcome.as_str()]);
            latency.with_label_values(&[outcome.as_str()]);
        }
        Metrics {
            registry,
            admissions,
            latency,
        }
    }

    fn record(&self, outcome: Outcome, took: Duration) {
        self.admissions.with_label_values(&[outcome.as_str()]).inc();
        self.latency
            .with_label_values(&[outcome.as_str()])
            .observe(took.as_secs_f64());
    }

    fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[derive(Clone)]
struct App {
    options: Arc<Options>,
    metrics: Metrics,
}

/// The HTTPS routes: `POST /mutate`.
pub fn mutate_routes(options: Options, metrics: Metrics) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        // Refused on its Content-Length before a byte is read, or once
        // MAX_BODY bytes have come without one.
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(DefaultBodyLimit::disable())
        .with_state(App {
            options: Arc::new(options),
            metrics,
        })
}

/// The plain routes: `/healthz` and `/metrics`.
pub fn admin_routes(metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    m.render(),
                )
            }),
        )
        .with_state(metrics)
}

async fn mutate(State(app): State<App>, body: Bytes) -> Response {
    let started = Instant::now();
    // The transformation is CPU work of well under a millisecond: done in
    // place rather than handed to a blocking thread.
    let answer = review(&body, &app.options);
    let (response, outcome) = match answer {
        Ok((review, outcome)) => (axum::Json(review).into_response(), outcome),
        Err(message) => {
            tracing::warn!("bad admission request: {message}");
            (
                (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
                Outcome::BadRequest,
            )
        }
    };
    app.metrics.record(outcome, started.elapsed());
    response
}

/// Serves `routes` over TLS with `certs` on `listener` until `stop`, then
/// lets open requests finish for a grace.
pub async fn serve_tls(
    listener: TcpListener,
    certs: Arc<Reloading>,
    routes: Router,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()));
    let tasks = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(routes.clone());
        let builder = builder.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await;
}

/// `healthproxy webhook`: both listeners, and the certificate watcher,
/// until `stop`.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    certs: Arc<Reloading>,
    options: Options,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tls_listener = crate::server::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let admin_listener = crate::server::bind(admin).with_context(|| format!("cannot listen on {admin}"))?;
    tracing::info!(
        listen = %tls_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        version = env!("CARGO_PKG_VERSION"),
        "healthproxy webhook serving"
    );
    let metrics = Metrics::new();
    let routes = mutate_routes(options, metrics.clone());
    let watcher = tokio::spawn(certs.clone().watch(tls::RELOAD_EVERY));
    let admin_stop = stop.clone();
    let admin_server = tokio::spawn(async move {
        axum::serve(admin_listener, admin_routes(metrics))
            .with_graceful_shutdown(async move { admin_stop.cancelled().await })
            .await
    });
    serve_tls(tls_listener, certs, routes, stop).await;
    watcher.abort();
    admin_server.await??;
    Ok(())
}
