//! The engine: one task per check, on its own timer, publishing each run to
//! the shared [`State`]. The schedule mirrors the kubelet's prober worker
//! (kubelet-semantics §3.2–3.4): an initial delay from start, a first run
//! at once and then one per period, never two runs of a check at a time
//! (a run the worker stops waiting for is aborted, and the next one starts
//! only once it has ended),
//! liveness and readiness checks held until startup has completed, and a
//! startup-only check stopping once it has succeeded.
//!
//! The engine owns the checks' tasks ([`Running`]): it starts them,
//! replaces a changed check's and stops a removed check's when a reload
//! hands it the plan (the reload only works out what changed), and stops
//! them all at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::check::{Check, Outcome, PrepareError, Reason, Verdict};
use crate::config::{CheckConfig, ProbeKind};
use crate::state::CheckCounters;
use crate::state::{Health, Place, Slot, State};

/// Extra time a run gets past its own timeout before the engine gives up on
/// it. Every check bounds itself; this only guards against a check that
/// does not.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// How many times a run that could not judge the app (Unknown) is made in
/// a row, each with its own timeout: the kubelet's `maxProbeRetries`
/// (pkg/kubelet/prober/prober.go `runProbeWithRetries` retries while the
/// probe returns an error). Only the last attempt is published.
const MAX_ATTEMPTS: u32 = 3;

