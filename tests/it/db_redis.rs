//! The `redis` check against a real redis-server 7.0 from Debian, with
//! `redis-cli` as the oracle: in every state a probe meets, the native
//! check's verdict equals the exit status of the command it stands for,
//! asserted in the same test. One server for the whole binary's run,
//! walked through the states one after the other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use healthproxy::check::{Outcome, Reason, RedisCheck, Verdict};
use healthproxy::config::{Credential, Host, RedisExpect, RedisSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::oracle::{Ran, agree, sh};
use crate::support::{eventually, free_port, tool};

/// The kubelet's timeout for the probes here; the real command is killed
/// a little later, so that a hang is a hang for both.
const TIMEOUT: Duration = Duration::from_secs(2);
const BOUND: Duration = Duration::from_secs(4);

/// A redis-server on 127.0.0.1, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    /// Starts redis-server in `dir` (which keeps its RDB file across
    /// restarts) with `extra` settings, on `port` or a free one.
    async fn start(dir: &Path, port: Option<u16>, extra: &[&str]) -> Server {
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut child = Command::new(tool("redis-server"))
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--dir", dir.to_str().unwrap(), "--save", "", "--appendonly", "no"])
                .args(["--enable-debug-command", "yes", "--logfile", "redis.log"])
                .args(["--loading-process-events-interval-bytes", "1024"])
                .args(extra)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken: another one
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server {
                        child: Some(child),
                        port,
                        dir: dir.to_path_buf(),
                    };
                }
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-server did not listen");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "redis-server did not start: {}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// `redis-cli ARGS`, with the server's port.
    async fn cli(&self, args: &str) -> Ran {
        sh(
            &format!("redis-cli -h 127.0.0.1 -p {} {args}", self.port),
            &[],
            BOUND,
        )
        .await
    }

    /// Stops the server and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spec(port: u16, expect: RedisExpect) -> RedisSpec {
    RedisSpec {
        host: Host {
            name: "127.0.0.1".into(),
            from_env: None,
        },
        port,
        user: None,
        password: None,
        tls: None,
        expect,
        accept_errors: Vec::new(),
    }
}

async fn native(spec: &RedisSpec) -> Outcome {
    RedisCheck::new(spec.clone()).unwrap().run(TIMEOUT).await
}

/// The state asked of the native checks and, at the same time, of the
/// exec probes `inject` converts (tests/it/exec_convert_e2e.rs).
async fn compare(state: &str, port: u16, auth: Option<(&str, &Path)>) {
    #[cfg(feature = "inject")]
    let converted = crate::exec_convert_e2e::redis(state, port, auth.map(|(password, _)| password));
    #[cfg(not(feature = "inject"))]
    let converted = async {};
    tokio::join!(compare_native(state, port, auth), converted);
}

