//! The one-shot `probe` and `wait` commands of the real binary.

use std::time::Duration;

use crate::support::{App, run_binary};

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
