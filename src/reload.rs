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
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, LoadError, Source, fingerprint};
use crate::config::{Config, ProbeKind};
use crate::engine::Running;
use crate::log::{LogLevel, Logging};
use crate::state::{Slot, State};

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Hangup,
    /// `POST /reload`.
    Request,
    /// The file's content changed.
    FileChanged,
}

impl Trigger {
    /// Its name in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::Request => "/reload",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// Why a reload was refused (the running config stays): its lines, one
/// per error, as `check-config` prints them; its text is the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub Vec<String>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Refused {}

impl From<LoadError> for Refused {
    fn from(e: LoadError) -> Refused {
        Refused(e.lines())
    }
}

impl Refused {
    fn one(line: String) -> Refused {
        Refused(vec![line])
    }
}

/// A request to the reloader, with where to send its outcome.
type Request = (Trigger, Option<oneshot::Sender<Result<String, Refused>>>);

/// Asks the reloader for a reload; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Reloads {
    tx: mpsc::Sender<Request>,
}

impl Reloads {
    /// Reloads now and returns what changed, or the errors that rejected
    /// the file (as `check-config` prints them).
    pub(crate) async fn reload(&self, trigger: Trigger) -> Result<String, Refused> {
        let stopping = || Refused::one("the sidecar is stopping".into());
        let (reply, outcome) = oneshot::channel();
        if self.tx.send((trigger, Some(reply))).await.is_err() {
            return Err(stopping());
        }
        outcome.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// Asks for a reload without waiting for it.
    pub(crate) fn request(&self, trigger: Trigger) {
        // A full queue already holds a reload that will read the file.
        let _ = self.tx.try_send((trigger, None));
    }
}

/// The log level's owners: the installed logger and `--log-level`, which
/// wins over the file.
#[derive(Debug, Clone, Default)]
pub struct LogControl {
    /// The installed logger, if any (not in tests that run in-process).
    pub(crate) logging: Option<Logging>,
    /// `--log-level` or `HEALTHPROXY_LOG_LEVEL`.
    pub(crate) flag: Option<LogLevel>,
}

/// Applies reloads, one at a time: owns the running config and, through
/// the engine's [`Running`], the tasks of its checks.
pub(crate) struct Reloader {
    source: Source,
    log: LogControl,
    /// Shared with the blocking thread that compares a new file with it.
    config: Arc<Config>,
    /// The tasks of `config`'s checks.
    running: Running,
    state: State,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// What a new file does to each check: the plan of a reload, worked out
/// from the two configs alone by [`compare`] (off the runtime's thread),
/// and carried out by the snapshot ([`State::reload`](crate::state::State::reload))
/// and the engine ([`Running::reload`]).
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// For each check of the new file, in its order.
    pub(crate) matches: Vec<Match>,
    /// Names, for the log and the answer.
    pub(crate) unchanged: Vec<String>,
    /// Checks of a running name with another definition.
    pub(crate) changed: Vec<String>,
    /// Checks of a new name.
    pub(crate) added: Vec<String>,
    /// Running checks whose name is gone.
    pub(crate) removed: Vec<String>,
    /// Probe kinds that had checks and would have none, which the new
    /// file does not allow (`allow_empty`).
    pub(crate) emptied: Vec<ProbeKind>,
}

/// How one check of a new file relates to the running config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// The running check at this position, with the same definition.
    Same(usize),
    /// The running check of the same name at this position, changed;
    /// `same_target` when its handler and target are the same.
    Changed {
        /// Its position in the running config.
        at: usize,
        /// Same handler, same target: only timing, thresholds, probe
        /// kinds or the like changed.
        same_target: bool,
    },
    /// A name the running config does not have.
    New,
}

/// Matches the checks of `new` with those of `running` by name: linear in
/// both, with no copy of a check.
pub(crate) fn compare(running: &Config, new: &Config) -> Changes {
    let by_name: HashMap<&str, usize> = running
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut changes = Changes::default();
    for c in &new.checks {
        let found = by_name.get(c.name.as_str()).copied();
        let m = match found {
            Some(at) if running.checks[at].same_definition(c) => {
                changes.unchanged.push(c.name.clone());
                Match::Same(at)
            }
            Some(at) => {
                changes.changed.push(c.name.clone());
                Match::Changed {
                    at,
                    same_target: running.checks[at].kind == c.kind,
                }
            }
            None => {
                changes.added.push(c.name.clone());
                Match::New
            }
        };
        changes.matches.push(m);
    }
    let names: std::collections::HashSet<&str> = new.checks.iter().map(|c| c.name.as_str()).collect();
    for old in &running.checks {
        if !names.contains(old.name.as_str()) {
            changes.removed.push(old.name.clone());
        }
    }
    let (had, has) = (running.kinds(), new.kinds());
    changes.emptied = ProbeKind::ALL
        .into_iter()
        .filter(|k| had.contains(*k) && !has.contains(*k) && !new.allow_empty.contains(*k))
        .collect();
    changes
}

