//! `healthproxy run`: load the config before anything else, then serve.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use super::{LogFormat, RunArgs};
use crate::lifecycle::Exit;

/// Bound on the runtime's blocking threads (file checks, name lookups).
const MAX_BLOCKING_THREADS: usize = 8;

pub(super) fn run(args: RunArgs) -> ExitCode {
    // Before anything that can take long (a large config): a SIGTERM from
    // here on waits for the drain instead of killing the process.
    let signals = crate::signals::listen();
    init_logging(args.log_format, &args.log_level);
    let app = match super::build(&args.config, args.listen) {
        Ok(app) => app,
        Err(code) => return code,
    };
    // One thread runs everything: a sidecar usually has a CPU limit of about
    // 100m, where a second worker buys nothing and costs memory and tail
    // latency (BENCHMARKS.md, "Runtime flavour"). File checks and name
    // lookups use blocking threads, bounded so that hung lookups cannot grow
    // the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::run(app, signals)) {
        Ok(Exit::Clean) => ExitCode::SUCCESS,
        Ok(Exit::Forced(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `level`: a level (`info`) or comma-separated
/// `target=level` directives (`info,healthproxy::engine=debug`). A filter
/// that is neither (span or field filters included) logs at `info`, with a
/// warning saying so. A `Targets` filter rather than `EnvFilter`: the
/// latter's span and field matching brings in a regex engine, 0.5 MiB of a
/// binary paid for in every pod (BENCHMARKS.md).
pub(super) fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    // `Targets` reads `target[span]` as a target name; refuse it instead.
    let parsed = (!level.contains(['[', ']', '{', '}']))
        .then(|| level.parse::<Targets>().ok())
        .flatten();
    let understood = parsed.is_some();
    let filter = parsed.unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
    }
    if !understood {
        tracing::warn!("--log-level {level:?} is not a level or a list of target=level; logging at info");
    }
}
