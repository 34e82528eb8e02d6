//! The `postgres` check against a real PostgreSQL 15 from Debian, with the
//! real `pg_isready` and `psql -c 'SELECT 1'` as oracles: in every state,
//! the check's verdict must be the tool's exit status, asked with the same
//! parameters in the same test.
//!
//! One server serves every state that does not change it (up, passwords
//! right, wrong and missing with SCRAM, MD5 and cleartext, an unknown
//! database or user, a failing query, TLS, the Unix socket); it starts
//! once per test binary and a watchdog stops it when the binary exits. A
//! second server goes through the states that do change it, one after the
//! other in one test: without TLS, connections exhausted, frozen
//! (SIGSTOP), shutting down with a client attached (57P03), and in
//! recovery without hot standby (57P03 again).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use healthproxy::check::{Check, Outcome, Reason, Verdict};
use healthproxy::config::Config;

use crate::support::{eventually, refusing_port, tool};

/// The check's timeout: long enough for a loaded CI machine, and shorter
/// than the tools' connect timeout where a state makes both wait.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL server binaries (Debian's layout).
fn server_bin(name: &str) -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .max();
    found.unwrap_or_else(|| {
        panic!("PostgreSQL's {name} is not installed: .ci/install.d/databases.sh installs it")
    })
}

