//! The `dialogue` check against a real memcached from Debian, and the
//! `process` check against real processes, each beside the one-liner an
//! exec probe runs as the oracle: `echo version | nc -q1 HOST PORT | grep
//! -q VERSION` (written in Python: the image has no nc) and `pgrep -f`.

use std::process::{Command, Stdio};
use std::time::Duration;

use healthproxy::check::{DialogueCheck, Outcome, ProcessCheck, Reason, Verdict};
use healthproxy::config::{DialogueSpec, DialogueStep, Host, Pattern, ProcessSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::oracle::{Ran, agree, sh};
use crate::support::{Process, eventually, free_port, tool};

const TIMEOUT: Duration = Duration::from_secs(2);
const BOUND: Duration = Duration::from_secs(5);

/// `echo version | nc -q1 127.0.0.1 PORT | grep -q '^VERSION '`: send, read
/// until the server closes or is quiet for a second, match.
fn nc_form(port: u16) -> String {
    format!(
        r#"python3 -c "
import re, socket, sys
s = socket.create_connection(('127.0.0.1', {port}))
s.sendall(b'version\r\n')
s.settimeout(1)
got = b''
try:
    while True:
        d = s.recv(4096)
        if not d: break
        got += d
except socket.timeout:
    pass
sys.exit(0 if re.search(rb'^VERSION ', got, re.M) else 1)
""#
    )
}

fn memcached_version(port: u16) -> DialogueSpec {
    DialogueSpec {
        host: Host {
            name: "127.0.0.1".into(),
            from_env: None,
        },
        port,
        tls: None,
        steps: vec![
            DialogueStep::Send(b"version\r\n".to_vec()),
            DialogueStep::Expect(Pattern::new("(?m)^VERSION ").unwrap()),
        ],
    }
}

/// `healthproxy wait ARGS --timeout 3s`, which must exit 0 when the
/// one-liner `real` passed and 1 when it failed.
async fn wait_agrees(state: &str, args: &[&str], real: &Ran) {
    let mut argv = vec!["wait"];
    argv.extend_from_slice(args);
    argv.extend([
        "--timeout",
        "3s",
        "--interval",
        "200ms",
        "--attempt-timeout",
        "1s",
    ]);
    let (code, err) = crate::support::run_binary(&argv, Duration::from_secs(20)).await;
    assert_eq!(
        code,
        if real.passed() { 0 } else { 1 },
        "{state}: {argv:?} exited {code} ({err}), the one-liner {:?}",
        real.code
    );
}

async fn dialogue(spec: &DialogueSpec) -> Outcome {
    DialogueCheck::new(spec.clone()).unwrap().run(TIMEOUT).await
}

async fn compare(state: &str, port: u16) -> Outcome {
    let form = nc_form(port);
    let spec = memcached_version(port);
    // At the same time, the exec probes `inject` converts
    // (tests/it/exec_convert_e2e.rs).
    #[cfg(feature = "inject")]
    let converted = crate::exec_convert_e2e::memcached(state, port);
    #[cfg(not(feature = "inject"))]
    let converted = async {};
    let (real, ours, ()) = tokio::join!(sh(&form, &[], BOUND), dialogue(&spec), converted);
    agree(state, "echo version | nc -q1 | grep -q VERSION", &real, &ours);
    ours
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogue_gives_the_nc_one_liners_verdict_against_memcached() {
    let (_hold, refused) = crate::support::refusing_port();
    let out = compare("not running", refused).await;
    assert_eq!(out.reason, Some(Reason::Refused), "{out:?}");
    let real = sh(&nc_form(refused), &[], BOUND).await;
    let target = format!("127.0.0.1:{refused},version\\r\\n,^VERSION ");
    wait_agrees("not running", &["--dialogue", &target], &real).await;

    let mut server = None;
    let mut port = 0;
    for _ in 0..5 {
        port = free_port();
        let child = Command::new(tool("memcached"))
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-u",
                "root",
                "-c",
                "16",
                "-t",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed and reaped on drop from here on, a failed wait included.
        let mut child = Process(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.0.try_wait().unwrap().is_none()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            assert!(std::time::Instant::now() < deadline, "memcached did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if child.0.try_wait().unwrap().is_none() {
            server = Some(child);
            break;
        }
    }
    let server = server.expect("memcached started");
    let pid = Pid::from_raw(server.0.id() as i32);

    let out = compare("up", port).await;
    assert_eq!(out.verdict, Verdict::Success);
    assert!(out.message.starts_with("VERSION 1."), "{}", out.message);
    // `wait --dialogue` returns once the answer matches.
    let real = sh(&nc_form(port), &[], BOUND).await;
    let target = format!("127.0.0.1:{port},version\\r\\n,(?m)^VERSION ");
    wait_agrees("up", &["--dialogue", &target], &real).await;

    // A pattern the server's answer does not match.
    let mut wrong = memcached_version(port);
    wrong.steps[1] = DialogueStep::Expect(Pattern::new("^imok$").unwrap());
    let out = dialogue(&wrong).await;
    assert_eq!(
        out.reason,
        Some(Reason::Timeout),
        "memcached keeps the connection open: {out:?}"
    );

    // Connections exhausted: memcached's -c held by idle clients.
    let mut held = Vec::new();
    // memcached needs a few of its 16 for itself.
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    compare("connections exhausted", port).await;
    drop(held);
    eventually(Duration::from_secs(10), "memcached answers again", || async {
        dialogue(&memcached_version(port)).await.verdict == Verdict::Success
    })
    .await;

    // Frozen.
    kill(pid, Signal::SIGSTOP).unwrap();
    let out = compare("frozen", port).await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    kill(pid, Signal::SIGCONT).unwrap();
    // The connections made while it was frozen are still counted against
    // its -c until it has read their close.
    eventually(
        Duration::from_secs(10),
        "memcached answers after the thaw",
        || async { dialogue(&memcached_version(port)).await.verdict == Verdict::Success },
    )
    .await;
    compare("thawed", port).await;
}

async fn process(pattern: &str) -> Outcome {
    ProcessCheck::new(ProcessSpec {
        pattern: Pattern::new(pattern).unwrap(),
    })
    .run(TIMEOUT)
    .await
}

/// `pgrep -f PATTERN` (exec'd by the shell, so that no shell holds the
/// pattern in its own command line), then the check: one after the
/// other, so that neither sees the other.
async fn compare_pgrep(state: &str, pattern: &str) -> Outcome {
    let form = format!("exec pgrep -f '{pattern}'");
    let real = sh(&form, &[], BOUND).await;
    let ours = process(pattern).await;
    agree(state, &form, &real, &ours);
    ours
}

#[tokio::test]
async fn process_check_gives_pgrep_f_verdict() {
    let marker = format!("hp-marker-{}-{}", std::process::id(), free_port());
    let mut child = crate::support::marked_sleeper(&marker).await;
    let pid = Pid::from_raw(child.0.id() as i32);

    let out = compare_pgrep("running", &marker).await;
    assert!(out.message.starts_with(&format!("{pid} ")), "{}", out.message);
    // `wait --process`, whose own command line holds the pattern, as
    // pgrep's does: neither counts itself.
    let real = sh(&format!("exec pgrep -f '{marker}'"), &[], BOUND).await;
    wait_agrees("running", &["--process", &marker], &real).await;
    let absent = format!("{marker}-not");
    let real = sh(&format!("exec pgrep -f '{absent}'"), &[], BOUND).await;
    wait_agrees("no such process", &["--process", &absent], &real).await;
    compare_pgrep(
        "running, a pattern over the arguments",
        "time\\.sleep\\(600\\) hp-marker",
    )
    .await;
    compare_pgrep("no such process", &format!("{marker}-not")).await;
    compare_pgrep("a kernel thread, by its name", "^\\[kthreadd\\]$").await;
    compare_pgrep("a kernel thread, unbracketed", "^kthreadd$").await;

    kill(pid, Signal::SIGSTOP).unwrap();
    compare_pgrep("stopped", &marker).await;
    kill(pid, Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(10), "the child is a zombie", || async {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    })
    .await;
    let out = compare_pgrep("a zombie (its command line is gone)", &marker).await;
    assert_eq!(out.reason, Some(Reason::NoProcess), "{out:?}");
    compare_pgrep("a zombie, by its name", "^\\[python3\\] <defunct>$").await;
    child.0.wait().unwrap();
    compare_pgrep("gone", &marker).await;
}
