//! `http`: one GET (or HEAD) request, judged as the kubelet's HTTP prober
//! judges it (kubelet-semantics §1): 200–399 passes, a redirect to another
//! host is a warning, same-host redirects are followed up to ten times, at
//! most 10 KiB of the body is read, and the whole run is bounded by the
//! timeout.
//!
//! Each run dials a fresh connection and sends `Connection: close`, as the
//! kubelet's `DisableKeepAlives` transport; with `keep_alive` one idle
//! connection to the configured target is kept between runs. HTTPS skips
//! certificate verification unless a CA file is configured, and offers
//! HTTP/2 through ALPN before HTTP/1.1, as the kubelet's transport does
//! (kubelet-semantics §1.1).

mod tls;
mod url;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use self::tls::{ALPN_H2, tls_config};
use self::url::Target;
use super::{Failed, MAX_OUTPUT, Outcome, Reason, Resolver, dial, error_chain};
use crate::config::{Host, HttpMethod, HttpSpec, Scheme};

/// The kubelet's redirect limit: the tenth redirect is refused
/// (kubelet-semantics §1.4).
const MAX_REDIRECTS: usize = 10;

/// Extra time given to `dial`'s own bound, so that the run's deadline fires
/// first and the message is the HTTP client's.
const DIAL_SLACK: Duration = Duration::from_secs(1);

/// A prepared HTTP check: the parsed target, the request headers and the
/// TLS configuration, all built once.
#[derive(Debug)]
pub struct HttpCheck {
    /// The target of the first request (boxed: it is most of the size of
    /// a `Check`).
    start: Box<Target>,
    /// `GET` or `HEAD`.
    method: HttpMethod,
    /// Request headers in order, defaults applied, `Host` taken out.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The `Host` header sent on every hop, when configured.
    host_override: Option<HeaderValue>,
    /// Whether to keep one idle connection between runs.
    keep_alive: bool,
    /// The text the body must contain.
    body_contains: Option<String>,
    /// TLS client settings, used for every `https` hop (a redirect may
    /// switch scheme, so it exists for `http` checks too).
    tls: Arc<ClientConfig>,
    /// With `keep_alive`: the connection left idle by the previous run. A
    /// Tokio mutex because it is taken and given back around awaits; runs
    /// of one check never overlap, so it is never contended.
    idle: tokio::sync::Mutex<Option<Connection>>,
    /// Looks up the host name, one lookup at a time.
    resolver: Resolver,
}

impl HttpCheck {
    /// Prepares the check: validates the headers and path, and loads the CA
    /// file if one is given.
    pub fn new(spec: HttpSpec) -> Result<Self, String> {
        let start = Target {
            scheme: match spec.scheme {
                Scheme::Http => "http".into(),
                Scheme::Https => "https".into(),
            },
            host: spec.host.name.clone(),
            port: spec.port,
            authority: spec.host.authority(spec.port),
            path: if spec.path.is_empty() {
                "/".into()
            } else {
                spec.path.clone()
            },
        };
        start
            .origin_form()
            .map_err(|e| format!("path {:?}: {e}", spec.path))?;

        let mut headers = Vec::with_capacity(spec.headers.len() + 2);
        let mut host_override = None;
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header {name:?}: invalid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header {name}: invalid value {value:?}"))?;
            if name == header::HOST {
                // Go's `headers.Get("Host")`: the first entry wins; an empty
                // one leaves the URL's host.
                if host_override.is_none() && !value.is_empty() {
                    host_override = Some(value);
                }
            } else if value.is_empty() && (name == header::USER_AGENT || name == header::ACCEPT) {
                // An empty value removes the default (kubelet-semantics §1.1).
            } else {
                headers.push((name, value));
            }
        }
        let present = |key: &str| {
            spec.headers
                .iter()
                .any(|(n, _)| n.trim().eq_ignore_ascii_case(key))
        };
        if !present("user-agent") {
            let agent = concat!("healthproxy/", env!("CARGO_PKG_VERSION"));
            headers.push((header::USER_AGENT, HeaderValue::from_static(agent)));
        }
        if !present("accept") {
            headers.push((header::ACCEPT, HeaderValue::from_static("*/*")));
        }

