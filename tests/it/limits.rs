//! Attacks from the pod network against the real binary, under the limits
//! `deploy/` ships (its memory limit, through a cgroup the test
//! creates where the machine allows it; a small open files limit through
//! `prlimit`), with a kubelet-like prober beside them: a fresh connection
//! every 100 ms, 1 s timeout. Each attack must cost the prober nothing,
//! keep the sidecar under its memory budget, and give back its file
//! descriptors and processes. `scripts/soak --attacks` runs them longer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

// Where surfaces.rs found them before they moved to support.
use crate::support::{
    App, Proxy, eventually, metric, next_answer, open_fds, proc_status, request, status_field,
};
#[allow(unused_imports)]
pub(crate) use crate::support::{Prober, Seen, assert_no_probe_lost};

/// The sidecar's memory budget with the default `[server]` limits and no
/// checks, as the attacks here run it (README, "Limits and failure
/// behaviour"): what it may reach whatever clients do, a debug build's
/// larger code and heap included.
const BUDGET: u64 =
    healthproxy::server::memory_budget(healthproxy::config::DEFAULT_MAX_CONNECTIONS, 0, false);

/// The memory limit `deploy/` ships for that budget (96 MiB).
const DEPLOY_MEMORY_LIMIT: u64 = healthproxy::server::memory_limit(BUDGET);

/// What the sidecar process holds, from /proc.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) rss: u64,
    pub(crate) peak_rss: u64,
    pub(crate) fds: usize,
}

pub(crate) fn usage(pid: u32) -> Usage {
    Usage {
        rss: proc_status(pid, "VmRSS") << 10,
        peak_rss: proc_status(pid, "VmHWM") << 10,
        fds: open_fds(pid),
    }
}

