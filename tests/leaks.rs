//! Misbehaving apps and checks, each run a thousand times: every run has
//! its clear expected result, and afterwards open file descriptors,
//! threads, child processes and memory are back where they started.
//!
//! A test binary of its own, with one test, so that the process-wide
//! counts it reads belong to nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The integration suite's /proc readers (the file needs nothing else).
#[allow(dead_code)]
#[path = "it/support/proc.rs"]
mod proc;

use healthproxy::check::{Check, Outcome, Verdict};
use healthproxy::config::{CheckKind, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use proc::{open_fds, proc_status};

/// Runs of each case.
const RUNS: usize = 1000;
/// Runs in flight at once.
const CONCURRENCY: usize = 50;
/// The timeout of a run that is meant to time out (or fail before it):
/// short, so that 1,000 of them end quickly.
const TIMEOUT: Duration = Duration::from_millis(200);
/// The timeout of a run that is meant to succeed: 50 at once (1 MB of
/// output each, or 10 KiB of an endless body) take longer than `TIMEOUT`
/// on a loaded 2-core machine, and that is not what this test is about.
const SUCCEEDS_WITHIN: Duration = Duration::from_secs(5);

/// What every run of a case must yield.
type Expect = Box<dyn Fn(&Outcome) -> bool>;

/// What the process holds.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    children: usize,
    rss_kib: usize,
}

fn usage() -> Usage {
    // Memory freed by the runs goes back to the system first, so that RSS
    // counts what is still held rather than what glibc keeps for reuse
    // (50 runs at once reading 2 MB heads leave tens of MiB in its arenas,
    // more or less from one run of the test to the next).
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { nix::libc::malloc_trim(0) };
    let me = std::process::id().to_string();
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...: the comm may hold spaces.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(me.as_str())
        })
        .count();
    Usage {
        fds: open_fds(std::process::id()),
        threads: proc_status(std::process::id(), "Threads") as usize,
        children,
        rss_kib: proc_status(std::process::id(), "VmRSS") as usize,
    }
}

/// Waits until the usage is back near `base`, or fails naming what is not.
async fn back_to(base: Usage, case: &str) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = usage();
        let ok = now.fds <= base.fds + 2
            && now.threads <= base.threads + 1
            && now.children == 0
            && now.rss_kib <= base.rss_kib + 16 * 1024;
        if ok {
            return now;
        }
        if Instant::now() >= deadline {
            let tasks: Vec<String> = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| {
                    let p = t.ok()?.path();
                    Some(format!(
                        "{}:{}",
                        std::fs::read_to_string(p.join("comm")).ok()?.trim(),
                        std::fs::read_to_string(p.join("wchan")).unwrap_or_default()
                    ))
                })
                .collect();
            let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|f| Some(std::fs::read_link(f.ok()?.path()).ok()?.display().to_string()))
                .collect();
            panic!(
                "{case}: usage did not come back: before {base:?}, after {now:?}; threads {tasks:?}; fds {fds:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check(kind_toml: &str) -> Arc<Check> {
    let text = format!(
        r#"[[check]]
name = "c"
probes = ["readiness"]
{kind_toml}
"#
    );
    let config = Config::from_toml_str(&text, "leaks", &|_: &str| None).unwrap();
    let kind: &CheckKind = &config.checks[0].kind;
    Arc::new(Check::new("c", kind).unwrap())
}

/// Runs `check` RUNS times, CONCURRENCY at once; every outcome must
/// satisfy `expect`. Returns one outcome to show and the slowest run.
async fn hammer(
    check: &Arc<Check>,
    timeout: Duration,
    expect: impl Fn(&Outcome) -> bool,
) -> (Outcome, Duration) {
    let mut slowest = Duration::ZERO;
    let mut sample = None;
    for _ in 0..RUNS / CONCURRENCY {
        let runs: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let check = Arc::clone(check);
                tokio::spawn(async move {
                    let began = Instant::now();
                    let outcome = check.run(timeout).await;
                    (outcome, began.elapsed())
                })
            })
            .collect();
        for run in runs {
            let (outcome, took) = run.await.unwrap();
            assert!(expect(&outcome), "unexpected outcome: {outcome:?}");
            slowest = slowest.max(took);
            sample.get_or_insert(outcome);
        }
    }
    (sample.unwrap(), slowest)
}

