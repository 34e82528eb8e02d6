//! Tests for the http check, against real HTTP and HTTPS servers on
//! 127.0.0.1 (kubelet-semantics §1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use healthproxy::check::{HttpCheck, Outcome, Verdict};
use healthproxy::config::{HttpMethod, HttpSpec, Scheme, TlsSpec};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A spec for `http://127.0.0.1:port/path` with every option at its
/// default; `path` as written in a config, unparsed.
pub(super) fn spec(port: u16, path: &str) -> HttpSpec {
    let mut spec = HttpSpec::from_url(&format!("http://127.0.0.1:{port}/")).unwrap();
    spec.path = path.into();
    spec
}

async fn run(spec: HttpSpec) -> Outcome {
    HttpCheck::new(spec).unwrap().run(TIMEOUT).await
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) headers: HeaderMap,
    pub(super) version: Version,
}

pub(super) type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP(S) server on 127.0.0.1:0 that records requests and counts the
/// connections it accepts; stopped on drop.
pub(super) struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub(super) async fn start(
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Server {
        Server::start_with(None, Arc::new(handler)).await
    }

    pub(super) async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (Arc::clone(&accepted), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (handler, log, tls) = (Arc::clone(&handler), Arc::clone(&log), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve(stream, h2, handler, log).await;
                            }
                        }
                        None => serve(stream, false, handler, log).await,
                    }
                });
            }
        });
        Server {
            addr,
            accepted,
            seen,
            task,
        }
    }

    pub(super) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve<S>(stream: S, h2: bool, handler: Handler, log: Arc<Mutex<Vec<Seen>>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let seen = Seen {
            method: req.method().clone(),
            path: req.uri().to_string(),
            headers: req.headers().clone(),
            version: req.version(),
        };
        log.lock().unwrap().push(seen.clone());
        let response = handler(&seen);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }
}

pub(super) fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(body.into()))
        .unwrap()
}

fn redirect(status: u16, location: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("location", location)
        .body(Full::new(Bytes::from("<a>moved</a>")))
        .unwrap()
}

/// Reads a request head (up to the blank line) from a raw socket.
async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        head.extend_from_slice(&buf[..n]);
    }
}