/// A memory cgroup of this test's own, limiting the processes moved into
/// it; removed (its processes killed) on drop. `None` where the machine
/// gives no writable memory cgroup: the measured peak RSS still counts.
pub(crate) struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    pub(crate) fn create(name: &str, limit: u64) -> Option<MemoryCgroup> {
        let unique = format!("healthproxy-{name}-{}", std::process::id());
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let (base, v2) = if controllers.split(',').any(|c| c == "memory") {
                (PathBuf::from("/sys/fs/cgroup/memory"), false)
            } else if controllers.is_empty()
                && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
            {
                (PathBuf::from("/sys/fs/cgroup"), true)
            } else {
                continue;
            };
            let dir = base.join(path.trim_start_matches('/')).join(&unique);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let group = MemoryCgroup { dir, v2 };
            let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
            if std::fs::write(group.dir.join(file), limit.to_string()).is_ok() {
                return Some(group);
            }
        }
        None
    }

    pub(crate) fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// How many times the limit was hit (v1), or the OOM kills (v2).
    pub(crate) fn limit_hits(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", Some("oom_kill "))
        } else {
            ("memory.failcnt", None)
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        match key {
            Some(key) => text
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or(0),
            None => text.trim().parse().unwrap(),
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.parse().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How many times larger than in the suite the attacks are
/// (`HEALTHPROXY_ATTACK_SCALE`, which `scripts/soak --attacks` sets).
pub(crate) fn scale() -> usize {
    std::env::var("HEALTHPROXY_ATTACK_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Lets this test process open as many sockets as the attacks need.
pub(crate) fn raise_own_fd_limit() {
    healthproxy::server::raise_fd_limit().unwrap();
}

/// Opens `n` connections that each send part of a request head (`pad`
/// bytes of a header that never ends) and then stop, one a millisecond
/// (`scripts/soak --attacks`: as fast as they go): slow enough that the
/// accept queue of a debug build on a loaded test machine does not hold
/// the probes back a second.
///
/// This process keeps at most a third of its own descriptor limit of them
/// open (two attacks run at once, and the prober needs some): past that,
/// its oldest, which the sidecar has long evicted, are closed.
async fn half_sent_heads(addr: SocketAddr, n: usize, pad: usize) -> Vec<TcpStream> {
    let head = format!("GET /livez HTTP/1.1\r\nhost: x\r\nx-pad: {}", "a".repeat(pad));
    let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let keep = usize::try_from(limit / 3).unwrap_or(usize::MAX).min(n);
    let mut open = std::collections::VecDeque::with_capacity(keep);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..n {
        if scale() == 1 {
            pace.tick().await;
        }
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = stream.write_all(head.as_bytes()).await;
        if open.len() == keep {
            open.pop_front();
        }
        open.push_back(stream);
    }
    open.into()
}

/// Opens `n` connections that send nothing.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for i in 0..n {
        if i % 2 == 0 {
            pace.tick().await;
        }
        if let Ok(stream) = TcpStream::connect(addr).await {
            open.push(stream);
        }
    }
    open
}

#[tokio::test]
async fn half_sent_request_heads_are_evicted_within_the_memory_budget() {
    raise_own_fd_limit();
    let proxy = Proxy::start("allow_empty = true\n");
    let pid = proxy.child.id();
    let cgroup = MemoryCgroup::create("heads", DEPLOY_MEMORY_LIMIT);
    if let Some(cgroup) = &cgroup {
        cgroup.add(pid);
    }
    let before = usage(pid);
    let prober = Prober::start(proxy.addr, "/livez");
    // 4,000 half-sent heads of 12 KiB each, four times the connection
    // cap: without eviction, about 110 MiB. (`scripts/soak --attacks` sends
    // more, faster, to a release build.)
    let mut held = half_sent_heads(proxy.addr, 4000 * scale(), 12 * 1024).await;
    let during = usage(pid);
    eprintln!("half-sent heads: {} sent; sidecar {during:?}", held.len());
    // The connections held, and as many again sent while probing.
    let more = tokio::spawn(half_sent_heads(proxy.addr, 1000 * scale(), 12 * 1024));
    prober.wait_probes(10).await;
    held.extend(more.await.unwrap());
    let seen = prober.finish();
    eprintln!("half-sent heads: prober {seen:?}; sidecar {:?}", usage(pid));
    assert_no_probe_lost(&seen, "half-sent heads");
    assert!(proxy.get("/healthz").await.status == 200);
    let after = usage(pid);
    assert!(
        after.peak_rss < BUDGET,
        "peak RSS {} MiB over the {} MiB budget (before: {before:?}, during: {during:?})",
        after.peak_rss >> 20,
        BUDGET >> 20
    );
    assert!(after.rss <= after.peak_rss);
    assert!(
        during.fds <= before.fds + 1024 + 64 + 1,
        "the connection cap bounds the sockets held: {during:?}"
    );
    if let Some(cgroup) = &cgroup {
        assert_eq!(cgroup.limit_hits(), 0, "the cgroup's memory limit was reached");
    }
    drop(held);
    eventually(
        Duration::from_secs(15),
        "the sockets to be given back",
        || async { usage(pid).fds <= before.fds + 2 },
    )
    .await;
}

/// Opens `n` connections that each ask for one of `paths` (in turn) and
/// never read the answer, with a receive buffer as small as the kernel
/// allows so that the answers stay on the sidecar's side, one a
/// millisecond. This process keeps at most a third of its descriptor
/// limit of them (see [`half_sent_heads`]).
async fn unread_answers(addr: SocketAddr, n: usize, paths: &[&str]) -> Vec<TcpStream> {
    let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let keep = usize::try_from(limit / 3).unwrap_or(usize::MAX).min(n);
    let mut open = std::collections::VecDeque::with_capacity(keep);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for path in paths.iter().cycle().take(n) {
        if scale() == 1 {
            pace.tick().await;
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        let Ok(mut stream) = socket.connect(addr).await else {
            continue;
        };
        let _ = stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await;
        if open.len() == keep {
            open.pop_front();
        }
        open.push_back(stream);
    }
    open.into()
}

/// The bytes the kernel queues to send on the connections accepted on
/// `port` (IPv4), from /proc/net/tcp.
fn kernel_send_queue(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // local_address rem_address st tx_queue:rx_queue ...; not the
        // listener (st 0A).
        .filter(|fields| fields.len() > 4 && fields[1].ends_with(&local) && fields[3] != "0A")
        .filter_map(|fields| u64::from_str_radix(fields[4].split(':').next()?, 16).ok())
        .sum()
}

#[tokio::test]
async fn answers_that_clients_never_read_are_held_within_the_memory_budget() {
    raise_own_fd_limit();
    // Failing readiness checks: /livez answers ok, every other answer
    // lists them all (/metrics 535 KB, ?format=json 77 KB, a plain
    // /readyz, which is answered ahead of hyper, 20 KB here).
    const CHECKS: usize = 300;
    let config: String = (0..CHECKS)
        .map(|i| {
            format!(
                r#"[[check]]
name = "check-{i}"
probes = ["readiness"]
tcp = {{ port = 1 }}
period = "1h"
"#
            )
        })
        .collect();
    let budget =
        healthproxy::server::memory_budget(healthproxy::config::DEFAULT_MAX_CONNECTIONS, CHECKS, false);
    let proxy = Proxy::start(&config);
    let pid = proxy.child.id();
    let cgroup = MemoryCgroup::create("unread", healthproxy::server::memory_limit(budget));
    if let Some(cgroup) = &cgroup {
        cgroup.add(pid);
    }
    let before = usage(pid);
    let prober = Prober::start(proxy.addr, "/livez");
    // 1,500 such requests, answers unread. Left to the kernel, the
    // sockets' send queues grow to hundreds of MB (348 MB measured); in
    // the sidecar, as many answers as it renders while they last.
    let paths = ["/metrics", "/readyz?format=json", "/readyz?verbose", "/readyz"];
    let port = proxy.addr.port();
    let attacking = Arc::new(AtomicBool::new(true));
    let sampler = {
        let attacking = Arc::clone(&attacking);
        std::thread::spawn(move || {
            let mut most = 0;
            while attacking.load(Ordering::Acquire) {
                most = most.max(kernel_send_queue(port));
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let unread = unread_answers(proxy.addr, 1500 * scale(), &paths).await;
    attacking.store(false, Ordering::Release);
    // What the kernel holds for them counts against a cgroup v2 limit:
    // 8 KiB or so a connection, not the megabytes it would grow to.
    let queued = sampler.join().unwrap();
    let connections = healthproxy::config::DEFAULT_MAX_CONNECTIONS as u64 + 64;
    assert!(
        queued <= connections * (16 << 10),
        "the kernel queues {} MiB to send to clients that do not read",
        queued >> 20
    );
    prober.wait_probes(10).await;
    let seen = prober.finish();
    let after = usage(pid);
    eprintln!(
        "unread answers: {} held, at most {queued} bytes queued in the kernel; prober {seen:?}; sidecar {after:?}",
        unread.len()
    );
    assert_no_probe_lost(&seen, "unread answers");
    assert!(
        after.peak_rss < budget,
        "peak RSS {} MiB over the {} MiB budget (before: {before:?})",
        after.peak_rss >> 20,
        budget >> 20
    );
    if let Some(cgroup) = &cgroup {
        assert_eq!(cgroup.limit_hits(), 0, "the cgroup's memory limit was reached");
    }
    // Once those clients are gone, every answer can be had again.
    drop(unread);
    for path in paths {
        eventually(
            Duration::from_secs(15),
            &format!("{path} answered whole"),
            || async {
                let reply = proxy.get(path).await;
                !reply.body.starts_with("busy")
            },
        )
        .await;
    }
    let metrics = proxy.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("check-299"));
    // Some were told the sidecar was busy rather than have it hold more.
    let busy = metric(
        &metrics.body,
        "healthproxy_http_requests_total{code=\"503\",route=\"/metrics\"}",
    );
    assert!(busy.unwrap_or(0.0) > 0.0, "no scrape was turned away");
}

#[tokio::test]
async fn running_out_of_file_descriptors_never_fails_the_app() {
    raise_own_fd_limit();
    let app = App::start().await;
    let config = format!(
        r#"[[check]]
name = "app"
probes = ["liveness"]
tcp = {{ port = {} }}
period = "100ms"
failure_threshold = 1
"#,
        app.addr.port()
    );
    // The soft limit of containerd 2 and systemd, as a hard one: nothing
    // to raise it to.
    let proxy = Proxy::start_with(&config, "127.0.0.1:0", &["prlimit", "--nofile=1024:1024", "--"]);
    let pid = proxy.child.id();
    proxy.wait_log("max_connections lowered").await;
    let before = usage(pid);
    let prober = Prober::start(proxy.addr, "/livez");
    let mut held = idle_connections(proxy.addr, 1500 * scale()).await;
    held.extend(half_sent_heads(proxy.addr, 1500 * scale(), 100).await);
    prober.wait_probes(10).await;
    // The check keeps running through the attack.
    let runs = |text: &str, result: &str| {
        metric(
            text,
            &format!("healthproxy_check_runs_total{{check=\"app\",kind=\"tcp\",result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let start = runs(&request(proxy.addr, "GET", "/metrics", &[]).await.body, "success");
    eventually(
        Duration::from_secs(10),
        "ten more runs during the attack",
        || async { runs(&request(proxy.addr, "GET", "/metrics", &[]).await.body, "success") >= start + 10.0 },
    )
    .await;
    let seen = prober.finish();
    assert_no_probe_lost(&seen, "fd exhaustion");
    let metrics = request(proxy.addr, "GET", "/metrics", &[]).await.body;
    assert_eq!(
        runs(&metrics, "failure"),
        0.0,
        "no run failed for want of a descriptor"
    );
    assert_eq!(
        runs(&metrics, "unknown"),
        0.0,
        "no run failed for want of a descriptor"
    );
    assert!(usage(pid).fds < 1024);
    drop(held);
    eventually(
        Duration::from_secs(15),
        "the sockets to be given back",
        || async { usage(pid).fds <= before.fds + 2 },
    )
    .await;
}

/// Processes with `marker` as one of their arguments.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
        })
        .collect()
}

/// The zombie children of `parent`.
fn zombies_of(parent: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(") ")
                    .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
                fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
            })
        })
        .collect()
}

#[tokio::test]
async fn exec_checks_that_daemonize_leave_no_process_behind() {
    let marker = format!("healthproxy-escapee-{}", std::process::id());
    // `setsid` takes the daemon out of the command's process group, and
    // the subshell leaves it an orphan at once.
    let config = format!(
        r#"[drain]
min = "0s"
[[check]]
name = "daemonizes"
probes = ["liveness"]
period = "200ms"
exec = {{ command = ["sh", "-c", "(setsid sh -c 'sleep 1000; :' {marker} &); echo started"] }}
[[check]]
name = "exits-3"
probes = ["readiness"]
period = "200ms"
exec = {{ command = ["sh", "-c", "exit 3"] }}
"#
    );
    let mut proxy = Proxy::start(&config);
    let pid = proxy.child.id();
    let runs = |text: &str, check: &str, result: &str| {
        metric(
            text,
            &format!("healthproxy_check_runs_total{{check=\"{check}\",kind=\"exec\",result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    eventually(Duration::from_secs(20), "30 runs", || async {
        runs(&proxy.get("/metrics").await.body, "daemonizes", "success") >= 30.0
    })
    .await;
    // Every run but the last has ended: its daemon is killed and reaped.
    eventually(
        Duration::from_secs(5),
        "at most the last run's daemon",
        || async { processes_with(&marker).len() <= 1 && zombies_of(pid).len() <= 1 },
    )
    .await;
    let metrics = proxy.get("/metrics").await.body;
    assert_eq!(
        runs(&metrics, "exits-3", "unknown"),
        0.0,
        "no exit status was taken from the checks"
    );
    assert!(runs(&metrics, "exits-3", "failure") >= 10.0);
    let json = proxy.get("/readyz?format=json").await.body;
    assert!(json.contains("exited with code 3"), "{json}");

    proxy.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(proxy.wait_exit(Duration::from_secs(10)).await.success());
    eventually(
        Duration::from_secs(5),
        "no daemon left after the exit",
        || async { processes_with(&marker).is_empty() },
    )
    .await;
}

/// Waits until process `pid` handles `signal` (its signal-catch mask in
/// /proc says so).
async fn wait_handled(pid: u32, signal: nix::sys::signal::Signal) {
    let bit = 1u64 << (signal as i32 - 1);
    eventually(Duration::from_secs(5), "the signal handler", || async {
        status_field(pid, "SigCgt")
            .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
            .is_some_and(|mask| mask & bit != 0)
    })
    .await;
}

#[tokio::test]
async fn signals_sent_by_habit_are_logged_and_ignored() {
    use nix::sys::signal::Signal;
    let mut proxy = Proxy::start("allow_empty = true\n");
    // SIGHUP is a reload, the habit it comes from: never an exit.
    proxy.signal(Signal::SIGHUP);
    proxy.wait_log("reloading the config").await;
    assert!(proxy.exited().is_none(), "SIGHUP killed the sidecar");
    assert_eq!(proxy.get("/livez").await.status, 200);
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM, Signal::SIGQUIT] {
        proxy.signal(signal);
        proxy.wait_log(&format!("{signal} ignored")).await;
        assert!(proxy.exited().is_none(), "{signal} killed the sidecar");
        assert_eq!(proxy.get("/livez").await.status, 200);
    }
}

#[tokio::test]
async fn a_sigterm_during_a_slow_start_still_drains() {
    // 10,000 checks: the start takes a while, most of it reading them.
    let mut config = String::from(
        r#"[drain]
min = "0s"
"#,
    );
    for i in 0..10_000 {
        config.push_str(&format!(
            r#"[[check]]
name = "c{i}"
probes = ["readiness"]
period = "1h"
file = {{ path = "/", max_age = "1h" }}
"#
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    // Into a file: 10,000 checks log a line each, more than a pipe holds.
    let log = dir.path().join("log");
    let child = std::process::Command::new(crate::support::binary())
        .args([
            "run",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = crate::support::Process(child);
    let pid = child.0.id();
    wait_handled(pid, nix::sys::signal::Signal::SIGTERM).await;
    // Handled before the config is read: by then the process has used a
    // small part of the CPU time it takes to start.
    let at_handler = cpu_ticks(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at_exit = at_handler;
    let status = loop {
        if let Some(ticks) = try_cpu_ticks(pid) {
            at_exit = ticks;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}: {logs}");
    assert!(logs.contains("drain started"), "{logs}");
    assert!(
        at_handler * 4 < at_exit,
        "SIGTERM was handled only after {at_handler} of {at_exit} ticks of CPU"
    );
}

/// The CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    try_cpu_ticks(pid).unwrap()
}

fn try_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::test]
async fn a_fifo_or_a_device_as_token_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let config = dir.path().join("config.toml");
    // `run` with `token_file`: its exit code and standard error.
    let run_with = |token_file: String| {
        std::fs::write(
            &config,
            format!(
                r#"allow_empty = true
[drain]
token_file = "{token_file}"
"#
            ),
        )
        .unwrap();
        let args = [
            "run",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ]
        .map(str::to_string);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::support::run_binary(&args, Duration::from_secs(10)).await
        }
    };
    for (token_file, expected) in [
        (fifo.display().to_string(), "is a FIFO, not a regular file"),
        (
            "/dev/zero".to_string(),
            "is a character device, not a regular file",
        ),
    ] {
        let (code, stderr) = run_with(token_file.clone()).await;
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("drain.token_file {token_file}: {expected}")),
            "{stderr}"
        );
    }
    // A large regular file is read up to the bound, no further.
    let large = dir.path().join("large");
    std::fs::write(&large, vec![b'x'; 1 << 20]).unwrap();
    let (code, stderr) = run_with(large.display().to_string()).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is larger than 65536 bytes"), "{stderr}");
}

/// This machine's address on its default route: a source that is not
/// loopback.
fn non_loopback_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // No packet is sent: connecting a UDP socket only picks a route.
    socket
        .connect("203.0.113.1:9")
        .expect("the tests need a default route");
    socket.local_addr().unwrap().ip()
}

#[tokio::test]
async fn check_messages_are_shown_to_loopback_and_token_holders_only() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let config = format!(
        r#"[drain]
token_file = "{}"
[[check]]
name = "leaky"
probes = ["readiness"]
period = "100ms"
failure_threshold = 1
exec = {{ command = ["sh", "-c", "echo internal-token=s3cret; exit 1"] }}
"#,
        token.display()
    );
    let proxy = Proxy::start_with(&config, "0.0.0.0:0", &[]);
    let local = SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));
    let remote = SocketAddr::new(non_loopback_address(), proxy.addr.port());
    eventually(Duration::from_secs(10), "the check to fail", || async {
        request(local, "GET", "/readyz", &[])
            .await
            .body
            .contains("s3cret")
    })
    .await;
    let bearer = [("authorization", "Bearer t0ken")];
    for path in [
        "/readyz",
        "/readyz?verbose",
        "/readyz?format=json",
        "/readyz/leaky?verbose",
    ] {
        let from_pod_network = request(remote, "GET", path, &[]).await;
        assert_eq!(from_pod_network.status, 503, "{path}");
        assert!(
            !from_pod_network.body.contains("s3cret"),
            "{path}: {}",
            from_pod_network.body
        );
        assert!(from_pod_network.body.contains("leaky"), "{path}: names are shown");
        let with_token = request(remote, "GET", path, &bearer).await;
        assert!(with_token.body.contains("s3cret"), "{path}: {}", with_token.body);
        let from_loopback = request(local, "GET", path, &[]).await;
        assert!(
            from_loopback.body.contains("s3cret"),
            "{path}: {}",
            from_loopback.body
        );
    }
    let health = request(remote, "GET", "/readyz", &[("accept", "application/health+json")]).await;
    assert!(!health.body.contains("s3cret"), "{}", health.body);
    let text = request(remote, "GET", "/readyz?verbose", &[]).await.body;
    assert!(text.contains("[-]leaky failed: reason withheld"), "{text}");
}

