//! `grpc`: call `grpc.health.v1.Health/Check` over plaintext HTTP/2 on a
//! fresh connection; only `SERVING` is healthy. Every other outcome is a
//! failure in the kubelet's words (k8s `pkg/probe/grpc/grpc.go` `Probe`,
//! kubelet-semantics §2.3, docs/kubelet-parity.md).
//!
//! The client is tonic, held to grpc-go's rules where tonic is more
//! lenient: the connection is ready only once the server's SETTINGS frame
//! has arrived, a response must be `application/grpc` with HTTP status 200,
//! a unary call takes exactly one message, and status codes are spelt as
//! grpc-go spells them.
//!
//! With `tls = true` the connection is TLS first, with the same client
//! settings as an HTTPS check: a CA file or no verification, a client
//! certificate, a server name, all re-read when they rotate. `tls` alone
//! is the kubelet's alpha gRPC over TLS (KEP-4939, `tls: {mode:
//! NoVerify}`): TLS without verification, `h2` required by ALPN as grpc-go
//! requires it.

use std::error::Error as _;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

mod status;

use super::h2_headers::GoHeaders;
use super::http::expiry;
use super::http::tls::{ALPN_H2, TlsClient, caused_by_tls};
use super::{Failed, Outcome, Reason, Resolver, dial, error_chain};
use crate::config::GrpcSpec;

/// A ready channel, when the certificate chain of its TLS handshake
/// first expires, and what the server's SETTINGS frames announce.
type Connected = (Channel, Option<SystemTime>, Arc<PeerSettings>);

/// grpc-go's reconnect backoff (grpc-go `backoff.DefaultConfig`: a base
/// delay of 1 s, multiplied by 1.6 after each attempt; the jitter is left
/// out so that runs are reproducible).
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MULTIPLIER: f64 = 1.6;

/// grpc-go's default largest received message
/// (`defaultClientMaxReceiveMessageSize`, 4 MiB).
const MAX_MESSAGE: usize = 4 << 20;

/// A prepared grpc check.
#[derive(Debug)]
pub struct GrpcCheck {
    spec: GrpcSpec,
    /// The TLS client settings, when the call goes over TLS.
    tls: Option<Box<TlsClient>>,
    resolver: Resolver,
}

impl GrpcCheck {
    /// Prepares the check, loading its TLS files if it has any.
    pub fn new(spec: GrpcSpec) -> Result<Self, String> {
        let tls = match &spec.tls {
            Some(tls) => Some(Box::new(TlsClient::new(tls.clone(), &[ALPN_H2])?)),
            None => None,
        };
        Ok(GrpcCheck {
            spec,
            tls,
            resolver: Resolver::default(),
        })
    }

    /// Connects and calls `Check` once; one deadline, `timeout` from now,
    /// covers the dial, the HTTP/2 handshake and the call, as the kubelet's
    /// single context does.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let within = go_duration(timeout);
        let authority = self.spec.host.authority(self.spec.port);

