//! Tests for the exec check, with real child processes
//! (kubelet-semantics §2.2).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use healthproxy::check::{ExecCheck, Outcome, Reason, Verdict};
use healthproxy::config::ExecSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::support::eventually;

const TIMEOUT: Duration = Duration::from_secs(5);

fn spec(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        workdir: None,
    }
}

async fn run(argv: &[&str]) -> Outcome {
    ExecCheck::new(spec(argv)).run(TIMEOUT).await
}

/// Makes this test process the subreaper of its descendants, as the
/// sidecar does at startup (`check::exec::become_subreaper`), so that
/// killed grandchildren are reparented to us and must be reaped by the run.
fn become_subreaper() {
    healthproxy::check::become_subreaper().unwrap();
}

/// `(pid, state, ppid, pgrp)` of every process in /proc.
fn processes() -> Vec<(i32, char, i32, i32)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let state = fields[0].chars().next().unwrap_or('?');
        let (Ok(ppid), Ok(pgrp)) = (fields[1].parse(), fields[2].parse()) else {
            continue;
        };
        all.push((pid, state, ppid, pgrp));
    }
    all
}

/// The processes, zombies included, still in process group `pgid`.
fn group_members(pgid: i32) -> Vec<(i32, char, i32, i32)> {
    processes().into_iter().filter(|p| p.3 == pgid).collect()
}

/// Waits until nothing of group `pgid` is left: no live process and no
/// zombie child of ours.
async fn assert_group_gone(pgid: i32) {
    eventually(Duration::from_secs(5), "the process group to be gone", || async {
        group_members(pgid).is_empty()
    })
    .await;
    let me = std::process::id() as i32;
    let zombies: Vec<_> = processes()
        .into_iter()
        .filter(|p| p.1 == 'Z' && p.2 == me && p.3 == pgid)
        .collect();
    assert!(zombies.is_empty(), "zombie children left: {zombies:?}");
}

/// Reads "PGID PID" written by the command's shell (`$$ $!`).
fn read_ids(path: &Path) -> (i32, i32) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the command did not write {}: {e}", path.display()));
    let mut ids = text.split_whitespace().map(|s| s.parse::<i32>().unwrap());
    (ids.next().unwrap(), ids.next().unwrap())
}

fn ids_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ids")
}

#[tokio::test]
async fn exit_zero_is_success_with_its_output() {
    let outcome = run(&["sh", "-c", "echo all good"]).await;
    assert_eq!(outcome, Outcome::success("all good"));
}

#[tokio::test]
async fn exit_zero_without_output_says_the_exit_code() {
    let outcome = run(&["true"]).await;
    assert_eq!(outcome, Outcome::success("command \"true\" exited with code 0"));
}

#[tokio::test]
async fn non_zero_exit_is_failure_with_its_output() {
    let outcome = run(&["sh", "-c", "echo cannot open /tmp/healthy; exit 3"]).await;
    assert_eq!(
        outcome,
        Outcome::failure(Reason::ExitCode, "cannot open /tmp/healthy")
    );
}

#[tokio::test]
async fn non_zero_exit_without_output_says_the_exit_code() {
    let outcome = run(&["sh", "-c", "exit 3"]).await;
    assert_eq!(
        outcome,
        Outcome::failure(Reason::ExitCode, "command \"sh -c exit 3\" exited with code 3")
    );
}

#[tokio::test]
async fn death_by_signal_names_the_signal() {
    let outcome = run(&["sh", "-c", "kill -9 $$"]).await;
    assert_eq!(
        outcome,
        Outcome::failure(
            Reason::ExitCode,
            "command \"sh -c kill -9 $$\" was killed by signal 9 (SIGKILL)"
        )
    );
}

#[tokio::test]
async fn stderr_follows_stdout() {
    // stderr is written first, yet comes after stdout, as the kubelet's
    // append(stdout, stderr).
    let outcome = run(&["sh", "-c", "echo to-stderr >&2; echo to-stdout; exit 1"]).await;
    assert_eq!(outcome, Outcome::failure(Reason::ExitCode, "to-stdout to-stderr"));
}

#[tokio::test]
async fn a_failing_command_that_prints_timed_out_fails_for_its_exit_code() {
    // The reason is the check's own, never read back from the output.
    let outcome = run(&["sh", "-c", "echo upstream timed out; exit 1"]).await;
    assert_eq!(outcome, Outcome::failure(Reason::ExitCode, "upstream timed out"));
}

#[tokio::test]
async fn env_and_workdir_are_applied_over_the_inherited_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(&[
        "sh",
        "-c",
        r#"test -n "$PATH" || exit 9; echo "$HP_ONE-$HP_TWO"; pwd"#,
    ]);
    spec.env = vec![
        ("HP_ONE".into(), "first".into()),
        ("HP_TWO".into(), "second value".into()),
    ];
    spec.workdir = Some(dir.path().to_path_buf());
    let outcome = ExecCheck::new(spec).run(TIMEOUT).await;
    assert_eq!(
        outcome,
        Outcome::success(format!("first-second value {}", dir.path().display()))
    );
}

#[tokio::test]
async fn arguments_are_not_run_through_a_shell() {
    let outcome = run(&["echo", "$HOME", "a;b", "*"]).await;
    assert_eq!(outcome, Outcome::success("$HOME a;b *"));
}

