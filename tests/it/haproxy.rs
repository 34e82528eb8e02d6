//! A rolling drain behind a real load balancer: two demo-app + healthproxy
//! pairs behind HAProxy, which health-checks each pair's `/readyz`. One pair
//! is drained through `/prestop` and then stopped as the kubelet would
//! (SIGTERM to its containers once the hook has returned) while a bounded
//! load runs through HAProxy. No request may fail.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{Process, Proxy, eventually, free_port, request, tool};

/// Load-generating clients running at once.
const CLIENTS: usize = 8;
/// Hard cap on requests, whatever happens.
const MAX_REQUESTS: usize = 50_000;

/// The demo app binary, built on demand when the examples were not built.
pub(crate) fn demo_app() -> PathBuf {
    let bin = crate::support::binary();
    let path = bin.parent().unwrap().join("examples").join("demo-app");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "demo-app"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the demo app");
    }
    path
}

struct Pair {
    app: Process,
    app_port: u16,
    proxy: Proxy,
}

fn start_pair(dir: &std::path::Path, name: &str) -> Pair {
    let app_port = free_port();
    let app = Command::new(demo_app())
        .args(["--http", &format!("127.0.0.1:{app_port}")])
        .args(["--grpc", &format!("127.0.0.1:{}", free_port())])
        .arg("--heartbeat")
        .arg(dir.join(format!("{name}-heartbeat")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Proxy::start(&format!(
        r#"[drain]
min = "1s"
max = "15s"
ports = [{app_port}]
[[check]]
name = "web"
probes = ["liveness", "readiness"]
period = "200ms"
http = {{ port = {app_port}, path = "/healthz" }}
"#
    ));
    Pair {
        app: Process(app),
        app_port,
        proxy,
    }
}

/// The servers HAProxy sees as UP, from its CSV stats page.
async fn servers_up(stats: std::net::SocketAddr) -> Vec<String> {
    let csv = request(stats, "GET", "/stats;csv", &[]).await.body;
    csv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() > 17 && f[0] == "app" && f[1] != "FRONTEND" && f[1] != "BACKEND" && f[17] == "UP")
                .then(|| f[1].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_drain_behind_haproxy_loses_no_request() {
    let haproxy = tool("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let a = start_pair(dir.path(), "a");
    let mut b = start_pair(dir.path(), "b");
    for pair in [&a, &b] {
        pair.proxy.wait_status("/readyz", 200).await;
    }

    let (front, stats) = (free_port(), free_port());
    let config = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  timeout check 3s\n  retries 3\n  option redispatch\n  option http-server-close\n\
         listen app\n  bind 127.0.0.1:{front}\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n\
         \x20 default-server inter 200ms fall 1 rise 1\n\
         \x20 server a 127.0.0.1:{} check port {}\n\
         \x20 server b 127.0.0.1:{} check port {}\n\
         listen stats\n  bind 127.0.0.1:{stats}\n  stats enable\n  stats uri /stats\n",
        a.app_port,
        a.proxy.addr.port(),
        b.app_port,
        b.proxy.addr.port()
    );
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _lb = Process(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stats_addr = format!("127.0.0.1:{stats}").parse().unwrap();
    eventually(
        Duration::from_secs(20),
        "haproxy sees both servers UP",
        || async {
            tokio::net::TcpStream::connect(stats_addr).await.is_ok()
                && servers_up(stats_addr).await.len() == 2
        },
    )
    .await;

    // A bounded load through HAProxy, a fresh connection per request.
    let front_addr: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (sent, failed, stop) = (sent.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) && sent.fetch_add(1, Ordering::SeqCst) < MAX_REQUESTS {
                    if !get_ok(front_addr).await {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let at_least = |n: usize| {
        let sent = sent.clone();
        async move {
            eventually(Duration::from_secs(30), &format!("{n} requests sent"), || {
                let sent = sent.clone();
                async move { sent.load(Ordering::SeqCst) >= n }
            })
            .await
        }
    };
    at_least(300).await;

    // The kubelet deletes pod a: its preStop hook first...
    let Pair {
        app: mut app_a,
        proxy: mut proxy_a,
        ..
    } = a;
    let began = Instant::now();
    let prestop = proxy_a.get("/prestop").await;
    let hook = began.elapsed();
    assert_eq!(prestop.status, 200);
    let before_term = sent.load(Ordering::SeqCst);
    // ...then SIGTERM to every container once the hook has returned.
    let term = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(app_a.0.id() as i32), Signal::SIGTERM).unwrap();
    proxy_a.signal(Signal::SIGTERM);
    let status = proxy_a.wait_exit(Duration::from_secs(20)).await;
    let sidecar_exit = term.elapsed();
    let app_status = app_a.0.wait().unwrap();
    at_least(before_term + 300).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let (sent, failed) = (
        sent.load(Ordering::SeqCst).min(MAX_REQUESTS),
        failed.load(Ordering::SeqCst),
    );
    let figures = format!(
        "haproxy rolling drain: {sent} requests sent, {failed} failed; /prestop took {hook:?} ({}); \
         sidecar exited {sidecar_exit:?} after SIGTERM with {status:?}; app exited with {app_status:?}\n",
        prestop.body.trim()
    );
    print!("{figures}");
    // .ci/run prints this file, so the figures reach CI's log.
    std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("haproxy-drain.txt"),
        &figures,
    )
    .unwrap();
    assert_eq!(
        failed, 0,
        "no request may fail during a rolling drain ({sent} sent)"
    );
    assert_eq!(status.code(), Some(0), "the drained sidecar exits 0");
    assert!(
        hook >= Duration::from_secs(1),
        "the hook lasts at least drain.min: {hook:?}"
    );
    assert_eq!(servers_up(stats_addr).await, ["b"]);
    assert!(b.proxy.exited().is_none());
}

/// One GET through the load balancer; true for a 200.
async fn get_ok(addr: std::net::SocketAddr) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header("host", "app")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new());
        let resp = send.send_request(req.ok()?).await.ok()?;
        let ok = resp.status() == 200;
        http_body_util::BodyExt::collect(resp.into_body()).await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), attempt).await,
        Ok(Some(true))
    )
}
