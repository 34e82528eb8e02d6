//! Shared test support: the real binary on an ephemeral port, a small app
//! whose health can be switched, an HTTP client, bounded waiting, the
//! installed tools the tests drive, and reading the metrics text.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The built `healthproxy` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_healthproxy"))
}

/// Runs `command` with `stdin` written to it and stdout and stderr piped
/// back; the child is waited for, so it is reaped however it ends.
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

/// Polls `what` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// Sends one request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A small app on 127.0.0.1 whose `/healthz` and `/started` answer the
/// statuses they are set to (200 unless started otherwise); dropping it closes its
/// listener, as a killed container's closes.
pub struct App {
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    started: Arc<AtomicU16>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl App {
    pub async fn start() -> App {
        App::start_on(0, 200, 200).await
    }

    /// The app on `port` (0: any free one), `/healthz` answering `healthz`
    /// and `/started` answering `started` from its first request.
    pub async fn start_on(port: u16, healthz: u16, started: u16) -> App {
        let (status, started) = (
            Arc::new(AtomicU16::new(healthz)),
            Arc::new(AtomicU16::new(started)),
        );
        let answer = |code: &Arc<AtomicU16>| {
            let code = Arc::clone(code);
            axum::routing::get(move || {
                let code = code.load(Ordering::SeqCst);
                async move { (axum::http::StatusCode::from_u16(code).unwrap(), "health") }
            })
        };
        let app = axum::Router::new()
            .route("/healthz", answer(&status))
            .route("/started", answer(&started));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        App {
            addr,
            status,
            started,
            task: Some(task),
        }
    }

    /// The status of `/healthz`.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// The status of `/started`.
    pub fn set_started(&self, code: u16) {
        self.started.store(code, Ordering::SeqCst);
    }
}

impl App {
    /// Stops the app and returns once its listener is closed, so that the
    /// next app can listen on the same port at once.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Proxy {
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

    /// Sends a request with headers.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr, method, path, headers).await
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

/// A child process killed and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// The value of the series `name{labels}` in a metrics text (labels as the
/// text format writes them, sorted by name), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The lines of a metrics text that belong to `family`.
pub fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(family)).collect()
}

/// A port on 127.0.0.1 that refuses connections for as long as the
/// returned socket lives: bound, never listening. Unlike a listener bound
/// and dropped, no other process can take the port meanwhile.
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
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

/// Reads one answer from a kept-alive connection: its head without the
/// `date` line, and its body (none for `HEAD`); `None` if the connection
/// closes first.
pub async fn next_answer(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_only: bool,
) -> Option<String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut answer = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line))
            .await
            .expect("an answer within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
            length = n.trim().parse().unwrap();
        }
        if !line.starts_with("date: ") {
            answer.push_str(&line);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; if head_only { 0 } else { length }];
    stream.read_exact(&mut body).await.ok()?;
    Some(answer + &String::from_utf8_lossy(&body))
}

/// The number in field `name` of `/proc/PID/status` (`VmRSS`, `VmHWM`,
/// `Threads`): kB for the memory fields. The one reader of it for the
/// tests that watch what the sidecar holds.
pub fn proc_status(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}
