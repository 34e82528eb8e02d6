//! What the sidecar may hold, and for how long: the listening socket and
//! the kernel buffers each connection inherits from it, the open files
//! limit and the connection cap it allows, the connections each listener
//! keeps open, and the memory budget all of it adds up to (README,
//! "Limits and failure behaviour"). The listeners (`listen`, `grpc`, the
//! webhook) read their bounds from here; nothing here serves.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// How long open connections get to finish after a clean stop.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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
        MAX_GRPC_CONNECTIONS as u64 * BUDGET_PER_GRPC_CONNECTION + MAX_WATCHES as u64 * BUDGET_PER_WATCH
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

/// How many closed connections may still be on their way out before the
/// accept loop waits for them: without a bound, a flood accepted faster
/// than the runtime gets to the closed ones would hold their sockets and
/// buffers past the cap.
pub(super) const CLOSING_SLACK: usize = 64;

/// Connections open at once on the gRPC endpoint (`grpc_listen`). A new one past it closes the oldest, so that
/// connections opened and left (idle, or a preface never finished) can
/// neither hold memory and descriptors without bound nor keep the
/// kubelet's probe, a fresh connection, out.
pub const MAX_GRPC_CONNECTIONS: usize = 48;

/// `Watch` streams open at once on the gRPC endpoint, across connections. One more is refused
/// (`RESOURCE_EXHAUSTED`); the kubelet's probes are `Check` calls and
/// never need one.
pub const MAX_WATCHES: usize = 64;

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
}
