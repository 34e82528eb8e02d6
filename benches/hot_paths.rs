//! Micro-benchmarks of what a kubelet probe and a check run cost inside the
//! process: rendering a probe's answer from the snapshot, taking the
//! snapshot, and recording a run into it. `bench/run` measures the whole
//! process; these say where its time goes.
//!
//! Run with `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use healthproxy::check::Outcome;
use healthproxy::config::{Config, ProbeKind};
use healthproxy::server::{Options, Probe, Scope};
use healthproxy::state::{Place, State};

/// A state of `n` readiness and liveness tcp checks, each run once
/// successfully, so every probe passes.
fn state(n: usize) -> State {
    let mut toml = String::new();
    for i in 0..n {
        toml.push_str(&format!(
            "[[check]]\nname = \"check-{i}\"\nprobes = [\"liveness\", \"readiness\"]\ntcp.port = 8080\n"
        ));
    }
    let config = Config::from_toml_str(&toml, "bench", &|_: &str| None).expect("a valid config");
    let state = State::new(&config.checks);
    for i in 0..n {
        state.record(
            &Place::new(i, i),
            0,
            Outcome::success("ok"),
            Duration::from_micros(60),
        );
    }
    state
}

/// The answer to `/readyz` and its variants, from a borrowed snapshot, as
/// the handler builds it.
fn render(c: &mut Criterion) {
    for n in [1, 10, 100] {
        let state = state(n);
        let mut group = c.benchmark_group(format!("render/{n}-checks"));
        group.bench_function("readyz", |b| {
            b.iter(|| {
                let options = Options::parse(black_box(None));
                let snapshot = state.borrow();
                let probe = Probe::evaluate(&snapshot, ProbeKind::Readiness, Scope::All, &options);
                black_box((probe.ok(), probe.text(options.verbose)))
            })
        });
        group.bench_function("readyz?verbose", |b| {
            b.iter(|| {
                let options = Options::parse(black_box(Some("verbose")));
                let snapshot = state.borrow();
                let probe = Probe::evaluate(&snapshot, ProbeKind::Readiness, Scope::All, &options);
                black_box(probe.text(options.verbose))
            })
        });
        group.bench_function("readyz?format=json", |b| {
            b.iter(|| {
                let options = Options::parse(black_box(Some("format=json")));
                let snapshot = state.borrow();
                let probe = Probe::evaluate(&snapshot, ProbeKind::Readiness, Scope::All, &options);
                black_box(probe.json().to_string())
            })
        });
        group.bench_function("readyz health+json", |b| {
            b.iter(|| {
                let options = Options::parse(None);
                let snapshot = state.borrow();
                let probe = Probe::evaluate(&snapshot, ProbeKind::Readiness, Scope::All, &options);
                black_box(probe.health_json().to_string())
            })
        });
        group.finish();
    }
}

/// Taking and releasing the snapshot: what every request and every check
/// run pays to read the shared state.
fn snapshot(c: &mut Criterion) {
    let state = state(10);
    c.bench_function("snapshot/borrow", |b| {
        b.iter(|| black_box(state.borrow().started))
    });
}

/// Recording one run: the write every check run makes, here of the last
/// check, which a search from the start would find last.
fn record(c: &mut Criterion) {
    for n in [1, 100] {
        let state = state(n);
        let place = Place::new(n - 1, n - 1);
        c.bench_function(&format!("state/record/{n}-checks"), |b| {
            b.iter(|| {
                state.record(
                    black_box(&place),
                    0,
                    Outcome::success("ok"),
                    Duration::from_micros(60),
                )
            })
        });
    }
}

criterion_group! {
    name = benches;
    // Short runs: these guide work, they are not the harness's figures.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = render, snapshot, record
}
criterion_main!(benches);
