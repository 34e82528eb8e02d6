//! CPU and memory of the `postgres` check against the tool it stands for,
//! on one running server, in one run (BENCHMARKS.md, "PostgreSQL checks").
//!
//! Run with
//!
//! ```sh
//! bench-postgres-cpu PORT RUNS
//! ```
//!
//! against a server on 127.0.0.1:PORT with the roles of
//! tests/it/db_postgres.rs (`trusty` under trust, `scram` with the
//! password `scram-secret`, `md5user` with `md5-secret`). For each form it
//! makes RUNS native runs in this process (CPU from `getrusage(SELF)`,
//! the heap's peak above the idle level from a counting allocator), then
//! RUNS runs of the real command as a child (fork+exec; CPU from
//! `getrusage(CHILDREN)`, and this process's own share of the spawning).
//! `bench-postgres-cpu PORT RUNS native FORM` makes only the native runs
//! of one form, for callgrind.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use healthproxy::check::{Check, Verdict};
use healthproxy::config::Config;
use nix::sys::resource::{UsageWho, getrusage};

#[path = "counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{IN_USE, PEAK};

/// One form: its name, the check's table, the command and its password.
struct Form {
    name: &'static str,
    table: String,
    command: Vec<String>,
    password: Option<&'static str>,
}

fn forms(port: u16) -> Vec<Form> {
    let p = port.to_string();
    let psql = |user: &str| -> Vec<String> {
        [
            "psql",
            "-X",
            "-w",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-U",
            user,
            "-d",
            "postgres",
            "-c",
            "SELECT 1",
        ]
        .map(String::from)
        .to_vec()
    };
    vec![
        Form {
            name: "pg_isready",
            table: format!(
                "{{ port = {port}, user = \"scram\", dbname = \"postgres\", sslmode = \"disable\" }}"
            ),
            command: [
                "pg_isready",
                "-h",
                "127.0.0.1",
                "-p",
                &p,
                "-U",
                "scram",
                "-d",
                "postgres",
            ]
            .map(String::from)
            .to_vec(),
            password: None,
        },
        Form {
            name: "psql-trust",
            table: format!(
                "{{ port = {port}, user = \"trusty\", dbname = \"postgres\", sslmode = \"disable\", query = \"SELECT 1\" }}"
            ),
            command: psql("trusty"),
            password: None,
        },
        Form {
            name: "psql-scram",
            table: format!(
                "{{ port = {port}, user = \"scram\", dbname = \"postgres\", sslmode = \"disable\", query = \"SELECT 1\", password_env = \"PGPASSWORD\" }}"
            ),
            command: psql("scram"),
            password: Some("scram-secret"),
        },
        Form {
            name: "psql-md5",
            table: format!(
                "{{ port = {port}, user = \"md5user\", dbname = \"postgres\", sslmode = \"disable\", query = \"SELECT 1\", password_env = \"PGPASSWORD\" }}"
            ),
            command: psql("md5user"),
            password: Some("md5-secret"),
        },
    ]
}

fn cpu(who: UsageWho) -> Duration {
    let usage = getrusage(who).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

fn check(form: &Form) -> Check {
    let text = format!(
        "[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\npostgres = {}\n",
        form.table
    );
    let password = form.password;
    let env = move |name: &str| {
        (name == "PGPASSWORD")
            .then(|| password.map(String::from))
            .flatten()
    };
    let config = Config::from_toml_str(&text, "bench", &env).unwrap_or_else(|e| panic!("{e}"));
    Check::new("db", &config.checks[0].kind).unwrap()
}

/// CPU per native run and the heap's peak above its level before the run.
fn native(runtime: &tokio::runtime::Runtime, form: &Form, runs: u32) -> (Duration, usize) {
    let check = check(form);
    // One run first: the SCRAM keys are derived once and kept.
    let first = runtime.block_on(check.run(Duration::from_secs(5)));
    assert_eq!(
        first.verdict,
        Verdict::Success,
        "{}: {}",
        form.name,
        first.message
    );
    let mut peak = 0;
    let before = cpu(UsageWho::RUSAGE_SELF);
    for _ in 0..runs {
        let idle = IN_USE.load(Ordering::Relaxed);
        PEAK.store(idle, Ordering::Relaxed);
        let outcome = runtime.block_on(check.run(Duration::from_secs(5)));
        assert_eq!(
            outcome.verdict,
            Verdict::Success,
            "{}: {}",
            form.name,
            outcome.message
        );
        peak = peak.max(PEAK.load(Ordering::Relaxed) - idle);
    }
    ((cpu(UsageWho::RUSAGE_SELF) - before) / runs, peak)
}

/// CPU per run of the command: the child's, and this process's for
/// spawning and reaping it.
fn tool(form: &Form, runs: u32) -> (Duration, Duration) {
    let children = cpu(UsageWho::RUSAGE_CHILDREN);
    let own = cpu(UsageWho::RUSAGE_SELF);
    for _ in 0..runs {
        let mut cmd = Command::new(&form.command[0]);
        cmd.args(&form.command[1..])
            .env("PGSSLMODE", "disable")
            .env("PGPASSFILE", "/nonexistent")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = form.password {
            cmd.env("PGPASSWORD", p);
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "{}: {status}", form.name);
    }
    (
        (cpu(UsageWho::RUSAGE_CHILDREN) - children) / runs,
        (cpu(UsageWho::RUSAGE_SELF) - own) / runs,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: PORT RUNS [native FORM]");
    let runs: u32 = args
        .get(2)
        .and_then(|r| r.parse().ok())
        .expect("usage: PORT RUNS [native FORM]");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let forms = forms(port);
    if args.get(3).map(String::as_str) == Some("native") {
        let form = forms
            .iter()
            .find(|f| Some(f.name) == args.get(4).map(String::as_str))
            .expect("a form");
        let check = check(form);
        for _ in 0..runs {
            let outcome = runtime.block_on(check.run(Duration::from_secs(5)));
            assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.message);
        }
        return;
    }
    // What a prepared check holds between runs: with sslmode "disable",
    // and with "prefer" (its TLS client settings).
    for mode in ["disable", "prefer"] {
        let form = Form {
            name: "held",
            table: format!("{{ port = {port}, sslmode = \"{mode}\" }}"),
            command: Vec::new(),
            password: None,
        };
        let before = IN_USE.load(Ordering::Relaxed);
        let held = check(&form);
        let after = IN_USE.load(Ordering::Relaxed);
        println!(
            "a prepared check, sslmode {mode}: {} bytes on the heap, {} inline",
            after - before,
            std::mem::size_of_val(&held)
        );
        drop(held);
    }
    println!();
    println!(
        "| form | native CPU per run | heap peak per run | tool CPU per run (child) | + spawning (parent) | native / tool |"
    );
    println!("|---|---|---|---|---|---|");
    for form in &forms {
        let (native_cpu, peak) = native(&runtime, form, runs);
        let (child, parent) = tool(form, runs);
        println!(
            "| {} | {:.1} µs | {:.1} KiB | {:.1} µs | {:.1} µs | 1/{:.0} |",
            form.name,
            native_cpu.as_secs_f64() * 1e6,
            peak as f64 / 1024.0,
            child.as_secs_f64() * 1e6,
            parent.as_secs_f64() * 1e6,
            (child + parent).as_secs_f64() / native_cpu.as_secs_f64()
        );
    }
}
