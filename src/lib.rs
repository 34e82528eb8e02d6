//! healthproxy: a Kubernetes sidecar that runs an application's health
//! checks locally with the kubelet's semantics and serves `/livez`,
//! `/readyz` and `/startupz` for the kubelet's httpGet probes.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed settings, and lints.
//! - [`App`] (`app`): a config built into a ready application, for `run`,
//!   `check-config` and a reload alike, and the file it came from.
//! - [`check`]: one run of one check (http, tcp, exec, grpc, file, postgres), and
//!   the reason of a failure.
//! - [`engine`]: one task per check: timers, timeouts, thresholds; it
//!   owns the tasks, which a reload replaces through it.
//! - [`state`]: the shared snapshot, the one owner of every check's state
//!   and of the drain's phase, and each check's run counters.
//! - [`server`]: the HTTP endpoints, their route table and limits, and the
//!   gRPC health service.
//! - [`metrics`]: the Prometheus registry; gauges read from the snapshot
//!   at scrape time.
//! - [`lifecycle`]: the drain, the lifecycle token, following the app's
//!   sockets, and when the process exits.
//! - [`signals`]: SIGTERM and SIGINT as a channel, SIGHUP as another;
//!   other signals sent by habit logged and ignored.
//! - [`files`]: reading the files the sidecar is given, bounded.
//! - [`text`]: how things are worded on one line (check messages, I/O
//!   errors, error chains, durations); a leaf every module may use.
//! - [`reload`]: the config read again while running.
//! - [`log`]: the log filter and the JSON lines.
//! - [`version`]: the version, git revision and rustc of the build.
//! - [`inject`]: `inject`/`uninject`: Kubernetes manifests in, the same
//!   workloads with the sidecar out, and back.
//! - [`webhook`]: the admission webhook that applies `inject` to pods
//!   as the API server creates them.
//! - [`cli`]: the command line and its subcommands.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
// `pub` only for what the binary, tests, benches and fuzz targets use from
// outside the crate; everything else is `pub(crate)` or private.
#![warn(unreachable_pub)]
// The docs are the engineers' map of the crate, private items included:
// read them with `cargo doc --document-private-items`, where these links
// resolve.
#![allow(rustdoc::private_intra_doc_links)]

mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod engine;
mod files;
#[cfg(feature = "inject")]
pub mod inject;
pub mod lifecycle;
pub mod log;
pub mod metrics;
mod reload;
pub mod server;
pub mod signals;
pub mod state;
mod text;
// Where the checks of other modules name it; new code names `text`.
pub(crate) use text::whole_ms;
pub mod version;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::app::{App, BuildError, LoadError};

use crate::lifecycle::{Drain, Exit, Lifecycle};
use crate::state::State;

/// Binds the listener, starts every check and serves until the lifecycle
/// says to stop (`lifecycle::supervise`), then stops the checks.
/// `signals` delivers SIGTERM and SIGINT, `hangups` SIGHUP (a reload);
/// tests feed them themselves. An app read from a file reloads it (see
/// [`reload`]); `log` says who owns the log level.
pub async fn run(
    app: App,
    signals: mpsc::UnboundedReceiver<i32>,
    hangups: Option<mpsc::UnboundedReceiver<()>>,
    log: reload::LogControl,
) -> anyhow::Result<Exit> {
    Ok(Bound::bind(app)?.spawn(signals, hangups, log).await)
}

/// An app with its listeners bound: all that can fail at the start has
/// been tried, and what follows only runs (linkerd's `Config::build`, then
/// `App::spawn`).
struct Bound {
    app: App,
    listener: tokio::net::TcpListener,
    listen: std::net::SocketAddr,
    grpc: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
}

impl Bound {
    /// Binds the HTTP listener and the gRPC one, if configured.
    fn bind(app: App) -> anyhow::Result<Bound> {
        let listen = app.config.listen;
        let listener = server::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let grpc = match app.config.grpc_listen {
            Some(addr) => {
                let grpc =
                    server::bind(addr).with_context(|| format!("cannot listen on {addr} (grpc_listen)"))?;
                let local = grpc.local_addr()?;
                Some((grpc, local))
            }
            None => None,
        };
        Ok(Bound {
            listen: listener.local_addr()?,
            listener,
            grpc,
            app,
        })
    }

    /// Starts every check and task and serves until the lifecycle says to
    /// stop, then stops the checks and says how the process exits.
    async fn spawn(
        self,
        signals: mpsc::UnboundedReceiver<i32>,
        hangups: Option<mpsc::UnboundedReceiver<()>>,
        log: reload::LogControl,
    ) -> Exit {
        let Bound {
            app:
                App {
                    config,
                    engine,
                    token,
                    source,
                },
            listener,
            listen,
            grpc,
        } = self;
        if let Err(e) = check::become_subreaper() {
            tracing::warn!("cannot become a child subreaper, orphaned check processes may linger: {e}");
        }
        warn_missing_programs(&config);
        let state = State::new(&config.checks);
        let lifecycle = Lifecycle::new(Drain::new(config.drain.clone(), state.clone()), token);
        let tasks = Tasks::new(state.clone());
        tasks.spawn_until(check::reap_orphans());
        // `_running`, when held here, is held to the end: the checks run as
        // long as it is.
        let Checks { reloads, _running } = tasks.checks(engine, &config, source, hangups, log);
        let presence = tasks.follow_app(&config, &lifecycle);
        let grpc_listen = grpc.map(|(grpc, addr)| {
            tasks.grpc(grpc);
            addr
        });
        tracing::info!(
            listen = %listen,
            grpc_listen = grpc_listen.map(tracing::field::display),
            checks = config.checks.len(),
            version = version::VERSION,
            revision = version::REVISION,
            "healthproxy serving"
        );
        lifecycle.describe_guard();
        let cap = connection_cap(&config);
        let endpoints = server::endpoints(
            state,
            lifecycle.clone(),
            metrics::Metrics::new(),
            reloads,
            config.server.request_timeout,
        );
        let shutdown = supervise(&lifecycle, presence, signals);
        let exit = server::serve(listener, endpoints, config.server, cap, shutdown).await;
        tasks.stop().await;
        tracing::info!(exit_code = exit.code(), "stopped");
        exit
    }
}

