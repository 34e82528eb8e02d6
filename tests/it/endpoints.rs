//! The probe endpoints of the real binary, against a real app.

use std::time::Duration;

use crate::support::{App, Proxy, eventually, next_answer, probe, request, series};

fn web_config(app: &App, extra: &str) -> String {
    format!(
        r#"[[check]]
name = "web"
probes = ["liveness", "readiness"]
period = "100ms"
failure_threshold = 2
http = {{ port = {}, path = "/healthz" }}
{extra}"#,
        app.addr.port()
    )
}

#[tokio::test]
async fn readyz_follows_the_app_through_failure_and_recovery() {
    let app = App::start().await;
    app.set_status(500);
    let proxy = Proxy::start(&web_config(&app, ""));
    // Readiness starts not ready; liveness starts healthy.
    let first = proxy.get("/readyz").await;
    assert_eq!(first.status, 503, "{first:?}");
    proxy.wait_status("/livez", 503).await;
    let failed = proxy.get("/readyz?verbose").await;
    assert_eq!(
        failed.body,
        "[-]web failed: HTTP probe failed with statuscode: 500\nreadyz check failed\n"
    );
    assert_eq!(
        proxy
            .wait_log("Liveness/Readiness probe failed: HTTP probe failed with statuscode: 500")
            .await,
        1,
        "the transition is logged once"
    );

    app.set_status(200);
    proxy.wait_status("/readyz", 200).await;
    let ok = proxy.get("/readyz").await;
    assert_eq!(ok.body, "ok");
    assert_eq!(ok.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        proxy.get("/readyz?verbose").await.body,
        "[+]web ok\nreadyz check passed\n"
    );
    assert_eq!(proxy.get("/livez").await.status, 200);
}

#[tokio::test]
async fn a_failing_non_critical_check_is_reported_but_does_not_fail_the_probe() {
    let app = App::start().await;
    let extra = r#"[[check]]
name = "extra"
probes = ["readiness"]
critical = false
period = "100ms"
tcp = { port = 1 }
"#;
    let proxy = Proxy::start(&web_config(&app, extra));
    proxy.wait_status("/readyz", 200).await;
    eventually(Duration::from_secs(10), "extra has run", || async {
        proxy
            .get("/readyz?verbose")
            .await
            .body
            .contains("[-]extra failed (non-critical): dial tcp 127.0.0.1:1")
    })
    .await;
    let health = request(
        proxy.addr,
        "GET",
        "/readyz",
        &[("accept", "application/health+json")],
    )
    .await;
    assert_eq!(health.headers["content-type"], "application/health+json");
    let v: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(v["status"], "warn");
    assert_eq!(v["checks"]["web"][0]["status"], "pass");
    assert_eq!(v["checks"]["extra"][0]["status"], "warn");
}

#[tokio::test]
async fn exclude_leaves_a_failing_check_out() {
    let app = App::start().await;
    app.set_status(503);
    let proxy = Proxy::start(&web_config(&app, ""));
    proxy.wait_status("/livez", 503).await;
    let excluded = proxy.get("/livez?verbose&exclude=web&exclude=nope").await;
    assert_eq!(excluded.status, 200);
    assert_eq!(
        excluded.body,
        "[+]web excluded: ok\nwarn: some health checks cannot be excluded: no matches for \"nope\"\nlivez check passed\n"
    );
}

#[tokio::test]
async fn per_check_and_per_container_endpoints() {
    let app = App::start().await;
    let config = format!(
        r#"[[check]]
name = "a"
container = "front"
probes = ["readiness"]
period = "100ms"
http = {{ port = {}, path = "/healthz" }}
[[check]]
name = "b"
container = "back"
probes = ["readiness"]
period = "100ms"
tcp = {{ port = 1 }}
"#,
        app.addr.port()
    );
    let proxy = Proxy::start(&config);
    proxy.wait_status("/readyz/a", 200).await;
    proxy.wait_status("/containers/front/readyz", 200).await;
    assert_eq!(proxy.get("/containers/back/readyz").await.status, 503);
    assert_eq!(
        proxy.get("/readyz").await.status,
        503,
        "the pod-wide probe covers every container"
    );
    assert_eq!(proxy.get("/readyz/b").await.status, 503);
    assert_eq!(proxy.get("/readyz/nope").await.status, 404);
    assert_eq!(
        proxy.get("/livez/a").await.status,
        404,
        "a is not a liveness check"
    );
    assert_eq!(proxy.get("/containers/nope/readyz").await.status, 404);
    assert_eq!(proxy.get("/containers/front/metrics").await.status, 404);
    assert_eq!(
        proxy.get("/containers/front/livez").await.body,
        "ok",
        "no liveness checks: ping"
    );
}

