//! Reload: the config file read again while running, on SIGHUP, on
//! `POST /reload` and, with `reload.watch`, when the file's content
//! changes.
//!
//! The file goes through the same setup step as at start ([`App::load`]):
//! a config that `check-config` would reject is rejected whole, its errors
//! logged as `check-config` prints them, and the running config stays. A
//! good one is applied to the checks: an unchanged check keeps its state,
//! counters and schedule; a changed one starts again from its initial
//! state; a removed one disappears from the endpoints and from `/metrics`.
//! The log level follows the file's `log_level` unless `--log-level` set
//! it. Settings that are bound at start (`listen`, `grpc_listen`,
//! `[reload]`, `[drain]`, `[server]`) are reported and keep their running
//! values: a reload never touches a drain.
//!
//! The watch follows the path, not the inode: a mounted ConfigMap is
//! updated by swapping a `..data` symlink, so the file is read through its
//! path every `reload.interval` and its content compared with the one
//! applied; a new content is applied once it has held for one interval. An
//! inotify watch (the notify crate) would have to watch the directory that
//! holds the symlinks and tell their swap from other events; reading one
//! small file every 2 s costs microseconds (BENCHMARKS.md).

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::App;
use crate::config::Config;
use crate::log::{LogLevel, Logging};
use crate::state::{Slot, State};

/// Where a running config came from, to be read again.
#[derive(Debug, Clone)]
pub struct Source {
    /// The config file's path, as given.
    pub path: PathBuf,
    /// `--listen`, which replaces the file's `listen`.
    pub listen: Option<SocketAddr>,
    /// The [`fingerprint`] of the text the running config was read from.
    pub content: u64,
}

/// A fingerprint of a file's content, to notice a change.
pub fn fingerprint(content: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    content.hash(&mut hasher);
    hasher.finish()
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Hangup,
    /// `POST /reload`.
    Request,
    /// The file's content changed.
    FileChanged,
}

impl Trigger {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::Request => "/reload",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// A request to the reloader, with where to send its outcome.
type Request = (Trigger, Option<oneshot::Sender<Result<String, String>>>);

/// Asks the reloader for a reload; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloads {
    tx: mpsc::Sender<Request>,
}

impl Reloads {
    /// Reloads now and returns what changed, or the errors that rejected
    /// the file (as `check-config` prints them).
    pub async fn reload(&self, trigger: Trigger) -> Result<String, String> {
        let (reply, outcome) = oneshot::channel();
        if self.tx.send((trigger, Some(reply))).await.is_err() {
            return Err("the sidecar is stopping".into());
        }
        outcome
            .await
            .unwrap_or_else(|_| Err("the sidecar is stopping".into()))
    }

    /// Asks for a reload without waiting for it.
    pub fn request(&self, trigger: Trigger) {
        // A full queue already holds a reload that will read the file.
        let _ = self.tx.try_send((trigger, None));
    }
}

/// The log level's owners: the installed logger and `--log-level`, which
/// wins over the file.
#[derive(Debug, Clone, Default)]
pub struct LogControl {
    /// The installed logger, if any (not in tests that run in-process).
    pub logging: Option<Logging>,
    /// `--log-level` or `HEALTHPROXY_LOG_LEVEL`.
    pub flag: Option<LogLevel>,
}