/// The exit the lifecycle decides (`lifecycle::supervise`), and the grace
/// the open connections get: none after a second signal, which means now.
async fn supervise(
    lifecycle: &Lifecycle,
    presence: Option<tokio::sync::watch::Receiver<lifecycle::app::Presence>>,
    signals: mpsc::UnboundedReceiver<i32>,
) -> (Exit, Duration) {
    let exit = lifecycle::supervise(lifecycle, presence, signals).await;
    let grace = match exit {
        Exit::Clean => server::SHUTDOWN_GRACE,
        Exit::Forced(_) => Duration::ZERO,
    };
    (exit, grace)
}

/// Everything that runs beside the HTTP listener, on one tracker until one
/// cancellation: the checks, the reloader, the app's sockets followed, the
/// gRPC service, the reaper of orphaned check processes.
struct Tasks {
    state: State,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The checks' tasks and, for a config read from a file, the reloader
/// that replaces them.
struct Checks {
    /// Asks the reloader for a reload.
    reloads: Option<reload::Reloads>,
    /// The checks' tasks when no reloader holds them: they stop when this
    /// is dropped.
    _running: Option<engine::Running>,
}

impl Tasks {
    fn new(state: State) -> Tasks {
        Tasks {
            state,
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Starts every check of `engine`, and the reloader when the config
    /// was read from `source` (SIGHUP comes from `hangups`; `log` says who
    /// owns the log level).
    fn checks(
        &self,
        engine: engine::Engine,
        config: &config::Config,
        source: Option<app::Source>,
        hangups: Option<mpsc::UnboundedReceiver<()>>,
        log: reload::LogControl,
    ) -> Checks {
        let running = engine.spawn(&self.state, &self.tracker, &self.cancel);
        match source {
            Some(source) => {
                let reloader = reload::Reloader::new(
                    source,
                    log,
                    config.clone(),
                    self.state.clone(),
                    running,
                    self.tracker.clone(),
                    self.cancel.clone(),
                );
                Checks {
                    reloads: Some(reloader.spawn(hangups)),
                    _running: None,
                }
            }
            None => Checks {
                reloads: None,
                _running: Some(running),
            },
        }
    }

    /// With `drain.ports`, follows the app's sockets, which tell when it
    /// stops and when a new container of it starts; returns its presence.
    fn follow_app(
        &self,
        config: &config::Config,
        lifecycle: &Lifecycle,
    ) -> Option<tokio::sync::watch::Receiver<lifecycle::app::Presence>> {
        let presence =
            (!config.drain.ports.is_empty()).then(|| lifecycle::app::watch(&config.drain.ports))?;
        let follow = lifecycle::follow_app_restarts(lifecycle.clone(), self.state.clone(), presence.clone());
        self.spawn_until(follow);
        Some(presence)
    }

    /// Serves the gRPC health service on `listener`.
    fn grpc(&self, listener: tokio::net::TcpListener) {
        self.tracker.spawn(server::grpc::serve(
            listener,
            self.state.clone(),
            self.cancel.clone(),
        ));
    }

    /// Runs `task` until it ends or the tasks stop.
    fn spawn_until(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = cancel.cancelled() => {}
            }
        });
    }

    /// Stops the checks and every task, then the processes the checks left
    /// behind.
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        check::kill_orphans();
    }
}

/// Warns of each exec check whose program is not there: its runs will be
/// Unknown until it is.
fn warn_missing_programs(config: &config::Config) {
    for c in &config.checks {
        if let config::CheckKind::Exec(spec) = &c.kind
            && let Some(missing) = config::missing_program(spec)
        {
            tracing::warn!(check = %c.name, "{missing}: every run will be Unknown and move no threshold");
        }
    }
}

/// `server.max_connections`, lowered to what the open files limit allows
/// beside the checks' own descriptors (raised first as far as it goes).
fn connection_cap(config: &config::Config) -> usize {
    let fd_limit = server::raise_fd_limit().unwrap_or_else(|e| {
        tracing::warn!("cannot raise the open files limit: {e}");
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft)
    });
    let check_fds = config
        .checks
        .iter()
        .map(|c| check::fds_while_running(&c.kind))
        .sum();
    let cap = server::connection_cap(config.server.max_connections, check_fds, fd_limit);
    if cap < config.server.max_connections {
        tracing::warn!(
            max_connections = config.server.max_connections,
            open_files_limit = fd_limit,
            cap,
            "server.max_connections lowered to what the open files limit allows beside the checks"
        );
    }
    cap
}
