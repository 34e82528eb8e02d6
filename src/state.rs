//! The shared snapshot: every check's state, written by the engine, and
//! the drain's phase, written by the drain. It is the one owner of these
//! facts: the endpoints and the metrics derive what they show from it at
//! the moment they read. Readers never wait on a check: they borrow the
//! latest snapshot from a `watch` channel for as long as it takes to render.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::check::{Outcome, Reason, Verdict};
use crate::config::{CheckConfig, ProbeKind, ProbeSet, Timing};

/// The state of one check, after thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No threshold reached yet. Liveness reads this as healthy, readiness
    /// and startup as not yet (kubelet-semantics §3.3).
    Initial,
    /// `success_threshold` consecutive successes.
    Healthy,
    /// `failure_threshold` consecutive failures.
    Failed,
}

impl Health {
    /// Lower-case name for JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Initial => "initial",
            Health::Healthy => "healthy",
            Health::Failed => "failed",
        }
    }
}

/// The most recent run of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    /// What the run yielded.
    pub outcome: Outcome,
    /// How long it took.
    pub(crate) duration: Duration,
    /// When it finished.
    pub at: SystemTime,
}

/// How many state changes of one check are kept for `healthproxy status`:
/// enough to see a check flap, bounded whatever it does.
pub(crate) const TRANSITIONS_KEPT: usize = 8;

/// A change of a check's state, as kept for `healthproxy status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    /// When it happened: the end of the run that made it.
    pub(crate) at: SystemTime,
    /// The state it entered.
    pub(crate) to: Health,
    /// The message of the run that made it.
    pub(crate) message: String,
}

/// One check's state, as the endpoints see it.
#[derive(Debug, Clone)]
pub struct CheckStatus {
    /// Which check this is, for as long as it runs: unique in the
    /// process, kept by a reload that leaves the check unchanged.
    pub(crate) id: usize,
    /// Its run counters, which the metrics read; they go with the check.
    pub(crate) counters: Arc<CheckCounters>,
    /// The check's name.
    pub(crate) name: String,
    /// The handler kind (`http`, `tcp`, ...).
    pub(crate) kind: &'static str,
    /// The probe kinds it belongs to.
    pub(crate) probes: ProbeSet,
    /// Whether it can fail its probes.
    pub(crate) critical: bool,
    /// The app container it belongs to, if any.
    pub(crate) container: Option<String>,
    /// Thresholds it applies.
    pub(crate) timing: Timing,
    /// State after thresholds.
    pub health: Health,
    /// Whether it has ever been healthy (the startup latch of one check).
    pub ever_healthy: bool,
    /// Added to a ready pod by a reload, and not yet moved by a threshold:
    /// it passes readiness as a liveness check passes before its first
    /// run, so that a reload never takes a ready pod out of service before
    /// the new check has failed `failure_threshold` times (see
    /// [`State::reload`]).
    pub(crate) presumed: bool,
    /// The last run, if any.
    pub last: Option<LastRun>,
    /// Consecutive successes ending with the last counted run.
    pub consecutive_successes: u32,
    /// Consecutive failures ending with the last counted run.
    pub consecutive_failures: u32,
    /// When `health` last changed.
    pub last_transition: Option<SystemTime>,
    /// When the last successful run finished (a warning is a success).
    pub(crate) last_success: Option<SystemTime>,
    /// When the certificate chain of the last TLS handshake first expires.
    pub(crate) tls_expiry: Option<SystemTime>,
    /// The last [`TRANSITIONS_KEPT`] state changes, oldest first.
    pub(crate) transitions: std::collections::VecDeque<Transition>,
}

impl CheckStatus {
    /// The state of check `id` that has not run yet.
    pub fn new(id: usize, config: &CheckConfig) -> Self {
        CheckStatus {
            id,
            counters: Arc::new(CheckCounters::new(config)),
            name: config.name.clone(),
            kind: config.kind.as_str(),
            probes: config.probes,
            critical: config.critical,
            container: config.container.clone(),
            timing: config.timing,
            health: Health::Initial,
            ever_healthy: false,
            presumed: false,
            last: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last_transition: None,
            last_success: None,
            tls_expiry: None,
            transitions: std::collections::VecDeque::new(),
        }
    }

    /// Forgets everything observed: the state before any run.
    fn reset(&mut self) {
        self.health = Health::Initial;
        self.ever_healthy = false;
        self.presumed = false;
        self.last = None;
        (self.consecutive_successes, self.consecutive_failures) = (0, 0);
        self.last_transition = None;
        self.last_success = None;
        self.tls_expiry = None;
        self.transitions.clear();
    }