#[tokio::test]
async fn json_lists_every_check_state() {
    let app = App::start().await;
    let proxy = Proxy::start(&web_config(&app, ""));
    proxy.wait_status("/readyz", 200).await;
    for reply in [
        proxy.get("/readyz?format=json").await,
        request(proxy.addr, "GET", "/readyz", &[("accept", "application/json")]).await,
    ] {
        assert_eq!(reply.headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(v["status"], "pass");
        assert_eq!(v["probe"], "readiness");
        let web = &v["checks"][0];
        assert_eq!(web["name"], "web");
        assert_eq!(web["kind"], "http");
        assert_eq!(web["state"], "healthy");
        assert_eq!(web["last_result"], "success");
        assert!(web["consecutive_successes"].as_u64().unwrap() >= 1);
        assert!(web["last_transition"].as_str().unwrap().ends_with('Z'));
        assert!(web["duration_seconds"].as_f64().unwrap() > 0.0);
        assert!(web["message"].as_str().unwrap().contains("200"));
    }
}

#[tokio::test]
async fn startup_gates_readiness_and_latches() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("migrated");
    let app = App::start().await;
    let config = format!(
        r#"[[check]]
name = "migrations"
probes = ["startup"]
period = "100ms"
failure_threshold = 1
file = {{ path = "{}", max_age = "1h" }}
{}"#,
        marker.display(),
        web_config(&app, "")
    );
    let proxy = Proxy::start(&config);
    eventually(Duration::from_secs(10), "startup check failed", || async {
        proxy.get("/startupz?verbose").await.body.contains("no such file")
    })
    .await;
    assert_eq!(proxy.get("/startupz").await.status, 503);
    assert_eq!(
        proxy.get("/livez").await.status,
        200,
        "liveness is healthy while starting"
    );
    let readyz = proxy.get("/readyz?verbose").await;
    assert_eq!(readyz.status, 503);
    assert!(readyz.body.contains("[-]startup failed"), "{}", readyz.body);
    assert!(
        readyz.body.contains("[-]web pending: not run yet"),
        "web must not run before startup: {}",
        readyz.body
    );

    std::fs::write(&marker, "").unwrap();
    proxy.wait_status("/startupz", 200).await;
    proxy.wait_status("/readyz", 200).await;
    std::fs::remove_file(&marker).unwrap();
    app.set_status(500);
    proxy.wait_status("/readyz", 503).await;
    assert_eq!(proxy.get("/startupz").await.status, 200, "startup stays latched");
}