        // The kubelet dials `WithBlock`: grpc-go keeps trying until the
        // connection is ready or the deadline passes, and every failure to
        // connect (refused, reset, a server that is not HTTP/2, one that
        // never sends its SETTINGS) then reads the same. The run takes as
        // long as the kubelet's, and a server that comes up within the
        // timeout is reached as the kubelet would reach it.
        // The metrics' reason is that of the last attempt (refused, DNS...).
        // A TLS failure is the one cause the kubelet's words would hide
        // from a check that asked for TLS (a CA or client certificate
        // that does not fit): its text follows theirs.
        let (channel, tls_expiry, peer) = match self.connect(&authority, deadline).await {
            Ok(connected) => connected,
            Err(last) => {
                let mut message = format!(
                    "timeout: failed to connect service {authority:?} within {within}: context deadline exceeded"
                );
                if last.reason == Reason::Tls {
                    message = format!("{message} (last attempt: {})", last.message);
                }
                return Outcome::failure(last.reason, message);
            }
        };

        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.spec.service.clone(),
        });
        // Tell the server too, as grpc-go does from the context deadline.
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let raw_code = Arc::new(Mutex::new(None));
        let service = GoRules {
            inner: channel,
            peer,
            raw_code: Arc::clone(&raw_code),
        };
        let call = async { HealthClient::new(service).check(request).await };
        let rpc_timeout = || format!("timeout: health rpc did not complete within {within}");
        let outcome = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Outcome::failure(Reason::Timeout, rpc_timeout()),
            Ok(Ok(response)) => {
                let status = response.into_inner().status;
                match ServingStatus::try_from(status) {
                    Ok(ServingStatus::Serving) => Outcome::success("service healthy"),
                    Ok(other) => Outcome::failure(
                        Reason::NotServing,
                        format!("service unhealthy (responded with {:?})", other.as_str_name()),
                    ),
                    // Go prints an unknown enum value as its number.
                    Err(_) => Outcome::failure(
                        Reason::NotServing,
                        format!("service unhealthy (responded with {:?})", status.to_string()),
                    ),
                }
            }
            Ok(Err(status)) => match status.code() {
                Code::Unimplemented => Outcome::failure(
                    Reason::Other,
                    format!(
                        "error: this server does not implement the grpc health protocol \
                         (grpc.health.v1.Health): {}",
                        status.message()
                    ),
                ),
                Code::DeadlineExceeded => Outcome::failure(Reason::Timeout, rpc_timeout()),
                // tonic enforces the request's grpc-timeout on the client
                // side too and reports it as Cancelled: our own deadline.
                Code::Cancelled if Instant::now() >= deadline => {
                    Outcome::failure(Reason::Timeout, rpc_timeout())
                }
                code => {
                    let raw = raw_code.lock().expect("not poisoned").take();
                    // With TLS 1.3 a server that refuses the client's
                    // certificate says so after the handshake, in the call.
                    let reason = if caused_by_tls(&status) {
                        Reason::Tls
                    } else {
                        Reason::Other
                    };
                    Outcome::failure(
                        reason,
                        format!(
                            "error: health rpc probe failed: rpc error: code = {} desc = {}",
                            code_name(code, raw),
                            status_text(&status)
                        ),
                    )
                }
            },
        };
        outcome.with_tls_expiry(tls_expiry)
    }

    /// Connects, as grpc-go's blocking dial does, until a connection is
    /// ready or `deadline` passes: each attempt dials, completes the
    /// HTTP/2 handshake and waits for the server's SETTINGS frame; a failed
    /// attempt is tried again after grpc-go's backoff. The error is why
    /// the last attempt failed. Over TLS, the connection comes with when
    /// the server's certificate chain first expires.
    async fn connect(&self, authority: &str, deadline: Instant) -> Result<Connected, Failed> {
        let mut backoff = BACKOFF_BASE;
        loop {
            let attempt = Instant::now();
            let failed = match tokio::time::timeout_at(deadline, self.attempt(authority, deadline)).await {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(failed)) => failed,
                Err(_) => Failed::new(Reason::Timeout, "the connection was not ready in time"),
            };
            tokio::time::sleep_until((attempt + backoff).min(deadline)).await;
            if Instant::now() >= deadline {
                return Err(failed);
            }
            backoff = backoff.mul_f64(BACKOFF_MULTIPLIER);
        }
    }

    /// One connection attempt.
    async fn attempt(&self, authority: &str, deadline: Instant) -> Result<Connected, Failed> {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = dial(&self.resolver, &self.spec.host, self.spec.port, left).await?;
        // tonic only ever sees a connected stream, so its URI stays
        // `http`: the TLS is done here, by the check's own settings.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .and_then(|e| e.user_agent(self.spec.user_agent.as_str()))
            .map_err(|e| Failed::new(Reason::Other, error_chain(&e)))?;
        let Some(tls) = &self.tls else {
            let (channel, peer) = ready_channel(&endpoint, stream).await?;
            return Ok((channel, None, peer));
        };
        let name = tls
            .server_name(&self.spec.host.name)
            .map_err(|message| Failed::new(Reason::Tls, message))?;
        let config = tls
            .config()
            .map_err(|message| Failed::new(Reason::Tls, message))?;
        let stream = TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| Failed::new(Reason::Tls, format!("tls: {}", super::describe_io(&e))))?;
        // grpc-go's TLS credentials, which the kubelet's gRPC-over-TLS
        // probes use (KEP-4939), refuse a server that does not select h2
        // (grpc-go 1.67 on, `credentials/tls.go` `ClientHandshake`).
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(Failed::new(
                Reason::Tls,
                "credentials: cannot check peer: missing selected ALPN property",
            ));
        }
        let tls_expiry = expiry::earliest(stream.get_ref().1.peer_certificates().unwrap_or_default());
        let (channel, peer) = ready_channel(&endpoint, stream).await?;
        Ok((channel, tls_expiry, peer))
    }
}