    /// Records one run and applies the kubelet worker's hysteresis: the
    /// state changes only after `success_threshold` consecutive successes
    /// or `failure_threshold` consecutive failures. An Unknown run is kept
    /// as the last run but not counted, as the kubelet throws errored
    /// results away (kubelet-semantics §3.6). Returns the new health when
    /// it changed.
    pub fn observe(&mut self, outcome: Outcome, duration: Duration, at: SystemTime) -> Option<Health> {
        let verdict = outcome.verdict;
        if outcome.tls_expiry.is_some() {
            self.tls_expiry = outcome.tls_expiry;
        }
        self.last = Some(LastRun {
            outcome,
            duration,
            at,
        });
        let next = match verdict {
            Verdict::Unknown => return None,
            v if v.is_success() => {
                self.last_success = Some(at);
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                (self.consecutive_successes >= self.timing.success_threshold).then_some(Health::Healthy)
            }
            _ => {
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                (self.consecutive_failures >= self.timing.failure_threshold).then_some(Health::Failed)
            }
        }?;
        if next == self.health {
            return None;
        }
        self.health = next;
        self.presumed = false;
        self.last_transition = Some(at);
        if self.transitions.len() == TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition {
            at,
            to: next,
            message: self
                .last
                .as_ref()
                .map(|l| l.outcome.message.clone())
                .unwrap_or_default(),
        });
        if next == Health::Healthy {
            self.ever_healthy = true;
        }
        Some(next)
    }

    /// Whether this check passes `kind`, ignoring criticality.
    pub fn passes(&self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Liveness => self.health != Health::Failed,
            ProbeKind::Readiness => {
                self.health == Health::Healthy || (self.presumed && self.health == Health::Initial)
            }
            ProbeKind::Startup => self.ever_healthy,
        }
    }

    /// Takes `config` as this check's new definition (a reload), keeping
    /// its verdict; `ready` says whether the readiness it would join
    /// passes now.
    fn redefine(&mut self, config: &CheckConfig, same_target: bool, ready: bool) {
        let joins = ProbeKind::ALL
            .into_iter()
            .any(|k| config.probes.contains(k) && !self.probes.contains(k));
        if self.kind != config.kind.as_str() {
            // The counters' labels name the handler.
            self.counters = Arc::new(CheckCounters::new(config));
        }
        (self.kind, self.probes, self.critical, self.timing) = (
            config.kind.as_str(),
            config.probes,
            config.critical,
            config.timing,
        );
        self.container.clone_from(&config.container);
        if joins && self.health != Health::Healthy {
            // Its verdict would be new to the kind it joins (a failed
            // readiness check that becomes a liveness check too): it
            // joins as a new check would.
            self.reset();
            self.presumed = config.probes.readiness && ready;
        } else if !same_target {
            // Runs against another target say nothing of the next ones:
            // the verdict stays until the new target's runs move it.
            (self.consecutive_successes, self.consecutive_failures) = (0, 0);
            self.tls_expiry = None;
        }
    }

    /// Why this check does not pass `kind`, in one line.
    pub(crate) fn reason(&self) -> &str {
        match (&self.last, self.health) {
            (Some(last), _) if !last.outcome.verdict.is_success() => &last.outcome.message,
            (None, _) => "not run yet",
            (Some(_), Health::Failed) => "recovering: success threshold not reached yet",
            (Some(_), _) => "success threshold not reached yet",
        }
    }
}

/// Where the pod's drain is (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No drain under way; the last finished one, once a new app
    /// container has ended it.
    Serving(Option<Report>),
    /// Readiness fails; waiting for `drain.min`, then for quiet and for
    /// connections.
    Draining,
    /// Done; how it went. Readiness still fails.
    Drained(Report),
}

/// How a finished drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// What started it.
    pub(crate) trigger: &'static str,
    /// Time spent in the minimum wait.
    pub(crate) min_wait: Duration,
    /// Time spent waiting for quiet and for connections after the minimum
    /// wait.
    pub(crate) connection_wait: Duration,
    /// Established connections left when it ended (non-zero on a timeout).
    pub(crate) connections_left: usize,
    /// It ended at `drain.max` rather than quiet with no connection left.
    pub(crate) timed_out: bool,
    /// New connections to the app after readiness failed.
    pub(crate) new_connections: u64,
    /// When the last of them came, from the drain's start.
    pub(crate) last_new_connection: Option<Duration>,
    /// When the last new connection or request (bytes received on an open
    /// connection, as a mesh proxy sends them) came, from the drain's
    /// start: `drain.quiet` is counted from it.
    pub(crate) last_traffic: Option<Duration>,
    /// Connections from inside the pod (not the app's serving traffic)
    /// open at the last reading: not waited on.
    pub(crate) in_pod_connections: usize,
}

impl Report {
    /// Why it ended: `quiet` (no new connection for `drain.quiet` and none
    /// left) or `max`.
    pub(crate) fn ended(&self) -> &'static str {
        if self.timed_out { "max" } else { "quiet" }
    }

    /// The whole drain.
    pub(crate) fn total(&self) -> Duration {
        self.min_wait + self.connection_wait
    }
}

/// Everything the endpoints and the metrics read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every check, in file order.
    pub checks: Vec<CheckStatus>,
    /// Every startup check has succeeded once (latched): `startup_done`
    /// of `checks`, kept so that a probe reads it without a scan.
    pub started: bool,
    /// The drain's phase.
    pub(crate) drain: Phase,
    /// Counts the app containers seen: raised when a new one starts, so
    /// that the checks begin again from their initial state.
    pub(crate) generation: u64,
    /// New app containers seen listening after the first: restarts.
    pub(crate) app_restarts: u64,
    /// How the last reload of the config went.
    pub(crate) reload: ReloadStatus,
    /// When the current app container was first seen (the sidecar's
    /// start for the first): initial delays count from here.
    pub(crate) since: tokio::time::Instant,
    /// The id the next new check gets.
    next_id: usize,
    /// `passes` of each probe kind, indexed by kind: worked out once per
    /// change rather than over every check on every request.
    passing: [bool; 3],
    /// The positions of `checks`, ordered by name: a request for one
    /// check finds it without a scan. Built with the checks (at the start
    /// and on a reload), the only times names change.
    by_name: Vec<u32>,
    /// The positions of the checks of an app container, ordered by
    /// container, then position.
    by_container: Vec<u32>,
}

