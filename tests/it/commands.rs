//! The one-shot `probe` and `wait` commands of the real binary.

use std::time::Duration;

use crate::support::{App, Proxy, run_binary};

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn probe_exits_0_for_success_and_1_with_a_reason_otherwise() {
    let app = App::start().await;
    let url = format!("http://{}/healthz", app.addr);
    assert_eq!(run_binary(&["probe", &url], WITHIN).await, (0, String::new()));
    app.set_status(500);
    assert_eq!(
        run_binary(&["probe", &url], WITHIN).await,
        (1, "HTTP probe failed with statuscode: 500\n".into())
    );
    let (_held, port) = crate::support::refusing_port();
    let closed = format!("http://127.0.0.1:{port}/");
    let (code, stderr) = run_binary(&["probe", "--timeout", "500ms", &closed], WITHIN).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("connection refused"), "{stderr}");
    let (code, _) = run_binary(&["probe", "not a url"], WITHIN).await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn probe_times_out_on_an_app_that_never_answers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let began = std::time::Instant::now();
    let (code, stderr) = run_binary(&["probe", "--timeout", "300ms", &url], WITHIN).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("deadline exceeded"), "{stderr}");
    assert!(began.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn wait_exits_0_once_every_dependency_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ready");
    let app = App::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = format!("127.0.0.1:{port}");
    let http = format!("http://{}/healthz", app.addr);
    let exec = format!("test -f {}", marker.display());
    let args = [
        "wait",
        "--tcp",
        &tcp,
        "--http",
        &http,
        "--exec",
        &exec,
        "--interval",
        "100ms",
        "--timeout",
        "15s",
    ];
    let waiting = tokio::spawn({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_binary(&args, WITHIN).await
        }
    });
    // Bring the dependencies up while it waits.
    let _listener = tokio::net::TcpListener::bind(&tcp).await.unwrap();
    std::fs::write(&marker, "").unwrap();
    let (code, stderr) = waiting.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("wait: tcp {tcp} is up")), "{stderr}");
}

#[tokio::test]
async fn wait_names_what_never_came_up() {
    let app = App::start().await;
    let http = format!("http://{}/healthz", app.addr);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = format!("127.0.0.1:{port}");
    let (code, stderr) = run_binary(
        &[
            "wait",
            "--http",
            &http,
            "--tcp",
            &tcp,
            "--timeout",
            "700ms",
            "--interval",
            "100ms",
        ],
        WITHIN,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "wait: tcp {tcp} did not come up within 700ms: dial tcp {tcp}: connect: connection refused"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("http") || stderr.contains("is up"), "{stderr}");
    let (code, _) = run_binary(&["wait"], WITHIN).await;
    assert_eq!(code, 2, "nothing to wait for is a usage error");
}

#[tokio::test]
async fn wait_for_a_grpc_service_to_be_serving() {
    use tonic_health::ServingStatus;
    let server = crate::grpc_check::health_server().await;
    server
        .reporter
        .set_service_status("db", ServingStatus::NotServing)
        .await;
    let target = format!("{}/db", server.addr);
    let (code, stderr) = run_binary(
        &[
            "wait",
            "--grpc",
            &target,
            "--timeout",
            "500ms",
            "--interval",
            "100ms",
        ],
        WITHIN,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("wait: grpc {target} did not come up within 500ms: service unhealthy (responded with \"NOT_SERVING\")")),
        "{stderr}"
    );
    server
        .reporter
        .set_service_status("db", ServingStatus::Serving)
        .await;
    let (code, stderr) = run_binary(&["wait", "--grpc", &target, "--timeout", "10s"], WITHIN).await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn wait_makes_the_attempt_due_at_the_deadline() {
    // Attempts are due at 0, 1, 2 and 3 s; the one at the deadline counts.
    let dir = tempfile::tempdir().unwrap();
    let attempts = dir.path().join("attempts");
    let command = format!("echo at >> '{}'; exit 1", attempts.display());
    let began = std::time::Instant::now();
    let (code, stderr) = run_binary(
        &["wait", "--exec", &command, "--timeout", "3s", "--interval", "1s"],
        WITHIN,
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(began.elapsed() >= Duration::from_secs(3), "{:?}", began.elapsed());
    let made = std::fs::read_to_string(&attempts).unwrap().lines().count();
    assert_eq!(made, 4, "attempts at 0, 1, 2 and 3 s");
    assert!(stderr.contains("did not come up within 3s"), "{stderr}");
}

/// Runs the binary with `args` and `env`; its exit code, stdout and stderr.
async fn output_of(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        WITHIN,
        tokio::process::Command::new(crate::support::binary())
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A sidecar whose check `web` asks `app`, and whose check `later` has
/// not run; listening on `listen`.
fn status_proxy(app: &App, listen: &str, token: &std::path::Path) -> Proxy {
    Proxy::start_with(
        &format!(
            r#"[drain]
token_file = "{}"

[[check]]
name = "web"
probes = ["readiness"]
period = "100ms"
failure_threshold = 1
http = {{ port = {}, path = "/healthz" }}

[[check]]
name = "later"
probes = ["readiness"]
critical = false
initial_delay = "1h"
tcp = {{ port = 1 }}
"#,
            token.display(),
            app.addr.port()
        ),
        listen,
        &[],
    )
}

#[tokio::test]
async fn status_says_why_the_pod_is_unready() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let app = App::start().await;
    let proxy = status_proxy(&app, "127.0.0.1:0", &token);
    proxy.wait_status("/readyz/web", 200).await;
    app.set_status(500);
    proxy.wait_status("/readyz/web", 503).await;

    // As `kubectl exec` runs it: the sidecar's port from its environment.
    let listen = proxy.addr.to_string();
    let (code, text, stderr) = output_of(&["status"], &[("HEALTHPROXY_LISTEN", &listen)]).await;
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "  readiness  FAILING\n",
        "\nweb (http): readiness FAILING\n",
        "  state        failed\n",
        "  message      HTTP probe failed with statuscode: 500\n",
        "  last run     pending: not run yet\n",
        "\nlater (tcp, non-critical): readiness FAILING\n",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert!(text.contains("  last success 20"), "{text}");
    assert!(
        text.contains("  transitions  failed 20")
            && text.contains("): HTTP probe failed with statuscode: 500\n"),
        "{text}"
    );

    for json in [
        &["status", "--json", "--address", &listen][..],
        &["status", "-o", "json", "--address", &listen],
    ] {
        let (code, out, _) = output_of(json, &[]).await;
        assert_eq!(code, 0);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["probes"]["readiness"]["ok"], false);
        let web = &doc["checks"][0];
        assert_eq!(web["name"], "web");
        assert_eq!(web["message"], "HTTP probe failed with statuscode: 500");
        assert!(web["consecutive_failures"].as_u64().unwrap() >= 1);
        assert!(web["last_success"].is_string(), "{web}");
        let to: Vec<&str> = web["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap())
            .collect();
        assert_eq!(to, ["healthy", "failed"]);
        assert_eq!(doc["checks"][1]["last_result"], serde_json::Value::Null);
    }

    let refusing = crate::support::refusing_port().1;
    let (code, _, stderr) = output_of(&["status", "--address", &format!("127.0.0.1:{refusing}")], &[]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot ask the sidecar at 127.0.0.1:"),
        "{stderr}"
    );
}

/// An address of this machine other than loopback.
fn non_loopback_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // No packet is sent: connecting a UDP socket only picks a route.
    socket
        .connect("203.0.113.1:9")
        .expect("the tests need a default route");
    socket.local_addr().unwrap().ip()
}

