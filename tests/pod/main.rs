//! The pod-network suite: the app and the real healthproxy inside a network
//! namespace of the test's own, joined to the root namespace by a veth
//! pair, driven from the root namespace over the pod address with the
//! kubelet's timing (see `kubelet`). Needs root (CAP_NET_ADMIN) and
//! iproute2, as `.ci/run` has; elsewhere every test prints why it is
//! skipped. Each test writes its figures to `target/tmp/pod-*.txt`, which
//! `.ci/run` prints. The mesh cases put HAProxy in the pod as Istio's or
//! Linkerd's proxy (`mesh`).

mod kubelet;
mod mesh;
mod net;
mod pod;
// The integration suite's helpers, written once for both suites; this one
// uses a few of them.
#[allow(dead_code, unused_imports)]
#[path = "../it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelet::{Balancer, Kubelet, app_addr, get, prestop, probe};
use mesh::Mesh;
use net::{Net, pod_or_skip};
use pod::{App, Sidecar, TOKEN};
use support::eventually;

/// The sidecar's checks of the app, quick so that the cases are.
const CHECKS: &str = r#"
[[check]]
name = "started"
probes = ["startup"]
http = { port = 8080, path = "/healthz" }
period = "200ms"

[[check]]
name = "alive"
probes = ["liveness"]
http = { port = 8080, path = "/healthz" }
period = "200ms"
failure_threshold = 1

[[check]]
name = "ready"
probes = ["readiness"]
http = { port = 8080, path = "/healthz" }
period = "200ms"
"#;

/// A config: `[drain]` on the app's port with `min` and `max`, and the
/// checks.
fn config(min: &str, max: &str) -> String {
    format!(
        r#"[drain]
ports = [8080]
min = "{min}"
max = "{max}"
{CHECKS}"#
    )
}

/// [`config`] for a pod whose traffic `mesh`'s proxy forwards.
fn config_in(mesh: Option<Mesh>, min: &str, max: &str) -> String {
    match mesh {
        None => config(min, max),
        Some(mesh) => {
            config(min, max).replacen("[drain]\n", &format!("[drain]\nmesh = \"{}\"\n", mesh.name()), 1)
        }
    }
}

/// The one JSON log line of the sidecar containing `needle`.
fn log_line(sidecar: &Sidecar, needle: &str) -> serde_json::Value {
    let lines = sidecar.log_lines(needle);
    assert_eq!(lines.len(), 1, "{needle}: {lines:?}");
    serde_json::from_str(&lines[0]).unwrap()
}

/// Held shared by every case, and alone by the latency measurement, so
/// that the other cases' processes do not stand in its figures.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Writes a case's figures where `.ci/run` prints them from, and to the
/// test's output.
fn figures(case: &str, text: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join(format!("pod-{case}.txt")), format!("{text}\n")).unwrap();
    eprintln!("{text}");
}

/// The value of one series in the sidecar's `/metrics`, read from the node.
async fn metric(sidecar: &Sidecar, series: &str) -> Option<f64> {
    let text = get(
        sidecar.addr,
        "/metrics",
        "prometheus",
        &[],
        Duration::from_secs(2),
    )
    .await
    .unwrap()
    .body;
    support::metric(&text, series)
}

