//! Checks: one run of one check, yielding an [`Outcome`] in the kubelet's
//! words. Timers and thresholds live in `engine`; this module only runs.
//!
//! Every kind bounds its own run by the timeout it is given, so that its
//! timeout message is the kubelet's; the engine adds a safety net on top.

/// `impl AsyncWrite for $ty<S>` handing every write straight to the
/// field `inner`: the stream wrappers below watch only what is read.
macro_rules! write_through {
    ($ty:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

mod dialogue;
mod exec;
mod file;
mod grpc;
mod h2_headers;
pub(crate) mod http;
mod mysql;
mod postgres;
mod process;
mod reason;
mod redis;
mod tcp;
mod wire;

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::config::{CheckKind, HttpSpec, MysqlSpec, PostgresSpec, RedisSpec};

pub use dialogue::DialogueCheck;
pub use exec::{ExecCheck, become_subreaper};
pub(crate) use exec::{kill_orphans, reap_orphans};
pub(crate) use file::FileCheck;
pub use grpc::GrpcCheck;
pub use http::HttpCheck;
pub use http::expiry::not_after as certificate_not_after;
pub use mysql::MysqlCheck;
pub(crate) use postgres::PostgresCheck;
pub use process::ProcessCheck;
pub use reason::Reason;
pub use redis::RedisCheck;
pub(crate) use tcp::TcpCheck;

pub(crate) use crate::text::MAX_MESSAGE;
pub use crate::text::one_line;
pub(crate) use crate::text::{describe_io, error_chain};

/// The most bytes of a response body or of command output that are read.
pub(crate) const MAX_OUTPUT: usize = 10 * 1024;

/// The verdict of one run, as the kubelet's `probe.Result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The check passed.
    Success,
    /// The check passed with something worth a warning (an HTTP redirect to
    /// another host). Counts as a success.
    Warning,
    /// The check failed; a timeout is a failure.
    Failure,
    /// The check could not run (a spawn error, a panic). It does not move
    /// the thresholds: the kubelet throws such results away.
    Unknown,
}

impl Verdict {
    /// Lower-case name for JSON, logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::Warning => "warning",
            Verdict::Failure => "failure",
            Verdict::Unknown => "unknown",
        }
    }

    /// Whether the run counts as a success for the thresholds.
    pub fn is_success(self) -> bool {
        matches!(self, Verdict::Success | Verdict::Warning)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one run: a verdict, why a failure failed, and a one-line
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What happened.
    pub verdict: Verdict,
    /// Why the run failed: set on every [`Verdict::Failure`], never on
    /// another verdict.
    pub reason: Option<Reason>,
    /// One line, in the kubelet's words where it has some.
    pub message: String,
    /// When the certificate chain the server presented first expires, for
    /// a run that completed a TLS handshake.
    pub tls_expiry: Option<std::time::SystemTime>,
    /// How long each phase of an HTTP run took.
    pub phases: Option<Phases>,
}

/// How long each phase of an HTTP run took, as blackbox_exporter's
/// `probe_http_duration_seconds{phase}`: each phase summed over the hops of
/// the run (a followed redirect adds a second request); a phase the run
/// never reached, or skipped (a reused connection, plain HTTP), stays zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Looking the host name up (zero for an IP address).
    pub resolve: Duration,
    /// The TCP connect.
    pub connect: Duration,
    /// The TLS handshake.
    pub tls: Duration,
    /// From sending the request to the response head: the app's time.
    pub processing: Duration,
    /// Reading the body (at most 10 KiB of it).
    pub transfer: Duration,
}

impl Phases {
    /// The `phase` label values, in the order of [`Phases::durations`].
    pub(crate) const NAMES: [&'static str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

    /// The durations, in the order of [`Phases::NAMES`].
    pub fn durations(&self) -> [Duration; 5] {
        [
            self.resolve,
            self.connect,
            self.tls,
            self.processing,
            self.transfer,
        ]
    }
}

impl Outcome {
    /// A success with `message`.
    pub fn success(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Success, None, message)
    }

