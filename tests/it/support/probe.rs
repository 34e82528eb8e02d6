//! The kubelet's HTTP prober as a client (kubelet-semantics §1): a fresh
//! connection per probe, the head Go's client writes for it (`Host`,
//! `User-Agent`, `Accept: */*`, the probe's own headers, `Connection:
//! close` last, as `kubelet_parity` shows the kubelet sends), the answer
//! read until the server closes, bounded in time and bytes; and a prober
//! that sends one every 100 ms beside an attack.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::wait::eventually;

/// The kubelet's `User-Agent` on its probes.
pub const USER_AGENT: &str = "kube-probe/1.33";
/// The kubelet's default probe timeout (`timeoutSeconds: 1`).
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// The most of an answer read: a probe's answer is far shorter.
const MAX_ANSWER: u64 = 64 * 1024;

/// An answer read to the connection's close.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The head of `method path` as the kubelet writes it to `host`, with
/// `user_agent` and `headers`.
pub fn head(
    method: &str,
    path: &str,
    host: SocketAddr,
    user_agent: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// Sends `method path` as the kubelet does on a fresh connection to
/// `addr` and returns the raw answer, read until the server closes;
/// bounded by `timeout` from the connect to the last byte.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user_agent: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(head(method, path, addr, user_agent, headers).as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(raw)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("timeout after {timeout:?}")))
}

/// One `GET path` as the kubelet sends it, with `user_agent` and
/// `headers`, bounded by `timeout`: the answer's status and body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    user_agent: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer, String> {
    let raw = exchange(addr, "GET", path, user_agent, headers, timeout).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok(Answer { status, body })
}

/// One probe as the kubelet's prober sends it, with its default timeout:
/// success for 200–399, otherwise the kubelet's reason.
#[allow(dead_code)] // the pod suite's kubelet probes with it
pub async fn probe(addr: SocketAddr, path: &str) -> Result<(), String> {
    let answer = get(addr, path, USER_AGENT, &[], TIMEOUT).await?;
    match answer.status {
        200..=399 => Ok(()),
        status => Err(format!("HTTP probe failed with statuscode: {status}")),
    }
}

/// What a kubelet-like [`Prober`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub probes: usize,
    pub failures: Vec<String>,
    pub slowest: Duration,
}

/// Probes on a fresh connection every 100 ms with a 1 s timeout, as the
/// kubelet does, on a thread and runtime of its own so that the load a
/// test makes cannot delay it.
pub struct Prober {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    /// How long [`Prober::wait_probes`] waits.
    patience: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Probes `GET path` at `addr`; a pass is a 200.
    pub fn start(addr: SocketAddr, path: &'static str) -> Prober {
        Prober::with(Duration::from_secs(30), move |runtime| {
            match runtime.block_on(get(addr, path, USER_AGENT, &[], TIMEOUT)) {
                Ok(answer) if answer.status == 200 => Ok(()),
                Ok(answer) => Err(format!("answered {}: {:?}", answer.status, answer.body)),
                Err(why) => Err(why),
            }
        })
    }

    /// Runs `probe` (one probe, bounded by itself, on the prober's
    /// runtime) every 100 ms; [`Prober::wait_probes`] waits `patience`
    /// at most.
    pub fn with(
        patience: Duration,
        mut probe: impl FnMut(&tokio::runtime::Runtime) -> Result<(), String> + Send + 'static,
    ) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (halt, record) = (Arc::clone(&stop), Arc::clone(&seen));
        let origin = Instant::now();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while !halt.load(Ordering::Acquire) {
                let began = Instant::now();
                let result = probe(&runtime);
                let mut seen = record.lock().unwrap();
                seen.probes += 1;
                seen.slowest = seen.slowest.max(began.elapsed());
                if let Err(why) = result {
                    seen.failures.push(format!(
                        "at {:?}, after {:?}: {why}",
                        began.duration_since(origin),
                        began.elapsed()
                    ));
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(100).saturating_sub(began.elapsed()));
            }
        });
        Prober {
            stop,
            seen,
            patience,
            thread: Some(thread),
        }
    }

    /// The probes sent so far.
    pub fn probes(&self) -> usize {
        self.seen.lock().unwrap().probes
    }

    /// Waits until `n` probes have been sent in all.
    pub async fn wait_probes(&self, n: usize) {
        eventually(self.patience, &format!("{n} probes"), || async {
            self.probes() >= n
        })
        .await;
    }

    /// Stops probing; what was seen.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Asserts that the prober sent probes throughout `attack` and lost none.
pub fn assert_no_probe_lost(seen: &Seen, attack: &str) {
    assert!(
        seen.probes >= 10,
        "{attack}: only {} probes were sent",
        seen.probes
    );
    assert!(
        seen.failures.is_empty(),
        "{attack}: {} of {} probes failed (slowest {:?}): {:?}",
        seen.failures.len(),
        seen.probes,
        seen.slowest,
        &seen.failures[..seen.failures.len().min(5)]
    );
}
