//! Binding the listener and serving connections within limits
//! (`[server]`): a deadline for request headers (slowloris), a cap on their
//! size (431), an idle timeout for kept-alive connections, and a cap on
//! open connections that closes the oldest rather than refusing the newest,
//! so that clients holding connections open cannot starve the kubelet's
//! probes, which open a fresh connection each time.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Endpoints;
use crate::config::ServerConfig;

/// How long open connections get to finish after a clean stop.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Binds `addr`. An IPv6 unspecified address (`[::]`) also accepts IPv4,
/// whatever the host's `bindv6only` says.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The open connections, oldest first, each with a way to ask it to close.
#[derive(Default)]
struct Open {
    next: u64,
    by_age: BTreeMap<u64, Arc<Notify>>,
}

/// Serves `endpoints` on `listener` within `limits` until `shutdown`
/// completes with a value and a grace, then lets open connections finish
/// for that grace and returns the value.
pub(crate) async fn serve<T>(
    listener: TcpListener,
    endpoints: Endpoints,
    limits: ServerConfig,
    shutdown: impl Future<Output = (T, Duration)>,
) -> T {
    let open = Arc::new(Mutex::new(Open::default()));
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    tokio::pin!(shutdown);
    let (value, grace) = loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            stop = &mut shutdown => break stop,
        };
        let (id, close) = {
            let mut open = open.lock().expect("not poisoned");
            if open.by_age.len() >= limits.max_connections
                && let Some((_, oldest)) = open.by_age.pop_first()
            {
                // The oldest connection is the likeliest to be idle or
                // hostile; a kubelet probe is always a fresh one.
                oldest.notify_one();
            }
            let id = open.next;
            open.next += 1;
            let close = Arc::new(Notify::new());
            open.by_age.insert(id, Arc::clone(&close));
            (id, close)
        };
        let connection = Connection {
            stream,
            peer,
            endpoints: endpoints.clone(),
            idle_timeout: limits.idle_timeout,
            close,
            stop: stop.clone(),
        };
        let open = Arc::clone(&open);
        let builder = builder.clone();
        tasks.spawn(async move {
            connection.serve(&builder).await;
            open.lock().expect("not poisoned").by_age.remove(&id);
        });
    };
    drop(listener);
    stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(grace, tasks.wait()).await;
    value
}

/// One accepted connection and what may end it.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    endpoints: Endpoints,
    idle_timeout: Duration,
    close: Arc<Notify>,
    stop: CancellationToken,
}

/// Requests in progress on a connection, and when the last one ended.
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    last_done_ms: AtomicU64,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.origin.elapsed().saturating_sub(last))
    }
}

impl Connection {
    async fn serve(self, builder: &hyper::server::conn::http1::Builder) {
        let _ = self.stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_done_ms: AtomicU64::new(0),
        });
        let tracked = Arc::clone(&activity);
        let (endpoints, peer) = (self.endpoints, self.peer);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let activity = Arc::clone(&tracked);
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            let response = endpoints.call(request, peer);
            async move {
                let response = response.await;
                let now = activity.origin.elapsed().as_millis() as u64;
                activity.last_done_ms.store(now, Ordering::Release);
                activity.served.store(true, Ordering::Release);
                activity.in_flight.fetch_sub(1, Ordering::AcqRel);
                response
            }
        });
        let conn = builder.serve_connection(TokioIo::new(self.stream), service);
        tokio::pin!(conn);
        // hyper's header read timeout closes a connection whose next
        // request's headers have not all arrived within it, counted from
        // when it starts waiting; this closes one that has answered a
        // request and then stayed idle for `idle_timeout`, usually sooner.
        let mut idle_check = tokio::time::interval((self.idle_timeout / 4).max(Duration::from_millis(50)));
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                () = self.close.notified(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = self.stop.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = idle_check.tick(), if !closing => {
                    let served_one = activity.served.load(Ordering::Acquire);
                    if served_one && activity.idle_for().is_some_and(|idle| idle >= self.idle_timeout) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}
