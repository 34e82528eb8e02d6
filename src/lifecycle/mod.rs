//! Lifecycle: the drain, the token that guards the lifecycle endpoints, and
//! the decision of when the process exits (signals, `/exit`, the app going
//! away).

pub(crate) mod app;
/// Public for the benchmark (`bench/drain.rs`): one count of the app's
/// connections, the new way.
pub mod diag;
mod drain;
/// Public for the benchmark (`bench/drain.rs`): one count, the old way.
pub mod procnet;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq as _;
use tokio::sync::{mpsc, watch};
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

/// Why `drain.token_file` gives no token; the text names the key and the
/// file. Public as [`BuildError::Token`](crate::BuildError::Token)'s field,
/// read only through its text.
#[derive(Debug, thiserror::Error)]
#[error("drain.token_file {}: {fault}", .path.display())]
pub struct TokenError {
    path: std::path::PathBuf,
    fault: TokenFault,
}

/// What is wrong with the token file.
#[derive(Debug, thiserror::Error)]
enum TokenFault {
    /// It cannot be read, or is over the size bound.
    #[error("{0}")]
    Unreadable(crate::files::ReadError),
    /// It holds nothing but whitespace.
    #[error("the file is empty")]
    Empty,
}

impl Token {
    /// Reads the token from `path`; trailing whitespace (the newline a
    /// Secret often ends with) is not part of it.
    pub(crate) fn load(path: &Path) -> Result<Token, TokenError> {
        let fail = |fault| TokenError {
            path: path.to_path_buf(),
            fault,
        };
        let text = crate::files::read_bounded(path, crate::files::MAX_TOKEN_BYTES)
            .map_err(|e| fail(TokenFault::Unreadable(e)))?;
        let end = text
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end == 0 {
            return Err(fail(TokenFault::Empty));
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

/// Why a lifecycle request (`/prestop`, `/drain`, `/exit`) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `drain.token_file` is set and the request does not carry the token:
    /// 401.
    Token,
    /// No token is set and the client is not on loopback: 403. Anyone who
    /// can reach the pod IP could otherwise drain the pod or stop the
    /// sidecar (Istio and Linkerd answer such endpoints on loopback only).
    NotLoopback,
}

impl Refusal {
    /// The `reason` label of `healthproxy_lifecycle_refused_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::NotLoopback => "not_loopback",
        }
    }
}