#[tokio::test]
async fn a_check_that_finds_the_sidecar_out_of_descriptors_is_unknown_not_a_failure() {
    let app = App::start().await;
    let config = format!(
        r#"[[check]]
name = "app"
probes = ["liveness"]
tcp = {{ port = {} }}
period = "100ms"
failure_threshold = 1
"#,
        app.addr.port()
    );
    let proxy = Proxy::start(&config);
    let pid = proxy.child.id();
    // The soft limit only: it can be raised back up to the hard one.
    let set_limit = |limit: usize| {
        let set = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
            .status()
            .unwrap();
        assert!(set.success(), "prlimit --nofile={limit}:");
    };
    // The lowest free descriptor number becomes the limit (a run holds one
    // for a moment: the lowest seen): the check's connect fails with
    // EMFILE, and so would any accept.
    let lowest_free = || {
        let used: std::collections::BTreeSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        (0..).find(|n| !used.contains(n)).unwrap()
    };
    let mut limit = usize::MAX;
    for _ in 0..10 {
        limit = limit.min(lowest_free());
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    set_limit(limit);
    proxy.wait_log("too many open files").await;
    let pending = TcpStream::connect(proxy.addr).await.unwrap();
    set_limit(1024);
    drop(pending);
    proxy.wait_status("/livez", 200).await;
    let errored = proxy.log_lines("too many open files");
    assert!(errored[0].contains("probe errored"), "{errored:?}");
    let metrics = proxy.get("/metrics").await.body;
    let runs = |result: &str| {
        metric(
            &metrics,
            &format!("healthproxy_check_runs_total{{check=\"app\",kind=\"tcp\",result=\"{result}\"}}"),
        )
    };
    assert!(runs("unknown").unwrap() >= 1.0);
    assert_eq!(
        runs("failure"),
        Some(0.0),
        "the sidecar's exhaustion is not the app's failure"
    );
}

#[tokio::test]
async fn a_liveness_exec_check_whose_program_is_missing_is_linted_and_never_fails() {
    let config = r#"[[check]]
name = "gone"
probes = ["liveness"]
period = "100ms"
failure_threshold = 1
exec = { command = ["/nonexistent/healthcheck"] }
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let (code, stderr) =
        crate::support::run_binary(&["check-config", path.to_str().unwrap()], Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            ":1: warning: check \"gone\": the command \"/nonexistent/healthcheck\" is not an executable file"
        ) && stderr.contains("as a liveness check it can never fail"),
        "{stderr}"
    );
    // As the kubelet: a command that cannot start is Unknown, thrown away.
    let proxy = Proxy::start(config);
    proxy.wait_log("is not an executable file").await;
    proxy.wait_log("probe errored").await;
    assert_eq!(proxy.get("/livez").await.status, 200);
}

