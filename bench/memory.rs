//! Where a check's memory goes: builds the config, the engine, the shared
//! state and the metrics for N tcp checks, one after the other, and prints
//! how much anonymous memory (`RssAnon`) each step added. `bench/run` uses
//! it to explain the idle RSS figures.
//!
//! Run with `cargo run --release --example bench-memory -- 1000`.

use std::process::ExitCode;

use healthproxy::config::Config;
use healthproxy::engine::Engine;
use healthproxy::metrics::Metrics;
use healthproxy::state::State;

fn main() -> ExitCode {
    let Some(n) = std::env::args().nth(1).and_then(|n| n.parse::<usize>().ok()) else {
        eprintln!("usage: bench-memory N");
        return ExitCode::from(2);
    };
    let toml: String = (0..n)
        .map(|i| {
            format!("[[check]]\nname = \"c-{i}\"\nprobes = [\"liveness\", \"readiness\"]\ntcp.port = 1\n")
        })
        .collect();
    let mut last = rss_anon_kib();
    let mut step = |name: &str| {
        let now = rss_anon_kib();
        println!("{name}\t{}", now.saturating_sub(last));
        last = now;
    };
    let config = Config::from_toml_str(&toml, "bench", &|_: &str| None).expect("a valid config");
    drop(toml);
    step("config");
    let engine = Engine::new(&config.checks).expect("tcp checks prepare");
    step("engine");
    let state = State::new(&config.checks);
    step("state");
    let metrics = Metrics::new();
    step("metrics");
    std::hint::black_box((engine, state, metrics));
    ExitCode::SUCCESS
}

/// This process's anonymous resident memory, in KiB.
fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
