//! Binding the listener and serving connections within limits
//! (`[server]`): a deadline for request headers (slowloris), a cap on their
//! size (431), an idle timeout for kept-alive connections, and a cap on
//! open connections that closes an old one rather than refusing the
//! newest, so that clients holding connections open cannot starve the
//! kubelet's probes, which open a fresh connection each time.
//!
//! Every accepted connection is tracked from its first moment, including
//! while its request head is still arriving: hyper's graceful shutdown does
//! nothing to a connection in the middle of a head, so closing one here
//! means dropping it, which frees its socket and buffers at once. What a
//! connection costs is therefore bounded by the cap, whatever clients do:
//! a connection that has sent nothing holds its task and socket only; one
//! that has sent bytes also holds hyper's buffers (8 KiB written-header
//! buffer, and a read buffer up to `max_header_bytes`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoints::Endpoints;
use super::front;
use crate::config::ServerConfig;

/// How long open connections get to finish after a clean stop.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a connection closed while a request is in progress gets to
/// finish it before it is dropped.
const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// How long the accept loop pauses after running out of file descriptors
/// and closing a connection, so that it can release its own.
const EMFILE_PAUSE: Duration = Duration::from_millis(1);

/// How long it pauses when there was no connection to close (the checks
/// hold the descriptors): it backs off rather than spin.
const EMFILE_BACKOFF: Duration = Duration::from_millis(50);

/// File descriptors kept for everything but client connections: the
/// runtime, the listener, logs, a lookup's socket.
const RESERVED_FDS: u64 = 64;

/// The send and receive buffers asked of the kernel for each connection
/// (it doubles them for its bookkeeping: 8 KiB each). Left to the kernel,
/// they grow to megabytes for a client that does not read (measured:
/// 1,024 clients leaving `/metrics` of 300 checks unread queued 348 MB in
/// the kernel, which a cgroup v2 memory limit counts). A probe's request
/// and answer fit whole; a large answer takes one round trip per 8 KiB.
const SOCKET_BUFFER: usize = 4 << 10;

/// Binds `addr`. An IPv6 unspecified address (`[::]`) also accepts IPv4,
/// whatever the host's `bindv6only` says.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // Inherited by every accepted connection: what the kernel holds for
    // one, however long its client leaves its answer unread or sends
    // more than is read (see `SOCKET_BUFFER`).
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.bind(&addr.into())?;
    // The kernel caps it at net.core.somaxconn (4096 since Linux 5.4): a
    // flood of connections must not fill the queue before the accept loop
    // empties it, or a probe's handshake waits for a retransmission.
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Raises the soft limit on open files to the hard limit and returns the
/// soft limit now in force. Container runtimes start processes with a soft
/// limit of 1024, which is below the default connection cap.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// What the idle process may hold, whatever the configuration: code and
/// data mapped from the binary, the runtime, buffers kept by the allocator
/// after a `/metrics` scrape or a reload. Measured: 5–6 MiB for a release
/// build with 10 checks, 14 MiB for a debug one (BENCHMARKS.md).
const BUDGET_BASE: u64 = 16 << 20;
/// What one client connection may hold at most: hyper's 8 KiB buffer for
/// the response head and a read buffer grown to `max_header_bytes`, plus
/// the task (measured: 28 KiB per held half-sent 12 KiB head), and the
/// kernel's send and receive buffers (8 KiB each, see `SOCKET_BUFFER`),
/// which a cgroup v2 memory limit counts too.
const BUDGET_PER_CONNECTION: u64 = 48 << 10;
/// What one gRPC connection may hold: HTTP/2 state and its read, write
/// and HPACK buffers (32 KiB), the kernel's socket buffers (16 KiB), and
/// for each of its streams (`grpc::MAX_STREAMS_PER_CONNECTION`, 4) a
/// header block of up to 8 KiB, what flow control lets the client send
/// unread (4 KiB) and tonic's decode buffer (8 KiB, a message being at
/// most 1 KiB), and the tasks and futures of each. Measured: 150 KiB a
/// connection on a debug build, 56 connections with every stream held
/// (tests/it/surfaces.rs).
const BUDGET_PER_GRPC_CONNECTION: u64 = 160 << 10;
/// What one `Watch` stream holds beyond its connection's stream: its task,
/// its channels and its service name (up to the 1 KiB message bound).
const BUDGET_PER_WATCH: u64 = 4 << 10;
/// What one check may hold: its state, metrics and schedule (6 KiB,
/// measured as the slope from 100 to 1000 checks) and its last message,
/// up to 10 KiB of a body or of a command's output.
const BUDGET_PER_CHECK: u64 = 16 << 10;