/// Something the engine can run on a timer: a [`Check`], or in tests a
/// scripted stand-in driven by the paused clock.
pub trait Runnable: Send + Sync + 'static {
    /// Runs once, bounded by `timeout`.
    fn run(&self, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

impl Runnable for Check {
    fn run(&self, timeout: Duration) -> impl Future<Output = Outcome> + Send {
        Check::run(self, timeout)
    }
}

/// The checks, prepared and ready to be scheduled.
#[derive(Debug)]
pub struct Engine<C = Check> {
    checks: Vec<(CheckConfig, Arc<C>)>,
}

impl Engine {
    /// Prepares every check (loads CA files and the like). The error lists
    /// every check that cannot be prepared, with the line of its table.
    pub fn new(configs: &[CheckConfig]) -> Result<Engine, Vec<(usize, PrepareError)>> {
        let mut checks = Vec::with_capacity(configs.len());
        let mut errors = Vec::new();
        for c in configs {
            match Check::new(&c.name, &c.kind) {
                Ok(check) => checks.push((c.clone(), Arc::new(check))),
                Err(e) => errors.push((c.line, e)),
            }
        }
        if errors.is_empty() {
            Ok(Engine { checks })
        } else {
            Err(errors)
        }
    }
}

impl<C: Runnable> Engine<C> {
    /// An engine over already prepared checks.
    pub fn from_checks(checks: Vec<(CheckConfig, Arc<C>)>) -> Self {
        Engine { checks }
    }

    /// Starts one task per check on `tracker`, as the checks of `state` in
    /// the same order, publishing to it. The returned [`Running`] owns the
    /// tasks: they stop when it is dropped or when `cancel` fires.
    pub(crate) fn spawn(self, state: &State, tracker: &TaskTracker, cancel: &CancellationToken) -> Running {
        let mut running = Running {
            tasks: Vec::new(),
            state: state.clone(),
            tracker: tracker.clone(),
            cancel: cancel.child_token(),
        };
        let count = self.checks.len();
        running.tasks = running
            .start(self.checks, 0, count, &vec![true; count])
            .into_iter()
            .map(|task| task.expect("every check starts"))
            .collect();
        running
    }
}

/// A running check's task: its stop token, and where its worker finds its
/// check.
type Task = (CancellationToken, Arc<Place>);

/// How many checks a reload starts before it lets the probes be answered.
const SPAWN_BATCH: usize = 256;

/// The tasks of the running checks, one per check of the running config
/// and in its order (which is the snapshot's): the engine starts each,
/// replaces it when a reload changes its check, stops it when a reload
/// removes its check, and stops them all when dropped or when the
/// process's cancellation fires (the shutdown).
#[derive(Debug)]
pub(crate) struct Running {
    /// Each check's task, told to stop through its token, and where its
    /// worker finds its check: a reload that moves a kept check tells it
    /// there, so no worker searches the snapshot for its check afterwards.
    tasks: Vec<Task>,
    state: State,
    tracker: TaskTracker,
    /// The parent of every task's token: a child of the process's.
    cancel: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Running {
    /// Moves the snapshot to a reloaded config's checks, `slots` in its
    /// order, and the tasks with it: a kept check's task runs on, a
    /// changed or removed check's stops, and a changed or new check's
    /// starts from `engine`, which holds every check of the new config in
    /// its order. The runtime's thread answers the probes after each batch
    /// of [`SPAWN_BATCH`] starts: a reload that changes thousands of
    /// checks does not hold them meanwhile.
    pub(crate) async fn reload<C: Runnable>(&mut self, slots: &[Slot<'_>], engine: Engine<C>) {
        assert_eq!(slots.len(), engine.checks.len(), "one slot per check");
        self.state.reload(slots);
        let mut old: Vec<Option<Task>> = std::mem::take(&mut self.tasks).into_iter().map(Some).collect();
        let mut tasks: Vec<Option<Task>> = slots
            .iter()
            .enumerate()
            .map(|(to, slot)| match *slot {
                Slot::Keep(at) => old[at].take().inspect(|(_, place)| place.moved_to(to)),
                Slot::Change { .. } | Slot::Start(_) => None,
            })
            .collect();
        // Replaced or removed: a run of theirs under way is not counted
        // (the snapshot no longer has their id).
        for (task, _) in old.into_iter().flatten() {
            task.cancel();
        }
        let wanted: Vec<bool> = tasks.iter().map(Option::is_none).collect();
        let count = engine.checks.len();
        let mut checks = engine.checks.into_iter();
        for first in (0..count).step_by(SPAWN_BATCH) {
            let end = (first + SPAWN_BATCH).min(count);
            let batch: Vec<_> = checks.by_ref().take(end - first).collect();
            let started = self.start(batch, first, count, &wanted[first..end]);
            for (task, started) in tasks[first..end].iter_mut().zip(started) {
                if started.is_some() {
                    *task = started;
                }
            }
            tokio::task::yield_now().await;
        }
        self.tasks = tasks
            .into_iter()
            .map(|task| task.expect("every check has its task"))
            .collect();
    }

    /// Starts each of `checks`, the `first`th to the last of `count`,
    /// whose entry of `wanted` is true, as the check at the same position
    /// of the snapshot; returns their tasks (`None` for those left out).
    fn start<C: Runnable>(
        &self,
        checks: Vec<(CheckConfig, Arc<C>)>,
        first: usize,
        count: usize,
        wanted: &[bool],
    ) -> Vec<Option<Task>> {
        let found: Vec<Option<(usize, Arc<CheckCounters>)>> = {
            let snapshot = self.state.borrow();
            wanted
                .iter()
                .enumerate()
                .map(|(i, wanted)| {
                    let c = &snapshot.checks[first + i];
                    wanted.then(|| (c.id, Arc::clone(&c.counters)))
                })
                .collect()
        };
        let mut tasks = Vec::with_capacity(checks.len());
        for (index, ((config, check), found)) in checks.into_iter().zip(found).enumerate() {
            let Some((id, counters)) = found else {
                tasks.push(None);
                continue;
            };
            let place = Arc::new(Place::new(id, first + index));
            let worker = Worker {
                place: Arc::clone(&place),
                phase: phase(first + index, count, config.timing.period),
                config,
                check,
                counters,
                state: self.state.clone(),
                slot: Arc::new(Semaphore::new(1)),
            };
            let token = self.cancel.child_token();
            tasks.push(Some((token.clone(), place)));
            self.tracker.spawn(async move {
                tokio::select! {
                    () = worker.run() => {}
                    () = token.cancelled() => {}
                }
            });
        }
        tasks
    }
}

/// Check `index` of `count`'s offset within its period: the checks evenly
/// spread over their period, in file order, the same on every start.
///
/// The kubelet's workers each keep their own ticker
/// (pkg/kubelet/prober/worker.go `run`; after a kubelet start each first
/// sleeps a random part of its period), so a pod's probes do not connect
/// at the same instant. Checks started together would: an app with a
/// small listen backlog (5, Python's default) then drops the SYNs beyond
/// it, and the checks fail with `i/o timeout` under no load at all.
fn phase(index: usize, count: usize, period: Duration) -> Duration {
    period.mul_f64(index as f64 / count.max(1) as f64)
}

/// The task of one check.
struct Worker<C> {
    /// Where its check is in the snapshot (kept up by [`Running::reload`]).
    place: Arc<Place>,
    /// Offset of this check's runs within its period (see [`phase`]).
    phase: Duration,
    config: CheckConfig,
    check: Arc<C>,
    /// The check's counters, which the metrics read.
    counters: Arc<CheckCounters>,
    state: State,
    /// One permit, held by the run under way until its task has ended:
    /// a run the worker stopped waiting for (a new app container, a
    /// timeout) is aborted, and the next one starts only once it is gone.
    slot: Arc<Semaphore>,
}

impl<C: Runnable> Worker<C> {
    /// Runs the check for each app container in turn: a new container
    /// drops the run under way and begins again from the initial delay, as
    /// the kubelet's worker does for a new container ID.
    async fn run(self) {
        loop {
            let generation = self.state.borrow().generation;
            tokio::select! {
                () = self.run_container(generation) => {}
                () = self.state.new_generation(generation) => {}
            }
        }
    }

    /// The schedule for one app container; never returns.
    async fn run_container(&self, generation: u64) {
        let timing = self.config.timing;
        // From the container's start, as the kubelet counts it: a check
        // that a reload starts later waits only for what is left of it.
        let since = self.state.borrow().since;
        tokio::time::sleep_until(since + timing.initial_delay).await;
        let probes = self.config.probes;
        if !probes.startup {
            // "Disable other probes until container has started."
            self.state.started().await;
        }
        // The initial delay is kept as configured; the phase comes after
        // it (and after startup, when every held check starts at once).
        tokio::time::sleep(self.phase).await;
        let mut ticks = tokio::time::interval(timing.period);
        // A run longer than the period delays the next one rather than
        // bunching runs together.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let startup_only = !probes.liveness && !probes.readiness;
            if startup_only
                && self
                    .state
                    .borrow()
                    .check_at(&self.place)
                    .is_some_and(|c| c.ever_healthy)
            {
                // The startup worker stops probing once started, until a
                // new container.
                std::future::pending::<()>().await;
            }
            let started = Instant::now();
            let timeout = timing.timeout;
            let mut outcome = None;
            for _ in 0..MAX_ATTEMPTS {
                let slot = Arc::clone(&self.slot).acquire_owned().await;
                let slot = slot.expect("the slot is never closed");
                let check = Arc::clone(&self.check);
                let run = async move {
                    let _slot = slot;
                    check.run(timeout).await
                };
                let attempt = run_guarded(run, timeout).await;
                let unknown = attempt.verdict == Verdict::Unknown;
                outcome = Some(attempt);
                if !unknown {
                    break;
                }
            }
            let outcome = outcome.expect("at least one attempt");
            self.publish(generation, outcome, started.elapsed());
        }
    }

    fn publish(&self, generation: u64, outcome: Outcome, duration: Duration) {
        let name = &self.config.name;
        let (verdict, reason) = (outcome.verdict, outcome.reason);
        let message = outcome.message.clone();
        tracing::debug!(
            check = %name,
            verdict = verdict.as_str(),
            duration_ms = crate::log::millis(duration),
            "{message}"
        );
        // A run of an older app container is not kept, nor counted.
        let Some(recorded) = self.state.record(&self.place, generation, outcome, duration) else {
            return;
        };
        self.counters.record_run(verdict, reason, duration);
        if let Some(to) = recorded.transition {
            self.counters.record_transition(to);
        }
        let kinds = KindsTitle(&self.config);
        match recorded.transition {
            Some(Health::Failed) => tracing::warn!(check = %name, "{kinds} probe failed: {message}"),
            Some(Health::Healthy) => tracing::info!(check = %name, "{kinds} probe succeeded"),
            _ => {}
        }
        if recorded.previous != Some(verdict) {
            match verdict {
                Verdict::Warning => tracing::warn!(check = %name, "{kinds} probe warning: {message}"),
                Verdict::Unknown => tracing::warn!(check = %name, "{kinds} probe errored: {message}"),
                _ => {}
            }
        }
        if recorded.started {
            tracing::info!("startup complete: every startup check has succeeded");
        }
    }
}

/// Runs one check run in its own task, so that a panic becomes an Unknown
/// result and the worker goes on, bounded by the timeout plus a grace.
/// Dropping the returned future aborts the run: a run nobody waits for is
/// never left running.
///
/// The task is spawned at the call, so that the returned future holds only
/// its handle: a worker keeps that future for its whole life, and holding
/// `run` itself would size every worker like a run.
pub(crate) fn run_guarded<F>(run: F, timeout: Duration) -> impl Future<Output = Outcome> + Send
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let task = AbortOnDropHandle::new(tokio::spawn(run));
    guard(task, timeout)
}

async fn guard(mut task: AbortOnDropHandle<Outcome>, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout + TIMEOUT_GRACE, &mut task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) if e.is_panic() => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Outcome::unknown(format!("check panicked: {text}"))
        }
        Ok(Err(e)) => Outcome::unknown(format!("check task failed: {e}")),
        Err(_) => {
            task.abort();
            Outcome::failure(
                Reason::Timeout,
                format!(
                    "check did not finish within its timeout of {}",
                    humantime::format_duration(timeout)
                ),
            )
        }
    }
}

