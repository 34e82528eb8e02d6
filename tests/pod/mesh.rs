//! A service mesh's sidecar proxy in a pod, played by HAProxy (from
//! Debian, started by the test inside the pod's namespace): it accepts the
//! pod's inbound traffic on the proxy's port and forwards it to the app
//! over pooled, kept-alive connections, as the meshes' proxies do:
//!
//! - Istio's Envoy connects to the pod IP from `127.0.0.6` (its inbound
//!   passthrough, istio/istio#29603), as uid 1337;
//! - Linkerd's proxy connects from loopback (before 2.11; from the pod IP
//!   since), as uid 2102.
//!
//! In a real pod the mesh's iptables rules redirect the traffic sent to
//! the app's port to the proxy; here the balancer sends to the proxy's
//! port directly, which changes nothing the app sees.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::net::Net;
use crate::pod::APP_PORT;

/// The proxy's inbound port (Envoy's 15006; Linkerd's is 4143).
pub const PROXY_PORT: u16 = 15006;

/// Which mesh's proxy HAProxy plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mesh {
    Istio,
    Linkerd,
}

impl Mesh {
    /// The value of `drain.mesh`.
    pub fn name(self) -> &'static str {
        match self {
            Mesh::Istio => "istio",
            Mesh::Linkerd => "linkerd",
        }
    }

    /// The uid the mesh's proxy runs as.
    fn uid(self) -> u32 {
        match self {
            Mesh::Istio => 1337,
            Mesh::Linkerd => 2102,
        }
    }
}

/// Why HAProxy cannot play the proxy here, if it cannot.
pub fn unavailable() -> Option<String> {
    match std::process::Command::new("haproxy").arg("-v").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("haproxy is missing (apt-get install haproxy)".into()),
    }
}

/// The mesh's proxy in a pod; killed on drop.
pub struct Proxy {
    child: Child,
    _dir: tempfile::TempDir,
    /// Where the balancer sends the pod's traffic.
    pub addr: SocketAddr,
}

impl Proxy {
    /// Starts the proxy of `mesh` in `net`; returns once it accepts.
    pub async fn start(net: &Net, mesh: Mesh) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let ip = net.ip;
        let server = match mesh {
            Mesh::Istio => format!("{ip}:{APP_PORT} source 127.0.0.6"),
            Mesh::Linkerd => format!("127.0.0.1:{APP_PORT}"),
        };
        let uid = mesh.uid();
        // Kept-alive connections to the app, reused by every request
        // whatever the client does (a mesh proxy's connection pool), and
        // kept idle between bursts.
        let config = format!(
            "global\n  uid {uid}\n  gid {uid}\n  maxconn 1000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  \
             timeout http-keep-alive 60s\n  option http-keep-alive\n  http-reuse always\n\
             frontend inbound\n  bind {ip}:{PROXY_PORT}\n  default_backend app\n\
             backend app\n  server app {server} pool-purge-delay 60s\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = net
            .command("haproxy".as_ref())
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Proxy {
            child,
            _dir: dir,
            addr: net.addr(PROXY_PORT),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(proxy.addr).await.is_err() {
            assert!(Instant::now() < deadline, "{mesh:?}'s proxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
