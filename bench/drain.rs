//! What a drain costs with many sockets on the host, the old way and the
//! new, in one run: N established sockets (default 10,000) are opened in
//! the root namespace by a helper process, then, as root, this process
//! moves into a network namespace of its own, as a pod's sidecar sits, and
//!
//! 1. times one count of the app's connections: `/proc/net/tcp{,6}` read
//!    and parsed (the old way) against a `sock_diag` dump filtered by state
//!    and port in the kernel (the new way), alternately, in CPU time
//!    (user + system) and wall time per count, in the root namespace (where
//!    /proc/net lists the N sockets) and in the pod's;
//! 2. runs `healthproxy::run` on one thread, as `healthproxy run` does,
//!    and measures `/healthz` (a fresh connection per probe, as the
//!    kubelet's) while idle, while the old drain loop counts on the serving
//!    thread every 100 ms, and during a real drain (`Drain`, counting on a
//!    blocking thread) held open by a client of the app;
//! 3. measures the process's CPU time over one whole drain of an idle pod
//!    (`drain.min` 5 s): a fixed-`min` drain (sleeps `min`, then counts
//!    once, as before `drain.quiet`) against the adaptive one (counts every
//!    100 ms from the start, to see new connections).
//!
//! The sockets are held by `python3` helpers, so that the host's sockets
//! are no sidecar's. The app's clients connect as Istio's proxy does (from
//! 127.0.0.6, `drain.mesh = "istio"`) and send a request the app never
//! reads: loopback clients are otherwise the pod's own, which no drain
//! waits on.
//!
//! Run with `cargo run --release --example bench-drain -- 10000` (as root
//! for the pod namespace; otherwise everything runs in the root namespace
//! and says so).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use healthproxy::config::{Config, Mesh};
use healthproxy::lifecycle::diag;
use healthproxy::lifecycle::procnet::ProcNet;
use nix::sys::resource::{UsageWho, getrusage};

/// The app's clients connect as Istio's proxy does.
const ISTIO: Mesh = Mesh::Istio { proxy_uid: 1337 };
/// Probes per phase, and the pause between two.
const PROBES: usize = 1500;
const PAUSE: Duration = Duration::from_millis(2);
/// Counts per way, per namespace.
const COUNTS: usize = 40;

fn main() -> ExitCode {
    let n = match std::env::args().nth(1).map(|n| n.parse::<usize>()) {
        None => 10_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: bench-drain [SOCKETS]");
            return ExitCode::from(2);
        }
    };
    let host = hold(&format!(
        "l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(4096)\n\
         for _ in range({}):\n    keep.append(socket.create_connection(l.getsockname())); keep.append(l.accept()[0])",
        n / 2
    ));
    println!("{n} established sockets in the root namespace");
    println!("\n## One count of the app's connections (mean of {COUNTS} each, alternating)\n");
    println!("| where | way | CPU per count | wall per count |");
    println!("|---|---|---|---|");
    count_costs("root namespace");
    let pod = enter_pod_namespace();
    if pod {
        count_costs("pod namespace");
    } else {
        println!("\n(not root: no pod namespace; the rest runs in the root namespace)");
    }
    println!("\n## `/healthz` latency, fresh connection per probe, {PROBES} probes per phase\n");
    probe_latency();
    println!("\n## CPU of one drain of an idle pod (drain.min 5s, drain.quiet 2s)\n");
    drain_cpu();
    drop(host);
    ExitCode::SUCCESS
}

/// A `python3` helper that runs `script` (with `socket` imported and a
/// `keep` list), then holds its sockets until dropped.
struct Helper(std::process::Child);

fn hold(script: &str) -> Helper {
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import socket,sys\nkeep=[]\n{script}\nprint('up',flush=True)\nsys.stdin.read()"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut up = [0u8; 3];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut up)
        .expect("the helper is up");
    Helper(child)
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Moves the process into a new network namespace with loopback up; false
/// when that is not allowed.
fn enter_pod_namespace() -> bool {
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
        return false;
    }
    std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success())
}

/// An app listening with 3 established connections from a client
/// process, each with a request waiting; returns its listener, its ends of
/// them and the client.
fn app() -> (TcpListener, Vec<TcpStream>, Helper) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("the app listens");
    let port = listener.local_addr().unwrap().port();
    let clients = hold(&format!(
        "for _ in range(3):\n    s=socket.create_connection(('127.0.0.1',{port}),source_address=('127.0.0.6',0)); s.sendall(b'GET'); keep.append(s)"
    ));
    let served = (0..3).map(|_| listener.accept().unwrap().0).collect();
    (listener, served, clients)
}

fn cpu_now() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(usage.user_time()) + t(usage.system_time())
}