/// Completes the HTTP/2 handshake on `stream` and waits, as grpc-go's
/// transport does, for the server preface (a SETTINGS frame; grpc-go
/// `http2_client.go`) before the connection counts as ready.
async fn ready_channel<S>(endpoint: &Endpoint, stream: S) -> Result<(Channel, Arc<PeerSettings>), Failed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Header blocks as x/net reads them (src/check/h2_headers.rs).
    let (stream, mut settings, peer) = Preface::new(GoHeaders::new(stream));
    let channel = endpoint
        .connect_with_connector(Dialed(Some(stream)))
        .await
        .map_err(|e| Failed::new(Reason::Other, error_chain(&e)))?;
    match settings.wait_for(|s| *s != PrefaceState::Pending).await {
        Ok(s) if *s == PrefaceState::Settings => Ok((channel, peer)),
        _ => Err(Failed::new(
            Reason::Other,
            "the server did not send an HTTP/2 SETTINGS frame",
        )),
    }
}

/// grpc-go's name of a status code (`codes.Code.String`): `Canceled`,
/// and `Code(17)` for a number it does not know. `raw` is the
/// `grpc-status` value received, which tonic maps to Unknown when it does
/// not know it.
fn code_name(code: Code, raw: Option<String>) -> String {
    if let Some(raw) = raw
        && let Ok(n) = raw.parse::<u32>()
        && n > 16
    {
        return format!("Code({n})");
    }
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
    .to_string()
}

/// A duration as Go's `time.Duration.String` writes it: `1s`, `500ms`,
/// `1.5s`, `2m0s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let fraction = |value: u128, unit: u128| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let rest = format!("{rest:0digits$}");
            format!("{whole}.{}", rest.trim_end_matches('0'))
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let secs = nanos / 1_000_000_000;
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// A status's message, or its transport cause when the message is empty
/// (a connection that broke during the call).
fn status_text(status: &tonic::Status) -> String {
    match (status.message(), status.source()) {
        ("", Some(source)) => error_chain(source),
        (message, _) => message.to_string(),
    }
}

/// Where the server's connection preface stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrefaceState {
    /// Fewer than a frame header's 9 bytes read so far.
    Pending,
    /// The first frame is a SETTINGS frame.
    Settings,
    /// The first frame is something else, or the connection ended first.
    Broken,
}

/// What the server's SETTINGS frames have said so far, read by the call.
#[derive(Debug, Default)]
struct PeerSettings {
    /// SETTINGS_MAX_HEADER_LIST_SIZE, `u64::MAX` until one is announced.
    max_header_list_size: AtomicU64,
}

impl PeerSettings {
    fn new() -> Self {
        PeerSettings {
            max_header_list_size: AtomicU64::new(u64::MAX),
        }
    }
}

