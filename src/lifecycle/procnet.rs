//! The app's sockets, read from `/proc/net/tcp` and `/proc/net/tcp6`: the
//! sidecar shares the pod's network namespace, so these list the app's
//! connections, where `sock_diag` is not available. The lines become the
//! same entries as a dump, told apart by the same rule
//! ([`diag::classify`](super::diag::classify)), without the kernel's
//! `tcp_info`: no bytes, and a mesh proxy's connections held open.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::diag::{self, Entry};
use crate::config::Mesh;

/// `st` of a listening socket (include/net/tcp_states.h).
const LISTEN: u8 = 0x0A;

/// Sockets on the watched ports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sockets {
    /// The app's serving connections that hold a drain: established ones
    /// from outside the pod, and those of a mesh's proxy while a request
    /// waits for its answer (`drain.mesh`).
    pub established: usize,
    /// Listening sockets on a watched port.
    pub(crate) listening: usize,
    /// The other ends of the app's serving connections, in any state
    /// (`TIME_WAIT` included, so that a short connection is still seen
    /// after it has closed): a new one is a new connection, and one whose
    /// bytes grew carried a request. Left empty by `/proc/net`, which
    /// tells no drain about new connections.
    pub(crate) peers: Vec<Peer>,
    /// Established connections from other clients inside the pod (another
    /// container's cache client, a log shipper): not the app's serving
    /// traffic, never waited on.
    pub(crate) in_pod: usize,
}

/// The other end of one of the app's serving connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Peer {
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// Bytes the app has received on the connection so far (0 where the
    /// kernel does not say: a closed connection in `TIME_WAIT`).
    pub(crate) received: u64,
}

/// Where the socket tables are read: `/proc/net` in production, a
/// directory of copies in tests.
#[derive(Debug, Clone)]
pub struct ProcNet {
    dir: PathBuf,
}

impl Default for ProcNet {
    fn default() -> Self {
        ProcNet::at("/proc/net")
    }
}