fn assert_outcome(outcome: &Outcome, verdict: Verdict, message: &str) {
    assert_eq!(
        (outcome.verdict, outcome.message.as_str()),
        (verdict, message),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn status_200_is_a_success() {
    let server = Server::start(|_| reply(200, "ok")).await;
    let outcome = run(spec(server.port(), "/healthz?full=1")).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, "/healthz?full=1");
    assert_eq!(seen[0].headers["host"], format!("127.0.0.1:{}", server.port()));
}

#[tokio::test]
async fn status_500_is_a_failure_without_the_body() {
    let server = Server::start(|_| reply(500, "secret stack trace")).await;
    let outcome = run(spec(server.port(), "/")).await;
    assert_outcome(
        &outcome,
        Verdict::Failure,
        "HTTP probe failed with statuscode: 500",
    );
}

#[tokio::test]
async fn status_404_is_a_failure() {
    let server = Server::start(|_| reply(404, "")).await;
    let outcome = run(spec(server.port(), "/")).await;
    assert_outcome(
        &outcome,
        Verdict::Failure,
        "HTTP probe failed with statuscode: 404",
    );
}

#[tokio::test]
async fn status_399_is_a_warning_with_the_body() {
    let server = Server::start(|_| reply(399, "odd but fine")).await;
    let outcome = run(spec(server.port(), "/")).await;
    assert_outcome(
        &outcome,
        Verdict::Warning,
        "Probe terminated redirects, Response body: odd but fine",
    );
    assert!(outcome.verdict.is_success());
}

#[tokio::test]
async fn redirect_without_location_is_a_warning() {
    let server = Server::start(|_| reply(302, "nowhere")).await;
    let outcome = run(spec(server.port(), "/")).await;
    assert_outcome(
        &outcome,
        Verdict::Warning,
        "Probe terminated redirects, Response body: nowhere",
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn same_host_redirect_to_another_port_is_followed() {
    let target = Server::start(|_| reply(200, "landed")).await;
    let location = format!("http://127.0.0.1:{}/landing?x=1", target.port());
    let origin = Server::start(move |_| redirect(302, &location)).await;
    let outcome = run(spec(origin.port(), "/start")).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );
    assert_eq!(origin.seen().len(), 1);
    let seen = target.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/landing?x=1");
    assert_eq!(seen[0].headers["host"], format!("127.0.0.1:{}", target.port()));
    // Each hop is a new connection.
    assert_eq!((origin.accepted(), target.accepted()), (1, 1));
}

#[tokio::test]
async fn relative_redirect_is_resolved_against_the_current_url() {
    let server = Server::start(|seen| match seen.path.as_str() {
        "/a/b/start" => redirect(301, "../next?y=2"),
        "/a/next?y=2" => redirect(307, "/final"),
        "/final" => reply(204, ""),
        _ => reply(404, ""),
    })
    .await;
    let outcome = run(spec(server.port(), "/a/b/start")).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 204",
    );
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/a/b/start", "/a/next?y=2", "/final"]);
}

#[tokio::test]
async fn same_host_redirect_loop_fails_after_ten_redirects() {
    let server = Server::start(|_| redirect(302, "/loop")).await;
    let outcome = run(spec(server.port(), "/loop")).await;
    assert_outcome(
        &outcome,
        Verdict::Failure,
        "Get \"/loop\": stopped after 10 redirects",
    );
    assert_eq!(server.seen().len(), 10);
}

#[tokio::test]
async fn redirect_to_another_host_is_a_warning_and_not_followed() {
    let other = Server::start(|_| reply(200, "elsewhere")).await;
    let location = format!("http://localhost:{}/", other.port());
    let origin = Server::start(move |_| {
        Response::builder()
            .status(302)
            .header("location", location.as_str())
            .body(Full::new(Bytes::from("<a href=\"elsewhere\">Found</a>.")))
            .unwrap()
    })
    .await;
    let outcome = run(spec(origin.port(), "/")).await;
    assert_outcome(
        &outcome,
        Verdict::Warning,
        "Probe terminated redirects, Response body: <a href=\"elsewhere\">Found</a>.",
    );
    assert!(other.seen().is_empty());
    assert_eq!(other.accepted(), 0);
}

#[tokio::test]
async fn host_header_override_is_kept_after_a_relative_redirect_only() {
    // net/http/client.go keeps a caller's Host header through a redirect
    // only when the Location is relative (Go issue 22233); the kubelet's
    // test redirects to "/success" (http_test.go
    // `TestHTTPProbeChecker_HostHeaderPreservedAfterRedirect`).
    let target = Server::start(|_| reply(200, "")).await;
    let absolute = format!("http://127.0.0.1:{}/after", target.port());
    let origin = Server::start(move |seen| match seen.path.as_str() {
        "/" => redirect(302, "/relative"),
        "/relative" => redirect(302, &absolute),
        _ => reply(500, ""),
    })
    .await;
    let mut spec = spec(origin.port(), "/");
    spec.headers = headers(&[("HOST", "app.example.test")]);
    let outcome = run(spec).await;
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");
    let first = origin.seen();
    let second = target.seen();
    assert_eq!(first[0].headers.get_all("host").iter().count(), 1);
    assert_eq!(first[0].headers["host"], "app.example.test");
    assert_eq!(first[1].headers["host"], "app.example.test");
    assert_eq!(
        second[0].headers["host"],
        format!("127.0.0.1:{}", target.port()).as_str()
    );
}

#[tokio::test]
async fn default_headers_are_sent_with_a_fresh_connection_each() {
    let server = Server::start(|_| reply(200, "")).await;
    let outcome = run(spec(server.port(), "/")).await;
    assert_eq!(outcome.verdict, Verdict::Success);
    let h = &server.seen()[0].headers;
    assert_eq!(h["user-agent"], "kube-probe/1.36");
    assert_eq!(h["accept"], "*/*");
    assert_eq!(h["connection"], "close");
    assert!(h.get("accept-encoding").is_none());
}

#[tokio::test]
async fn custom_headers_replace_defaults_and_repeat_in_order() {
    let server = Server::start(|_| reply(200, "")).await;
    let mut spec = spec(server.port(), "/");
    spec.headers = headers(&[
        ("user-agent", "my-probe/2"),
        ("X-Tag", "one"),
        ("x-tag", "two"),
        ("Accept", "application/json"),
    ]);
    assert_eq!(run(spec).await.verdict, Verdict::Success);
    let h = &server.seen()[0].headers;
    assert_eq!(h.get_all("user-agent").iter().collect::<Vec<_>>(), ["my-probe/2"]);
    assert_eq!(
        h.get_all("accept").iter().collect::<Vec<_>>(),
        ["application/json"]
    );
    assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["one", "two"]);
}