/// A stream that follows the frames the server sends: whether the first
/// is a SETTINGS frame, and what every SETTINGS frame announces.
struct Preface<S> {
    inner: S,
    /// The header of the frame being read, until its 9 bytes are in.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The payload of the SETTINGS frame being read.
    settings: Option<Vec<u8>>,
    state: watch::Sender<PrefaceState>,
    peer: Arc<PeerSettings>,
}

/// The type of an HTTP/2 SETTINGS frame (RFC 9113 §6.5), its ACK flag,
/// and the identifier of SETTINGS_MAX_HEADER_LIST_SIZE.
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The largest SETTINGS payload followed: the client's largest frame
/// (h2's default SETTINGS_MAX_FRAME_SIZE); a larger frame is the HTTP/2
/// client's error to report.
const MAX_SETTINGS_PAYLOAD: usize = 16_384;

impl<S> Preface<S> {
    fn new(inner: S) -> (Preface<S>, watch::Receiver<PrefaceState>, Arc<PeerSettings>) {
        let (state, rx) = watch::channel(PrefaceState::Pending);
        let peer = Arc::new(PeerSettings::new());
        (
            Preface {
                inner,
                head: Vec::with_capacity(9),
                left: 0,
                settings: None,
                state,
                peer: Arc::clone(&peer),
            },
            rx,
            peer,
        )
    }

    /// Follows the frame boundaries through `data`, as read from the
    /// server.
    fn follow(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                if let Some(payload) = &mut self.settings {
                    payload.extend_from_slice(&data[..n]);
                }
                self.left -= n;
                data = &data[n..];
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let n = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.head.len() < 9 {
                continue;
            }
            let length =
                usize::from(self.head[0]) << 16 | usize::from(self.head[1]) << 8 | usize::from(self.head[2]);
            let (kind, flags) = (self.head[3], self.head[4]);
            self.head.clear();
            if *self.state.borrow() == PrefaceState::Pending {
                self.state.send_replace(if kind == FRAME_SETTINGS {
                    PrefaceState::Settings
                } else {
                    PrefaceState::Broken
                });
            }
            self.settings =
                (kind == FRAME_SETTINGS && flags & FLAG_ACK == 0 && length <= MAX_SETTINGS_PAYLOAD)
                    .then(|| Vec::with_capacity(length));
            self.left = length;
            if length == 0 {
                self.end_frame();
            }
        }
    }

    /// A frame has been read to its end: a SETTINGS frame's values are
    /// taken, as grpc-go's `handleSettings` takes them.
    fn end_frame(&mut self) {
        let Some(payload) = self.settings.take() else {
            return;
        };
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            if id == SETTINGS_MAX_HEADER_LIST_SIZE {
                self.peer
                    .max_header_list_size
                    .store(u64::from(value), Ordering::Relaxed);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Preface<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.follow(&buf.filled()[before..]),
            Poll::Ready(_) if *this.state.borrow() == PrefaceState::Pending => {
                this.state.send_replace(PrefaceState::Broken);
            }
            _ => {}
        }
        polled
    }
}

write_through!(Preface);

/// A connector that hands tonic the stream [`dial`] opened, so the dial
/// has the same bounds and messages as every other network check. A
/// second connection attempt (tonic reconnecting) fails.
struct Dialed<S>(Option<Preface<S>>);

impl<S> tower::Service<Uri> for Dialed<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Response = TokioIo<Preface<S>>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        ready(
            self.0
                .take()
                .map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("connection closed")),
        )
    }
}

/// The channel, with grpc-go's checks on each response: the HTTP status
/// and content type of its head (grpc-go `http2_client.go`
/// `operateHeaders`), one message for a unary call
/// (grpc-go `stream.go` `recvMsg`, "cardinality violation"), grpc-go's
/// message size limit, and the raw `grpc-status` kept in `raw_code`.
#[derive(Clone)]
struct GoRules {
    inner: Channel,
    /// What the server's SETTINGS frames announce.
    peer: Arc<PeerSettings>,
    raw_code: Arc<Mutex<Option<String>>>,
}