/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user the Debian package creates.
fn as_server_user(program: &Path) -> Command {
    if nix::unistd::Uid::effective().is_root() {
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("the postgres user (created by Debian's postgresql package)");
        let mut cmd = Command::new(tool("setpriv"));
        cmd.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn chown_to_server_user(path: &Path) {
    if nix::unistd::Uid::effective().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    }
}

/// A data directory made by initdb, with the roles and `pg_hba.conf` the
/// tests use, and a self-signed certificate for TLS.
fn init(dir: &Path) -> PathBuf {
    chown_to_server_user(dir);
    let data = dir.join("data");
    let out = as_server_user(&server_bin("initdb"))
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         host all trusty 127.0.0.1/32 trust\n\
         host all md5user 127.0.0.1/32 md5\n\
         host all clear 127.0.0.1/32 password\n\
         hostssl all certuser 127.0.0.1/32 cert\n\
         hostnossl all sslonly 127.0.0.1/32 reject\n\
         hostssl all sslonly 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    certificates(dir);
    std::fs::copy(dir.join("ca.crt"), data.join("root.crt")).unwrap();
    for file in ["pg_hba.conf", "root.crt"] {
        let path = data.join(file);
        chown_to_server_user(&path);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    use_certificate(&data, dir, "server-ip");
    let sockets = dir.join("sock");
    std::fs::create_dir(&sockets).unwrap();
    chown_to_server_user(&sockets);
    data
}

/// The test's certificates, in `dir`: `ca.crt`, which signed the
/// others; `other-ca.crt`, which signed none; server certificates for
/// `localhost` and the IP SAN 127.0.0.1 (`server-ip`), for `localhost`
/// alone (`server-dns`, whose CN is no host name) and with no SAN at all
/// and the CN 127.0.0.1 (`server-cn`); and `client.crt` for the role
/// `certuser`, whose key only its owner may read, as libpq demands.
fn certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("healthproxy test CA");
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.join("other-ca.crt"), ca("another CA").0).unwrap();
    let leaves: [(&str, &[&str], &str, ExtendedKeyUsagePurpose); 4] = [
        (
            "server-ip",
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "server-dns",
            &["localhost"],
            "healthproxy test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("server-cn", &[], "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", &[], "certuser", ExtendedKeyUsagePurpose::ClientAuth),
    ];
    for (name, sans, cn, usage) in leaves {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
}

/// Makes `dir/NAME.crt` and its key the server's certificate, each file
/// replaced whole, for the next start or configuration reload.
fn use_certificate(data: &Path, dir: &Path, name: &str) {
    for (from, to) in [
        (format!("{name}.crt"), "server.crt"),
        (format!("{name}.key"), "server.key"),
    ] {
        let staged = data.join(format!("{to}.new"));
        std::fs::copy(dir.join(from), &staged).unwrap();
        chown_to_server_user(&staged);
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::rename(&staged, data.join(to)).unwrap();
    }
}

/// A running postmaster.
pub(crate) struct Server {
    dir: PathBuf,
    pub(crate) port: u16,
    postmaster: Child,
}

impl Server {
    /// Starts `postgres` on `data` with `settings`, on 127.0.0.1 and a
    /// socket in `dir/sock`, and returns once it accepts connections (or,
    /// with `until_rejecting`, once it answers 57P03). The port is one the
    /// kernel had free; if another process takes it first, the server
    /// fails to bind and another port is tried.
    fn start(dir: &Path, settings: &[&str], until: i32) -> Server {
        for _ in 0..5 {
            let port = crate::oracle::free_port();
            let mut cmd = as_server_user(&server_bin("postgres"));
            cmd.arg("-D")
                .arg(dir.join("data"))
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.join("sock"))
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("log-{port}"))).unwrap());
            for s in settings {
                cmd.args(["-c", s]);
            }
            let mut postmaster = cmd.spawn().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if postmaster.try_wait().unwrap().is_some() {
                    break;
                }
                let status = pg_isready(port, &[]).0;
                if status == until {
                    return Server {
                        dir: dir.to_path_buf(),
                        port,
                        postmaster,
                    };
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "postgres did not start: {}",
                    std::fs::read_to_string(dir.join(format!("log-{port}"))).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("postgres could not bind a port in 5 tries");
    }

    fn sockets(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.postmaster.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SQL run as the superuser over the Unix socket.
    fn sql(&self, sql: &str) {
        let out = Command::new(tool("psql"))
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-h",
            ])
            .arg(self.sockets())
            .args(["-p", &self.port.to_string(), "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A psql session that stays connected until dropped: a client held
    /// open, as an app's connection pool holds one.
    fn session(&self, user: &str) -> Session {
        let mut child = Command::new(tool("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "postgres",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The session is established once it answers a query.
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "SELECT 'ready';").unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert!(n > 0, "the held psql session ended");
        }
        Session {
            child,
            _stdin: stdin,
            _stdout: out,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only a postmaster not yet reaped: its pid is still its own.
        if let Ok(None) = self.postmaster.try_wait() {
            // Immediate shutdown: nothing here needs to be kept.
            self.signal_quietly(nix::sys::signal::Signal::SIGCONT);
            self.signal_quietly(nix::sys::signal::Signal::SIGQUIT);
            let _ = self.postmaster.wait();
        }
    }
}

impl Server {
    fn signal_quietly(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.postmaster.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }
}

struct Session {
    child: Child,
    _stdin: ChildStdin,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server that every state test but the sequential one shares,
/// started on first use. It outlives the tests (statics are not dropped):
/// a watchdog shell whose stdin is held here stops it and removes its
/// directory when the test binary exits and the pipe closes.
struct Shared {
    server: Server,
    _watchdog: (Child, ChildStdin),
}

pub(crate) fn shared() -> &'static Server {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let dir = tempfile::Builder::new().prefix("hp-pg-").tempdir().unwrap().keep();
            init(&dir);
            let server = Server::start(
                &dir,
                &["ssl=on", "ssl_ca_file=root.crt", "max_connections=40"],
                0,
            );
            let mut watchdog = Command::new("/bin/sh")
                .args([
                    "-c",
                    "read _; kill -QUIT \"$1\"; while kill -0 \"$1\" 2>/dev/null; do sleep 0.1; done; rm -rf \"$2\"",
                    "watchdog",
                ])
                .arg(server.postmaster.id().to_string())
                .arg(&dir)
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            let watchdog_stdin = watchdog.stdin.take().unwrap();
            server.sql("CREATE ROLE trusty LOGIN");
            server.sql("CREATE ROLE certuser LOGIN");
            server.sql("CREATE ROLE sslonly LOGIN");
            server.sql("CREATE ROLE scram LOGIN PASSWORD 'scram-secret'");
            server.sql("CREATE ROLE clear LOGIN PASSWORD 'clear-secret'");
            server.sql("SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5-secret'");
            Shared {
                server,
                _watchdog: (watchdog, watchdog_stdin),
            }
        })
        .server
}

/// What one probe is asked with, for the check and both tools.
#[derive(Clone, Default)]
struct Ask {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    password: Option<String>,
    sslmode: Option<&'static str>,
    /// `sslrootcert`, `PGSSLROOTCERT`.
    sslrootcert: Option<PathBuf>,
    /// `sslcert` and `sslkey`, `PGSSLCERT` and `PGSSLKEY`.
    sslcert: Option<(PathBuf, PathBuf)>,
    query: String,
    connect_timeout: Option<u32>,
}

impl Ask {
    fn tcp(port: u16, user: &str) -> Ask {
        Ask {
            host: "127.0.0.1".into(),
            port,
            user: user.into(),
            dbname: "postgres".into(),
            query: "SELECT 1".into(),
            ..Ask::default()
        }
    }

    fn password(mut self, password: &str) -> Ask {
        self.password = Some(password.into());
        self
    }

    fn dbname(mut self, dbname: &str) -> Ask {
        self.dbname = dbname.into();
        self
    }

    fn sslmode(mut self, mode: &'static str) -> Ask {
        self.sslmode = Some(mode);
        self
    }

    fn rootcert(mut self, path: &Path) -> Ask {
        self.sslrootcert = Some(path.to_path_buf());
        self
    }

    fn client_cert(mut self, cert: &Path, key: &Path) -> Ask {
        self.sslcert = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    fn host(mut self, host: &str) -> Ask {
        self.host = host.into();
        self
    }

    fn query(mut self, query: &str) -> Ask {
        self.query = query.into();
        self
    }

    /// The check's table, as written in a config; the password comes
    /// from the environment variable PGPASSWORD, as the tools take it.
    fn table(&self, query: bool) -> String {
        let mut keys = vec![
            format!("host = {:?}", self.host),
            format!("port = {}", self.port),
            format!("user = {:?}", self.user),
            format!("dbname = {:?}", self.dbname),
        ];
        if let Some(mode) = self.sslmode {
            keys.push(format!("sslmode = {mode:?}"));
        }
        if let Some(root) = &self.sslrootcert {
            keys.push(format!("sslrootcert = {root:?}"));
        }
        if let Some((cert, key)) = &self.sslcert {
            keys.push(format!("sslcert = {cert:?}, sslkey = {key:?}"));
        }
        if let Some(t) = self.connect_timeout {
            keys.push(format!("connect_timeout = \"{t}s\""));
        }
        if query {
            keys.push(format!("query = {:?}", self.query));
            if self.password.is_some() {
                keys.push("password_env = \"PGPASSWORD\"".into());
            }
        }
        format!("{{ {} }}", keys.join(", "))
    }

    async fn native(&self, query: bool) -> Outcome {
        self.prepare(query).unwrap().run(TIMEOUT).await
    }

    /// The check, or why it cannot be prepared.
    fn prepare(&self, query: bool) -> Result<Check, String> {
        let text = format!(
            "[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\npostgres = {}\n",
            self.table(query)
        );
        let password = self.password.clone();
        let env = move |name: &str| (name == "PGPASSWORD").then(|| password.clone()).flatten();
        let config = Config::from_toml_str(&text, "test", &env).unwrap_or_else(|e| panic!("{e}"));
        Check::new("db", &config.checks[0].kind).map_err(|e| e.to_string())
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_remove("PGPASSWORD")
            .env_remove("PGSSLMODE")
            .env_remove("PGCONNECT_TIMEOUT")
            .env_remove("PGSSLROOTCERT")
            .env_remove("PGSSLCERT")
            .env_remove("PGSSLKEY")
            .env("PGPASSFILE", "/nonexistent")
            .stdin(Stdio::null());
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        if let Some(mode) = self.sslmode {
            cmd.env("PGSSLMODE", mode);
        }
        if let Some(t) = self.connect_timeout {
            cmd.env("PGCONNECT_TIMEOUT", t.to_string());
        }
        if let Some(root) = &self.sslrootcert {
            cmd.env("PGSSLROOTCERT", root);
        }
        if let Some((cert, key)) = &self.sslcert {
            cmd.env("PGSSLCERT", cert).env("PGSSLKEY", key);
        }
    }

    /// `pg_isready -h H -p P -U U -d D [-t T]`: exit status and output.
    fn pg_isready(&self) -> (i32, String) {
        let mut cmd = Command::new(tool("pg_isready"));
        cmd.args([
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
            "-d",
            &self.dbname,
        ]);
        if let Some(t) = self.connect_timeout {
            cmd.args(["-t", &t.to_string()]);
        }
        self.env(&mut cmd);
        run(cmd)
    }

    /// `psql -h H -p P -U U -d D -c QUERY`, without a password prompt
    /// (`-w`: a probe has no terminal to answer one; psql's exit status is
    /// the same either way).
    fn psql(&self) -> (i32, String) {
        let mut cmd = Command::new(tool("psql"));
        cmd.args([
            "-X",
            "-w",
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
        ])
        .args(["-d", &self.dbname, "-c", &self.query]);
        self.env(&mut cmd);
        run(cmd)
    }

    /// Asks the check as pg_isready and pg_isready itself; asserts that
    /// they agree and returns both.
    async fn as_pg_isready(&self) -> (Outcome, i32) {
        let (status, said) = self.pg_isready();
        let outcome = self.native(false).await;
        assert_eq!(
            outcome.verdict == Verdict::Success,
            status == 0,
            "pg_isready exited {status} ({said}), the check said {outcome:?}"
        );
        (outcome, status)
    }

    /// Both tools' exit statuses, each asserted to be the check's verdict.
    async fn verdicts(&self) -> (i32, i32) {
        (self.as_pg_isready().await.1, self.as_psql().await.1)
    }

    /// Asks the check as psql and psql itself; asserts that they agree.
    async fn as_psql(&self) -> (Outcome, i32) {
        let (status, said) = self.psql();
        let outcome = self.native(true).await;
        assert_eq!(
            outcome.verdict == Verdict::Success,
            status == 0,
            "psql exited {status} ({said}), the check said {outcome:?}"
        );
        (outcome, status)
    }
}

fn run(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text.trim().to_string())
}

fn pg_isready(port: u16, extra: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(tool("pg_isready"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
        .args(extra)
        .env("PGSSLMODE", "disable");
    run(cmd)
}

fn failed(outcome: &Outcome) -> Option<Reason> {
    (outcome.verdict == Verdict::Failure)
        .then_some(outcome.reason)
        .flatten()
}

#[tokio::test]
async fn up_with_trust_both_agree_and_pg_isready_words_are_kept() {
    let server = shared();
    let ask = Ask::tcp(server.port, "trusty");
    let (outcome, status) = ask.as_pg_isready().await;
    assert_eq!(status, 0);
    assert_eq!(
        outcome.message,
        format!("127.0.0.1:{} - accepting connections", server.port)
    );
    assert_eq!(ask.pg_isready().1, outcome.message, "pg_isready's own line");
    let (outcome, status) = ask.as_psql().await;
    assert_eq!(status, 0);
    assert_eq!(outcome.message, "SELECT 1: (1 row)");
}

#[tokio::test]
async fn passwords_right_wrong_and_missing_for_scram_md5_and_cleartext() {
    let server = shared();
    for (user, secret) in [
        ("scram", "scram-secret"),
        ("md5user", "md5-secret"),
        ("clear", "clear-secret"),
    ] {
        let right = Ask::tcp(server.port, user).password(secret);
        assert_eq!(right.as_pg_isready().await.1, 0, "{user}");
        let (outcome, status) = right.as_psql().await;
        assert_eq!(
            (status, outcome.verdict),
            (0, Verdict::Success),
            "{user}: {outcome:?}"
        );

        // pg_isready never logs in: a wrong or missing password is "up".
        let wrong = Ask::tcp(server.port, user).password("wrong");
        assert_eq!(wrong.as_pg_isready().await.1, 0, "{user}");
        let (outcome, status) = wrong.as_psql().await;
        assert_eq!(status, 2, "{user}");
        assert_eq!(failed(&outcome), Some(Reason::Auth), "{user}: {outcome:?}");
        assert!(
            outcome.message.contains("password authentication failed"),
            "{user}: {}",
            outcome.message
        );

        let missing = Ask::tcp(server.port, user);
        assert_eq!(missing.as_pg_isready().await.1, 0, "{user}");
        let (outcome, status) = missing.as_psql().await;
        assert_eq!(status, 2, "{user}");
        assert_eq!(failed(&outcome), Some(Reason::Auth), "{user}: {outcome:?}");
        assert!(
            outcome.message.ends_with("fe_sendauth: no password supplied"),
            "{}",
            outcome.message
        );
    }
}

#[tokio::test]
async fn an_unknown_database_or_user_is_up_for_pg_isready_and_down_for_psql() {
    let server = shared();
    let no_db = Ask::tcp(server.port, "trusty").dbname("nope");
    // With trust the server accepts the login before it looks for the
    // database: the authentication request alone says "up".
    assert_eq!(no_db.as_pg_isready().await.1, 0);
    let (outcome, status) = no_db.as_psql().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Reply), "{outcome:?}");

    let no_user = Ask::tcp(server.port, "nobody-such").password("x");
    assert_eq!(no_user.as_pg_isready().await.1, 0);
    let (outcome, status) = no_user.as_psql().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Auth), "{outcome:?}");
}

