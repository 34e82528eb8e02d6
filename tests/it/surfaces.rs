//! Attacks on the surfaces beside the probe port: the gRPC health endpoint
//! (`grpc_listen`) and the admission webhook, each run against the real
//! binary under the memory limit `deploy/` ships for it (a memory cgroup
//! the test creates, as `limits.rs` does), with probers beside them that
//! must not miss an answer. `scripts/soak --attacks` runs them too, larger.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use healthproxy::server::grpc::{MAX_CONNECTIONS as MAX_GRPC_CONNECTIONS, MAX_WATCHES};

use crate::limits::{MemoryCgroup, raise_own_fd_limit, scale, usage};
use crate::support::{App, Prober, Proxy, assert_no_probe_lost, eventually};

/// The sidecar's memory budget with the gRPC endpoint, the default
/// `[server]` limits and one check (README, "Limits and failure
/// behaviour").
const GRPC_BUDGET: u64 =
    healthproxy::server::memory_budget(healthproxy::config::DEFAULT_MAX_CONNECTIONS, 1, true);

/// The memory limit `deploy/grpc` ships for it (96 MiB; tests/it/deploy.rs
/// checks that the manifest says so).
const GRPC_MEMORY_LIMIT: u64 = healthproxy::server::memory_limit(GRPC_BUDGET);

/// The gRPC address the proxy logged at start.
async fn grpc_addr(proxy: &Proxy) -> SocketAddr {
    proxy.wait_log("healthproxy serving").await;
    let line = &proxy.log_lines("healthproxy serving")[0];
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    line["grpc_listen"].as_str().unwrap().parse().unwrap()
}

/// A sidecar with the gRPC endpoint and one liveness check of a live app.
async fn grpc_sidecar(app: &App) -> (Proxy, SocketAddr) {
    let proxy = Proxy::start(&format!(
        r#"grpc_listen = "127.0.0.1:0"
[[check]]
name = "web"
probes = ["liveness"]
tcp = {{ port = {} }}
period = "1s"
"#,
        app.addr.port()
    ));
    let addr = grpc_addr(&proxy).await;
    (proxy, addr)
}

/// One gRPC `Check` of `service` on a fresh connection, as the kubelet's
/// `grpc` probe makes it: its status name within 1 s, or why not.
async fn grpc_check_once(addr: SocketAddr, service: &str) -> Result<String, String> {
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?;
        Ok(reply.into_inner().status().as_str_name().to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// A kubelet-like `grpc` prober: a `Check` of `service` on a fresh
/// connection every 100 ms, 1 s timeout, on a thread and runtime of its
/// own; `SERVING` is a pass.
fn grpc_prober(addr: SocketAddr, service: &'static str) -> Prober {
    Prober::with(Duration::from_secs(60), move |runtime| {
        match runtime.block_on(grpc_check_once(addr, service)) {
            Ok(status) if status == "SERVING" => Ok(()),
            Ok(other) => Err(other),
            Err(e) => Err(e),
        }
    })
}

/// The five bytes before a gRPC message: not compressed, `length` long.
fn message_prefix(length: u32) -> Bytes {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&length.to_be_bytes());
    Bytes::from(prefix)
}

/// Sends `data` on `send` as the peer's flow control lets it, counting
/// it in `sent`; returns when all is sent or the stream is closed.
async fn send_flow_controlled(send: &mut h2::SendStream<Bytes>, mut data: Bytes, sent: &AtomicUsize) {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) if n > 0 => n,
            Some(Ok(_)) => continue,
            _ => return,
        };
        let chunk = data.split_to(granted.min(data.len()));
        let n = chunk.len();
        if send.send_data(chunk, false).is_err() {
            return;
        }
        sent.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the gRPC attack did.
#[derive(Debug, Default)]
struct Attacked {
    /// Streams opened.
    streams: AtomicUsize,
    /// Bytes of message sent.
    bytes: AtomicUsize,
    /// Streams answered (with an error, or a status), or reset.
    answered: AtomicUsize,
}

