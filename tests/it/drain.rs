//! The drain and the lifecycle endpoints of the real binary: real signals,
//! real sockets counted from /proc/net/tcp.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{App, Proxy, eventually, metric};

/// An "app" listening on an ephemeral port, and a sidecar draining it as
/// in a pod whose traffic Istio's proxy forwards (from 127.0.0.6): every
/// client here is on loopback, and loopback clients are otherwise the
/// pod's own, which no drain waits on.
async fn app_and_proxy(drain: &str) -> (TcpListener, Proxy) {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = app.local_addr().unwrap().port();
    let proxy = Proxy::start(&format!(
        r#"allow_empty = true
[drain]
ports = [{port}]
mesh = "istio"
{drain}
"#
    ));
    (app, proxy)
}

/// A connection to the app as Istio's proxy opens it (from 127.0.0.6),
/// with a request whose headers have not all come: serving traffic in
/// flight, which the app has not answered.
async fn request_in_flight(app: std::net::SocketAddr) -> TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(app).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    stream
}

#[tokio::test]
async fn drain_endpoint_fails_readiness_at_once_and_keeps_liveness() {
    let (_app, proxy) = app_and_proxy(
        r#"min = "30s"
max = "60s""#,
    )
    .await;
    assert_eq!(proxy.get("/readyz").await.status, 200);
    let started = proxy.send("POST", "/drain", &[]).await;
    assert_eq!(started.status, 202);
    let readyz = proxy.get("/readyz?verbose").await;
    assert_eq!(readyz.status, 503, "readiness fails from the first moment");
    assert!(
        readyz.body.contains("[-]drain failed: draining"),
        "{}",
        readyz.body
    );
    assert_eq!(
        proxy.get("/livez").await.status,
        200,
        "a drain must never trigger a restart"
    );
    assert_eq!(proxy.get("/healthz").await.status, 200);
    assert_eq!(proxy.send("GET", "/drain", &[]).await.status, 405);
    assert_eq!(proxy.wait_log("drain started").await, 1);
}

#[tokio::test]
async fn prestop_answers_once_min_has_passed_and_connections_are_gone() {
    let (app, proxy) = app_and_proxy(
        r#"min = "500ms"
max = "30s""#,
    )
    .await;
    let client = request_in_flight(app.local_addr().unwrap()).await;
    let (server_side, _) = app.accept().await.unwrap();
    let began = Instant::now();
    let addr = proxy.addr;
    let first = tokio::spawn(async move { crate::support::request(addr, "GET", "/prestop", &[]).await });
    let second = tokio::spawn(async move { crate::support::request(addr, "POST", "/prestop", &[]).await });
    eventually(
        Duration::from_secs(10),
        "the drain waits on the open connection",
        || async { !proxy.log_lines("\"established\":1").is_empty() },
    )
    .await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "prestop waits while a connection is open"
    );
    drop(client);
    drop(server_side);
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    let took = began.elapsed();
    assert_eq!((a.status, b.status), (200, 200));
    assert!(a.body.starts_with("drained in "), "{}", a.body);
    assert_eq!(a.body, b.body, "concurrent calls join the same drain");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(proxy.wait_log("drain complete").await, 1);
    // A repeated call answers at once with the same drain.
    assert_eq!(proxy.get("/prestop").await.body, a.body);
}

#[tokio::test]
async fn a_flood_of_refused_requests_is_counted_whole_and_logged_within_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let (_app, proxy) = app_and_proxy(&format!(
        r#"min = "0s"
token_file = "{}""#,
        token.display()
    ))
    .await;
    let flood = 300;
    for _ in 0..flood {
        assert_eq!(proxy.send("POST", "/drain", &[]).await.status, 401);
    }
    let metrics = proxy.get("/metrics").await.body;
    let series = "healthproxy_lifecycle_refused_total{reason=\"token\",route=\"/drain\"}";
    assert_eq!(
        metric(&metrics, series),
        Some(f64::from(flood)),
        "every one is counted"
    );
    // 20 at once, then one a second: however long the flood took, far
    // fewer lines than requests.
    let logged = proxy.log_lines("lifecycle request refused").len();
    assert!(
        (20..flood as usize / 2).contains(&logged),
        "{logged} lines for {flood} refusals"
    );
    // The next line after a pause says how many were held back.
    eventually(
        Duration::from_secs(10),
        "a line saying how many were not logged",
        || async {
            assert_eq!(proxy.send("POST", "/drain", &[]).await.status, 401);
            !proxy
                .log_lines("refused lifecycle requests were not logged")
                .is_empty()
        },
    )
    .await;
    assert_eq!(proxy.get("/readyz").await.status, 200, "nothing was drained");
}

