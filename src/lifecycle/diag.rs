//! The app's sockets through the kernel's `sock_diag` netlink interface,
//! filtered by state and port in the kernel. Reading `/proc/net/tcp`
//! formats every socket of the host's TCP hash as text (the kernel walks
//! the whole hash from inside a pod's namespace too), about 2 µs per
//! socket; a filtered dump copies out only the sockets asked for
//! (BENCHMARKS.md, "Counting the app's connections").
//!
//! Each socket comes with its inode, which names it for as long as it is
//! open: the app's listening sockets tell one app container from the next
//! however short the gap between them. Each connection comes with the uid
//! of its socket and the kernel's `tcp_info` (bytes received, when data
//! last came and went): [`classify`] tells the app's serving traffic from
//! the pod's own clients by them (`drain.mesh`).

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::procnet::{Peer, Sockets};
use crate::config::Mesh;

/// `NETLINK_SOCK_DIAG` (linux/netlink.h).
const NETLINK_SOCK_DIAG: i32 = 4;
/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST | NLM_F_DUMP` (linux/netlink.h).
const FLAGS: u16 = 0x1 | 0x300;
/// `NLMSG_ERROR` and `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// TCP states (include/net/tcp_states.h).
pub(super) const TCP_ESTABLISHED: u8 = 1;
pub(super) const TCP_LISTEN: u8 = 10;
/// Every state as a bit, `TCP_ESTABLISHED` (1) to `TCP_NEW_SYN_RECV` (12).
const ALL_STATES: u32 = 0x1ffe;
/// `struct nlmsghdr`.
const HEADER: usize = 16;
/// `struct inet_diag_msg`, after the header: family, state, timer,
/// retransmits, then the socket id (ports big-endian, two 16-byte
/// addresses, interface, cookie), expiry, queues, uid and inode.
const MSG: usize = 72;
/// `INET_DIAG_REQ_BYTECODE`: the request's filter attribute
/// (linux/inet_diag.h).
const REQ_BYTECODE: u16 = 1;
/// `INET_DIAG_INFO`: the answer's `struct tcp_info` attribute, asked for
/// with its bit in the request's `idiag_ext`.
const DIAG_INFO: u16 = 2;
/// Offsets in `struct tcp_info` (linux/tcp.h): milliseconds since data
/// was last sent and received, the bytes sent (and acknowledged) and
/// received (Linux 4.1 on).
const INFO_LAST_DATA_SENT: usize = 44;
const INFO_LAST_DATA_RECV: usize = 52;
const INFO_BYTES_ACKED: usize = 120;
const INFO_BYTES_RECEIVED: usize = 128;
/// Istio's inbound passthrough binds its connections to the app to these
/// (`InboundPassthroughCluster`, istio/istio#29603).
const ISTIO_INBOUND_SOURCES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
];
/// Filter operations (linux/inet_diag.h).
const BC_JMP: u8 = 1;
const BC_S_EQ: u8 = 11;
const BC_D_EQ: u8 = 12;
/// How long the kernel may take to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Address families (linux/socket.h).
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_NETLINK: i32 = 16;

/// One socket of a dump, or of a line of `/proc/net/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) state: u8,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    /// The uid of the process that made the socket (0 in `TIME_WAIT`).
    pub(super) uid: u32,
    pub(super) inode: u32,
    /// What the kernel's `tcp_info` says, when it was asked and the
    /// socket has one (not in `TIME_WAIT`).
    pub(super) info: Option<Info>,
}

/// From the kernel's `tcp_info` and queues of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Info {
    /// Bytes received so far.
    pub(super) received: u64,
    /// A request waits for its answer: data came after the last data went
    /// out (or came, and none ever went out), or bytes wait in a queue.
    pub(super) waiting: bool,
}

/// The inodes of the TCP sockets listening on `ports`, IPv4 and IPv6,
/// sorted: the identity of the app container that listens.
pub(crate) fn listeners(ports: &[u16]) -> io::Result<Vec<u32>> {
    let mut inodes = Vec::new();
    if ports.is_empty() {
        return Ok(inodes);
    }
    let filter = bytecode(ports.iter().map(|p| (BC_S_EQ, *p)));
    dump(1 << TCP_LISTEN, &filter, |e| inodes.push(e.inode))?;
    inodes.sort_unstable();
    inodes.dedup();
    Ok(inodes)
}