    /// A success worth a warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Warning, None, message)
    }

    /// A failure for `reason`, with `message`.
    pub fn failure(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Failure, Some(reason), message)
    }

    /// A run that could not happen.
    pub fn unknown(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Unknown, None, message)
    }

    fn new(verdict: Verdict, reason: Option<Reason>, message: impl Into<String>) -> Self {
        Outcome {
            verdict,
            reason,
            message: one_line(&message.into()),
            tls_expiry: None,
            phases: None,
        }
    }

    /// The same outcome, with the expiry of the chain its handshake saw.
    pub(crate) fn with_tls_expiry(mut self, expiry: Option<std::time::SystemTime>) -> Self {
        self.tls_expiry = expiry;
        self
    }
}

/// A failed step of a run: why, and the message in the kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    /// Why it failed.
    pub(crate) reason: Reason,
    /// What to tell.
    pub(crate) message: String,
}

impl Failed {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failed {
            reason,
            message: message.into(),
        }
    }
}

/// The file descriptors a check of `kind` holds while it runs: an exec
/// check's two pipes and the child's pidfd, a socket for the network
/// kinds, none for a file check (a `stat`).
pub(crate) fn fds_while_running(kind: &CheckKind) -> u64 {
    match kind {
        CheckKind::Exec(_) => 3,
        CheckKind::Http(_)
        | CheckKind::Tcp(_)
        | CheckKind::Grpc(_)
        | CheckKind::Redis(_)
        | CheckKind::Postgres(_)
        | CheckKind::Mysql(_)
        | CheckKind::Dialogue(_) => 1,
        // A directory and a file of /proc at a time.
        CheckKind::Process(_) => 2,
        CheckKind::File(_) => 0,
    }
}

/// A check ready to run: its kind with whatever it prepared at startup
/// (a TLS configuration, a kept-alive connection).
#[derive(Debug)]
pub enum Check {
    /// An HTTP or HTTPS request.
    Http(Box<HttpCheck>),
    /// A TCP connect.
    Tcp(TcpCheck),
    /// A command.
    Exec(ExecCheck),
    /// A gRPC health call.
    Grpc(GrpcCheck),
    /// A heartbeat file.
    File(FileCheck),
    /// `redis-cli ping`.
    Redis(Box<RedisCheck>),
    /// A PostgreSQL server.
    Postgres(Box<PostgresCheck>),
    /// `mysqladmin ping|status`, `mysql -e`.
    Mysql(Box<MysqlCheck>),
    /// `echo ruok | nc`.
    Dialogue(Box<DialogueCheck>),
    /// `pgrep -f`.
    Process(Box<ProcessCheck>),
}

/// A check that cannot be prepared (a CA file that does not load).
#[derive(Debug, thiserror::Error)]
#[error("check {check:?}: {message}")]
pub struct PrepareError {
    /// The check's name.
    pub(crate) check: String,
    /// What went wrong.
    pub(crate) message: String,
}

