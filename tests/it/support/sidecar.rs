//! The real binary: `healthproxy run` on a port the kernel picks, its JSON
//! log lines kept as they come, and other subcommands run to completion.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{Reply, request};
use super::wait::eventually;

/// The built `healthproxy` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_healthproxy"))
}

/// A running `healthproxy run`, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Proxy {
    /// Starts the binary on `config` (its `listen` is forced to
    /// 127.0.0.1:0) and returns once it is listening.
    pub fn start(config: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut proxy = Proxy::spawn(&binary(), &path);
        proxy._dir = Some(dir);
        proxy
    }

    /// Starts `binary` on the config file at `config`, listening on
    /// 127.0.0.1:0, and returns once it is listening.
    pub fn spawn(binary: &Path, config: &Path) -> Proxy {
        Proxy::launch(Command::new(binary), config, "127.0.0.1:0")
    }

    /// Starts the binary on `config`, listening on `listen`, through
    /// `wrapper` (a command that execs its arguments, such as `prlimit
    /// --nofile=N:N --`; empty for none), and returns once it is listening.
    pub fn start_with(config: &str, listen: &str, wrapper: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        let mut proxy = Proxy::launch(command, &path, listen);
        proxy._dir = Some(dir);
        proxy
    }

    /// Starts `command` (the binary, with the environment the caller
    /// gives it) on `config`, listening on `listen`, and returns once it
    /// is listening.
    pub fn launch(mut command: Command, config: &Path, listen: &str) -> Proxy {
        let mut child = command
            .args(["run", "--log-format", "json", "--listen", listen, "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (logs, ready) = collect_logs(&mut child, "healthproxy serving");
        let addr = ready["listen"].as_str().unwrap().parse::<SocketAddr>().unwrap();
        Proxy {
            child,
            addr,
            logs,
            _dir: None,
        }
    }

    /// The config file of a proxy made by [`Proxy::start`].
    pub fn config_path(&self) -> PathBuf {
        self._dir
            .as_ref()
            .expect("started with Proxy::start")
            .path()
            .join("config.toml")
    }

    /// GET `path` on the proxy.
    pub async fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[]).await
    }

    /// Sends a request with headers.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr, method, path, headers).await
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        log_lines(&self.logs, needle)
    }

    /// Waits until a log line contains `needle` (the log arrives through a
    /// pipe, after the behaviour it reports); returns how many do.
    pub async fn wait_log(&self, needle: &str) -> usize {
        eventually(
            Duration::from_secs(10),
            &format!("a log line with {needle:?}"),
            || async { !self.log_lines(needle).is_empty() },
        )
        .await;
        self.log_lines(needle).len()
    }

    /// Waits for `path` to answer `status`.
    pub async fn wait_status(&self, path: &str, status: u16) {
        eventually(
            Duration::from_secs(20),
            &format!("{path} -> {status}"),
            || async { self.get(path).await.status == status },
        )
        .await;
    }

    /// Sends `signal` to the proxy.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Whether the proxy has exited, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the proxy to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "proxy did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` to completion, bounded by `within`.
pub async fn run_binary(args: &[&str], within: Duration) -> (i32, String) {
    let child = tokio::process::Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish within {within:?}"))
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON log lines `child` writes to stderr, kept as they come, and the
/// first line whose text holds `ready`, parsed, once it has come (30 s at
/// most: the process did not start otherwise).
pub fn collect_logs(child: &mut Child, ready: &'static str) -> (Arc<Mutex<Vec<String>>>, serde_json::Value) {
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(ready) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or_default());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let value = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no {ready:?} line: {:?}", logs.lock().unwrap()));
    (logs, value)
}

/// The lines of `logs` (from [`collect_logs`]) containing `needle`.
pub fn log_lines(logs: &Mutex<Vec<String>>, needle: &str) -> Vec<String> {
    let logs = logs.lock().unwrap();
    logs.iter().filter(|l| l.contains(needle)).cloned().collect()
}
