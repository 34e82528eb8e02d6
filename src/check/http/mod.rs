//! `http`: one GET (or HEAD) request, judged as the kubelet's HTTP prober
//! judges it (kubelet-semantics §1, docs/kubelet-parity.md): 200–399
//! passes, a redirect to another host is a warning, same-host redirects
//! are followed up to ten times, at most 10 KiB of the body is read, and
//! the whole run is bounded by the timeout.
//!
//! Each run dials a fresh connection and sends `Connection: close`, as the
//! kubelet's `DisableKeepAlives` transport; with `keep_alive` one idle
//! connection to the configured target is kept between runs. HTTPS skips
//! certificate verification unless a CA file is configured, and offers
//! HTTP/2 through ALPN before HTTP/1.1, as the kubelet's transport does
//! (kubelet-semantics §1.1).
//!
//! Responses are read as leniently as Go's `net/http` reads them: heads up
//! to 10 MiB, folded header lines joined, and errors worded as Go words
//! them, so that a message reads the same before and after a probe moves
//! from the kubelet into the sidecar.

pub(crate) mod expiry;
mod head;
mod secret;
pub(crate) mod tls;
mod url;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use self::head::GoHead;
use self::secret::SecretHeaders;
use self::tls::{ALPN_H2, ALPN_HTTP, TlsClient, describe_tls};
use self::url::Url;
use super::h2_headers::GoHeaders;
use super::{Failed, MAX_OUTPUT, Outcome, Phases, Reason, Resolver, dial_timed, error_chain};
use crate::config::{Host, HttpMethod, HttpSpec, Pattern, Scheme, StatusSet};

/// The kubelet's redirect limit: the tenth redirect is refused
/// (pkg/probe/http/http.go `RedirectChecker`).
const MAX_REDIRECTS: usize = 10;

/// How much of a redirect's own body Go's client reads before following
/// it (net/http/client.go `(*Client).do`, `maxBodySlurpSize = 2 << 10`).
const MAX_BODY_SLURP: usize = 2 << 10;

/// The largest response head read: Go's default `MaxResponseHeaderBytes`
/// (net/http/transport.go, `10 << 20`).
const MAX_HEAD_BYTES: usize = 10 << 20;

/// How many header lines a response may have. Go has no count limit;
/// hyper needs one and sizes a buffer by it on every parse, so this is a
/// bound no real application comes near rather than none at all
/// (docs/kubelet-parity.md, known deviations).
const MAX_HEADERS: usize = 10_000;

/// The header lines a response is first parsed with: hyper's default,
/// whose buffer lives on the stack. A buffer of `MAX_HEADERS` is
/// allocated and filled on every parse (some 160,000 instructions, more
/// than the rest of a run), so it is used only by a check whose app has
/// answered with more: the request that found it so is sent again on a
/// new connection with room for them, and the check keeps that room.
const FEW_HEADERS: usize = 100;

/// The [`Pattern::cost`] up to which a run's patterns are matched where
/// the run is, on the thread that answers the probes: at most some 80 µs
/// (a typical `"status":\s*"ok"` over a 400-byte body is a third of it).
/// Past it, the match goes to a blocking thread: handing it over costs
/// less than such a match, and a match at the cost bound of a pattern
/// (`MAX_PATTERN_PROGRAM` over 10 KiB) takes some 0.1 s.
const INLINE_MATCH_COST: usize = 1 << 18;

/// Extra time given to `dial`'s own bound, so that the run's deadline fires
/// first and the message is the HTTP client's.
const DIAL_SLACK: Duration = Duration::from_secs(1);

/// A prepared HTTP check: the parsed target, the request headers and the
/// TLS configuration, all built once.
#[derive(Debug)]
pub struct HttpCheck {
    /// The URL of the first request (boxed: it is most of the size of a
    /// `Check`).
    start: Box<Url>,
    /// `GET` or `HEAD`.
    method: HttpMethod,
    /// Request headers in the order Go writes them (net/http/request.go
    /// `(*Request).write`): `User-Agent` first, then the others sorted by
    /// name; defaults applied, `Host` taken out.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The `Host` header of the first request, when configured.
    host_override: Option<String>,
    /// Whether to keep one idle connection between runs.
    keep_alive: bool,
    /// Whether same-host redirects are followed (the kubelet's way) or a
    /// 3xx is final.
    follow_redirects: bool,
    /// What the response must be, beyond the kubelet's rules: shared
    /// with the blocking thread that matches its patterns.
    rules: Arc<Rules>,
    /// One permit, held by the pattern match under way (see
    /// [`HttpCheck::judge_content`]): a match that outlasts its run is
    /// never joined by another.
    matching: Arc<tokio::sync::Semaphore>,
    /// Request headers whose values are secrets.
    secrets: SecretHeaders,
    /// TLS client settings, used for every `https` hop (a redirect may
    /// switch scheme, so it exists for `http` checks too).
    tls: TlsClient,
    /// With `keep_alive`: the connection left idle by the previous run. A
    /// Tokio mutex because it is taken and given back around awaits; runs
    /// of one check never overlap, so it is never contended.
    idle: tokio::sync::Mutex<Option<Connection>>,
    /// Looks up the host name, one lookup at a time.
    resolver: Resolver,
    /// The app has answered with more than `FEW_HEADERS` header lines:
    /// responses are parsed with room for `MAX_HEADERS`.
    many_headers: AtomicBool,
    /// The last response's body (its first 10 KiB), kept only when asked
    /// for by [`HttpCheck::keep_body`]: `healthproxy probe -v` shows it.
    body: Option<std::sync::Mutex<Bytes>>,
}