/// Asks for `path` again and again on one kept-alive connection, reading
/// every answer, until `stop`; the statuses it got.
async fn ask_until(addr: SocketAddr, path: &'static str, stop: Arc<AtomicBool>) -> Vec<u16> {
    let mut statuses = Vec::new();
    let Ok(stream) = TcpStream::connect(addr).await else {
        return statuses;
    };
    let mut stream = tokio::io::BufReader::new(stream);
    let ask = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    while !stop.load(Ordering::Acquire) {
        if stream.get_mut().write_all(ask.as_bytes()).await.is_err() {
            break;
        }
        let Some(answer) = next_answer(&mut stream, false).await else {
            break;
        };
        statuses.push(answer["HTTP/1.1 ".len()..][..3].parse().unwrap());
    }
    statuses
}

#[tokio::test]
async fn a_flood_of_long_failing_answers_never_holds_the_probes_behind_it() {
    raise_own_fd_limit();
    // A failing /readyz lists every check: 10,000 here. Rendered on the
    // thread that answers the probes, 256 clients asking for it over and
    // over would hold a kubelet probe of /livez behind their renders.
    const CHECKS: usize = 10_000;
    let config: String = (0..CHECKS)
        .map(|i| {
            format!(
                r#"[[check]]
name = "check-{i}"
probes = ["readiness"]
tcp = {{ port = 1 }}
period = "1h"
"#
            )
        })
        .collect();
    let proxy = Proxy::start(&config);
    proxy.wait_status("/readyz", 503).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..256 * scale())
        .map(|_| tokio::spawn(ask_until(proxy.addr, "/readyz", Arc::clone(&stop))))
        .collect();
    let prober = Prober::start(proxy.addr, "/livez");
    prober.wait_probes(10).await;
    stop.store(true, Ordering::Release);
    let seen = prober.finish();
    let mut answered = 0;
    for client in flood {
        let statuses = client.await.unwrap();
        // Rendered or busy, the verdict is the same.
        assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
        answered += statuses.len();
    }
    eprintln!("long failing answers: {answered} answered; prober {seen:?}");
    assert!(answered >= 256, "the flood got {answered} answers");
    assert_no_probe_lost(&seen, "long failing answers");
    assert!(
        seen.slowest < Duration::from_millis(500),
        "a probe waited {:?} behind the flood",
        seen.slowest
    );
}