/// The sidecar's memory budget (README, "Limits and failure behaviour"):
/// what it may use at most with `max_connections` (the `[server]` key),
/// `checks` checks and, when `grpc` is set, the gRPC endpoint, whatever
/// its clients do. Every connection counts, those on their way out too,
/// and so do the answers longer than a connection's own buffers, which a
/// client may leave unread (see `answers`).
pub const fn memory_budget(max_connections: usize, checks: usize, grpc: bool) -> u64 {
    let connections = (max_connections + CLOSING_SLACK) as u64 * BUDGET_PER_CONNECTION;
    let grpc = if grpc {
        super::grpc::MAX_CONNECTIONS as u64 * BUDGET_PER_GRPC_CONNECTION
            + super::grpc::MAX_WATCHES as u64 * BUDGET_PER_WATCH
    } else {
        0
    };
    BUDGET_BASE + connections + grpc + super::answers::BUDGET + checks as u64 * BUDGET_PER_CHECK
}

/// The container memory limit to ship for a budget: the budget rounded up
/// to 16 MiB, with at least a quarter of it again as headroom (the kernel
/// counts page cache and socket buffers against the limit too), and never
/// below 64 MiB.
pub const fn memory_limit(budget: u64) -> u64 {
    const STEP: u64 = 16 << 20;
    let steps = (budget + budget / 4).div_ceil(STEP);
    if steps < 4 { 4 * STEP } else { steps * STEP }
}

/// The fewest connections served whatever the open files limit: the
/// kubelet's probes, a scrape and a load balancer's checks.
const MIN_CONNECTIONS: usize = 16;

/// The connection cap in force: `configured`, lowered so that client
/// connections can never take the file descriptors that the checks
/// (`check_fds` while they all run at once) and the sidecar itself need,
/// under a limit of `fd_limit` open files. A check that cannot open a
/// socket would otherwise fail because of the clients, and the kubelet
/// would restart a healthy app.
pub(crate) fn connection_cap(configured: usize, check_fds: u64, fd_limit: u64) -> usize {
    let reserved = RESERVED_FDS + CLOSING_SLACK as u64 + check_fds;
    let room = fd_limit.saturating_sub(reserved);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(MIN_CONNECTIONS.min(configured))
}

/// One open connection, shared by its task and the table.
struct Slot {
    /// The first bytes have arrived and the connection is read (by the
    /// front path, then hyper).
    reading: AtomicBool,
    /// Requests begun and ended: one is in progress while they differ
    /// (HTTP/1.1 serves one at a time). Two counters rather than a clock
    /// read per request: the sweep notices a change, and that is when it
    /// last saw activity.
    begun: AtomicU64,
    ended: AtomicU64,
    /// Set before `closing` when the server stops, rather than to make
    /// room.
    stopping: AtomicBool,
    /// The connection must go; `waker` wakes its task. A flag and one
    /// waker rather than a `Notify`, whose waiter list takes a lock on
    /// every wait: the task waits for it around every request.
    closing: AtomicBool,
    waker: AtomicWaker,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            reading: AtomicBool::new(false),
            begun: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Tells the connection to go.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the connection has been told to go; the connection's
    /// own task waits for it.
    fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.closing.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.closing.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn busy(&self) -> bool {
        self.begun.load(Ordering::Acquire) != self.ended.load(Ordering::Acquire)
    }
}