impl HttpCheck {
    /// Prepares the check: validates the headers and path, and loads the CA
    /// file if one is given.
    pub fn new(spec: HttpSpec) -> Result<Self, String> {
        let scheme = match spec.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let path = if spec.path.is_empty() { "/" } else { &spec.path };
        let start = Url::probe(scheme, &spec.host.authority(spec.port), path);
        start
            .request_uri()
            .parse::<Uri>()
            .map_err(|e| format!("path {:?}: {e}", spec.path))?;

        let mut headers = Vec::with_capacity(spec.headers.len() + 2);
        let mut host_override = None;
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header {name:?}: invalid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header {name}: invalid value {value:?}"))?;
            if name == header::HOST {
                // `headers.Get("Host")`: the first entry wins; an empty
                // one leaves the URL's host (pkg/probe/http/request.go
                // `newProbeRequest`).
                if host_override.is_none() && !value.is_empty() {
                    host_override = Some(value.to_str().map_err(|e| e.to_string())?.to_string());
                }
            } else if value.is_empty() && (name == header::USER_AGENT || name == header::ACCEPT) {
                // An empty value removes the default (request.go
                // `newProbeRequest`; Go's `(*Request).write` skips an
                // empty User-Agent).
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
            let agent = HeaderValue::from_str(&spec.user_agent)
                .map_err(|_| format!("user agent {:?}: invalid header value", spec.user_agent))?;
            headers.push((header::USER_AGENT, agent));
        }
        if !present("accept") {
            headers.push((header::ACCEPT, HeaderValue::from_static("*/*")));
        }
        sort_as_go_writes(&mut headers);

        let tls = TlsClient::new(spec.tls, ALPN_HTTP)?;
        let secrets = SecretHeaders::new(&spec.secret_headers)?;
        let mut header_matches = Vec::with_capacity(spec.header_matches.len());
        for (name, pattern) in spec.header_matches {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header_matches {name:?}: invalid header name"))?;
            header_matches.push((name, pattern));
        }
        Ok(HttpCheck {
            start: Box::new(start),
            method: spec.method,
            headers,
            host_override,
            keep_alive: spec.keep_alive,
            follow_redirects: spec.follow_redirects,
            rules: Arc::new(Rules {
                expect_status: spec.expect_status,
                body_contains: spec.body_contains,
                body_matches: spec.body_matches,
                body_not_matches: spec.body_not_matches,
                header_matches,
            }),
            matching: Arc::new(tokio::sync::Semaphore::new(1)),
            secrets,
            tls,
            idle: tokio::sync::Mutex::new(None),
            resolver: Resolver::default(),
            many_headers: AtomicBool::new(false),
            body: None,
        })
    }

    /// The URL as given without a port (`healthproxy probe
    /// http://127.0.0.1/x`): written without one, as Go's client writes
    /// it (`Get "http://127.0.0.1/x"`) and sends its `Host`; the dial
    /// still takes the scheme's port. The kubelet always writes the port
    /// (`formatURL` joins host and port), so checks keep it.
    pub(crate) fn port_unwritten(mut self) -> Self {
        if let Some((host, _)) = self.start.host.rsplit_once(':')
            && (host.starts_with('[') || !host.contains(':'))
        {
            self.start.host = host.to_string();
        }
        self
    }

    /// Keeps the body of each run's final response, for [`HttpCheck::body`].
    pub(crate) fn keep_body(mut self) -> Self {
        self.body = Some(std::sync::Mutex::new(Bytes::new()));
        self
    }

