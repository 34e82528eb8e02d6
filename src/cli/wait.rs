//! `healthproxy wait`: for init containers. Polls every dependency until
//! each has passed once; exit 0 when all have, 1 at the deadline naming
//! those that never came up.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::check::Check;
use crate::config::{
    CheckKind, DEFAULT_KUBELET_VERSION, ExecSpec, GrpcSpec, Host, HttpSpec, TcpSpec, kube_probe_user_agent,
};

/// What to wait for, from the command line.
#[derive(Debug, clap::Args)]
pub(crate) struct WaitArgs {
    /// A TCP port that must accept connections: HOST:PORT (repeatable).
    #[arg(long = "tcp", value_name = "HOST:PORT")]
    tcp: Vec<String>,
    /// A URL that must answer 200–399 (repeatable).
    #[arg(long = "http", value_name = "URL")]
    http: Vec<String>,
    /// A gRPC health service that must be SERVING: HOST:PORT[/SERVICE] (repeatable).
    #[arg(long = "grpc", value_name = "HOST:PORT[/SERVICE]")]
    grpc: Vec<String>,
    /// A command that must exit 0, run with /bin/sh -c (repeatable).
    #[arg(long = "exec", value_name = "CMD")]
    exec: Vec<String>,
    /// Give up after this long: the last attempt is the one due at this
    /// deadline (each attempt bounded by --attempt-timeout).
    #[arg(long, default_value = "60s", value_parser = duration)]
    timeout: Duration,
    /// Time between two attempts at one dependency.
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// Bound on one attempt.
    #[arg(long, default_value = "1s", value_parser = duration)]
    attempt_timeout: Duration,
}

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

/// One dependency: how it is shown and the check that tests it.
struct Target {
    label: String,
    check: Check,
}

pub(super) fn wait(args: WaitArgs) -> ExitCode {
    let targets = match targets(&args) {
        Ok(t) if t.is_empty() => {
            eprintln!("nothing to wait for: give --tcp, --http, --grpc or --exec");
            return ExitCode::from(super::EXIT_CONFIG);
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failed = runtime.block_on(wait_all(targets, &args));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for (label, last) in &failed {
            eprintln!(
                "wait: {label} did not come up within {}: {last}",
                humantime::format_duration(args.timeout)
            );
        }
        ExitCode::FAILURE
    }
}

/// Waits for every target; returns those that never passed with their
/// last message, in the order given.
async fn wait_all(targets: Vec<Target>, args: &WaitArgs) -> Vec<(String, String)> {
    let began = Instant::now();
    let deadline = began + args.timeout;
    let (interval, attempt) = (args.interval, args.attempt_timeout);
    let mut set = tokio::task::JoinSet::new();
    for (index, t) in targets.into_iter().enumerate() {
        set.spawn(async move {
            let check = Arc::new(t.check);
            // Attempts are due every `interval` from the start, whatever
            // each took, up to and including one due at the deadline: no
            // attempt starts after it, and each is bounded by its own
            // timeout.
            let mut due = began;
            loop {
                let run = Arc::clone(&check);
                let last = crate::engine::run_guarded(async move { run.run(attempt).await }, attempt).await;
                if last.verdict.is_success() {
                    eprintln!(
                        "wait: {} is up after {}",
                        t.label,
                        crate::whole_ms(began.elapsed())
                    );
                    return (index, None);
                }
                due += interval;
                if due > deadline {
                    return (index, Some((t.label, last.message)));
                }
                tokio::time::sleep_until(due).await;
            }
        });
    }
    let mut failed: Vec<(usize, (String, String))> = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((index, Some(failure))) = joined {
            failed.push((index, failure));
        }
    }
    failed.sort_by_key(|(i, _)| *i);
    failed.into_iter().map(|(_, f)| f).collect()
}

fn host_port(text: &str) -> Result<(Host, u16), String> {
    let usage = || format!("{text:?}: write HOST:PORT");
    let (host, port) = Host::split_authority(text).map_err(|_| usage())?;
    let port = port.ok_or_else(usage)?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
    if port == 0 {
        return Err(usage());
    }
    Ok((
        Host {
            name: host.to_string(),
            from_env: None,
        },
        port,
    ))
}

fn targets(args: &WaitArgs) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let mut push = |label: String, kind: CheckKind| -> Result<(), String> {
        let check = Check::new(&label, &kind).map_err(|e| e.to_string())?;
        out.push(Target { label, check });
        Ok(())
    };
    for t in &args.tcp {
        let (host, port) = host_port(t)?;
        push(format!("tcp {t}"), CheckKind::Tcp(TcpSpec { host, port }))?;
    }
    for u in &args.http {
        push(
            format!("http {u}"),
            CheckKind::Http(Box::new(HttpSpec::from_url(u)?)),
        )?;
    }
    for g in &args.grpc {
        let (addr, service) = g.split_once('/').unwrap_or((g, ""));
        let (host, port) = host_port(addr)?;
        let spec = GrpcSpec {
            host,
            port,
            service: service.to_string(),
            user_agent: kube_probe_user_agent(DEFAULT_KUBELET_VERSION),
            tls: None,
        };
        push(format!("grpc {g}"), CheckKind::Grpc(spec))?;
    }
    for e in &args.exec {
        let spec = ExecSpec {
            command: vec!["/bin/sh".into(), "-c".into(), e.clone()],
            env: Vec::new(),
            workdir: None,
        };
        push(format!("exec {e:?}"), CheckKind::Exec(spec))?;
    }
    Ok(out)
}