#[tokio::test]
async fn a_failing_query_is_psqls_exit_1() {
    let server = shared();
    let ask = Ask::tcp(server.port, "trusty").query("SELECT * FROM no_such_table");
    let (outcome, status) = ask.as_psql().await;
    assert_eq!(status, 1);
    assert_eq!(failed(&outcome), Some(Reason::Reply), "{outcome:?}");
    // psql's `ERROR:  relation ...`, its spaces folded as every message.
    assert_eq!(
        outcome.message,
        "ERROR: relation \"no_such_table\" does not exist"
    );
}

#[tokio::test]
async fn every_sslmode_against_a_server_with_tls() {
    let server = shared();
    for mode in ["disable", "prefer", "require"] {
        let ask = Ask::tcp(server.port, "scram")
            .password("scram-secret")
            .sslmode(mode);
        assert_eq!(ask.as_pg_isready().await.1, 0, "{mode}");
        assert_eq!(ask.as_psql().await.1, 0, "{mode}");
    }
}

/// libpq's verification, mode by mode, against the real tools: the CA
/// that signed the server's certificate or another one, host names
/// matched or not, a `hostssl`-only role, a client certificate. The
/// server's certificate is replaced (and the configuration reloaded) on
/// the way, so this is one test: no other test of the shared server
/// verifies its certificate.
#[tokio::test]
async fn sslmodes_that_verify_the_server_as_libpq_does() {
    let server = shared();
    let dir = &server.dir;
    let (ca, other) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
    let scram = |host: &str, mode: &'static str, root: &Path| {
        Ask::tcp(server.port, "scram")
            .password("scram-secret")
            .host(host)
            .sslmode(mode)
            .rootcert(root)
    };
    let modes = ["allow", "prefer", "require", "verify-ca", "verify-full"];

    // The CA that signed the certificate (SANs localhost and the IP
    // 127.0.0.1): every mode connects, by address and by name.
    for host in ["127.0.0.1", "localhost"] {
        for mode in modes {
            assert_eq!(scram(host, mode, &ca).verdicts().await, (0, 0), "{host} {mode}");
        }
    }

    // Another CA: with a root certificate libpq verifies the chain in
    // every mode. prefer goes on in plaintext after the failed handshake,
    // allow never needed TLS; require and the verify modes give up.
    for (mode, expected) in [
        ("allow", (0, 0)),
        ("prefer", (0, 0)),
        ("require", (2, 2)),
        ("verify-ca", (2, 2)),
        ("verify-full", (2, 2)),
    ] {
        let ask = scram("127.0.0.1", mode, &other);
        assert_eq!(ask.verdicts().await, expected, "{mode} with another CA");
        if expected.0 == 2 {
            let outcome = ask.native(false).await;
            assert_eq!(failed(&outcome), Some(Reason::Tls), "{outcome:?}");
        }
    }
    // A root certificate file that does not exist: libpq does not verify,
    // except in the verify modes, where the check does not start.
    let absent = dir.join("absent.crt");
    assert_eq!(scram("127.0.0.1", "require", &absent).verdicts().await, (0, 0));
    assert_eq!(scram("127.0.0.1", "verify-ca", &absent).psql().0, 2);
    let err = scram("127.0.0.1", "verify-ca", &absent)
        .prepare(true)
        .unwrap_err();
    assert!(err.contains("absent.crt\" does not exist"), "{err}");

    // A role refused without TLS: allow tries again with TLS and gets in;
    // with the wrong CA that try fails. prefer, after its failed
    // handshake, is refused in plaintext: an answer for pg_isready.
    let sslonly =
        |mode: &'static str, root: &Path| Ask::tcp(server.port, "sslonly").sslmode(mode).rootcert(root);
    assert_eq!(sslonly("allow", &ca).verdicts().await, (0, 0));
    assert_eq!(sslonly("allow", &other).verdicts().await.1, 2);
    assert_eq!(sslonly("prefer", &other).verdicts().await, (0, 2));
    let plaintext = Ask::tcp(server.port, "sslonly").sslmode("disable");
    assert_eq!(plaintext.verdicts().await, (0, 2));

    // A client certificate for the role that logs in with one.
    let certuser = Ask::tcp(server.port, "certuser")
        .sslmode("verify-full")
        .rootcert(&ca);
    assert_eq!(certuser.verdicts().await, (0, 2), "no client certificate");
    let with_cert = certuser
        .clone()
        .client_cert(&dir.join("client.crt"), &dir.join("client.key"));
    assert_eq!(with_cert.verdicts().await, (0, 0));
    // A key others may read: psql refuses it, and the check does not start.
    let open_key = dir.join("client-open.key");
    std::fs::copy(dir.join("client.key"), &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let open = certuser.clone().client_cert(&dir.join("client.crt"), &open_key);
    assert_eq!(open.psql().0, 2);
    let err = open.prepare(true).unwrap_err();
    assert!(err.contains("has group or world access"), "{err}");

    // A certificate for the name localhost alone: by address, verify-full
    // fails (no iPAddress name, and the CN is no address); verify-ca
    // does not look at names.
    let data = dir.join("data");
    // Serves certificate `name`, once psql's verify-full to `host` says it
    // does: refused, or (`refused` false) let in.
    let reload = |name: &'static str, host: &'static str, refused: bool| {
        use_certificate(&data, dir, name);
        server.sql("SELECT pg_reload_conf()");
        let (scram, ca) = (&scram, &ca);
        async move {
            eventually(Duration::from_secs(30), &format!("{name} served"), || async {
                (scram(host, "verify-full", ca).psql().0 != 0) == refused
            })
            .await;
        }
    };
    reload("server-dns", "127.0.0.1", true).await;
    assert_eq!(scram("127.0.0.1", "verify-full", &ca).verdicts().await, (2, 2));
    let outcome = scram("127.0.0.1", "verify-full", &ca).native(false).await;
    assert!(
        outcome.message.contains(
            "server certificate for \"localhost\" (and 1 other name) does not match host name \"127.0.0.1\""
        ),
        "libpq's words: {}",
        outcome.message
    );
    assert_eq!(scram("localhost", "verify-full", &ca).verdicts().await, (0, 0));
    assert_eq!(scram("127.0.0.1", "verify-ca", &ca).verdicts().await, (0, 0));

    // No SAN at all, the CN 127.0.0.1: libpq compares the CN (which
    // webpki's own name check never does).
    reload("server-cn", "localhost", true).await;
    assert_eq!(scram("127.0.0.1", "verify-full", &ca).verdicts().await, (0, 0));
    assert_eq!(scram("localhost", "verify-full", &ca).verdicts().await, (2, 2));

    reload("server-ip", "localhost", false).await;
}

