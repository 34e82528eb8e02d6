//! The installed tools the tests drive, and commands run with their input
//! given and their output collected.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::Process;
use super::wait::eventually;

/// An installed tool, from `PATH` or the usual system directories; panics
/// naming it when it is missing (`.ci/run` installs every tool the tests
/// use).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: .ci/run installs it (.ci/run, .ci/install.d/)"))
}

/// Runs `command` with `stdin` written to it and stdout and stderr piped
/// back; the child is waited for, so it is reaped however it ends.
#[cfg_attr(
    not(feature = "inject"),
    allow(dead_code, reason = "its callers test inject and the webhook")
)]
pub fn piped(command: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A Python that sleeps with `marker` as its last argument, once it runs
/// as Python itself: `python3` may be a wrapper script (pyenv's shim is a
/// bash script that execs the real one), whose command line holds the
/// marker too and disappears at that exec (its name, `comm`, is already
/// `python3`: the executable is what tells). The process must not change
/// under the pgrep comparisons.
pub async fn marked_sleeper(marker: &str) -> Process {
    let child = Process(
        Command::new(tool("python3"))
            .args(["-c", "import time; time.sleep(600)", marker])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    eventually(
        Duration::from_secs(10),
        "the child runs Python with its marker",
        || async {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python"))
            }) && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
        },
    )
    .await;
    child
}