/// The app's sockets on `ports`, its connections told apart as `mesh`
/// says (see [`classify`]).
pub fn sockets(ports: &[u16], mesh: Mesh) -> io::Result<Sockets> {
    if ports.is_empty() {
        return Ok(Sockets::default());
    }
    // Both ends of a local connection to the app are in the namespace: the
    // app's (local port watched) and the client's (remote port watched).
    let filter = bytecode(ports.iter().flat_map(|p| [(BC_S_EQ, *p), (BC_D_EQ, *p)]));
    let mut entries = Vec::new();
    dump_with_info(ALL_STATES, &filter, true, |e| entries.push(e))?;
    Ok(classify(&entries, ports, mesh))
}

/// Counts the app's sockets on `ports` among `entries` (the sockets whose
/// local or remote port is watched). A connection to the app is
///
/// - **from outside the pod** when its other end is neither loopback nor
///   the pod's own address (a connection to the pod IP from inside the
///   pod has that address at both ends): serving traffic, counted as new
///   traffic and as established while open, with or without a mesh;
/// - **the mesh proxy's** when its other end is in the pod and is a
///   socket of the proxy's uid, or (Istio) comes from `127.0.0.6` or `::6`:
///   serving traffic forwarded by the proxy, which keeps its connections
///   pooled; counted as new traffic (a new connection, or bytes received),
///   and as established only while a request waits for its answer;
/// - **from the pod's own clients** otherwise (the sidecar's checks,
///   another container's cache client, a log shipper): none of a
///   balancer's, never waited on; counted apart in `in_pod`.
pub(super) fn classify(entries: &[Entry], ports: &[u16], mesh: Mesh) -> Sockets {
    let mut counted = Sockets::default();
    // The client ends of the connections inside the pod, by address: their
    // sockets' uids say which process opened them.
    let clients: HashMap<SocketAddr, u32> = entries
        .iter()
        .filter(|e| e.state != TCP_LISTEN && ports.contains(&e.remote.port()))
        .map(|e| (canonical(e.local), e.uid))
        .collect();
    for e in entries.iter().filter(|e| ports.contains(&e.local.port())) {
        if e.state == TCP_LISTEN {
            counted.listening += 1;
            continue;
        }
        let established = e.state == TCP_ESTABLISHED;
        let remote = e.remote.ip().to_canonical();
        let inside = remote.is_loopback() || remote == e.local.ip().to_canonical();
        let proxy = match mesh {
            Mesh::None => false,
            Mesh::Istio { .. } if ISTIO_INBOUND_SOURCES.contains(&remote) => true,
            Mesh::Istio { proxy_uid } | Mesh::Linkerd { proxy_uid } => {
                inside && clients.get(&canonical(e.remote)) == Some(&proxy_uid)
            }
        };
        if inside && !proxy {
            counted.in_pod += usize::from(established);
            continue;
        }
        counted.peers.push(Peer {
            addr: e.remote,
            received: e.info.map_or(0, |i| i.received),
        });
        // A proxy's pooled connection holds the drain only while a request
        // waits on it; without `tcp_info` it is taken to.
        let holds = !proxy || e.info.is_none_or(|i| i.waiting);
        counted.established += usize::from(established && holds);
    }
    counted
}

/// An address as IPv4 when it is an IPv4-mapped IPv6 one: a dual-stack
/// listener sees an IPv4 client as `::ffff:a.b.c.d`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A filter that accepts a socket when any of `conditions` (an operation,
/// `BC_S_EQ` or `BC_D_EQ`, and a port) holds, built as `ss` builds `a or
/// b`: each comparison jumps past the rest on a match, else over its
/// `JMP` to the next comparison; the last rejects on a mismatch. Every
/// jump target is on the chain of "yes" jumps, as the kernel's audit of
/// the bytecode requires.
fn bytecode(conditions: impl Iterator<Item = (u8, u16)>) -> Vec<u8> {
    let conditions: Vec<(u8, u16)> = conditions.collect();
    let op = |code: u8, yes: u8, no: u16| {
        let mut b = [code, yes, 0, 0];
        b[2..].copy_from_slice(&no.to_ne_bytes());
        b
    };
    let mut out = Vec::with_capacity(conditions.len() * 12);
    for (i, (code, port)) in conditions.iter().enumerate() {
        // The comparison and its port: 8 bytes; a mismatch skips them and
        // the jump after them.
        out.extend_from_slice(&op(*code, 8, 12));
        out.extend_from_slice(&op(0, 0, *port));
        let later = conditions.len() - i - 1;
        if later > 0 {
            // Reached on a match: jump to the end, which accepts.
            let rest = later * 8 + (later - 1) * 4;
            out.extend_from_slice(&op(BC_JMP, 4, (rest + 4) as u16));
        }
    }
    out
}