#[tokio::test]
async fn over_the_unix_socket() {
    let server = shared();
    let mut ask = Ask::tcp(server.port, "trusty");
    ask.host = server.sockets().display().to_string();
    let (outcome, status) = ask.as_pg_isready().await;
    assert_eq!(status, 0);
    assert_eq!(ask.pg_isready().1, outcome.message, "pg_isready's own line");
    assert_eq!(ask.as_psql().await.1, 0);

    // A socket directory with no server in it.
    ask.host = server.dir.join("data").display().to_string();
    let (outcome, status) = ask.as_pg_isready().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Refused), "{outcome:?}");
    assert_eq!(ask.as_psql().await.1, 2);
}

#[tokio::test]
async fn not_running_is_no_response() {
    let (_socket, port) = refusing_port();
    let ask = Ask::tcp(port, "trusty");
    let (outcome, status) = ask.as_pg_isready().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Refused));
    assert!(
        outcome
            .message
            .starts_with(&format!("127.0.0.1:{port} - no response")),
        "{}",
        outcome.message
    );
    let (outcome, status) = ask.as_psql().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Refused));
}

/// The states that change the server, in order, on a server of their own.
#[tokio::test]
async fn states_that_change_the_server_in_order() {
    let dir = tempfile::Builder::new().prefix("hp-pg-").tempdir().unwrap();
    init(dir.path());
    let mut server = Server::start(
        dir.path(),
        &["max_connections=3", "superuser_reserved_connections=0"],
        0,
    );
    server.sql("CREATE ROLE trusty LOGIN");
    server.sql("CREATE ROLE scram LOGIN PASSWORD 'scram-secret'");
    let ask = Ask::tcp(server.port, "trusty");

    // TLS required of a server without it: psql and pg_isready both give
    // up before the server says a word.
    let tls = ask.clone().sslmode("require");
    let (outcome, status) = tls.as_pg_isready().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Tls), "{outcome:?}");
    assert_eq!(tls.as_psql().await.1, 2);
    // Every mode, with a root certificate: allow and prefer go on in
    // plaintext, the others give up.
    let ca = dir.path().join("ca.crt");
    for (mode, expected) in [
        ("allow", (0, 0)),
        ("prefer", (0, 0)),
        ("require", (2, 2)),
        ("verify-ca", (2, 2)),
        ("verify-full", (2, 2)),
    ] {
        let ask = ask.clone().sslmode(mode).rootcert(&ca);
        assert_eq!(
            ask.verdicts().await,
            expected,
            "{mode} against a server without TLS"
        );
    }

    // Connections exhausted: "sorry, too many clients already" (53300)
    // is an answer, so pg_isready says up and psql fails.
    {
        let _held: Vec<Session> = (0..3).map(|_| server.session("trusty")).collect();
        let (outcome, status) = ask.as_pg_isready().await;
        assert_eq!(status, 0);
        assert!(
            outcome.message.contains("too many clients"),
            "{}",
            outcome.message
        );
        let (outcome, status) = ask.as_psql().await;
        assert_eq!(status, 2);
        assert_eq!(failed(&outcome), Some(Reason::Reply), "{outcome:?}");
        converted("connections exhausted", server.port).await;
    }
    eventually(
        Duration::from_secs(30),
        "a connection slot free again",
        || async { ask.psql().0 == 0 },
    )
    .await;

    // Frozen: the kernel accepts the connection, nobody answers.
    server.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut frozen = ask.clone();
    frozen.connect_timeout = Some(2);
    let (outcome, status) = frozen.as_pg_isready().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Timeout), "{outcome:?}");
    let (outcome, status) = frozen.as_psql().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Timeout), "{outcome:?}");
    converted("frozen", server.port).await;
    server.signal(nix::sys::signal::Signal::SIGCONT);
    eventually(Duration::from_secs(30), "the server answering again", || async {
        ask.pg_isready().0 == 0
    })
    .await;

    // Shutting down (smart) while a client stays attached: 57P03.
    {
        let _client = server.session("trusty");
        server.signal(nix::sys::signal::Signal::SIGTERM);
        eventually(Duration::from_secs(30), "the shutdown to begin", || async {
            ask.pg_isready().0 == 1
        })
        .await;
        let (outcome, status) = ask.as_pg_isready().await;
        assert_eq!(status, 1);
        assert_eq!(failed(&outcome), Some(Reason::Rejecting), "{outcome:?}");
        assert!(
            outcome
                .message
                .starts_with(&format!("127.0.0.1:{} - rejecting connections", server.port)),
            "{}",
            outcome.message
        );
        let (outcome, status) = ask.as_psql().await;
        assert_eq!(status, 2);
        assert_eq!(failed(&outcome), Some(Reason::Rejecting), "{outcome:?}");
        converted("shutting down with a client attached", server.port).await;
    }
    let exited = server.postmaster.wait().unwrap();
    assert!(exited.success(), "smart shutdown: {exited}");

    // In recovery without hot standby: a standby with no primary waits
    // for WAL for ever, and every connection gets 57P03.
    std::fs::write(dir.path().join("data/standby.signal"), "").unwrap();
    chown_to_server_user(&dir.path().join("data/standby.signal"));
    let server = Server::start(dir.path(), &["hot_standby=off"], 1);
    let ask = Ask::tcp(server.port, "trusty");
    let (outcome, status) = ask.as_pg_isready().await;
    assert_eq!(status, 1);
    assert_eq!(failed(&outcome), Some(Reason::Rejecting), "{outcome:?}");
    let (outcome, status) = ask.as_psql().await;
    assert_eq!(status, 2);
    assert_eq!(failed(&outcome), Some(Reason::Rejecting), "{outcome:?}");
    converted("in recovery without hot standby", server.port).await;
}