/// What the lifecycle endpoints share.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    /// The process's one drain.
    pub(crate) drain: Drain,
    /// Required on lifecycle endpoints when set; without it they answer
    /// loopback clients only.
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

    /// Whether a lifecycle request from `peer` (unknown: `None`) with this
    /// `Authorization` header may proceed: with a token, from anywhere if
    /// it carries it; without one, from loopback only.
    pub(crate) fn authorize(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        match &self.token {
            Some(token) if token.accepts(authorization) => Ok(()),
            Some(_) => Err(Refusal::Token),
            // A dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1.
            None if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) => Ok(()),
            None => Err(Refusal::NotLoopback),
        }
    }

    /// How the kubelet's preStop `httpGet` will be treated, for the
    /// startup log: it comes from the node to the pod IP, never from
    /// loopback.
    pub(crate) fn describe_guard(&self) {
        if self.token.is_some() {
            tracing::info!(
                "/prestop, /drain and /exit need the bearer token of drain.token_file: give the kubelet's preStop httpGet an Authorization header with it"
            );
        } else {
            tracing::warn!(
                "drain.token_file is not set: /prestop, /drain and /exit answer loopback clients only; the kubelet's preStop httpGet comes from the node and gets 403 without draining (SIGTERM still drains); set drain.token_file to drain from the preStop hook"
            );
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

impl Exit {
    /// The process's exit status.
    pub(crate) fn code(self) -> u8 {
        match self {
            Exit::Clean => 0,
            Exit::Forced(signal) => 128u8.saturating_add(signal as u8),
        }
    }
}

/// Decides when the process ends. The first signal starts (or joins) the
/// drain; the process then keeps serving until the drain is done and the
/// app no longer listens on `drain.ports`. That wait is bounded: it ends
/// at the latest `drain.max` after the drain has ended, itself at the
/// latest `drain.max` after it began, so never later than `2 × drain.max`
/// after the drain began. The drain always ends first, so a pending
/// `/prestop` is answered; a classic sidecar then serves the app's last
/// readiness probes while the app, signalled by the kubelet once
/// `/prestop` has answered, shuts down. In a pod the grace period ends it
/// sooner (keep `drain.max` below it). A second signal ends it at once.
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
            .await
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
    let max = drain.config().max;
    let done = async {
        // Bounded by the drain itself: it ends at drain.max.
        drain.drained().await;
        if tokio::time::timeout(max, wait_app_gone(drain, presence))
            .await
            .is_err()
        {
            tracing::warn!(
                max = %humantime::format_duration(max),
                "the app still listens drain.max after the drain ended: exiting"
            );
        } else {
            tracing::info!("drained and the app has stopped listening: exiting");
        }
    };
    tokio::select! {
        () = done => {}
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
/// listening, or a new container's sockets replace the old ones with no
/// gap at all, every check goes back to its initial state, as the
/// kubelet's probes do for the next container (so `/startupz` fails until
/// the new container has started, and liveness starts healthy rather than
/// failed). When a new container listens, a drain begun by the old one
/// ends: the kubelet runs the preStop hook before a liveness or startup
/// restart too. Nothing is reset once the sidecar itself is stopping.
pub(crate) async fn follow_app_restarts(
    lifecycle: Lifecycle,
    state: State,
    mut presence: watch::Receiver<Presence>,
) {
    let drain = &lifecycle.drain;
    // The container the checks are following, and whether they were reset
    // for the next one already (the app stopped listening).
    let mut container = presence.borrow_and_update().starts;
    let mut between = false;
    while presence.changed().await.is_ok() {
        let now = *presence.borrow_and_update();
        if lifecycle.terminating.is_cancelled() {
            return;
        }
        let new_container = now.starts > container;
        if (new_container && container > 0 && !between) || (!now.listening && !between && now.starts > 0) {
            tracing::info!("every check starts again from its initial state for the next app container");
            state.new_container();
            between = true;
        }
        if !new_container {
            continue;
        }
        let restarts = if container > 0 {
            now.starts - container
        } else {
            now.starts - 1
        };
        state.record_app_restarts(restarts);
        container = now.starts;
        between = !now.listening;
        // Back: a drain the old container's preStop hook began ends.
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
        let empty = Token::load(&path).unwrap_err();
        assert!(matches!(empty.fault, TokenFault::Empty), "{empty:?}");
        assert_eq!(
            empty.to_string(),
            format!("drain.token_file {}: the file is empty", path.display())
        );
    }

    #[tokio::test]
    async fn without_a_token_only_loopback_clients_are_let_through() {
        let state = State::new(&[]);
        let config =
            crate::config::Config::from_toml_str("allow_empty = true\n", "t", &|_: &str| None).unwrap();
        let open = Lifecycle::new(Drain::new(config.drain.clone(), state.clone()), None);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for loopback in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(open.authorize(ip(loopback), None), Ok(()), "{loopback}");
        }
        for remote in ["10.0.0.7", "::ffff:10.0.0.7", "fd00::7", "0.0.0.0", "::"] {
            assert_eq!(
                open.authorize(ip(remote), Some(b"Bearer x")),
                Err(Refusal::NotLoopback),
                "{remote}"
            );
        }
        assert_eq!(
            open.authorize(None, None),
            Err(Refusal::NotLoopback),
            "unknown peer"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret").unwrap();
        let token = Token::load(&dir.path().join("token")).unwrap();
        let guarded = Lifecycle::new(Drain::new(config.drain, state), Some(token));
        assert_eq!(guarded.authorize(ip("10.0.0.7"), Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(
            guarded.authorize(ip("127.0.0.1"), None),
            Err(Refusal::Token),
            "with a token, loopback needs it too"
        );
    }
}
