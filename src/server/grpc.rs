//! `grpc.health.v1.Health` on `grpc_listen`, for the kubelet's `grpc`
//! probes (kubelet-semantics §3, GA since Kubernetes 1.27). It answers from
//! the same snapshot as the HTTP endpoints:
//!
//! | service               | answers as                          |
//! |-----------------------|-------------------------------------|
//! | `""`                  | `/healthz`: the sidecar itself      |
//! | `startup`, `liveness`, `readiness` | `/startupz`, `/livez`, `/readyz` |
//! | `CONTAINER/startup` (and so on) | `/containers/CONTAINER/startupz` |
//!
//! `SERVING` for 200, `NOT_SERVING` for 503. An unknown service is
//! `NOT_FOUND` to `Check` and `SERVICE_UNKNOWN` to `Watch`, which keeps the
//! stream open as the health protocol says; `Watch` sends the status at
//! once and then every change of it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::render::{Options, Probe, Scope};
use crate::config::ProbeKind;
use crate::state::{Snapshot, State};

/// Streams open at once on one connection: a kubelet probe is one unary
/// call per connection; a `Watch` is one stream.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Largest request header block accepted, as the HTTP endpoints'.
const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Statuses a `Watch` may have queued for a slow reader before it waits.
const WATCH_BUFFER: usize = 4;
/// Connections open at once. A new one past it closes the oldest, so that
/// connections opened and left (idle, or a preface never finished) can
/// neither hold memory and descriptors without bound nor keep the
/// kubelet's probe, a fresh connection, out.
pub(crate) const MAX_CONNECTIONS: usize = 128;

/// Binds `addr` (IPv4 and IPv6 for `[::]`, as the HTTP listener).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    super::listen::bind(addr)
}

/// Serves the health service on `listener` until `cancel` fires; open
/// `Watch` streams end then too.
pub async fn serve(listener: TcpListener, state: State, cancel: CancellationToken) {
    let service = HealthService {
        state,
        cancel: cancel.clone(),
    };
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_BYTES)
        .add_service(HealthServer::new(service))
        .serve_with_incoming_shutdown(
            capped(listener, MAX_CONNECTIONS, cancel.clone()),
            cancel.clone().cancelled_owned(),
        );
    // A client that keeps its connection open after the GOAWAY does not
    // hold the exit up for longer than the HTTP endpoints' grace.
    let bounded = async {
        cancel.cancelled().await;
        tokio::time::sleep(super::SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = served => if let Err(e) = served {
            tracing::error!("the gRPC health endpoint stopped: {e}");
        },
        () = bounded => {}
    }
}

