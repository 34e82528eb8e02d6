//! The app's sockets, read from `/proc/net/tcp` and `/proc/net/tcp6`: the
//! sidecar shares the pod's network namespace, so these list the app's
//! connections. Only the local port and the state matter, so IPv4, IPv6 and
//! v4-mapped addresses are all read the same way.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `st` of an established connection (include/net/tcp_states.h).
const ESTABLISHED: u8 = 0x01;
/// `st` of a listening socket.
const LISTEN: u8 = 0x0A;

/// Sockets on the watched ports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sockets {
    /// Established connections whose local port is watched.
    pub established: usize,
    /// Listening sockets on a watched port.
    pub listening: usize,
    /// The other ends of the connections on a watched port from outside
    /// the pod, in any state (`TIME_WAIT` included, so that a short
    /// connection is still seen after it has closed): a new one is a new
    /// connection. Left empty by `/proc/net`, which tells no drain about
    /// new connections.
    pub peers: Vec<SocketAddr>,
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
    pub fn at(dir: impl AsRef<Path>) -> Self {
        ProcNet {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// Counts the sockets on `ports`. A missing `tcp6` (IPv6 disabled) is
    /// not an error.
    pub fn sockets(&self, ports: &[u16]) -> io::Result<Sockets> {
        let mut total = Sockets::default();
        self.each_table(|text| {
            let s = count(text, ports);
            total.established += s.established;
            total.listening += s.listening;
        })?;
        Ok(total)
    }

    /// The inodes of the sockets listening on `ports`, sorted.
    pub fn listeners(&self, ports: &[u16]) -> io::Result<Vec<u32>> {
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

/// Counts the sockets on `ports` in one table's text.
pub fn count(table: &str, ports: &[u16]) -> Sockets {
    let mut s = Sockets::default();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if !ports.contains(&port) {
            continue;
        }
        match u8::from_str_radix(state, 16) {
            Ok(ESTABLISHED) => s.established += 1,
            Ok(LISTEN) => s.listening += 1,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C351 06 00000000:00000000 03:00000BB8 00000000     0        0 0 3 0
   4: 0100007F:0016 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 6 1 0 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D432 01 00000000:00000000 00:00000000 00000000  1000        0 7 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_established_and_listening_on_the_port_only() {
        // Port 8080 = 0x1F90. The client side of a connection to 8080
        // (line 2), TIME-WAIT (line 3) and other ports (line 4) don't count.
        assert_eq!(
            count(TCP, &[8080]),
            Sockets {
                established: 1,
                listening: 1,
                peers: Vec::new()
            }
        );
        assert_eq!(count(TCP, &[22]).established, 1);
        assert_eq!(count(TCP, &[9999]), Sockets::default());
    }

    #[test]
    fn counts_ipv6_and_v4_mapped_connections() {
        assert_eq!(
            count(TCP6, &[8080]),
            Sockets {
                established: 2,
                listening: 1,
                peers: Vec::new()
            }
        );
    }

    #[test]
    fn reads_both_tables_and_tolerates_a_missing_tcp6() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        let net = ProcNet::at(dir.path());
        assert_eq!(net.sockets(&[8080]).unwrap().established, 1);
        std::fs::write(dir.path().join("tcp6"), TCP6).unwrap();
        assert_eq!(net.sockets(&[8080]).unwrap().established, 3);
        assert!(ProcNet::at(dir.path().join("nope")).sockets(&[8080]).is_err());
    }

    #[test]
    fn listeners_are_named_by_their_inode() {
        assert_eq!(listeners(TCP, &[8080]).collect::<Vec<_>>(), [1]);
        assert_eq!(listeners(TCP6, &[8080]).collect::<Vec<_>>(), [5]);
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
