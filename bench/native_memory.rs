//! What the `redis`, `mysql`, `dialogue` and `process` checks hold between
//! runs and the heap's peak during a run (BENCHMARKS.md, "Memory per
//! protocol check"), as `bench-postgres-cpu` gives for `postgres`.
//!
//! Run with
//!
//! ```sh
//! bench-native-memory REDIS_PORT MYSQL_PORT MEMCACHED_PORT RUNS
//! ```
//!
//! against servers on 127.0.0.1 (MySQL/MariaDB with a user `probe`
//! identified by `probe-secret`, as `bench/native_cost.py` makes it). For
//! each form: the heap a prepared check holds (a counting allocator: the
//! bytes allocated by `Check::new` and not freed), its size inline, and
//! the largest rise of the heap above its level before a run, over RUNS
//! runs on a current-thread runtime.

use std::sync::atomic::Ordering;
use std::time::Duration;

use healthproxy::check::{Check, Verdict};
use healthproxy::config::Config;

#[path = "counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{IN_USE, PEAK};

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: REDIS_PORT MYSQL_PORT MEMCACHED_PORT RUNS")
        })
        .collect();
    let [redis, mysql, memcached, runs] = args[..] else {
        panic!("usage: REDIS_PORT MYSQL_PORT MEMCACHED_PORT RUNS");
    };
    let forms = [
        ("redis, PING", format!("redis = {{ port = {redis} }}")),
        (
            "redis, TLS settings (held only)",
            format!("redis = {{ port = {redis}, tls = true, insecure_skip_verify = true }}"),
        ),
        (
            "mysql, ping with a login",
            format!("mysql = {{ port = {mysql}, user = \"probe\", password_env = \"MYSQL_PWD\" }}"),
        ),
        (
            "mysql, query `SELECT 1`",
            format!(
                "mysql = {{ port = {mysql}, user = \"probe\", password_env = \"MYSQL_PWD\", command = \"query\" }}"
            ),
        ),
        (
            "dialogue, memcached `version`",
            format!(
                "dialogue = {{ port = {memcached}, steps = [{{ send = \"version\\r\\n\" }}, {{ expect = \"(?m)^VERSION \" }}] }}"
            ),
        ),
        (
            "process, `^redis-server`",
            "process = { pattern = \"^redis-server\" }".to_string(),
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = |name: &str| (name == "MYSQL_PWD").then(|| "probe-secret".to_string());
    println!("| form | held on the heap | inline | heap peak above idle during a run |");
    println!("|---|---|---|---|");
    for (name, table) in forms {
        let text = format!("[[check]]\nname = \"c\"\nprobes = [\"readiness\"]\n{table}\n");
        let config = Config::from_toml_str(&text, "bench", &env).unwrap_or_else(|e| panic!("{e}"));
        let before = IN_USE.load(Ordering::Relaxed);
        let check = Check::new("c", &config.checks[0].kind).unwrap();
        let held = IN_USE.load(Ordering::Relaxed) - before;
        let inline = std::mem::size_of_val(&check);
        if name.contains("held only") {
            println!("| {name} | {held} bytes | {inline} bytes | |");
            continue;
        }
        // A first run, then the measured ones.
        let first = runtime.block_on(check.run(Duration::from_secs(5)));
        assert_eq!(first.verdict, Verdict::Success, "{name}: {}", first.message);
        let mut peak = 0;
        for _ in 0..runs {
            let idle = IN_USE.load(Ordering::Relaxed);
            PEAK.store(idle, Ordering::Relaxed);
            let outcome = runtime.block_on(check.run(Duration::from_secs(5)));
            assert_eq!(outcome.verdict, Verdict::Success, "{name}: {}", outcome.message);
            peak = peak.max(PEAK.load(Ordering::Relaxed) - idle);
        }
        println!(
            "| {name} | {held} bytes | {inline} bytes | {:.1} KiB |",
            peak as f64 / 1024.0
        );
    }
}