/// Applies reloads, one at a time: owns the running config and the tasks of
/// its checks.
pub struct Reloader {
    source: Source,
    log: LogControl,
    config: Config,
    /// The snapshot id of each check of `config`, in order.
    ids: Vec<usize>,
    /// The task of each running check, by id.
    tasks: HashMap<usize, CancellationToken>,
    state: State,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Reloader {
    /// A reloader of `config`, read from `source`, whose checks run in
    /// `state` as the tasks `tasks` (in the order of the config) on
    /// `tracker`; new tasks stop when `cancel` fires.
    pub fn new(
        source: Source,
        log: LogControl,
        config: Config,
        state: State,
        tasks: Vec<CancellationToken>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Reloader {
        let ids: Vec<usize> = state.borrow().checks.iter().map(|c| c.id).collect();
        Reloader {
            source,
            log,
            config,
            tasks: ids.iter().copied().zip(tasks).collect(),
            ids,
            state,
            tracker,
            cancel,
        }
    }

    /// Starts serving reloads on `tracker` until `cancel` fires: those
    /// asked through the returned handle, each SIGHUP from `hangups`, and a
    /// change of the file when the config watches it.
    pub fn spawn(self, hangups: Option<mpsc::UnboundedReceiver<()>>) -> Reloads {
        let (tx, rx) = mpsc::channel(1);
        let reloads = Reloads { tx };
        if let Some(mut hangups) = hangups {
            let reloads = reloads.clone();
            let cancel = self.cancel.clone();
            self.tracker.spawn(async move {
                loop {
                    tokio::select! {
                        Some(()) = hangups.recv() => reloads.request(Trigger::Hangup),
                        () = cancel.cancelled() => return,
                        else => return,
                    }
                }
            });
        }
        if self.config.reload.watch {
            let reloads = reloads.clone();
            let cancel = self.cancel.clone();
            let (path, content) = (self.source.path.clone(), self.source.content);
            let interval = self.config.reload.interval;
            self.tracker.spawn(async move {
                tokio::select! {
                    () = watch(path, content, interval, reloads) => {}
                    () = cancel.cancelled() => {}
                }
            });
        }
        let tracker = self.tracker.clone();
        let cancel = self.cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = self.serve(rx) => {}
                () = cancel.cancelled() => {}
            }
        });
        reloads
    }

    async fn serve(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some((trigger, reply)) = requests.recv().await {
            // Reading the file may block on a slow volume: off the runtime's
            // thread. The checks are applied here.
            let (path, listen) = (self.source.path.clone(), self.source.listen);
            let loaded = tokio::task::spawn_blocking(move || App::load(&path, listen))
                .await
                .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
            let outcome = self.apply(trigger, loaded);
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Applies a freshly loaded app, or reports why it was rejected.
    fn apply(&mut self, trigger: Trigger, loaded: Result<App, String>) -> Result<String, String> {
        let trigger_name = trigger.as_str();
        let app = match loaded {
            Ok(app) => app,
            Err(errors) => {
                for line in errors.lines() {
                    tracing::error!(trigger = trigger_name, "{line}");
                }
                tracing::error!(
                    trigger = trigger_name,
                    "config reload rejected: the running config stays"
                );
                self.state.reload_rejected();
                return Err(errors);
            }
        };
        let App {
            config: mut new,
            engine,
            ..
        } = app;
        let restart = restart_only_changes(&self.config, &new);
        for key in &restart {
            tracing::warn!(
                trigger = trigger_name,
                key = *key,
                "{key} changed: it takes effect at the next restart, the running value stays"
            );
        }
        (new.listen, new.grpc_listen, new.reload, new.drain, new.server) = (
            self.config.listen,
            self.config.grpc_listen,
            self.config.reload,
            self.config.drain.clone(),
            self.config.server,
        );

        // Each new check either is a running one, unchanged, or starts.
        let slots: Vec<Slot<'_>> = new
            .checks
            .iter()
            .map(|c| {
                self.config
                    .checks
                    .iter()
                    .position(|old| old.same_definition(c))
                    .map_or(Slot::Start(c), |at| Slot::Keep(self.ids[at]))
            })
            .collect();
        let kept: Vec<usize> = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Keep(id) => Some(*id),
                Slot::Start(_) => None,
            })
            .collect();
        let names = |pick: &dyn Fn(&&crate::config::CheckConfig) -> bool| -> Vec<String> {
            new.checks.iter().filter(pick).map(|c| c.name.clone()).collect()
        };
        let was = |name: &str| self.config.checks.iter().any(|c| c.name == name);
        let unchanged = names(&|c| self.config.checks.iter().any(|old| old.same_definition(c)));
        let changed = names(&|c| was(&c.name) && !unchanged.contains(&c.name));
        let added = names(&|c| !was(&c.name));
        let removed: Vec<String> = self
            .config
            .checks
            .iter()
            .filter(|old| !new.checks.iter().any(|c| c.name == old.name))
            .map(|c| c.name.clone())
            .collect();

        let ids = self.state.reload(&slots);
        for id in &self.ids {
            if !kept.contains(id)
                && let Some(task) = self.tasks.remove(id)
            {
                task.cancel();
            }
        }
        let started: Vec<Option<usize>> = slots
            .iter()
            .zip(&ids)
            .map(|(slot, id)| matches!(slot, Slot::Start(_)).then_some(*id))
            .collect();
        let tokens = engine.spawn_ids(&started, &self.state, &self.tracker, &self.cancel);
        for (id, token) in started.iter().flatten().zip(tokens) {
            self.tasks.insert(*id, token);
        }
        self.ids = ids;

        if self.log.flag.is_none() && new.log_level != self.config.log_level {
            let level = new.log_level.clone().unwrap_or_default();
            if let Some(logging) = &self.log.logging {
                logging.set_level(&level);
            }
            tracing::info!(trigger = trigger_name, log_level = %level, "log level changed");
        }
        tracing::info!(
            trigger = trigger_name,
            checks = new.checks.len(),
            unchanged = ?unchanged,
            changed = ?changed,
            added = ?added,
            removed = ?removed,
            "config reloaded"
        );
        self.config = new;
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let mut summary = format!(
            "reloaded: {} checks; unchanged: {}; changed: {}; added: {}; removed: {}\n",
            self.config.checks.len(),
            list(&unchanged),
            list(&changed),
            list(&added),
            list(&removed)
        );
        for key in restart {
            summary.push_str(&format!("{key} changed: it takes effect at the next restart\n"));
        }
        Ok(summary)
    }
}

/// The settings bound at start that differ between `running` and `new`.
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("listen", running.listen != new.listen),
        ("grpc_listen", running.grpc_listen != new.grpc_listen),
        ("reload", running.reload != new.reload),
        ("drain", running.drain != new.drain),
        ("server", running.server != new.server),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Reads the file at `path` every `interval` and asks for a reload when
/// its content differs from the one applied, at first `content` (the one
/// the running config was read from), and has stayed the same for one
/// interval: a file caught half written (an editor's truncate, then write)
/// is not applied.
async fn watch(path: PathBuf, content: u64, interval: std::time::Duration, reloads: Reloads) {
    let read = |path: PathBuf| async move {
        tokio::task::spawn_blocking(move || std::fs::read(path).ok().map(|c| fingerprint(&c)))
            .await
            .ok()
            .flatten()
    };
    let mut applied = content;
    let mut pending = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // A file that cannot be read now is looked at again next time.
        let Some(now) = read(path.clone()).await else {
            continue;
        };
        if now == applied {
            pending = None;
        } else if pending == Some(now) {
            applied = now;
            pending = None;
            reloads.reload(Trigger::FileChanged).await.ok();
        } else {
            pending = Some(now);
        }
    }
}
