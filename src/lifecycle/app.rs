//! The app, seen through its listening sockets on `drain.ports`: whether it
//! listens now, and how many times it has begun to. An app that stops
//! listening and listens again is a new app container: the kubelet
//! restarted it after a failed liveness or startup probe, or it crashed.

use std::io;
use std::time::Duration;

use tokio::sync::watch;

use super::{Drain, diag};

/// How often the socket tables are read.
pub(crate) const EVERY: Duration = Duration::from_millis(500);

/// What the socket tables last showed of the app.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Presence {
    /// Something listens on one of `drain.ports`.
    pub(crate) listening: bool,
    /// How many times it has begun listening: 2 and more mean restarts.
    pub(crate) starts: u64,
}

/// Reads the listening sockets on the drain's ports now, then every
/// [`EVERY`] in a task that ends when every receiver is gone. Needs a
/// runtime.
pub(crate) fn watch(drain: &Drain) -> watch::Receiver<Presence> {
    let (tx, rx) = watch::channel(Presence::default());
    let mut watcher = Watcher {
        drain: drain.clone(),
        source: Source::Diag,
        unreadable: false,
        tx,
    };
    // The first reading before anyone looks: a signal at start-up must
    // not take "not read yet" for "not listening".
    watcher.read();
    tokio::spawn(async move {
        while !watcher.tx.is_closed() {
            tokio::time::sleep(EVERY).await;
            watcher.read();
        }
    });
    rx
}

/// What the watch task keeps between readings.
struct Watcher {
    drain: Drain,
    source: Source,
    /// The last reading failed (logged once).
    unreadable: bool,
    tx: watch::Sender<Presence>,
}

impl Watcher {
    fn read(&mut self) {
        match self.source.listening(&self.drain) {
            Ok(listening) => {
                self.unreadable = false;
                let ports = self.drain.config().ports.as_slice();
                self.tx.send_if_modified(|p| {
                    if p.listening == listening {
                        return false;
                    }
                    p.listening = listening;
                    if listening {
                        p.starts += 1;
                    }
                    log(ports, *p);
                    true
                });
            }
            Err(e) if !self.unreadable => {
                self.unreadable = true;
                tracing::warn!("cannot read the socket tables to follow the app: {e}");
            }
            Err(_) => {}
        }
    }
}

/// Where the listening sockets are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The kernel's `sock_diag`: cheap whatever the connection count.
    Diag,
    /// `/proc/net/tcp{,6}`, the drain's tables: where `sock_diag` is not
    /// available.
    ProcNet,
}

impl Source {
    fn listening(&mut self, drain: &Drain) -> io::Result<bool> {
        if *self == Source::Diag {
            match diag::listening(&drain.config().ports) {
                Ok(n) => return Ok(n > 0),
                Err(e) => {
                    tracing::info!("sock_diag is not available ({e}): following the app through /proc/net");
                    *self = Source::ProcNet;
                }
            }
        }
        drain.sockets().map(|s| s.listening > 0)
    }
}

fn log(ports: &[u16], p: Presence) {
    match (p.listening, p.starts) {
        (true, 1) => tracing::info!(?ports, "the app is listening"),
        (true, starts) => tracing::info!(?ports, restarts = starts - 1, "the app is listening again"),
        (false, _) => tracing::info!(?ports, "the app has stopped listening"),
    }
}
