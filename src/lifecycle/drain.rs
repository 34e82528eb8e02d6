//! The drain: one per process, shared by every trigger (SIGTERM, SIGINT,
//! `/prestop`, `/drain`). Readiness fails from its first moment; after
//! `drain.min` it waits until no new connection to `drain.ports` has come
//! for `drain.quiet` (the load balancers have let go of the pod) and the
//! app's established connections there have reached zero, never past
//! `drain.max` (SPEC §5, kubelet-semantics §3.7 and §5).
//!
//! Only the app's serving traffic counts: connections from outside the
//! pod, and with a mesh (`drain.mesh`) those its proxy forwards; the
//! pod's own clients (another container's cache client over loopback)
//! are neither new traffic nor waited on ([`diag::classify`] has the
//! rule). New traffic is told by the other ends of the connections:
//! every reading lists them in any state, `TIME_WAIT` included, so that a
//! connection opened and closed between two readings is still seen; a
//! peer not in the previous reading is a new connection, and one whose
//! received bytes grew carried a request (a mesh proxy keeps its
//! connections to the app open and sends every request on them). A
//! balancer that opens one connection per request leaves no established
//! connection between requests: a drain that waited only for zero
//! connections would end while requests are still on their way.
//! Connections are counted through
//! `sock_diag` on a blocking thread: the kernel walks the host's whole TCP
//! hash for every count, even from inside a pod's namespace, and the
//! serving thread keeps answering probes meanwhile. Its phase lives in the
//! shared snapshot, where `/readyz` and the metrics read it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::diag;
use super::procnet::{Peer, ProcNet, Sockets};
use crate::config::{DrainConfig, Mesh};
use crate::state::{Phase, Report, State};

/// How often the socket tables are read while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// How often they are read during `drain.min`, only to see new
/// connections come: a closed connection stays in `TIME_WAIT` for a
/// minute, and `drain.quiet` is counted in seconds. Each reading walks the
/// host's TCP hash (BENCHMARKS.md, "Adaptive drain").
pub(crate) const POLL_DURING_MIN: Duration = Duration::from_millis(500);

/// Counts the sockets on some ports, told apart as a mesh says; the real
/// one asks `sock_diag`. It may block: it is called on a blocking thread.
pub(crate) type SocketCounter = Arc<dyn Fn(&[u16], Mesh) -> io::Result<Sockets> + Send + Sync>;

/// A cheap, cloneable handle to the process's one drain.
#[derive(Clone)]
pub(crate) struct Drain {
    inner: Arc<Inner>,
}

struct Inner {
    config: DrainConfig,
    state: State,
    sockets: SocketCounter,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("phase", &self.inner.state.borrow().drain)
            .finish()
    }
}

impl Drain {
    /// A drain over the app's real sockets.
    pub(crate) fn new(config: DrainConfig, state: State) -> Self {
        Drain::with_counter(config, state, Arc::new(count_sockets))
    }

    /// A drain that counts sockets with `sockets`.
    pub(crate) fn with_counter(config: DrainConfig, state: State, sockets: SocketCounter) -> Self {
        Drain {
            inner: Arc::new(Inner {
                config,
                state,
                sockets,
            }),
        }
    }

    /// Starts the drain, or joins the one under way. Returns at once;
    /// true when this call started it.
    pub(crate) fn start(&self, trigger: &'static str) -> bool {
        let started = self.inner.state.begin_drain();
        if started {
            let inner = Arc::clone(&self.inner);
            tokio::spawn(async move { inner.run(trigger).await });
        } else {
            tracing::info!(trigger, "drain already under way or done: joining it");
        }
        started
    }

    /// Waits until the drain is done (or, once reset, was); starts nothing.
    pub(crate) async fn drained(&self) -> Report {
        self.inner.state.drained().await
    }

    /// Ends a finished drain because the app came back in a new container
    /// (the kubelet runs the preStop hook before a liveness or startup
    /// restart too): the pod serves again, and the next trigger starts a
    /// new drain. Returns whether a finished drain was reset.
    pub(crate) fn reset(&self) -> bool {
        self.inner.state.step_drain(|p| match *p {
            Phase::Drained(report) => {
                *p = Phase::Serving(Some(report));
                true
            }
            _ => false,
        })
    }

    /// Whether a drain is under way now.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.state.borrow().drain == Phase::Draining
    }

    /// The sockets on the drain's ports now, counted on a blocking thread.
    pub(crate) async fn sockets(&self) -> io::Result<Sockets> {
        self.inner.sockets().await
    }

    /// The drain settings.
    pub(crate) fn config(&self) -> &DrainConfig {
        &self.inner.config
    }
}