/// Dumps the TCP sockets, IPv4 then IPv6, in the `states` (a bit per
/// state) that `filter` accepts, calling `each` for every one.
fn dump(states: u32, filter: &[u8], each: impl FnMut(Entry)) -> io::Result<()> {
    dump_with_info(states, filter, false, each)
}

/// [`dump`], with each connection's `tcp_info` when `info` is asked for.
fn dump_with_info(states: u32, filter: &[u8], info: bool, mut each: impl FnMut(Entry)) -> io::Result<()> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = vec![0u8; 32 * 1024];
    for family in [AF_INET, AF_INET6] {
        // Unbound and unconnected: a netlink message goes to the kernel.
        socket.send(&request(family, states, filter, info))?;
        read_dump(&socket, &mut buf, &mut each)?;
    }
    Ok(())
}

/// A dump request: a `nlmsghdr`, an `inet_diag_req_v2` with an empty
/// socket id (and `INET_DIAG_INFO` asked for when `info`), and the filter
/// as an `INET_DIAG_REQ_BYTECODE` attribute.
fn request(family: u8, states: u32, filter: &[u8], info: bool) -> Vec<u8> {
    const BODY: usize = 4 + 4 + 48;
    let attr = if filter.is_empty() { 0 } else { 4 + filter.len() };
    let len = HEADER + BODY + attr;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    let ext = if info { 1 << (DIAG_INFO - 1) } else { 0 };
    msg.extend_from_slice(&[family, 6 /* IPPROTO_TCP */, ext, 0]);
    msg.extend_from_slice(&states.to_ne_bytes());
    msg.resize(HEADER + BODY, 0);
    if attr > 0 {
        msg.extend_from_slice(&(attr as u16).to_ne_bytes());
        msg.extend_from_slice(&REQ_BYTECODE.to_ne_bytes());
        msg.extend_from_slice(filter);
    }
    msg
}

/// Reads one dump to its end through `buf`.
fn read_dump(socket: &Socket, buf: &mut [u8], each: &mut impl FnMut(Entry)) -> io::Result<()> {
    loop {
        let n = (&*socket).read(buf)?;
        if read_messages(&buf[..n], each)? {
            return Ok(());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag dump ended early",
            ));
        }
    }
}

