//! Property tests of the threshold state machine (`CheckStatus::observe`)
//! and of the startup latch (`State::record`), against a small reference
//! model of the kubelet's probe worker written from kubelet-semantics
//! §3.3–3.6, not from `src/state.rs`. Configs go through
//! `Config::from_toml_str`, so only public API is used.
//!
//! On a failure proptest prints the shrunk case and saves its seed in
//! `tests/it/proptest-regressions/thresholds.txt`: commit that file, so the
//! case is tried first from then on.

use std::time::{Duration, SystemTime};

use healthproxy::check::{Outcome, Reason, Verdict};
use healthproxy::config::{Config, ProbeKind};
use healthproxy::state::{CheckStatus, Health, Place, State};
use proptest::prelude::*;

/// A result the kubelet stores once a threshold is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Success,
    Failure,
}

/// The kubelet worker of one check (worker.go `doProbe`), reduced to what
/// the sidecar keeps: no restart, so liveness never goes on hold.
#[derive(Debug)]
struct Worker {
    success_threshold: u32,
    failure_threshold: u32,
    /// `lastResult`: the last result that was counted.
    last: Option<Stored>,
    /// `resultRun`: how many times in a row `last` came.
    run: u32,
    /// The stored result; `None` is the initial value, which each probe
    /// kind reads differently (§3.3).
    stored: Option<Stored>,
    /// The startup worker stops once it has stored a success (§3.4).
    started: bool,
}

impl Worker {
    fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Worker {
            success_threshold,
            failure_threshold,
            last: None,
            run: 0,
            stored: None,
            started: false,
        }
    }

    /// One probe result; returns the newly stored result when it changed.
    fn observe(&mut self, verdict: Verdict) -> Option<Stored> {
        let result = match verdict {
            // "Prober error, throw away the result." (§3.6)
            Verdict::Unknown => return None,
            // Warning is mapped to Success (§3.6).
            Verdict::Success | Verdict::Warning => Stored::Success,
            Verdict::Failure => Stored::Failure,
        };
        if self.last == Some(result) {
            self.run += 1;
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            Stored::Success => self.success_threshold,
            Stored::Failure => self.failure_threshold,
        };
        if self.run < threshold {
            return None;
        }
        let changed = self.stored != Some(result);
        self.stored = Some(result);
        if result == Stored::Success {
            self.started = true;
        }
        changed.then_some(result)
    }

    fn passes(&self, kind: ProbeKind) -> bool {
        match kind {
            // Initial value Failure.
            ProbeKind::Readiness => self.stored == Some(Stored::Success),
            // Initial value Success.
            ProbeKind::Liveness => self.stored != Some(Stored::Failure),
            // Initial value Unknown; latched once started.
            ProbeKind::Startup => self.started,
        }
    }

    fn consecutive(&self, result: Stored) -> u32 {
        if self.last == Some(result) { self.run } else { 0 }
    }
}

/// The sidecar's name for a stored result.
fn health(stored: Option<Stored>) -> Health {
    match stored {
        None => Health::Initial,
        Some(Stored::Success) => Health::Healthy,
        Some(Stored::Failure) => Health::Failed,
    }
}

/// One check as written in the file; `None` thresholds are left out so
/// the defaults (success 1, failure 3) are exercised too.
#[derive(Debug, Clone)]
struct CheckSpec {
    probes: Vec<ProbeKind>,
    success_threshold: Option<u32>,
    failure_threshold: Option<u32>,
}

impl CheckSpec {
    fn toml(&self, name: &str) -> String {
        let probes: Vec<String> = self.probes.iter().map(|k| format!("{:?}", k.as_str())).collect();
        let mut out = format!(
            "[[check]]\nname = {name:?}\nprobes = [{}]\ntcp = {{ port = 1 }}\n",
            probes.join(", ")
        );
        if let Some(n) = self.success_threshold {
            out += &format!("success_threshold = {n}\n");
        }
        if let Some(n) = self.failure_threshold {
            out += &format!("failure_threshold = {n}\n");
        }
        out
    }

    fn worker(&self) -> Worker {
        Worker::new(
            self.success_threshold.unwrap_or(1),
            self.failure_threshold.unwrap_or(3),
        )
    }
}

fn config(checks: &[CheckSpec]) -> Config {
    let text: String = checks
        .iter()
        .enumerate()
        .map(|(i, c)| c.toml(&format!("c{i}")))
        .collect();
    Config::from_toml_str(&text, "thresholds", &|_: &str| None).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

/// A non-empty set of probe kinds, in file order.
fn probes() -> impl Strategy<Value = Vec<ProbeKind>> {
    (1u8..8).prop_map(|mask| {
        ProbeKind::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, k)| k)
            .collect()
    })
}

/// A check with thresholds 1..=5; success_threshold is 1 for liveness and
/// startup checks, as Kubernetes requires.
fn check_spec() -> impl Strategy<Value = CheckSpec> {
    probes().prop_flat_map(|probes| {
        let success = if probes.iter().any(|k| *k != ProbeKind::Readiness) {
            prop::option::of(Just(1u32)).boxed()
        } else {
            prop::option::of(1u32..=5).boxed()
        };
        (Just(probes), success, prop::option::of(1u32..=5)).prop_map(|(probes, s, f)| CheckSpec {
            probes,
            success_threshold: s,
            failure_threshold: f,
        })
    })
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Success),
        Just(Verdict::Warning),
        Just(Verdict::Failure),
        Just(Verdict::Unknown),
    ]
}