    /// The body of the last run's final response (its first 10 KiB),
    /// when [`HttpCheck::keep_body`] asked for it.
    pub(crate) fn body(&self) -> Option<Bytes> {
        self.body
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Sends the request, follows same-host redirects, and judges the last
    /// response; everything within `timeout`, as Go's `Client.Timeout`.
    /// The outcome carries how long each phase took.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let mut phases = Phases::default();
        let mut outcome = self.run_timed(timeout, &mut phases).await;
        outcome.phases = Some(phases);
        // Before anyone stores or logs it: the app may have echoed a
        // secret header.
        if let Some(message) = self.secrets.redact(&outcome.message) {
            outcome.message = message;
        }
        outcome
    }

    /// [`HttpCheck::run`], adding the time of each phase to `phases`.
    async fn run_timed(&self, timeout: Duration, phases: &mut Phases) -> Outcome {
        let deadline = Instant::now() + timeout;
        if let Err(message) = self.secrets.refresh() {
            return Outcome::failure(Reason::Other, message);
        }
        let mut url = Url::clone(&self.start);
        let mut host = self.host_override.clone();
        let mut referer = None;
        let mut sent = 0;
        loop {
            sent += 1;
            let first = sent == 1;
            let request = match self.request(&url, host.as_deref(), referer.as_deref()) {
                Ok(request) => request,
                Err(e) => return Outcome::unknown(format!("{}: {e}", self.op(&url))),
            };
            let reuse = if first && self.keep_alive {
                self.idle.lock().await.take()
            } else {
                None
            };
            let (response, connection) = match self.send(&url, request, reuse, deadline, phases).await {
                Ok(pair) => pair,
                Err(outcome) => return outcome,
            };
            let status = response.status().as_u16();
            // net/http/client.go `(*Client).do`: a followed status with a
            // non-empty Location is a redirect; without one the response
            // is final ("3xx responses without a Location have been
            // observed in the wild").
            let location = response
                .headers()
                .get(header::LOCATION)
                .filter(|l| !l.is_empty())
                .cloned();
            if let (true, Some(location)) = (self.follow_redirects && is_followed(status), location) {
                let next = match url.join(location.as_bytes()) {
                    Ok(next) => next,
                    Err(e) => {
                        return Outcome::failure(
                            Reason::Other,
                            format!(
                                "{}: failed to parse Location header {:?}: {e}",
                                self.op(&url),
                                String::from_utf8_lossy(location.as_bytes())
                            ),
                        );
                    }
                };
                // pkg/probe/http/http.go `RedirectChecker(false)`: another
                // `Hostname()`, compared as strings, ends the chain with
                // the redirect itself (a warning); the same one is
                // followed.
                if next.hostname() == self.start.hostname() {
                    // client.go reads a little of the redirect's body
                    // before following it, within the deadline, and
                    // ignores how that read ends.
                    let started = Instant::now();
                    slurp(response, deadline).await;
                    phases.transfer += started.elapsed();
                    if sent >= MAX_REDIRECTS {
                        // client.go sets the error's URL to the refused
                        // Location value.
                        return Outcome::failure(
                            Reason::Other,
                            format!(
                                "{} {:?}: stopped after {MAX_REDIRECTS} redirects",
                                self.verb(),
                                String::from_utf8_lossy(location.as_bytes())
                            ),
                        );
                    }
                    // A Host header set by the caller is kept only for a
                    // relative Location (client.go, Go issue 22233).
                    let relative = Url::parse(location.as_bytes()).is_ok_and(|l| !l.is_abs());
                    host = host.filter(|h| *h != url.host && relative);
                    // client.go `refererForURL`: the previous URL, unless
                    // that would leak an https URL to http.
                    referer = (!(url.scheme == "https" && next.scheme == "http")).then(|| url.to_string());
                    url = next;
                    continue;
                }
            }
            let tls_expiry = connection.tls_expiry;
            return self
                .judge(status, response, connection, first, deadline, phases)
                .await
                .with_tls_expiry(tls_expiry);
        }
    }

