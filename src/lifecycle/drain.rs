//! The drain: one per process, shared by every trigger (SIGTERM, SIGINT,
//! `/prestop`, `/drain`). Readiness fails from its first moment; after
//! `drain.min` it waits for the app's established connections on
//! `drain.ports` to reach zero, never past `drain.max` (SPEC §5,
//! kubelet-semantics §3.7 and §5). Its phase lives in the shared
//! snapshot, where `/readyz` and the metrics read it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::procnet::{ProcNet, Sockets};
use crate::config::DrainConfig;
use crate::state::{Phase, Report, State};
use crate::whole_ms;

/// How often the socket tables are read while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Counts the sockets on some ports; the real one reads `/proc/net`.
pub(crate) type SocketCounter = Arc<dyn Fn(&[u16]) -> io::Result<Sockets> + Send + Sync>;

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
    /// A drain over the real `/proc/net` tables.
    pub(crate) fn new(config: DrainConfig, state: State) -> Self {
        let net = ProcNet::default();
        Drain::with_counter(config, state, Arc::new(move |ports: &[u16]| net.sockets(ports)))
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
        let started = self.inner.state.step_drain(|p| {
            if matches!(p, Phase::Serving(_)) {
                *p = Phase::Draining;
                true
            } else {
                false
            }
        });
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

    /// The sockets on the drain's ports now.
    pub(crate) fn sockets(&self) -> io::Result<Sockets> {
        (self.inner.sockets)(&self.inner.config.ports)
    }

    /// The drain settings.
    pub(crate) fn config(&self) -> &DrainConfig {
        &self.inner.config
    }
}

impl Inner {
    async fn run(&self, trigger: &'static str) {
        let config = &self.config;
        let began = Instant::now();
        let deadline = began + config.max;
        tracing::info!(
            trigger,
            min = %humantime::format_duration(config.min),
            max = %humantime::format_duration(config.max),
            "drain started: /readyz fails from now on; waiting drain.min for endpoints to notice"
        );
        tokio::time::sleep_until((began + config.min).min(deadline)).await;
        let min_wait = began.elapsed();
        let (connections_left, timed_out) = self.wait_for_connections(deadline).await;
        let report = Report {
            trigger,
            min_wait,
            connection_wait: began.elapsed() - min_wait,
            connections_left,
            timed_out,
        };
        let total = whole_ms(report.total());
        let min_wait = whole_ms(report.min_wait);
        let connection_wait = whole_ms(report.connection_wait);
        if timed_out {
            tracing::warn!(
                trigger, %total, %min_wait, %connection_wait, connections_left,
                "drain ended at drain.max with connections still open"
            );
        } else {
            tracing::info!(trigger, %total, %min_wait, %connection_wait, "drain complete: no connections left");
        }
        self.state.step_drain(|p| {
            *p = Phase::Drained(report);
            true
        });
    }

    /// Polls the socket tables until no established connection is left on
    /// the drain's ports or `deadline` passes. Returns the connections left
    /// and whether the deadline ended the wait.
    async fn wait_for_connections(&self, deadline: Instant) -> (usize, bool) {
        let ports = &self.config.ports;
        if ports.is_empty() {
            return (0, false);
        }
        let mut last = None;
        loop {
            let established = match (self.sockets)(ports) {
                Ok(s) => s.established,
                Err(e) => {
                    // Without the tables there is nothing to wait on.
                    tracing::warn!("drain cannot read the socket tables, not waiting for connections: {e}");
                    return (0, false);
                }
            };
            if established > 0 && last != Some(established) {
                tracing::info!(
                    established,
                    ?ports,
                    "drain waiting for established connections to close"
                );
                last = Some(established);
            }
            if established == 0 {
                return (0, false);
            }
            if Instant::now() >= deadline {
                return (established, true);
            }
            tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn drain(min: u64, max: u64, ports: &[u16], established: Arc<Mutex<usize>>) -> (Drain, State) {
        let state = State::new(&[]);
        let config = DrainConfig {
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
            ports: ports.to_vec(),
            token_file: None,
            exit_when_app_exits: false,
        };
        let counter: SocketCounter = Arc::new(move |_: &[u16]| {
            Ok(Sockets {
                established: *established.lock().unwrap(),
                listening: 1,
            })
        });
        (Drain::with_counter(config, state.clone(), counter), state)
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
