//! Lifecycle: the drain, the token that guards the lifecycle endpoints, and
//! the decision of when the process exits (signals, `/exit`, the app going
//! away).

pub(crate) mod app;
mod diag;
mod drain;
pub(crate) mod procnet;

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use app::Presence;
pub(crate) use drain::Drain;

use crate::state::State;

/// The bearer token that guards `/prestop`, `/drain` and `/exit`.
#[derive(Clone)]
pub(crate) struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token from `path`; trailing whitespace (the newline a
    /// Secret often ends with) is not part of it.
    pub(crate) fn load(path: &Path) -> Result<Token, String> {
        let text = crate::files::read_bounded(path, crate::files::MAX_TOKEN_BYTES)
            .map_err(|e| format!("drain.token_file {}: {e}", path.display()))?;
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
    pub(crate) fn accepts(&self, authorization: Option<&[u8]>) -> bool {
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
pub(crate) struct Lifecycle {
    /// The process's one drain.
    pub(crate) drain: Drain,
    /// Required on lifecycle endpoints when set.
    pub(crate) token: Option<Token>,
    /// Cancelled by `POST /exit`: exit 0 at once.
    pub(crate) exit: CancellationToken,
    /// Cancelled by the first signal: the sidecar itself is stopping.
    pub(crate) terminating: CancellationToken,
}

impl Lifecycle {
    /// The lifecycle around `drain`, guarded by `token`.
    pub(crate) fn new(drain: Drain, token: Option<Token>) -> Self {
        Lifecycle {
            drain,
            token,
            exit: CancellationToken::new(),
            terminating: CancellationToken::new(),
        }
    }
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
/// `/exit` and, when asked for, the app going away (seen in `presence`)
/// end it too.
pub(crate) async fn supervise(
    lifecycle: &Lifecycle,
    presence: Option<watch::Receiver<Presence>>,
    mut signals: mpsc::UnboundedReceiver<i32>,
) -> Exit {
    let drain = &lifecycle.drain;
    let app_gone = async {
        match presence.clone() {
            Some(mut presence) if drain.config().exit_when_app_exits => {
                // Started, then stopped; a closed channel waits forever.
                if presence.wait_for(|p| p.starts > 0 && !p.listening).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ => std::future::pending::<()>().await,
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
    lifecycle.terminating.cancel();
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
        wait_app_gone(drain, presence).await;
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

/// Waits until the app watcher sees nothing listening on the drain's ports
/// (at once without `drain.ports`, or when the watcher has stopped).
async fn wait_app_gone(drain: &Drain, presence: Option<watch::Receiver<Presence>>) {
    let Some(mut presence) = presence else {
        return;
    };
    if presence.borrow().listening {
        tracing::info!(ports = ?drain.config().ports, "waiting for the app to stop listening");
    }
    let _ = presence.wait_for(|p| !p.listening).await;
}

/// Follows the app across container restarts. When the app stops
/// listening, every check goes back to its initial state, as the kubelet's
/// probes do for the next container (so `/startupz` fails until the new
/// container has started, and liveness starts healthy rather than failed).
/// When it listens again, a finished drain ends: the kubelet runs the
/// preStop hook before a liveness or startup restart too. Nothing is reset
/// once the sidecar itself is stopping.
pub(crate) async fn follow_app_restarts(
    lifecycle: Lifecycle,
    state: State,
    mut presence: watch::Receiver<Presence>,
) {
    let drain = &lifecycle.drain;
    let mut starts = 0;
    loop {
        // Up, then gone: the checks begin again for the next container.
        if presence.wait_for(|p| p.starts > starts).await.is_err() {
            return;
        }
        starts = presence.borrow().starts;
        if presence.wait_for(|p| !p.listening).await.is_err() {
            return;
        }
        if lifecycle.terminating.is_cancelled() {
            return;
        }
        tracing::info!("every check starts again from its initial state for the next app container");
        state.new_container();
        // Back: a drain the old container's preStop hook began ends.
        if presence.wait_for(|p| p.listening).await.is_err() {
            return;
        }
        if drain.is_draining() {
            tracing::info!("the new app container serves once the drain under way has ended");
            drain.drained().await;
        }
        if !lifecycle.terminating.is_cancelled() && drain.reset() {
            tracing::info!("drain reset for the new app container: /readyz follows the checks again");
        }
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
