//! The app's sockets through the kernel's `sock_diag` netlink interface,
//! filtered by state and port in the kernel. Reading `/proc/net/tcp`
//! formats every socket of the host's TCP hash as text (the kernel walks
//! the whole hash from inside a pod's namespace too), about 2 µs per
//! socket; a filtered dump copies out only the sockets asked for
//! (BENCHMARKS.md, "Counting the app's connections").
//!
//! Each socket comes with its inode, which names it for as long as it is
//! open: the app's listening sockets tell one app container from the next
//! however short the gap between them, and the sidecar's own sockets
//! (listed in `/proc/self/fd`) tell its connections to the app apart from
//! the app's clients.

use std::collections::HashSet;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::procnet::Sockets;

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
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
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

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    state: u8,
    local: SocketAddr,
    remote: SocketAddr,
    inode: u32,
}

/// The inodes of the TCP sockets listening on `ports`, IPv4 and IPv6,
/// sorted: the identity of the app container that listens.
pub fn listeners(ports: &[u16]) -> io::Result<Vec<u32>> {
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

/// The app's sockets on `ports`: its listeners, its established
/// connections whose other end is not a socket of this process (an `http`
/// check with `keep_alive` is the sidecar's traffic, not the app's), and
/// the other ends of its connections from outside the pod in any state.
pub fn sockets(ports: &[u16]) -> io::Result<Sockets> {
    let mut counted = Sockets::default();
    if ports.is_empty() {
        return Ok(counted);
    }
    // Both ends of a local connection to the app are in the namespace: the
    // app's (local port watched) and the client's (remote port watched).
    let filter = bytecode(ports.iter().flat_map(|p| [(BC_S_EQ, *p), (BC_D_EQ, *p)]));
    let mut served = Vec::new();
    let mut local_clients = Vec::new();
    dump(ALL_STATES, &filter, |e| {
        let watched = ports.contains(&e.local.port());
        match e.state {
            TCP_LISTEN if watched => counted.listening += 1,
            TCP_ESTABLISHED if watched => served.push(e.remote),
            TCP_ESTABLISHED => local_clients.push(e),
            _ => {}
        }
        if watched && e.state != TCP_LISTEN && from_outside(&e) {
            counted.peers.push(e.remote);
        }
    })?;
    counted.established = served.len();
    if local_clients.is_empty() {
        return Ok(counted);
    }
    // Only now is it worth listing this process's sockets.
    let own = own_inodes()?;
    let own_ends: HashSet<SocketAddr> = local_clients
        .iter()
        .filter(|e| own.contains(&e.inode))
        .map(|e| canonical(e.local))
        .collect();
    counted.established -= served
        .iter()
        .filter(|remote| own_ends.contains(&canonical(**remote)))
        .count();
    Ok(counted)
}

/// Whether a connection's other end is outside the pod: not loopback, and
/// not one of the pod's own addresses (a connection to the pod IP from
/// inside the pod has the same address at both ends). Inside the pod are
/// the sidecar's checks, whose short connections would otherwise look like
/// a balancer's traffic; traffic reaching the app through another local
/// proxy is that proxy's to drain.
fn from_outside(e: &Entry) -> bool {
    let remote = e.remote.ip().to_canonical();
    !remote.is_loopback() && remote != e.local.ip().to_canonical()
}

/// An address as IPv4 when it is an IPv4-mapped IPv6 one: a dual-stack
/// listener sees an IPv4 client as `::ffff:a.b.c.d`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The inodes of this process's sockets, from `/proc/self/fd`.
fn own_inodes() -> io::Result<HashSet<u32>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // A descriptor closed while listing is simply not there.
        let Ok(link) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let inode = link
            .to_str()
            .and_then(|l| l.strip_prefix("socket:["))
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|n| n.parse::<u32>().ok());
        inodes.extend(inode);
    }
    Ok(inodes)
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
fn dump(states: u32, filter: &[u8], mut each: impl FnMut(Entry)) -> io::Result<()> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = vec![0u8; 32 * 1024];
    for family in [AF_INET, AF_INET6] {
        // Unbound and unconnected: a netlink message goes to the kernel.
        socket.send(&request(family, states, filter))?;
        read_dump(&socket, &mut buf, &mut each)?;
    }
    Ok(())
}

/// A dump request: a `nlmsghdr`, an `inet_diag_req_v2` with an empty
/// socket id, and the filter as an `INET_DIAG_REQ_BYTECODE` attribute.
fn request(family: u8, states: u32, filter: &[u8]) -> Vec<u8> {
    const BODY: usize = 4 + 4 + 48;
    let attr = if filter.is_empty() { 0 } else { 4 + filter.len() };
    let len = HEADER + BODY + attr;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(&[family, 6 /* IPPROTO_TCP */, 0, 0]);
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
                if let Some(entry) = entry(&data[HEADER..HEADER + MSG]) {
                    each(entry);
                }
            }
            _ => {}
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(false)
}

/// The socket an `inet_diag_msg` describes.
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
    Some(Entry {
        state: msg[1],
        local: SocketAddr::new(ip(8)?, port(4)),
        remote: SocketAddr::new(ip(24)?, port(6)),
        inode: u32::from_ne_bytes(msg[68..72].try_into().expect("4 bytes")),
    })
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

    #[test]
    fn counts_the_apps_connections_but_not_the_sidecars_own() {
        // The app, dual-stack, so that an IPv4 client is seen as a mapped
        // address on its side.
        let app = TcpListener::bind("[::]:0")
            .or_else(|_| TcpListener::bind("0.0.0.0:0"))
            .unwrap();
        let port = app.local_addr().unwrap().port();
        assert_eq!(
            sockets(&[port]).unwrap(),
            Sockets {
                established: 0,
                listening: 1,
                peers: Vec::new()
            }
        );
        // The sidecar's own connection (a keep-alive check): not counted.
        let own = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_own_accepted, _) = app.accept().unwrap();
        assert_eq!(sockets(&[port]).unwrap().established, 0);
        // A client in another process: counted. `nc` would do; a child
        // that holds a connection is the same thing.
        let mut client = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket,sys,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('up',flush=True)\nsys.stdin.read()"
                ),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut up = [0u8; 3];
        client.stdout.as_mut().unwrap().read_exact(&mut up).unwrap();
        let (_accepted, _) = app.accept().unwrap();
        assert_eq!(sockets(&[port]).unwrap().established, 1);
        drop(client.stdin.take());
        client.wait().unwrap();
        drop(own);
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
        // Without its own connections left out, the dump counts what the
        // proc tables list. Reading /proc/net/tcp6 takes several reads,
        // and sockets that other tests open and close meanwhile can make
        // it skip or repeat a line: compared again until a deadline.
        let filter = bytecode([(BC_S_EQ, port)].into_iter());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let proc = super::super::procnet::ProcNet::default()
                .sockets(&[port])
                .unwrap();
            let mut established = 0;
            dump(1 << TCP_ESTABLISHED, &filter, |_| established += 1).unwrap();
            let listening = listeners(&[port]).unwrap().len();
            let seen = (proc.established, established, proc.listening, listening);
            if seen == (3, 3, 1, 1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "proc established, dump established, proc listening, dump listening: {seen:?}"
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
            assert_eq!(sockets(&ports).unwrap().listening, 1, "{n} ports");
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
