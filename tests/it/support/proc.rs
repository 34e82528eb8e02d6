//! What `/proc` says about a process, and a guard that reaps a child. Only
//! the standard library: `tests/leaks.rs` includes this file alone.

use std::process::Child;

/// The text of field `name` of `/proc/PID/status` (`SigCgt`, `VmRSS`),
/// after its colon and trimmed; `None` if the process or the field is not
/// there.
pub fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim().to_string()))
}

/// The number in field `name` of `/proc/PID/status` (`VmRSS`, `VmHWM`,
/// `Threads`): kB for the memory fields. The one reader of it for the
/// tests that watch what a process holds.
pub fn proc_status(pid: u32, name: &str) -> u64 {
    status_field(pid, name)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// The file descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A child process killed and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