fn count_costs(place: &str) {
    let (listener, _served, _clients) = app();
    let port = [listener.local_addr().unwrap().port()];
    let proc = ProcNet::default();
    assert_eq!(proc.sockets(&port, ISTIO).unwrap().established, 3);
    assert_eq!(diag::sockets(&port, ISTIO).unwrap().established, 3);
    let mut totals = [(Duration::ZERO, Duration::ZERO); 2];
    for _ in 0..COUNTS {
        for (way, total) in totals.iter_mut().enumerate() {
            let (cpu, wall) = (cpu_now(), Instant::now());
            let s = if way == 0 {
                proc.sockets(&port, ISTIO).unwrap()
            } else {
                diag::sockets(&port, ISTIO).unwrap()
            };
            std::hint::black_box(s);
            total.0 += cpu_now() - cpu;
            total.1 += wall.elapsed();
        }
    }
    for (way, (cpu, wall)) in ["/proc/net/tcp{,6} (old)", "sock_diag, filtered (new)"]
        .iter()
        .zip(totals)
    {
        println!(
            "| {place} | {way} | {:.3?} | {:.3?} |",
            cpu / COUNTS as u32,
            wall / COUNTS as u32
        );
    }
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `healthproxy::run` on its own thread and current-thread
/// runtime, as `healthproxy run` serves, with the app's port in
/// `drain.ports`.
struct Server {
    addr: SocketAddr,
    signals: tokio::sync::mpsc::UnboundedSender<i32>,
    /// Starts and stops the old drain loop on the server's runtime.
    old_loop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    fn start(app_port: u16, drain: &str) -> Server {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = Config::from_toml_str(
            &format!("listen = \"{addr}\"\n[drain]\nports = [{app_port}]\nmesh = \"istio\"\n{drain}\n"),
            "bench",
            &|_: &str| None,
        )
        .expect("a valid config");
        let app = healthproxy::App::build(config).expect("the app builds");
        let (signals, received) = tokio::sync::mpsc::unbounded_channel();
        let (old_loop, mut old_wanted) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(8)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                // The drain loop as it was: a count on this thread every
                // 100 ms, while asked for.
                tokio::spawn(async move {
                    let net = ProcNet::default();
                    loop {
                        if old_wanted.wait_for(|w| *w).await.is_err() {
                            return;
                        }
                        std::hint::black_box(net.sockets(&[app_port], ISTIO).unwrap());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let _ = healthproxy::run(app, received, None, Default::default()).await;
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            addr,
            signals,
            old_loop,
            thread,
        }
    }

    /// Sends `method path` from loopback (lifecycle endpoints need no token
    /// there) and returns the answer's first line and the time it took.
    fn request(&self, method: &str, path: &str) -> (String, Duration) {
        let began = Instant::now();
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        (answer, began.elapsed())
    }

    /// Two signals: the second ends the process's `run` at once.
    fn stop(self) {
        let _ = self.signals.send(15);
        let _ = self.signals.send(2);
        self.thread.join().unwrap();
    }
}

/// Serves the endpoints and probes them in three phases.
fn probe_latency() {
    let (app, _served, _clients) = app();
    let server = Server::start(app.local_addr().unwrap().port(), "min = \"0s\"\nmax = \"1h\"");
    println!("| phase | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (phase, name) in [
        (Phase::Idle, "idle"),
        (
            Phase::OldDrain,
            "drain, old: /proc/net read on the serving thread every 100 ms",
        ),
        (
            Phase::NewDrain,
            "drain, new: sock_diag on a blocking thread every 100 ms",
        ),
    ] {
        match phase {
            Phase::Idle => {}
            Phase::OldDrain => {
                server.old_loop.send_replace(true);
            }
            Phase::NewDrain => {
                server.old_loop.send_replace(false);
                // The app's 3 connections hold the real drain in its
                // connection wait for the whole phase.
                let (answer, _) = server.request("POST", "/drain");
                assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut took: Vec<Duration> = (0..PROBES)
            .map(|_| {
                std::thread::sleep(PAUSE);
                probe(server.addr)
            })
            .collect();
        took.sort();
        let at = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
        println!(
            "| {name} | {:.2?} | {:.2?} | {:.2?} | {:.2?} |",
            at(50),
            at(90),
            at(99),
            took[took.len() - 1]
        );
    }
    server.stop();
}

/// The process's CPU time (every thread).
fn process_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(usage.user_time()) + t(usage.system_time())
}

fn drain_cpu() {
    let app = TcpListener::bind("127.0.0.1:0").expect("the app listens");
    let port = app.local_addr().unwrap().port();
    println!("| drain | took | CPU of the whole drain |");
    println!("|---|---|---|");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (cpu, began) = (process_cpu(), Instant::now());
        // As before drain.quiet: sleep min, then count until none is left.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let left = tokio::task::spawn_blocking(move || diag::sockets(&[port], ISTIO).unwrap().established)
            .await
            .unwrap();
        assert_eq!(left, 0);
        println!(
            "| fixed min (sleeps min, then counts once) | {:.2?} | {:.2?} |",
            began.elapsed(),
            process_cpu() - cpu
        );
    });
    let server = Server::start(port, "min = \"5s\"\nquiet = \"2s\"\nmax = \"25s\"");
    let cpu = process_cpu();
    let (answer, took) = server.request("GET", "/prestop");
    let cpu = process_cpu() - cpu;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    println!(
        "| adaptive (reads every 500 ms during min; ends at min: no new connection) | {took:.2?} | {cpu:.2?} |"
    );
    server.stop();
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle,
    OldDrain,
    NewDrain,
}

fn probe(addr: SocketAddr) -> Duration {
    let began = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    began.elapsed()
}
