//! A soak: 100 checks at a 100ms period against a real app, plus steady
//! probe traffic, with the sidecar's memory, file descriptors, threads and
//! CPU read at the start and the end. `scripts/soak` runs it for longer
//! (`HEALTHPROXY_SOAK_SECS`, default here 60).

use std::time::{Duration, Instant};

use crate::support::{App, Proxy, proc_status, request};

/// What the sidecar process holds, from /proc.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    threads: u64,
    cpu_ticks: u64,
}

fn sample(pid: u32) -> Sample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the comm, 12 and 13.
    let cpu_ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Sample {
        rss_kib: proc_status(pid, "VmRSS"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
        threads: proc_status(pid, "Threads"),
        cpu_ticks,
    }
}

/// A sample whose file descriptors are the fewest seen over one period of
/// the checks: their runs are spread over the period, so some connection is
/// nearly always open, and a single reading would count runs in flight
/// rather than what the process keeps.
async fn at_rest(pid: u32) -> Sample {
    let mut kept = sample(pid);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        kept.fds = kept.fds.min(sample(pid).fds);
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_with_100_checks_and_probe_traffic_does_not_grow() {
    let secs: u64 = std::env::var("HEALTHPROXY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let app = App::start().await;
    let port = app.addr.port();
    let mut config = String::new();
    for i in 0..100 {
        let (kind, handler) = match i % 4 {
            0 => (
                "readiness",
                format!(r#"http = {{ port = {port}, path = "/healthz" }}"#),
            ),
            1 => ("liveness", format!("tcp = {{ port = {port} }}")),
            2 => (
                "readiness",
                r#"file = { path = "/proc/self/stat", max_age = "1h" }"#.to_string(),
            ),
            _ => (
                "liveness",
                format!(r#"http = {{ port = {port}, path = "/healthz", keep_alive = true }}"#),
            ),
        };
        config.push_str(&format!(
            r#"[[check]]
name = "c{i}"
probes = ["{kind}"]
period = "100ms"
timeout = "100ms"
{handler}
"#
        ));
    }
    // Two malloc arenas at most: the runtime's blocking pool grows and
    // shrinks with load (file checks, lookups), and glibc gives each new
    // thread an arena of its own whose pages stay resident, which reads
    // as growth here without being a leak.
    let proxy = Proxy::start_with(&config, "127.0.0.1:0", &["env", "MALLOC_ARENA_MAX=2"]);
    let pid = proxy.child.id();
    proxy.wait_status("/readyz", 200).await;

    // Steady probe traffic, as the kubelet, a load balancer and Prometheus.
    let addr = proxy.addr;
    let end = Instant::now() + Duration::from_secs(secs);
    let traffic = tokio::spawn(async move {
        let mut served = 0u64;
        while Instant::now() < end {
            for path in ["/livez", "/readyz", "/startupz", "/readyz?verbose", "/metrics"] {
                assert!(
                    [200, 503].contains(&request(addr, "GET", path, &[]).await.status),
                    "{path}"
                );
                served += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served
    });

    // The start is read once the sidecar has warmed up (a tenth of the run).
    tokio::time::sleep(Duration::from_secs(secs / 10)).await;
    let start = at_rest(pid).await;
    let served = traffic.await.unwrap();
    let finish = at_rest(pid).await;
    let ticks = finish.cpu_ticks - start.cpu_ticks;
    let elapsed = secs - secs / 10;
    let metrics = proxy.get("/metrics").await.body;
    let runs: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("healthproxy_check_runs_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    println!(
        "soak {secs}s: {served} probe requests, {runs} check runs; start {start:?}, end {finish:?}; \
         CPU {:.1}% of a core over the last {elapsed}s",
        ticks as f64 / elapsed as f64
    );
    assert!(
        runs >= 100.0 * 10.0 * elapsed as f64 * 0.5,
        "checks ran at their period: {runs}"
    );
    assert!(finish.fds <= start.fds + 5, "fds grew: {start:?} -> {finish:?}");
    // File checks and name lookups use the runtime's blocking threads, a
    // pool that grows with load up to a fixed bound and shrinks when idle.
    assert!(
        finish.threads <= 16,
        "threads beyond the bound: {start:?} -> {finish:?}"
    );
    assert!(
        finish.rss_kib <= start.rss_kib + 4 * 1024,
        "memory grew: {start:?} -> {finish:?}"
    );
}
