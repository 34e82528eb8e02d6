//! `exec`: run a command without a shell; exit 0 is healthy, anything else
//! a failure whose message is the command's output (kubelet-semantics §2.2).
//!
//! The command runs in a process group of its own so that a timeout, or a
//! background process left behind after a normal exit, can be killed as a
//! whole: the kubelet's runtime kills the exec session, and a health check
//! must not leave processes behind in the sidecar either.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{MAX_OUTPUT, Outcome, Reason, describe_io};
use crate::config::ExecSpec;

/// How long the direct child may take to die after SIGKILL before the run
/// gives up waiting for it (it is still killed and reaped on drop).
const KILL_GRACE: Duration = Duration::from_millis(500);

/// How long the run keeps reaping killed grandchildren that were
/// reparented to the sidecar.
const REAP_GRACE: Duration = Duration::from_millis(200);

/// Makes the sidecar the "child subreaper" of every process it starts
/// (`prctl(PR_SET_CHILD_SUBREAPER)`).
///
/// The sidecar calls it once at startup. A check's command may fork
/// grandchildren and exit; without this they would be reparented to the
/// container's PID 1, which may never reap them. With it they are
/// reparented to the sidecar, and the exec check reaps those of its own
/// process group after killing it. When the sidecar is PID 1 it reaps them
/// already; the call is then harmless.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// The commands of exec checks that tokio waits on, by process id; every
/// other child of the sidecar is an orphan that a command left behind
/// (see [`reap_orphans`]).
///
/// Process-wide because a process's children are: whatever spawns or
/// reaps one must know of the others, or a `waitpid` here would take an
/// exit status from under tokio.
struct Commands {
    table: Mutex<Table>,
    /// Told when a run ends, so that what it left behind goes at once.
    ended: Notify,
}

/// The commands tokio waits on, and how many are being spawned: a sweep
/// skips its turn while one is, since the new child is not known yet.
struct Table {
    pids: BTreeSet<i32>,
    spawning: usize,
}

static COMMANDS: Commands = Commands {
    table: Mutex::new(Table {
        pids: BTreeSet::new(),
        spawning: 0,
    }),
    ended: Notify::const_new(),
};

impl Commands {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("not poisoned")
    }
}

/// A command of an exec check, known to [`COMMANDS`] from the moment it
/// exists until tokio has reaped it.
struct Owned {
    pid: i32,
    /// Whether tokio has reaped it. If not when the run ends (it would not
    /// die), tokio still will: the id stays known until then.
    reaped: bool,
}

impl Owned {
    /// Spawns `command`. No sweep runs from before the fork until the new
    /// child is known, so none can take it for an orphan; spawns run in
    /// parallel.
    fn spawn(command: &mut Command) -> std::io::Result<(Child, Owned)> {
        COMMANDS.table().spawning += 1;
        let spawned = command.spawn();
        let mut table = COMMANDS.table();
        table.spawning -= 1;
        let child = spawned?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| std::io::Error::other("no process id"))?;
        table.pids.insert(pid);
        Ok((child, Owned { pid, reaped: false }))
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.reaped {
            COMMANDS.table().pids.remove(&self.pid);
        }
        COMMANDS.ended.notify_one();
    }
}

/// The shortest time between two sweeps for orphans: a sweep reads
/// `/proc`, and every exit of a command signals SIGCHLD.
const SWEEP_SPACING: Duration = Duration::from_millis(100);