/// The exec probes `inject` converts, in the same state
/// (tests/it/exec_convert_e2e.rs).
async fn converted(state: &str, port: u16) {
    #[cfg(feature = "inject")]
    crate::exec_convert_e2e::postgres(state, port, Some("scram-secret")).await;
    #[cfg(not(feature = "inject"))]
    let _ = (state, port);
}

#[tokio::test]
async fn wait_returns_once_the_server_accepts_connections() {
    let server = shared();
    let target = format!("trusty@127.0.0.1:{}/postgres", server.port);
    let (code, stderr) = crate::support::run_binary(
        &["wait", "--postgres", &target, "--timeout", "10s"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("postgres {target} is up")), "{stderr}");

    let (_socket, port) = refusing_port();
    let target = format!("127.0.0.1:{port}");
    let (code, stderr) = crate::support::run_binary(
        &[
            "wait",
            "--postgres",
            &target,
            "--timeout",
            "1s",
            "--interval",
            "200ms",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no response"), "{stderr}");
}

/// A port where something else answers: an HTTP server's reply to the
/// SSL request, or an authentication request that is no such thing.
#[tokio::test]
async fn a_server_that_is_not_postgresql_is_no_response() {
    for (name, reply) in [
        ("http", b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ("oversized auth request", {
            let mut r = b"NR".to_vec();
            r.extend_from_slice(&4000u32.to_be_bytes());
            r.extend_from_slice(&[0; 3996]);
            r
        }),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // pg_isready, then the check: each connection gets the reply
            // once the client has spoken.
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut first = [0u8; 8];
                let _ = std::io::Read::read_exact(&mut stream, &mut first);
                if !reply.starts_with(b"HTTP") {
                    // After 'N' to the SSL request, wait for the startup packet.
                    let mut len = [0u8; 4];
                    let _ = std::io::Write::write_all(&mut stream, &reply[..1]);
                    let _ = std::io::Read::read_exact(&mut stream, &mut len);
                    let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                    let _ = std::io::Read::read_exact(&mut stream, &mut rest);
                    let _ = std::io::Write::write_all(&mut stream, &reply[1..]);
                } else {
                    let _ = std::io::Write::write_all(&mut stream, &reply);
                }
            }
        });
        let ask = Ask::tcp(port, "trusty");
        let (outcome, status) = ask.as_pg_isready().await;
        assert_eq!(status, 2, "{name}");
        assert_eq!(failed(&outcome), Some(Reason::Protocol), "{name}: {outcome:?}");
        server.join().unwrap();
    }
}