/// A server on 127.0.0.1 that treats every connection with `handle`.
async fn server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Reads a request head, so that the client's write completes.
async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
}

fn failure_with(text: &'static str) -> impl Fn(&Outcome) -> bool {
    move |o| o.verdict == Verdict::Failure && o.message.contains(text)
}

#[test]
fn misbehaving_apps_and_checks_leave_nothing_behind() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(Duration::from_millis(100))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        healthproxy::check::become_subreaper().unwrap();
        let silent = server(|mut s| async move {
            // Never answer; hang up when the client does.
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        let endless = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let chunk = format!("{:x}\r\n{}\r\n", 8192, "z".repeat(8192));
            while s.write_all(chunk.as_bytes()).await.is_ok() {}
        })
        .await;
        let huge_headers = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let line = format!("x-h: {}\r\n", "h".repeat(1000));
            for _ in 0..2000 {
                if s.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let drip = server(|mut s| async move {
            read_head(&mut s).await;
            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".iter().cycle() {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;

        let cases: Vec<(&str, String, Duration, Expect)> = vec![
            (
                "tcp: a host name that does not resolve",
                r#"tcp = { host = "no-such-host.invalid", port = 80 }"#.to_string(),
                TIMEOUT,
                Box::new(|o: &Outcome| o.verdict == Verdict::Failure && o.message.starts_with("dial tcp")),
            ),
            (
                "http: accepts and never answers",
                format!("http = {{ port = {} }}", silent.port()),
                TIMEOUT,
                Box::new(failure_with("context deadline exceeded")),
            ),
            (
                "http: endless body",
                format!("http = {{ port = {} }}", endless.port()),
                SUCCEEDS_WITHIN,
                Box::new(|o: &Outcome| o.verdict == Verdict::Success),
            ),
            (
                "http: 2 MB of response headers",
                format!("http = {{ port = {} }}", huge_headers.port()),
                TIMEOUT,
                Box::new(|o: &Outcome| o.verdict == Verdict::Failure),
            ),
            (
                "http: a slow drip of bytes",
                format!("http = {{ port = {} }}", drip.port()),
                TIMEOUT,
                Box::new(failure_with("context deadline exceeded")),
            ),
            (
                "grpc: accepts and hangs",
                format!("grpc = {{ port = {} }}", silent.port()),
                TIMEOUT,
                Box::new(failure_with("timeout")),
            ),
            (
                "file: heartbeat in a missing directory",
                r#"file = { path = "/nonexistent-dir/heartbeat", max_age = "1s" }"#.to_string(),
                TIMEOUT,
                Box::new(failure_with("no such file or directory")),
            ),
            (
                "exec: floods its output",
                r#"exec = { command = ["head", "-c", "1000000", "/dev/zero"] }"#.to_string(),
                SUCCEEDS_WITHIN,
                Box::new(|o: &Outcome| o.verdict == Verdict::Success && o.message.len() <= 10 * 1024),
            ),
            (
                "exec: forks a grandchild that ignores SIGTERM, times out",
                r#"exec = { command = ["/bin/sh", "-c", "trap '' TERM; sleep 30 & sleep 30"] }"#.to_string(),
                TIMEOUT,
                Box::new(failure_with("timed out")),
            ),
        ];
        for (case, kind, timeout, expect) in cases {
            let check = check(&kind);
            // Warm up lazily allocated pools before the baseline.
            for _ in 0..5 {
                let _ = check.run(timeout).await;
            }
            let base = back_to(usage(), case).await;
            let began = Instant::now();
            let (sample, slowest) = hammer(&check, timeout, expect).await;
            let after = back_to(base, case).await;
            assert!(slowest < timeout + Duration::from_secs(1), "{case}: a run took {slowest:?}");
            println!(
                "{case}: {RUNS} runs in {:?}, slowest {slowest:?}, e.g. {:?} {:?}; before {base:?}, after {after:?}",
                began.elapsed(),
                sample.verdict,
                healthproxy::check::one_line(&sample.message.chars().take(120).collect::<String>()),
            );
        }
    });
}