    /// Judges the final response of a run, reading its body first whatever
    /// the status (pkg/probe/http/http.go `DoHTTPProbe` reads before it
    /// judges), and keeps the connection for the next run when it may.
    async fn judge(
        &self,
        status: u16,
        response: Response<Incoming>,
        connection: Connection,
        first: bool,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Outcome {
        let (head, body) = response.into_parts();
        let started = Instant::now();
        let read = read_at_most(body, deadline).await;
        phases.transfer += started.elapsed();
        let body = match read {
            Ok(Read::Complete(body) | Read::Truncated(body)) => body,
            // Any error but reaching the cap makes `DoHTTPProbe` return an
            // error; prober.go retries and worker.go then throws the run
            // away ("Prober error, throw away the result"): Unknown, with
            // the bare error as its message.
            Err(BodyError::Timeout) => {
                return Outcome::unknown(
                    "context deadline exceeded (Client.Timeout or context cancellation while reading body)",
                );
            }
            Err(BodyError::Read(e)) => return Outcome::unknown(connection.describe_body_error(&e)),
        };
        if let Some(kept) = &self.body {
            *kept.lock().unwrap_or_else(|e| e.into_inner()) = Bytes::copy_from_slice(&body);
        }
        // A truncated body leaves unread bytes on the wire: hyper closes that
        // connection, and `send` then dials anew.
        if first && self.keep_alive {
            *self.idle.lock().await = Some(connection);
        }
        match &self.rules.expect_status {
            // No body in the message (http.go, issue 99425).
            None if !(200..400).contains(&status) => {
                return Outcome::failure(
                    Reason::Status,
                    format!("HTTP probe failed with statuscode: {status}"),
                );
            }
            Some(set) if !set.contains(status) => {
                return Outcome::failure(
                    Reason::Status,
                    format!("HTTP probe failed: status {status} not in {set}"),
                );
            }
            _ => {}
        }
        let body = match self.judge_content(&head.headers, body, deadline).await {
            Ok(body) => body,
            Err(failed) => return failed,
        };
        if (300..400).contains(&status) {
            let body = String::from_utf8_lossy(&body);
            Outcome::warning(format!("Probe terminated redirects, Response body: {body}"))
        } else {
            Outcome::success(format!("HTTP probe succeeded with statuscode: {status}"))
        }
    }

    /// Judges the headers and body by the content rules (`header_matches`,
    /// `body_contains`, `body_matches`, `body_not_matches`); gives the body
    /// back when they pass.
    ///
    /// A match whose cost ([`Pattern::cost`]: the compiled program's size
    /// times the text's length) could be felt runs on a blocking thread,
    /// so that the thread answering the probes never waits for it, and
    /// within the run's deadline: a match still going then fails the run.
    /// A match cannot be stopped, so it holds the check's one permit until
    /// it ends; a run that finds it still held waits for it, within its
    /// own deadline. However slow the patterns, a check has at most one
    /// match under way.
    async fn judge_content(
        &self,
        headers: &hyper::HeaderMap,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<u8>, Outcome> {
        if self.rules.cost(headers, body.len()) <= INLINE_MATCH_COST {
            return match self.rules.judge_content(headers, &body) {
                Some(failed) => Err(failed),
                None => Ok(body),
            };
        }
        let unfinished = |what: &str| {
            Outcome::failure(
                Reason::Timeout,
                format!("HTTP probe failed: {what} did not finish within the check's timeout"),
            )
        };
        let Ok(permit) = timeout_at(deadline, Arc::clone(&self.matching).acquire_owned()).await else {
            return Err(unfinished("the previous run's pattern match"));
        };
        let permit = permit.expect("the permit is never closed");
        let rules = Arc::clone(&self.rules);
        let headers = rules.headers_matched(headers);
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let failed = rules.judge_content(&headers, &body);
            (failed, body)
        });
        match timeout_at(deadline, job).await {
            Ok(Ok((Some(failed), _))) => Err(failed),
            Ok(Ok((None, body))) => Ok(body),
            Ok(Err(e)) => Err(Outcome::unknown(format!("the pattern match failed: {e}"))),
            Err(_) => Err(unfinished("matching the response against the patterns")),
        }
    }

