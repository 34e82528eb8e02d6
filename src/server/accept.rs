//! The one accept loop shape of every listener — the HTTP endpoints
//! (`listen`), the gRPC endpoint (`grpc`) and the webhook's two ports —
//! after mini-redis' `Listener` (`src/server.rs`): a [`Listener`] owns the
//! listening socket and its connection table ([`Open`]), and
//! [`Listener::accept`] gives the next connection already in the table,
//! so that each listener's loop is only
//!
//! ```text
//! loop {
//!     let accepted = select! { a = listener.accept() => a, () = stop => break };
//!     spawn(serve(accepted));
//! }
//! ```
//!
//! A connection past the cap closes one (the oldest idle first, see
//! [`Open::evict_one`]); past the cap and [`CLOSING_SLACK`] connections on
//! their way out, accepting waits for one to be gone; out of file
//! descriptors, accepting closes one and pauses, or backs off when there
//! was none to close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::admission::LogBudget;
use super::budget::CLOSING_SLACK;
use super::table::{Open, Slot};

/// How long accepting pauses after running out of file descriptors and
/// closing a connection, so that it can release its own.
const EMFILE_PAUSE: Duration = Duration::from_millis(1);

/// How long it pauses when there was no connection to close (the checks
/// hold the descriptors): it backs off rather than spin.
const EMFILE_BACKOFF: Duration = Duration::from_millis(50);

/// A listening socket and its open connections.
pub(crate) struct Listener {
    listener: TcpListener,
    open: Arc<Mutex<Open>>,
    /// Notified when a connection's task has ended.
    ended: Arc<Notify>,
    /// The most connections open at once.
    cap: usize,
    /// Accept failures are logged at this rate at most: a client flood
    /// that runs the process out of descriptors causes one per accept.
    failures: LogBudget,
    /// The listener's name in those lines.
    name: &'static str,
}

/// An accepted connection's place in its listener's table; dropped when
/// the connection's task ends, which frees the place.
pub(crate) struct Admitted {
    id: u64,
    pub(super) slot: Arc<Slot>,
    open: Arc<Mutex<Open>>,
    ended: Arc<Notify>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.lock().expect("not poisoned").leave(self.id);
        self.ended.notify_one();
    }
}

impl Listener {
    /// `listener`, at most `cap` connections open; `name` says which in
    /// the log.
    pub(crate) fn new(listener: TcpListener, cap: usize, name: &'static str) -> Listener {
        Listener {
            listener,
            open: Arc::default(),
            ended: Arc::new(Notify::new()),
            cap,
            failures: LogBudget::new(),
            name,
        }
    }

    /// The table of open connections (the HTTP listener sweeps it).
    pub(super) fn open(&self) -> &Arc<Mutex<Open>> {
        &self.open
    }

    /// The next connection and its client's address, in the table.
    /// Cancel-safe: what it waits on is room, a connection or a pause.
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            self.room().await;
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.failed(&e).await;
                    continue;
                }
            };
            let (id, slot) = self.open.lock().expect("not poisoned").admit(self.cap);
            let admitted = Admitted {
                id,
                slot,
                open: Arc::clone(&self.open),
                ended: Arc::clone(&self.ended),
            };
            return (stream, peer, admitted);
        }
    }

    /// Waits while the cap and [`CLOSING_SLACK`] connection tasks are
    /// alive: without a bound, a flood accepted faster than the runtime
    /// gets to the closed ones would hold their sockets and buffers past
    /// the cap.
    async fn room(&self) {
        loop {
            let gone = self.ended.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.open.lock().expect("not poisoned").live() < self.cap + CLOSING_SLACK {
                return;
            }
            gone.await;
        }
    }

    /// After a failed accept: out of file descriptors, closes a
    /// connection to get one back and gives it the time to go; anything
    /// else (ECONNABORTED and the like), the next one may work.
    async fn failed(&mut self, e: &std::io::Error) {
        let log = self.failures.take();
        if matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE)) {
            let evicted = self.open.lock().expect("not poisoned").evict_one();
            if let Some(held_back) = log {
                tracing::warn!(listener = self.name, evicted, held_back, "accept failed: {e}");
            }
            tokio::time::sleep(if evicted { EMFILE_PAUSE } else { EMFILE_BACKOFF }).await;
        } else {
            if let Some(held_back) = log {
                tracing::debug!(listener = self.name, held_back, "accept failed: {e}");
            }
            tokio::task::yield_now().await;
        }
    }

    /// Tells every open connection that the server stops.
    pub(crate) fn stop_all(&self) {
        self.open.lock().expect("not poisoned").stop_all();
    }
}
