//! The webhook's two listeners: HTTPS with `POST /mutate` for the API
//! server, and plain HTTP with `/healthz` and `/metrics` for the kubelet
//! and Prometheus (which then need no certificate).
//!
//! Every pod can reach the HTTPS port, so what a client can make the
//! webhook hold is bounded (README, "Limits and failure behaviour"): the
//! connections on each port (the oldest closed to make room), the time for
//! a TLS handshake, a request head and a request body, a connection's read
//! buffer, and the bytes of request bodies held at once across every
//! connection ([`BODY_BUDGET`]); [`memory_budget`] adds them up.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;

use super::tls::{self, Reloading};
use super::{Outcome, review};
use crate::inject::Options;
use crate::server::accept::Listener;
use crate::server::held::Held;

/// The largest AdmissionReview read. The API server stores objects of up
/// to 1.5 MiB; a review carries the object (and, on updates, the old one).
pub(crate) const MAX_BODY: usize = 4 << 20;
/// Bound on a TLS handshake and on reading a request's head; a kept-alive
/// connection that sends no new head within it is closed too (hyper's
/// header timer runs from the end of the last answer).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request's body to arrive whole, from its head: the API
/// server gives a webhook at most 30 s for the whole call (deploy/webhook
/// sets 5 s), and sends the body at once.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of request bodies held at once, across every connection: a
/// request that finds them spent gets 503 and its connection is closed.
/// Four of the largest reviews at once; 25 connections sending 4 MB each
/// slowly OOM-killed the webhook under its 128 MiB without it (issue 27).
pub(crate) const BODY_BUDGET: usize = 16 << 20;
/// Connections open at once on the HTTPS port; one more closes the
/// oldest. The API server keeps a few per replica.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Connections open at once on the plain port (the kubelet's probes and
/// Prometheus); one more closes the oldest.
pub(crate) const MAX_ADMIN_CONNECTIONS: usize = 16;
/// hyper's read buffer, which holds a request head whole: the API
/// server's are a few hundred bytes.
const READ_BUFFER: usize = 16 << 10;
/// How long open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one connection may hold at most: rustls' buffers (a 16 KiB record
/// each way and its state), hyper's read buffer and its 8 KiB response
/// head buffer, the task, and the kernel's socket buffers (8 KiB each
/// way, `server::bind`).
const BUDGET_PER_CONNECTION: u64 = 96 << 10;
/// What the idle webhook may hold: code and data from the binary, the
/// runtime, the metrics, allocator slack (a debug build's 14 MiB).
const BUDGET_BASE: u64 = 16 << 20;

/// The webhook's memory budget (README, "Limits and failure behaviour"):
/// what it may hold for its clients, whatever they send, beside the work
/// of answering the reviews it has read whole.
pub const fn memory_budget() -> u64 {
    BUDGET_BASE
        + (MAX_CONNECTIONS + MAX_ADMIN_CONNECTIONS) as u64 * BUDGET_PER_CONNECTION
        + BODY_BUDGET as u64
}

/// Admissions by result and their latency, and the serving certificate's
/// expiry.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    admissions: IntCounterVec,
    latency: HistogramVec,
    cert_expiry: Gauge,
    /// The pair whose expiry `cert_expiry` shows, read at each scrape.
    certs: Option<Arc<Reloading>>,
}

impl Metrics {
    /// Every result at zero.
    pub(crate) fn new() -> Metrics {
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
        let cert_expiry = Gauge::new(
            "healthproxy_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate chain first expires (its earliest notAfter), in seconds since the epoch.",
        )
        .expect("valid metric");
        let registry = Registry::new();
        registry
            .register(Box::new(admissions.clone()))
            .expect("registered once");
        registry
            .register(Box::new(cert_expiry.clone()))
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
            cert_expiry,
            certs: None,
        }
    }

    /// Shows the expiry of the pair `certs` serves.
    pub(crate) fn serving(mut self, certs: Arc<Reloading>) -> Metrics {
        self.certs = Some(certs);
        self
    }

    fn record(&self, outcome: Outcome, took: Duration) {
        self.admissions.with_label_values(&[outcome.as_str()]).inc();
        self.latency
            .with_label_values(&[outcome.as_str()])
            .observe(took.as_secs_f64());
    }

    fn render(&self) -> String {
        if let Some(expires) = self.certs.as_ref().and_then(|c| c.expires()) {
            let at = expires.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.cert_expiry.set(at.as_secs_f64());
        }
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
    bodies: Arc<Bodies>,
}