#[tokio::test]
async fn prestop_gives_up_at_drain_max() {
    let (app, proxy) = app_and_proxy(
        r#"min = "100ms"
max = "1s""#,
    )
    .await;
    let _client = request_in_flight(app.local_addr().unwrap()).await;
    let _server_side = app.accept().await.unwrap();
    let began = Instant::now();
    let reply = proxy.get("/prestop").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("stopped at drain.max"), "{}", reply.body);
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(proxy.wait_log("drain ended at drain.max").await, 1);
}

#[tokio::test]
async fn the_token_guards_lifecycle_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let (_app, proxy) = app_and_proxy(&format!(
        r#"min = "0s"
token_file = "{}""#,
        token.display()
    ))
    .await;
    for (method, path) in [
        ("GET", "/prestop"),
        ("POST", "/prestop"),
        ("POST", "/drain"),
        ("POST", "/exit"),
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("t0ken"),
            Some("Bearer t0ken0"),
            Some("Basic t0ken"),
        ] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let reply = proxy.send(method, path, &headers).await;
            assert_eq!(reply.status, 401, "{method} {path} with {auth:?}");
        }
    }
    assert_eq!(
        proxy.get("/readyz").await.status,
        200,
        "a refused request starts nothing"
    );
    // The kubelet ignores a preStop hook's status: every refusal is logged
    // at WARN with its source and counted.
    eventually(Duration::from_secs(10), "20 refusals logged", || async {
        proxy.log_lines("lifecycle request refused").len() == 20
    })
    .await;
    for line in proxy.log_lines("lifecycle request refused") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN", "{line}");
        assert!(v["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
    }
    let metrics = proxy.get("/metrics").await.body;
    for (route, n) in [("/prestop", 10.0), ("/drain", 5.0), ("/exit", 5.0)] {
        let series = format!("healthproxy_lifecycle_refused_total{{reason=\"token\",route=\"{route}\"}}");
        assert_eq!(metric(&metrics, &series), Some(n), "{series} in {metrics}");
        let series =
            format!("healthproxy_lifecycle_refused_total{{reason=\"not_loopback\",route=\"{route}\"}}");
        assert_eq!(metric(&metrics, &series), Some(0.0), "{series} in {metrics}");
    }
    let ok = proxy
        .send("POST", "/drain", &[("authorization", "Bearer t0ken")])
        .await;
    assert_eq!(ok.status, 202);
    assert_eq!(proxy.get("/readyz").await.status, 503);
}

#[tokio::test]
async fn sigterm_drains_then_waits_for_the_app_to_stop_listening_and_exits_0() {
    let (app, mut proxy) = app_and_proxy(
        r#"min = "200ms"
max = "30s""#,
    )
    .await;
    proxy.signal(Signal::SIGTERM);
    proxy.wait_status("/readyz", 503).await;
    assert_eq!(proxy.get("/livez").await.status, 200);
    eventually(Duration::from_secs(10), "drain complete", || async {
        !proxy.log_lines("drain complete").is_empty()
    })
    .await;
    eventually(Duration::from_secs(10), "waiting for the app", || async {
        !proxy
            .log_lines("waiting for the app to stop listening")
            .is_empty()
    })
    .await;
    assert!(proxy.exited().is_none(), "the sidecar outlives the app");
    assert_eq!(
        proxy.get("/healthz").await.status,
        200,
        "and keeps serving meanwhile"
    );
    drop(app);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_exits_at_once_non_zero() {
    let (_app, mut proxy) = app_and_proxy(
        r#"min = "60s"
max = "120s""#,
    )
    .await;
    proxy.signal(Signal::SIGTERM);
    proxy.wait_status("/readyz", 503).await;
    // A preStop hook still waiting must not hold the exit up.
    let addr = proxy.addr;
    let _hook = tokio::spawn(async move { crate::support::request(addr, "GET", "/prestop", &[]).await });
    eventually(Duration::from_secs(10), "the hook joined the drain", || async {
        !proxy.log_lines("joining it").is_empty()
    })
    .await;
    let began = Instant::now();
    proxy.signal(Signal::SIGINT);
    let status = proxy.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(128 + 2));
    // At once, not after the drain: drain.min is 60s.
    assert!(began.elapsed() < Duration::from_secs(30), "{:?}", began.elapsed());
}