        let tls = tls_config(spec.ca_file.as_deref())?;
        Ok(HttpCheck {
            start: Box::new(start),
            method: spec.method,
            headers,
            host_override,
            keep_alive: spec.keep_alive,
            body_contains: spec.body_contains,
            tls: Arc::new(tls),
            idle: tokio::sync::Mutex::new(None),
            resolver: Resolver::default(),
        })
    }

    /// Sends the request, follows same-host redirects, and judges the last
    /// response; everything within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut target = Target::clone(&self.start);
        let mut sent = 0;
        loop {
            sent += 1;
            let first = sent == 1;
            let request = match self.request(&target) {
                Ok(request) => request,
                Err(e) => return Outcome::unknown(format!("{}: {e}", self.op(&target))),
            };
            let reuse = if first && self.keep_alive {
                self.idle.lock().await.take()
            } else {
                None
            };
            let (response, connection) = match self.send(&target, request, reuse, deadline).await {
                Ok(pair) => pair,
                Err(outcome) => return outcome,
            };
            let status = response.status().as_u16();
            if is_followed(status)
                && let Some(location) = response.headers().get(header::LOCATION)
            {
                let next = match location
                    .to_str()
                    .map_err(|e| e.to_string())
                    .and_then(|l| target.join(l))
                {
                    Ok(next) => next,
                    Err(e) => {
                        return Outcome::unknown(format!(
                            "{}: failed to parse Location header {location:?}: {e}",
                            self.op(&target)
                        ));
                    }
                };
                // kubelet-semantics §1.4: another hostname ends the chain with
                // the redirect itself (a warning); the same one is followed.
                if next.host.eq_ignore_ascii_case(&self.start.host) {
                    if sent >= MAX_REDIRECTS {
                        return Outcome::failure(
                            Reason::Other,
                            format!("{}: stopped after {MAX_REDIRECTS} redirects", self.op(&target)),
                        );
                    }
                    target = next;
                    continue;
                }
            }
            return self
                .judge(&target, status, response, connection, first, deadline)
                .await;
        }
    }

    /// Judges the final response of a run, reading its body if needed, and
    /// keeps the connection for the next run when it may.
    async fn judge(
        &self,
        target: &Target,
        status: u16,
        response: Response<Incoming>,
        connection: Connection,
        first: bool,
        deadline: Instant,
    ) -> Outcome {
        if !(200..400).contains(&status) {
            // No body in the message (kubelet-semantics §1.3, issue 99425).
            return Outcome::failure(
                Reason::Status,
                format!("HTTP probe failed with statuscode: {status}"),
            );
        }
        let body = if self.method == HttpMethod::Head {
            Vec::new()
        } else {
            match read_at_most(response.into_body(), deadline).await {
                Ok(Read::Complete(body) | Read::Truncated(body)) => body,
                Err(BodyError::Timeout) => {
                    return Outcome::failure(
                        Reason::Timeout,
                        format!(
                            "{}: context deadline exceeded \
                             (Client.Timeout or context cancellation while reading body)",
                            self.op(target)
                        ),
                    );
                }
                Err(BodyError::Read(e)) => {
                    return Outcome::unknown(format!(
                        "{}: error reading response body: {}",
                        self.op(target),
                        error_chain(&e)
                    ));
                }
            }
        };
        // A truncated body leaves unread bytes on the wire: hyper closes that
        // connection, and `send` then dials anew.
        if first && self.keep_alive {
            *self.idle.lock().await = Some(connection);
        }
        if let Some(needle) = &self.body_contains
            && !contains(&body, needle.as_bytes())
        {
            return Outcome::failure(
                Reason::Output,
                format!("HTTP probe failed: response body does not contain {needle:?}"),
            );
        }
        if status >= 300 {
            let body = String::from_utf8_lossy(&body);
            Outcome::warning(format!("Probe terminated redirects, Response body: {body}"))
        } else {
            Outcome::success(format!("HTTP probe succeeded with statuscode: {status}"))
        }
    }

    /// Builds the request for one hop.
    fn request(&self, target: &Target) -> Result<Request<Empty<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(match self.method {
                HttpMethod::Get => Method::GET,
                HttpMethod::Head => Method::HEAD,
            })
            .uri(target.origin_form()?);
        let host = match &self.host_override {
            Some(host) => host.clone(),
            None => HeaderValue::from_str(&target.authority).map_err(|e| e.to_string())?,
        };
        builder = builder.header(header::HOST, host);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if !self.keep_alive {
            builder = builder.header(header::CONNECTION, "close");
        }
        builder.body(Empty::new()).map_err(|e| e.to_string())
    }

    /// Sends `request` to `target`, on `reuse` if that connection is still
    /// usable, else on a new one; returns the response head.
    async fn send(
        &self,
        target: &Target,
        request: Request<Empty<Bytes>>,
        reuse: Option<Connection>,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Connection), Outcome> {
        let deadline_exceeded = || {
            Outcome::failure(
                Reason::Timeout,
                format!(
                    "{}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                    self.op(target)
                ),
            )
        };
        let transport_error = |e: &hyper::Error| {
            Outcome::failure(Reason::Other, format!("{}: {}", self.op(target), error_chain(e)))
        };

        let mut request = request;
        if let Some(mut connection) = reuse {
            if !connection.send.is_closed()
                && timeout_at(deadline, connection.send.ready())
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                let request = connection.send.adapt(request, target);
                match timeout_at(deadline, connection.send.send_request(request)).await {
                    Err(_) => return Err(deadline_exceeded()),
                    Ok(Ok(response)) => return Ok((response, connection)),
                    // The idle connection had gone stale (the server closed
                    // it): a GET or HEAD is retried on a new one, as Go's
                    // transport does.
                    Ok(Err(_)) => {}
                }
            }
            request = match self.request(target) {
                Ok(request) => request,
                Err(e) => return Err(Outcome::unknown(format!("{}: {e}", self.op(target)))),
            };
        }

        let mut connection = match timeout_at(deadline, self.connect(target, deadline)).await {
            Err(_) => return Err(deadline_exceeded()),
            Ok(Err(Failed { reason, message })) => {
                return Err(Outcome::failure(
                    reason,
                    format!("{}: {message}", self.op(target)),
                ));
            }
            Ok(Ok(connection)) => connection,
        };
        let request = connection.send.adapt(request, target);
        match timeout_at(deadline, connection.send.send_request(request)).await {
            Err(_) => Err(deadline_exceeded()),
            Ok(Err(e)) => Err(transport_error(&e)),
            Ok(Ok(response)) => Ok((response, connection)),
        }
    }

    /// Dials `target`, with TLS for `https`, and hands the connection to a
    /// task that drives it.
    async fn connect(&self, target: &Target, deadline: Instant) -> Result<Connection, Failed> {
        let https = match target.scheme.as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(Failed::new(
                    Reason::Other,
                    format!("unsupported protocol scheme {other:?}"),
                ));
            }
        };
        let host = Host {
            name: target.host.clone(),
            from_env: None,
        };
        let budget = deadline.saturating_duration_since(Instant::now()) + DIAL_SLACK;
        let tcp = dial(&self.resolver, &host, target.port, budget).await?;
        let handshake_failed = |message| Failed::new(Reason::Other, message);
        if !https {
            return Connection::handshake(tcp, false).await.map_err(handshake_failed);
        }
        let name = ServerName::try_from(target.host.clone()).map_err(|e| {
            Failed::new(
                Reason::Tls,
                format!("tls: invalid server name {:?}: {e}", target.host),
            )
        })?;
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| Failed::new(Reason::Tls, format!("tls: {}", super::describe_io(&e))))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        Connection::handshake(tls, h2).await.map_err(handshake_failed)
    }

    /// `Get "URL"`: the prefix Go's client puts on its errors.
    fn op(&self, target: &Target) -> String {
        let verb = if self.method == HttpMethod::Head {
            "Head"
        } else {
            "Get"
        };
        format!("{verb} \"{target}\"")
    }
}

