//! The `reason` of a failed run is decided by the code that saw it fail,
//! whatever words the target, the path or the output contain.

use std::time::Duration;

use healthproxy::check::{Check, Reason, Verdict};
use healthproxy::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::support::refusing_port;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the only check of a config made of `check`.
async fn run(check: &str) -> healthproxy::check::Outcome {
    let toml = format!(
        r#"[[check]]
name = "c"
probes = ["readiness"]
{check}
"#
    );
    let config = Config::from_toml_str(&toml, "t", &|_: &str| None).unwrap();
    let c = &config.checks[0];
    Check::new(&c.name, &c.kind).unwrap().run(TIMEOUT).await
}

/// An HTTP server that answers every request with `status` and `body`.
async fn server(status: u16, body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0; 1024];
                let _ = stream.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_refused_connection_is_refused_whatever_the_path_says() {
    let (_held, port) = refusing_port();
    let outcome = run(&format!(r#"http = {{ port = {port}, path = "/tls/timeout" }}"#)).await;
    assert_eq!(outcome.verdict, Verdict::Failure, "{outcome:?}");
    assert_eq!(outcome.reason, Some(Reason::Refused), "{outcome:?}");
    let outcome = run(&format!("tcp = {{ port = {port} }}")).await;
    assert_eq!(outcome.reason, Some(Reason::Refused), "{outcome:?}");
}

#[tokio::test]
async fn a_bad_status_is_a_status_and_a_missing_text_is_output() {
    let port = server(500, "").await;
    let outcome = run(&format!(r#"http = {{ port = {port}, path = "/timeout" }}"#)).await;
    assert_eq!(outcome.reason, Some(Reason::Status), "{outcome:?}");
    let port = server(200, "tls handshake ok").await;
    let outcome = run(&format!(
        r#"http = {{ port = {port}, body_contains = "i/o timeout" }}"#
    ))
    .await;
    assert_eq!(outcome.reason, Some(Reason::Output), "{outcome:?}");
}

#[tokio::test]
async fn an_unresolvable_name_is_dns() {
    let outcome = run(r#"tcp = { host = "timed-out.invalid", port = 80 }"#).await;
    assert_eq!(outcome.verdict, Verdict::Failure, "{outcome:?}");
    assert_eq!(outcome.reason, Some(Reason::Dns), "{outcome:?}");
}

#[tokio::test]
async fn a_missing_heartbeat_file_is_stale_and_successes_carry_no_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls-timed-out");
    let check = format!(
        r#"file = {{ path = {:?}, max_age = "1m" }}"#,
        path.display().to_string()
    );
    let outcome = run(&check).await;
    assert_eq!(outcome.reason, Some(Reason::Stale), "{outcome:?}");
    std::fs::write(&path, "").unwrap();
    let outcome = run(&check).await;
    assert_eq!((outcome.verdict, outcome.reason), (Verdict::Success, None));
}