/// Where a check's worker finds its check in the snapshot: its id, and the
/// position it was last found at, so that recording a run does not search
/// the checks. The engine moves it when a reload moves a kept check
/// ([`Place::moved_to`]); the search is only a fallback.
#[derive(Debug)]
pub struct Place {
    id: usize,
    at: AtomicUsize,
}

impl Place {
    /// Check `id`, expected at position `at`.
    pub fn new(id: usize, at: usize) -> Place {
        Place {
            id,
            at: AtomicUsize::new(at),
        }
    }

    /// The check has moved to position `at` (a reload kept it there).
    pub(crate) fn moved_to(&self, at: usize) {
        self.at.store(at, Relaxed);
    }
}

/// How the last reload of the config went (Prometheus' own
/// `config_last_reload_*` gauges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReloadStatus {
    /// The last attempt was applied (true until one is rejected).
    pub(crate) successful: bool,
    /// When a config was last applied: the start, or the last good reload.
    pub(crate) last_success: SystemTime,
}

/// A check of a reloaded config, in the new file order. A running check is
/// named by its position in the snapshot, which is its position in the
/// running config.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot<'a> {
    /// The running check at this position, unchanged: it keeps its state,
    /// counters, id and schedule.
    Keep(usize),
    /// The running check at `at`, of the same name, changed to `config`:
    /// it keeps its verdict until its own runs move it by its thresholds,
    /// under a new id (a run of the old definition still under way is
    /// not counted).
    Change {
        /// The running check's position.
        at: usize,
        /// Its new definition.
        config: &'a CheckConfig,
        /// It probes what it probed: same handler, same target. Its
        /// consecutive counts go on; otherwise they start again.
        same_target: bool,
    },
    /// A new check.
    Start(&'a CheckConfig),
}

impl Snapshot {
    /// Whether a drain has begun (and not been reset): readiness fails from
    /// its first moment.
    pub(crate) fn draining(&self) -> bool {
        !matches!(self.drain, Phase::Serving(_))
    }

    /// How the last finished drain went.
    pub(crate) fn report(&self) -> Option<Report> {
        match self.drain {
            Phase::Drained(report) | Phase::Serving(Some(report)) => Some(report),
            _ => None,
        }
    }

    /// Whether probe `kind` passes over every check: what `/livez`,
    /// `/readyz` and `/startupz` answer and `healthproxy_probe_ok` shows.
    pub(crate) fn passes(&self, kind: ProbeKind) -> bool {
        debug_assert_eq!(
            self.passing[kind as usize],
            self.passes_counting(kind, |c| c.critical),
            "{kind:?} passes as of the last change"
        );
        self.passing[kind as usize]
    }

    /// The position of the check at `place`, if the snapshot has it.
    fn position(&self, place: &Place) -> Option<usize> {
        let at = place.at.load(Relaxed);
        if self.checks.get(at).is_some_and(|c| c.id == place.id) {
            return Some(at);
        }
        let at = self.checks.iter().position(|c| c.id == place.id)?;
        place.at.store(at, Relaxed);
        Some(at)
    }

    /// The check at `place`, if the snapshot has it (a reload may have
    /// removed or changed it).
    pub(crate) fn check_at(&self, place: &Place) -> Option<&CheckStatus> {
        self.position(place).map(|at| &self.checks[at])
    }

    /// The check named `name`.
    pub(crate) fn check_named(&self, name: &str) -> Option<&CheckStatus> {
        let name_at = |at: &u32| self.checks[*at as usize].name.as_str();
        let i = self.by_name.partition_point(|at| name_at(at) < name);
        let at = *self.by_name.get(i)?;
        Some(&self.checks[at as usize]).filter(|c| c.name == name)
    }

    /// The checks of app container `name`, in file order.
    pub(crate) fn container_checks(&self, name: &str) -> impl Iterator<Item = &CheckStatus> {
        let container_at = |at: &u32| self.checks[*at as usize].container.as_deref().unwrap_or_default();
        let first = self.by_container.partition_point(|at| container_at(at) < name);
        let end = self.by_container.partition_point(|at| container_at(at) <= name);
        self.by_container[first..end]
            .iter()
            .map(|at| &self.checks[*at as usize])
    }

    /// Orders `by_name` and `by_container` after `checks` has changed.
    fn index(&mut self) {
        let checks = &self.checks;
        let positions = 0..u32::try_from(checks.len()).expect("fewer than 2^32 checks");
        let mut by_name: Vec<u32> = positions.clone().collect();
        by_name.sort_unstable_by(|a, b| checks[*a as usize].name.cmp(&checks[*b as usize].name));
        let mut by_container: Vec<u32> = positions
            .filter(|at| checks[*at as usize].container.is_some())
            .collect();
        // Stable: the checks of one container stay in file order.
        by_container.sort_by(|a, b| checks[*a as usize].container.cmp(&checks[*b as usize].container));
        (self.by_name, self.by_container) = (by_name, by_container);
    }

    /// Works out `passing` again; after every change.
    fn refresh(&mut self) {
        for kind in ProbeKind::ALL {
            self.passing[kind as usize] = self.passes_counting(kind, |c| c.critical);
        }
    }

    /// Whether probe `kind` passes: no gate closed, and every check of the
    /// kind that `counts` passes.
    pub(crate) fn passes_counting(&self, kind: ProbeKind, counts: impl Fn(&CheckStatus) -> bool) -> bool {
        self.gates(kind).next().is_none()
            && self
                .checks
                .iter()
                .filter(|c| c.probes.contains(kind) && counts(c))
                .all(|c| self.check_passes(c, kind))
    }

