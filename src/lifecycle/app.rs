//! The app, seen through its listening sockets on `drain.ports`: whether it
//! listens now, and how many times it has begun to. An app that stops
//! listening and listens again is a new app container: the kubelet
//! restarted it after a failed liveness or startup probe, or it crashed.

use std::time::Duration;

use tokio::sync::watch;

use super::Drain;

/// How often the socket tables are read.
pub const EVERY: Duration = Duration::from_millis(500);

/// What the socket tables last showed of the app.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// Something listens on one of `drain.ports`.
    pub listening: bool,
    /// How many times it has begun listening: 2 and more mean restarts.
    pub starts: u64,
}

/// Starts reading the socket tables every [`EVERY`] on the drain's ports;
/// the task ends when every receiver is gone. Needs a runtime.
pub fn watch(drain: &Drain) -> watch::Receiver<Presence> {
    let (tx, rx) = watch::channel(Presence::default());
    let drain = drain.clone();
    tokio::spawn(async move {
        let mut unreadable = false;
        while !tx.is_closed() {
            match drain.sockets() {
                Ok(sockets) => {
                    unreadable = false;
                    let listening = sockets.listening > 0;
                    tx.send_if_modified(|p| {
                        if p.listening == listening {
                            return false;
                        }
                        p.listening = listening;
                        if listening {
                            p.starts += 1;
                        }
                        log(drain.config().ports.as_slice(), *p);
                        true
                    });
                }
                Err(e) if !unreadable => {
                    unreadable = true;
                    tracing::warn!("cannot read the socket tables to follow the app: {e}");
                }
                Err(_) => {}
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    rx
}

fn log(ports: &[u16], p: Presence) {
    match (p.listening, p.starts) {
        (true, 1) => tracing::info!(?ports, "the app is listening"),
        (true, starts) => tracing::info!(?ports, restarts = starts - 1, "the app is listening again"),
        (false, _) => tracing::info!(?ports, "the app has stopped listening"),
    }
}
