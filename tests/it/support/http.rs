//! An HTTP/1.1 client for the tests: one request on a fresh connection
//! through hyper, and reading answers off a kept-alive connection by hand.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// Sends one request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Reads one answer from a kept-alive connection: its head without the
/// `date` line, and its body (none for `HEAD`); `None` if the connection
/// closes first.
pub async fn next_answer(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_only: bool,
) -> Option<String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut answer = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line))
            .await
            .expect("an answer within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
            length = n.trim().parse().unwrap();
        }
        if !line.starts_with("date: ") {
            answer.push_str(&line);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; if head_only { 0 } else { length }];
    stream.read_exact(&mut body).await.ok()?;
    Some(answer + &String::from_utf8_lossy(&body))
}