impl Check {
    /// Prepares the check described by `kind`.
    pub fn new(name: &str, kind: &CheckKind) -> Result<Check, PrepareError> {
        let err = |message: String| PrepareError {
            check: name.to_string(),
            message,
        };
        Ok(match kind {
            CheckKind::Http(spec) => {
                Check::Http(Box::new(HttpCheck::new(HttpSpec::clone(spec)).map_err(err)?))
            }
            CheckKind::Tcp(spec) => Check::Tcp(TcpCheck::new(spec.clone())),
            CheckKind::Exec(spec) => Check::Exec(ExecCheck::new(spec.clone())),
            CheckKind::Grpc(spec) => Check::Grpc(GrpcCheck::new(spec.clone()).map_err(err)?),
            CheckKind::File(spec) => Check::File(FileCheck::new(spec.clone())),
            CheckKind::Redis(spec) => {
                Check::Redis(Box::new(RedisCheck::new(RedisSpec::clone(spec)).map_err(err)?))
            }
            CheckKind::Postgres(spec) => Check::Postgres(Box::new(
                PostgresCheck::new(PostgresSpec::clone(spec)).map_err(err)?,
            )),
            CheckKind::Mysql(spec) => {
                Check::Mysql(Box::new(MysqlCheck::new(MysqlSpec::clone(spec)).map_err(err)?))
            }
            CheckKind::Dialogue(spec) => Check::Dialogue(Box::new(
                DialogueCheck::new(crate::config::DialogueSpec::clone(spec)).map_err(err)?,
            )),
            CheckKind::Process(spec) => Check::Process(Box::new(ProcessCheck::new(
                crate::config::ProcessSpec::clone(spec),
            ))),
        })
    }

    /// Runs the check once, bounded by `timeout`. A failure because the
    /// sidecar itself ran out of descriptors or memory on the way is
    /// Unknown: the app was not checked, and the sidecar's own exhaustion
    /// must not restart it.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        LOCAL_EXHAUSTION
            .scope(Cell::new(None), async {
                let outcome = self.run_once(timeout).await;
                match LOCAL_EXHAUSTION.with(Cell::get) {
                    Some(why) if outcome.verdict == Verdict::Failure => Outcome::unknown(format!(
                        "the sidecar could not check: it is out of resources ({why}): {}",
                        outcome.message
                    )),
                    _ => outcome,
                }
            })
            .await
    }

    async fn run_once(&self, timeout: Duration) -> Outcome {
        match self {
            // An HTTP run's state is 4.5 KiB and a gRPC run's 3 KiB, against
            // 0.5 KiB for TCP: boxed, so that a run of the other kinds is not
            // sized like the largest one.
            Check::Http(c) => Box::pin(c.run(timeout)).await,
            Check::Tcp(c) => c.run(timeout).await,
            Check::Exec(c) => c.run(timeout).await,
            Check::Grpc(c) => Box::pin(c.run(timeout)).await,
            Check::File(c) => c.run(timeout).await,
            Check::Redis(c) => Box::pin(c.run(timeout)).await,
            Check::Postgres(c) => Box::pin(c.run(timeout)).await,
            Check::Mysql(c) => Box::pin(c.run(timeout)).await,
            Check::Dialogue(c) => Box::pin(c.run(timeout)).await,
            Check::Process(c) => c.run(timeout).await,
        }
    }
}

tokio::task_local! {
    /// Set during a run when the sidecar's own resources ran out (see
    /// [`note_exhaustion`]).
    static LOCAL_EXHAUSTION: Cell<Option<&'static str>>;
}

/// Notes, for the run in progress, an error that says the sidecar itself
/// is out of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) rather than
/// anything about the app; returns whether it was one.
pub(crate) fn note_exhaustion(e: &std::io::Error) -> bool {
    use nix::libc;
    let why = match e.raw_os_error() {
        Some(libc::EMFILE) => "too many open files",
        Some(libc::ENFILE) => "too many open files in system",
        Some(libc::ENOBUFS) => "no buffer space available",
        Some(libc::ENOMEM) => "cannot allocate memory",
        _ => return false,
    };
    let _ = LOCAL_EXHAUSTION.try_with(|cell| cell.set(Some(why)));
    true
}

/// The result of one name lookup, shared by everyone waiting on it.
type Lookup = Option<Result<Vec<std::net::IpAddr>, String>>;

/// Resolves a check's host names, one lookup at a time.
///
/// Name lookups run on blocking threads (getaddrinfo) and cannot be
/// cancelled: a run that times out leaves its lookup running. Without
/// this, a check with a slow or unreachable DNS server would start a new
/// lookup every period and pile them up; with it, a run joins the lookup
/// already under way. IP literals, the usual case, need no lookup.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    in_flight: std::sync::Mutex<Option<tokio::sync::watch::Receiver<Lookup>>>,
}

