//! `grpc_listen`: the kubelet's `grpc` probes aimed at the sidecar, probed
//! by a client from another ecosystem (Python's grpcio-health-checking,
//! tests/it/grpc_health_client.py; `.ci/install.d/grpc-health.sh` installs
//! it). `Check` follows `/readyz`, `/livez`, `/startupz` and the container
//! paths as the app fails and recovers; `Watch` delivers each transition.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{App, Process, Proxy, eventually, tool};

fn client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/grpc_health_client.py")
}

/// The gRPC address the proxy logged at start.
async fn grpc_addr(proxy: &Proxy) -> SocketAddr {
    proxy.wait_log("healthproxy serving").await;
    let line = &proxy.log_lines("healthproxy serving")[0];
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    line["grpc_listen"].as_str().unwrap().parse().unwrap()
}

/// `Check` of each of `services`: the status name, or the error code's.
/// (Asynchronously: the app under test shares the test's runtime.)
async fn check(addr: SocketAddr, services: &[&str]) -> Vec<String> {
    let out = tokio::process::Command::new(tool("python3"))
        .arg(client())
        .arg("check")
        .arg(addr.to_string())
        .args(services)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

/// A `Watch` of `service` in a Python process; the statuses received.
struct Watch {
    _process: Process,
    received: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(addr: SocketAddr, service: &str) -> Watch {
        let mut child = Command::new(tool("python3"))
            .arg(client())
            .args(["watch", &addr.to_string(), service])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watch {
            _process: Process(child),
            received,
        }
    }

    async fn wait_for(&self, statuses: &[&str]) {
        eventually(
            Duration::from_secs(20),
            &format!("Watch receives {statuses:?}"),
            || async { self.received.lock().unwrap().as_slice() == statuses },
        )
        .await;
    }
}

/// The gRPC status that an HTTP probe's status code stands for.
fn as_grpc(status: u16) -> &'static str {
    match status {
        200 => "SERVING",
        503 => "NOT_SERVING",
        other => panic!("unexpected probe status {other}"),
    }
}

/// Asserts that every gRPC service answers as its HTTP endpoint does.
async fn check_follows_http(proxy: &Proxy, addr: SocketAddr) {
    let pairs = [
        ("readiness", "/readyz"),
        ("liveness", "/livez"),
        ("startup", "/startupz"),
        ("app/readiness", "/containers/app/readyz"),
        ("app/liveness", "/containers/app/livez"),
        ("", "/healthz"),
    ];
    let services: Vec<&str> = pairs.iter().map(|(s, _)| *s).collect();
    let grpc = check(addr, &services).await;
    for ((service, path), got) in pairs.iter().zip(&grpc) {
        let http = proxy.get(path).await.status;
        assert_eq!(got, as_grpc(http), "{service:?} against {path} ({http})");
    }
}

#[tokio::test]
async fn grpc_check_and_watch_follow_the_probes_as_the_app_fails_and_recovers() {
    let app = App::start().await;
    let proxy = Proxy::start(&format!(
        r#"grpc_listen = "127.0.0.1:0"
[[check]]
name = "web"
container = "app"
probes = ["liveness", "readiness"]
http = {{ port = {}, path = "/healthz" }}
period = "100ms"
failure_threshold = 1
"#,
        app.addr.port()
    ));
    let addr = grpc_addr(&proxy).await;
    proxy.wait_status("/readyz", 200).await;
    let watch = Watch::start(addr, "readiness");
    let unknown = Watch::start(addr, "nosuch/readiness");
    watch.wait_for(&["SERVING"]).await;
    check_follows_http(&proxy, addr).await;
    assert_eq!(
        check(addr, &["readiness", "liveness"]).await,
        ["SERVING", "SERVING"]
    );

    app.set_status(500);
    proxy.wait_status("/readyz", 503).await;
    proxy.wait_status("/livez", 503).await;
    check_follows_http(&proxy, addr).await;
    assert_eq!(
        check(addr, &["readiness", "liveness", "app/liveness", ""]).await,
        ["NOT_SERVING", "NOT_SERVING", "NOT_SERVING", "SERVING"],
        "the sidecar itself (\"\") does not depend on the app"
    );
    watch.wait_for(&["SERVING", "NOT_SERVING"]).await;

    app.set_status(200);
    proxy.wait_status("/readyz", 200).await;
    check_follows_http(&proxy, addr).await;
    watch.wait_for(&["SERVING", "NOT_SERVING", "SERVING"]).await;

    assert_eq!(
        check(
            addr,
            &["nosuch", "nosuch/liveness", "readyz", "grpc.health.v1.Health"]
        )
        .await,
        ["NOT_FOUND"; 4],
        "an unknown service is NOT_FOUND to Check"
    );
    unknown.wait_for(&["SERVICE_UNKNOWN"]).await;
}

#[tokio::test]
async fn grpc_readiness_fails_from_the_first_moment_of_a_drain() {
    let app = App::start().await;
    let proxy = Proxy::start(&format!(
        r#"grpc_listen = "127.0.0.1:0"
[drain]
min = "30s"
max = "60s"
[[check]]
name = "web"
probes = ["liveness", "readiness"]
http = {{ port = {}, path = "/healthz" }}
period = "100ms"
"#,
        app.addr.port()
    ));
    let addr = grpc_addr(&proxy).await;
    proxy.wait_status("/readyz", 200).await;
    let watch = Watch::start(addr, "readiness");
    watch.wait_for(&["SERVING"]).await;
    assert_eq!(proxy.send("POST", "/drain", &[]).await.status, 202);
    watch.wait_for(&["SERVING", "NOT_SERVING"]).await;
    assert_eq!(
        check(addr, &["readiness", "liveness"]).await,
        ["NOT_SERVING", "SERVING"],
        "draining must not restart the app"
    );
}

/// The gRPC endpoint's connection cap.
const GRPC_CONNECTIONS: usize = healthproxy::server::grpc::MAX_CONNECTIONS;

#[tokio::test]
async fn connections_left_open_are_capped_and_a_probe_still_gets_in() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = App::start().await;
    let proxy = Proxy::start(&format!(
        r#"grpc_listen = "127.0.0.1:0"
[[check]]
name = "web"
probes = ["liveness"]
tcp = {{ port = {} }}
"#,
        app.addr.port()
    ));
    let addr = grpc_addr(&proxy).await;
    let pid = proxy.child.id();
    let fds = move || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before = fds();
    // Three times the cap, left open: idle ones, and ones that sent half
    // of the HTTP/2 preface and stopped.
    let mut held = Vec::new();
    for i in 0..3 * GRPC_CONNECTIONS {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        held.push(stream);
    }
    // The sidecar takes every one in and closes the oldest to make room.
    eventually(
        Duration::from_secs(10),
        "the oldest connections to be closed",
        || async { fds() <= before + GRPC_CONNECTIONS + 4 },
    )
    .await;
    assert_eq!(check(addr, &["liveness"]).await, ["SERVING"], "a probe gets in");
    // The oldest: past the server's SETTINGS (and a GOAWAY, if it sends
    // one), closed by the sidecar.
    let mut sent = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), held[0].read_to_end(&mut sent)).await;
    assert!(
        matches!(closed, Ok(Ok(_) | Err(_))),
        "the oldest connection is closed by the sidecar ({} bytes read)",
        sent.len()
    );
    // The held ones do not stop the sidecar from serving HTTP either.
    assert_eq!(proxy.get("/livez").await.status, 200);
}