impl Reloader {
    /// A reloader of `config`, read from `source`, whose checks run in
    /// `state` as `running`; its own tasks run on `tracker` until `cancel`
    /// fires.
    pub(crate) fn new(
        source: Source,
        log: LogControl,
        config: Config,
        state: State,
        running: Running,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Reloader {
        Reloader {
            source,
            log,
            config: Arc::new(config),
            running,
            state,
            tracker,
            cancel,
        }
    }

    /// Starts serving reloads on `tracker` until `cancel` fires: those
    /// asked through the returned handle, each SIGHUP from `hangups`, and a
    /// change of the file when the config watches it.
    pub(crate) fn spawn(self, hangups: Option<mpsc::UnboundedReceiver<()>>) -> Reloads {
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
            // Reading the file may block on a slow volume, and reading,
            // preparing and comparing thousands of checks takes
            // milliseconds: off the runtime's thread, which answers the
            // probes. Only the swap is made here.
            let (path, listen) = (self.source.path.clone(), self.source.listen);
            let running = Arc::clone(&self.config);
            let loaded = tokio::task::spawn_blocking(move || {
                let app = App::load(&path, listen)?;
                let changes = compare(&running, &app.config);
                Ok((app, changes))
            })
            .await
            .unwrap_or_else(|e| Err(Refused::one(format!("the reload failed: {e}"))));
            let outcome = self.apply(trigger, loaded).await;
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Logs and records a refused reload; the running config stays.
    fn refuse(&self, trigger: Trigger, errors: Refused) -> Result<String, Refused> {
        for line in &errors.0 {
            tracing::error!(trigger = trigger.as_str(), "{line}");
        }
        tracing::error!(
            trigger = trigger.as_str(),
            "config reload rejected: the running config stays"
        );
        self.state.reload_rejected();
        Err(errors)
    }

    /// Applies a freshly loaded app, or reports why it was rejected.
    async fn apply(
        &mut self,
        trigger: Trigger,
        loaded: Result<(App, Changes), Refused>,
    ) -> Result<String, Refused> {
        let (app, changes) = match loaded {
            Ok(loaded) => loaded,
            Err(errors) => return self.refuse(trigger, errors),
        };
        if let Some(errors) = changes.refusal(&self.source.path) {
            return self.refuse(trigger, errors);
        }
        let App {
            config: mut new,
            engine,
            ..
        } = app;
        let restart = keep_start_bound(&mut new, &self.config);
        for key in &restart {
            tracing::warn!(
                trigger = trigger.as_str(),
                key = *key,
                "{key} changed: it takes effect at the next restart, the running value stays"
            );
        }
        // The snapshot and the tasks move to the new checks together.
        self.running.reload(&changes.slots(&new), engine).await;
        self.follow_log_level(&new, trigger);
        tracing::info!(
            trigger = trigger.as_str(),
            checks = new.checks.len(),
            unchanged = ?changes.unchanged,
            changed = ?changes.changed,
            added = ?changes.added,
            removed = ?changes.removed,
            "config reloaded"
        );
        let summary = changes.summary(new.checks.len(), &restart);
        self.config = Arc::new(new);
        Ok(summary)
    }

    /// Sets the log level to `new`'s if it changed and no `--log-level`
    /// flag owns it.
    fn follow_log_level(&self, new: &Config, trigger: Trigger) {
        if self.log.flag.is_none() && new.log_level != self.config.log_level {
            let level = new.log_level.clone().unwrap_or_default();
            if let Some(logging) = &self.log.logging {
                logging.set_level(&level);
            }
            tracing::info!(trigger = trigger.as_str(), log_level = %level, "log level changed");
        }
    }
}

impl Changes {
    /// Why the new file, read from `origin`, is refused: a probe kind it
    /// empties without allowing it.
    fn refusal(&self, origin: &std::path::Path) -> Option<Refused> {
        if self.emptied.is_empty() {
            return None;
        }
        let origin = origin.display();
        let errors = self
            .emptied
            .iter()
            .map(|kind| {
                format!(
                    "{origin}: allow_empty: the new file has no {kind} check left: the {} probe would pass whatever the app does; set allow_empty = [\"{kind}\"] if that is meant",
                    kind.endpoint()
                )
            })
            .collect();
        Some(Refused(errors))
    }

    /// What the snapshot and the engine do with each check of `new`.
    fn slots<'a>(&self, new: &'a Config) -> Vec<Slot<'a>> {
        new.checks
            .iter()
            .zip(&self.matches)
            .map(|(config, m)| match *m {
                Match::Same(at) => Slot::Keep(at),
                Match::Changed { at, same_target } => Slot::Change {
                    at,
                    config,
                    same_target,
                },
                Match::New => Slot::Start(config),
            })
            .collect()
    }