/// The HTTPS routes: `POST /mutate`.
pub(crate) fn mutate_routes(options: Options, metrics: Metrics) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        // Refused on its Content-Length before a byte is read, or once
        // MAX_BODY bytes have come without one.
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(DefaultBodyLimit::disable())
        .with_state(App {
            options: Arc::new(options),
            metrics,
            bodies: Arc::new(Bodies::new()),
        })
}

/// The plain routes: `/healthz` and `/metrics`.
pub(crate) fn admin_routes(metrics: Metrics) -> Router {
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

/// Why a body was not read whole.
#[derive(Debug)]
enum Unread {
    /// Not whole within [`BODY_TIMEOUT`]: 408.
    Late,
    /// [`BODY_BUDGET`] is spent, and no other body could make room, or
    /// this one made room for another: 503.
    Busy,
    /// Over [`MAX_BODY`], or the connection failed: 413 or 400.
    Refused(StatusCode, String),
}

impl IntoResponse for Unread {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Unread::Late => (
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
            ),
            Unread::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: too many request bodies are being received at once".to_string(),
            ),
            Unread::Refused(status, message) => (status, message),
        };
        // Whatever is left of the body is not read: the connection goes.
        ([(header::CONNECTION, "close")], (status, format!("{message}\n"))).into_response()
    }
}

/// The request bodies being received: [`BODY_BUDGET`] in KiB permits,
/// and who holds them, oldest first.
struct Bodies {
    budget: Arc<Semaphore>,
    readers: Mutex<(u64, std::collections::VecDeque<(u64, CancellationToken)>)>,
}

/// One body being received: leaves the table when dropped.
struct Reader<'a> {
    bodies: &'a Bodies,
    id: u64,
    evicted: CancellationToken,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut readers = self.bodies.readers.lock().expect("not poisoned");
        readers.1.retain(|(id, _)| *id != self.id);
    }
}

impl Bodies {
    fn new() -> Bodies {
        Bodies {
            budget: Arc::new(Semaphore::new(BODY_BUDGET >> 10)),
            readers: Mutex::new((0, std::collections::VecDeque::new())),
        }
    }