/// A password file is read at every run: a rotated Secret is used at
/// once, and a file that cannot be read makes the run Unknown (the app
/// was not checked).
#[tokio::test]
async fn a_password_file_is_read_at_every_run() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "scram-secret\n").unwrap();
    let text = format!(
        "[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\n\
         postgres = {{ port = {}, user = \"scram\", dbname = \"postgres\", query = \"SELECT 1\", password_file = {:?} }}\n",
        server.port,
        file.display().to_string()
    );
    let config = Config::from_toml_str(&text, "test", &|_: &str| None).unwrap();
    let check = Check::new("db", &config.checks[0].kind).unwrap();
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);
    std::fs::write(&file, "rotated-away").unwrap();
    let outcome = check.run(TIMEOUT).await;
    assert_eq!(failed(&outcome), Some(Reason::Auth), "{outcome:?}");
    assert!(!outcome.message.contains("rotated-away"), "{}", outcome.message);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Unknown);
}

/// `passfile`: a password file read as libpq reads `PGPASSFILE`, beside
/// `psql -w` given the same file, line by line (first match wins, `*`,
/// comments, escapes) and with a mode libpq ignores.
#[tokio::test]
async fn a_passfile_gives_the_password_psql_takes_from_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = shared();
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    let right = format!("127.0.0.1:{port}:postgres:scram:scram-secret\n");
    let cases = [
        ("a matching line", right.clone(), 0o600),
        (
            "wildcards, after a line for another user",
            "*:*:*:md5user:md5-secret\n*:*:*:scram:scram-secret\n".to_string(),
            0o600,
        ),
        (
            "the first match is wrong",
            format!("127.0.0.1:{port}:*:scram:wrong\n{right}"),
            0o400,
        ),
        (
            "no line for this port",
            "127.0.0.1:1:postgres:scram:scram-secret\n".into(),
            0o600,
        ),
        ("the line commented out", format!("#{right}"), 0o600),
        (
            "localhost is not 127.0.0.1",
            format!("localhost:{port}:postgres:scram:scram-secret\n"),
            0o600,
        ),
        (
            "an escaped field",
            format!("127.0.0.1:{port}:post\\gres:scram:scram-secret\r\n"),
            0o600,
        ),
        ("readable by the group: ignored", right.clone(), 0o640),
        (
            "an empty password",
            format!("127.0.0.1:{port}:postgres:scram:\n"),
            0o600,
        ),
    ];
    let mut verdicts = Vec::new();
    for (state, text, mode) in cases {
        std::fs::write(&file, &text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut psql = Command::new(tool("psql"));
        psql.args(["-X", "-w", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "scram", "-d", "postgres", "-c", "SELECT 1"])
            .env_remove("PGPASSWORD")
            .env("PGSSLMODE", "disable")
            .env("PGPASSFILE", &file)
            .stdin(Stdio::null());
        let (status, said) = run(psql);
        let config = format!(
            "[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\n\
             postgres = {{ port = {port}, user = \"scram\", dbname = \"postgres\", sslmode = \"disable\", query = \"SELECT 1\", passfile = {:?} }}\n",
            file.display().to_string()
        );
        let config = Config::from_toml_str(&config, "test", &|_: &str| None).unwrap();
        let outcome = Check::new("db", &config.checks[0].kind)
            .unwrap()
            .run(TIMEOUT)
            .await;
        assert_eq!(
            outcome.verdict == Verdict::Success,
            status == 0,
            "{state}: psql exited {status} ({said}), the check said {outcome:?}"
        );
        verdicts.push(status == 0);
    }
    // The cases are what they say: psql logged in with the first two and
    // the escaped field only.
    assert_eq!(
        verdicts,
        [true, true, false, false, false, false, true, false, false]
    );
}

/// Rows larger than the 10 KiB kept of a message are read and dropped,
/// never kept: the query passes as psql's does.
#[tokio::test]
async fn rows_larger_than_the_bound_are_dropped_unkept() {
    let server = shared();
    let ask = Ask::tcp(server.port, "trusty").query("SELECT repeat('x', 1000000) FROM generate_series(1, 4)");
    let (outcome, status) = ask.as_psql().await;
    assert_eq!(status, 0);
    assert_eq!(
        outcome.message,
        "SELECT repeat('x', 1000000) FROM generate_series(1, 4): (4 rows)"
    );
}