/// The connections `listener` accepts, at most `cap` open: accepting one
/// more closes the oldest. Ends with `cancel`.
fn capped(listener: TcpListener, cap: usize, cancel: CancellationToken) -> ReceiverStream<io::Result<Held>> {
    let (tx, rx) = mpsc::channel(1);
    let open = Arc::new(Mutex::new(Open::default()));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = cancel.cancelled() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors: give one back, and the kernel a
                    // moment; anything else, the next accept may work.
                    let evicted = matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE))
                        && open.lock().expect("not poisoned").evict_oldest();
                    tracing::debug!(evicted, "gRPC endpoint: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(if evicted { 1 } else { 50 })).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let held = Open::admit(&open, stream, cap);
            if tx.send(Ok(held)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The open connections of the gRPC endpoint, oldest first.
#[derive(Default)]
struct Open {
    next: u64,
    by_age: VecDeque<(u64, CancellationToken)>,
}

impl Open {
    /// Takes `stream` in, closing the oldest connection first when `cap`
    /// are open.
    fn admit(open: &Arc<Mutex<Open>>, stream: TcpStream, cap: usize) -> Held {
        let mut table = open.lock().expect("not poisoned");
        while table.by_age.len() >= cap && table.evict_oldest() {}
        let id = table.next;
        table.next += 1;
        let evicted = CancellationToken::new();
        table.by_age.push_back((id, evicted.clone()));
        Held {
            stream,
            evicted: Box::pin(evicted.cancelled_owned()),
            id,
            open: Arc::clone(open),
        }
    }

    fn evict_oldest(&mut self) -> bool {
        match self.by_age.pop_front() {
            Some((_, evicted)) => {
                evicted.cancel();
                true
            }
            None => false,
        }
    }
}

/// One connection of the gRPC endpoint: its reads and writes fail once it
/// is evicted, which ends it, and dropping it leaves the table.
struct Held {
    stream: TcpStream,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    id: u64,
    open: Arc<Mutex<Open>>,
}

impl Held {
    /// `Err` once evicted (and the task woken when that happens).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.evicted.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = self.open.lock().expect("not poisoned");
        if let Some(at) = table.by_age.iter().position(|(id, _)| *id == self.id) {
            table.by_age.remove(at);
        }
    }
}

impl Connected for Held {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a service name asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Service {
    /// `""`: the sidecar itself.
    Sidecar,
    /// A probe kind, over every check or one container's.
    Probe(ProbeKind, Option<String>),
}

impl Service {
    fn parse(name: &str) -> Option<Service> {
        if name.is_empty() {
            return Some(Service::Sidecar);
        }
        let (container, kind) = match name.split_once('/') {
            Some((container, kind)) => (Some(container.to_string()), kind),
            None => (None, name),
        };
        let kind = ProbeKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        Some(Service::Probe(kind, container))
    }

    /// The status of this service in `snapshot`; `None` when it names a
    /// container that no check belongs to.
    fn status(&self, snapshot: &Snapshot) -> Option<ServingStatus> {
        let ok = match self {
            Service::Sidecar => true,
            Service::Probe(kind, None) => snapshot.passes(*kind),
            Service::Probe(kind, Some(container)) => {
                if !snapshot
                    .checks
                    .iter()
                    .any(|c| c.container.as_ref() == Some(container))
                {
                    return None;
                }
                Probe::evaluate(snapshot, *kind, Scope::Container(container), &Options::default()).ok()
            }
        };
        Some(if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

fn status_of(name: &str, snapshot: &Snapshot) -> Option<ServingStatus> {
    Service::parse(name)?.status(snapshot)
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

struct HealthService {
    state: State,
    cancel: CancellationToken,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        match status_of(name, &self.state.borrow()) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {name:?}"))),
        }
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let name = request.into_inner().service;
        let mut snapshots = self.state.subscribe();
        let cancel = self.cancel.clone();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let mut sent = None;
            loop {
                let status =
                    status_of(&name, &snapshots.borrow_and_update()).unwrap_or(ServingStatus::ServiceUnknown);
                if sent != Some(status) {
                    if tx.send(Ok(response(status))).await.is_err() {
                        return;
                    }
                    sent = Some(status);
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = cancel.cancelled() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_answers_as_its_endpoint_and_others_are_unknown() {
        let config = crate::config::Config::from_toml_str(
            "[[check]]\nname = \"a\"\ncontainer = \"web\"\nprobes = [\"liveness\", \"readiness\"]\ntcp = { port = 1 }\n",
            "t",
            &|_: &str| None,
        )
        .unwrap();
        let state = State::new(&config.checks);
        let snapshot = state.borrow();
        // Before any run: liveness healthy, readiness not yet.
        let serving = Some(ServingStatus::Serving);
        let not_serving = Some(ServingStatus::NotServing);
        for (name, expected) in [
            ("", serving),
            ("startup", serving),
            ("liveness", serving),
            ("readiness", not_serving),
            ("web/liveness", serving),
            ("web/readiness", not_serving),
            ("db/liveness", None),
            ("readyz", None),
            ("Readiness", None),
            ("web/", None),
            ("/liveness", None),
            ("a/web/liveness", None),
            ("grpc.health.v1.Health", None),
        ] {
            assert_eq!(status_of(name, &snapshot), expected, "{name:?}");
        }
    }
}