/// One liveness restart with the new container listening `gap` after the
/// old one exited; returns how long the pod took to be ready again.
async fn restart_after(gap: Duration) -> Duration {
    let net = Arc::new(Net::create());
    let sidecar = Sidecar::start(&net, &config("300ms", "10s"), Some(TOKEN));
    let kubelet = Kubelet::start(Arc::clone(&net), &sidecar, gap);
    kubelet.wait_ready(Duration::from_secs(20)).await;
    let mut ready = kubelet.ready();
    kubelet.set_app_health(500);
    tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| !r))
        .await
        .expect("the failed app left its Service")
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the kubelet restarted the app",
        || async { kubelet.restarts() == 1 },
    )
    .await;
    let restarted = Instant::now();
    kubelet.wait_ready(Duration::from_secs(20)).await;
    let back = restarted.elapsed();
    assert_eq!(
        metric(&sidecar, "healthproxy_app_restarts_total").await,
        Some(1.0),
        "gap {gap:?}"
    );
    assert_eq!(
        sidecar.log_lines("the app is listening again").len(),
        1,
        "gap {gap:?}"
    );
    assert_eq!(
        sidecar.log_lines("drain reset for the new app container").len(),
        1,
        "gap {gap:?}"
    );
    assert_eq!(kubelet.restarts(), 1, "gap {gap:?}: the new container stays");
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_restarts_at_gaps_of_0_5_50_and_600_ms_are_each_back_to_ready() {
    pod_or_skip!();
    let _shared = MACHINE.read().await;
    let gaps = [0, 5, 50, 600].map(Duration::from_millis);
    let backs = futures_join(gaps.map(restart_after)).await;
    let lines: Vec<String> = gaps
        .iter()
        .zip(&backs)
        .map(|(gap, back)| format!("gap {gap:?}: restart seen, ready again {back:.2?} after the restart"))
        .collect();
    figures(
        "restarts",
        &format!("pod liveness restarts: {}", lines.join("; ")),
    );
}