    /// Whether check `c` passes probe `kind` in this snapshot. Until
    /// startup has completed, no liveness probe has run (the kubelet
    /// starts its liveness worker only then), so a check that is also a
    /// startup check, and runs meanwhile, passes liveness whatever its
    /// startup runs said (kubelet-semantics §3.3). Once it has completed,
    /// the kubelet probes startup no more until a new container: a startup
    /// check that a reload added since passes with the latch.
    pub(crate) fn check_passes(&self, c: &CheckStatus, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Liveness => !self.started || c.passes(kind),
            ProbeKind::Startup => self.started || c.passes(kind),
            ProbeKind::Readiness => c.passes(kind),
        }
    }

    /// The reasons other than checks why probe `kind` fails, as (name,
    /// reason): startup not complete, a drain begun.
    pub(crate) fn gates(&self, kind: ProbeKind) -> impl Iterator<Item = (&'static str, &'static str)> {
        let readiness = kind == ProbeKind::Readiness;
        [
            (readiness && !self.started).then_some(("startup", "startup checks have not all succeeded yet")),
            (readiness && self.draining()).then_some(("drain", "draining: the pod is shutting down")),
        ]
        .into_iter()
        .flatten()
    }
}

/// Which readiness probes pass before a reload: the pod's, and each app
/// container's (`/containers/NAME/readyz`).
struct Readiness {
    /// No gate (startup, drain) holds readiness.
    open: bool,
    /// `/readyz` passes.
    pod: bool,
    /// The containers with a critical readiness check that fails.
    failing: std::collections::HashSet<String>,
}

impl Readiness {
    fn of(s: &Snapshot) -> Readiness {
        let failing = s
            .checks
            .iter()
            .filter(|c| c.critical && c.probes.readiness && !s.check_passes(c, ProbeKind::Readiness))
            .filter_map(|c| c.container.clone())
            .collect();
        Readiness {
            open: s.gates(ProbeKind::Readiness).next().is_none(),
            pod: s.passes(ProbeKind::Readiness),
            failing,
        }
    }

    /// Whether the readiness that a check of `config` is part of passes:
    /// its container's, or the pod's for a check of no container.
    fn passes(&self, config: &CheckConfig) -> bool {
        self.open
            && match &config.container {
                Some(name) => !self.failing.contains(name),
                None => self.pod,
            }
    }
}

/// Whether every startup check has succeeded once (true without any).
fn startup_done(checks: &[CheckStatus]) -> bool {
    checks.iter().filter(|c| c.probes.startup).all(|c| c.ever_healthy)
}

/// A cheap, cloneable handle to the shared snapshot.
#[derive(Debug, Clone)]
pub struct State {
    tx: Arc<watch::Sender<Snapshot>>,
    /// Woken when the app container's generation or the startup latch
    /// changes. The snapshot stays the one place these are kept; this only
    /// spares the check workers, which wait on them, from being woken by
    /// every run of every other check (a check's runs are spread over its
    /// period, so a watch receiver per worker would make each run wake
    /// all of them: quadratic in the number of checks).
    lifecycle: Arc<Notify>,
}

impl State {
    /// The state of `checks` before any has run.
    pub fn new(checks: &[CheckConfig]) -> Self {
        let checks: Vec<CheckStatus> = checks
            .iter()
            .enumerate()
            .map(|(id, c)| CheckStatus::new(id, c))
            .collect();
        let started = startup_done(&checks);
        let mut snapshot = Snapshot {
            next_id: checks.len(),
            checks,
            started,
            drain: Phase::Serving(None),
            generation: 0,
            since: tokio::time::Instant::now(),
            app_restarts: 0,
            reload: ReloadStatus {
                successful: true,
                last_success: SystemTime::now(),
            },
            passing: [false; 3],
            by_name: Vec::new(),
            by_container: Vec::new(),
        };
        snapshot.index();
        snapshot.refresh();
        let (tx, _) = watch::channel(snapshot);
        State {
            tx: Arc::new(tx),
            lifecycle: Arc::new(Notify::new()),
        }
    }

    /// Changes the snapshot with `change`, which returns whether it changed
    /// anything; tells the receivers if so and returns that. Every change
    /// but a check's run (see `record`) goes through here.
    fn modify(&self, change: impl FnOnce(&mut Snapshot) -> bool) -> bool {
        self.tx.send_if_modified(|s| {
            let changed = change(s);
            if changed {
                s.refresh();
            }
            changed
        })
    }