/// A connection in the table, with what the sweep last saw of it.
struct Entry {
    slot: Arc<Slot>,
    /// `begun` when the sweep last looked.
    seen: u64,
    /// Since when nothing has happened on it: accepted, or a request seen
    /// in progress or begun.
    quiet_since: Instant,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    next: u64,
    by_age: BTreeMap<u64, Entry>,
    /// Connection tasks alive: those in `by_age` and those told to close
    /// that have not yet.
    live: usize,
}

/// How many closed connections may still be on their way out before the
/// accept loop waits for them: without a bound, a flood accepted faster
/// than the runtime gets to the closed ones would hold their sockets and
/// buffers past the cap.
const CLOSING_SLACK: usize = 64;

impl Open {
    /// Closes one connection to make room: the oldest that has sent bytes
    /// but has no request in progress (a head still arriving, or idle
    /// after an answer); else the oldest not yet read from; else the
    /// oldest. A kubelet probe is a fresh connection whose head is
    /// answered in the same turn as it is first read, so it is never in
    /// the first group, and under a flood it waits in the second behind
    /// every older connection.
    fn evict_one(&mut self) -> bool {
        let idle = |entry: &Entry| !entry.slot.busy();
        let victim = self
            .by_age
            .iter()
            .find(|(_, entry)| idle(entry) && entry.slot.reading.load(Ordering::Acquire))
            .or_else(|| self.by_age.iter().find(|(_, entry)| idle(entry)))
            .or_else(|| self.by_age.first_key_value())
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.by_age.remove(&id)) {
            Some(entry) => {
                entry.slot.close();
                true
            }
            None => false,
        }
    }

    /// Closes the connections with no request in progress for too long at
    /// `now`: `first_head` without a whole first request head since they
    /// were accepted, `idle` since the end of their last answer. A head
    /// half-sent after an answer is an idle connection here; hyper's own
    /// header timer, which this replaces, would also have closed it
    /// within `first_head` of the answer. Closed within a sweep's period
    /// of their due time, never before it.
    fn sweep(&mut self, now: Instant, first_head: Duration, idle: Duration) {
        self.by_age.retain(|_, entry| {
            let begun = entry.slot.begun.load(Ordering::Acquire);
            if begun != entry.seen || entry.slot.busy() {
                entry.seen = begun;
                entry.quiet_since = now;
                return true;
            }
            let limit = if begun == 0 {
                first_head
            } else {
                idle.min(first_head)
            };
            let expired = now.saturating_duration_since(entry.quiet_since) >= limit;
            if expired {
                entry.slot.close();
            }
            !expired
        });
    }

    /// Tells every connection that the server stops.
    fn stop_all(&mut self) {
        for entry in self.by_age.values() {
            entry.slot.stopping.store(true, Ordering::Release);
            entry.slot.close();
        }
    }
}

