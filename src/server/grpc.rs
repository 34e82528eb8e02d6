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
//!
//! Anyone on the pod network can reach it, so everything a client can make
//! it hold is bounded (README, "Limits and failure behaviour"): the
//! connections ([`MAX_CONNECTIONS`], the oldest closed to make room), the
//! time to send the HTTP/2 preface, the streams per connection, the bytes
//! a stream and a connection may have in flight (HTTP/2 flow control), a
//! request's header block and message, the time a request may take, and
//! the `Watch` streams open at once. `memory_budget` counts each.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::accept::Listener;
pub use super::budget::{MAX_GRPC_CONNECTIONS as MAX_CONNECTIONS, MAX_WATCHES};
use super::held::Held;
use super::render::{Options, Probe, Scope};
use crate::config::ProbeKind;
use crate::state::{Snapshot, State};

/// Streams open at once on one connection: a kubelet probe is one unary
/// call per connection; a `Watch` is one stream. A client with more waits
/// for one to end (HTTP/2 `MAX_CONCURRENT_STREAMS`).
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 4;
/// Largest request header block accepted. A probe's is about 200 bytes;
/// this leaves room for a bearer token.
pub(crate) const MAX_HEADER_BYTES: u32 = 8 * 1024;
/// Largest request message decoded. A `HealthCheckRequest` is a service
/// name (`CONTAINER/readiness`: tens of bytes); tonic's default, 4 MiB, let
/// every stream of every connection buffer a message that claimed it and
/// never ended (issue 27).
pub(crate) const MAX_MESSAGE: usize = 1024;
/// What a client may send on one stream before the server has read it
/// (the HTTP/2 stream window): a message and its framing. The connection
/// window stays at the protocol's initial 64 KiB, which the streams' own
/// windows (`MAX_STREAMS_PER_CONNECTION` × this) never reach.
pub(crate) const STREAM_WINDOW: u32 = 4 * 1024;
/// Largest HTTP/2 frame read (the protocol's minimum).
const MAX_FRAME: u32 = 16 * 1024;
/// Time a request may take, its message's arrival included: a `Check` is
/// answered from the snapshot at once, so only a client that does not
/// finish its message is ever cut off. (A `Watch` stream lives on once its
/// request has come.)
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a new connection has to send the HTTP/2 client preface. The
/// kubelet sends it with its first packet; a connection that has not
/// after this is closed rather than left to the cap.
pub(crate) const PREFACE_TIMEOUT: Duration = Duration::from_secs(2);
/// A ping on a connection silent this long, and closed when the answer
/// does not come within `KEEPALIVE_TIMEOUT`: a `Watch` whose client has
/// vanished without a FIN does not hold its stream for ever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Statuses a `Watch` may have queued for a slow reader before it waits.
const WATCH_BUFFER: usize = 4;

/// Serves the health service on `listener` until `cancel` fires; open
/// `Watch` streams end then too.
pub(crate) async fn serve(listener: TcpListener, state: State, cancel: CancellationToken) {
    let watched = Watched::default();
    tokio::spawn(watched.clone().publish(state.clone(), cancel.clone()));
    let service = HealthService {
        state,
        watched,
        watches: Arc::new(Semaphore::new(MAX_WATCHES)),
        cancel: cancel.clone(),
    };
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_BYTES)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(65_535)
        .max_frame_size(MAX_FRAME)
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            HealthServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            capped(listener, MAX_CONNECTIONS, cancel.clone()),
            cancel.clone().cancelled_owned(),
        );
    // A client that keeps its connection open after the GOAWAY does not
    // hold the exit up for longer than the HTTP endpoints' grace.
    let bounded = async {
        cancel.cancelled().await;
        tokio::time::sleep(super::budget::SHUTDOWN_GRACE).await;
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
    let mut listener = Listener::new(listener, cap, "gRPC");
    tokio::spawn(async move {
        loop {
            let (stream, _, admitted) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = cancel.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let held = Held::new(stream, admitted, Some(PREFACE_TIMEOUT));
            if tx.send(Ok(held)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
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

/// The served status of each service that a `Watch` stream follows, one
/// channel per service name. One task works the statuses out again when
/// the snapshot changes (every check run changes it) and wakes a service's
/// streams only when its status changes: a run that changes no verdict
/// costs one evaluation per followed name, not a wake of every stream.
#[derive(Clone, Default)]
struct Watched {
    by_name: Arc<Mutex<HashMap<String, watch::Sender<ServingStatus>>>>,
}

impl Watched {
    /// The status of `name` now and each change of it from here on.
    fn follow(&self, name: &str, state: &State) -> watch::Receiver<ServingStatus> {
        // The map's lock before the snapshot's, as in `publish`.
        let mut by_name = self.by_name.lock().expect("not poisoned");
        // Names no stream follows any more go, so that the map holds at
        // most one name per open stream and this one.
        by_name.retain(|_, tx| tx.receiver_count() > 0);
        if let Some(tx) = by_name.get(name) {
            return tx.subscribe();
        }
        let status = status_of(name, &state.borrow()).unwrap_or(ServingStatus::ServiceUnknown);
        let (tx, rx) = watch::channel(status);
        by_name.insert(name.to_string(), tx);
        rx
    }

    /// Publishes each change of a followed status until `cancel`.
    async fn publish(self, state: State, cancel: CancellationToken) {
        let mut snapshots = state.subscribe();
        loop {
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                () = cancel.cancelled() => return,
            }
            let mut by_name = self.by_name.lock().expect("not poisoned");
            let snapshot = snapshots.borrow_and_update();
            by_name.retain(|name, tx| {
                if tx.receiver_count() == 0 {
                    return false;
                }
                let status = status_of(name, &snapshot).unwrap_or(ServingStatus::ServiceUnknown);
                tx.send_if_modified(|sent| std::mem::replace(sent, status) != status);
                true
            });
        }
    }
}

struct HealthService {
    state: State,
    watched: Watched,
    /// A permit per open `Watch` stream.
    watches: Arc<Semaphore>,
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
        let Ok(permit) = Arc::clone(&self.watches).try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "{MAX_WATCHES} Watch streams are open, the most this endpoint serves"
            )));
        };
        let name = request.into_inner().service;
        let mut statuses = self.watched.follow(&name, &self.state);
        let cancel = self.cancel.clone();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _permit = permit;
            let mut sent = None;
            loop {
                // A status that changed and changed back before this read
                // is no change.
                let status = *statuses.borrow_and_update();
                if sent != Some(status) {
                    if tx.send(Ok(response(status))).await.is_err() {
                        return;
                    }
                    sent = Some(status);
                }
                tokio::select! {
                    changed = statuses.changed() => if changed.is_err() { return },
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