impl Inner {
    async fn sockets(&self) -> io::Result<Sockets> {
        let (count, ports, mesh) = (
            Arc::clone(&self.sockets),
            self.config.ports.clone(),
            self.config.mesh,
        );
        tokio::task::spawn_blocking(move || count(&ports, mesh))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    async fn run(&self, trigger: &'static str) {
        let config = &self.config;
        let began = Instant::now();
        let deadline = began + config.max;
        let floor = (began + config.min).min(deadline);
        tracing::info!(
            trigger,
            min_ms = crate::log::millis(config.min),
            quiet_ms = crate::log::millis(config.quiet),
            max_ms = crate::log::millis(config.max),
            mesh = config.mesh.name(),
            "drain started: /readyz fails from now on; waiting drain.min for endpoints to notice"
        );
        let mut traffic = Traffic::default();
        // Read from the first moment: a connection that comes during
        // drain.min is from a balancer that has not let go yet.
        let mut readable = !config.ports.is_empty();
        let mut last_logged = None;
        let mut in_pod = 0;
        let (connections_left, timed_out) = loop {
            let established = if readable {
                match self.sockets().await {
                    Ok(s) => {
                        traffic.observe(&s.peers, began.elapsed());
                        if s.in_pod > 0 && in_pod == 0 {
                            tracing::info!(
                                connections = s.in_pod,
                                mesh = config.mesh.name(),
                                "drain: connections to the app from inside the pod are not its serving traffic: not waited on"
                            );
                        }
                        in_pod = s.in_pod;
                        s.established
                    }
                    Err(e) => {
                        // Without the tables there is nothing to wait on.
                        tracing::warn!(
                            "drain cannot read the socket tables, not waiting for connections: {e}"
                        );
                        readable = false;
                        0
                    }
                }
            } else {
                0
            };
            let now = Instant::now();
            if now >= floor && established > 0 && last_logged != Some(established) {
                tracing::info!(
                    established,
                    ports = ?config.ports,
                    "drain waiting for established connections to close"
                );
                last_logged = Some(established);
            }
            if now >= floor && established == 0 && traffic.quiet_for(now - began, config.quiet) {
                break (0, false);
            }
            if now >= deadline {
                break (established, true);
            }
            let (every, next) = if now < floor {
                (POLL_DURING_MIN, floor)
            } else {
                (POLL, deadline)
            };
            tokio::time::sleep_until((now + every).min(next)).await;
        };
        let total = began.elapsed();
        let min_wait = (floor - began).min(total);
        let report = Report {
            trigger,
            min_wait,
            connection_wait: total - min_wait,
            connections_left,
            timed_out,
            new_connections: traffic.new,
            last_new_connection: traffic.last_new,
            last_traffic: traffic.last,
            in_pod_connections: in_pod,
        };
        log(&report);
        self.state.step_drain(|p| {
            *p = Phase::Drained(report);
            true
        });
    }
}

/// The new traffic a drain has seen: a peer not in the previous reading
/// is a new connection; one whose received bytes grew carried a request.
#[derive(Debug, Default)]
struct Traffic {
    /// The peers of the last reading, with the bytes received from each.
    peers: HashMap<SocketAddr, u64>,
    /// Readings so far; the first is what was there before readiness
    /// failed.
    readings: u64,
    /// New connections since the first reading.
    new: u64,
    /// When the last one was seen, from the drain's start.
    last_new: Option<Duration>,
    /// When the last new connection or request was seen.
    last: Option<Duration>,
}

impl Traffic {
    /// Takes in the peers read `at` (from the drain's start).
    fn observe(&mut self, peers: &[Peer], at: Duration) {
        let now: HashMap<SocketAddr, u64> = peers.iter().map(|p| (p.addr, p.received)).collect();
        if self.readings > 0 {
            let new = now.keys().filter(|p| !self.peers.contains_key(p)).count() as u64;
            let requests = now
                .iter()
                .any(|(p, received)| self.peers.get(p).is_some_and(|before| received > before));
            if new > 0 {
                if self.new == 0 {
                    tracing::info!(
                        new,
                        "drain: new connections to the app after readiness failed; waiting for drain.quiet without any"
                    );
                }
                self.new += new;
                self.last_new = Some(at);
            }
            if new > 0 || requests {
                if self.last.is_none() && new == 0 {
                    tracing::info!(
                        "drain: requests to the app on open connections after readiness failed; waiting for drain.quiet without any"
                    );
                }
                self.last = Some(at);
            }
        }
        self.readings += 1;
        self.peers = now;
    }