#[tokio::test]
async fn empty_values_remove_the_default_headers() {
    let server = Server::start(|_| reply(200, "")).await;
    let mut spec = spec(server.port(), "/");
    spec.headers = headers(&[("User-Agent", ""), ("accept", "")]);
    assert_eq!(run(spec).await.verdict, Verdict::Success);
    let h = &server.seen()[0].headers;
    assert!(h.get("user-agent").is_none(), "{h:?}");
    assert!(h.get("accept").is_none(), "{h:?}");
}

#[test]
fn invalid_headers_are_rejected_when_prepared() {
    let mut bad_value = spec(1, "/");
    bad_value.headers = headers(&[("X-Bad", "line\nbreak")]);
    let err = HttpCheck::new(bad_value).unwrap_err();
    assert!(err.contains("x-bad") && err.contains("invalid value"), "{err}");

    let mut bad_name = spec(1, "/");
    bad_name.headers = headers(&[("Bad Name", "v")]);
    let err = HttpCheck::new(bad_name).unwrap_err();
    assert!(
        err.contains("\"Bad Name\"") && err.contains("invalid header name"),
        "{err}"
    );
}

#[tokio::test]
async fn head_method_is_sent_and_no_body_is_needed() {
    let server = Server::start(|_| reply(200, "ignored")).await;
    let mut spec = spec(server.port(), "/");
    spec.method = HttpMethod::Head;
    let outcome = run(spec).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );
    assert_eq!(server.seen()[0].method, Method::HEAD);
}

#[tokio::test]
async fn a_large_body_is_cut_at_10_kib_without_reading_the_rest() {
    // The server announces 1 MiB, sends 64 KiB and then waits: a client that
    // read everything would wait for the rest until its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        let size = 1024 * 1024;
        stream
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let sent = 64 * 1024;
        stream.write_all(&vec![b'x'; sent]).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        );
        if !closed {
            let _ = stream.write_all(&vec![b'x'; size - sent]).await;
        }
        let _ = tx.send(closed);
    });
    let started = Instant::now();
    let outcome = HttpCheck::new(spec(port, "/big"))
        .unwrap()
        .run(Duration::from_secs(3))
        .await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        closed,
        "the client kept the connection open instead of dropping the rest of the body"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn body_contains_looks_at_the_first_10_kib_only() {
    let server = Server::start(|seen| {
        let mut body = "a".repeat(10 * 1024 - 6);
        if seen.path == "/late" {
            body.push('a');
        }
        body.push_str("NEEDLE");
        body.push_str(&"z".repeat(20_000));
        reply(200, body)
    })
    .await;
    let mut inside = spec(server.port(), "/edge");
    inside.body_contains = Some("NEEDLE".into());
    let outcome = run(inside).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );

    let mut beyond = spec(server.port(), "/late");
    beyond.body_contains = Some("NEEDLE".into());
    let outcome = run(beyond).await;
    assert_outcome(
        &outcome,
        Verdict::Failure,
        "HTTP probe failed: response body does not contain \"NEEDLE\"",
    );
}

#[tokio::test]
async fn a_body_cut_short_by_the_server_is_unknown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
            .await;
    });
    let outcome = run(spec(port, "/")).await;
    // The kubelet's prober returns the bare read error (http.go
    // `DoHTTPProbe`), which the worker throws away.
    assert_outcome(&outcome, Verdict::Unknown, "unexpected EOF");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        let _ = tx.send(());
        // Hold the connection open without answering.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = HttpCheck::new(spec(port, "/slow")).unwrap().run(timeout).await;
    let took = started.elapsed();
    assert_outcome(
        &outcome,
        Verdict::Failure,
        &format!(
            "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded \
             (Client.Timeout exceeded while awaiting headers)"
        ),
    );
    assert!(took >= timeout && took < Duration::from_secs(2), "took {took:?}");
    // The request did reach the server: the wait was for the headers.
    tokio::time::timeout(Duration::from_secs(1), rx)
        .await
        .unwrap()
        .unwrap();
}