/// The kubelet's probe-type names for a check's kinds: `Readiness`, or
/// `Liveness/Readiness` for a check in both.
/// The probe kinds of a check, "Readiness/Liveness": formatted only when a
/// log line is written, not on every run.
struct KindsTitle<'a>(&'a CheckConfig);

impl std::fmt::Display for KindsTitle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds = ProbeKind::ALL.iter().filter(|k| self.0.probes.contains(**k));
        for (i, k) in kinds.enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(k.title())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::Config;

    /// What a scripted run does.
    #[derive(Clone, Copy)]
    enum Step {
        Pass,
        Fail,
        Panic,
        Hang,
    }

    /// A stand-in check that plays a script, one step per run, then
    /// repeats the last step; it records when each run started, and how
    /// many runs were under way at most at once.
    struct Script {
        steps: Mutex<VecDeque<Step>>,
        last: Mutex<Step>,
        starts: Mutex<Vec<Duration>>,
        origin: Instant,
        runs: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    /// A run under way, from its start until its future is dropped.
    struct Flight<'a>(&'a AtomicUsize);

    impl Drop for Flight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Script {
        fn new(steps: &[Step]) -> Arc<Self> {
            Arc::new(Script {
                steps: Mutex::new(steps.iter().copied().collect()),
                last: Mutex::new(*steps.last().unwrap()),
                starts: Mutex::new(Vec::new()),
                origin: Instant::now(),
                runs: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
            })
        }

        fn starts(&self) -> Vec<u64> {
            self.starts
                .lock()
                .unwrap()
                .iter()
                .map(|d| d.as_millis() as u64)
                .collect()
        }
    }

    impl Runnable for Script {
        fn run(&self, timeout: Duration) -> impl Future<Output = Outcome> + Send {
            self.runs.fetch_add(1, Ordering::SeqCst);
            self.starts.lock().unwrap().push(self.origin.elapsed());
            let step = {
                let mut steps = self.steps.lock().unwrap();
                let mut last = self.last.lock().unwrap();
                if let Some(s) = steps.pop_front() {
                    *last = s;
                }
                *last
            };
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let flight = Flight(&self.in_flight);
            async move {
                let _flight = flight;
                match step {
                    Step::Pass => Outcome::success("ok"),
                    Step::Fail => Outcome::failure(Reason::Status, "HTTP probe failed with statuscode: 500"),
                    Step::Panic => panic!("boom"),
                    Step::Hang => {
                        tokio::time::sleep(timeout * 100).await;
                        Outcome::success("too late")
                    }
                }
            }
        }
    }

    fn configs(toml: &str) -> Vec<CheckConfig> {
        Config::from_toml_str(toml, "t", &|_: &str| None).unwrap().checks
    }

    /// Starts the scripted checks of `toml`; they run while the returned
    /// [`Running`] is held and `cancel` has not fired.
    fn start_until(toml: &str, scripts: Vec<Arc<Script>>, cancel: &CancellationToken) -> (State, Running) {
        let configs = configs(toml);
        let state = State::new(&configs);
        let checks = configs.into_iter().zip(scripts).collect();
        let running = Engine::from_checks(checks).spawn(&state, &TaskTracker::new(), cancel);
        (state, running)
    }

    fn start(toml: &str, scripts: Vec<Arc<Script>>) -> (State, Running) {
        start_until(toml, scripts, &CancellationToken::new())
    }

    async fn until(state: &State, what: impl Fn(&crate::state::Snapshot) -> bool) {
        let mut rx = state.subscribe();
        tokio::time::timeout(Duration::from_secs(3600), rx.wait_for(|s| what(s)))
            .await
            .expect("condition within an hour of paused time")
            .unwrap();
    }

    const READY: &str =
        "[[check]]\nname = \"web\"\nprobes = [\"readiness\"]\ntcp = { port = 1 }\nperiod = \"2s\"\n";

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_on_the_third_consecutive_failure_one_period_apart() {
        let script = Script::new(&[Step::Pass, Step::Fail]);
        let (state, _running) = start(READY, vec![script.clone()]);
        until(&state, |s| s.checks[0].health == Health::Healthy).await;
        until(&state, |s| s.checks[0].health == Health::Failed).await;
        assert_eq!(script.starts(), [0, 2000, 4000, 6000]);
        assert_eq!(state.borrow().checks[0].consecutive_failures, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn initial_delay_postpones_the_first_run() {
        let script = Script::new(&[Step::Pass]);
        let toml = format!("{READY}initial_delay = \"5s\"\n");
        let (state, _running) = start(&toml, vec![script.clone()]);
        until(&state, |s| s.checks[0].health == Health::Healthy).await;
        assert_eq!(script.starts(), [5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_and_readiness_wait_for_startup_and_startup_stops_once_reached() {
        let toml = "[[check]]\nname = \"boot\"\nprobes = [\"startup\"]\ntcp = { port = 1 }\nperiod = \"1s\"\n\
                    [[check]]\nname = \"live\"\nprobes = [\"liveness\"]\ntcp = { port = 1 }\nperiod = \"1s\"\n";
        let boot = Script::new(&[Step::Fail, Step::Fail, Step::Pass]);
        let live = Script::new(&[Step::Pass]);
        let (state, _running) = start(toml, vec![boot.clone(), live.clone()]);
        until(&state, |s| s.started).await;
        until(&state, |s| s.checks[1].last.is_some()).await;
        assert_eq!(boot.starts(), [0, 1000, 2000]);
        assert_eq!(
            live.starts(),
            [2500],
            "liveness starts only once startup is done, at its phase"
        );
        until(&state, |s| s.checks[1].consecutive_successes == 4).await;
        assert_eq!(
            boot.runs.load(Ordering::SeqCst),
            3,
            "a succeeded startup check stops running"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_container_starts_every_check_again_from_its_initial_state() {
        let toml = "[[check]]\nname = \"boot\"\nprobes = [\"startup\"]\ntcp = { port = 1 }\nperiod = \"1s\"\n\
                    [[check]]\nname = \"live\"\nprobes = [\"liveness\"]\ntcp = { port = 1 }\nperiod = \"1s\"\n";
        let boot = Script::new(&[Step::Pass, Step::Fail, Step::Pass]);
        let live = Script::new(&[Step::Fail]);
        let (state, _running) = start(toml, vec![boot.clone(), live.clone()]);
        until(&state, |s| s.checks[1].health == Health::Failed).await;
        assert_eq!(
            live.starts(),
            [500, 1500, 2500],
            "the second check runs half a period later"
        );
        tokio::time::sleep_until(boot.origin + Duration::from_millis(2700)).await;
        state.new_container();
        {
            let s = state.borrow();
            assert!(!s.started, "startup is not done for the new container");
            assert_eq!(
                s.checks[1].health,
                Health::Initial,
                "liveness starts healthy again"
            );
            assert!(s.checks[1].last.is_none());
        }
        until(&state, |s| s.started).await;
        until(&state, |s| s.checks[1].last.is_some()).await;
        assert_eq!(
            boot.starts(),
            [0, 2700, 3700],
            "the startup check runs again at once"
        );
        assert_eq!(
            live.starts(),
            [500, 1500, 2500, 4200],
            "liveness waits for the new container's startup, then its phase"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_check_reports_unknown_and_keeps_being_scheduled() {
        let script = Script::new(&[Step::Panic, Step::Panic, Step::Panic, Step::Pass]);
        let (state, _running) = start(READY, vec![script.clone()]);
        until(&state, |s| {
            s.checks[0]
                .last
                .as_ref()
                .is_some_and(|l| l.outcome.verdict == Verdict::Unknown)
        })
        .await;
        assert!(
            state.borrow().checks[0]
                .last
                .as_ref()
                .unwrap()
                .outcome
                .message
                .contains("boom")
        );
        until(&state, |s| s.checks[0].health == Health::Healthy).await;
        assert_eq!(
            script.starts(),
            [0, 0, 0, 2000],
            "three attempts, then the next period"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_run_is_retried_at_once_and_only_the_last_attempt_counts() {
        // prober.go `runProbeWithRetries`: an errored probe is run again,
        // up to three times, before the worker sees a result.
        let script = Script::new(&[Step::Panic, Step::Pass]);
        let (state, _running) = start(READY, vec![script.clone()]);
        until(&state, |s| s.checks[0].last.is_some()).await;
        let snapshot = state.borrow();
        let last = snapshot.checks[0].last.as_ref().unwrap();
        assert_eq!(last.outcome.verdict, Verdict::Success);
        assert_eq!(snapshot.checks[0].health, Health::Healthy);
        assert_eq!(script.starts(), [0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn checks_are_spread_over_their_period_and_keep_their_phase() {
        let toml: String = (0..4)
            .map(|i| format!("[[check]]\nname = \"c{i}\"\nprobes = [\"liveness\"]\ntcp = {{ port = 1 }}\nperiod = \"2s\"\n"))
            .collect::<String>()
            + "[[check]]\nname = \"slow\"\nprobes = [\"liveness\"]\ntcp = { port = 1 }\nperiod = \"10s\"\ninitial_delay = \"3s\"\n";
        let scripts: Vec<_> = (0..5).map(|_| Script::new(&[Step::Pass])).collect();
        let (state, _running) = start(&toml, scripts.clone());
        until(&state, |s| s.checks.iter().all(|c| c.consecutive_successes >= 2)).await;
        // Five checks: each a fifth of its period after the one before.
        for (i, script) in scripts[..4].iter().enumerate() {
            let phase = 400 * i as u64;
            assert_eq!(script.starts()[..2], [phase, phase + 2000], "check {i}");
        }
        // The initial delay is kept whole; the phase comes after it.
        assert_eq!(scripts[4].starts()[..2], [3000 + 8000, 3000 + 18000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_ignores_its_timeout_is_failed_by_the_engine() {
        let script = Script::new(&[Step::Hang]);
        let (state, _running) = start(READY, vec![script.clone()]);
        until(&state, |s| s.checks[0].last.is_some()).await;
        let snapshot = state.borrow();
        let last = snapshot.checks[0].last.as_ref().unwrap();
        assert_eq!(last.outcome.verdict, Verdict::Failure);
        assert_eq!(last.duration, Duration::from_millis(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_the_engine_stops_waiting_for_is_aborted_before_the_next_begins() {
        let script = Script::new(&[Step::Hang, Step::Pass]);
        let (state, _running) = start(READY, vec![script.clone()]);
        tokio::time::sleep_until(script.origin + Duration::from_millis(500)).await;
        assert_eq!(
            script.in_flight.load(Ordering::SeqCst),
            1,
            "the slow run is under way"
        );
        // A new app container: the worker drops the run it was waiting for.
        state.new_container();
        until(&state, |s| s.checks[0].health == Health::Healthy).await;
        assert_eq!(script.starts(), [0, 500]);
        assert_eq!(
            script.most_in_flight.load(Ordering::SeqCst),
            1,
            "the slow run never overlaps the next"
        );
        assert_eq!(
            script.in_flight.load(Ordering::SeqCst),
            0,
            "the slow run was aborted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_every_worker() {
        let script = Script::new(&[Step::Pass]);
        let cancel = CancellationToken::new();
        let (state, _running) = start_until(READY, vec![script.clone()], &cancel);
        until(&state, |s| s.checks[0].last.is_some()).await;
        cancel.cancel();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(script.runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_workers_stop_with_their_owner() {
        let script = Script::new(&[Step::Pass]);
        let (state, running) = start(READY, vec![script.clone()]);
        until(&state, |s| s.checks[0].last.is_some()).await;
        drop(running);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(script.runs.load(Ordering::SeqCst), 1);
    }

    fn tcp(name: &str, extra: &str) -> String {
        format!(
            "[[check]]\nname = \"{name}\"\nprobes = [\"liveness\"]\ntcp = {{ port = 1 }}\nperiod = \"1s\"\n{extra}"
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_a_kept_task_replaces_a_changed_one_and_stops_a_removed_one() {
        let old = [tcp("a", ""), tcp("b", ""), tcp("c", "")].concat();
        let (a, b, c) = (
            Script::new(&[Step::Pass]),
            Script::new(&[Step::Pass]),
            Script::new(&[Step::Pass]),
        );
        let (state, mut running) = start(&old, vec![a.clone(), b.clone(), c.clone()]);
        until(&state, |s| s.checks.iter().all(|c| c.last.is_some())).await;
        let new = configs(&[tcp("a", ""), tcp("b", "timeout = \"500ms\"\n"), tcp("d", "")].concat());
        let (a2, b2, d) = (
            Script::new(&[Step::Pass]),
            Script::new(&[Step::Pass]),
            Script::new(&[Step::Pass]),
        );
        let slots = [
            Slot::Keep(0),
            Slot::Change {
                at: 1,
                config: &new[1],
                same_target: true,
            },
            Slot::Start(&new[2]),
        ];
        let engine = Engine::from_checks(
            new.iter()
                .cloned()
                .zip([a2.clone(), b2.clone(), d.clone()])
                .collect(),
        );
        running.reload(&slots, engine).await;
        let (a_runs, b_runs, c_runs) = (a.starts().len(), b.starts().len(), c.starts().len());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            a.starts().len() >= a_runs + 9,
            "the kept check runs on in its task"
        );
        assert!(a2.starts().is_empty(), "and is not started again");
        assert_eq!(b.starts().len(), b_runs, "the changed check's old task stopped");
        assert!(b2.starts().len() >= 9, "its new one runs");
        assert_eq!(c.starts().len(), c_runs, "the removed check's task stopped");
        assert!(d.starts().len() >= 9, "the added check runs");
        let s = state.borrow();
        let names: Vec<&str> = s.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert!(
            s.checks.iter().all(|c| c.consecutive_successes >= 9),
            "each task publishes to its own check"
        );
    }
}