/// Reads the sockets of one datagram of a dump; true once the dump is done.
fn read_messages(mut data: &[u8], each: &mut impl FnMut(Entry)) -> io::Result<bool> {
    while data.len() >= HEADER {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        if len < HEADER || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed sock_diag message",
            ));
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = data
                    .get(HEADER..HEADER + 4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                return Err(io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY if len >= HEADER + MSG => {
                if let Some(entry) = entry(&data[HEADER..len]) {
                    each(entry);
                }
            }
            _ => {}
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(false)
}

/// The socket an `inet_diag_msg` and its attributes describe.
fn entry(msg: &[u8]) -> Option<Entry> {
    let port = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let ip = |at: usize| -> Option<IpAddr> {
        let bytes: [u8; 16] = msg[at..at + 16].try_into().expect("16 bytes");
        match msg[0] {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => None,
        }
    };
    let u32_at = |at: usize| u32::from_ne_bytes(msg[at..at + 4].try_into().expect("4 bytes"));
    let (rqueue, wqueue) = (u32_at(56), u32_at(60));
    let info = attribute(&msg[MSG..], DIAG_INFO)
        .filter(|info| info.len() >= INFO_LAST_DATA_RECV + 4)
        .map(|info| {
            let ms = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
            // Before Linux 4.1 the kernel's tcp_info ends before the byte
            // counts: the drain then sees new connections only.
            let bytes = |at: usize| {
                info.get(at..at + 8)
                    .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            };
            let (received, sent) = (bytes(INFO_BYTES_RECEIVED), bytes(INFO_BYTES_ACKED));
            // The times are in jiffies: a request that came within the
            // jiffy of the accept is told by nothing having gone out.
            let unanswered = received > 0 && sent == 0;
            Info {
                received,
                waiting: rqueue > 0
                    || wqueue > 0
                    || unanswered
                    || ms(INFO_LAST_DATA_RECV) < ms(INFO_LAST_DATA_SENT),
            }
        });
    Some(Entry {
        state: msg[1],
        local: SocketAddr::new(ip(8)?, port(4)),
        remote: SocketAddr::new(ip(24)?, port(6)),
        uid: u32_at(64),
        inode: u32_at(68),
        info,
    })
}

/// The payload of the netlink attribute of `kind` among `attrs`.
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let this = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if this == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn listeners_are_named_by_inode_on_v4_and_v6_and_forgotten_once_closed() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let first = listeners(&[port]).unwrap();
        assert_eq!(first.len(), 1, "connections do not count");
        let v6 = TcpListener::bind(("::1", port));
        let both = listeners(&[port, other.local_addr().unwrap().port()]).unwrap();
        assert_eq!(both.len(), 2 + usize::from(v6.is_ok()));
        assert!(both.contains(&first[0]));
        drop((v4, v6, other));
        assert!(listeners(&[port]).unwrap().is_empty());
        // The same port listened on again is another socket.
        let again = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let second = listeners(&[port]).unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(second, first, "a new listener has a new inode");
        drop(again);
    }

    /// A client of the app in another process, connected from `source`
    /// as `uid` (when given); each line on its stdin is sent as a request.
    struct Client(std::process::Child);

    impl Client {
        fn connect(port: u16, source: &str, uid: Option<u32>) -> Client {
            let setuid = uid.map_or(String::new(), |u| format!("os.setuid({u})\n"));
            let mut child = std::process::Command::new("python3")
                .args([
                    "-c",
                    &format!(
                        "import os,socket,sys\n{setuid}s=socket.socket()\ns.bind(('{source}',0))\ns.connect(('127.0.0.1',{port}))\nprint('up',flush=True)\nfor line in sys.stdin:\n    s.sendall(line.encode())\n"
                    ),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut up = [0u8; 3];
            child.stdout.as_mut().unwrap().read_exact(&mut up).unwrap();
            Client(child)
        }

        fn send(&mut self, line: &str) {
            use std::io::Write as _;
            let stdin = self.0.stdin.as_mut().unwrap();
            stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
            stdin.flush().unwrap();
        }
    }

    impl Drop for Client {
        fn drop(&mut self) {
            drop(self.0.stdin.take());
            let _ = self.0.wait();
        }
    }

    /// Counts until `f` holds of the count, for at most 10 s: the kernel
    /// moves the bytes on its own time.
    fn counted_until(port: u16, mesh: Mesh, what: &str, f: impl Fn(&Sockets) -> bool) -> Sockets {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = sockets(&[port], mesh).unwrap();
            if f(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {s:?}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn loopback_clients_are_the_pods_own_and_never_serving_traffic() {
        // The app, dual-stack, so that an IPv4 client is seen as a mapped
        // address on its side.
        let app = TcpListener::bind("[::]:0")
            .or_else(|_| TcpListener::bind("0.0.0.0:0"))
            .unwrap();
        let port = app.local_addr().unwrap().port();
        assert_eq!(
            sockets(&[port], Mesh::None).unwrap(),
            Sockets {
                listening: 1,
                ..Sockets::default()
            }
        );
        // The sidecar's own connection (a keep-alive check) and another
        // container's client: the pod's own, without a mesh and with one.
        let own = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_own_accepted, _) = app.accept().unwrap();
        let mut cache = Client::connect(port, "127.0.0.1", None);
        let (mut accepted, _) = app.accept().unwrap();
        cache.send("GET / HTTP/1.1");
        for mesh in [
            Mesh::None,
            Mesh::Istio { proxy_uid: 1337 },
            Mesh::Linkerd { proxy_uid: 2102 },
        ] {
            let s = counted_until(port, mesh, "two in the pod", |s| s.in_pod == 2);
            assert_eq!((s.established, s.peers.len()), (0, 0), "{mesh:?}: {s:?}");
        }
        let mut request = [0u8; 15];
        accepted.read_exact(&mut request).unwrap();
        drop(own);
    }

    #[test]
    fn istios_connections_from_127_0_0_6_count_by_their_requests() {
        let app = TcpListener::bind("[::]:0")
            .or_else(|_| TcpListener::bind("0.0.0.0:0"))
            .unwrap();
        let port = app.local_addr().unwrap().port();
        let istio = Mesh::Istio { proxy_uid: 1337 };
        let mut envoy = Client::connect(port, "127.0.0.6", None);
        let (mut accepted, peer) = app.accept().unwrap();
        // Pooled and idle: a peer to follow, not a connection to wait on.
        let s = counted_until(port, istio, "the proxy's connection", |s| s.peers.len() == 1);
        assert_eq!(s.established, 0, "{s:?}");
        assert_eq!(s.peers[0].addr.ip().to_canonical(), peer.ip().to_canonical());
        assert_eq!(s.peers[0].received, 0);
        // A request waits for its answer: the connection holds the drain
        // and its bytes show the request.
        envoy.send("GET / HTTP/1.1");
        let s = counted_until(port, istio, "a request waiting", |s| s.established == 1);
        assert_eq!(s.peers[0].received, 15, "{s:?}");
        let mut request = [0u8; 15];
        accepted.read_exact(&mut request).unwrap();
        std::io::Write::write_all(&mut accepted, b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        counted_until(port, istio, "answered", |s| s.established == 0);
        // Without a mesh, 127.0.0.6 is loopback: the pod's own.
        let s = sockets(&[port], Mesh::None).unwrap();
        assert_eq!((s.established, s.in_pod, s.peers.len()), (0, 1, 0), "{s:?}");
    }

    #[test]
    fn a_linkerd_proxys_connection_is_known_by_its_uid() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a client of another uid needs root");
            return;
        }
        let app = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = app.local_addr().unwrap().port();
        let linkerd = Mesh::Linkerd { proxy_uid: 2102 };
        let mut proxy = Client::connect(port, "127.0.0.1", Some(2102));
        let (_proxied, _) = app.accept().unwrap();
        let _other = Client::connect(port, "127.0.0.1", Some(2103));
        let (_other_accepted, _) = app.accept().unwrap();
        let s = counted_until(port, linkerd, "both", |s| s.peers.len() + s.in_pod == 2);
        assert_eq!((s.peers.len(), s.in_pod, s.established), (1, 1, 0), "{s:?}");
        proxy.send("GET /");
        let s = counted_until(port, linkerd, "a request waiting", |s| s.established == 1);
        assert_eq!(s.peers[0].received, 6, "{s:?}");
        let s = sockets(&[port], Mesh::Linkerd { proxy_uid: 4000 }).unwrap();
        assert_eq!((s.peers.len(), s.in_pod), (0, 2), "another uid's: {s:?}");
    }

    #[test]
    fn agrees_with_the_proc_tables() {
        let listener = TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(TcpStream::connect(("::1", port)).unwrap());
            streams.push(listener.accept().unwrap().0);
        }
        // The dump counts what the proc tables list. Reading /proc/net/tcp6 takes several reads,
        // and sockets that other tests open and close meanwhile can make
        // it skip or repeat a line: compared again until a deadline.
        let filter = bytecode([(BC_S_EQ, port)].into_iter());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let proc = super::super::procnet::ProcNet::default()
                .sockets(&[port], Mesh::None)
                .unwrap();
            let mut established = 0;
            dump(1 << TCP_ESTABLISHED, &filter, |_| established += 1).unwrap();
            let listening = listeners(&[port]).unwrap().len();
            // Loopback clients: the pod's own, by both readings.
            let in_pod = sockets(&[port], Mesh::None).unwrap().in_pod;
            let seen = (proc.in_pod, in_pod, established, proc.listening, listening);
            if seen == (3, 3, 3, 1, 1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "proc in pod, dump in pod, dump established, proc listening, dump listening: {seen:?}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_kernel_accepts_filters_of_many_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for n in [1, 2, 3, 10] {
            let mut ports: Vec<u16> = (1..n).map(|p| p as u16).collect();
            ports.push(port);
            assert_eq!(listeners(&ports).unwrap().len(), 1, "{n} ports");
            assert_eq!(sockets(&ports, Mesh::None).unwrap().listening, 1, "{n} ports");
            ports.pop();
            assert_eq!(listeners(&ports).unwrap().len(), 0, "{n} ports");
        }
    }

    #[test]
    fn a_kernel_error_is_an_io_error_and_done_ends_the_dump() {
        let mut error = vec![0u8; HEADER + 4];
        error[0..4].copy_from_slice(&((HEADER + 4) as u32).to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[HEADER..].copy_from_slice(&(-13i32).to_ne_bytes());
        let e = read_messages(&error, &mut |_| {}).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(13));
        let mut done = vec![0u8; HEADER];
        done[0..4].copy_from_slice(&(HEADER as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert!(read_messages(&done, &mut |_| {}).unwrap());
        assert!(
            read_messages(&[0xff; HEADER], &mut |_| {}).is_err(),
            "a length past the data"
        );
    }
}