/// The phases of a run, as blackbox_exporter's
/// `probe_http_duration_seconds{phase}`: the app's think time is
/// `processing`, its slow body `transfer`; plain HTTP has no `tls`.
#[tokio::test]
async fn a_run_times_its_phases() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (think, drip) = (Duration::from_millis(200), Duration::from_millis(150));
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        tokio::time::sleep(think).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            .await
            .unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(drip).await;
        stream.write_all(b"ok").await.unwrap();
    });
    let started = Instant::now();
    let outcome = HttpCheck::new(spec(port, "/")).unwrap().run(TIMEOUT).await;
    let took = started.elapsed();
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");
    let phases = outcome.phases.expect("an HTTP run is timed");
    assert!(phases.processing >= think, "{phases:?}");
    assert!(phases.transfer >= drip, "{phases:?}");
    assert_eq!(phases.tls, Duration::ZERO, "{phases:?}");
    let total: Duration = phases.durations().iter().sum();
    assert!(total <= took, "{phases:?} within {took:?}");
    assert!(phases.resolve + phases.connect < think, "{phases:?}");
}

#[tokio::test]
async fn a_body_that_stalls_is_unknown_when_the_timeout_runs_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
            .await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let outcome = HttpCheck::new(spec(port, "/"))
        .unwrap()
        .run(Duration::from_millis(300))
        .await;
    assert_outcome(
        &outcome,
        Verdict::Unknown,
        "context deadline exceeded (Client.Timeout or context cancellation while reading body)",
    );
}