    /// Builds the request for one hop: `host` is the Host header when it
    /// is not the URL's, `referer` the previous URL on a redirect.
    fn request(
        &self,
        url: &Url,
        host: Option<&str>,
        referer: Option<&str>,
    ) -> Result<Request<Empty<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(match self.method {
                HttpMethod::Get => Method::GET,
                HttpMethod::Head => Method::HEAD,
            })
            .uri(url.request_uri().parse::<Uri>().map_err(|e| e.to_string())?);
        let host = HeaderValue::from_str(host.unwrap_or(&url.host)).map_err(|e| e.to_string())?;
        builder = builder.header(header::HOST, host);
        let headers = builder.headers_mut().expect("a valid request so far");
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        let mut resort = self.secrets.append_to(headers);
        if let Some(referer) = referer
            && !headers.contains_key(header::REFERER)
            && let Ok(value) = HeaderValue::from_str(referer)
        {
            headers.append(header::REFERER, value);
            resort = true;
        }
        if resort {
            let mut name = header::HOST;
            let mut sorted: Vec<_> = headers
                .drain()
                .map(|(next, value)| {
                    // `drain` names only the first value of each header.
                    if let Some(next) = next {
                        name = next;
                    }
                    (name.clone(), value)
                })
                .collect();
            sort_as_go_writes(&mut sorted);
            for (name, value) in sorted {
                headers.append(name, value);
            }
        }
        if !self.keep_alive {
            // Go's transport adds it after the others
            // (net/http/transport.go `(*persistConn).roundTrip`).
            builder = builder.header(header::CONNECTION, "close");
        }
        builder.body(Empty::new()).map_err(|e| e.to_string())
    }

    /// Sends `request` to `url`, on `reuse` if that connection is still
    /// usable, else on a new one; returns the response head.
    async fn send(
        &self,
        url: &Url,
        request: Request<Empty<Bytes>>,
        reuse: Option<Connection>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(Response<Incoming>, Connection), Outcome> {
        let deadline_exceeded = || {
            Outcome::failure(
                Reason::Timeout,
                format!(
                    "{}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                    self.op(url)
                ),
            )
        };
        // The deadline may have passed while a redirect's body was read:
        // Go's request context is then done before anything is sent.
        if Instant::now() >= deadline {
            return Err(deadline_exceeded());
        }

        let mut request = request;
        if let Some(mut connection) = reuse {
            if !connection.send.is_closed()
                && timeout_at(deadline, connection.send.ready())
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                let request = connection.send.adapt(request, url);
                let started = Instant::now();
                let sent = timeout_at(deadline, connection.send.send_request(request)).await;
                phases.processing += started.elapsed();
                match sent {
                    Err(_) => return Err(deadline_exceeded()),
                    Ok(Ok(response)) => return Ok((response, connection)),
                    // The idle connection had gone stale (the server closed
                    // it): a GET or HEAD is retried on a new one, as Go's
                    // transport does.
                    Ok(Err(_)) => {}
                }
            }
            // Only a run's first request reuses a connection.
            request = match self.request(url, self.host_override.as_deref(), None) {
                Ok(request) => request,
                Err(e) => return Err(Outcome::unknown(format!("{}: {e}", self.op(url)))),
            };
        }

        let mut connection = match timeout_at(deadline, self.connect(url, deadline, phases)).await {
            Err(_) => return Err(deadline_exceeded()),
            Ok(Err(Failed { reason, message })) => {
                return Err(Outcome::failure(reason, format!("{}: {message}", self.op(url))));
            }
            Ok(Ok(connection)) => connection,
        };
        // Kept to send again should the response have more header lines
        // than the connection has room for (see `FEW_HEADERS`).
        let again = (!self.many_headers.load(Ordering::Relaxed)).then(|| copy(&request));
        let request = connection.send.adapt(request, url);
        let started = Instant::now();
        let sent = timeout_at(deadline, connection.send.send_request(request)).await;
        phases.processing += started.elapsed();
        match sent {
            Err(_) => Err(deadline_exceeded()),
            Ok(Err(e)) if e.is_parse_too_large() && again.is_some() => {
                self.many_headers.store(true, Ordering::Relaxed);
                let again = again.expect("kept");
                Box::pin(self.send(url, again, None, deadline, phases)).await
            }
            // With TLS 1.3 a server that refuses the client's certificate
            // says so after the handshake, in an alert read here.
            Ok(Err(e)) => Err(Outcome::failure(
                if tls::caused_by_tls(&e) {
                    Reason::Tls
                } else {
                    Reason::Other
                },
                format!("{}: {}", self.op(url), connection.describe_head_error(&e)),
            )),
            Ok(Ok(response)) => Ok((response, connection)),
        }
    }

    /// Dials `url`, with TLS for `https`, and hands the connection to a
    /// task that drives it.
    async fn connect(&self, url: &Url, deadline: Instant, phases: &mut Phases) -> Result<Connection, Failed> {
        let other = |message: String| Failed::new(Reason::Other, message);
        let https = match url.scheme.as_str() {
            "http" => false,
            "https" => true,
            scheme => return Err(other(format!("unsupported protocol scheme {scheme:?}"))),
        };
        // net/http/transport.go `canonicalAddr`: the scheme's port when
        // the URL has none; `url.Parse` takes any digits, the dial refuses
        // what is not a port.
        let port = match url.port() {
            "" if https => 443,
            "" => 80,
            p => p
                .parse::<u16>()
                .map_err(|_| other(format!("dial tcp: address {p}: invalid port")))?,
        };
        let host = Host {
            name: url.hostname().to_string(),
            from_env: None,
        };
        let budget = deadline.saturating_duration_since(Instant::now()) + DIAL_SLACK;
        let started = Instant::now();
        let mut resolved = None;
        let dialed = dial_timed(&self.resolver, &host, port, budget, &mut resolved).await;
        let (resolved, dialed_at) = (resolved.unwrap_or_else(Instant::now), Instant::now());
        phases.resolve += resolved.saturating_duration_since(started);
        phases.connect += dialed_at.saturating_duration_since(resolved);
        let tcp = dialed?;
        let addrs = Addrs::of(&tcp);
        if !https {
            return Connection::handshake(Recorded::new(tcp), false, self.max_headers(), addrs)
                .await
                .map_err(other);
        }
        let name = self
            .tls
            .server_name(&host.name)
            .map_err(|message| Failed::new(Reason::Tls, message))?;
        let config = self
            .tls
            .config()
            .map_err(|message| Failed::new(Reason::Tls, message))?;
        let tcp = Recorded::new(tcp);
        let seen = Arc::clone(&tcp.seen);
        let started = Instant::now();
        let handshake = TlsConnector::from(config).connect(name, tcp).await;
        phases.tls += started.elapsed();
        let tls = handshake.map_err(|e| {
            Failed::new(
                Reason::Tls,
                describe_tls(&e, &seen.lock().expect("not poisoned").head),
            )
        })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        let tls_expiry = expiry::earliest(tls.get_ref().1.peer_certificates().unwrap_or_default());
        let mut connection = Connection::handshake(Recorded::new(tls), h2, self.max_headers(), addrs)
            .await
            .map_err(other)?;
        connection.tls_expiry = tls_expiry;
        Ok(connection)
    }

    /// `FEW_HEADERS` or `MAX_HEADERS`, as the app has answered so far.
    fn max_headers(&self) -> usize {
        if self.many_headers.load(Ordering::Relaxed) {
            MAX_HEADERS
        } else {
            FEW_HEADERS
        }
    }

    /// `Get "URL"`: the prefix Go's client puts on its errors
    /// (net/url `(*Error).Error`).
    fn op(&self, url: &Url) -> String {
        format!("{} {:?}", self.verb(), url.to_string())
    }

    /// Go's `urlErrorOp`: the method, capitalised.
    fn verb(&self) -> &'static str {
        match self.method {
            HttpMethod::Head => "Head",
            HttpMethod::Get => "Get",
        }
    }
}

