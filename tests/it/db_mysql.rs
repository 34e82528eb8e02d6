//! The `mysql` check against a real MariaDB 10.11 server from Debian, with
//! `mysqladmin ping`, `mysqladmin status` and `mariadb -e 'SELECT 1'` as
//! oracles: in every state a probe meets, the native check's verdict
//! equals the command's exit status, asserted in the same test. One server
//! (mariadb-install-db into a temporary directory) for the whole run, with
//! TLS (a CA and a certificate for 127.0.0.1 made here), so that the
//! tools' default (TLS whenever the server offers it) is what runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use healthproxy::check::{MysqlCheck, Outcome, Reason, Verdict};
use healthproxy::config::{Credential, Host, MysqlCommand, MysqlSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::oracle::{Ran, agree, free_port, sh};
use crate::support::tool;

const TIMEOUT: Duration = Duration::from_secs(2);
const BOUND: Duration = Duration::from_secs(4);

/// A mariadbd on 127.0.0.1 with its socket in the temporary directory,
/// killed on drop.
struct Server {
    child: Child,
    port: u16,
    socket: String,
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let data = dir.join("data");
        let install = Command::new(tool("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ])
            .arg(format!("--datadir={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db runs");
        assert!(install.success(), "mariadb-install-db failed");
        let socket = dir.join("sock").display().to_string();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(tool("mariadbd"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={socket}"))
                .arg(format!("--port={port}"))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .arg(format!("--log-error={}", dir.join("error.log").display()))
                .args(["--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve"])
                .arg(format!("--ssl-cert={}", dir.join("server.pem").display()))
                .arg(format!("--ssl-key={}", dir.join("server-key.pem").display()))
                .arg(format!("--ssl-ca={}", dir.join("ca.pem").display()))
                .args([
                    "--connect-timeout=60",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=8M",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mariadbd starts");
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server { child, port, socket };
                }
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mariadbd did not listen");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!(
            "mariadbd did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SQL as root over the socket.
    async fn sql(&self, statements: &str) {
        let ran = sh(
            &format!(
                "mariadb --no-defaults --socket={} -e \"{statements}\"",
                self.socket
            ),
            &[],
            BOUND,
        )
        .await;
        assert!(ran.passed(), "{statements}: {ran:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(port: u16, command: MysqlCommand, user: Option<&str>, password: Option<&str>) -> MysqlSpec {
    MysqlSpec {
        host: Host {
            name: "127.0.0.1".into(),
            from_env: None,
        },
        port,
        user: user.map(|u| Credential::Given(u.into())),
        password: password.map(|p| Credential::Env {
            var: "MYSQL_PWD".into(),
            value: p.into(),
        }),
        database: None,
        command,
        skip_ssl: false,
        ca_file: None,
        cert_file: None,
        key_file: None,
        verify_server_cert: false,
    }
}

async fn native(spec: &MysqlSpec) -> Outcome {
    MysqlCheck::new(spec.clone()).unwrap().run(TIMEOUT).await
}

/// Writes `ca.pem` (the CA the server's certificate is signed by),
/// `other-ca.pem` (a CA that signed nothing here), and `server.pem` and
/// `server-key.pem` (a certificate for the IP address 127.0.0.1 only) into
/// `dir`.
fn certificates(dir: &Path) {
    let ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    };
    let issuer = ca("mysql test CA");
    let other = ca("another CA");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
}

/// The tools' TLS flags beside the keys they stand for: `mysqladmin ping`,
/// `mysqladmin status` and `mariadb -e` with `flags` to `host`, against
/// the check with `tls` applied; the tools' results.
async fn compare_tls(
    state: &str,
    host: &str,
    port: u16,
    flags: &str,
    tls: impl Fn(&mut MysqlSpec),
) -> Vec<Ran> {
    let args = format!("--no-defaults --protocol=tcp -h {host} -P {port} -u probe -ps3cret {flags}");
    three_forms(state, &args, |command| {
        let mut spec = spec(port, command, Some("probe"), Some("s3cret"));
        spec.host.name = host.to_string();
        tls(&mut spec);
        spec
    })
    .await
}

/// `mysqladmin ping`, `mysqladmin status` and `mariadb -e 'SELECT 1'`
/// with `args`, each beside the check `make` gives for its command, all
/// at once; the tools' results.
async fn three_forms(state: &str, args: &str, make: impl Fn(MysqlCommand) -> MysqlSpec) -> Vec<Ran> {
    let one = |form: String, command: MysqlCommand| {
        let spec = make(command);
        async move {
            let (real, ours) = tokio::join!(sh(&form, &[], BOUND), native(&spec));
            agree(state, &form, &real, &ours);
            real
        }
    };
    let (ping, status, query) = tokio::join!(
        one(format!("mysqladmin {args} ping"), MysqlCommand::Ping),
        one(format!("mysqladmin {args} status"), MysqlCommand::Status),
        one(
            format!("mariadb {args} -e 'SELECT 1'"),
            MysqlCommand::Query("SELECT 1".into())
        ),
    );
    vec![ping, status, query]
}

/// Each tool beside its check, with `user` and `password` (or none); at
/// the same time, the exec probes `inject` converts
/// (tests/it/exec_convert_e2e.rs).
async fn compare(state: &str, port: u16, user: Option<&str>, password: Option<&str>) -> Vec<Ran> {
    #[cfg(feature = "inject")]
    let converted = crate::exec_convert_e2e::mysql(state, port, user, password);
    #[cfg(not(feature = "inject"))]
    let converted = async {};
    let (mut ran, skipped, ()) = tokio::join!(
        compare_ssl(state, port, user, password, false),
        compare_ssl(state, port, user, password, true),
        converted
    );
    ran.extend(skipped);
    ran
}

/// [`compare`], with `--skip-ssl` or without: the three forms at once.
async fn compare_ssl(
    state: &str,
    port: u16,
    user: Option<&str>,
    password: Option<&str>,
    skip_ssl: bool,
) -> Vec<Ran> {
    let mut args = format!("--no-defaults -h 127.0.0.1 -P {port}");
    if skip_ssl {
        args.push_str(" --skip-ssl");
    }
    if let Some(user) = user {
        args.push_str(&format!(" -u {user}"));
    }
    if let Some(password) = password {
        args.push_str(&format!(" -p{password}"));
    }
    three_forms(state, &args, |command| {
        let mut spec = spec(port, command, user, password);
        spec.skip_ssl = skip_ssl;
        spec
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_check_gives_mysqladmin_and_mysql_verdicts_in_every_state() {
    // Not running.
    let (_hold, refused) = crate::support::refusing_port();
    compare("not running", refused, Some("probe"), Some("s3cret")).await;
    let out = native(&spec(refused, MysqlCommand::Ping, None, None)).await;
    assert_eq!(out.reason, Some(Reason::Refused), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let server = Server::start(dir.path()).await;
    let port = server.port;
    server
        .sql("CREATE USER probe@'%' IDENTIFIED BY 's3cret'; CREATE USER nopass@'%'; GRANT PROCESS ON *.* TO probe@'%'")
        .await;

    // Up: the right password, none where none is needed, a wrong one,
    // none where one is needed, a user that does not exist.
    compare("up", port, Some("probe"), Some("s3cret")).await;
    let out = native(&spec(port, MysqlCommand::Ping, Some("probe"), Some("s3cret"))).await;
    assert_eq!(
        (out.verdict, out.message.as_str()),
        (Verdict::Success, "mysqld is alive")
    );
    compare("up, a user without a password", port, Some("nopass"), None).await;
    compare("a wrong password", port, Some("probe"), Some("wrong")).await;
    let out = native(&spec(port, MysqlCommand::Status, Some("probe"), Some("wrong"))).await;
    assert_eq!(out.reason, Some(Reason::Auth), "{out:?}");
    assert!(
        out.message.contains("Access denied for user 'probe'"),
        "{}",
        out.message
    );
    compare("no password given", port, Some("probe"), None).await;
    compare("an unknown user", port, Some("nobody"), Some("x")).await;
    compare("no user given", port, None, None).await;

    // TLS: a user that requires it, then a server that requires it for
    // everyone; the tools ask for TLS unless --skip-ssl.
    server
        .sql(
            "CREATE USER tlsonly@'%' IDENTIFIED BY 's3cret' REQUIRE SSL; GRANT PROCESS ON *.* TO tlsonly@'%'",
        )
        .await;
    let ran = compare("a user that requires TLS", port, Some("tlsonly"), Some("s3cret")).await;
    assert!(ran[1].passed() && !ran[4].passed(), "{ran:?}");
    server.sql("DROP USER tlsonly@'%'").await;
    server.sql("SET GLOBAL require_secure_transport = ON").await;
    let ran = compare("the server requires TLS", port, Some("probe"), Some("s3cret")).await;
    assert!(ran[1].passed() && !ran[4].passed(), "{ran:?}");
    server.sql("SET GLOBAL require_secure_transport = OFF").await;

    // The server's certificate: verified against its CA, against another
    // CA, and for a name it does not carry.
    let ca = dir.path().join("ca.pem");
    let other = dir.path().join("other-ca.pem");
    let with_ca = |path: &Path, verify: bool| {
        let path = path.to_path_buf();
        move |s: &mut MysqlSpec| {
            s.ca_file = Some(path.clone());
            s.verify_server_cert = verify;
        }
    };
    let ran = compare_tls(
        "the server's CA",
        "127.0.0.1",
        port,
        &format!("--ssl-ca={}", ca.display()),
        with_ca(&ca, false),
    )
    .await;
    assert!(ran.iter().all(Ran::passed), "{ran:?}");
    let ran = compare_tls(
        "another CA",
        "127.0.0.1",
        port,
        &format!("--ssl-ca={}", other.display()),
        with_ca(&other, false),
    )
    .await;
    assert!(!ran[0].passed(), "{ran:?}");
    let ran = compare_tls(
        "the server's CA and name",
        "127.0.0.1",
        port,
        &format!("--ssl-verify-server-cert --ssl-ca={}", ca.display()),
        with_ca(&ca, true),
    )
    .await;
    assert!(ran.iter().all(Ran::passed), "{ran:?}");
    compare_tls(
        "the server's CA, another name, not verified",
        "localhost",
        port,
        &format!("--ssl-ca={}", ca.display()),
        with_ca(&ca, false),
    )
    .await;
    let ran = compare_tls(
        "the server's CA, another name",
        "localhost",
        port,
        &format!("--ssl-verify-server-cert --ssl-ca={}", ca.display()),
        with_ca(&ca, true),
    )
    .await;
    assert!(!ran[0].passed(), "{ran:?}");

    // A failing query.
    let form = format!(
        "mariadb --no-defaults -h 127.0.0.1 -P {port} -u probe -ps3cret -e 'SELECT * FROM nope.nope'"
    );
    let bad = spec(
        port,
        MysqlCommand::Query("SELECT * FROM nope.nope".into()),
        Some("probe"),
        Some("s3cret"),
    );
    let (real, ours) = tokio::join!(sh(&form, &[], BOUND), native(&bad));
    agree("a failing query", &form, &real, &ours);
    assert!(
        ours.message
            .starts_with("ERROR 1142 (42000): SELECT command denied"),
        "{}",
        ours.message
    );

    // Host not allowed: the only account is for another host.
    server.sql("RENAME USER probe@'%' TO probe@'10.9.9.9'; RENAME USER nopass@'%' TO nopass@'10.9.9.9'; FLUSH PRIVILEGES").await;
    let ran = compare("host not allowed", port, Some("probe"), Some("s3cret")).await;
    assert!(ran[0].output.contains("1130") && !ran[0].passed(), "{:?}", ran[0]);
    assert!(
        ran[3].output.contains("is not allowed to connect") && ran[3].passed(),
        "with --skip-ssl: {:?}",
        ran[3]
    );
    server
        .sql("RENAME USER probe@'10.9.9.9' TO probe@'%'; RENAME USER nopass@'10.9.9.9' TO nopass@'%'")
        .await;

    // Connections exhausted: max_connections held by idle clients.
    server.sql("SET GLOBAL max_connections = 10").await;
    let mut held = Vec::new();
    // 10 is MariaDB's smallest max_connections; one more is kept for a
    // SUPER user.
    for _ in 0..12 {
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // Taken once the server has spoken (its greeting, or 1040 to the
        // one too many): a connection still in the kernel's backlog would
        // race the probes below for a place.
        let mut greeting = [0u8; 256];
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut client, &mut greeting),
        )
        .await;
        held.push(client);
    }
    let ran = compare("connections exhausted", port, Some("probe"), Some("s3cret")).await;
    assert!(
        ran.iter().any(|r| r.output.contains("Too many connections")),
        "{ran:?}"
    );
    drop(held);
    server.sql("SET GLOBAL max_connections = 151").await;

    // `wait --mysql` returns once the server answers (an access denied
    // is an answer, as mysqladmin ping says).
    let target = format!("127.0.0.1:{port}");
    let (code, err) = crate::oracle::wait_for("mysql", &target, "10s").await;
    assert_eq!(code, 0, "{err}");

    // Frozen: accepted by the kernel, never answered.
    kill(server.pid(), Signal::SIGSTOP).unwrap();
    compare("frozen", port, Some("probe"), Some("s3cret")).await;
    let out = native(&spec(port, MysqlCommand::Ping, None, None)).await;
    assert_eq!(out.reason, Some(Reason::Timeout), "{out:?}");
    let (code, _) = crate::oracle::wait_for("mysql", &target, "2s").await;
    assert_eq!(code, 1, "a frozen server is never up");
    kill(server.pid(), Signal::SIGCONT).unwrap();
    compare("thawed", port, Some("probe"), Some("s3cret")).await;
}