#[tokio::test]
async fn connection_refused_is_a_failure_in_go_words() {
    let (_held, port) = crate::support::refusing_port();
    let outcome = run(spec(port, "/healthz")).await;
    assert_outcome(
        &outcome,
        Verdict::Failure,
        &format!(
            "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ),
    );
}

#[tokio::test]
async fn every_run_uses_a_fresh_connection() {
    let server = Server::start(|_| reply(200, "ok")).await;
    let check = HttpCheck::new(spec(server.port(), "/")).unwrap();
    for _ in 0..3 {
        assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);
    }
    assert_eq!(server.accepted(), 3);
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let server = Server::start(|_| reply(200, "ok")).await;
    let mut spec = spec(server.port(), "/");
    spec.keep_alive = true;
    let check = HttpCheck::new(spec).unwrap();
    for _ in 0..3 {
        assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);
    }
    assert_eq!(server.accepted(), 1);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|s| s.headers.get("connection").is_none()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn keep_alive_dials_again_when_the_server_closed_the_idle_connection() {
    // Answers one request per connection, without `Connection: close`, then
    // hangs up: the kept connection is dead by the next run.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let mut spec = spec(port, "/");
    spec.keep_alive = true;
    let check = HttpCheck::new(spec).unwrap();
    for _ in 0..3 {
        let outcome = check.run(TIMEOUT).await;
        assert_outcome(
            &outcome,
            Verdict::Success,
            "HTTP probe succeeded with statuscode: 200",
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    server.abort();
}

// === HTTPS ===

pub(crate) struct Tls {
    cert_pem: String,
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

/// A self-signed certificate for 127.0.0.1 and localhost, named `name`, and
/// an acceptor presenting it that speaks HTTP/1.1 only.
fn self_signed(name: &str) -> Tls {
    self_signed_speaking(name, &[b"http/1.1"])
}

/// The same, with the ALPN protocols `alpn`.
pub(crate) fn self_signed_speaking(name: &str, alpn: &[&[u8]]) -> Tls {
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&signing_key).unwrap();
    let cert_der = cert.der().clone();
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Tls {
        cert_pem: cert.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

async fn https_server(tls: &Tls) -> Server {
    Server::start_with(
        Some(tls.acceptor.clone()),
        Arc::new(|_: &Seen| reply(200, "secure")),
    )
    .await
}

fn https_spec(port: u16, ca_file: Option<PathBuf>) -> HttpSpec {
    HttpSpec {
        scheme: Scheme::Https,
        tls: TlsSpec {
            insecure_skip_verify: ca_file.is_none(),
            ca_file,
            ..TlsSpec::default()
        },
        ..spec(port, "/secure")
    }
}

#[tokio::test]
async fn https_without_ca_file_skips_verification() {
    let tls = self_signed("server");
    let server = https_server(&tls).await;
    let outcome = run(https_spec(server.port(), None)).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );
    assert_eq!(server.seen()[0].path, "/secure");
}

#[tokio::test]
async fn https_negotiates_http2_as_the_kubelet_does_and_sends_the_host_as_authority() {
    // An HTTP/2-only server: a client offering only HTTP/1.1 fails the
    // handshake with it.
    let tls = self_signed_speaking("server", &[b"h2"]);
    let server = https_server(&tls).await;
    let outcome = run(https_spec(server.port(), None)).await;
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.message);
    let overridden = run(HttpSpec {
        headers: headers(&[("Host", "example.test")]),
        keep_alive: true,
        ..https_spec(server.port(), None)
    })
    .await;
    assert_eq!(overridden.verdict, Verdict::Success, "{}", overridden.message);
    let seen = server.seen();
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(
        seen[0].path,
        format!("https://127.0.0.1:{}/secure", server.port())
    );
    assert!(
        !seen[0].headers.contains_key("connection"),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(
        seen[1].path, "https://example.test/secure",
        "the Host header is the authority"
    );

    // A server that speaks both gets HTTP/2; one that speaks HTTP/1.1 only
    // gets HTTP/1.1.
    let both = https_server(&self_signed_speaking("server", &[b"h2", b"http/1.1"])).await;
    run(https_spec(both.port(), None)).await;
    assert_eq!(both.seen()[0].version, Version::HTTP_2);
    let http1 = https_server(&self_signed("server")).await;
    run(https_spec(http1.port(), None)).await;
    assert_eq!(http1.seen()[0].version, Version::HTTP_11);
}

#[tokio::test]
async fn https_with_the_servers_ca_file_verifies() {
    let tls = self_signed("server");
    let server = https_server(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.cert_pem).unwrap();
    let outcome = run(https_spec(server.port(), Some(ca))).await;
    assert_outcome(
        &outcome,
        Verdict::Success,
        "HTTP probe succeeded with statuscode: 200",
    );
}

#[tokio::test]
async fn https_with_another_ca_file_fails_on_the_certificate() {
    let tls = self_signed("server");
    let server = https_server(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other.pem");
    std::fs::write(&ca, self_signed("another ca").cert_pem).unwrap();
    let outcome = run(https_spec(server.port(), Some(ca))).await;
    assert_eq!(outcome.verdict, Verdict::Failure, "{outcome:?}");
    let prefix = format!("Get \"https://127.0.0.1:{}/secure\": tls: ", server.port());
    assert!(outcome.message.starts_with(&prefix), "{outcome:?}");
    assert!(
        outcome
            .message
            .ends_with("invalid peer certificate: UnknownIssuer"),
        "{outcome:?}"
    );
    assert!(server.seen().is_empty());
}

#[test]
fn a_ca_file_that_does_not_load_is_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = HttpCheck::new(https_spec(1, Some(missing.clone()))).unwrap_err();
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = HttpCheck::new(https_spec(1, Some(empty.clone()))).unwrap_err();
    assert!(
        err.contains(&empty.display().to_string()) && err.contains("no certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn an_app_with_many_response_headers_passes_from_the_first_run_and_then_gets_one_request_a_run() {
    // Go reads any number of header lines; the check parses with room for
    // 100 and, past that, sends the request again with room for 10,000,
    // and keeps that room for the check's later runs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    tokio::spawn(async move {
        let head: String = std::iter::once("HTTP/1.1 200 OK\r\n".to_string())
            .chain((0..500).map(|i| format!("x-h{i}: {i}\r\n")))
            .chain(std::iter::once(
                "content-length: 2\r\nconnection: close\r\n\r\nok".to_string(),
            ))
            .collect();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let head = head.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(head.as_bytes()).await;
            });
        }
    });
    let check = HttpCheck::new(spec(port, "/")).unwrap();
    for run in 1..=3 {
        let outcome = check.run(TIMEOUT).await;
        assert_eq!(outcome.verdict, Verdict::Success, "run {run}: {outcome:?}");
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        4,
        "two for the first run, then one a run"
    );
}