/// Sorts headers as Go's `(*Request).write` writes them: `Host`, then
/// `User-Agent`, then the others by name (`Header.writeSubset` sorts its
/// keys); repeated names keep their order.
fn sort_as_go_writes(headers: &mut [(HeaderName, HeaderValue)]) {
    let rank = |name: &HeaderName| match *name {
        header::HOST => 0,
        header::USER_AGENT => 1,
        _ => 2,
    };
    headers.sort_by(|(a, _), (b, _)| (rank(a), a.as_str()).cmp(&(rank(b), b.as_str())));
}

/// The rules a response must meet beyond the kubelet's; each failure
/// names its rule and has a reason of its own.
#[derive(Debug)]
struct Rules {
    /// The statuses that pass, when not the kubelet's 200–399.
    expect_status: Option<StatusSet>,
    /// The text the body must contain.
    body_contains: Option<String>,
    body_matches: Option<Pattern>,
    body_not_matches: Option<Pattern>,
    header_matches: Vec<(HeaderName, Pattern)>,
}

impl Rules {
    /// The first content rule the response breaks, as a failure: the
    /// header rules, then the body's.
    fn judge_content(&self, headers: &hyper::HeaderMap, body: &[u8]) -> Option<Outcome> {
        if let Some(failed) = self.judge_headers(headers) {
            return Some(failed);
        }
        if let Some(needle) = &self.body_contains
            && !contains(body, needle.as_bytes())
        {
            return Some(Outcome::failure(
                Reason::Output,
                format!("HTTP probe failed: response body does not contain {needle:?}"),
            ));
        }
        self.judge_body(body)
    }

    /// What judging these headers and a body of `body` bytes may cost
    /// ([`Pattern::cost`]; `body_contains` compares up to its length at
    /// each byte).
    fn cost(&self, headers: &hyper::HeaderMap, body: usize) -> usize {
        let body_patterns = self.body_matches.iter().chain(&self.body_not_matches);
        let mut cost = body_patterns.map(|p| p.cost(body)).fold(0, usize::saturating_add);
        if let Some(needle) = &self.body_contains {
            cost = cost.saturating_add(needle.len().saturating_mul(body));
        }
        for (name, pattern) in &self.header_matches {
            let len = headers.get_all(name).iter().map(|v| v.len()).sum::<usize>();
            cost = cost.saturating_add(pattern.cost(len.min(MAX_OUTPUT)));
        }
        cost
    }

    /// The headers the header rules look at, for a blocking thread (the
    /// values are shared, not copied).
    fn headers_matched(&self, headers: &hyper::HeaderMap) -> hyper::HeaderMap {
        let mut matched = hyper::HeaderMap::new();
        for (name, _) in &self.header_matches {
            if !matched.contains_key(name) {
                for value in headers.get_all(name) {
                    matched.append(name.clone(), value.clone());
                }
            }
        }
        matched
    }