#[tokio::test]
async fn status_from_off_loopback_shows_messages_only_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let app = App::start().await;
    app.set_status(500);
    let proxy = status_proxy(&app, "0.0.0.0:0", &token);
    proxy.wait_status("/readyz/web", 503).await;
    let address = std::net::SocketAddr::new(non_loopback_address(), proxy.addr.port()).to_string();
    let (code, text, _) = output_of(&["status", "--address", &address], &[]).await;
    assert_eq!(code, 0);
    assert!(!text.contains("statuscode"), "{text}");
    assert!(text.contains("(messages withheld"), "{text}");
    let (_, out, _) = output_of(&["status", "--json", "--address", &address], &[]).await;
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["messages_withheld"], true);
    assert_eq!(doc["checks"][0]["message"], serde_json::Value::Null);
    assert_eq!(
        doc["checks"][0]["transitions"][0]["message"],
        serde_json::Value::Null
    );
    let token = token.to_str().unwrap();
    let (_, text, _) = output_of(&["status", "--token-file", token, "--address", &address], &[]).await;
    assert!(
        text.contains("message      HTTP probe failed with statuscode: 500"),
        "{text}"
    );
}

#[tokio::test]
async fn probe_verbose_prints_the_answers_body() {
    let app = App::start().await;
    app.set_status(503);
    let url = format!("http://{}/healthz", app.addr);
    let (code, out, err) = output_of(&["probe", "-v", &url], &[]).await;
    assert_eq!((code, out.as_str()), (1, "health\n"));
    assert_eq!(err, "HTTP probe failed with statuscode: 503\n");
    app.set_status(200);
    let (code, out, err) = output_of(&["probe", "--verbose", &url], &[]).await;
    assert_eq!((code, out.as_str()), (0, "health\n"));
    assert_eq!(err, "HTTP probe succeeded with statuscode: 200\n");
    let (code, out, _) = output_of(&["probe", &url], &[]).await;
    assert_eq!((code, out.as_str()), (0, ""), "no body without -v");
}

#[tokio::test]
async fn probe_writes_the_url_as_given_and_dns_failures_as_go_does() {
    // `.invalid` never resolves (RFC 6761): no traffic leaves the machine.
    let (_, stderr) = run_binary(&["probe", "http://no-such-host.invalid:80/x"], WITHIN).await;
    assert!(
        stderr.starts_with("Get \"http://no-such-host.invalid:80/x\": "),
        "a port given is written: {stderr}"
    );
    let (code, stderr) = run_binary(&["probe", "http://no-such-host.invalid/x"], WITHIN).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "Get \"http://no-such-host.invalid/x\": dial tcp: lookup no-such-host.invalid: no such host\n"
    );
}

#[tokio::test]
async fn wait_names_an_http_dependency_by_the_url_as_given() {
    let (code, stderr) = run_binary(
        &[
            "wait",
            "--http",
            "http://no-such-host.invalid/ready",
            "--timeout",
            "0s",
        ],
        WITHIN,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "did not come up within 0s: Get \"http://no-such-host.invalid/ready\": dial tcp: lookup no-such-host.invalid: no such host"
        ),
        "{stderr}"
    );
}
