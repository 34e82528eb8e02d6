//! What runs in a pod: the app container (an HTTP server whose listener
//! lives in the pod's namespace) and the real healthproxy binary, started
//! inside the namespace with `ip netns exec`.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::net::Net;
use crate::support::{collect_logs, log_lines};

/// The app's port in every pod.
pub const APP_PORT: u16 = 8080;
/// The sidecar's port in every pod.
pub const SIDECAR_PORT: u16 = 9775;
/// The token of `drain.token_file` in the pods that have one.
pub const TOKEN: &str = "pod-suite-token";

/// One app container: `/` answers `hello` (the traffic), `/healthz` the
/// status it is set to. Stopping it is SIGTERM to a well-behaved server:
/// the listener closes at once, requests under way finish.
pub struct App {
    health: Arc<AtomicU16>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    /// A new container of the app in `net`, listening at once.
    pub fn start(net: &Net) -> App {
        let listener = tokio::net::TcpListener::from_std(net.bind(APP_PORT)).unwrap();
        let health = Arc::new(AtomicU16::new(200));
        let code = Arc::clone(&health);
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "hello" }))
            .route(
                "/healthz",
                axum::routing::get(move || {
                    let code = code.load(Ordering::SeqCst);
                    async move { (axum::http::StatusCode::from_u16(code).unwrap(), "health") }
                }),
            );
        let stop = CancellationToken::new();
        let signal = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(signal).await;
        });
        App { health, stop, task }
    }

    /// What `/healthz` answers from now on.
    pub fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }

    /// SIGTERM: stops listening at once, returns once every request under
    /// way has been answered and the container has exited.
    pub async fn terminate(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The real healthproxy in a pod's namespace, killed on drop.
pub struct Sidecar {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// Where the kubelet reaches it: the pod IP.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts healthproxy in `net` on `config` (the `[drain]` and checks;
    /// the listen address is the pod's `[::]:9775`), with `token` as its
    /// `drain.token_file` when given; returns once it serves.
    pub fn start(net: &Net, config: &str, token: Option<&str>) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            r#"listen = "[::]:{SIDECAR_PORT}"
{config}"#
        );
        if let Some(token) = token {
            let path = dir.path().join("token");
            std::fs::write(&path, format!("{token}\n")).unwrap();
            text = text.replacen(
                "[drain]\n",
                &format!("[drain]\ntoken_file = \"{}\"\n", path.display()),
                1,
            );
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = net
            .command(env!("CARGO_BIN_EXE_healthproxy").as_ref())
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (logs, _) = collect_logs(&mut child, "healthproxy serving");
        Sidecar {
            child,
            logs,
            addr: net.addr(SIDECAR_PORT),
            _dir: dir,
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        log_lines(&self.logs, needle)
    }

    /// SIGTERM, as the kubelet stops a container.
    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// The exit code once the process has exited, waiting at most `within`.
    pub async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