    fn reader(&self) -> Reader<'_> {
        let mut readers = self.readers.lock().expect("not poisoned");
        let id = readers.0;
        readers.0 += 1;
        let evicted = CancellationToken::new();
        readers.1.push_back((id, evicted.clone()));
        Reader {
            bodies: self,
            id,
            evicted,
        }
    }

    /// `kib` permits for `reader`. When the budget is spent, the body that
    /// has been arriving longest (never `reader`'s own) is given up to make
    /// room, as the probe port drops its oldest half-sent head: the API
    /// server sends a body at once, so a body still arriving after the
    /// others is the one a client is dripping.
    async fn take(&self, reader: &Reader<'_>, kib: usize) -> Result<OwnedSemaphorePermit, Unread> {
        let kib = u32::try_from(kib).map_err(|_| Unread::Busy)?;
        let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
        loop {
            if let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(kib) {
                return Ok(permit);
            }
            if reader.evicted.is_cancelled() || tokio::time::Instant::now() >= deadline {
                return Err(Unread::Busy);
            }
            {
                let readers = self.readers.lock().expect("not poisoned");
                // One at a time: a body given up gives its share back as
                // soon as its task sees that, and leaves the table.
                if !readers.1.iter().any(|(_, t)| t.is_cancelled()) {
                    match readers.1.iter().find(|(id, _)| *id != reader.id) {
                        Some((_, oldest)) => oldest.cancel(),
                        None => return Err(Unread::Busy),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// How long a body waits for the one evicted to make room to give back
/// its share of the budget.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Reads `body` whole within [`BODY_TIMEOUT`], holding a share of the
/// bodies' budget for each byte of buffer it takes; the bytes and their
/// share, which goes back when dropped.
async fn read_body(body: Body, bodies: &Bodies) -> Result<(Bytes, OwnedSemaphorePermit), Unread> {
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let reader = bodies.reader();
    // Sized once from Content-Length where there is one (the limit layer
    // has refused one over MAX_BODY), so that the buffer never doubles.
    let expected = usize::try_from(body.size_hint().exact().unwrap_or(0))
        .unwrap_or(MAX_BODY)
        .min(MAX_BODY);
    let mut held = bodies.take(&reader, expected.div_ceil(1024)).await?;
    let mut buf = Vec::with_capacity(expected);
    let mut body = std::pin::pin!(body);
    loop {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
        let frame = tokio::select! {
            frame = tokio::time::timeout_at(deadline, next) => frame.map_err(|_| Unread::Late)?,
            () = reader.evicted.cancelled() => return Err(Unread::Busy),
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let too_large = std::iter::from_fn(|| {
                let now = cause?;
                cause = now.source();
                Some(now)
            })
            .any(|c| c.is::<http_body_util::LengthLimitError>());
            if too_large {
                Unread::Refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {MAX_BODY} bytes"),
                )
            } else {
                Unread::Refused(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else { continue };
        let wanted = buf.len() + data.len();
        if wanted > buf.capacity() {
            // Grown as a Vec grows, and the share taken for the new size.
            let capacity = wanted.max(2 * buf.capacity()).min(MAX_BODY.max(wanted));
            held.merge(
                bodies
                    .take(&reader, capacity.div_ceil(1024) - buf.capacity().div_ceil(1024))
                    .await?,
            );
            buf.reserve_exact(capacity - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), held))
}

async fn mutate(State(app): State<App>, request: Request) -> Response {
    let (body, _held) = match read_body(request.into_body(), &app.bodies).await {
        Ok(read) => read,
        Err(unread) => {
            tracing::debug!("admission request not read: {unread:?}");
            return unread.into_response();
        }
    };
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
pub(crate) async fn serve_tls(
    listener: TcpListener,
    certs: Arc<Reloading>,
    routes: Router,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()));
    serve_capped(listener, MAX_CONNECTIONS, routes, stop, move |stream| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await;
}

/// Serves `routes` over plain HTTP/1.1 on `listener` until `stop`, as
/// [`serve_tls`] does over TLS.
pub(crate) async fn serve_plain(listener: TcpListener, routes: Router, stop: CancellationToken) {
    serve_capped(
        listener,
        MAX_ADMIN_CONNECTIONS,
        routes,
        stop,
        |stream| async move { Some(stream) },
    )
    .await;
}

/// The accept loop of both ports: at most `cap` connections open (one
/// more closes the oldest), each opened by `open` (the TLS handshake) and
/// served by hyper with bounded head reads and read buffer, until `stop`;
/// then open requests get a grace to finish.
async fn serve_capped<S, F>(
    listener: TcpListener,
    cap: usize,
    routes: Router,
    stop: CancellationToken,
    open: impl Fn(Held) -> F,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Option<S>> + Send + 'static,
{
    let tasks = TaskTracker::new();
    let mut listener = Listener::new(listener, cap, "webhook");
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(READ_BUFFER);
    loop {
        let (stream, _, admitted) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let opening = open(Held::new(stream, admitted, None));
        let service = TowerToHyperService::new(routes.clone());
        let builder = builder.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let Some(stream) = opening.await else { return };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
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
pub(crate) async fn run(
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
    // Container runtimes give a soft limit of 1024 open files: past it,
    // accepting fails and the probes of /healthz with it.
    match crate::server::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    let metrics = Metrics::new().serving(Arc::clone(&certs));
    let routes = mutate_routes(options, metrics.clone());
    let watcher = tokio::spawn(certs.clone().watch(tls::RELOAD_EVERY));
    let admin_server = tokio::spawn(serve_plain(admin_listener, admin_routes(metrics), stop.clone()));
    serve_tls(tls_listener, certs, routes, stop).await;
    watcher.abort();
    admin_server.await?;
    Ok(())
}