    /// The latest snapshot; hold the guard only while rendering.
    pub fn borrow(&self) -> watch::Ref<'_, Snapshot> {
        self.tx.borrow()
    }

    /// A receiver that sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// Records a run of the check at `place`; returns the transition, if
    /// any, whether this run completed startup, and the verdict of the run
    /// before. A run that began before a new app container (an older
    /// `generation`), or of a check a reload has changed or removed, is
    /// dropped: `None`.
    pub fn record(
        &self,
        place: &Place,
        generation: u64,
        outcome: Outcome,
        duration: Duration,
    ) -> Option<Recorded> {
        let mut recorded = None;
        // Not `modify`: a run changes the verdicts only with a transition
        // of its check or the end of startup, and most runs have neither,
        // so the verdicts are worked out again only then.
        self.tx.send_if_modified(|s| {
            if s.generation != generation {
                return false;
            }
            let Some(at) = s.position(place) else {
                return false;
            };
            let check = &mut s.checks[at];
            let previous = check.last.as_ref().map(|l| l.outcome.verdict);
            let transition = check.observe(outcome, duration, SystemTime::now());
            // Startup completes only when a startup check becomes healthy
            // for the first time: only then are the checks looked over.
            let maybe_started = transition == Some(Health::Healthy) && check.probes.startup;
            let mut r = Recorded {
                transition,
                started: false,
                previous,
            };
            if !s.started && maybe_started && startup_done(&s.checks) {
                s.started = true;
                r.started = true;
            }
            if r.transition.is_some() || r.started {
                s.refresh();
            }
            recorded = Some(r);
            true
        });
        if recorded.is_some_and(|r| r.started) {
            self.lifecycle.notify_waiters();
        }
        recorded
    }

    /// Moves a serving pod to draining: `/readyz` fails from now on. True
    /// when this call did it, false when a drain was under way or done.
    pub fn begin_drain(&self) -> bool {
        self.step_drain(|p| {
            if matches!(p, Phase::Serving(_)) {
                *p = Phase::Draining;
                true
            } else {
                false
            }
        })
    }

    /// A new app container: every check goes back to its initial state
    /// (readiness not ready, liveness healthy, startup not yet), as the
    /// kubelet's workers do for a new container ID (kubelet-semantics
    /// §3.5), and the workers begin again with the initial delay.
    pub(crate) fn new_container(&self) {
        self.modify(|s| {
            s.generation += 1;
            s.since = tokio::time::Instant::now();
            for check in &mut s.checks {
                check.reset();
            }
            s.started = startup_done(&s.checks);
            true
        });
        self.lifecycle.notify_waiters();
    }

    /// Counts `n` restarts of the app container.
    pub(crate) fn record_app_restarts(&self, n: u64) {
        self.modify(|s| {
            s.app_restarts += n;
            n > 0
        });
    }

    /// Applies a reloaded config's checks, `slots` in the new file order;
    /// every running check not kept or changed disappears with its
    /// verdict. Returns each slot's id. The drain, the app container's
    /// generation and a completed startup are left as they are: a reload
    /// never restarts the pod's lifecycle.
    ///
    /// The rule (README, "Reload"): a reload never turns a passing probe
    /// into a failing one unless a check fails under its new definition.
    /// A changed check keeps its verdict, and its consecutive counts when
    /// it still probes the same thing; a check that joins a probe kind it
    /// would fail, or a new one, starts from the initial state, and
    /// passes readiness until a threshold moves it if the readiness it
    /// joins (its container's, or the pod's) passes now.
    ///
    /// Linear in the number of checks: a no-op reload of thousands of
    /// checks must not hold the thread that answers the probes.
    pub(crate) fn reload(&self, slots: &[Slot<'_>]) -> Vec<usize> {
        let mut ids = Vec::with_capacity(slots.len());
        self.modify(|s| {
            let ready = Readiness::of(s);
            let mut old: Vec<Option<CheckStatus>> =
                std::mem::take(&mut s.checks).into_iter().map(Some).collect();
            s.checks.reserve(slots.len());
            for slot in slots {
                let status = match *slot {
                    Slot::Keep(at) => old[at].take().expect("a kept check is running"),
                    Slot::Change {
                        at,
                        config,
                        same_target,
                    } => {
                        let mut status = old[at].take().expect("a changed check is running");
                        s.next_id += 1;
                        status.id = s.next_id - 1;
                        status.redefine(config, same_target, ready.passes(config));
                        status
                    }
                    Slot::Start(config) => {
                        s.next_id += 1;
                        let mut status = CheckStatus::new(s.next_id - 1, config);
                        status.presumed = config.probes.readiness && ready.passes(config);
                        status
                    }
                };
                ids.push(status.id);
                s.checks.push(status);
            }
            s.started = s.started || startup_done(&s.checks);
            s.index();
            s.reload = ReloadStatus {
                successful: true,
                last_success: SystemTime::now(),
            };
            true
        });
        self.lifecycle.notify_waiters();
        ids
    }

    /// Records a rejected reload: the running config stays.
    pub(crate) fn reload_rejected(&self) {
        self.modify(|s| std::mem::replace(&mut s.reload.successful, false));
    }

    /// Moves the drain's phase with `step`, which returns whether it
    /// changed anything; returns that. Only the drain calls this.
    pub(crate) fn step_drain(&self, step: impl FnOnce(&mut Phase) -> bool) -> bool {
        self.modify(|s| step(&mut s.drain))
    }

    /// Waits until a drain has finished (or, once reset, had), and returns
    /// how it went.
    pub(crate) async fn drained(&self) -> Report {
        let mut rx = self.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let snapshot = rx.wait_for(|s| s.report().is_some()).await;
        snapshot
            .ok()
            .and_then(|s| s.report())
            .expect("waited for a finished drain")
    }

    /// Waits until a new app container replaces `generation`.
    pub(crate) async fn new_generation(&self, generation: u64) {
        self.lifecycle_until(|s| s.generation != generation).await;
    }

    /// Waits until startup has completed.
    pub(crate) async fn started(&self) {
        self.lifecycle_until(|s| s.started).await;
    }

    /// Waits until `done` holds of the snapshot, re-reading it only when
    /// the generation or the startup latch may have changed.
    async fn lifecycle_until(&self, done: impl Fn(&Snapshot) -> bool) {
        loop {
            let changed = self.lifecycle.notified();
            tokio::pin!(changed);
            // Registered before the snapshot is read: a change between the
            // two still wakes this waiter.
            changed.as_mut().enable();
            if done(&self.borrow()) {
                return;
            }
            changed.await;
        }
    }
}