/// `connections` HTTP/2 connections to `addr`, each with `streams` streams
/// at once that call `Check` with a message claiming `claim` bytes, send
/// `sent` of them as flow control allows, and never finish; a stream the
/// server ends is opened again at once, and a closed connection too, until
/// `stop`. The connections open one every 25 ms.
async fn unfinished_messages(
    addr: SocketAddr,
    connections: usize,
    streams: usize,
    claim: u32,
    sent: usize,
    stop: Arc<AtomicBool>,
    attacked: Arc<Attacked>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (stop, attacked) = (Arc::clone(&stop), Arc::clone(&attacked));
        tasks.spawn(async move {
            // One more connection every 25 ms: a debug build on a loaded
            // test machine answers the probes beside a burst of them late.
            tokio::time::sleep(Duration::from_millis(25) * i as u32).await;
            while !stop.load(Ordering::Acquire) {
                let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok((client, connection)) = h2::client::handshake(tcp).await else {
                    continue;
                };
                let connection = tokio::spawn(connection);
                let mut slots = tokio::task::JoinSet::new();
                for _ in 0..streams {
                    let (client, stop, attacked) = (client.clone(), Arc::clone(&stop), Arc::clone(&attacked));
                    slots.spawn(async move {
                        while !stop.load(Ordering::Acquire) {
                            let Ok(mut client) = client.clone().ready().await else {
                                return;
                            };
                            let request =
                                hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
                                    .header("content-type", "application/grpc")
                                    .header("te", "trailers")
                                    .header("x-pad", "p".repeat(4 << 10))
                                    .body(())
                                    .unwrap();
                            let Ok((response, mut send)) = client.send_request(request, false) else {
                                return;
                            };
                            attacked.streams.fetch_add(1, Ordering::Relaxed);
                            let mut message = message_prefix(claim).to_vec();
                            message.resize(5 + sent, b'x');
                            let message = Bytes::from(message);
                            let feed = async {
                                send_flow_controlled(&mut send, message, &attacked.bytes).await;
                                std::future::pending::<()>().await;
                            };
                            tokio::select! {
                                _ = response => {}
                                () = feed => {}
                            }
                            attacked.answered.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                while slots.join_next().await.is_some() {}
                connection.abort();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs `attack` against a sidecar with the gRPC endpoint under the
/// memory limit deploy/grpc ships, with an HTTP prober of `/livez` and a
/// gRPC prober of `liveness` beside it; both must get every answer, and
/// the sidecar must stay under its budget and the cgroup's limit.
async fn under_grpc_attack(
    name: &str,
    attack: impl FnOnce(SocketAddr, Arc<AtomicBool>) -> tokio::task::JoinHandle<()>,
    sent: impl Fn() -> usize,
) {
    raise_own_fd_limit();
    let app = App::start().await;
    let (mut proxy, addr) = grpc_sidecar(&app).await;
    let pid = proxy.child.id();
    let cgroup = MemoryCgroup::create(name, GRPC_MEMORY_LIMIT);
    if let Some(cgroup) = &cgroup {
        cgroup.add(pid);
    }
    let before = usage(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let attack = attack(addr, Arc::clone(&stop));
    let http = Prober::start(proxy.addr, "/livez");
    let grpc = grpc_prober(addr, "liveness");
    // Three seconds of probes at the least, and until the attack has sent
    // more than the memory limit or for 20 s.
    http.wait_probes(30).await;
    grpc.wait_probes(20).await;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(20);
    while sent() < GRPC_MEMORY_LIMIT as usize * 3 / 2 && Instant::now() < deadline {
        if let Some(status) = proxy.exited() {
            panic!(
                "{name}: the sidecar died ({status:?}) after {:?} of attack, {} MiB sent",
                began.elapsed(),
                sent() >> 20
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = usage(pid);
    stop.store(true, Ordering::Release);
    let (http, grpc) = (http.finish(), grpc.finish());
    attack.abort();
    let _ = attack.await;
    eprintln!(
        "{name}: limit {} MiB, budget {} MiB; {} MiB sent in {:?}; sidecar before {before:?}, \
         during {during:?}; http prober {http:?}; grpc prober {grpc:?}",
        GRPC_MEMORY_LIMIT >> 20,
        GRPC_BUDGET >> 20,
        sent() >> 20,
        began.elapsed(),
    );
    assert!(
        proxy.exited().is_none(),
        "{name}: the sidecar died: {:?}",
        proxy.exited()
    );
    assert_no_probe_lost(&http, &format!("{name}, /livez"));
    assert_no_probe_lost(&grpc, &format!("{name}, gRPC Check"));
    assert!(
        during.peak_rss < GRPC_BUDGET,
        "{name}: peak RSS {} MiB over the {} MiB budget",
        during.peak_rss >> 20,
        GRPC_BUDGET >> 20
    );
    if let Some(cgroup) = &cgroup {
        assert_eq!(
            cgroup.limit_hits(),
            0,
            "{name}: the cgroup's memory limit was reached"
        );
    }
    // The connections the attack left open are still held.
    let after = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match grpc_check_once(addr, "liveness").await {
                Ok(status) => return status,
                Err(e) => eprintln!("{name}: a check after the attack: {e}"),
            }
        }
    });
    assert_eq!(
        after.await.as_deref(),
        Ok("SERVING"),
        "{name}: a gRPC Check after the attack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_claiming_megabytes_never_finished_cannot_exhaust_memory() {
    // Issue 27: two connections of 16 streams each, each a Check whose
    // message claims 4 MiB and never ends, OOM-killed the sidecar under
    // the 96 MiB limit of deploy/grpc in 0.8 s.
    let attacked = Arc::new(Attacked::default());
    let seen = Arc::clone(&attacked);
    under_grpc_attack(
        "grpc-4mib",
        move |addr, stop| {
            tokio::spawn(unfinished_messages(
                addr,
                16 * scale(),
                16,
                4 << 20,
                4 << 20,
                stop,
                seen,
            ))
        },
        || attacked.bytes.load(Ordering::Relaxed),
    )
    .await;
    eprintln!("grpc-4mib: attack {attacked:?}");
    assert!(attacked.streams.load(Ordering::Relaxed) >= 32, "{attacked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_small_messages_never_finished_are_bounded_in_time_and_memory() {
    // Within the message bound but never finished, behind 4 KiB header
    // blocks, as many streams as a connection may have: each stream is held until the request timeout, on
    // nearly as many connections as the cap allows (at the cap, the
    // attack's own reconnections would evict its connections).
    let attacked = Arc::new(Attacked::default());
    let seen = Arc::clone(&attacked);
    under_grpc_attack(
        "grpc-unfinished",
        move |addr, stop| {
            tokio::spawn(unfinished_messages(
                addr,
                MAX_GRPC_CONNECTIONS - 8,
                4,
                1000,
                999,
                stop,
                seen,
            ))
        },
        || attacked.bytes.load(Ordering::Relaxed),
    )
    .await;
    eprintln!("grpc-unfinished: attack {attacked:?}");
}

/// The CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The CPU ticks `pid` uses while 2,000 check runs are recorded (counted
/// in the metrics), and how long that took.
async fn cpu_over_runs(proxy: &Proxy, pid: u32) -> (u64, Duration) {
    let runs = || async {
        let metrics = proxy.get("/metrics").await.body;
        crate::support::series(&metrics, "healthproxy_check_runs_total")
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (began, ticks, start) = (Instant::now(), cpu_ticks(pid), runs().await);
    loop {
        if runs().await >= start + 2000.0 {
            return (cpu_ticks(pid) - ticks, began.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `Watch` of `service` on `channel`: the statuses it receives, as they
/// come, and the error that ended it, if one did.
fn watch(
    channel: tonic::transport::Channel,
    service: &str,
) -> (
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<Option<tonic::Status>>,
) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let task = tokio::spawn(async move {
        let mut stream = match HealthClient::new(channel).watch(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => return Some(status),
        };
        loop {
            match stream.message().await {
                Ok(Some(reply)) => sink
                    .lock()
                    .unwrap()
                    .push(reply.status().as_str_name().to_string()),
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    });
    (received, task)
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_streams_hear_of_changes_only_and_are_capped() {
    // Issue 27: every check run woke every Watch stream. 100 checks at
    // 100 ms, and one that the test flips.
    let app = App::start().await;
    let mut config = format!(
        r#"grpc_listen = "127.0.0.1:0"
[[check]]
name = "web"
probes = ["readiness"]
http = {{ port = {}, path = "/healthz" }}
period = "100ms"
failure_threshold = 1
"#,
        app.addr.port()
    );
    for i in 0..100 {
        config.push_str(&format!(
            r#"[[check]]
name = "steady-{i}"
probes = ["liveness"]
tcp = {{ port = {} }}
period = "100ms"
"#,
            app.addr.port()
        ));
    }
    let proxy = Proxy::start(&config);
    let addr = grpc_addr(&proxy).await;
    let pid = proxy.child.id();
    proxy.wait_status("/readyz", 200).await;

    let (received, _task) = watch(channel(addr).await, "readiness");
    let seen = || received.lock().unwrap().clone();
    eventually(Duration::from_secs(10), "the first status", || async {
        seen() == ["SERVING"]
    })
    .await;
    app.set_status(500);
    eventually(Duration::from_secs(10), "NOT_SERVING", || async {
        seen() == ["SERVING", "NOT_SERVING"]
    })
    .await;
    app.set_status(200);
    eventually(Duration::from_secs(10), "SERVING again", || async {
        seen() == ["SERVING", "NOT_SERVING", "SERVING"]
    })
    .await;

    // The CPU of 2,000 runs without and with Watch streams: as many as
    // the endpoint serves, 4 to a connection (its stream limit), and four
    // times as many asked for.
    let (alone, alone_took) = cpu_over_runs(&proxy, pid).await;
    let mut streams = Vec::new();
    let mut shared = None;
    for i in 0..4 * MAX_WATCHES {
        if i % 4 == 0 {
            shared = Some(channel(addr).await);
        }
        streams.push(watch(shared.clone().unwrap(), "liveness"));
    }
    // Each has its first status, or its refusal.
    eventually(
        Duration::from_secs(30),
        "every Watch to start or be refused",
        || async {
            streams
                .iter()
                .all(|(r, task)| r.lock().unwrap().len() == 1 || task.is_finished())
        },
    )
    .await;
    let (watched, watched_took) = cpu_over_runs(&proxy, pid).await;
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for (received, task) in streams {
        if task.is_finished() {
            refused.push(task.await.unwrap().expect("ended with an error"));
        } else {
            assert_eq!(*received.lock().unwrap(), ["SERVING"], "no run changed a verdict");
            open.push(task);
        }
    }
    eprintln!(
        "watch: 2,000 runs took {alone} ticks ({alone_took:?}) alone, {watched} ticks ({watched_took:?}) \
         with {} Watch streams open ({} refused)",
        open.len() + 1,
        refused.len()
    );
    assert_eq!(
        seen(),
        ["SERVING", "NOT_SERVING", "SERVING"],
        "no run changed a verdict"
    );
    assert_eq!(open.len() + 1, MAX_WATCHES, "the Watch streams open at once");
    for status in &refused {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    }
    assert!(
        watched <= alone * 3 / 2 + 10,
        "{} Watch streams took the CPU of 2,000 runs from {alone} to {watched} ticks",
        open.len() + 1
    );
    // Check calls are not Watch streams.
    assert_eq!(grpc_check_once(addr, "liveness").await.as_deref(), Ok("SERVING"));
    // A Watch that ends gives its place back.
    open.pop().unwrap().abort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Each try waits for its first status or its refusal, so that a
        // stream that got the place is never left behind unseen.
        let (received, task) = watch(channel(addr).await, "liveness");
        eventually(Duration::from_secs(10), "a status or a refusal", || async {
            !received.lock().unwrap().is_empty() || task.is_finished()
        })
        .await;
        if received.lock().unwrap().as_slice() == ["SERVING"] {
            break;
        }
        assert!(Instant::now() < deadline, "no place for a new Watch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The memory limit deploy/webhook ships (tests/it/deploy.rs reads it).
#[cfg(feature = "webhook")]
const WEBHOOK_MEMORY_LIMIT: u64 = 128 << 20;

/// What a body attack did.
#[cfg(feature = "webhook")]
#[derive(Debug, Default)]
struct Dripped {
    connections: AtomicUsize,
    bytes: AtomicUsize,
    /// Connections the webhook closed or answered before the body ended.
    cut: AtomicUsize,
}

/// `connections` TLS connections to the webhook's `/mutate`, each sending
/// a body of `length` bytes 64 KiB every 20 ms, all but its last byte, and
/// then holding it; one the webhook closes is opened again, until `stop`.
#[cfg(feature = "webhook")]
async fn dripped_bodies(
    webhook: &crate::webhook::Webhook,
    connections: usize,
    length: usize,
    stop: Arc<AtomicBool>,
    dripped: Arc<Dripped>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (addr, client) = (webhook.addr, webhook.client.clone());
        let (stop, dripped) = (Arc::clone(&stop), Arc::clone(&dripped));
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(10) * i as u32).await;
            while !stop.load(Ordering::Acquire) {
                let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), client.connect(name, tcp)).await else {
                    continue;
                };
                dripped.connections.fetch_add(1, Ordering::Relaxed);
                let (mut read, mut write) = tokio::io::split(tls);
                let head = format!(
                    "POST /mutate HTTP/1.1\r\nhost: healthproxy-webhook\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
                );
                let drip = async {
                    write.write_all(head.as_bytes()).await?;
                    let chunk = vec![b' '; 64 << 10];
                    let mut left = length - 1;
                    let mut pace = tokio::time::interval(Duration::from_millis(20));
                    while left > 0 {
                        pace.tick().await;
                        let n = left.min(chunk.len());
                        write.write_all(&chunk[..n]).await?;
                        dripped.bytes.fetch_add(n, Ordering::Relaxed);
                        left -= n;
                    }
                    std::future::pending::<std::io::Result<()>>().await
                };
                let mut answer = [0u8; 1];
                let stopped = async {
                    while !stop.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                tokio::select! {
                    _ = drip => {}
                    _ = read.read(&mut answer) => {}
                    () = stopped => return,
                }
                dripped.cut.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bodies_sent_slowly_cannot_exhaust_memory() {
    // Issue 27: 25 connections each sending 4 MB slowly OOM-killed the
    // webhook under its 128 MiB limit in 1.7 s.
    use crate::webhook::{Ca, Webhook, api_pod, review};
    raise_own_fd_limit();
    let ca = Ca::new();
    let mut webhook = Webhook::start(&ca, &[]);
    let pid = webhook.process.0.id();
    let budget = healthproxy::webhook::serve::memory_budget();
    assert!(healthproxy::server::memory_limit(budget) <= WEBHOOK_MEMORY_LIMIT);
    let cgroup = MemoryCgroup::create("webhook-bodies", WEBHOOK_MEMORY_LIMIT);
    if let Some(cgroup) = &cgroup {
        cgroup.add(pid);
    }
    let before = usage(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let dripped = Arc::new(Dripped::default());
    let attack = dripped_bodies(
        &webhook,
        25 * scale(),
        4_000_000,
        Arc::clone(&stop),
        Arc::clone(&dripped),
    );
    let healthz = Prober::start(webhook.admin, "/healthz");
    // The API server's calls beside it: a pod to admit every 100 ms, each
    // answered within the 5 s deploy/webhook gives.
    let pod = review(&api_pod(None), "kubernetes-admin");
    let body = serde_json::to_vec(&pod).unwrap();
    let admissions = async {
        let mut seen = crate::support::Seen::default();
        let began = Instant::now();
        while seen.probes < 50
            || dripped.bytes.load(Ordering::Relaxed) < 150 << 20 && began.elapsed() < Duration::from_secs(20)
        {
            let at = Instant::now();
            let result =
                tokio::time::timeout(Duration::from_secs(5), webhook.post("/mutate", body.clone())).await;
            seen.probes += 1;
            seen.slowest = seen.slowest.max(at.elapsed());
            match result {
                Ok(Ok((200, _, _))) => {}
                other => seen.failures.push(format!(
                    "at {:?}: {:?}",
                    at.duration_since(began),
                    other
                        .map(|r| r
                            .map(|(status, body, _)| (status, String::from_utf8_lossy(&body).to_string())))
                )),
            }
            tokio::time::sleep(Duration::from_millis(100).saturating_sub(at.elapsed())).await;
        }
        stop.store(true, Ordering::Release);
        seen
    };
    let (mutate, ()) = tokio::join!(admissions, attack);
    let during = usage(pid);
    let healthz = healthz.finish();
    eprintln!(
        "webhook bodies: limit {} MiB, budget {} MiB; attack {dripped:?}; webhook before {before:?}, \
         after {during:?}; /healthz {healthz:?}; /mutate {mutate:?}",
        WEBHOOK_MEMORY_LIMIT >> 20,
        budget >> 20
    );
    assert!(
        webhook.process.0.try_wait().unwrap().is_none(),
        "the webhook died"
    );
    assert_no_probe_lost(&healthz, "dripped bodies, /healthz");
    assert_no_probe_lost(&mutate, "dripped bodies, /mutate");
    assert!(
        during.peak_rss < budget + (32 << 20),
        "peak RSS {} MiB, budget {} MiB",
        during.peak_rss >> 20,
        budget >> 20
    );
    if let Some(cgroup) = &cgroup {
        assert_eq!(cgroup.limit_hits(), 0, "the cgroup's memory limit was reached");
    }
    assert!(
        dripped.bytes.load(Ordering::Relaxed) >= 100 << 20,
        "the attack sent what would not fit: {dripped:?}"
    );
}

/// Whether one of `webhook`'s log lines holds every one of `needles`.
#[cfg(feature = "webhook")]
fn logged(webhook: &crate::webhook::Webhook, needles: &[&str]) -> bool {
    webhook
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

#[cfg(feature = "webhook")]
#[tokio::test]
async fn webhook_certificate_files_are_read_bounded_and_off_the_runtime() {
    // Issue 27: a certificate path to /dev/zero froze the webhook.
    use crate::webhook::{Ca, Webhook, api_pod, review};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("tls.crt");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // At start: a clear error, exit 2, never a blocked start.
    for (cert, expected) in [
        (fifo.display().to_string(), "is a FIFO, not a regular file"),
        (
            "/dev/zero".to_string(),
            "is a character device, not a regular file",
        ),
    ] {
        let (code, stderr) = crate::support::run_binary(
            &[
                "webhook",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &cert,
            ],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(code, 2, "{cert}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot read {cert}: {expected}")),
            "{stderr}"
        );
    }

    // On reload: the file becomes /dev/zero. The pair served stays, the
    // webhook keeps answering, and says why.
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    let pid = webhook.process.0.id();
    let cert = webhook.dir.path().join("tls.crt");
    let link = webhook.dir.path().join("tls.crt.new");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    std::fs::rename(&link, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged(
        &webhook,
        &["not reloaded", "is a character device, not a regular file"],
    ) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {:?}",
            webhook.logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let response = webhook.admit(&review(&api_pod(None), "kubernetes-admin")).await;
        assert!(response.get("patch").is_some(), "{response}");
        assert_eq!(
            crate::support::request(webhook.admin, "GET", "/healthz", &[])
                .await
                .status,
            200
        );
    }
    let usage = usage(pid);
    assert!(usage.peak_rss < 64 << 20, "{usage:?}");
}

#[cfg(feature = "webhook")]
#[tokio::test]
async fn an_expired_webhook_certificate_is_warned_about_and_its_expiry_exported() {
    use crate::webhook::{Ca, Webhook};
    let ca = Ca::new();
    let (cert, key) = ca.serving_expired();
    let webhook = Webhook::start_pair(&ca, (&cert, &key), &[], &[]);
    eventually(Duration::from_secs(10), "the warning", || async {
        logged(
            &webhook,
            &["WARN", "the serving certificate expired", "failurePolicy"],
        )
    })
    .await;
    let metrics = crate::support::request(webhook.admin, "GET", "/metrics", &[])
        .await
        .body;
    assert_eq!(
        crate::support::metric(
            &metrics,
            "healthproxy_webhook_certificate_expiry_timestamp_seconds"
        ),
        // 2021-01-01T00:00:00Z
        Some(1_609_459_200.0),
        "{metrics}"
    );
}