/// The costliest pattern a config may hold, near the 16 KiB bound of its
/// compiled program (`MAX_PATTERN_PROGRAM`): about 0.1 s to match 10 KiB
/// in a release build, seconds in a debug one.
const COSTLY_PATTERN: &str = "(?:[^z]{0,16}){10}z";

/// An app whose every answer is 200 with a 10 KiB body and two 10 KiB
/// headers, none holding the `z` the patterns look for; it answers
/// nothing until `gate` is opened.
async fn app_with_long_answers(gate: tokio::sync::watch::Receiver<bool>) -> SocketAddr {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let long = "a".repeat(10 * 1024);
    let answer = format!(
        "HTTP/1.1 200 OK\r\nX-A: {long}\r\nX-B: {long}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{long}",
        long.len()
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, mut gate) = (answer.clone(), gate.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = gate.wait_for(|open| *open).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    proc_status(pid, "Threads") as usize
}

/// A check whose patterns are as costly as a config may make them, over
/// the longest body and headers an app can give them, longer to match
/// than the check's period and timeout: the probes never wait for a
/// match (they run on a blocking thread, not the one that answers), the
/// runs fail at their timeout, and however many runs time out, one match
/// at a time is under way (one thread). Matched where the run was, a
/// debug build held every probe for seconds.
#[tokio::test]
async fn a_costly_pattern_match_never_delays_a_probe() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let app = app_with_long_answers(gate).await;
    let proxy = Proxy::start(&format!(
        r#"
[[check]]
name = "costly"
probes = ["readiness"]
period = "1s"
timeout = "1s"
failure_threshold = 1
http = {{ port = {port}, body_matches = {pattern:?}, header_matches = {{ "X-A" = {pattern:?}, "X-B" = {pattern:?} }} }}
"#,
        port = app.port(),
        pattern = COSTLY_PATTERN,
    ));
    let pid = proxy.child.id();
    // The first run waits for the app's answer: the threads that are not
    // a match's exist by now (blocking threads left idle are reused).
    let before = threads(pid);
    open.send(true).unwrap();
    let prober = Prober::start(proxy.addr, "/livez");
    // Eight periods, in which a debug build's match (seconds) outlasts
    // several runs: each run that started a match of its own would hold a
    // thread more. Only the prober asks the sidecar meanwhile (answers
    // with messages are rendered on blocking threads too).
    let mut most = before;
    eventually(Duration::from_secs(60), "80 probes", || {
        most = most.max(threads(pid));
        let probes = prober.probes();
        async move { probes >= 80 * scale() }
    })
    .await;
    let seen = prober.finish();
    let metrics = proxy.get("/metrics").await.body;
    let failed = metric(
        &metrics,
        "healthproxy_check_runs_total{check=\"costly\",kind=\"http\",result=\"failure\"}",
    );
    let status = proxy.get("/readyz/costly?verbose").await.body;
    eprintln!(
        "costly pattern: prober {seen:?}; threads {before} -> at most {most}; {failed:?} failed runs; {status}"
    );
    assert_no_probe_lost(&seen, "costly pattern");
    assert!(failed >= Some(4.0), "the check ran: {failed:?} failed runs");
    assert!(
        most <= before + 2,
        "one match under way at a time: {before} threads before, {most} at most"
    );
}