/// Runs the futures side by side (each pod is independent).
async fn futures_join<F: std::future::Future + Send + 'static, const N: usize>(
    futures: [F; N],
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(N);
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// A rolling replacement of one pod by another under steady load, through
/// a balancer that follows readiness `lag` late (the endpoints controller
/// and kube-proxy), longer than `drain.min` (1 s): the drain waits until
/// no new connection or request has come for `drain.quiet`. With `mesh`,
/// each pod's traffic goes through that mesh's proxy in the pod, which
/// keeps its connections to the app open.
async fn rolling_replacement(native: bool, lag: Duration, mesh: Option<Mesh>) -> String {
    let balancer = Balancer::start(Duration::from_millis(10));
    let config = config_in(mesh, "1s", "10s");
    let old_net = Arc::new(Net::create());
    let mut old_sidecar = Sidecar::start(&old_net, &config, Some(TOKEN));
    let old = Kubelet::start(Arc::clone(&old_net), &old_sidecar, Duration::ZERO);
    let old_proxy = match mesh {
        Some(mesh) => Some(mesh::Proxy::start(&old_net, mesh).await),
        None => None,
    };
    let old_addr = old_proxy.as_ref().map_or(app_addr(&old_net), |p| p.addr);
    balancer.follow(old_addr, old.ready(), lag);
    eventually(Duration::from_secs(20), "the old pod serves", || async {
        balancer.has(old_addr)
    })
    .await;
    let new_net = Arc::new(Net::create());
    let new_sidecar = Sidecar::start(&new_net, &config, Some(TOKEN));
    let new = Kubelet::start(Arc::clone(&new_net), &new_sidecar, Duration::ZERO);
    let new_proxy = match mesh {
        Some(mesh) => Some(mesh::Proxy::start(&new_net, mesh).await),
        None => None,
    };
    let new_addr = new_proxy.as_ref().map_or(app_addr(&new_net), |p| p.addr);
    balancer.follow(new_addr, new.ready(), lag);
    eventually(Duration::from_secs(20), "the new pod serves", || async {
        balancer.has(new_addr)
    })
    .await;
    let sent = balancer.sent();
    eventually(Duration::from_secs(10), "both pods get traffic", || async {
        balancer.sent() > sent + 50
    })
    .await;

    let pooled = match mesh {
        // The proxy's pooled connections to the app: what held every
        // drain to drain.max when they counted as open.
        Some(_) => app_connections(&old_net),
        None => 0,
    };
    let deletion = old.delete(&mut old_sidecar, native).await;
    drop(old_proxy);
    let sent = balancer.sent();
    eventually(Duration::from_secs(10), "traffic goes on", || async {
        balancer.sent() > sent + 50
    })
    .await;
    let (sent, failures) = balancer.finish().await;

    let variant = if native { "native" } else { "classic" };
    let hook = deletion.hook.as_ref().expect("the preStop hook was answered");
    assert_eq!(hook.status, 200, "{variant}: {}", hook.body);
    assert_eq!(deletion.sidecar_code, Some(0), "{variant}");
    assert!(
        deletion.sidecar_exited >= deletion.app_exited,
        "{variant}: the sidecar outlives the app: {deletion:?}"
    );
    assert!(
        deletion.readiness.1.is_empty(),
        "{variant}: every readiness probe during termination was answered: {:?}",
        deletion.readiness
    );
    assert!(
        failures.is_empty(),
        "{variant}: {} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 200, "{variant}: steady load: {sent}");
    assert!(
        deletion.hook_took > lag,
        "{variant}: the drain outlasted the balancer's lag {lag:?}: {deletion:?}"
    );
    let through = match mesh {
        None => String::new(),
        Some(mesh) => {
            // The forwarded traffic was seen until the balancer let go, and
            // the drain ended by drain.quiet although the proxy's
            // connections stayed open.
            assert!(!hook.body.contains("drain.max"), "{mesh:?}: {}", hook.body);
            let done = log_line(&old_sidecar, "drain complete");
            assert_eq!(done["ended"], "quiet", "{done}");
            let last = done["last_traffic_ms"].as_f64().unwrap();
            assert!(
                Duration::from_secs_f64(last / 1000.0) >= lag - Duration::from_millis(500),
                "{mesh:?}: the proxy's traffic was seen until the balancer let go: {done}"
            );
            assert!(pooled > 0, "{mesh:?}: the proxy kept connections to the app open");
            format!(
                ", through {mesh:?}'s proxy ({pooled} pooled connections to the app, {} new during the drain; last request seen {last:.0} ms into the drain, drain.quiet 2s, drain.max 10s)",
                done["new_connections"]
            )
        }
    };
    drop((new, new_proxy));
    format!(
        "pod rolling replacement ({variant} sidecar{through}, endpoint lag {lag:?}, drain.min 1s): {sent} requests sent, {} failed; preStop answered after {:.2?} ({}), app exited at {:.2?}, sidecar exited at {:.2?} with {:?}; {} readiness probes answered during termination",
        failures.len(),
        deletion.hook_took,
        hook.body.trim(),
        deletion.app_exited,
        deletion.sidecar_exited,
        deletion.sidecar_code,
        deletion.readiness.0,
    )
}

/// Endpoint lags of the balancers, longer than `drain.min` (1 s).
const LAGS: [Duration; 2] = [Duration::from_millis(1500), Duration::from_millis(3000)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacements_with_a_classic_sidecar_lose_no_request_whatever_the_endpoint_lag() {
    pod_or_skip!();
    let _shared = MACHINE.read().await;
    let runs = futures_join(LAGS.map(|lag| rolling_replacement(false, lag, None))).await;
    figures("rolling-classic", &runs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacements_with_a_native_sidecar_lose_no_request_whatever_the_endpoint_lag() {
    pod_or_skip!();
    let _shared = MACHINE.read().await;
    let runs = futures_join(LAGS.map(|lag| rolling_replacement(true, lag, None))).await;
    figures("rolling-native", &runs.join("\n"));
}

/// The established connections to the app's port in the pod, as `ss`
/// lists them from inside its namespace.
fn app_connections(net: &Net) -> usize {
    let out = net
        .command("ss".as_ref())
        .args(["-Htn", "state", "established", "( sport = :8080 )"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Skips a mesh case where HAProxy cannot play the mesh's proxy.
macro_rules! proxy_or_skip {
    () => {
        if let Some(reason) = mesh::unavailable() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacements_through_istios_proxy_from_127_0_0_6_lose_no_request_and_end_by_quiet() {
    pod_or_skip!();
    proxy_or_skip!();
    let _shared = MACHINE.read().await;
    let runs = futures_join(LAGS.map(|lag| rolling_replacement(true, lag, Some(Mesh::Istio)))).await;
    figures("rolling-istio", &runs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replacements_through_linkerds_proxy_from_loopback_lose_no_request_and_end_by_quiet() {
    pod_or_skip!();
    proxy_or_skip!();
    let _shared = MACHINE.read().await;
    let runs = futures_join(LAGS.map(|lag| rolling_replacement(false, lag, Some(Mesh::Linkerd)))).await;
    figures("rolling-linkerd", &runs.join("\n"));
}

/// Another container of the pod with a kept-alive connection to the app,
/// sending a request every 100 ms over it until dropped; returns the
/// requests answered.
async fn local_client(net: &Net, to: std::net::SocketAddr, stop: tokio_util::sync::CancellationToken) -> u64 {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::from_std(net.connect(to)).unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let mut answered = 0;
    while !stop.is_cancelled() {
        stream
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: cache\r\n\r\n")
            .await
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = n.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"hello");
        answered += 1;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => {}
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_clients_from_inside_the_pod_do_not_hold_the_drain() {
    pod_or_skip!();
    let _shared = MACHINE.read().await;
    let net = Arc::new(Net::create());
    let sidecar = Sidecar::start(&net, &config("1s", "10s"), Some(TOKEN));
    let kubelet = Kubelet::start(Arc::clone(&net), &sidecar, Duration::ZERO);
    kubelet.wait_ready(Duration::from_secs(20)).await;
    // A cache client over loopback and a log shipper over the pod IP,
    // each busy on one kept-alive connection throughout the drain.
    let stop = tokio_util::sync::CancellationToken::new();
    let clients = [
        std::net::SocketAddr::from(([127, 0, 0, 1], pod::APP_PORT)),
        app_addr(&net),
    ]
    .map(|to| {
        let (net, stop) = (Arc::clone(&net), stop.clone());
        tokio::spawn(async move { local_client(&net, to, stop).await })
    });
    eventually(
        Duration::from_secs(10),
        "both local clients connected",
        || async { app_connections(&net) == 2 },
    )
    .await;
    let began = Instant::now();
    let hook = prestop(sidecar.addr, Some(TOKEN)).await.unwrap();
    let took = began.elapsed();
    assert_eq!(app_connections(&net), 2, "the local clients are still connected");
    stop.cancel();
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    assert!(!hook.body.contains("drain.max"), "{}", hook.body);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "the drain ends near drain.min (1 s), not at drain.max (10 s): {took:?} {}",
        hook.body
    );
    let done = log_line(&sidecar, "drain complete");
    // The two local clients, and any of the sidecar's own three checks of
    // the app (every 200 ms, a connection each) open at the last count:
    // they are the pod's own clients too.
    let in_pod = done["in_pod_connections"].as_u64().unwrap();
    assert!((2..=5).contains(&in_pod), "{done}");
    assert_eq!(done["new_connections"], 0, "{done}");
    assert!(done["last_traffic_ms"].is_null(), "{done}");
    assert!(answered > 10, "the local clients were busy: {answered} requests");
    figures(
        "local-clients",
        &format!(
            "pod with two kept-alive local clients (loopback and pod IP, {answered} requests during the test): drain ended after {took:.2?} (drain.min 1s, drain.max 10s)"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pod_drains_in_min_and_a_balancer_that_never_lets_go_holds_the_drain_to_max() {
    pod_or_skip!();
    let _shared = MACHINE.read().await;
    let idle_net = Arc::new(Net::create());
    let idle = Sidecar::start(&idle_net, &config("1s", "10s"), Some(TOKEN));
    let idle_kubelet = Kubelet::start(Arc::clone(&idle_net), &idle, Duration::ZERO);
    let busy_net = Arc::new(Net::create());
    let busy = Sidecar::start(&busy_net, &config("1s", "4s"), Some(TOKEN));
    let busy_kubelet = Kubelet::start(Arc::clone(&busy_net), &busy, Duration::ZERO);
    idle_kubelet.wait_ready(Duration::from_secs(20)).await;
    busy_kubelet.wait_ready(Duration::from_secs(20)).await;
    let balancer = Balancer::start(Duration::from_millis(10));
    balancer.add(app_addr(&busy_net));
    let sent = balancer.sent();
    eventually(Duration::from_secs(10), "the busy pod gets traffic", || async {
        balancer.sent() > sent + 20
    })
    .await;

    let timed = |addr| async move {
        let began = Instant::now();
        let answer = prestop(addr, Some(TOKEN)).await.unwrap();
        (answer, began.elapsed())
    };
    let ((idle_hook, idle_took), (busy_hook, busy_took)) = tokio::join!(timed(idle.addr), timed(busy.addr));
    let (sent, failures) = balancer.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        idle_took >= Duration::from_secs(1) && idle_took < Duration::from_millis(1500),
        "an idle pod's drain ends at drain.min: {idle_took:?} {}",
        idle_hook.body
    );
    assert_eq!(
        metric(&idle, "healthproxy_drain_new_connections").await,
        Some(0.0)
    );
    assert_eq!(metric(&idle, "healthproxy_drain_timed_out").await, Some(0.0));
    assert!(
        busy_hook.body.contains("stopped at drain.max"),
        "{}",
        busy_hook.body
    );
    assert!(
        busy_took >= Duration::from_secs(4) && busy_took < Duration::from_secs(5),
        "{busy_took:?}"
    );
    assert_eq!(metric(&busy, "healthproxy_drain_timed_out").await, Some(1.0));
    let new = metric(&busy, "healthproxy_drain_new_connections").await.unwrap();
    assert!(new > 100.0, "a balancer still sending: {new} new connections");
    let last = metric(&busy, "healthproxy_drain_last_new_connection_seconds")
        .await
        .unwrap();
    assert!(last > 3.5, "the last one came just before max: {last}");
    let warned = busy.log_lines("drain ended at drain.max");
    assert_eq!(warned.len(), 1);
    assert!(warned[0].contains("\"ended\":\"max\""), "{}", warned[0]);
    figures(
        "drain-ends",
        &format!(
            "pod drain ends: idle pod {idle_took:.2?} (drain.min 1s); a balancer that never lets go ({sent} requests, {new} new connections during the drain, the last at {last:.2}s) {busy_took:.2?} (drain.max 4s)"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prestop_with_a_wrong_token_is_refused_loudly_and_without_a_token_the_node_gets_403() {
    pod_or_skip!();
    let _shared = MACHINE.read().await;
    // A rotated Secret: the hook carries the old token.
    let net = Arc::new(Net::create());
    let sidecar = Sidecar::start(&net, &config("1s", "10s"), Some(TOKEN));
    let kubelet = Kubelet::start(Arc::clone(&net), &sidecar, Duration::ZERO);
    kubelet.wait_ready(Duration::from_secs(20)).await;
    let began = Instant::now();
    let hook = prestop(sidecar.addr, Some("the-old-token")).await.unwrap();
    let refused_in = began.elapsed();
    assert_eq!(hook.status, 401);
    assert!(
        refused_in < Duration::from_secs(1),
        "refused at once: {refused_in:?}"
    );
    eventually(Duration::from_secs(5), "the refusal is logged", || async {
        !sidecar.log_lines("lifecycle request refused").is_empty()
    })
    .await;
    let line = &sidecar.log_lines("lifecycle request refused")[0];
    let logged: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(logged["level"], "WARN", "{line}");
    assert_eq!(logged["route"], "/prestop", "{line}");
    let source = logged["source"].as_str().unwrap();
    assert!(
        source
            .trim_start_matches("[::ffff:")
            .starts_with(&net.node_ip.to_string()),
        "the node's address: {line}"
    );
    let series = "healthproxy_lifecycle_refused_total{reason=\"token\",route=\"/prestop\"}";
    assert_eq!(metric(&sidecar, series).await, Some(1.0));
    assert!(probe(sidecar.addr, "/readyz").await.is_ok(), "nothing drained");

    // No token at all: the node is not loopback.
    let open_net = Arc::new(Net::create());
    let open = Sidecar::start(&open_net, &config("1s", "10s"), None);
    let _app = App::start(&open_net);
    let hook = prestop(open.addr, None).await.unwrap();
    assert_eq!(hook.status, 403);
    assert!(hook.body.contains("drain.token_file"), "{}", hook.body);
    let series = "healthproxy_lifecycle_refused_total{reason=\"not_loopback\",route=\"/prestop\"}";
    assert_eq!(metric(&open, series).await, Some(1.0));
    assert_eq!(
        open.log_lines("preStop httpGet comes from the node and gets 403")
            .len(),
        1,
        "the startup log says how the hook will be treated"
    );
    let readyz = get(
        open.addr,
        "/readyz?verbose",
        support::probe::USER_AGENT,
        &[],
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert!(!readyz.body.contains("drain"), "nothing drained: {}", readyz.body);
    figures(
        "refused",
        &format!(
            "pod refused preStop: wrong token -> 401 in {refused_in:.2?}, logged at WARN from {source}; no token from the node -> 403"
        ),
    );
}

/// `p` (0–100) of sorted latencies.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// `n` sidecar liveness probes (`/healthz`), one after another, 5 ms apart.
async fn probe_latencies(sidecar: std::net::SocketAddr, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let began = Instant::now();
        let answer = get(
            sidecar,
            "/healthz",
            support::probe::USER_AGENT,
            &[],
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(answer.map(|a| a.status), Ok(200));
        took.push(began.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    took.sort();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_promptly_during_a_drain_with_10000_sockets_on_the_host() {
    pod_or_skip!();
    let _alone = MACHINE.write().await;
    // 10,000 established sockets in the root namespace: the kernel walks
    // them for every count made in the pod's namespace too.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut host_sockets = Vec::with_capacity(10_000);
    for _ in 0..5_000 {
        host_sockets.push(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        host_sockets.push(listener.accept().unwrap().0);
    }
    let net = Arc::new(Net::create());
    let sidecar = Sidecar::start(&net, &config("100ms", "60s"), Some(TOKEN));
    let _app = App::start(&net);
    // A client of the app keeps the drain counting connections.
    let client = tokio::net::TcpStream::connect(app_addr(&net)).await.unwrap();
    let idle = probe_latencies(sidecar.addr, 300).await;
    let hook = tokio::spawn(prestop(sidecar.addr, Some(TOKEN)));
    eventually(
        Duration::from_secs(10),
        "the drain counts connections",
        || async {
            !sidecar
                .log_lines("drain waiting for established connections")
                .is_empty()
        },
    )
    .await;
    let during = probe_latencies(sidecar.addr, 300).await;
    assert!(!hook.is_finished(), "the drain lasted the whole measurement");
    drop(client);
    let hook = hook.await.unwrap().unwrap();
    assert_eq!(hook.status, 200);
    assert!(!hook.body.contains("drain.max"), "{}", hook.body);
    let text = format!(
        "pod probe latency (/healthz, fresh connection, 10,000 sockets on the host): idle p50 {:.2?} p99 {:.2?} max {:.2?}; during a drain p50 {:.2?} p99 {:.2?} max {:.2?}",
        percentile(&idle, 50),
        percentile(&idle, 99),
        idle[idle.len() - 1],
        percentile(&during, 50),
        percentile(&during, 99),
        during[during.len() - 1],
    );
    // A count on the serving thread stalled every probe behind it by the
    // kernel's walk (tens of milliseconds with a large TCP hash).
    assert!(percentile(&during, 99) < Duration::from_millis(100), "{text}");
    figures("drain-latency", &text);
    drop(host_sockets);
}