/// What one recorded run changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The check's new health, when it changed.
    pub transition: Option<Health>,
    /// This run completed startup.
    pub started: bool,
    /// The verdict of the check's run before this one, if any.
    pub(crate) previous: Option<Verdict>,
}

// === Counters ===

/// The buckets of `healthproxy_check_duration_seconds`, from half a millisecond (an in-process TCP connect) to ten
/// seconds (a slow exec).
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One check's counters: plain atomics the engine adds to, held by the
/// check's status in the snapshot so that they go where the check goes (a
/// reload keeps an unchanged check's, drops a removed check's).
#[derive(Debug)]
pub(crate) struct CheckCounters {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    /// Runs by result: success (and warning), failure, unknown, the
    /// `result` label of `healthproxy_check_runs_total` in that order.
    pub(crate) runs: [AtomicU64; 3],
    /// Runs per bucket, not cumulative: `buckets[i]` counts durations in
    /// (`DURATION_BUCKETS[i-1]`, `DURATION_BUCKETS[i]`], the last one those
    /// above every bound. The histogram's count is their sum, so that it
    /// always equals the `+Inf` bucket.
    pub(crate) buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of the durations, in nanoseconds.
    pub(crate) sum_nanos: AtomicU64,
    /// Indexed by `Reason as usize`.
    pub(crate) failures: [AtomicU64; Reason::ALL.len()],
    pub(crate) to_healthy: AtomicU64,
    pub(crate) to_failed: AtomicU64,
}

impl CheckCounters {
    /// Zeroed counters of check `c`.
    pub(crate) fn new(c: &CheckConfig) -> Self {
        CheckCounters {
            name: c.name.clone(),
            kind: c.kind.as_str(),
            runs: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            failures: Default::default(),
            to_healthy: AtomicU64::new(0),
            to_failed: AtomicU64::new(0),
        }
    }
}

impl CheckCounters {
    /// Counts a run that the snapshot kept: its result, its duration and,
    /// for a failure, its reason.
    pub(crate) fn record_run(&self, verdict: Verdict, reason: Option<Reason>, duration: Duration) {
        let result = match verdict {
            Verdict::Success | Verdict::Warning => 0,
            Verdict::Failure => 1,
            Verdict::Unknown => 2,
        };
        self.runs[result].fetch_add(1, Relaxed);
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
        if let Some(reason) = reason {
            self.failures[reason as usize].fetch_add(1, Relaxed);
        }
    }

