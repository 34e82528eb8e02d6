//! `process`: whether a process whose command line matches a pattern
//! runs, as `pgrep -f PATTERN` (procps `src/pgrep.c`, as Debian bookworm's
//! procps 4.0.2): every process in `/proc` but pgrep itself; with `-f` the
//! pattern is matched against the command line, its arguments joined by
//! spaces and cut at 4096 bytes (`CMDSTRSIZE`), or, when the command line
//! is empty (kernel threads, zombies), the name in brackets as libproc2
//! writes it, `[kthreadd]`, with ` <defunct>` after a zombie's; exit 0 when
//! one matched, 1 when none did.
//!
//! The sidecar sees the app's processes only when the pod shares its
//! process namespace (`shareProcessNamespace: true`); otherwise it sees
//! its own, and the check fails. The pattern is a regex-lite expression
//! where pgrep takes a POSIX extended one: the same for the patterns
//! probes use (words, `.`, `*`, `^`, `$`, alternations, classes).

use std::time::Duration;

use super::{Outcome, Reason};
use crate::config::ProcessSpec;

/// pgrep's `CMDSTRSIZE`: the most of a command line matched.
const MAX_CMDLINE: usize = 4096;

/// The most processes looked at in one run.
const MAX_PROCESSES: usize = 32_768;

/// A prepared process check.
#[derive(Debug)]
pub struct ProcessCheck {
    spec: ProcessSpec,
}

impl ProcessCheck {
    /// Prepares a process check.
    pub fn new(spec: ProcessSpec) -> Self {
        ProcessCheck { spec }
    }

    /// Scans `/proc` once, within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let pattern = self.spec.pattern.clone();
        let scan = tokio::task::spawn_blocking(move || scan(&pattern));
        match tokio::time::timeout(timeout, scan).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::unknown(format!("the scan of /proc failed: {e}")),
            Err(_) => Outcome::failure(Reason::Timeout, "pgrep: /proc not scanned within the timeout"),
        }
    }
}

/// The first process whose command line matches, as pgrep -f.
fn scan(pattern: &crate::config::Pattern) -> Outcome {
    let own = std::process::id();
    let entries = match std::fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(e) => return Outcome::unknown(format!("cannot list /proc: {}", super::describe_io(&e))),
    };
    let mut buf = Vec::with_capacity(MAX_CMDLINE);
    let mut path = String::with_capacity(32);
    let mut seen = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own {
            continue;
        }
        seen += 1;
        if seen > MAX_PROCESSES {
            break;
        }
        if !command_line(pid, &mut buf, &mut path) {
            continue;
        }
        if pattern.is_match(&buf) {
            return Outcome::success(format!(
                "{pid} {}",
                super::one_line(&String::from_utf8_lossy(&buf))
            ));
        }
    }
    Outcome::failure(
        Reason::NoProcess,
        format!("pgrep -f {:?}: no process matched", pattern.as_str()),
    )
}

/// Reads what pgrep -f matches of `pid` into `buf`: the command line with
/// its NULs as spaces, or the name when it is empty. False when the
/// process is gone. `path` is scratch, kept across calls so that a scan
/// does not allocate a path per process.
fn command_line(pid: u32, buf: &mut Vec<u8>, path: &mut String) -> bool {
    use std::fmt::Write as _;
    use std::io::Read as _;
    buf.clear();
    path.clear();
    let _ = write!(path, "/proc/{pid}/cmdline");
    let Ok(file) = std::fs::File::open(&*path) else {
        return false;
    };
    if file.take(MAX_CMDLINE as u64 - 1).read_to_end(buf).is_err() {
        return false;
    }
    while buf.last() == Some(&0) {
        buf.pop();
    }
    if buf.is_empty() {
        // `(name) S ...`: the name may hold spaces and parentheses; the
        // state follows its last `)`.
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let (Some(open), Some(close)) = (
            stat.iter().position(|b| *b == b'('),
            stat.iter().rposition(|b| *b == b')'),
        ) else {
            return false;
        };
        buf.push(b'[');
        buf.extend_from_slice(stat.get(open + 1..close).unwrap_or_default());
        buf.push(b']');
        if stat.get(close + 2) == Some(&b'Z') {
            buf.extend_from_slice(b" <defunct>");
        }
        return true;
    }
    for b in buf.iter_mut() {
        if *b == 0 {
            *b = b' ';
        }
    }
    true
}
