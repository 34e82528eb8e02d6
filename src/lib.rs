//! healthproxy: a Kubernetes sidecar that runs an application's health
//! checks locally with the kubelet's semantics and serves `/livez`,
//! `/readyz` and `/startupz` for the kubelet's httpGet probes.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed settings, and lints.
//! - [`check`]: one run of one check (http, tcp, exec, grpc, file).
//! - [`engine`]: one task per check: timers, timeouts, thresholds.
//! - [`state`]: the shared snapshot the endpoints read.
//! - [`server`]: the HTTP endpoints.
//! - [`cli`]: the command line and its subcommands.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod check;
pub mod config;
pub mod engine;
pub mod state;
pub mod server;
pub mod cli;
pub mod signals;

use std::future::Future;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::Engine;
use crate::state::State;

/// Binds the listener, starts every check and serves until `shutdown`
/// completes, then stops the checks.
pub async fn run(config: Config, engine: Engine, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = server::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let state = State::new(&config.checks);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    engine.spawn(&state, &tracker, &cancel);
    tracing::info!(
        listen = %listener.local_addr()?,
        checks = config.checks.len(),
        version = env!("CARGO_PKG_VERSION"),
        "healthproxy serving"
    );
    server::serve(listener, server::router(state), shutdown).await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("stopped");
    Ok(())
}
