//! A pod's network: a namespace of the test's own joined to the root
//! namespace (the node) by a veth pair, with a /30 of 198.18.0.0/15, the
//! range set aside for network tests (RFC 2544), so that no address the
//! host uses is shadowed. Names and addresses carry the process id and a
//! counter, so that runs and tests side by side never meet; the drop guard
//! removes the namespace and the link whatever happens.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Why the suite cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: network namespaces and veth pairs need CAP_NET_ADMIN".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("the `ip` command (iproute2) is missing".into()),
    }
}

/// Skips the calling test with a printed reason when the suite cannot run.
macro_rules! pod_or_skip {
    () => {
        if let Some(reason) = crate::net::unavailable() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}
pub(crate) use pod_or_skip;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A pod's network namespace and its veth pair; removed on drop.
pub struct Net {
    /// The namespace's name (`ip netns`).
    pub name: String,
    host_link: String,
    /// The pod's address, reached from the root namespace.
    pub ip: Ipv4Addr,
    /// The node's end of the pair: where the kubelet's probes come from.
    pub node_ip: Ipv4Addr,
}

impl Net {
    /// A new namespace with loopback up and the pod's address on its end
    /// of a veth pair.
    pub fn create() -> Net {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "at most 64 pods per run");
        let name = format!("hp-{pid}-{n}");
        let host_link = format!("hp{pid}x{n}");
        let pod_link = format!("hp{pid}y{n}");
        // 198.18.0.0/15: the second octet's low bit and the third octet
        // from the pid, the fourth from the counter.
        let (b, c, d) = (18 + ((pid >> 8) & 1) as u8, pid as u8, (n * 4) as u8);
        let node_ip = Ipv4Addr::new(198, b, c, d + 1);
        let ip = Ipv4Addr::new(198, b, c, d + 2);
        let net = Net {
            name,
            host_link,
            ip,
            node_ip,
        };
        run_ip(&["netns", "add", &net.name]);
        run_ip(&[
            "link",
            "add",
            &net.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &pod_link,
        ]);
        run_ip(&["link", "set", &pod_link, "netns", &net.name]);
        run_ip(&["addr", "add", &format!("{node_ip}/30"), "dev", &net.host_link]);
        run_ip(&["link", "set", &net.host_link, "up"]);
        net.exec_ip(&["link", "set", "lo", "up"]);
        net.exec_ip(&["addr", "add", &format!("{ip}/30"), "dev", &pod_link]);
        net.exec_ip(&["link", "set", &pod_link, "up"]);
        net
    }

    /// `port` at the pod's address.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// A listener on every address of the pod (its IP and loopback), made
    /// by a thread that enters the namespace: a socket belongs to the
    /// namespace it was made in, whichever thread uses it later.
    pub fn bind(&self, port: u16) -> TcpListener {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
                listener.set_nonblocking(true).unwrap();
                listener
            })
            .join()
            .unwrap()
        })
    }

    /// A connection to `addr` made inside the namespace, as another
    /// container of the pod makes it.
    pub fn connect(&self, addr: SocketAddr) -> std::net::TcpStream {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                let stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_nonblocking(true).unwrap();
                stream
            })
            .join()
            .unwrap()
        })
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        run_ip(&all);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The pod's end of the pair goes with the namespace, and takes the
        // node's end with it; deleting that too covers a half-built pod.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