    /// The first header rule the response breaks, as a failure. Any value
    /// of a repeated header may match; the values are looked at up to 10
    /// KiB in all, as the body is.
    fn judge_headers(&self, headers: &hyper::HeaderMap) -> Option<Outcome> {
        for (name, pattern) in &self.header_matches {
            let mut budget = MAX_OUTPUT;
            let mut values = headers.get_all(name).iter().map_while(|v| {
                let seen = &v.as_bytes()[..v.len().min(budget)];
                budget -= seen.len();
                (!seen.is_empty() || v.is_empty()).then_some(seen)
            });
            if headers.get_all(name).iter().next().is_none() {
                return Some(Outcome::failure(
                    Reason::Header,
                    format!(
                        "HTTP probe failed: header {name} missing, expected to match {:?}",
                        pattern.as_str()
                    ),
                ));
            }
            if !values.any(|v| pattern.is_match(v)) {
                return Some(Outcome::failure(
                    Reason::Header,
                    format!(
                        "HTTP probe failed: header {name} did not match {:?}",
                        pattern.as_str()
                    ),
                ));
            }
        }
        None
    }

    /// The first body rule the (first 10 KiB of the) body breaks.
    fn judge_body(&self, body: &[u8]) -> Option<Outcome> {
        if let Some(pattern) = &self.body_matches
            && !pattern.is_match(body)
        {
            return Some(Outcome::failure(
                Reason::Body,
                format!("HTTP probe failed: body did not match {:?}", pattern.as_str()),
            ));
        }
        if let Some(pattern) = &self.body_not_matches
            && pattern.is_match(body)
        {
            return Some(Outcome::failure(
                Reason::Body,
                format!("HTTP probe failed: body matched {:?}", pattern.as_str()),
            ));
        }
        None
    }
}

/// An HTTP/1.1 or HTTP/2 connection: the handle requests go through, the
/// task that drives the socket (aborted when this is dropped), and what it
/// has read, to word its errors as Go does.
#[derive(Debug)]
struct Connection {
    send: Sender,
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Seen>>,
    addrs: Addrs,
    /// When the server's certificate chain first expires, over TLS.
    tls_expiry: Option<std::time::SystemTime>,
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
    fn adapt(&self, mut request: Request<Empty<Bytes>>, url: &Url) -> Request<Empty<Bytes>> {
        if let Sender::Http2(_) = self {
            let headers = request.headers_mut();
            headers.remove(header::CONNECTION);
            let authority = headers
                .remove(header::HOST)
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| url.host.clone());
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            if let Ok(uri) = Uri::builder()
                .scheme(url.scheme.as_str())
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
    async fn handshake<T>(
        io: Recorded<T>,
        h2: bool,
        max_headers: usize,
        addrs: Addrs,
    ) -> Result<Connection, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let seen = Arc::clone(&io.seen);
        // Errors surface through the sender and the body.
        let (send, task) = if h2 {
            // Header blocks as x/net's client reads them: h2 refuses
            // connection-specific fields that Go keeps
            // (src/check/h2_headers.rs).
            let io = TokioIo::new(GoHeaders::new(io));
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| error_chain(&e))?;
            (Sender::Http2(send), tokio::spawn(async move { drop(conn.await) }))
        } else {
            // Each response head read first as Go reads it (head.rs:
            // folded lines arrive joined); as large as Go's, any number of
            // headers; header names written in Go's canonical case, which
            // naive servers match literally.
            let io = TokioIo::new(GoHead::new(io));
            let (send, conn) = http1::Builder::new()
                .title_case_headers(true)
                .max_header_size(MAX_HEAD_BYTES)
                .max_buf_size(MAX_HEAD_BYTES + (64 << 10))
                .max_headers(max_headers)
                .handshake(io)
                .await
                .map_err(|e| error_chain(&e))?;
            (Sender::Http1(send), tokio::spawn(async move { drop(conn.await) }))
        };
        Ok(Connection {
            send,
            task,
            seen,
            addrs,
            tls_expiry: None,
        })
    }

    /// An error before the response head was complete, in Go's words
    /// (net/http/transport.go `(*persistConn).readLoop`,
    /// `mapRoundTripError`, net/http/response.go `ReadResponse`).
    fn describe_head_error(&self, e: &hyper::Error) -> String {
        let head = self.seen.lock().expect("not poisoned").head.clone();
        let why = if let Some(io) = io_cause(e) {
            match io.kind() {
                _ if let Some(refused) = io.get_ref().and_then(|e| e.downcast_ref::<head::Refused>()) => {
                    refused.to_string()
                }
                std::io::ErrorKind::UnexpectedEof => eof(&head),
                _ => self.addrs.read_error(io),
            }
        } else if e.is_incomplete_message() {
            eof(&head)
        } else if e.is_parse_too_large() {
            format!("net/http: server response headers exceeded {MAX_HEAD_BYTES} bytes; aborted")
        } else {
            error_chain(e)
        };
        // Nothing received: the bare read error. Something received: the
        // connection is "broken".
        if head.is_empty() || matches!(self.send, Sender::Http2(_)) {
            why
        } else {
            format!("net/http: HTTP/1.x transport connection broken: {why}")
        }
    }

    /// A body read error, bare, as `DoHTTPProbe` returns it.
    fn describe_body_error(&self, e: &hyper::Error) -> String {
        match io_cause(e) {
            Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => "unexpected EOF".into(),
            Some(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) =>
            {
                // net/http/internal/chunked.go
                "malformed chunked encoding".into()
            }
            Some(io) => self.addrs.read_error(io),
            None if e.is_incomplete_message() => "unexpected EOF".into(),
            None => error_chain(e),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Go's message when the connection ended: `EOF` before any byte,
/// `unexpected EOF` in the middle of a head.
fn eof(head: &[u8]) -> String {
    if head.is_empty() { "EOF" } else { "unexpected EOF" }.into()
}

/// The local and remote addresses of a connection, for Go's
/// `read tcp LOCAL->REMOTE: ...` messages.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    local: Option<std::net::SocketAddr>,
    peer: Option<std::net::SocketAddr>,
}

impl Addrs {
    fn of(tcp: &tokio::net::TcpStream) -> Addrs {
        Addrs {
            local: tcp.local_addr().ok(),
            peer: tcp.peer_addr().ok(),
        }
    }

    /// `read tcp 127.0.0.1:5->127.0.0.1:80: read: connection reset by
    /// peer`, as Go's `net.OpError`.
    fn read_error(&self, e: &std::io::Error) -> String {
        match (self.local, self.peer) {
            (Some(l), Some(p)) => format!("read tcp {l}->{p}: read: {}", super::describe_io(e)),
            _ => super::describe_io(e),
        }
    }
}

/// The first I/O error in `e`'s causes.
fn io_cause(e: &hyper::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = cause.source();
    }
    None
}

