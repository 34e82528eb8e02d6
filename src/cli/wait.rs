//! `healthproxy wait`: for init containers. Polls every dependency until
//! each has passed once; exit 0 when all have, 1 at the deadline naming
//! those that never came up.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::check::Check;
use crate::config::{
    CheckKind, DEFAULT_KUBELET_VERSION, DEFAULT_POSTGRES_USER, DialogueSpec, DialogueStep, ExecSpec,
    GrpcSpec, Host, HttpSpec, Pattern, PgAddress, PostgresSpec, ProcessSpec, SslMode, TcpSpec,
    kube_probe_user_agent,
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
    /// A PostgreSQL server that must accept connections, as `pg_isready`
    /// says it: [USER@]HOST:PORT[/DBNAME], HOST a name, an address or a
    /// socket directory (repeatable).
    #[arg(long = "postgres", value_name = "[USER@]HOST:PORT[/DBNAME]")]
    postgres: Vec<String>,
    /// A Redis server that must answer PING with PONG, as `redis-cli -h
    /// HOST -p PORT ping | grep -q PONG`; the password, if any, from
    /// REDISCLI_AUTH as redis-cli reads it (repeatable).
    #[arg(long = "redis", value_name = "HOST:PORT")]
    redis: Vec<String>,
    /// A MySQL or MariaDB server that must answer, as `mysqladmin -h HOST
    /// -P PORT ping` says it: any answer of the server, an access denied
    /// included (repeatable).
    #[arg(long = "mysql", value_name = "HOST:PORT")]
    mysql: Vec<String>,
    /// A TCP dialogue that must succeed, as `printf SEND | nc HOST PORT |
    /// grep -q REGEX`: SEND is written (printf's escapes `\r`, `\n`,
    /// `\t`, `\\`; empty sends nothing, to read a banner), then what
    /// arrives must match REGEX, the rest after the second comma
    /// (repeatable).
    #[arg(long = "dialogue", value_name = "HOST:PORT,SEND,REGEX")]
    dialogue: Vec<String>,
    /// A process whose command line matches PATTERN must run, as `pgrep -f
    /// PATTERN` says it; the sidecar sees the app's processes only when
    /// the pod shares its process namespace (repeatable).
    #[arg(long = "process", value_name = "PATTERN")]
    process: Vec<String>,
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
            eprintln!(
                "nothing to wait for: give --tcp, --http, --grpc, --postgres, --redis, --mysql, --dialogue, --process or --exec"
            );
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

/// `[USER@]HOST:PORT[/DBNAME]` as a pg_isready check (no query).
/// `--redis HOST:PORT`: PONG, with REDISCLI_AUTH's password if set.
fn redis(text: &str, password: Option<String>) -> Result<crate::config::RedisSpec, String> {
    let (host, port) = host_port(text)?;
    Ok(crate::config::RedisSpec {
        host,
        port,
        user: None,
        password: password.map(|value| crate::config::Credential::Env {
            var: "REDISCLI_AUTH".into(),
            value,
        }),
        tls: None,
        expect: crate::config::RedisExpect::Pong,
        accept_errors: Vec::new(),
    })
}

/// `--mysql HOST:PORT`: mysqladmin ping.
fn mysql(text: &str) -> Result<crate::config::MysqlSpec, String> {
    let (host, port) = host_port(text)?;
    Ok(crate::config::MysqlSpec {
        host,
        port,
        user: None,
        password: None,
        database: None,
        command: crate::config::MysqlCommand::Ping,
        skip_ssl: false,
        ca_file: None,
        cert_file: None,
        key_file: None,
        verify_server_cert: false,
    })
}

/// `--dialogue HOST:PORT,SEND,REGEX`: send, then expect.
fn dialogue(text: &str) -> Result<DialogueSpec, String> {
    let usage = || format!("{text:?}: write HOST:PORT,SEND,REGEX");
    let mut parts = text.splitn(3, ',');
    let (authority, send, expect) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(s), Some(e)) => (a, s, e),
        _ => return Err(usage()),
    };
    let (host, port) = host_port(authority)?;
    if expect.is_empty() {
        return Err(format!("{text:?}: REGEX is empty: every answer would match"));
    }
    let expect = Pattern::new(expect).map_err(|e| format!("{text:?}: REGEX: {e}"))?;
    let send = unescape(send);
    let steps = (!send.is_empty())
        .then_some(DialogueStep::Send(send))
        .into_iter()
        .chain([DialogueStep::Expect(expect)])
        .collect();
    Ok(DialogueSpec {
        host,
        port,
        tls: None,
        steps,
    })
}

/// printf's escapes `\r`, `\n`, `\t` and `\\`; any other backslash
/// stays as written.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(other) => out.extend([b'\\', other]),
            None => out.push(b'\\'),
        }
    }
    out
}

/// `--process PATTERN`: pgrep -f.
fn process(text: &str) -> Result<ProcessSpec, String> {
    if text.is_empty() {
        return Err("--process: PATTERN is empty: it would match every process".into());
    }
    let pattern = Pattern::new(text).map_err(|e| format!("--process {text:?}: {e}"))?;
    Ok(ProcessSpec { pattern })
}

fn postgres(text: &str) -> Result<PostgresSpec, String> {
    let (user, rest) = match text.split_once('@') {
        Some((user, rest)) if !user.is_empty() => (user, rest),
        _ => (DEFAULT_POSTGRES_USER, text),
    };
    let (authority, dbname) = rest
        .split_once('/')
        .filter(|_| !rest.starts_with('/'))
        .unwrap_or((rest, user));
    let (address, port) = if authority.starts_with('/') {
        let (dir, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: write [USER@]HOST:PORT[/DBNAME]"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port"))?;
        (PgAddress::Socket(dir.into()), port)
    } else {
        let (host, port) = host_port(authority)?;
        (PgAddress::Tcp(host), port)
    };
    Ok(PostgresSpec {
        address,
        port,
        user: user.to_string(),
        dbname: if dbname.is_empty() { user } else { dbname }.to_string(),
        sslmode: SslMode::Prefer,
        sslrootcert: None,
        sslcert: None,
        connect_timeout: None,
        password: None,
        passfile: None,
        query: None,
    })
}