type GrpcBody = tonic::body::Body;

impl tower::Service<hyper::Request<GrpcBody>> for GoRules {
    type Response = hyper::Response<GrpcBody>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: hyper::Request<GrpcBody>) -> Self::Future {
        // grpc-go refuses to send a request whose header list is larger
        // than the server's SETTINGS_MAX_HEADER_LIST_SIZE
        // (http2_client.go `NewStream`, `checkForHeaderListSize`).
        let max = self.peer.max_header_list_size.load(Ordering::Relaxed);
        if header_list_size(&request) > max {
            *self.raw_code.lock().expect("not poisoned") = None;
            let status = tonic::Status::internal(format!(
                "header list size to send violates the maximum size ({max} bytes) set by server"
            ));
            return Box::pin(ready(Ok(status.into_http::<GrpcBody>())));
        }
        let call = tower::Service::call(&mut self.inner, request);
        let raw_code = Arc::clone(&self.raw_code);
        Box::pin(async move {
            let mut response = call.await?;
            if let Some(refused) = refuse_head(&response) {
                return Ok(refused);
            }
            // grpc-go reads the status fields of every header block and
            // fails the call on those it cannot decode.
            if let Err(status) = status::as_grpc_go_reads(response.headers_mut()) {
                *raw_code.lock().expect("not poisoned") = None;
                return Ok(status.into_http::<GrpcBody>());
            }
            // grpc-go looks at `grpc-encoding` only for a message whose
            // compression flag is set (rpc_util.go `checkRecvPayload`);
            // tonic refuses an encoding it was not built with, whatever
            // the messages. The flag is judged in `OneMessage::scan`.
            let encoding = response.headers_mut().remove("grpc-encoding");
            if let Some(code) = response.headers().get("grpc-status") {
                *raw_code.lock().expect("not poisoned") = code.to_str().ok().map(str::to_string);
            }
            Ok(response.map(|body| {
                GrpcBody::new(OneMessage {
                    inner: body,
                    header: Vec::with_capacity(5),
                    left: 0,
                    messages: 0,
                    encoding,
                    raw_code,
                })
            }))
        })
    }
}

/// The size of a request's header list as HTTP/2 counts it (RFC 9113
/// §6.5.2; x/net hpack `HeaderField.Size`): each field's name and value
/// and 32 bytes, the pseudo-header fields included.
fn header_list_size(request: &hyper::Request<GrpcBody>) -> u64 {
    let field = |name: usize, value: usize| (name + value + 32) as u64;
    let uri = request.uri();
    let pseudo = field(":method".len(), request.method().as_str().len())
        + field(":scheme".len(), uri.scheme_str().unwrap_or("http").len())
        + field(
            ":path".len(),
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        )
        + field(
            ":authority".len(),
            uri.authority().map_or(0, |a| a.as_str().len()),
        );
    let regular: u64 = request
        .headers()
        .iter()
        .map(|(name, value)| field(name.as_str().len(), value.len()))
        .sum();
    pseudo + regular
}

/// grpc-go's verdict on a response head: `None` when it is a gRPC
/// response, else the error grpc-go reports, as a trailers-only gRPC
/// response tonic turns into that status.
fn refuse_head(response: &hyper::Response<GrpcBody>) -> Option<hyper::Response<GrpcBody>> {
    let status = response.status();
    let content_type = response.headers().get(hyper::header::CONTENT_TYPE);
    // grpcutil.ContentSubtype: `application/grpc`, or it followed by `+`
    // or `;` and anything.
    let grpc = content_type.is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    });
    if grpc && status == hyper::StatusCode::OK {
        return None;
    }
    let mut errors = Vec::new();
    if status != hyper::StatusCode::OK {
        errors.push(format!(
            "unexpected HTTP status code received from server: {} ({})",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        ));
    }
    match content_type {
        _ if grpc => {}
        None => errors.push("malformed header: missing HTTP content-type".into()),
        Some(ct) => errors.push(format!(
            "transport: received unexpected content-type {:?}",
            String::from_utf8_lossy(ct.as_bytes())
        )),
    }
    // grpc-go `HTTPStatusConvTab`; any other status is Unknown.
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    tonic::Status::new(code, errors.join("; "))
        .into_http::<GrpcBody>()
        .into()
}

