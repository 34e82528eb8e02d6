//! The app, seen through its listening sockets on `drain.ports`: whether it
//! listens now, and how many app containers have listened. A container is
//! known by its listening sockets' inodes: when none of the sockets that
//! listened before is left and others listen, a new container has started
//! (the kubelet restarted it after a failed liveness or startup probe, or
//! it crashed), however short the gap between the two. The kubelet
//! restarts a container at once the first time (kubelet-semantics §7), so
//! the new one often listens within milliseconds of the old one's end:
//! "is anything listening" would not change between two readings.

use std::io;
use std::time::Duration;

use tokio::sync::watch;

use super::diag;
use super::procnet::ProcNet;

/// How often the socket tables are read.
pub(crate) const EVERY: Duration = Duration::from_millis(500);

/// What the socket tables last showed of the app.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Presence {
    /// Something listens on one of `drain.ports`.
    pub(crate) listening: bool,
    /// How many app containers have begun listening: 2 and more mean
    /// restarts.
    pub(crate) starts: u64,
}

/// Reads the listening sockets on `ports` now, then every [`EVERY`] in a
/// task that ends when every receiver is gone. Needs a runtime.
pub(crate) fn watch(ports: &[u16]) -> watch::Receiver<Presence> {
    let (tx, rx) = watch::channel(Presence::default());
    let mut watcher = Watcher {
        ports: ports.to_vec(),
        source: Source::Diag,
        container: Vec::new(),
        unreadable: false,
        tx,
    };
    // The first reading before anyone looks: a signal at start-up must
    // not take "not read yet" for "not listening".
    watcher.read();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        while !watcher.tx.is_closed() {
            every.tick().await;
            // A dump is a few syscalls; off the serving thread all the
            // same, as the kernel's walk grows with the host's sockets.
            let ports = watcher.ports.clone();
            let source = watcher.source;
            let Ok(reading) = tokio::task::spawn_blocking(move || source.read(&ports)).await else {
                continue;
            };
            watcher.update(reading);
        }
    });
    rx
}

/// What the watch task keeps between readings.
struct Watcher {
    ports: Vec<u16>,
    source: Source,
    /// The listening sockets of the current container, sorted; empty when
    /// nothing listens.
    container: Vec<u32>,
    /// The last reading failed (logged once).
    unreadable: bool,
    tx: watch::Sender<Presence>,
}

impl Watcher {
    fn read(&mut self) {
        let reading = self.source.read(&self.ports);
        self.update(reading);
    }

    fn update(&mut self, (source, reading): (Source, io::Result<Vec<u32>>)) {
        self.source = source;
        let listeners = match reading {
            Ok(listeners) => listeners,
            Err(e) => {
                if !self.unreadable {
                    tracing::warn!("cannot read the socket tables to follow the app: {e}");
                }
                self.unreadable = true;
                return;
            }
        };
        self.unreadable = false;
        let change = Change::of(&self.container, &listeners);
        self.container = listeners;
        let ports = self.ports.as_slice();
        self.tx.send_if_modified(|p| match change {
            Change::None => false,
            Change::Stopped => {
                p.listening = false;
                tracing::info!(?ports, "the app has stopped listening");
                true
            }
            Change::Started => {
                p.listening = true;
                p.starts += 1;
                match p.starts {
                    1 => tracing::info!(?ports, "the app is listening"),
                    n => tracing::info!(?ports, restarts = n - 1, "the app is listening again"),
                }
                true
            }
            Change::Replaced => {
                p.starts += 1;
                tracing::info!(
                    ?ports,
                    restarts = p.starts - 1,
                    "the app is listening again: a new container replaced the old one between two readings"
                );
                true
            }
        });
    }
}

/// What changed between two readings of the listening sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The same container (perhaps with more or fewer sockets), or still
    /// nothing.
    None,
    /// Nothing listens any more.
    Stopped,
    /// Something listens where nothing did.
    Started,
    /// Other sockets listen, none of the old ones: a new container.
    Replaced,
}

impl Change {
    /// From `before` to `now`, both sorted.
    fn of(before: &[u32], now: &[u32]) -> Change {
        match (before.is_empty(), now.is_empty()) {
            (true, true) => Change::None,
            (false, true) => Change::Stopped,
            (true, false) => Change::Started,
            (false, false) if now.iter().any(|i| before.binary_search(i).is_ok()) => Change::None,
            (false, false) => Change::Replaced,
        }
    }
}

/// Where the listening sockets are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The kernel's `sock_diag`: cheap whatever the connection count.
    Diag,
    /// `/proc/net/tcp{,6}`: where `sock_diag` is not available.
    ProcNet,
}

impl Source {
    /// The listening sockets' inodes, and the source to read next time.
    fn read(self, ports: &[u16]) -> (Source, io::Result<Vec<u32>>) {
        if self == Source::Diag {
            match diag::listeners(ports) {
                Ok(inodes) => return (self, Ok(inodes)),
                Err(e) => {
                    tracing::info!("sock_diag is not available ({e}): following the app through /proc/net");
                }
            }
        }
        (Source::ProcNet, ProcNet::default().listeners(ports))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_known_by_its_listening_sockets() {
        assert_eq!(Change::of(&[], &[]), Change::None);
        assert_eq!(Change::of(&[], &[7]), Change::Started);
        assert_eq!(Change::of(&[7], &[]), Change::Stopped);
        assert_eq!(Change::of(&[7], &[7]), Change::None);
        assert_eq!(Change::of(&[7], &[7, 9]), Change::None, "one more listener");
        assert_eq!(Change::of(&[7, 9], &[9]), Change::None, "one listener fewer");
        assert_eq!(
            Change::of(&[7, 9], &[8, 10]),
            Change::Replaced,
            "none left: restart at gap 0"
        );
    }

    #[tokio::test]
    async fn a_restart_between_two_readings_is_a_new_container() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(Presence::default());
        let mut watcher = Watcher {
            ports: vec![port],
            source: Source::Diag,
            container: Vec::new(),
            unreadable: false,
            tx,
        };
        watcher.read();
        assert_eq!(
            *rx.borrow(),
            Presence {
                listening: true,
                starts: 1
            }
        );
        watcher.read();
        assert_eq!(rx.borrow().starts, 1, "the same container");
        // Closed and listened on again before the next reading.
        drop(listener);
        let again = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        watcher.read();
        assert_eq!(
            *rx.borrow(),
            Presence {
                listening: true,
                starts: 2
            }
        );
        drop(again);
        watcher.read();
        assert_eq!(
            *rx.borrow(),
            Presence {
                listening: false,
                starts: 2
            }
        );
        let _third = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        watcher.read();
        assert_eq!(
            *rx.borrow(),
            Presence {
                listening: true,
                starts: 3
            }
        );
    }
}