#[tokio::test]
async fn healthz_head_and_wrong_methods() {
    let proxy = Proxy::start("allow_empty = true\n");
    let healthz = proxy.get("/healthz").await;
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok"));
    let head = request(proxy.addr, "HEAD", "/readyz", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(request(proxy.addr, "POST", "/livez", &[]).await.status, 405);
    assert_eq!(proxy.get("/nope").await.status, 404);
}

#[tokio::test]
async fn sigterm_stops_the_sidecar_cleanly() {
    let mut proxy = Proxy::start("allow_empty = true\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_default_listen_address_takes_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hp.toml");
    std::fs::write(&path, "allow_empty = true\n").unwrap();
    // Not the test's usual 127.0.0.1:0: the wildcard of the default listen address.
    let mut child = std::process::Command::new(crate::support::binary())
        .args(["run", "--log-format", "json", "--listen", "[::]:0", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let line = std::io::BufRead::lines(stderr)
        .map_while(Result::ok)
        .find(|l| l.contains("healthproxy serving"))
        .expect("serving line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = v["listen"]
        .as_str()
        .unwrap()
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .port();
    for host in ["127.0.0.1", "[::1]"] {
        let addr = format!("{host}:{port}").parse().unwrap();
        assert_eq!(request(addr, "GET", "/healthz", &[]).await.status, 200, "{host}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `method path` as the kubelet does, on a fresh connection that the
/// proxy closes after answering; returns the raw response without its
/// `date` line.
async fn raw(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    let response = probe::exchange(addr, method, path, probe::USER_AGENT, &[], Duration::from_secs(5))
        .await
        .expect("the proxy answers and closes the connection");
    String::from_utf8(response)
        .unwrap()
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect()
}

#[tokio::test]
async fn plain_probes_get_the_bytes_the_router_sends() {
    // A query, even one ignored, takes a probe past the front path to the
    // router: both must send the same bytes, passing or failing.
    let passing = Proxy::start("allow_empty = true\n");
    // Startup is not done: /startupz and /readyz fail (liveness waits).
    let starting = Proxy::start(
        r#"[[check]]
name = "boot"
probes = ["startup"]
tcp = { port = 1 }
period = "1h"
failure_threshold = 1
"#,
    );
    // No startup check: liveness and readiness fail.
    let failing = Proxy::start(
        r#"[[check]]
name = "down"
probes = ["liveness", "readiness"]
tcp = { port = 1 }
period = "1h"
failure_threshold = 1
"#,
    );
    failing.wait_status("/livez", 503).await;
    starting.wait_status("/startupz/boot", 503).await;
    let (ok, failed) = ("200 OK", "503 Service Unavailable");
    for (proxy, statuses) in [
        (&passing, [ok, ok, ok, ok]),
        (&starting, [ok, failed, ok, failed]),
        (&failing, [ok, ok, failed, failed]),
    ] {
        for method in ["GET", "HEAD"] {
            let paths = ["/healthz", "/startupz", "/livez", "/readyz"];
            for (path, status) in paths.into_iter().zip(statuses) {
                let plain = raw(proxy.addr, method, path).await;
                let routed = raw(proxy.addr, method, &format!("{path}?ignored")).await;
                assert_eq!(plain, routed, "{method} {path}");
                assert!(
                    plain.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                    "{method} {path}: {plain}"
                );
            }
        }
    }
    assert_eq!(
        raw(passing.addr, "GET", "/readyz").await,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n\
         x-content-type-options: nosniff\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
}

#[tokio::test]
async fn kept_alive_and_pipelined_probes_get_the_routers_bytes_in_order() {
    use tokio::io::AsyncWriteExt;
    let proxy = Proxy::start(
        r#"[[check]]
name = "down"
probes = ["readiness"]
tcp = { port = 1 }
"#,
    );
    // The check's first run is over: every answer below carries its message,
    // not the one before it.
    eventually(Duration::from_secs(20), "the check's first run", || async {
        proxy.get("/readyz").await.body.contains("[-]down failed: ")
    })
    .await;
    let ask = |method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.33\r\n\r\n",
            proxy.addr
        )
    };
    // Each plain probe is asked again with a query, which the router
    // answers. The first ones on a connection are answered before hyper,
    // the ones after a routed request by the router; pipelined ones, sent
    // in one write, by the router too.
    let asks = [
        ("GET", "/readyz"),
        ("HEAD", "/livez"),
        ("GET", "/healthz"),
        ("GET", "/startupz"),
    ];
    for pipelined in [false, true] {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let mut stream = tokio::io::BufReader::new(stream);
        let mut answers = Vec::new();
        let sequence = || {
            asks.iter()
                .flat_map(|(m, p)| [(*m, p.to_string()), (*m, format!("{p}?x")), (*m, p.to_string())])
        };
        if pipelined {
            let all: String = sequence().map(|(m, p)| ask(m, &p)).collect();
            stream.get_mut().write_all(all.as_bytes()).await.unwrap();
        }
        for (method, path) in sequence() {
            if !pipelined {
                stream
                    .get_mut()
                    .write_all(ask(method, &path).as_bytes())
                    .await
                    .unwrap();
            }
            answers.push(
                next_answer(&mut stream, method == "HEAD")
                    .await
                    .expect("an answer"),
            );
        }
        for (asked, answers) in asks.iter().zip(answers.chunks(3)) {
            assert_eq!(answers[0], answers[1], "{asked:?} pipelined={pipelined}");
            assert_eq!(answers[0], answers[2], "{asked:?} pipelined={pipelined}");
        }
        let status = |answer: &String| answer.lines().next().unwrap().to_string();
        assert_eq!(
            answers.iter().step_by(3).map(status).collect::<Vec<_>>(),
            [
                "HTTP/1.1 503 Service Unavailable",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK"
            ]
        );
        let failing = answers[0].split("\r\n\r\n").nth(1).unwrap();
        assert!(
            failing.starts_with("[-]down failed: ") && failing.ends_with("\nreadyz check failed\n"),
            "{failing}"
        );
    }
}

#[tokio::test]
async fn plain_probes_are_counted_by_route_and_code() {
    let proxy = Proxy::start(
        r#"[[check]]
name = "down"
probes = ["readiness"]
tcp = { port = 1 }
period = "1h"
"#,
    );
    for _ in 0..3 {
        assert_eq!(proxy.get("/readyz").await.status, 503);
    }
    assert_eq!(request(proxy.addr, "HEAD", "/livez", &[]).await.status, 200);
    assert_eq!(proxy.get("/healthz").await.status, 200);
    assert_eq!(proxy.get("/readyz?verbose").await.status, 503);
    let m = proxy.get("/metrics").await.body;
    assert_eq!(
        series(&m, "healthproxy_http_requests_total"),
        [
            "healthproxy_http_requests_total{code=\"200\",route=\"/healthz\"} 1",
            "healthproxy_http_requests_total{code=\"200\",route=\"/livez\"} 1",
            "healthproxy_http_requests_total{code=\"503\",route=\"/readyz\"} 4",
        ]
    );
}

#[tokio::test]
async fn a_per_check_path_reports_a_non_critical_check_as_it_is() {
    let app = App::start().await;
    app.set_status(500);
    let proxy = Proxy::start(&format!(
        r#"[[check]]
name = "extra"
probes = ["readiness"]
critical = false
period = "100ms"
http = {{ port = {}, path = "/healthz" }}
"#,
        app.addr.port()
    ));
    proxy.wait_status("/readyz", 200).await;
    // Pending until its first run, then failed.
    eventually(Duration::from_secs(10), "extra has run", || async {
        proxy
            .get("/readyz?verbose")
            .await
            .body
            .contains("[-]extra failed (non-critical): HTTP probe failed")
    })
    .await;
    let own = proxy.get("/readyz/extra").await;
    assert_eq!(own.status, 503, "{own:?}");
    assert!(own.body.contains("[-]extra failed"), "{own:?}");
    app.set_status(200);
    proxy.wait_status("/readyz/extra", 200).await;
}
