//! `exec`: run a command without a shell; exit 0 is healthy, anything else
//! a failure whose message is the command's output (kubelet-semantics §2.2).
//!
//! The command runs in a process group of its own so that a timeout, or a
//! background process left behind after a normal exit, can be killed as a
//! whole: the kubelet's runtime kills the exec session, and a health check
//! must not leave processes behind in the sidecar either.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
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
        if let Some(dir) = &self.spec.workdir {
            match tokio::fs::metadata(dir).await {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Outcome::unknown(format!(
                        "cannot run {program:?}: working directory {} is not a directory",
                        dir.display()
                    ));
                }
                Err(e) => {
                    return Outcome::unknown(format!(
                        "cannot run {program:?}: working directory {}: {}",
                        dir.display(),
                        describe_io(&e)
                    ));
                }
            }
        }

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
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::unknown(format!("cannot run {program:?}: {}", describe_io(&e)));
            }
        };
        let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            return Outcome::unknown(format!("cannot run {program:?}: no process id"));
        };
        // `process_group(0)`: the child leads a new group whose id is its pid.
        let mut group = Group::new(Pid::from_raw(pid));

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
                status = child.wait() => break Some(status),
                _ = &mut pipes, if !drained => drained = true,
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };

        let status = match status {
            Some(status) => {
                // The leader is reaped; kill what it left behind in its
                // group before anything else can reuse the id.
                group.kill();
                status
            }
            None => {
                group.kill();
                let reaped = tokio::time::timeout(KILL_GRACE, child.wait()).await;
                if reaped.is_ok() {
                    group.reap().await;
                }
                return Outcome::failure(Reason::Timeout, format!("command {shown:?} timed out"));
            }
        };
        group.reap().await;
        if !drained {
            // Whatever still holds a pipe is outside the group (it left it);
            // keep what was read by the deadline.
            let _ = tokio::time::timeout_at(deadline, &mut pipes).await;
        }
        drop(pipes);

        let status = match status {
            Ok(status) => status,
            Err(e) => {
                return Outcome::unknown(format!(
                    "command {shown:?}: cannot wait for it: {}",
                    describe_io(&e)
                ));
            }
        };
        let mut output = stdout;
        output.extend_from_slice(&stderr);
        output.truncate(MAX_OUTPUT);
        let output = String::from_utf8_lossy(&output);
        let output = output.trim();
        let said = |text: &str| {
            if text.is_empty() {
                describe_exit(&shown, status)
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