#[tokio::test]
async fn sigterm_waits_for_the_app_at_most_drain_max_after_the_drain() {
    let (_app, mut proxy) = app_and_proxy(
        r#"min = "100ms"
max = "1s""#,
    )
    .await;
    let began = Instant::now();
    proxy.signal(Signal::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let took = began.elapsed();
    // The drain ends at once (no connection) after min; the app still
    // listens, so the sidecar waits drain.max more for it.
    assert!(
        took >= Duration::from_millis(1100) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        proxy
            .wait_log("the app still listens drain.max after the drain ended")
            .await,
        1
    );
}

/// A classic sidecar on pod deletion: the kubelet calls the app's preStop
/// hook and signals the sidecar at the same moment, and the drain runs to
/// drain.max because a client holds a connection. The hook is answered,
/// and the sidecar keeps answering the app's readiness probes until the app
/// (signalled once the hook returned) has stopped listening.
#[tokio::test]
async fn a_classic_sidecar_answers_prestop_and_serves_until_the_app_has_stopped() {
    let (app, mut proxy) = app_and_proxy(
        r#"min = "100ms"
max = "1s""#,
    )
    .await;
    let client = request_in_flight(app.local_addr().unwrap()).await;
    let (served, _) = app.accept().await.unwrap();
    let addr = proxy.addr;
    let hook = tokio::spawn(async move { crate::support::request(addr, "GET", "/prestop", &[]).await });
    proxy.wait_log("drain started").await;
    proxy.signal(Signal::SIGTERM);
    let answer = hook.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("stopped at drain.max"), "{}", answer.body);
    // The kubelet now signals the app; until it has gone, its readiness
    // probes are answered.
    assert_eq!(proxy.get("/readyz").await.status, 503);
    assert!(proxy.exited().is_none(), "the sidecar outlives the app");
    drop((client, served, app));
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    assert_eq!(
        proxy.wait_log("drained and the app has stopped listening").await,
        1
    );
}

