//! Binding the listener and serving connections within limits
//! (`[server]`): a deadline for request headers (slowloris), a cap on their
//! size (431), an idle timeout for kept-alive connections, and a cap on
//! open connections that closes an old one rather than refusing the
//! newest, so that clients holding connections open cannot starve the
//! kubelet's probes, which open a fresh connection each time.
//!
//! The connections are in one table (`table`) from their first moment;
//! each one's plain probes are answered from its bytes (`front`) until a
//! request for hyper arrives, and hyper serves it from then on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::accept::Listener;
use super::budget::SHUTDOWN_GRACE;
use super::endpoints::Endpoints;
use super::front;
use super::table::Slot;
use crate::config::ServerConfig;

/// How long a connection closed while a request is in progress gets to
/// finish it before it is dropped.
const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// Serves `endpoints` on `listener` within `limits`, at most `cap`
/// connections at a time (see [`connection_cap`](super::budget::connection_cap)), until `shutdown`
/// completes with a value and a grace, then lets open connections finish
/// for that grace and returns the value.
pub(crate) async fn serve<T>(
    listener: TcpListener,
    endpoints: Endpoints,
    limits: ServerConfig,
    cap: usize,
    shutdown: impl Future<Output = (T, Duration)>,
) -> T {
    let mut listener = Listener::new(listener, cap, "HTTP");
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(limits.max_header_bytes);
    // One sweep over the table for both deadlines, rather than a timer per
    // connection for the first byte and one per request for hyper's header
    // read timeout (set, reset and dropped on every request).
    let sweep = {
        let open = Arc::clone(listener.open());
        let (first_head, idle) = (limits.header_read_timeout, limits.idle_timeout);
        let period = (first_head.min(idle) / 4).max(Duration::from_millis(50));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    now = every.tick() => open.lock().expect("not poisoned").sweep(now, first_head, idle),
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    tasks.spawn(sweep);
    tokio::pin!(shutdown);
    let (value, grace) = loop {
        let (stream, peer, admitted) = tokio::select! {
            accepted = listener.accept() => accepted,
            stop = &mut shutdown => break stop,
        };
        let connection = Connection {
            stream,
            peer,
            endpoints: endpoints.clone(),
            slot: Arc::clone(&admitted.slot),
        };
        let builder = builder.clone();
        tasks.spawn(async move {
            connection.serve(&builder).await;
            drop(admitted);
        });
    };
    listener.stop_all();
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
    slot: Arc<Slot>,
}

impl Connection {
    async fn serve(self, builder: &hyper::server::conn::http1::Builder) {
        let Connection {
            mut stream,
            peer,
            endpoints,
            slot,
        } = self;
        // Until its first byte a connection costs its socket and this
        // task only. Plain probes are answered from the bytes, with no
        // buffers kept between them; hyper's buffers come with the first
        // request that is not one.
        let Some(read) = front::serve(&mut stream, &slot, &endpoints, peer).await else {
            return;
        };
        let tracked = Arc::clone(&slot);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            tracked.begun.fetch_add(1, Ordering::AcqRel);
            let call = endpoints.call(request, peer);
            let slot = Arc::clone(&tracked);
            async move {
                let response = call.await;
                slot.ended.fetch_add(1, Ordering::AcqRel);
                response
            }
        });
        // Boxed: a connection not yet read from holds its task only.
        let io = TokioIo::new(front::Prefixed { read, stream });
        let mut conn = Box::pin(builder.serve_connection(io, service));
        // Closed to make room or by the sweep: a connection with no
        // request in progress (idle, or in the middle of a head, where
        // hyper's graceful shutdown does nothing) is dropped at once; one
        // with a request finishes it, within a bound. When the server
        // stops, every connection gets to finish what it has begun.
        let closing = tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            () = slot.closed() => {
                if slot.stopping.load(Ordering::Acquire) {
                    SHUTDOWN_GRACE
                } else if slot.busy() {
                    EVICTION_GRACE
                } else {
                    return;
                }
            }
        };
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(closing, conn).await;
    }
}