/// The forms of the command that real manifests use, each beside the
/// check that stands for it; `auth` is the redis-cli arguments and the
/// check's credentials.
async fn compare_native(state: &str, port: u16, auth: Option<(&str, &Path)>) {
    let (args, password) = match auth {
        Some((password, file)) => {
            std::fs::write(file, format!("{password}\n")).unwrap();
            (
                format!("--no-auth-warning -a '{password}'"),
                Some(Credential::File(file.to_path_buf())),
            )
        }
        None => (String::new(), None),
    };
    let forms = [
        (
            format!("redis-cli -h 127.0.0.1 -p {port} {args} ping"),
            RedisExpect::Reply,
            vec![],
        ),
        (
            format!("redis-cli -h 127.0.0.1 -p {port} {args} ping | grep -q PONG"),
            RedisExpect::Pong,
            vec![],
        ),
        (
            format!("redis-cli -e -h 127.0.0.1 -p {port} {args} ping"),
            RedisExpect::Pong,
            vec![],
        ),
        (
            format!(
                "r=$(redis-cli -h 127.0.0.1 -p {port} {args} ping); [ \"$r\" = PONG ] || [ \"${{r#LOADING}}\" != \"$r\" ]"
            ),
            RedisExpect::Pong,
            vec!["LOADING".to_string()],
        ),
    ];
    let runs = forms.into_iter().map(|(form, expect, accept)| {
        let mut spec = spec(port, expect);
        spec.password = password.clone();
        spec.accept_errors = accept;
        tokio::spawn(async move {
            let (real, ours) = tokio::join!(sh(&form, &[], BOUND), native(&spec));
            (form, real, ours)
        })
    });
    // All forms at once: a frozen server costs one bound, not four.
    for run in runs.collect::<Vec<_>>() {
        let (form, real, ours) = run.await.unwrap();
        agree(state, &form, &real, &ours);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_check_gives_redis_cli_verdict_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("password");

    // Not running: nothing listens on the port.
    let (_hold, refused) = crate::support::refusing_port();
    compare("not running", refused, None).await;
    let out = native(&spec(refused, RedisExpect::Reply)).await;
    assert_eq!(out.reason, Some(Reason::Refused), "{out:?}");
    assert!(
        out.message
            .starts_with("Could not connect to Redis at 127.0.0.1:"),
        "{}",
        out.message
    );

    let mut server = Server::start(dir.path(), None, &[]).await;
    let port = server.port;

    // Up.
    compare("up", port, None).await;
    compare(
        "up, a password the server does not need",
        port,
        Some(("nopass", &secret_file)),
    )
    .await;
    let out = native(&spec(port, RedisExpect::Pong)).await;
    assert_eq!((out.verdict, out.message.as_str()), (Verdict::Success, "PONG"));

    // `wait --redis` returns once PONG comes.
    let target = format!("127.0.0.1:{port}");
    let (code, err) = crate::oracle::wait_for("redis", &target, "10s").await;
    assert_eq!(code, 0, "{err}");

    // Frozen: the kernel accepts, nothing answers.
    kill(server.pid(), Signal::SIGSTOP).unwrap();
    compare("frozen", port, None).await;
    let out = native(&spec(port, RedisExpect::Reply)).await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    kill(server.pid(), Signal::SIGCONT).unwrap();

    // BUSY: a script past busy-reply-threshold.
    assert!(server.cli("config set busy-reply-threshold 100").await.passed());
    let mut busy = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let script = "while true do end";
    busy.write_all(format!("*3\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n", script.len()).as_bytes())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "PING answers BUSY", || async {
        server.cli("ping").await.output.starts_with("BUSY")
    })
    .await;
    compare("busy", port, None).await;
    let out = native(&spec(port, RedisExpect::Pong)).await;
    assert_eq!(out.reason, Some(Reason::Reply), "{out:?}");
    assert!(out.message.starts_with("BUSY"), "{}", out.message);
    assert!(server.cli("script kill").await.passed());
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), busy.read_buf(&mut sink)).await;
    drop(busy);

    // MASTERDOWN: a replica of a master that is not there, told not to
    // serve stale data.
    assert!(
        server
            .cli("config set replica-serve-stale-data no")
            .await
            .passed()
    );
    assert!(
        server
            .cli(&format!("replicaof 127.0.0.1 {refused}"))
            .await
            .passed()
    );
    let ran = server.cli("ping").await;
    assert!(ran.output.starts_with("MASTERDOWN"), "{ran:?}");
    compare("replica with its master down", port, None).await;
    assert!(server.cli("replicaof no one").await.passed());

    // A password required: none given, a wrong one, the right one, and a
    // user with it.
    assert!(server.cli("config set requirepass s3cret").await.passed());
    compare("password required, none given", port, None).await;
    let out = native(&spec(port, RedisExpect::Pong)).await;
    assert_eq!(out.reason, Some(Reason::Auth), "{out:?}");
    assert!(out.message.starts_with("NOAUTH"), "{}", out.message);
    compare(
        "password required, a wrong one given",
        port,
        Some(("wrong", &secret_file)),
    )
    .await;
    compare(
        "password required and given",
        port,
        Some(("s3cret", &secret_file)),
    )
    .await;
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    let form = format!("redis-cli -h 127.0.0.1 -p {port} --user default ping | grep -q PONG");
    let real = sh(&form, &[("REDISCLI_AUTH", "s3cret")], BOUND).await;
    let mut with_user = spec(port, RedisExpect::Pong);
    with_user.user = Some(Credential::Given("default".into()));
    with_user.password = Some(Credential::Env {
        var: "REDISCLI_AUTH".into(),
        value: "s3cret".into(),
    });
    agree("a user and its password", &form, &real, &native(&with_user).await);

    // Connections exhausted: maxclients held by idle clients.
    assert!(
        server
            .cli("-a s3cret --no-auth-warning config set maxclients 3")
            .await
            .passed()
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut reply = [0u8; 64];
        let _ = c.read(&mut reply).await;
        held.push(c);
    }
    let ran = server.cli("ping").await;
    assert!(ran.output.contains("max number of clients"), "{ran:?}");
    compare("connections exhausted", port, None).await;
    compare(
        "connections exhausted, with the password",
        port,
        Some(("s3cret", &secret_file)),
    )
    .await;
    drop(held);
    eventually(Duration::from_secs(5), "a client slot is free again", || async {
        server.cli("-a s3cret --no-auth-warning ping").await.output.trim() == "PONG"
    })
    .await;
    assert!(
        server
            .cli("-a s3cret --no-auth-warning config set maxclients 10000")
            .await
            .passed()
    );

    // Loading: a dataset saved, the server started again with a delay per
    // key, probed while it loads.
    assert!(
        server
            .cli("-a s3cret --no-auth-warning debug populate 20000")
            .await
            .passed()
    );
    assert!(server.cli("-a s3cret --no-auth-warning save").await.passed());

    // Shutting down: SHUTDOWN waits (shutdown-timeout) for a replica that
    // lags behind, and the server answers meanwhile. The replica is frozen
    // after its sync, so the master waits until it is thawed.
    let replica_dir = dir.path().join("replica");
    std::fs::create_dir(&replica_dir).unwrap();
    let master = port.to_string();
    let mut replica = Server::start(
        &replica_dir,
        None,
        &["--replicaof", "127.0.0.1", &master, "--masterauth", "s3cret"],
    )
    .await;
    eventually(Duration::from_secs(20), "the replica is in sync", || async {
        server
            .cli("-a s3cret --no-auth-warning info replication")
            .await
            .output
            .contains("state=online")
    })
    .await;
    kill(replica.pid(), Signal::SIGSTOP).unwrap();
    let auth = "-a s3cret --no-auth-warning";
    assert!(
        server
            .cli(&format!("{auth} config set shutdown-timeout 60"))
            .await
            .passed()
    );
    assert!(server.cli(&format!("{auth} set behind 1")).await.passed());
    let shutdown_command = format!("redis-cli -h 127.0.0.1 -p {port} {auth} shutdown");
    let shutdown = tokio::spawn(async move { sh(&shutdown_command, &[], Duration::from_secs(90)).await });
    let log = dir.path().join("redis.log");
    eventually(
        Duration::from_secs(10),
        "SHUTDOWN waits for the replica",
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Waiting for replicas before shutting down")
        },
    )
    .await;
    compare(
        "shutting down, waiting for a replica",
        port,
        Some(("s3cret", &secret_file)),
    )
    .await;
    compare("shutting down, no password", port, None).await;
    let mut with_password = spec(port, RedisExpect::Pong);
    with_password.password = Some(Credential::File(secret_file.clone()));
    let out = native(&with_password).await;
    assert_eq!((out.verdict, out.message.as_str()), (Verdict::Success, "PONG"));
    kill(replica.pid(), Signal::SIGCONT).unwrap();
    let ran = shutdown.await.unwrap();
    assert!(ran.code.is_some(), "SHUTDOWN returned once the replica caught up");
    eventually(Duration::from_secs(10), "the master has exited", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
    compare("shut down", port, Some(("s3cret", &secret_file))).await;
    replica.stop();
    server.stop();
    let loading = Server::start(
        dir.path(),
        Some(port),
        &["--requirepass", "s3cret", "--key-load-delay", "300"],
    )
    .await;
    let form = format!("redis-cli -h 127.0.0.1 -p {port} -a s3cret --no-auth-warning ping");
    let ran = sh(&form, &[], BOUND).await;
    assert!(
        ran.output.starts_with("LOADING"),
        "the server is loading: {ran:?}"
    );
    compare("loading", port, Some(("s3cret", &secret_file))).await;
    compare("loading, no password", port, None).await;
    let mut spec_loading = spec(port, RedisExpect::Pong);
    spec_loading.password = Some(Credential::File(secret_file.clone()));
    let (real, ours) = tokio::join!(sh(&form, &[], BOUND), native(&spec_loading));
    assert!(
        real.output.starts_with("LOADING") && ours.message.starts_with("LOADING"),
        "{real:?} {ours:?}"
    );
    assert_eq!(ours.reason, Some(Reason::Reply));

    // SHUTDOWN while loading: the server exits at once, with nothing to
    // wait for.
    let ran = sh(
        &format!("redis-cli -h 127.0.0.1 -p {port} -a s3cret --no-auth-warning shutdown nosave"),
        &[],
        BOUND,
    )
    .await;
    assert!(ran.code.is_some(), "{ran:?}");
    eventually(
        Duration::from_secs(10),
        "the loading server has exited",
        || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_err() },
    )
    .await;
    compare("shut down while loading", port, Some(("s3cret", &secret_file))).await;
    drop(loading);
    let _ = &server.dir;
}