impl ProcNet {
    /// Reads `tcp` and `tcp6` under `dir`.
    pub(crate) fn at(dir: impl AsRef<Path>) -> Self {
        ProcNet {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// Counts the sockets on `ports`, told apart as `mesh` says. A missing
    /// `tcp6` (IPv6 disabled) is not an error.
    pub fn sockets(&self, ports: &[u16], mesh: Mesh) -> io::Result<Sockets> {
        let mut all = Vec::new();
        self.each_table(|text| all.extend(entries(text, ports)))?;
        Ok(diag::classify(&all, ports, mesh))
    }

    /// The inodes of the sockets listening on `ports`, sorted.
    pub(crate) fn listeners(&self, ports: &[u16]) -> io::Result<Vec<u32>> {
        let mut inodes = Vec::new();
        self.each_table(|text| inodes.extend(listeners(text, ports)))?;
        inodes.sort_unstable();
        Ok(inodes)
    }

    /// Calls `each` with the text of `tcp`, then of `tcp6` if there is one.
    fn each_table(&self, mut each: impl FnMut(&str)) -> io::Result<()> {
        for (file, required) in [("tcp", true), ("tcp6", false)] {
            match std::fs::read_to_string(self.dir.join(file)) {
                Ok(text) => each(&text),
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The inodes of the sockets listening on `ports` in one table's text (the
/// tenth field).
fn listeners<'a>(table: &'a str, ports: &'a [u16]) -> impl Iterator<Item = u32> + 'a {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().take(10).collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
        let listening = u8::from_str_radix(state, 16).ok()? == LISTEN;
        (listening && ports.contains(&port)).then(|| inode.parse().ok())?
    })
}

/// The sockets of one table's text whose local or remote port is one of
/// `ports`.
fn entries<'a>(table: &'a str, ports: &'a [u16]) -> impl Iterator<Item = Entry> + 'a {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().take(10).collect();
        let (local, remote) = (address(fields.get(1)?)?, address(fields.get(2)?)?);
        if !ports.contains(&local.port()) && !ports.contains(&remote.port()) {
            return None;
        }
        Some(Entry {
            state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
            local,
            remote,
            uid: fields.get(7)?.parse().ok()?,
            inode: fields.get(9)?.parse().ok()?,
            info: None,
        })
    })
}

/// An address as the tables write it: the IP's 32-bit words in hex, each
/// in the host's byte order, then the port in hex.
fn address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Counts the sockets on `ports` in one table's text, without a mesh.
#[cfg(test)]
fn count(table: &str, ports: &[u16]) -> Sockets {
    diag::classify(&entries(table, ports).collect::<Vec<_>>(), ports, Mesh::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Port 8080 = 0x1F90; the pod is 10.0.0.5 (0500000A), a balancer
    // 10.0.0.9; uid 2102 is a mesh proxy's.
    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0500000A:1F90 0900000A:C350 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  2102        0 4 1 0 20 4 30 10 -1
   4: 0500000A:1F90 0900000A:C352 06 00000000:00000000 03:00000BB8 00000000     0        0 0 3 0
   5: 0500000A:0016 0900000A:C353 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
";
    // fd00::5 the pod, fd00::9 a client; then a v4-mapped loopback pair.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6 1 0 100 0 0 10 0
   1: 000000FD000000000000000005000000:1F90 000000FD000000000000000009000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 7 1 0 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D432 01 00000000:00000000 00:00000000 00000000  1000        0 8 1 0 20 4 30 10 -1
";

    fn peer(addr: &str) -> Peer {
        Peer {
            addr: addr.parse().unwrap(),
            received: 0,
        }
    }

    #[test]
    fn counts_connections_from_outside_the_pod_and_sets_apart_the_pods_own() {
        // The loopback connection (lines 2 and 3) is the pod's own client;
        // the client's end of it, TIME-WAIT (line 4) and other ports (line
        // 5) are not established connections to the app.
        assert_eq!(
            count(TCP, &[8080]),
            Sockets {
                established: 1,
                listening: 1,
                peers: vec![peer("10.0.0.9:50000"), peer("10.0.0.9:50002")],
                in_pod: 1,
            }
        );
        assert_eq!(count(TCP, &[22]).established, 1);
        assert_eq!(count(TCP, &[9999]), Sockets::default());
    }

    #[test]
    fn a_mesh_proxys_connection_is_known_by_its_clients_uid() {
        let entries: Vec<Entry> = entries(TCP, &[8080]).collect();
        let linkerd = diag::classify(&entries, &[8080], Mesh::Linkerd { proxy_uid: 2102 });
        assert_eq!((linkerd.established, linkerd.in_pod), (2, 0), "{linkerd:?}");
        assert!(linkerd.peers.contains(&peer("127.0.0.1:50001")));
        let other = diag::classify(&entries, &[8080], Mesh::Linkerd { proxy_uid: 4000 });
        assert_eq!((other.established, other.in_pod), (1, 1), "another uid's");
    }

    #[test]
    fn counts_ipv6_and_v4_mapped_connections() {
        assert_eq!(
            count(TCP6, &[8080]),
            Sockets {
                established: 1,
                listening: 1,
                peers: vec![peer("[fd00::9]:54321")],
                in_pod: 1,
            }
        );
    }

    #[test]
    fn reads_both_tables_and_tolerates_a_missing_tcp6() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        let net = ProcNet::at(dir.path());
        assert_eq!(net.sockets(&[8080], Mesh::None).unwrap().established, 1);
        std::fs::write(dir.path().join("tcp6"), TCP6).unwrap();
        assert_eq!(net.sockets(&[8080], Mesh::None).unwrap().established, 2);
        assert!(
            ProcNet::at(dir.path().join("nope"))
                .sockets(&[8080], Mesh::None)
                .is_err()
        );
    }

    #[test]
    fn listeners_are_named_by_their_inode() {
        assert_eq!(listeners(TCP, &[8080]).collect::<Vec<_>>(), [1]);
        assert_eq!(listeners(TCP6, &[8080]).collect::<Vec<_>>(), [6]);
        assert_eq!(listeners(TCP, &[22]).count(), 0);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert_eq!(
            count("header\nnot a line\n 1: zz:zz 0:0 01\n", &[8080]),
            Sockets::default()
        );
    }
}