    /// The answer to whoever asked for the reload: the new file's `checks`
    /// and how they changed, and the `restart` keys that keep their value.
    fn summary(&self, checks: usize, restart: &[&str]) -> String {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let mut summary = format!(
            "reloaded: {checks} checks; unchanged: {}; changed: {}; added: {}; removed: {}\n",
            list(&self.unchanged),
            list(&self.changed),
            list(&self.added),
            list(&self.removed)
        );
        for key in restart {
            summary.push_str(&format!("{key} changed: it takes effect at the next restart\n"));
        }
        summary
    }
}

/// Sets the settings of `new` that are bound at start to their `running`
/// values, and says which of them the new file changed.
fn keep_start_bound(new: &mut Config, running: &Config) -> Vec<&'static str> {
    let restart = restart_only_changes(running, new);
    (new.listen, new.grpc_listen, new.reload, new.drain, new.server) = (
        running.listen,
        running.grpc_listen,
        running.reload,
        running.drain.clone(),
        running.server,
    );
    restart
}

/// The settings bound at start that differ between `running` and `new`.
pub(crate) fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
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
///
/// Each look reads as the start and SIGHUP do ([`Config::read`]): a
/// regular file only, opened without blocking, at most
/// [`crate::files::MAX_CONFIG_BYTES`]. A path turned into a FIFO or a
/// device (`/dev/zero`), or a file grown past the bound, is logged once
/// and the running config stays: the watch never parks a thread in
/// `open()` nor grows the process, so a shutdown never waits on it.
async fn watch(path: PathBuf, content: u64, interval: std::time::Duration, reloads: Reloads) {
    let read = |path: PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            Config::read(&path)
                .map(|text| fingerprint(text.as_bytes()))
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the read failed: {e}")))
    };
    let mut applied = content;
    let mut pending = None;
    // The last unreadable file's error, logged once until it changes.
    let mut unreadable: Option<String> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // A file that cannot be read now is looked at again next time.
        let now = match read(path.clone()).await {
            Ok(now) => now,
            Err(e) => {
                if unreadable.as_ref() != Some(&e) {
                    tracing::warn!(
                        trigger = Trigger::FileChanged.as_str(),
                        "{e}: the running config stays"
                    );
                    unreadable = Some(e);
                }
                pending = None;
                continue;
            }
        };
        unreadable = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml, "t", &|_: &str| None).unwrap()
    }

    fn check(name: &str, probes: &str, port: u16) -> String {
        format!("[[check]]\nname = \"{name}\"\nprobes = [\"{probes}\"]\ntcp = {{ port = {port} }}\n")
    }

    #[test]
    fn checks_are_matched_by_name_wherever_they_stand() {
        let running = config(
            &[
                check("a", "readiness", 1),
                check("b", "liveness", 1),
                check("c", "readiness", 1),
            ]
            .concat(),
        );
        let new = config(
            &[
                check("c", "readiness", 1),
                check("a", "readiness", 2),
                check("d", "readiness", 1),
                check("b", "liveness", 1).replace("tcp", "period = \"2s\"\ntcp"),
            ]
            .concat(),
        );
        let changes = compare(&running, &new);
        assert_eq!(
            changes.matches,
            [
                Match::Same(2),
                Match::Changed {
                    at: 0,
                    same_target: false
                },
                Match::New,
                Match::Changed {
                    at: 1,
                    same_target: true
                },
            ]
        );
        assert_eq!(changes.unchanged, ["c"]);
        assert_eq!(changes.changed, ["a", "b"]);
        assert_eq!(changes.added, ["d"]);
        assert!(changes.removed.is_empty());
        assert!(changes.emptied.is_empty());
    }

    #[test]
    fn emptying_a_probe_kind_needs_the_new_file_to_allow_it() {
        let running = config(&[check("a", "readiness", 1), check("b", "liveness", 1)].concat());
        let only_live = config(&check("b", "liveness", 1));
        let changes = compare(&running, &only_live);
        assert_eq!(changes.emptied, [ProbeKind::Readiness]);
        assert_eq!(changes.removed, ["a"]);
        let allowed = config(&format!(
            "allow_empty = [\"readiness\"]\n{}",
            check("b", "liveness", 1)
        ));
        assert!(compare(&running, &allowed).emptied.is_empty());
        let nothing = config("allow_empty = true\n");
        assert!(compare(&running, &nothing).emptied.is_empty());
        let renamed = config(&[check("a2", "readiness", 1), check("b", "liveness", 1)].concat());
        assert!(
            compare(&running, &renamed).emptied.is_empty(),
            "a rename empties nothing"
        );
    }
}