/// An HTTP/1.1 or HTTP/2 connection: the handle requests go through, and
/// the task that drives the socket (aborted when this is dropped).
#[derive(Debug)]
struct Connection {
    send: Sender,
    task: tokio::task::JoinHandle<()>,
}

/// Where a connection's requests go in, by protocol.
#[derive(Debug)]
enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    async fn send_request(
        &mut self,
        request: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(s) => s.send_request(request).await,
            Sender::Http2(s) => s.send_request(request).await,
        }
    }

    /// Makes an HTTP/1.1 request fit the connection. HTTP/2 has no
    /// `Connection` header, and carries the host as `:authority` with the
    /// scheme in an absolute URI, as Go's transport sends `req.Host`.
    fn adapt(&self, mut request: Request<Empty<Bytes>>, target: &Target) -> Request<Empty<Bytes>> {
        if let Sender::Http2(_) = self {
            let headers = request.headers_mut();
            headers.remove(header::CONNECTION);
            let authority = headers
                .remove(header::HOST)
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| target.authority.clone());
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            if let Ok(uri) = Uri::builder()
                .scheme(target.scheme.as_str())
                .authority(authority)
                .path_and_query(path)
                .build()
            {
                *request.uri_mut() = uri;
            }
        }
        request
    }
}

impl Connection {
    /// Runs the HTTP/1.1 or (with `h2`) HTTP/2 handshake over `io` and
    /// spawns the driver task.
    async fn handshake<T>(io: T, h2: bool) -> Result<Connection, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        // Errors surface through the sender and the body.
        let (send, task) = if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| error_chain(&e))?;
            (Sender::Http2(send), tokio::spawn(async move { drop(conn.await) }))
        } else {
            let (send, conn) = http1::handshake(io).await.map_err(|e| error_chain(&e))?;
            (Sender::Http1(send), tokio::spawn(async move { drop(conn.await) }))
        };
        Ok(Connection { send, task })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The redirect statuses Go's client follows; other 3xx are final.
fn is_followed(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// A body read within the cap.
enum Read {
    /// The whole body.
    Complete(Vec<u8>),
    /// The first `MAX_OUTPUT` bytes; reading stopped there.
    Truncated(Vec<u8>),
}

/// Why a body read stopped short.
enum BodyError {
    /// The run's deadline passed.
    Timeout,
    /// The connection failed mid-body.
    Read(hyper::Error),
}

/// Reads at most [`MAX_OUTPUT`] bytes of `body`, as Go's `ReadAtMost`:
/// reaching the cap is not an error (kubelet-semantics §1.3).
async fn read_at_most(mut body: Incoming, deadline: Instant) -> Result<Read, BodyError> {
    let mut buf = Vec::new();
    while !body.is_end_stream() {
        let frame = match timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(BodyError::Read)?,
        };
        if let Ok(data) = frame.into_data() {
            let room = MAX_OUTPUT - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                return Ok(Read::Truncated(buf));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Read::Complete(buf))
}

/// Whether `haystack` contains `needle` (an empty needle always matches).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
