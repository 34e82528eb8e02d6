//! Tests for the grpc check, against a real tonic-health server and bare
//! TCP servers on 127.0.0.1 (kubelet-semantics §2.3).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use healthproxy::check::{GrpcCheck, Outcome, Reason, Verdict};
use healthproxy::config::{GrpcSpec, Host};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const TIMEOUT: Duration = Duration::from_secs(5);

fn spec(addr: SocketAddr, service: &str) -> GrpcSpec {
    GrpcSpec {
        host: Host {
            name: addr.ip().to_string(),
            from_env: None,
        },
        port: addr.port(),
        service: service.into(),
        user_agent: "kube-probe/1.36".into(),
        tls: None,
    }
}

async fn check(addr: SocketAddr, service: &str) -> Outcome {
    GrpcCheck::new(spec(addr, service)).unwrap().run(TIMEOUT).await
}

/// A tonic-health server on an ephemeral port, listening on return. The
/// `User-Agent` of every call is recorded in `agents`.
pub(crate) struct HealthServer {
    pub(crate) addr: SocketAddr,
    pub(crate) reporter: HealthReporter,
    agents: Arc<Mutex<Vec<String>>>,
}

pub(crate) async fn health_server() -> HealthServer {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let agents = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&agents);
    let record = move |request: tonic::Request<()>| {
        let agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        seen.lock().unwrap().push(agent);
        Ok(request)
    };
    tokio::spawn(
        Server::builder()
            .layer(tonic::service::InterceptorLayer::new(record))
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    HealthServer {
        addr,
        reporter,
        agents,
    }
}

#[tokio::test]
async fn serving_then_not_serving() {
    let server = health_server().await;
    let service = "shop.Checkout";

    server
        .reporter
        .set_service_status(service, ServingStatus::Serving)
        .await;
    assert_eq!(
        check(server.addr, service).await,
        Outcome::success("service healthy")
    );

    server
        .reporter
        .set_service_status(service, ServingStatus::NotServing)
        .await;
    assert_eq!(
        check(server.addr, service).await,
        Outcome::failure(
            Reason::NotServing,
            "service unhealthy (responded with \"NOT_SERVING\")"
        )
    );

    server
        .reporter
        .set_service_status(service, ServingStatus::Serving)
        .await;
    assert_eq!(
        check(server.addr, service).await,
        Outcome::success("service healthy")
    );
}

#[tokio::test]
async fn unknown_serving_status_is_a_failure() {
    let server = health_server().await;
    server
        .reporter
        .set_service_status("svc", ServingStatus::Unknown)
        .await;
    assert_eq!(
        check(server.addr, "svc").await,
        Outcome::failure(
            Reason::NotServing,
            "service unhealthy (responded with \"UNKNOWN\")"
        )
    );
}

#[tokio::test]
async fn empty_service_name_asks_about_the_server() {
    let server = health_server().await;
    // health_reporter() registers "" as SERVING.
    assert_eq!(check(server.addr, "").await, Outcome::success("service healthy"));
    server
        .reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    assert_eq!(
        check(server.addr, "").await,
        Outcome::failure(
            Reason::NotServing,
            "service unhealthy (responded with \"NOT_SERVING\")"
        )
    );
}

#[tokio::test]
async fn unknown_service_is_a_failure() {
    let server = health_server().await;
    let outcome = check(server.addr, "no.Such").await;
    assert_eq!(
        outcome,
        Outcome::failure(
            Reason::Other,
            "error: health rpc probe failed: rpc error: code = NotFound \
             desc = service not registered"
        )
    );
}

#[tokio::test]
async fn user_agent_is_the_configured_one_like_the_kubelets() {
    let server = health_server().await;
    assert_eq!(check(server.addr, "").await.verdict, Verdict::Success);
    let mut custom = spec(server.addr, "");
    custom.user_agent = "my-prober/2".into();
    assert_eq!(
        GrpcCheck::new(custom).unwrap().run(TIMEOUT).await.verdict,
        Verdict::Success
    );
    let agents = server.agents.lock().unwrap().clone();
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert!(agents[0].starts_with("kube-probe/1.36 "), "{agents:?}");
    assert!(agents[1].starts_with("my-prober/2 "), "{agents:?}");
}

#[tokio::test]
async fn each_run_opens_a_fresh_connection() {
    let server = health_server().await;
    let check = GrpcCheck::new(spec(server.addr, "")).unwrap();
    for _ in 0..3 {
        assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);
    }
    assert_eq!(server.agents.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn server_without_the_health_service_is_unimplemented() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_routes(Routes::default())
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let outcome = check(addr, "").await;
    assert_eq!(outcome.verdict, Verdict::Failure, "{outcome:?}");
    assert!(
        outcome.message.starts_with(
            "error: this server does not implement the grpc health protocol \
             (grpc.health.v1.Health)"
        ),
        "{outcome:?}"
    );
}

/// The kubelet's message for every failure to connect: it dials
/// `WithBlock`, so grpc-go retries until the deadline (pkg/probe/grpc/grpc.go
/// `Probe`).
fn connect_timeout(reason: Reason, addr: SocketAddr) -> Outcome {
    Outcome::failure(
        reason,
        format!("timeout: failed to connect service \"{addr}\" within 300ms: context deadline exceeded"),
    )
}

#[tokio::test]
async fn a_server_that_is_not_grpc_fails_to_connect_when_the_timeout_runs_out() {
    // Answers anything with an HTTP/1.1 error and hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let started = Instant::now();
    let outcome = GrpcCheck::new(spec(addr, ""))
        .unwrap()
        .run(Duration::from_millis(300))
        .await;
    assert_eq!(outcome, connect_timeout(Reason::Other, addr));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn connection_refused_fails_to_connect_when_the_timeout_runs_out() {
    let (_held, port) = crate::support::refusing_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let outcome = GrpcCheck::new(spec(addr, ""))
        .unwrap()
        .run(Duration::from_millis(300))
        .await;
    assert_eq!(outcome, connect_timeout(Reason::Refused, addr));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_server_that_comes_up_within_the_timeout_is_reached_as_grpc_go_reaches_it() {
    // grpc-go retries a refused dial after its 1 s backoff while the
    // deadline allows.
    let (socket, port) = crate::support::refusing_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let check = tokio::spawn(async move {
        GrpcCheck::new(spec(addr, ""))
            .unwrap()
            .run(Duration::from_secs(3))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(std::net::TcpListener::from(socket)).unwrap();
    tokio::spawn(
        Server::builder()
            .add_routes(Routes::new(service))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    assert_eq!(check.await.unwrap(), Outcome::success("service healthy"));
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_deadline() {
    // Accepts and keeps every connection, never writing a byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let outcome = GrpcCheck::new(spec(addr, ""))
        .unwrap()
        .run(Duration::from_millis(300))
        .await;
    let elapsed = started.elapsed();
    assert!(
        outcome
            == Outcome::failure(
                Reason::Timeout,
                "timeout: health rpc did not complete within 300ms"
            )
            || outcome.message.starts_with(&format!(
                "timeout: failed to connect service \"{addr}\" within 300ms: "
            )),
        "{outcome:?}"
    );
    assert_eq!(outcome.verdict, Verdict::Failure);
    assert_eq!(outcome.reason, Some(Reason::Timeout), "{outcome:?}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}