#[tokio::test]
async fn without_a_token_loopback_clients_may_drain_and_the_log_says_so() {
    let (_app, proxy) = app_and_proxy(r#"min = "0s""#).await;
    assert_eq!(proxy.wait_log("drain.token_file is not set").await, 1);
    let line = &proxy.log_lines("drain.token_file is not set")[0];
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(
        line.contains("preStop httpGet comes from the node and gets 403"),
        "{line}"
    );
    assert_eq!(proxy.send("POST", "/drain", &[]).await.status, 202);
    assert_eq!(proxy.get("/readyz").await.status, 503);
}

#[tokio::test]
async fn exit_endpoint_ends_the_process_with_0() {
    let (_app, mut proxy) = app_and_proxy("").await;
    let reply = proxy.send("POST", "/exit", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
}

#[tokio::test]
async fn exit_when_app_exits_for_jobs() {
    let (app, mut proxy) = app_and_proxy("exit_when_app_exits = true").await;
    eventually(Duration::from_secs(10), "the app is seen listening", || async {
        !proxy.log_lines("the app is listening").is_empty()
    })
    .await;
    assert!(proxy.exited().is_none());
    drop(app);
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_after_the_app_is_gone_exits_at_once() {
    // A native sidecar gets SIGTERM only after the app containers exited.
    let (app, mut proxy) = app_and_proxy(
        r#"min = "30s"
max = "60s""#,
    )
    .await;
    drop(app);
    let began = Instant::now();
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    assert!(began.elapsed() < Duration::from_secs(10), "no drain.min wait");
    assert_eq!(proxy.wait_log("nothing to drain").await, 1);
}

/// A liveness restart as the kubelet does it: the check fails, the preStop
/// hook drains, the app stops, and the new container listens `gap` later
/// (the first restart has no back-off, so the gap is often a few
/// milliseconds or none). Whatever the gap, the restart is seen: startup
/// begins again, the drain ends, and the next preStop drains anew.
async fn liveness_restart_after(gap: Duration) {
    let app = App::start().await;
    let port = app.addr.port();
    let proxy = Proxy::start(&format!(
        r#"[drain]
ports = [{port}]
min = "200ms"
max = "10s"
[[check]]
name = "boot"
probes = ["startup"]
http = {{ port = {port}, path = "/started" }}
period = "100ms"
[[check]]
name = "web"
probes = ["liveness", "readiness"]
http = {{ port = {port}, path = "/healthz" }}
period = "100ms"
failure_threshold = 1
"#
    ));
    proxy.wait_status("/readyz", 200).await;
    proxy.wait_log("the app is listening").await;

    // Liveness fails; the kubelet runs the preStop hook, then kills the app.
    app.set_status(500);
    proxy.wait_status("/livez", 503).await;
    assert_eq!(proxy.get("/prestop").await.status, 200);
    assert_eq!(proxy.get("/readyz").await.status, 503, "drained");
    app.stop().await;
    tokio::time::sleep(gap).await;
    // The new container starts slowly: startup is not done and liveness
    // starts again from healthy rather than failed.
    let app = App::start_on(port, 200, 503).await;
    proxy.wait_status("/startupz", 503).await;
    assert_eq!(proxy.get("/livez").await.status, 200, "liveness starts healthy");
    assert_eq!(proxy.get("/readyz").await.status, 503);
    proxy.wait_log("the app is listening again").await;

    app.set_started(200);
    proxy.wait_status("/startupz", 200).await;
    proxy.wait_status("/readyz", 200).await;
    assert_eq!(proxy.wait_log("drain reset for the new app container").await, 1);
    assert_eq!(
        proxy.log_lines("every check starts again").len(),
        1,
        "one reset per restart"
    );
    let metrics = proxy.get("/metrics").await.body;
    assert!(metrics.contains("\nhealthproxy_draining 0\n"), "{metrics}");
    assert_eq!(
        metric(&metrics, "healthproxy_app_restarts_total"),
        Some(1.0),
        "{metrics}"
    );

    // The next kill drains again.
    let began = Instant::now();
    assert_eq!(proxy.get("/prestop").await.status, 200);
    assert!(
        began.elapsed() >= Duration::from_millis(200),
        "a new drain waits drain.min, it does not join the old one"
    );
    assert_eq!(proxy.get("/readyz").await.status, 503);
    assert_eq!(proxy.wait_log("drain started").await, 2);
}

#[tokio::test]
async fn a_check_in_startup_and_liveness_keeps_livez_200_while_the_app_is_away() {
    // docs/deploying.md: between app containers /livez answers 200, since
    // no liveness probe runs before the new container has started.
    let app = App::start().await;
    let port = app.addr.port();
    let proxy = Proxy::start(&format!(
        r#"[drain]
ports = [{port}]
[[check]]
name = "web"
probes = ["startup", "liveness"]
tcp = {{ port = {port} }}
period = "100ms"
failure_threshold = 1
"#
    ));
    proxy.wait_status("/startupz", 200).await;
    proxy.wait_log("the app is listening").await;
    drop(app);
    proxy
        .wait_log("every check starts again from its initial state")
        .await;
    // The check runs for startup meanwhile and fails against the gone app.
    proxy.wait_status("/startupz/web", 503).await;
    eventually(Duration::from_secs(10), "a failed startup run", || async {
        let json = proxy.get("/startupz?format=json").await.body;
        json.contains("\"state\":\"failed\"")
    })
    .await;
    assert_eq!(proxy.get("/livez").await.status, 200, "liveness has not started");
    assert_eq!(proxy.get("/livez/web").await.status, 200);
    let metrics = proxy.get("/metrics").await.body;
    assert!(
        metrics.contains("healthproxy_check_healthy{check=\"web\",probe=\"liveness\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_liveness_restart_with_no_gap_resets_the_drain_and_starts_the_checks_again() {
    liveness_restart_after(Duration::ZERO).await;
}

#[tokio::test]
async fn a_slow_liveness_restart_resets_the_drain_and_starts_the_checks_again() {
    // Longer than the 500 ms between two readings of the socket tables:
    // the gap is seen.
    liveness_restart_after(Duration::from_millis(600)).await;
}

#[tokio::test]
async fn the_sidecars_own_keep_alive_connection_does_not_hold_the_drain() {
    let app = App::start().await;
    let port = app.addr.port();
    let proxy = Proxy::start(&format!(
        r#"[drain]
ports = [{port}]
min = "100ms"
max = "20s"
[[check]]
name = "web"
probes = ["readiness"]
http = {{ port = {port}, path = "/healthz", keep_alive = true }}
period = "100ms"
"#
    ));
    proxy.wait_status("/readyz", 200).await;
    let began = Instant::now();
    let reply = proxy.get("/prestop").await;
    assert_eq!(reply.status, 200);
    assert!(!reply.body.contains("drain.max"), "{}", reply.body);
    assert!(began.elapsed() < Duration::from_secs(10), "{:?}", began.elapsed());
    // Another container's kept-alive client (the test is another process
    // than the sidecar) is the pod's own either: not waited on.
    drop(proxy);
    let config = |mesh: &str| {
        format!(
            r#"[drain]
ports = [{port}]
min = "100ms"
max = "1s"
mesh = "{mesh}"
[[check]]
name = "web"
probes = ["readiness"]
http = {{ port = {port}, path = "/healthz", keep_alive = true }}
period = "100ms"
"#
        )
    };
    let proxy = Proxy::start(&config("none"));
    proxy.wait_status("/readyz", 200).await;
    let local = TcpStream::connect(app.addr).await.unwrap();
    let reply = proxy.get("/prestop").await;
    assert!(!reply.body.contains("drain.max"), "{}", reply.body);
    assert_eq!(
        proxy
            .wait_log("connections to the app from inside the pod are not its serving traffic")
            .await,
        1
    );
    drop((proxy, local));
    // A request that the mesh's proxy forwarded and the app has not
    // answered is waited on.
    let proxy = Proxy::start(&config("istio"));
    proxy.wait_status("/readyz", 200).await;
    let _client = request_in_flight(app.addr).await;
    let reply = proxy.get("/prestop").await;
    assert!(reply.body.contains("stopped at drain.max"), "{}", reply.body);
}
