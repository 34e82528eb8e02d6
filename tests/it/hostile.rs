//! Hostile and broken clients against the real binary: the kubelet's
//! probes must keep getting prompt, true answers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Proxy, eventually, request};

/// Reads until the peer closes or `within` passes; returns what was read
/// and whether the peer closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// A probe this slow was starved (left waiting behind other connections),
/// not merely slowed by a loaded machine: far above any scheduling noise,
/// far below the kubelet's probe timeout of a starved sidecar.
const STARVED: Duration = Duration::from_secs(5);

/// The time one GET of `path` takes, asserting a 200.
async fn prompt_200(proxy: &Proxy, path: &str) -> Duration {
    let began = Instant::now();
    let reply = proxy.get(path).await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    began.elapsed()
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_slow_the_probes() {
    let proxy = Proxy::start("allow_empty = true\n");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    for _ in 0..20 {
        let took = prompt_200(&proxy, "/livez").await;
        assert!(took < STARVED, "{took:?}");
    }
}

#[tokio::test]
async fn past_max_connections_the_oldest_are_closed_not_the_newest_refused() {
    let proxy = Proxy::start("allow_empty = true\n[server]\nmax_connections = 16\n");
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    for _ in 0..10 {
        let took = prompt_200(&proxy, "/livez").await;
        assert!(took < STARVED, "{took:?}");
    }
    // The first connections were closed to make room.
    let (_, closed) = read_until_closed(&mut idle[0], Duration::from_secs(5)).await;
    assert!(closed, "the oldest idle connection is closed");
}

#[tokio::test]
async fn a_200_kb_header_gets_431() {
    let proxy = Proxy::start("allow_empty = true\n");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "GET /livez HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "y".repeat(200 * 1024)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let (reply, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    prompt_200(&proxy, "/healthz").await;
}

#[tokio::test]
async fn a_slowloris_is_cut_off_within_the_header_timeout() {
    let proxy = Proxy::start(
        r#"allow_empty = true
[server]
header_read_timeout = "1s"
"#,
    );
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let began = Instant::now();
    // One byte at a time, never finishing the head.
    let drip = async {
        for b in b"GET /livez HTTP/1.1\r\nhost: x\r\nx-a: ".iter().cycle() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drip).await;
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    prompt_200(&proxy, "/livez").await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let proxy = Proxy::start(
        r#"allow_empty = true
[server]
idle_timeout = "300ms"
"#,
    );
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let began = Instant::now();
    let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(closed);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_paths_gets_404s_and_the_probes_still_answer() {
    let proxy = Proxy::start("allow_empty = true\n");
    let addr = proxy.addr;
    let floods: Vec<_> = (0..8)
        .map(|c| {
            tokio::spawn(async move {
                for i in 0..250 {
                    let reply = request(addr, "GET", &format!("/x/{c}/{i}?a={i}"), &[]).await;
                    assert_eq!(reply.status, 404);
                }
            })
        })
        .collect();
    let took = prompt_200(&proxy, "/livez").await;
    for f in floods {
        f.await.unwrap();
    }
    assert!(took < Duration::from_secs(1), "{took:?}");
    let metrics = proxy.get("/metrics").await.body;
    assert!(metrics.contains("healthproxy_http_requests_total{code=\"404\",route=\"unmatched\"} 2000"));
}

#[tokio::test]
async fn an_overlong_query_gets_414() {
    let proxy = Proxy::start("allow_empty = true\n");
    let long = format!("/readyz?exclude={}", "a".repeat(3000));
    assert_eq!(proxy.get(&long).await.status, 414);
    prompt_200(&proxy, "/readyz?verbose").await;
}

#[tokio::test]
async fn prestop_outlasts_the_request_timeout() {
    let proxy = Proxy::start(
        r#"allow_empty = true
[server]
request_timeout = "300ms"
[drain]
min = "1s"
"#,
    );
    let began = Instant::now();
    let reply = proxy.get("/prestop").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(began.elapsed() >= Duration::from_secs(1));
    eventually(Duration::from_secs(5), "still serving", || async {
        proxy.get("/healthz").await.status == 200
    })
    .await;
}
