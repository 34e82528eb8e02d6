//! `healthproxy run`: load the config before anything else, then serve.

use std::process::ExitCode;

use super::RunArgs;
use crate::log::Logging;
use crate::reload::LogControl;

/// Bound on the runtime's blocking threads (file checks, name lookups).
const MAX_BLOCKING_THREADS: usize = 8;

/// How long the exit waits for blocking threads still under way.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) fn run(args: RunArgs) -> ExitCode {
    // Before anything that can take long (a large config): a SIGTERM from
    // here on waits for the drain instead of killing the process, and a
    // SIGHUP is a reload, not an exit.
    let signals = crate::signals::listen();
    let hangups = crate::signals::hangups();
    let app = match super::build(&args.config, args.listen) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let level = args
        .log_level
        .clone()
        .or(app.config().log_level.clone())
        .unwrap_or_default();
    let log = LogControl {
        logging: Some(Logging::init(args.log_format, &level)),
        flag: args.log_level,
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
    let code = match runtime.block_on(crate::run(app, signals, Some(hangups), log)) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    };
    // Dropping a runtime waits for every blocking thread, and one may be
    // parked in a read that never returns (a file check on a hung NFS
    // mount): the exit does not wait for it.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    code
}