/// Results in bursts of one verdict, so runs long enough to reach every
/// threshold are common, and Unknown bursts fall inside runs.
fn results() -> impl Strategy<Value = Vec<Verdict>> {
    prop::collection::vec((verdict(), 1usize..=6), 0..=12).prop_map(|bursts| {
        bursts
            .into_iter()
            .flat_map(|(v, n)| std::iter::repeat_n(v, n))
            .collect()
    })
}

fn outcome(verdict: Verdict) -> Outcome {
    match verdict {
        Verdict::Success => Outcome::success("ok"),
        Verdict::Warning => Outcome::warning("redirected"),
        Verdict::Failure => Outcome::failure(Reason::Refused, "refused"),
        Verdict::Unknown => Outcome::unknown("cannot run"),
    }
}

/// Asserts that `status` reads as `model` does.
fn assert_same(status: &CheckStatus, model: &Worker, step: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(status.health, health(model.stored), "health after step {}", step);
    for kind in ProbeKind::ALL {
        prop_assert_eq!(
            status.passes(kind),
            model.passes(kind),
            "passes({}) after step {}",
            kind,
            step
        );
    }
    prop_assert_eq!(
        status.consecutive_successes,
        model.consecutive(Stored::Success),
        "consecutive successes after step {}",
        step
    );
    prop_assert_eq!(
        status.consecutive_failures,
        model.consecutive(Stored::Failure),
        "consecutive failures after step {}",
        step
    );
    prop_assert_eq!(
        status.ever_healthy,
        model.started,
        "ever_healthy after step {}",
        step
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After every result the check reads as the kubelet's worker would,
    /// and `observe` reports a transition exactly when the state changes.
    #[test]
    fn observe_follows_the_kubelet_worker(spec in check_spec(), results in results()) {
        let config = config(std::slice::from_ref(&spec));
        let mut status = CheckStatus::new(0, &config.checks[0]);
        let mut model = spec.worker();
        assert_same(&status, &model, 0)?;
        let mut last_transition = None;
        for (i, verdict) in results.into_iter().enumerate() {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64 + 1);
            let got = status.observe(outcome(verdict), Duration::from_millis(3), at);
            let want = model.observe(verdict);
            prop_assert_eq!(got, want.map(|s| health(Some(s))), "transition at step {}", i + 1);
            if want.is_some() {
                last_transition = Some(at);
            }
            prop_assert_eq!(status.last_transition, last_transition, "last_transition at step {}", i + 1);
            let last = status.last.as_ref().map(|l| (l.outcome.verdict, l.at));
            prop_assert_eq!(last, Some((verdict, at)), "every run is kept as the last, step {}", i + 1);
            assert_same(&status, &model, i + 1)?;
        }
    }

    /// Across several checks, startup completes (once, and for good) at the
    /// first result after which every startup check has succeeded once.
    #[test]
    fn startup_latches_when_every_startup_check_has_succeeded(
        specs in prop::collection::vec(check_spec(), 1..=4),
        runs in prop::collection::vec((0usize..4, verdict()), 0..=60),
    ) {
        let config = config(&specs);
        let state = State::new(&config.checks);
        let mut models: Vec<Worker> = specs.iter().map(CheckSpec::worker).collect();
        let startup: Vec<bool> = specs.iter().map(|s| s.probes.contains(&ProbeKind::Startup)).collect();
        let mut started = !startup.contains(&true);
        prop_assert_eq!(state.borrow().started, started, "before any run");
        for (step, (index, verdict)) in runs.into_iter().enumerate() {
            let index = index % specs.len();
            let recorded = state
                .record(&Place::new(index, index), 0, outcome(verdict), Duration::ZERO)
                .expect("a run of the current container is kept");
            let want = models[index].observe(verdict);
            prop_assert_eq!(recorded.transition, want.map(|s| health(Some(s))), "transition at step {}", step);
            let now = started || models.iter().zip(&startup).all(|(m, s)| !s || m.started);
            prop_assert_eq!(recorded.started, now && !started, "completed startup at step {}", step);
            started = now;
            let snapshot = state.borrow();
            prop_assert_eq!(snapshot.started, started, "started after step {}", step);
            for (status, model) in snapshot.checks.iter().zip(&models) {
                assert_same(status, model, step)?;
            }
        }
    }

    /// The validator accepts every threshold in 1..=5, except a success
    /// threshold other than 1 on a liveness or startup check (§3.3's
    /// machine relies on it: those kinds recover after one success).
    #[test]
    fn success_threshold_above_one_needs_a_readiness_only_check(
        probes in probes(),
        success in 1u32..=5,
        failure in 1u32..=5,
    ) {
        let spec = CheckSpec { probes, success_threshold: Some(success), failure_threshold: Some(failure) };
        let text = spec.toml("c");
        let result = Config::from_toml_str(&text, "thresholds", &|_: &str| None);
        let restricted = spec.probes.iter().any(|k| *k != ProbeKind::Readiness);
        match result {
            Ok(config) => {
                prop_assert!(success == 1 || !restricted, "accepted:\n{}", text);
                let timing = config.checks[0].timing;
                prop_assert_eq!((timing.success_threshold, timing.failure_threshold), (success, failure));
            }
            Err(e) => {
                prop_assert!(success != 1 && restricted, "rejected:\n{}\n{}", text, e);
                prop_assert!(e.errors.iter().all(|e| e.key == "check[0].success_threshold"), "{}", e);
            }
        }
    }
}