fn targets(args: &WaitArgs) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<Target>, label: String, kind: CheckKind| -> Result<(), String> {
        let check = Check::new(&label, &kind).map_err(|e| e.to_string())?;
        out.push(Target { label, check });
        Ok(())
    };
    for t in &args.tcp {
        let (host, port) = host_port(t)?;
        push(
            &mut out,
            format!("tcp {t}"),
            CheckKind::Tcp(TcpSpec { host, port }),
        )?;
    }
    for u in &args.http {
        // The URL as given, as Go's client writes it in its messages.
        let check = crate::check::HttpCheck::new(HttpSpec::from_url(u)?)?;
        let check = if u.parse::<hyper::Uri>().is_ok_and(|u| u.port().is_none()) {
            check.port_unwritten()
        } else {
            check
        };
        out.push(Target {
            label: format!("http {u}"),
            check: Check::Http(Box::new(check)),
        });
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
        push(&mut out, format!("grpc {g}"), CheckKind::Grpc(spec))?;
    }
    for p in &args.postgres {
        push(
            &mut out,
            format!("postgres {p}"),
            CheckKind::Postgres(Box::new(postgres(p)?)),
        )?;
    }
    for r in &args.redis {
        push(
            &mut out,
            format!("redis {r}"),
            CheckKind::Redis(Box::new(redis(r, std::env::var("REDISCLI_AUTH").ok())?)),
        )?;
    }
    for m in &args.mysql {
        push(
            &mut out,
            format!("mysql {m}"),
            CheckKind::Mysql(Box::new(mysql(m)?)),
        )?;
    }
    for d in &args.dialogue {
        push(
            &mut out,
            format!("dialogue {d}"),
            CheckKind::Dialogue(Box::new(dialogue(d)?)),
        )?;
    }
    for p in &args.process {
        push(
            &mut out,
            format!("process {p}"),
            CheckKind::Process(Box::new(process(p)?)),
        )?;
    }
    for e in &args.exec {
        let spec = ExecSpec {
            command: vec!["/bin/sh".into(), "-c".into(), e.clone()],
            env: Vec::new(),
            workdir: None,
        };
        push(&mut out, format!("exec {e:?}"), CheckKind::Exec(spec))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_and_mysql_targets_are_host_and_port() {
        let spec = redis("127.0.0.1:6379", Some("s3cret".into())).unwrap();
        assert_eq!((spec.port, spec.password.is_some()), (6379, true));
        assert!(redis("127.0.0.1", None).unwrap_err().contains("HOST:PORT"));
        let spec = mysql("[::1]:3306").unwrap();
        assert_eq!((spec.host.name.as_str(), spec.port), ("::1", 3306));
        assert_eq!(spec.command, crate::config::MysqlCommand::Ping);
    }

    #[test]
    fn dialogue_targets_are_a_send_and_an_expect() {
        let spec = dialogue("127.0.0.1:11211,version\\r\\n,^VERSION ").unwrap();
        assert_eq!(spec.port, 11211);
        assert_eq!(
            spec.steps,
            vec![
                DialogueStep::Send(b"version\r\n".to_vec()),
                DialogueStep::Expect(Pattern::new("^VERSION ").unwrap())
            ]
        );
        // A banner: nothing sent; a regular expression with commas.
        let spec = dialogue("mail:25,,^220 (ESMTP|SMTP){1,2}").unwrap();
        assert_eq!(
            spec.steps,
            vec![DialogueStep::Expect(
                Pattern::new("^220 (ESMTP|SMTP){1,2}").unwrap()
            )]
        );
        assert_eq!(unescape("a\\\\b\\x\\"), b"a\\b\\x\\");
        assert!(
            dialogue("zk:2181,ruok")
                .unwrap_err()
                .contains("HOST:PORT,SEND,REGEX")
        );
        assert!(dialogue("zk:2181,ruok,").unwrap_err().contains("REGEX is empty"));
        assert!(dialogue("zk:2181,ruok,(").unwrap_err().contains("REGEX"));
        assert!(dialogue("zk,ruok,imok").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn process_targets_are_pgrep_patterns() {
        assert!(process("nginx: master").is_ok());
        assert!(process("").unwrap_err().contains("every process"));
        assert!(process("(").unwrap_err().contains("--process"));
    }

    #[test]
    fn postgres_targets_read_as_libpq_defaults_them() {
        let spec = postgres("db:5432").unwrap();
        assert_eq!(
            spec.address,
            PgAddress::Tcp(Host {
                name: "db".into(),
                from_env: None
            })
        );
        assert_eq!(
            (spec.port, spec.user.as_str(), spec.dbname.as_str()),
            (5432, "postgres", "postgres")
        );
        let spec = postgres("app@127.0.0.1:6432/orders").unwrap();
        assert_eq!(
            (spec.user.as_str(), spec.dbname.as_str(), spec.port),
            ("app", "orders", 6432)
        );
        let spec = postgres("app@/var/run/postgresql:5432").unwrap();
        assert_eq!(spec.address, PgAddress::Socket("/var/run/postgresql".into()));
        assert_eq!(spec.dbname, "app");
        assert!(postgres("db").unwrap_err().contains("HOST:PORT"));
        assert!(postgres("/run/pg:0").unwrap_err().contains("not a port"));
    }
}