impl Resolver {
    /// The addresses of `name`, from the lookup under way or a new one.
    pub(crate) async fn lookup(&self, name: &str) -> Result<Vec<std::net::IpAddr>, String> {
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut rx = {
            let mut in_flight = self.in_flight.lock().expect("not poisoned");
            match in_flight.as_ref() {
                Some(rx) if rx.borrow().is_none() => rx.clone(),
                _ => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    let owned = name.to_string();
                    tokio::task::spawn_blocking(move || {
                        use std::net::ToSocketAddrs as _;
                        let found = (owned.as_str(), 0)
                            .to_socket_addrs()
                            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
                            .map_err(|e| describe_io(&e));
                        let _ = tx.send(Some(found));
                    });
                    *in_flight = Some(rx.clone());
                    rx
                }
            }
        };
        let done = rx.wait_for(Option::is_some).await;
        match done.as_deref() {
            Ok(Some(found)) => found.clone(),
            _ => Err("the lookup was abandoned".into()),
        }
    }
}

/// A failed lookup in Go's words (`net.DNSError`): getaddrinfo's "name
/// or service not known" and "no address associated with hostname" are
/// Go's `no such host`; other failures keep their own words.
fn go_dns_error(e: &str) -> String {
    let lower = e.to_ascii_lowercase();
    if lower.contains("name or service not known")
        || lower.contains("no address associated")
        || lower.contains("nodename nor servname")
    {
        "no such host".into()
    } else {
        e.trim_start_matches("failed to lookup address information: ")
            .to_string()
    }
}

/// Connects to `host:port` within `timeout`, as the kubelet's dialer, one
/// address after the other: failures read
/// `dial tcp ADDR: connect: connection refused` ([`Reason::Refused`]),
/// `dial tcp ADDR: i/o timeout` ([`Reason::Timeout`]) or
/// `dial tcp: lookup NAME: no such host` ([`Reason::Dns`]).
pub(crate) async fn dial(
    resolver: &Resolver,
    host: &crate::config::Host,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, Failed> {
    dial_timed(resolver, host, port, timeout, &mut None).await
}

/// [`dial`], noting in `resolved` when the name lookup ended.
pub(crate) async fn dial_timed(
    resolver: &Resolver,
    host: &crate::config::Host,
    port: u16,
    timeout: Duration,
    resolved: &mut Option<tokio::time::Instant>,
) -> Result<tokio::net::TcpStream, Failed> {
    let authority = host.authority(port);
    let connect = async {
        let addrs = resolver
            .lookup(&host.name)
            .await
            .map_err(|e| Failed::new(Reason::Dns, format!("lookup {}: {}", host.name, go_dns_error(&e))))?;
        *resolved = Some(tokio::time::Instant::now());
        let mut last = Failed::new(Reason::Dns, format!("lookup {}: no addresses", host.name));
        for ip in addrs {
            match tokio::net::TcpStream::connect((ip, port)).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => {
                    note_exhaustion(&e);
                    let reason = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => Reason::Refused,
                        _ => Reason::Other,
                    };
                    last = Failed::new(reason, format!("connect: {}", describe_io(&e)));
                }
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        // Go's `net.OpError` names the address only once there is one:
        // a failed lookup reads `dial tcp: lookup NAME: no such host`.
        Ok(Err(why)) if why.reason == Reason::Dns => {
            Err(Failed::new(why.reason, format!("dial tcp: {}", why.message)))
        }
        Ok(Err(why)) => Err(Failed::new(
            why.reason,
            format!("dial tcp {authority}: {}", why.message),
        )),
        Err(_) => Err(Failed::new(
            Reason::Timeout,
            format!("dial tcp {authority}: i/o timeout"),
        )),
    }
}