    /// Counts a state transition.
    pub(crate) fn record_transition(&self, to: Health) {
        match to {
            Health::Healthy => self.to_healthy.fetch_add(1, Relaxed),
            Health::Failed => self.to_failed.fetch_add(1, Relaxed),
            Health::Initial => 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(success_threshold: u32, failure_threshold: u32) -> CheckStatus {
        let config = crate::config::Config::from_toml_str(
            &format!(
                "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\ntcp = {{ port = 1 }}\nsuccess_threshold = {success_threshold}\nfailure_threshold = {failure_threshold}\n"
            ),
            "t",
            &|_: &str| None,
        )
        .unwrap();
        CheckStatus::new(0, &config.checks[0])
    }

    fn run(s: &mut CheckStatus, verdict: Verdict) -> Option<Health> {
        let outcome = match verdict {
            Verdict::Success => Outcome::success("success"),
            Verdict::Warning => Outcome::warning("warning"),
            Verdict::Failure => Outcome::failure(crate::check::Reason::Other, "failure"),
            Verdict::Unknown => Outcome::unknown("unknown"),
        };
        s.observe(outcome, Duration::ZERO, SystemTime::now())
    }

    #[test]
    fn state_changes_only_at_the_failure_threshold() {
        let mut s = status(1, 3);
        assert_eq!(run(&mut s, Verdict::Success), Some(Health::Healthy));
        assert_eq!(run(&mut s, Verdict::Failure), None);
        assert_eq!(run(&mut s, Verdict::Failure), None);
        assert_eq!(s.health, Health::Healthy);
        assert_eq!(run(&mut s, Verdict::Failure), Some(Health::Failed));
        assert_eq!(
            run(&mut s, Verdict::Failure),
            None,
            "a transition is reported once"
        );
    }

    #[test]
    fn the_last_transitions_are_kept_with_their_messages_and_no_more() {
        let mut s = status(1, 1);
        assert!(s.transitions.is_empty());
        for _ in 0..TRANSITIONS_KEPT {
            run(&mut s, Verdict::Success);
            run(&mut s, Verdict::Failure);
        }
        assert_eq!(s.transitions.len(), TRANSITIONS_KEPT);
        let last = s.transitions.back().unwrap();
        assert_eq!((last.to, last.message.as_str()), (Health::Failed, "failure"));
        let first = s.transitions.front().unwrap();
        assert_eq!((first.to, first.message.as_str()), (Health::Healthy, "success"));
        s.reset();
        assert!(s.transitions.is_empty());
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut s = status(1, 2);
        run(&mut s, Verdict::Success);
        run(&mut s, Verdict::Failure);
        run(&mut s, Verdict::Success);
        assert_eq!(run(&mut s, Verdict::Failure), None);
        assert_eq!(s.health, Health::Healthy);
    }

    #[test]
    fn recovery_needs_the_success_threshold() {
        let mut s = status(2, 1);
        assert_eq!(run(&mut s, Verdict::Failure), Some(Health::Failed));
        assert_eq!(run(&mut s, Verdict::Success), None);
        assert_eq!(run(&mut s, Verdict::Failure), None);
        assert_eq!(run(&mut s, Verdict::Success), None);
        assert_eq!(run(&mut s, Verdict::Success), Some(Health::Healthy));
    }

    #[test]
    fn unknown_is_kept_but_not_counted() {
        let mut s = status(1, 2);
        run(&mut s, Verdict::Failure);
        assert_eq!(run(&mut s, Verdict::Unknown), None);
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.last.as_ref().unwrap().outcome.verdict, Verdict::Unknown);
        assert_eq!(run(&mut s, Verdict::Failure), Some(Health::Failed));
    }

    #[test]
    fn warning_counts_as_success() {
        let mut s = status(1, 1);
        assert_eq!(run(&mut s, Verdict::Warning), Some(Health::Healthy));
    }

    #[test]
    fn liveness_passes_until_startup_has_completed() {
        let config = crate::config::Config::from_toml_str(
            "[[check]]\nname = \"a\"\nprobes = [\"startup\", \"liveness\"]\ntcp = { port = 1 }\nfailure_threshold = 1\n",
            "t",
            &|_: &str| None,
        )
        .unwrap();
        let state = State::new(&config.checks);
        let place = Place::new(0, 0);
        state.record(
            &place,
            0,
            Outcome::failure(crate::check::Reason::Refused, "down"),
            Duration::ZERO,
        );
        {
            let s = state.borrow();
            assert_eq!(s.checks[0].health, Health::Failed);
            assert!(s.passes(ProbeKind::Liveness), "no liveness probe before startup");
            assert!(!s.passes(ProbeKind::Startup));
        }
        state.record(&place, 0, Outcome::success("up"), Duration::ZERO);
        state.record(
            &place,
            0,
            Outcome::failure(crate::check::Reason::Refused, "down"),
            Duration::ZERO,
        );
        let s = state.borrow();
        assert!(s.started);
        assert!(!s.passes(ProbeKind::Liveness), "liveness counts once started");
    }

    #[test]
    fn initial_state_reads_as_the_kubelet_does() {
        let s = status(1, 3);
        assert!(s.passes(ProbeKind::Liveness), "liveness starts healthy");
        assert!(!s.passes(ProbeKind::Readiness), "readiness starts not ready");
        assert!(!s.passes(ProbeKind::Startup), "startup starts unknown");
    }

    #[test]
    fn startup_latches_after_a_later_failure() {
        let mut s = status(1, 1);
        run(&mut s, Verdict::Success);
        run(&mut s, Verdict::Failure);
        assert!(s.passes(ProbeKind::Startup));
    }

    fn checks(toml: &str) -> Vec<CheckConfig> {
        crate::config::Config::from_toml_str(toml, "t", &|_: &str| None)
            .unwrap()
            .checks
    }

    fn check(name: &str, probes: &str, extra: &str) -> String {
        format!("[[check]]\nname = \"{name}\"\nprobes = [{probes}]\ntcp = {{ port = 1 }}\n{extra}")
    }

    fn pass(state: &State, id: usize) {
        state.record(&Place::new(id, 0), 0, Outcome::success("up"), Duration::ZERO);
    }

    fn fail(state: &State, id: usize) {
        let down = Outcome::failure(crate::check::Reason::Refused, "down");
        state.record(&Place::new(id, 0), 0, down, Duration::ZERO);
    }

    #[test]
    fn checks_are_found_by_name_and_container_and_a_moved_check_by_its_place() {
        let old = checks(&format!(
            "{}container = \"web\"\n{}{}container = \"web\"\n{}container = \"db\"\n",
            check("b", "\"readiness\"", ""),
            check("a", "\"readiness\"", ""),
            check("c", "\"readiness\"", ""),
            check("d", "\"readiness\"", ""),
        ));
        let state = State::new(&old);
        let names = |checks: Vec<&CheckStatus>| checks.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        {
            let s = state.borrow();
            for name in ["a", "b", "c", "d"] {
                assert_eq!(s.check_named(name).map(|c| c.name.as_str()), Some(name));
            }
            assert!(s.check_named("e").is_none());
            assert!(s.check_named("").is_none());
            assert_eq!(names(s.container_checks("web").collect()), ["b", "c"]);
            assert_eq!(names(s.container_checks("db").collect()), ["d"]);
            assert!(s.container_checks("").next().is_none());
            assert!(s.container_checks("wex").next().is_none());
        }
        let c = Place::new(2, 2);
        let new = checks(&format!(
            "{}container = \"web\"\n",
            check("e", "\"readiness\"", "")
        ));
        state.reload(&[Slot::Keep(2), Slot::Keep(0), Slot::Start(&new[0])]);
        {
            let s = state.borrow();
            assert!(s.check_named("a").is_none(), "a removed check is not found");
            assert_eq!(s.check_named("e").map(|c| c.name.as_str()), Some("e"));
            assert_eq!(names(s.container_checks("web").collect()), ["c", "b", "e"]);
            assert!(s.container_checks("db").next().is_none());
        }
        assert!(
            state
                .record(&c, 0, Outcome::success("up"), Duration::ZERO)
                .is_some()
        );
        assert_eq!(c.at.load(Relaxed), 0, "the place follows its check");
        let s = state.borrow();
        assert_eq!(s.check_at(&c).map(|c| c.name.as_str()), Some("c"));
        assert!(s.checks[0].last.is_some());
        assert!(
            s.check_at(&Place::new(1, 1)).is_none(),
            "a removed check has no place"
        );
    }

    #[test]
    fn a_changed_check_keeps_its_verdict_and_its_counts_while_it_probes_the_same() {
        let old = checks(&check("a", "\"readiness\"", "failure_threshold = 3\n"));
        let state = State::new(&old);
        pass(&state, 0);
        fail(&state, 0);
        let new = checks(&check(
            "a",
            "\"readiness\"",
            "failure_threshold = 2\nperiod = \"2s\"\n",
        ));
        let ids = state.reload(&[Slot::Change {
            at: 0,
            config: &new[0],
            same_target: true,
        }]);
        {
            let s = state.borrow();
            let a = &s.checks[0];
            assert_ne!(ids[0], 0, "a changed check runs under a new id");
            assert_eq!((a.health, a.consecutive_failures), (Health::Healthy, 1));
            assert_eq!(a.timing.failure_threshold, 2);
            assert!(s.passes(ProbeKind::Readiness));
        }
        fail(&state, 0);
        assert!(
            state.borrow().passes(ProbeKind::Readiness),
            "a run of the old id is not counted"
        );
        // The second failure in a row reaches the new threshold.
        fail(&state, ids[0]);
        assert!(!state.borrow().passes(ProbeKind::Readiness));

        // Another target: the verdict stays, the counts start again.
        let elsewhere = checks(&check("a", "\"readiness\"", "").replace("port = 1", "port = 2"));
        let ids = state.reload(&[Slot::Change {
            at: 0,
            config: &elsewhere[0],
            same_target: false,
        }]);
        let s = state.borrow();
        let a = &s.checks[0];
        assert_eq!((a.health, a.consecutive_failures), (Health::Failed, 0));
        assert_eq!(a.id, ids[0]);
    }

    #[test]
    fn a_check_added_to_a_ready_pod_passes_until_its_failure_threshold() {
        let old = checks(&check("a", "\"readiness\"", ""));
        let state = State::new(&old);
        pass(&state, 0);
        let new = checks(&format!(
            "{}{}",
            check("a", "\"readiness\"", ""),
            check("b", "\"readiness\"", "failure_threshold = 2\n")
        ));
        let ids = state.reload(&[Slot::Keep(0), Slot::Start(&new[1])]);
        assert!(state.borrow().passes(ProbeKind::Readiness), "b has not run yet");
        fail(&state, ids[1]);
        assert!(state.borrow().passes(ProbeKind::Readiness), "one failure of two");
        fail(&state, ids[1]);
        assert!(
            !state.borrow().passes(ProbeKind::Readiness),
            "b fails by its threshold"
        );
        pass(&state, ids[1]);
        assert!(state.borrow().passes(ProbeKind::Readiness));
        assert!(
            !state.borrow().checks[1].presumed,
            "moved by a threshold: no longer presumed"
        );
    }

    #[test]
    fn a_check_added_to_an_unready_pod_starts_not_ready_as_the_kubelet_does() {
        let old = checks(&check("a", "\"readiness\"", ""));
        let state = State::new(&old);
        let new = checks(&format!(
            "{}{}",
            check("a", "\"readiness\"", ""),
            check("b", "\"readiness\"", "")
        ));
        let ids = state.reload(&[Slot::Keep(0), Slot::Start(&new[1])]);
        pass(&state, 0);
        assert!(
            !state.borrow().passes(ProbeKind::Readiness),
            "b has not shown it is ready"
        );
        pass(&state, ids[1]);
        assert!(state.borrow().passes(ProbeKind::Readiness));
    }

    #[test]
    fn containers_are_ready_each_on_their_own_for_a_new_check() {
        let text = |extra: &str| {
            format!(
                "{}container = \"web\"\n{}container = \"db\"\n{extra}",
                check("web", "\"readiness\"", ""),
                check("db", "\"readiness\"", "")
            )
        };
        let state = State::new(&checks(&text("")));
        pass(&state, 0);
        let new = checks(&text(&format!(
            "{}container = \"web\"\n{}container = \"db\"\n",
            check("web-2", "\"readiness\"", ""),
            check("db-2", "\"readiness\"", "")
        )));
        state.reload(&[
            Slot::Keep(0),
            Slot::Keep(1),
            Slot::Start(&new[2]),
            Slot::Start(&new[3]),
        ]);
        let s = state.borrow();
        assert!(
            s.checks[2].presumed,
            "web is ready: its new check does not fail it"
        );
        assert!(!s.checks[3].presumed, "db is not ready yet");
    }

    #[test]
    fn startup_stays_complete_and_a_check_joining_a_kind_joins_as_a_new_one() {
        let old = checks(&format!(
            "{}{}",
            check("boot", "\"startup\"", ""),
            check("db", "\"readiness\"", "failure_threshold = 1\n")
        ));
        let state = State::new(&old);
        pass(&state, 0);
        fail(&state, 1);
        let new = checks(&format!(
            "{}{}{}",
            check("boot", "\"startup\"", ""),
            check("db", "\"readiness\", \"liveness\"", "failure_threshold = 1\n"),
            check("migrated", "\"startup\"", "")
        ));
        let ids = state.reload(&[
            Slot::Keep(0),
            Slot::Change {
                at: 1,
                config: &new[1],
                same_target: true,
            },
            Slot::Start(&new[2]),
        ]);
        let s = state.borrow();
        assert!(s.started);
        assert!(s.passes(ProbeKind::Startup), "startup completion is kept");
        assert!(
            s.passes(ProbeKind::Liveness),
            "db has not run as a liveness check yet"
        );
        assert!(
            !s.passes(ProbeKind::Readiness),
            "and was not ready: it is still not"
        );
        assert_eq!(s.checks[1].health, Health::Initial);
        assert_eq!(s.checks[2].id, ids[2]);
    }
}
