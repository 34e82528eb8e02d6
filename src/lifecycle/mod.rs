//! Lifecycle: the drain, the token that guards the lifecycle endpoints, and
//! the decision of when the process exits (signals, `/exit`, the app going
//! away).

mod drain;
pub mod procnet;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use drain::{Drain, POLL, Phase, Report, SocketCounter};

/// The bearer token that guards `/prestop`, `/drain` and `/exit`.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token from `path`; trailing whitespace (the newline a
    /// Secret often ends with) is not part of it.
    pub fn load(path: &Path) -> Result<Token, String> {
        let text = std::fs::read(path).map_err(|e| format!("drain.token_file {}: {e}", path.display()))?;
        let end = text
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end == 0 {
            return Err(format!("drain.token_file {}: the file is empty", path.display()));
        }
        Ok(Token(text[..end].into()))
    }

    /// Whether an `Authorization` header value carries this token,
    /// compared in constant time.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let given = match authorization {
            Some(v) if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") => &v[7..],
            _ => return false,
        };
        bool::from(given.ct_eq(&self.0))
    }
}

/// What the lifecycle endpoints share.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// The process's one drain.
    pub drain: Drain,
    /// Required on lifecycle endpoints when set.
    pub token: Option<Token>,
    /// Cancelled by `POST /exit`: exit 0 at once.
    pub exit: CancellationToken,
}

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Drained, asked to exit, or the app went away: exit 0.
    Clean,
    /// A second signal: exit at once with 128 + the signal number.
    Forced(i32),
}

/// Decides when the process ends: the first signal starts (or joins) the
/// drain and waits until it is done and the app no longer listens on
/// `drain.ports`, never past `drain.max`; a second signal ends it at once.
/// `/exit` and, when asked for, the app going away end it too.
pub async fn supervise(lifecycle: &Lifecycle, mut signals: mpsc::UnboundedReceiver<i32>) -> Exit {
    let drain = &lifecycle.drain;
    let app_gone = async {
        if drain.config().exit_when_app_exits && !drain.config().ports.is_empty() {
            wait_app_started_then_gone(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let first = tokio::select! {
        Some(signal) = signals.recv() => signal,
        () = lifecycle.exit.cancelled() => {
            tracing::info!("exit requested through /exit");
            return Exit::Clean;
        }
        () = app_gone => {
            tracing::info!(ports = ?drain.config().ports, "the app has stopped listening: exiting (drain.exit_when_app_exits)");
            return Exit::Clean;
        }
    };
    let name = signal_name(first);
    if !drain.config().ports.is_empty()
        && drain
            .sockets()
            .is_ok_and(|s| s.listening == 0 && s.established == 0)
    {
        // A native sidecar is signalled only after every app container has
        // exited: with the app gone there is nothing left to drain.
        tracing::info!(signal = name, ports = ?drain.config().ports, "signal received and the app is not listening: nothing to drain, exiting");
        return Exit::Clean;
    }
    tracing::info!(
        signal = name,
        "signal received: draining, then exiting once the app has stopped listening"
    );
    drain.start(name);
    let deadline = Instant::now() + drain.config().max;
    let done = async {
        drain.drained().await;
        wait_app_gone(drain).await;
    };
    tokio::select! {
        () = done => tracing::info!("drained and the app has stopped listening: exiting"),
        () = tokio::time::sleep_until(deadline) => tracing::warn!("drain.max reached: exiting"),
        () = lifecycle.exit.cancelled() => tracing::info!("exit requested through /exit"),
        Some(second) = signals.recv() => {
            tracing::warn!(signal = signal_name(second), "second signal: exiting at once");
            return Exit::Forced(second);
        }
    }
    Exit::Clean
}

/// Waits until nothing listens on the drain's ports.
async fn wait_app_gone(drain: &Drain) {
    if drain.config().ports.is_empty() {
        return;
    }
    let mut last_logged = false;
    loop {
        match drain.sockets() {
            Ok(s) if s.listening == 0 => return,
            Ok(_) => {
                if !last_logged {
                    tracing::info!(ports = ?drain.config().ports, "waiting for the app to stop listening");
                    last_logged = true;
                }
            }
            Err(e) => {
                tracing::warn!("cannot read the socket tables, not waiting for the app: {e}");
                return;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the app has listened on the drain's ports and then stopped.
async fn wait_app_started_then_gone(drain: &Drain) {
    const EVERY: Duration = Duration::from_millis(500);
    let mut seen = false;
    loop {
        if let Ok(s) = drain.sockets() {
            if s.listening > 0 && !seen {
                tracing::info!(ports = ?drain.config().ports, "the app is listening");
            }
            if s.listening > 0 {
                seen = true;
            } else if seen {
                return;
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGINT => "SIGINT",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ignores_a_trailing_newline_and_needs_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let token = Token::load(&path).unwrap();
        assert!(token.accepts(Some(b"Bearer s3cret")));
        assert!(!token.accepts(Some(b"Bearer s3cret\n")));
        assert!(!token.accepts(Some(b"Bearer s3cre")));
        assert!(!token.accepts(Some(b"s3cret")));
        assert!(token.accepts(Some(b"bearer s3cret")));
        assert!(!token.accepts(Some(b"Bearer ")));
        assert!(!token.accepts(None));
        std::fs::write(&path, "\n").unwrap();
        assert!(Token::load(&path).unwrap_err().contains("empty"));
    }
}