#[tokio::test]
async fn program_not_found_is_unknown_and_names_it() {
    let outcome = run(&["healthproxy-no-such-program", "x"]).await;
    assert_eq!(outcome.verdict, Verdict::Unknown, "{outcome:?}");
    assert!(
        outcome.message.contains("\"healthproxy-no-such-program\"")
            && outcome.message.contains("no such file or directory"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn program_not_executable_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let outcome = run(&[script.to_str().unwrap()]).await;
    assert_eq!(outcome.verdict, Verdict::Unknown, "{outcome:?}");
    assert!(outcome.message.contains("permission denied"), "{outcome:?}");
}

#[tokio::test]
async fn missing_workdir_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(&["true"]);
    spec.workdir = Some(dir.path().join("absent"));
    let outcome = ExecCheck::new(spec).run(TIMEOUT).await;
    assert_eq!(outcome.verdict, Verdict::Unknown, "{outcome:?}");
    assert!(
        outcome.message.contains("working directory") && outcome.message.contains("absent"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn empty_command_is_unknown() {
    let outcome = run(&[]).await;
    assert_eq!(outcome.verdict, Verdict::Unknown, "{outcome:?}");
}

#[tokio::test]
async fn an_output_flood_is_drained_and_the_message_bounded() {
    // 50 MB on stdout, then a line on stderr and exit 1: if the pipes were
    // not drained to the end, `head` would block and the run time out.
    let started = Instant::now();
    let outcome = run(&[
        "sh",
        "-c",
        "head -c 50000000 /dev/zero | tr '\\0' x; echo late >&2; exit 1",
    ])
    .await;
    assert_eq!(outcome.verdict, Verdict::Failure, "{outcome:?}");
    assert!(!outcome.message.contains("timed out"), "{outcome:?}");
    assert!(outcome.message.starts_with("xxxx"), "{outcome:?}");
    // The 10 KiB kept are all stdout, so stderr's "late" is cut off.
    assert!(!outcome.message.contains("late"), "{outcome:?}");
    assert!(outcome.message.len() <= 10 * 1024, "{}", outcome.message.len());
    assert!(started.elapsed() < TIMEOUT);
}

#[tokio::test]
async fn an_endless_flood_times_out_within_bounds() {
    let started = Instant::now();
    let outcome = ExecCheck::new(spec(&["yes"]))
        .run(Duration::from_millis(300))
        .await;
    assert_eq!(
        outcome,
        Outcome::failure(Reason::Timeout, "command \"yes\" timed out")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let ids = ids_file(&dir);
    // A grandchild that ignores SIGTERM, and a shell that waits.
    let script = format!(
        r#"trap "" TERM; sleep 1000 & echo $$ $! > {}; sleep 1000"#,
        ids.display()
    );
    let argv = ["sh", "-c", script.as_str()];
    let started = Instant::now();
    let outcome = ExecCheck::new(spec(&argv)).run(Duration::from_millis(300)).await;
    let elapsed = started.elapsed();
    let shown = format!("sh -c {script}");
    assert_eq!(
        outcome,
        Outcome::failure(Reason::Timeout, format!("command {shown:?} timed out"))
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");

    let (pgid, grandchild) = read_ids(&ids);
    assert_ne!(pgid, grandchild);
    assert_group_gone(pgid).await;
    assert!(
        !Path::new(&format!("/proc/{grandchild}")).exists(),
        "grandchild {grandchild} still exists"
    );
}

#[tokio::test]
async fn a_background_process_is_killed_after_a_normal_exit() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let ids = ids_file(&dir);
    // The background sleep keeps stdout open: without the group kill the
    // run would wait on the pipe until its deadline.
    let script = format!(
        r#"trap "" TERM; sleep 1000 & echo $$ $! > {}; echo done"#,
        ids.display()
    );
    let started = Instant::now();
    let outcome = ExecCheck::new(spec(&["sh", "-c", &script]))
        .run(Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, Outcome::success("done"));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    let (pgid, grandchild) = read_ids(&ids);
    assert_group_gone(pgid).await;
    assert!(
        !Path::new(&format!("/proc/{grandchild}")).exists(),
        "grandchild {grandchild} still exists"
    );
}

#[tokio::test]
async fn a_cancelled_run_kills_the_process_group() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let ids = ids_file(&dir);
    let script = format!(r#"sleep 1000 & echo $$ $! > {}; sleep 1000"#, ids.display());
    let check = ExecCheck::new(spec(&["sh", "-c", &script]));
    let ids_written = {
        let ids = ids.clone();
        async move {
            eventually(TIMEOUT, "the command to write its ids", || {
                let ids = ids.clone();
                async move { std::fs::read_to_string(&ids).is_ok_and(|t| t.split_whitespace().count() == 2) }
            })
            .await
        }
    };
    // The run is dropped once the command is up, as by the engine's
    // safety-net timeout.
    tokio::select! {
        outcome = check.run(TIMEOUT) => panic!("the run ended first: {outcome:?}"),
        () = ids_written => {}
    }
    let (pgid, grandchild) = read_ids(&ids);
    // The run is gone, so nobody else reaps the killed grandchild that was
    // reparented to us; the test does, and only its own group.
    eventually(Duration::from_secs(5), "the group to be gone", || async {
        while let Ok(status) = waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        group_members(pgid).is_empty()
    })
    .await;
    assert!(
        !Path::new(&format!("/proc/{grandchild}")).exists(),
        "grandchild {grandchild} still exists"
    );
}
