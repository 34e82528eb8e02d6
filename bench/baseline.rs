//! A bare hyper 1.x server that answers every request with 200 `ok`: the
//! baseline `bench/run` measures healthproxy's endpoints against, and a
//! cheap HTTP and TCP target for the checks it measures. It is an example,
//! so it never ends up in the product binary.
//!
//! Run with
//!
//! ```not_rust
//! cargo run --release --example bench-baseline -- 127.0.0.1:18080 [current|multi-1|multi-2]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[path = "runtime.rs"]
mod runtime;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), flavour) = (args.next(), args.next()) else {
        eprintln!("usage: bench-baseline ADDR [{}]", runtime::FLAVOURS);
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bench-baseline: {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let result =
        runtime::build(flavour.as_deref().unwrap_or("current")).and_then(|rt| rt.block_on(serve(addr)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts forever; one task per connection, HTTP/1.1 with keep-alive, as
/// healthproxy serves its endpoints.
async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