/// The longest time between two sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Reaps and kills, for as long as it runs, the processes that exec
/// checks' commands leave behind: a command that daemonizes (`setsid cmd
/// &`) escapes its process group, so killing the group misses it, and
/// when its parent exits it becomes a child of the sidecar (a child
/// subreaper, or PID 1). Such a child is not tokio's to wait for: once no
/// run that can have started it is still going, it is killed, and its
/// zombie is reaped.
///
/// Only the running sidecar calls this: it takes every child it does not
/// know as an orphan.
pub(crate) async fn reap_orphans() {
    let me = std::process::id() as i32;
    let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        let child_exited = async {
            match children.as_mut() {
                Some(children) => {
                    children.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = child_exited => {}
            () = COMMANDS.ended.notified() => {}
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        sweep(me);
        tokio::time::sleep(SWEEP_SPACING).await;
    }
}

/// Kills every process that exec checks' commands left behind, whichever
/// run started it, and their descendants as they become orphans in turn;
/// for the sidecar's exit, once no check runs. Bounded by [`REAP_GRACE`].
pub(crate) fn kill_orphans() {
    let me = std::process::id() as i32;
    let give_up = std::time::Instant::now() + REAP_GRACE;
    while sweep_with(me, true) > 0 && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One pass of [`reap_orphans`].
fn sweep(me: i32) {
    let _ = sweep_with(me, false);
}

/// Reaps the zombie orphans and kills those that may go; returns how many
/// orphans were found.
fn sweep_with(me: i32, every_orphan: bool) -> usize {
    let mut table = COMMANDS.table();
    if table.spawning > 0 {
        return 0;
    }
    let pids = &mut table.pids;
    let children = children_of(me);
    // An id tokio has reaped since, and that is no child of ours now.
    pids.retain(|pid| children.iter().any(|c| c.pid == *pid));
    // A descendant starts after the command it descends from: a process
    // started before every command still running belongs to a run that
    // has ended.
    let oldest_running = children
        .iter()
        .filter(|c| pids.contains(&c.pid))
        .map(|c| c.started)
        .min();
    let mut found = 0;
    for child in children.iter().filter(|c| !pids.contains(&c.pid)) {
        found += 1;
        if child.zombie {
            let _ = waitpid(Pid::from_raw(child.pid), Some(WaitPidFlag::WNOHANG));
        } else if every_orphan || oldest_running.is_none_or(|oldest| child.started < oldest) {
            tracing::debug!(pid = child.pid, "killing a process an exec check left running");
            let pid = Pid::from_raw(child.pid);
            // A daemon leads a group (or session) of its own: its
            // children go with it.
            if child.leads_group {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    found
}

/// A child process, from `/proc/PID/stat`.
struct ChildProcess {
    pid: i32,
    zombie: bool,
    /// Clock ticks after boot.
    started: u64,
    /// Whether it leads its process group.
    leads_group: bool,
}

/// The children of process `parent`, zombies included.
fn children_of(parent: i32) -> Vec<ChildProcess> {
    // The kernel's own list of each thread's children when it has one
    // (CONFIG_PROC_CHILDREN): a few reads a sweep instead of one per
    // process in the namespace, which on a node with a shared process
    // namespace is every process there.
    let candidates = match own_children() {
        Some(pids) => pids,
        None => {
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return Vec::new();
            };
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        }
    };
    candidates
        .into_iter()
        .filter_map(|pid| child_process(pid, parent))
        .collect()
}

/// The pids in every `/proc/self/task/TID/children`; `None` where the
/// kernel has no such files.
fn own_children() -> Option<Vec<i32>> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => pids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok())),
            // A thread that has just ended.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => return None,
            Err(_) => {}
        }
    }
    Some(pids)
}

/// Process `pid` from its `/proc/PID/stat`, if it is a child of `parent`.
fn child_process(pid: i32, parent: i32) -> Option<ChildProcess> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parens.
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3, ppid 4, pgrp 5, starttime 22.
    let state = fields.first()?;
    let ppid = fields.get(1)?.parse::<i32>().ok()?;
    let pgrp = fields.get(2)?.parse::<i32>().ok()?;
    let started = fields.get(19)?.parse::<u64>().ok()?;
    (ppid == parent).then(|| ChildProcess {
        pid,
        zombie: state.starts_with(['Z', 'X']),
        started,
        leads_group: pgrp == pid,
    })
}

/// A prepared exec check.
#[derive(Debug)]
pub struct ExecCheck {
    spec: ExecSpec,
}

impl ExecCheck {
    /// Prepares the check.
    pub fn new(spec: ExecSpec) -> Self {
        ExecCheck { spec }
    }

    /// Runs the command once, bounded by `timeout`. At the timeout its
    /// whole process group is killed and the run fails with the kubelet's
    /// `command "..." timed out`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let shown = self.spec.command.join(" ");
        let Some((program, args)) = self.spec.command.split_first() else {
            return Outcome::unknown("exec check has an empty command");
        };
        if let Err(outcome) = self.check_workdir(program).await {
            return outcome;
        }
        let mut command = self.command(program, args);
        let (mut child, mut owned) = match Owned::spawn(&mut command) {
            Ok(spawned) => spawned,
            Err(e) => {
                return Outcome::unknown(format!("cannot run {program:?}: {}", describe_io(&e)));
            }
        };
        match collect(&mut child, &mut owned, deadline).await {
            Some((Ok(status), output)) => verdict(&shown, status, &output),
            Some((Err(e), _)) => Outcome::unknown(format!(
                "command {shown:?}: cannot wait for it: {}",
                describe_io(&e)
            )),
            None => Outcome::failure(Reason::Timeout, format!("command {shown:?} timed out")),
        }
    }

    /// The working directory exists and is a directory.
    async fn check_workdir(&self, program: &str) -> Result<(), Outcome> {
        let Some(dir) = &self.spec.workdir else {
            return Ok(());
        };
        match tokio::fs::metadata(dir).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Outcome::unknown(format!(
                "cannot run {program:?}: working directory {} is not a directory",
                dir.display()
            ))),
            Err(e) => Err(Outcome::unknown(format!(
                "cannot run {program:?}: working directory {}: {}",
                dir.display(),
                describe_io(&e)
            ))),
        }
    }

    /// The command in a process group of its own, stdin closed, both
    /// outputs piped.
    fn command(&self, program: &str, args: &[String]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(dir) = &self.spec.workdir {
            command.current_dir(dir);
        }
        command
    }
}

