//! The app's listening sockets through the kernel's `sock_diag` netlink
//! interface, filtered by state in the kernel. Reading `/proc/net/tcp`
//! formats every socket of the network namespace as text, about 2 µs per
//! socket; a dump of the listening sockets alone costs tens of
//! microseconds however many connections the app holds, which matters for
//! a watch that runs all the time.

use std::io::{self, Read as _};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// `NETLINK_SOCK_DIAG` (linux/netlink.h).
const NETLINK_SOCK_DIAG: i32 = 4;
/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST | NLM_F_DUMP` (linux/netlink.h).
const FLAGS: u16 = 0x1 | 0x300;
/// `NLMSG_ERROR` and `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `TCP_LISTEN` as a state bit (include/net/tcp_states.h).
const LISTEN_BIT: u32 = 1 << 10;
/// `struct nlmsghdr`.
const HEADER: usize = 16;
/// Where `inet_diag_msg.id.idiag_sport` sits in a message, after the
/// header and four one-byte fields; big-endian.
const SPORT: usize = HEADER + 4;
/// How long the kernel may take to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Counts the TCP sockets listening on `ports`, IPv4 and IPv6.
pub(crate) fn listening(ports: &[u16]) -> io::Result<usize> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut count = 0;
    for family in [AF_INET, AF_INET6] {
        // Unbound and unconnected: a netlink message goes to the kernel.
        socket.send(&request(family))?;
        count += read_dump(&socket, &mut buf, ports)?;
    }
    Ok(count)
}

/// Address families (linux/socket.h).
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_NETLINK: i32 = 16;

/// A dump request for the listening TCP sockets of `family`: a
/// `nlmsghdr` and an `inet_diag_req_v2` with an empty socket id.
fn request(family: u8) -> Vec<u8> {
    const BODY: usize = 4 + 4 + 48;
    let mut msg = Vec::with_capacity(HEADER + BODY);
    msg.extend_from_slice(&((HEADER + BODY) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(&[family, 6 /* IPPROTO_TCP */, 0, 0]);
    msg.extend_from_slice(&LISTEN_BIT.to_ne_bytes());
    msg.resize(HEADER + BODY, 0);
    msg
}

/// Reads one dump to its end through `buf`, counting sockets on `ports`.
fn read_dump(socket: &Socket, buf: &mut [u8], ports: &[u16]) -> io::Result<usize> {
    let mut count = 0;
    loop {
        let n = (&*socket).read(buf)?;
        match count_messages(&buf[..n], ports)? {
            (c, true) => return Ok(count + c),
            (c, false) => count += c,
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag dump ended early",
            ));
        }
    }
}

/// Counts the sockets on `ports` in one datagram of a dump; true once the
/// dump is done.
fn count_messages(mut data: &[u8], ports: &[u16]) -> io::Result<(usize, bool)> {
    let mut count = 0;
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
            NLMSG_DONE => return Ok((count, true)),
            NLMSG_ERROR => {
                let code = data
                    .get(HEADER..HEADER + 4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                return Err(io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY if len >= SPORT + 2 => {
                let port = u16::from_be_bytes([data[SPORT], data[SPORT + 1]]);
                count += usize::from(ports.contains(&port));
            }
            _ => {}
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok((count, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_listeners_on_v4_and_v6_and_forgets_closed_ones() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        assert_eq!(listening(&[port]).unwrap(), 1, "connections do not count");
        let v6 = std::net::TcpListener::bind(("::1", port));
        let both = listening(&[port, other.local_addr().unwrap().port()]).unwrap();
        assert_eq!(both, 2 + usize::from(v6.is_ok()));
        drop((v4, v6, other));
        assert_eq!(listening(&[port]).unwrap(), 0);
    }

    #[test]
    fn agrees_with_the_proc_tables() {
        let listener = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proc = super::super::procnet::ProcNet::default()
            .sockets(&[port])
            .unwrap();
        assert_eq!(listening(&[port]).unwrap(), proc.listening);
    }

    #[test]
    fn a_kernel_error_is_an_io_error_and_done_ends_the_dump() {
        let mut error = vec![0u8; HEADER + 4];
        error[0..4].copy_from_slice(&((HEADER + 4) as u32).to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[HEADER..].copy_from_slice(&(-13i32).to_ne_bytes());
        let e = count_messages(&error, &[1]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(13));
        let mut done = vec![0u8; HEADER];
        done[0..4].copy_from_slice(&(HEADER as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(count_messages(&done, &[1]).unwrap(), (0, true));
        assert!(
            count_messages(&[0xff; HEADER], &[1]).is_err(),
            "a length past the data"
        );
    }
}