/// Serves `endpoints` on `listener` within `limits`, at most `cap`
/// connections at a time (see [`connection_cap`]), until `shutdown`
/// completes with a value and a grace, then lets open connections finish
/// for that grace and returns the value.
pub(crate) async fn serve<T>(
    listener: TcpListener,
    endpoints: Endpoints,
    limits: ServerConfig,
    cap: usize,
    shutdown: impl Future<Output = (T, Duration)>,
) -> T {
    let open = Arc::new(Mutex::new(Open::default()));
    let ended = Arc::new(Notify::new());
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(limits.max_header_bytes);
    // One sweep over the table for both deadlines, rather than a timer per
    // connection for the first byte and one per request for hyper's header
    // read timeout (set, reset and dropped on every request).
    let sweep = {
        let open = Arc::clone(&open);
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
        // Past the cap and its slack: wait for a closed one to be gone.
        let room = async {
            loop {
                let gone = ended.notified();
                tokio::pin!(gone);
                gone.as_mut().enable();
                if open.lock().expect("not poisoned").live < cap + CLOSING_SLACK {
                    return;
                }
                gone.await;
            }
        };
        tokio::select! {
            () = room => {}
            stop = &mut shutdown => break stop,
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE)) {
                        // Out of file descriptors: close a connection to
                        // get one back, and give it the time to go.
                        let evicted = open.lock().expect("not poisoned").evict_one();
                        tracing::debug!(evicted, "accept failed: {e}");
                        tokio::time::sleep(if evicted { EMFILE_PAUSE } else { EMFILE_BACKOFF }).await;
                    } else {
                        // ECONNABORTED and the like: the next one may work.
                        tracing::debug!("accept failed: {e}");
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
            },
            stop = &mut shutdown => break stop,
        };
        let (id, slot) = {
            let mut open = open.lock().expect("not poisoned");
            if open.by_age.len() >= cap {
                open.evict_one();
            }
            let id = open.next;
            open.next += 1;
            let slot = Arc::new(Slot::new());
            let entry = Entry {
                slot: Arc::clone(&slot),
                seen: 0,
                quiet_since: Instant::now(),
            };
            open.by_age.insert(id, entry);
            open.live += 1;
            (id, slot)
        };
        let connection = Connection {
            stream,
            peer,
            endpoints: endpoints.clone(),
            slot,
        };
        let (open, ended) = (Arc::clone(&open), Arc::clone(&ended));
        let builder = builder.clone();
        tasks.spawn(async move {
            connection.serve(&builder).await;
            let mut open = open.lock().expect("not poisoned");
            open.by_age.remove(&id);
            open.live -= 1;
            ended.notify_one();
        });
    };
    drop(listener);
    stop.cancel();
    open.lock().expect("not poisoned").stop_all();
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
        let Some(read) = front(&mut stream, &slot, &endpoints, peer).await else {
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

/// Serves the plain probes of a connection from their bytes (`front`)
/// until it ends (`None`) or a request for hyper arrives: then the bytes
/// read of it. The sweep closes the connection if no head follows in time.
async fn front(
    stream: &mut TcpStream,
    slot: &Slot,
    endpoints: &Endpoints,
    peer: SocketAddr,
) -> Option<Bytes> {
    let mut nodelay = false;
    loop {
        tokio::select! {
            biased;
            () = slot.closed() => return None,
            readable = stream.readable() => readable.ok()?,
        }
        slot.reading.store(true, Ordering::Release);
        if !nodelay {
            let _ = stream.set_nodelay(true);
            nodelay = true;
        }
        let reply = match front::read(stream, endpoints, peer) {
            front::Read::Nothing => continue,
            front::Read::Closed => return None,
            front::Read::Hyper(read) => return Some(read),
            front::Read::Answered(reply) => reply,
        };
        slot.begun.fetch_add(1, Ordering::AcqRel);
        slot.ended.fetch_add(1, Ordering::AcqRel);
        let close = reply.close;
        if !write(stream, slot, reply).await || close {
            let _ = stream.shutdown().await;
            return None;
        }
    }
}

/// Writes a front-path reply; false if the connection must end. Idle
/// while it drains, as a connection whose answer hyper writes: closed at
/// once to make room, given the grace to finish when the server stops.
async fn write(stream: &mut TcpStream, slot: &Slot, reply: front::Reply) -> bool {
    let mut write = std::pin::pin!(reply.write(stream));
    tokio::select! {
        biased;
        () = slot.closed() => {
            if slot.stopping.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, write).await;
            }
            false
        }
        written = &mut write => written.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_follows_the_budget_and_grows_with_connections_and_checks() {
        let default = memory_budget(1024, 5, false);
        assert_eq!(default >> 20, 68);
        assert_eq!(memory_limit(default), 96 << 20);
        assert_eq!(memory_limit(memory_budget(1024, 5, true)), 96 << 20);
        assert_eq!(memory_limit(memory_budget(1024, 1000, false)), 112 << 20);
        assert_eq!(memory_limit(memory_budget(4096, 5, false)), 272 << 20);
        assert_eq!(
            memory_limit(memory_budget(16, 0, false)),
            64 << 20,
            "never below 64 MiB"
        );
    }

    #[test]
    fn the_connection_cap_leaves_room_for_the_checks() {
        assert_eq!(connection_cap(1024, 40, 1_048_576), 1024);
        // 1024 fds, checks needing 40: 64 + 64 + 40 kept.
        assert_eq!(connection_cap(1024, 40, 1024), 856);
        assert_eq!(connection_cap(1024, 4000, 1024), 16);
    }

    fn entry(reading: bool, busy: bool) -> Entry {
        let slot = Slot::new();
        slot.reading.store(reading, Ordering::Release);
        slot.begun.store(u64::from(busy), Ordering::Release);
        Entry {
            slot: Arc::new(slot),
            seen: 0,
            quiet_since: Instant::now(),
        }
    }

    fn ids(open: &Open) -> Vec<u64> {
        open.by_age.keys().copied().collect()
    }

    #[tokio::test]
    async fn eviction_takes_half_sent_and_idle_ones_first_and_spares_requests_in_progress() {
        let mut open = Open::default();
        // Not read from yet, busy, half-sent or idle, not read from, busy,
        // half-sent or idle.
        let connections = [
            (false, false),
            (true, true),
            (true, false),
            (false, false),
            (true, true),
            (true, false),
        ];
        for (id, (reading, busy)) in (0..).zip(connections) {
            open.by_age.insert(id, entry(reading, busy));
        }
        let half_sent = Arc::clone(&open.by_age[&2].slot);
        assert!(open.evict_one());
        assert_eq!(ids(&open), [0, 1, 3, 4, 5]);
        // Told, for the connection to see when it looks.
        half_sent.closed().await;
        assert!(open.evict_one());
        assert_eq!(ids(&open), [0, 1, 3, 4]);
        // Then those not read from yet, oldest first.
        assert!(open.evict_one());
        assert_eq!(ids(&open), [1, 3, 4]);
        assert!(open.evict_one());
        assert_eq!(ids(&open), [1, 4]);
        // Only busy ones left: the oldest goes.
        assert!(open.evict_one());
        assert_eq!(ids(&open), [4]);
    }

    #[tokio::test]
    async fn the_sweep_closes_late_first_heads_and_idle_connections_never_before_their_time() {
        const FIRST_HEAD: Duration = Duration::from_secs(10);
        const IDLE: Duration = Duration::from_secs(5);
        let mut open = Open::default();
        // 0: never sends a whole head; 1: answered once, then idle; 2: a
        // request in progress all along; 3: a request now and then.
        for id in 0..4 {
            open.by_age.insert(id, entry(true, false));
        }
        let start = open.by_age[&0].quiet_since;
        let slot = |open: &Open, id| Arc::clone(&open.by_age[&id].slot);
        let (idle, busy, active) = (slot(&open, 1), slot(&open, 2), slot(&open, 3));
        idle.begun.store(1, Ordering::Release);
        idle.ended.store(1, Ordering::Release);
        busy.begun.store(1, Ordering::Release);
        let second = Duration::from_secs(1);
        for t in 1..=12 {
            if t % 3 == 0 {
                active.begun.fetch_add(1, Ordering::AcqRel);
                active.ended.fetch_add(1, Ordering::AcqRel);
            }
            open.sweep(start + t * second, FIRST_HEAD, IDLE);
            let open_ids = ids(&open);
            // Idle from the first sweep on (t = 1): due at t = 6.
            assert_eq!(open_ids.contains(&1), t < 6, "t = {t}: {open_ids:?}");
            // Accepted at t = 0 with nothing begun: due at t = 10.
            assert_eq!(open_ids.contains(&0), t < 10, "t = {t}: {open_ids:?}");
            assert!(open_ids.contains(&2) && open_ids.contains(&3), "t = {t}");
        }
        // The idle one was told to go.
        idle.closed().await;
        // A kept-alive connection is held no longer than a first head.
        let mut open = Open::default();
        open.by_age.insert(0, entry(true, false));
        let slot = slot(&open, 0);
        slot.begun.store(1, Ordering::Release);
        slot.ended.store(1, Ordering::Release);
        open.sweep(start, Duration::from_secs(2), IDLE);
        open.sweep(start + Duration::from_secs(2), Duration::from_secs(2), IDLE);
        assert!(ids(&open).is_empty());
    }
}
