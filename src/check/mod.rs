//! Checks: one run of one check, yielding an [`Outcome`] in the kubelet's
//! words. Timers and thresholds live in `engine`; this module only runs.
//!
//! Every kind bounds its own run by the timeout it is given, so that its
//! timeout message is the kubelet's; the engine adds a safety net on top.

mod exec;
mod file;
mod grpc;
mod http;
mod tcp;

use std::fmt;
use std::time::Duration;

use crate::config::CheckKind;

pub use exec::{ExecCheck, become_subreaper};
pub use file::FileCheck;
pub use grpc::GrpcCheck;
pub use http::HttpCheck;
pub use tcp::TcpCheck;

/// The most bytes of a response body or of command output that are read.
pub const MAX_OUTPUT: usize = 10 * 1024;

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
    pub fn as_str(self) -> &'static str {
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

/// The result of one run: a verdict and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What happened.
    pub verdict: Verdict,
    /// One line, in the kubelet's words where it has some.
    pub message: String,
}

impl Outcome {
    /// A success with `message`.
    pub fn success(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Success, message)
    }

    /// A success worth a warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Warning, message)
    }

    /// A failure with `message`.
    pub fn failure(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Failure, message)
    }

    /// A run that could not happen.
    pub fn unknown(message: impl Into<String>) -> Self {
        Outcome::new(Verdict::Unknown, message)
    }

    fn new(verdict: Verdict, message: impl Into<String>) -> Self {
        Outcome {
            verdict,
            message: one_line(&message.into()),
        }
    }
}

/// Folds text onto one line: newlines become spaces, runs of whitespace
/// shrink, and the result is cut at [`MAX_MESSAGE`] characters.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE));
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// Longest message kept for one run, in bytes.
pub const MAX_MESSAGE: usize = 1024;

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
}

/// A check that cannot be prepared (a CA file that does not load).
#[derive(Debug, thiserror::Error)]
#[error("check {check:?}: {message}")]
pub struct PrepareError {
    /// The check's name.
    pub check: String,
    /// What went wrong.
    pub message: String,
}

impl Check {
    /// Prepares the check described by `kind`.
    pub fn new(name: &str, kind: &CheckKind) -> Result<Check, PrepareError> {
        let err = |message: String| PrepareError {
            check: name.to_string(),
            message,
        };
        Ok(match kind {
            CheckKind::Http(spec) => Check::Http(Box::new(HttpCheck::new(spec.clone()).map_err(err)?)),
            CheckKind::Tcp(spec) => Check::Tcp(TcpCheck::new(spec.clone())),
            CheckKind::Exec(spec) => Check::Exec(ExecCheck::new(spec.clone())),
            CheckKind::Grpc(spec) => Check::Grpc(GrpcCheck::new(spec.clone())),
            CheckKind::File(spec) => Check::File(FileCheck::new(spec.clone())),
        })
    }

    /// Runs the check once, bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        match self {
            Check::Http(c) => c.run(timeout).await,
            Check::Tcp(c) => c.run(timeout).await,
            Check::Exec(c) => c.run(timeout).await,
            Check::Grpc(c) => c.run(timeout).await,
            Check::File(c) => c.run(timeout).await,
        }
    }
}

/// An I/O error as a short lower-case phrase, without the
/// "(os error N)" suffix: "connection refused".
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Connects to `host:port` within `timeout`, as the kubelet's dialer:
/// failures read `dial tcp ADDR: connect: connection refused` or
/// `dial tcp ADDR: i/o timeout`.
pub(crate) async fn dial(
    host: &crate::config::Host,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, String> {
    let authority = host.authority(port);
    let connect = async {
        let stream = tokio::net::TcpStream::connect((host.name.as_str(), port)).await?;
        let _ = stream.set_nodelay(true);
        Ok::<_, std::io::Error>(stream)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("dial tcp {authority}: connect: {}", describe_io(&e))),
        Err(_) => Err(format!("dial tcp {authority}: i/o timeout")),
    }
}