/// What a connection has read so far: its first bytes, kept to word
/// errors (a status line, a TLS record header).
#[derive(Debug, Default)]
struct Seen {
    head: Vec<u8>,
}

/// How many of the first bytes are kept.
const SEEN_BYTES: usize = 1024;

/// A stream that keeps a copy of the first bytes read from it.
struct Recorded<T> {
    inner: T,
    seen: Arc<Mutex<Seen>>,
    /// Whether `seen` is full, so later reads skip the lock.
    full: bool,
}

impl<T> Recorded<T> {
    fn new(inner: T) -> Self {
        Recorded {
            inner,
            seen: Arc::default(),
            full: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Recorded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.full && buf.filled().len() > before {
            let mut seen = this.seen.lock().expect("not poisoned");
            let room = SEEN_BYTES - seen.head.len();
            let new = &buf.filled()[before..];
            seen.head.extend_from_slice(&new[..new.len().min(room)]);
            this.full = seen.head.len() == SEEN_BYTES;
        }
        polled
    }
}

write_through!(Recorded);

/// A request to send again: its method, URI, version and headers.
fn copy(request: &Request<Empty<Bytes>>) -> Request<Empty<Bytes>> {
    let mut again = Request::new(Empty::new());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.version_mut() = request.version();
    *again.headers_mut() = request.headers().clone();
    again
}

/// The redirect statuses Go's client follows; other 3xx are final
/// (net/http/client.go `redirectBehavior`).
fn is_followed(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Reads and drops up to [`MAX_BODY_SLURP`] bytes of a redirect's body
/// before it is followed, as client.go does when the length is unknown or
/// small ("read at least some of the body so if it's small the
/// underlying TCP connection will be re-used"); how the read ends does not
/// matter, only the time it takes.
async fn slurp(response: Response<Incoming>, deadline: Instant) {
    let mut body = response.into_body();
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n > MAX_BODY_SLURP as u64)
    {
        return;
    }
    let mut read = 0;
    while read < MAX_BODY_SLURP && !body.is_end_stream() {
        match timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
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

/// Reads at most [`MAX_OUTPUT`] bytes of `body`, as the kubelet's
/// `utilio.ReadAtMost`: once the cap is reached nothing more is read, and
/// reaching it is not an error ("Non fatal body truncation",
/// pkg/probe/http/http.go `DoHTTPProbe`).
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
            buf.extend_from_slice(&data[..data.len().min(room)]);
            if buf.len() == MAX_OUTPUT {
                return Ok(Read::Truncated(buf));
            }
        }
    }
    Ok(Read::Complete(buf))
}

/// Whether `haystack` contains `needle` (an empty needle always matches).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