    /// Whether no new connection or request has come for `quiet` at `now`
    /// (from the drain's start); true when none has come at all: an idle
    /// pod's drain ends at `drain.min`.
    fn quiet_for(&self, now: Duration, quiet: Duration) -> bool {
        self.last.is_none_or(|last| now.saturating_sub(last) >= quiet)
    }
}

fn log(report: &Report) {
    let trigger = report.trigger;
    let total_ms = crate::log::millis(report.total());
    let min_wait_ms = crate::log::millis(report.min_wait);
    let connection_wait_ms = crate::log::millis(report.connection_wait);
    let new_connections = report.new_connections;
    let last_new_connection_ms = report.last_new_connection.map(crate::log::millis);
    let last_traffic_ms = report.last_traffic.map(crate::log::millis);
    let in_pod_connections = report.in_pod_connections;
    let ended = report.ended();
    if report.timed_out {
        tracing::warn!(
            trigger,
            total_ms,
            min_wait_ms,
            connection_wait_ms,
            connections_left = report.connections_left,
            new_connections,
            last_new_connection_ms,
            last_traffic_ms,
            in_pod_connections,
            ended,
            "drain ended at drain.max with connections still open or still arriving"
        );
    } else {
        tracing::info!(
            trigger,
            total_ms,
            min_wait_ms,
            connection_wait_ms,
            new_connections,
            last_new_connection_ms,
            last_traffic_ms,
            in_pod_connections,
            ended,
            "drain complete: no new connection or request for drain.quiet and no serving connection left"
        );
    }
}

/// The app's sockets through `sock_diag`, or `/proc/net` where it is not
/// available (without bytes: a mesh proxy's connections are held open
/// there).
fn count_sockets(ports: &[u16], mesh: Mesh) -> io::Result<Sockets> {
    diag::sockets(ports, mesh).or_else(|e| {
        tracing::debug!("sock_diag is not available ({e}): counting through /proc/net");
        ProcNet::default().sockets(ports, mesh)
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use super::*;

    fn drain(min: u64, max: u64, ports: &[u16], established: Arc<Mutex<usize>>) -> (Drain, State) {
        drain_seeing(min, 2, max, ports, established, Arc::new(Mutex::new(Vec::new())))
    }

    /// A drain whose counter shows `established` connections and the
    /// connections' `peers`.
    fn drain_seeing(
        min: u64,
        quiet: u64,
        max: u64,
        ports: &[u16],
        established: Arc<Mutex<usize>>,
        peers: Arc<Mutex<Vec<Peer>>>,
    ) -> (Drain, State) {
        let state = State::new(&[]);
        let config = DrainConfig {
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
            quiet: Duration::from_secs(quiet),
            ports: ports.to_vec(),
            token_file: None,
            exit_when_app_exits: false,
            mesh: Mesh::None,
        };
        let counter: SocketCounter = Arc::new(move |_: &[u16], _: Mesh| {
            Ok(Sockets {
                established: *established.lock().unwrap(),
                listening: 1,
                peers: peers.lock().unwrap().clone(),
                in_pod: 0,
            })
        });
        (Drain::with_counter(config, state.clone(), counter), state)
    }

    fn peer(port: u16) -> Peer {
        Peer {
            addr: SocketAddr::from(([10, 0, 0, 9], port)),
            received: 0,
        }
    }

    /// A balancer that opens a connection per request every 500 ms until
    /// `until` (from now): each shows as a new peer, closed (in
    /// `TIME_WAIT`) before the next reading.
    fn balancer(peers: Arc<Mutex<Vec<Peer>>>, until: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let began = Instant::now();
            let mut port = 40000;
            while began.elapsed() < until {
                peers.lock().unwrap().push(peer(port));
                port += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pod_drains_in_min() {
        let peers = Arc::new(Mutex::new(vec![peer(1)]));
        let (drain, _) = drain_seeing(1, 2, 25, &[8080], Arc::new(Mutex::new(0)), peers);
        let began = Instant::now();
        drain.start("/prestop");
        let report = drain.drained().await;
        assert_eq!(began.elapsed(), Duration::from_secs(1));
        assert_eq!((report.new_connections, report.last_new_connection), (0, None));
        assert_eq!(report.ended(), "quiet");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_until_no_new_connection_has_come_for_quiet() {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (drain, _) = drain_seeing(1, 2, 25, &[8080], Arc::new(Mutex::new(0)), peers.clone());
        // The balancer lets go 3 s after readiness failed, well after min;
        // no connection is ever established at a reading. Its connection
        // of the first moment was there before.
        let sending = balancer(peers, Duration::from_millis(3100));
        tokio::task::yield_now().await;
        let began = Instant::now();
        drain.start("/prestop");
        let report = drain.drained().await;
        sending.await.unwrap();
        let took = began.elapsed();
        assert_eq!(report.new_connections, 6, "{report:?}");
        let last = report.last_new_connection.unwrap();
        assert!(
            last >= Duration::from_secs(3) && last <= Duration::from_millis(3100),
            "{last:?}"
        );
        assert!(
            took >= last + Duration::from_secs(2) && took <= last + Duration::from_secs(2) + POLL,
            "quiet after the last connection: {took:?}"
        );
        assert!(!report.timed_out);
    }

    /// A mesh proxy that sends a request every 500 ms until `until` on
    /// the one connection it keeps open: its bytes grow, its peer stays.
    fn pooled(peers: Arc<Mutex<Vec<Peer>>>, until: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let began = Instant::now();
            while began.elapsed() < until {
                peers.lock().unwrap()[0].received += 120;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_on_a_kept_open_connection_are_traffic_until_quiet() {
        let peers = Arc::new(Mutex::new(vec![peer(40000)]));
        let (drain, _) = drain_seeing(1, 2, 25, &[8080], Arc::new(Mutex::new(0)), peers.clone());
        let sending = pooled(peers, Duration::from_millis(3100));
        tokio::task::yield_now().await;
        let began = Instant::now();
        drain.start("/prestop");
        let report = drain.drained().await;
        sending.await.unwrap();
        let took = began.elapsed();
        assert_eq!(report.new_connections, 0, "{report:?}");
        let last = report.last_traffic.unwrap();
        assert!(
            last >= Duration::from_secs(3) && last <= Duration::from_millis(3100) + POLL,
            "{last:?}"
        );
        assert!(
            took >= last + Duration::from_secs(2) && took <= last + Duration::from_secs(2) + POLL,
            "quiet after the last request: {took:?}"
        );
        assert!(!report.timed_out);
    }

    #[tokio::test(start_paused = true)]
    async fn a_balancer_that_never_lets_go_ends_the_drain_at_max() {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (drain, _) = drain_seeing(1, 2, 10, &[8080], Arc::new(Mutex::new(0)), peers.clone());
        let began = Instant::now();
        drain.start("SIGTERM");
        let sending = balancer(peers, Duration::from_secs(60));
        let report = drain.drained().await;
        assert_eq!(began.elapsed(), Duration::from_secs(10));
        assert!(report.timed_out);
        assert_eq!(report.ended(), "max");
        assert_eq!(report.connections_left, 0);
        assert!(report.new_connections >= 19, "{report:?}");
        sending.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_at_once_and_the_drain_waits_min_then_for_zero_connections() {
        let conns = Arc::new(Mutex::new(3));
        let (drain, state) = drain(5, 25, &[8080], conns.clone());
        let began = Instant::now();
        assert!(drain.start("SIGTERM"));
        assert!(state.borrow().draining(), "readiness fails from the first moment");
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            *conns.lock().unwrap() = 0;
        });
        let report = drain.drained().await;
        closer.await.unwrap();
        assert_eq!(report.min_wait, Duration::from_secs(5));
        assert!(!report.timed_out);
        let total = began.elapsed();
        assert!(
            total >= Duration::from_secs(8) && total <= Duration::from_secs(8) + POLL,
            "{total:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_never_lasts_past_max() {
        let (drain, _) = drain(5, 12, &[8080], Arc::new(Mutex::new(2)));
        let began = Instant::now();
        drain.start("/prestop");
        let report = drain.drained().await;
        assert_eq!(began.elapsed(), Duration::from_secs(12));
        assert!(report.timed_out);
        assert_eq!(report.connections_left, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn every_trigger_joins_the_same_drain() {
        let (drain, _) = drain(5, 25, &[], Arc::new(Mutex::new(0)));
        assert!(drain.start("/prestop"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!drain.start("SIGTERM"), "a second trigger joins");
        let began = Instant::now();
        let (a, b) = tokio::join!(drain.drained(), drain.drained());
        assert_eq!(a, b);
        assert_eq!(a.trigger, "/prestop");
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(3),
            "the joined drain ends with the first"
        );
        assert!(!drain.start("/drain"), "a finished drain is not restarted");
        assert_eq!(drain.drained().await, a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_drain_serves_again_and_the_next_trigger_drains_anew() {
        let (drain, state) = drain(1, 5, &[], Arc::new(Mutex::new(0)));
        assert!(!drain.reset(), "nothing to reset before a drain");
        drain.start("/prestop");
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.drained().await }
        });
        assert!(!drain.reset(), "a drain under way is not reset");
        let first = drain.drained().await;
        assert!(drain.reset());
        assert!(!state.borrow().draining(), "readiness follows the checks again");
        assert_eq!(waiter.await.unwrap(), first, "a waiter still gets its report");
        let began = Instant::now();
        assert!(drain.start("/prestop"), "the next trigger starts a new drain");
        assert!(state.borrow().draining());
        drain.drained().await;
        assert_eq!(began.elapsed(), Duration::from_secs(1));
    }
}