/// Waits for the child's exit while draining both pipes, then kills and
/// reaps what it left in its group. Its status and output (stdout then
/// stderr, at most [`MAX_OUTPUT`] bytes), or `None` at the deadline, when
/// the whole group was killed.
async fn collect(
    child: &mut Child,
    owned: &mut Owned,
    deadline: Instant,
) -> Option<(std::io::Result<ExitStatus>, Vec<u8>)> {
    // `process_group(0)`: the child leads a new group whose id is its pid.
    let mut group = Group::new(Pid::from_raw(owned.pid));

    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let mut pipes =
        Box::pin(async { tokio::join!(drain(out_pipe, &mut stdout), drain(err_pipe, &mut stderr)) });
    let mut drained = false;

    // Wait for the exit while draining both pipes, so that a chatty
    // command never blocks on a full pipe.
    let status = loop {
        tokio::select! {
            status = child.wait() => {
                owned.reaped = status.is_ok();
                break Some(status);
            }
            _ = &mut pipes, if !drained => drained = true,
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };

    let Some(status) = status else {
        group.kill();
        let reaped = tokio::time::timeout(KILL_GRACE, child.wait()).await;
        owned.reaped = matches!(reaped, Ok(Ok(_)));
        if reaped.is_ok() {
            group.reap().await;
        }
        return None;
    };
    // The leader is reaped; kill what it left behind in its group before
    // anything else can reuse the id.
    group.kill();
    group.reap().await;
    if !drained {
        // Whatever still holds a pipe is outside the group (it left it);
        // keep what was read by the deadline.
        let _ = tokio::time::timeout_at(deadline, &mut pipes).await;
    }
    drop(pipes);

    let mut output = stdout;
    output.extend_from_slice(&stderr);
    output.truncate(MAX_OUTPUT);
    Some((status, output))
}

/// The verdict of an exited command: its output, trimmed, or a word on
/// how it ended when it said nothing.
fn verdict(shown: &str, status: ExitStatus, output: &[u8]) -> Outcome {
    let output = String::from_utf8_lossy(output);
    let output = output.trim();
    let said = |text: &str| {
        if text.is_empty() {
            describe_exit(shown, status)
        } else {
            text.to_string()
        }
    };
    if status.success() {
        Outcome::success(said(output))
    } else {
        Outcome::failure(Reason::ExitCode, said(output))
    }
}

/// `command "..." exited with code N`, or the signal that killed it.
fn describe_exit(shown: &str, status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("command {shown:?} exited with code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("command {shown:?} was killed by signal {signal} ({name})"),
            Err(_) => format!("command {shown:?} was killed by signal {signal}"),
        },
        (None, None) => format!("command {shown:?} ended with {status}"),
    }
}

/// Reads `pipe` to its end, keeping the first [`MAX_OUTPUT`] bytes in
/// `kept` and discarding the rest, so that the writer never blocks and
/// memory stays bounded. A read error ends the reading.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0u8; 8 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The process group of one run. Until [`Group::kill`] has run, dropping it
/// (the run was cancelled) kills the group, as `kill_on_drop` does for the
/// direct child alone.
struct Group {
    pgid: Pid,
    killed: bool,
}

impl Group {
    fn new(pgid: Pid) -> Self {
        Group { pgid, killed: false }
    }

    /// SIGKILLs every process of the group. The leader must not have been
    /// reaped long before: a reaped leader's id can be reused once the
    /// group is empty. Both callers kill right after the leader's exit,
    /// without an await in between.
    fn kill(&mut self) {
        // ESRCH: the group is already empty.
        let _ = killpg(self.pgid, Signal::SIGKILL);
        self.killed = true;
    }

    /// Reaps the group's killed processes that were reparented to us (the
    /// sidecar is PID 1 or a child subreaper), until none is left or
    /// [`REAP_GRACE`] has passed. Call it only once the leader was reaped,
    /// so that this never takes the leader from under tokio.
    async fn reap(&self) {
        let give_up = Instant::now() + REAP_GRACE;
        let group = Pid::from_raw(-self.pgid.as_raw());
        loop {
            match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                // Killed but not dead yet: poll again shortly.
                Ok(WaitStatus::StillAlive) => {
                    if Instant::now() >= give_up {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                // ECHILD: no child of ours is left in the group.
                Err(_) => return,
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.killed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}