/// A response body that lets one gRPC message through and fails on a
/// second, as grpc-go does for a unary call, and fails a message larger
/// than grpc-go accepts.
struct OneMessage {
    inner: GrpcBody,
    /// The length-prefix bytes of the message being read.
    header: Vec<u8>,
    /// Bytes of the current message still to come.
    left: usize,
    /// Messages whose prefix has been read.
    messages: usize,
    /// The response's `grpc-encoding`, taken out of tonic's sight.
    encoding: Option<hyper::header::HeaderValue>,
    raw_code: Arc<Mutex<Option<String>>>,
}

impl OneMessage {
    /// Follows the message framing through `data`.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), tonic::Status> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            if self.messages == 1 {
                return Err(tonic::Status::internal(
                    "cardinality violation: expected <EOF> for non server-streaming RPCs, \
                     but received another message",
                ));
            }
            let n = (5 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == 5 {
                let length = (&self.header[1..5]).get_u32() as usize;
                if length > MAX_MESSAGE {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "grpc: received message larger than max ({length} vs. {MAX_MESSAGE})"
                    )));
                }
                self.check_flag(self.header[0])?;
                self.header.clear();
                self.left = length;
                self.messages += 1;
            }
        }
        Ok(())
    }
}

impl OneMessage {
    /// grpc-go's `checkRecvPayload` (rpc_util.go), after the size check
    /// as there: a message without the compression flag is read whatever
    /// `grpc-encoding` says. A compressed message fails as it does in a
    /// grpc-go without that decompressor registered: this client has
    /// none.
    fn check_flag(&self, flag: u8) -> Result<(), tonic::Status> {
        let encoding = self.encoding.as_ref().map(|e| e.as_bytes()).unwrap_or_default();
        match flag {
            0 => Ok(()),
            1 if encoding.is_empty() || encoding == b"identity" => Err(tonic::Status::internal(
                "grpc: compressed flag set with identity or empty encoding",
            )),
            1 => Err(tonic::Status::unimplemented(format!(
                "grpc: Decompressor is not installed for grpc-encoding {:?}",
                String::from_utf8_lossy(encoding)
            ))),
            other => Err(tonic::Status::internal(format!(
                "grpc: received unexpected payload format {other}"
            ))),
        }
    }
}

impl Body for OneMessage {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled;
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = this.scan(data)
        {
            return Poll::Ready(Some(Err(status)));
        }
        let mut trailers = match frame.into_trailers() {
            Ok(trailers) => trailers,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        if let Err(status) = status::as_grpc_go_reads(&mut trailers) {
            *this.raw_code.lock().expect("not poisoned") = None;
            return Poll::Ready(Some(Err(status)));
        }
        if let Some(code) = trailers.get("grpc-status") {
            *this.raw_code.lock().expect("not poisoned") = code.to_str().ok().map(str::to_string);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        for (d, want) in [
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(3725), "1h2m5s"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
        ] {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn codes_are_spelt_as_grpc_go_spells_them() {
        assert_eq!(code_name(Code::Cancelled, None), "Canceled");
        assert_eq!(code_name(Code::Unknown, Some("17".into())), "Code(17)");
        assert_eq!(code_name(Code::NotFound, Some("5".into())), "NotFound");
    }
}
