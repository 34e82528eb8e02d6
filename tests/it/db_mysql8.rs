//! The `mysql` check's `caching_sha2_password` (MySQL 8's default login)
//! against a MySQL 8.0 handshake scripted here, with Debian's real
//! `mariadb-admin` and `mariadb` run against the same server as oracles.
//!
//! Why not a real server: Debian ships no MySQL 8 (only MariaDB, whose
//! server has no `caching_sha2_password`), and no package here provides
//! one; the real client does have the plugin
//! (`/usr/lib/x86_64-linux-gnu/libmariadb3/plugin/caching_sha2_password.so`).
//! So the server's side is written from MySQL 8.0's protocol
//! (`sql/auth/sha2_password.cc`): a greeting offering
//! `caching_sha2_password` (and TLS, or not), the switch from the
//! client's first `mysql_native_password` answer, the fast path (`0x01
//! 0x03`, then OK) when its cache knows the user and the scramble matches,
//! else full authentication (`0x01 0x04`): the password in clear over TLS,
//! or the RSA public key on request (`0x02`) and the password encrypted
//! with it (decrypted here by the openssl command), a cleartext password
//! on a plain connection refused. Every verdict of the check is asserted
//! equal to the real tool's, which runs the real plugin.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthproxy::check::{MysqlCheck, Outcome};
use healthproxy::config::{Credential, Host, MysqlCommand, MysqlSpec};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::oracle::{Ran, agree, sh};

const BOUND: Duration = Duration::from_secs(4);
const PASSWORD: &str = "s3cret";
const SCRAMBLE: &[u8; 20] = b"abcdefghij0123456789";
const SHA2: &str = "caching_sha2_password";

/// How the scripted server behaves.
#[derive(Clone, Copy)]
struct Script {
    /// The greeting offers CLIENT_SSL.
    tls: bool,
    /// Its cache knows the user: a matching scramble passes at once.
    cached: bool,
    /// The method the greeting names (the server's
    /// `default_authentication_plugin`); the user's is always
    /// caching_sha2_password.
    default: &'static str,
}

/// What the server saw, for the test to assert the paths were taken.
type Seen = Arc<Mutex<Vec<&'static str>>>;

/// A scripted MySQL 8.0 on 127.0.0.1, stopped on drop.
struct Mysql8 {
    port: u16,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mysql8 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The RSA key pair (openssl) and a TLS certificate (rcgen) of the
/// scripted servers.
struct Keys {
    private: PathBuf,
    public: Vec<u8>,
    tls: TlsAcceptor,
}

fn keys(dir: &Path) -> Arc<Keys> {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private.to_str().unwrap(),
    ]);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
    let key = PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes()).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(Keys {
        private,
        public: std::fs::read(&public).unwrap(),
        tls: TlsAcceptor::from(Arc::new(config)),
    })
}

impl Mysql8 {
    async fn start(script: Script, keys: Arc<Keys>) -> Mysql8 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Seen::default();
        let log = Arc::clone(&seen);
        // The sessions live in a set the accept task owns: aborting the
        // task on drop ends them with it.
        let task = tokio::spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (keys, log) = (Arc::clone(&keys), Arc::clone(&log));
                sessions.spawn(async move {
                    let _ = session(tcp, script, &keys, &log).await;
                });
                while sessions.try_join_next().is_some() {}
            }
        });
        Mysql8 { port, seen, task }
    }

    fn saw(&self, what: &str) -> bool {
        self.seen.lock().unwrap().contains(&what)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn read_packet(s: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((head[3], body))
}

async fn write_packet(s: &mut (impl AsyncWrite + Unpin), seq: u8, body: &[u8]) -> std::io::Result<()> {
    let mut p = (body.len() as u32).to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend_from_slice(body);
    s.write_all(&p).await
}

const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

fn denied() -> Vec<u8> {
    let mut p = vec![0xff, 0x15, 0x04, b'#'];
    p.extend_from_slice(b"28000Access denied for user 'probe'@'localhost' (using password: YES)");
    p
}

/// caching_sha2_password's scramble, computed as the server checks it.
fn sha2_scramble(password: &[u8]) -> Vec<u8> {
    use ::ring::digest::{SHA256, digest};
    let d1 = digest(&SHA256, password);
    let d2 = digest(&SHA256, d1.as_ref());
    let mut ctx = ::ring::digest::Context::new(&SHA256);
    ctx.update(d2.as_ref());
    ctx.update(SCRAMBLE);
    let d3 = ctx.finish();
    d1.as_ref().iter().zip(d3.as_ref()).map(|(a, b)| a ^ b).collect()
}

/// The password the client encrypted: openssl decrypts it (OAEP, SHA-1),
/// then the scramble is XORed away and the NUL dropped.
fn rsa_decrypt(keys: &Keys, encrypted: &[u8]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, encrypted).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "pkeyutl",
            "-decrypt",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-inkey",
        ])
        .arg(&keys.private)
        .arg("-in")
        .arg(&input)
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let mut plain: Vec<u8> = out
        .stdout
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ SCRAMBLE[i % 20])
        .collect();
    (plain.pop() == Some(0)).then_some(plain)
}

/// One client's session: handshake, login, then commands until COM_QUIT.
async fn session(mut tcp: TcpStream, script: Script, keys: &Keys, seen: &Seen) -> std::io::Result<()> {
    let log = |what| seen.lock().unwrap().push(what);
    // CLIENT_MYSQL (long password), long flag, with db, protocol 4.1,
    // transactions, secure connection, multi statements and results,
    // plugin auth, lenenc auth data; CLIENT_SSL when offered.
    let mut caps: u32 = 1 | 4 | 8 | 0x200 | 0x2000 | 0x8000 | 0x1_0000 | 0x2_0000 | 0x8_0000 | 0x20_0000;
    if script.tls {
        caps |= 0x800;
    }
    let mut greeting = vec![10];
    greeting.extend_from_slice(b"8.0.36\0");
    greeting.extend_from_slice(&7u32.to_le_bytes());
    greeting.extend_from_slice(&SCRAMBLE[..8]);
    greeting.push(0);
    greeting.extend_from_slice(&(caps as u16).to_le_bytes());
    greeting.push(255);
    greeting.extend_from_slice(&2u16.to_le_bytes());
    greeting.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    greeting.push(21);
    greeting.extend_from_slice(&[0; 10]);
    greeting.extend_from_slice(&SCRAMBLE[8..]);
    greeting.push(0);
    greeting.extend_from_slice(script.default.as_bytes());
    greeting.push(0);
    write_packet(&mut tcp, 0, &greeting).await?;
    let (mut seq, mut response) = read_packet(&mut tcp).await?;
    let client_caps = u32::from_le_bytes(response[..4].try_into().unwrap());
    let secure = script.tls && client_caps & 0x800 != 0;
    let mut s: Box<dyn Io> = if secure {
        let tls = keys.tls.accept(tcp).await?;
        log("tls");
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    if secure {
        (seq, response) = read_packet(&mut s).await?;
    }
    // user NUL, auth data (one length byte), [db NUL], plugin NUL.
    let rest = &response[32..];
    let user_end = rest.iter().position(|b| *b == 0).unwrap();
    let rest = &rest[user_end + 1..];
    let auth_len = usize::from(rest[0]);
    let mut answer = rest[1..1 + auth_len].to_vec();
    let mut rest = &rest[1 + auth_len..];
    if client_caps & 8 != 0 {
        let end = rest.iter().position(|b| *b == 0).unwrap();
        rest = &rest[end + 1..];
    }
    let plugin = rest.split(|b| *b == 0).next().unwrap_or_default();
    seq = seq.wrapping_add(1);
    if plugin != b"caching_sha2_password" {
        // The client began with another method: switch to this one.
        log("switch");
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"caching_sha2_password\0");
        switch.extend_from_slice(SCRAMBLE);
        switch.push(0);
        write_packet(&mut s, seq, &switch).await?;
        let n;
        (n, answer) = read_packet(&mut s).await?;
        seq = n.wrapping_add(1);
    }
    let verdict: Vec<u8> = if answer.is_empty() {
        denied()
    } else if script.cached && answer == sha2_scramble(PASSWORD.as_bytes()) {
        log("fast");
        write_packet(&mut s, seq, &[1, 3]).await?;
        seq = seq.wrapping_add(1);
        OK.to_vec()
    } else {
        write_packet(&mut s, seq, &[1, 4]).await?;
        let (n, full) = read_packet(&mut s).await?;
        seq = n.wrapping_add(1);
        if secure {
            log("full over tls");
            if full.strip_suffix(&[0]) == Some(PASSWORD.as_bytes()) {
                OK.to_vec()
            } else {
                denied()
            }
        } else if full == [2] {
            let mut key = vec![1];
            key.extend_from_slice(&keys.public);
            write_packet(&mut s, seq, &key).await?;
            let (n, encrypted) = read_packet(&mut s).await?;
            seq = n.wrapping_add(1);
            log("full over rsa");
            if rsa_decrypt(keys, &encrypted).as_deref() == Some(PASSWORD.as_bytes()) {
                OK.to_vec()
            } else {
                denied()
            }
        } else {
            // MySQL decrypts whatever comes with its private key: a
            // password in clear fails.
            if full.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()) {
                log("password in clear");
            }
            log("clear text refused");
            denied()
        }
    };
    write_packet(&mut s, seq, &verdict).await?;
    if verdict[0] != 0 {
        return Ok(());
    }
    loop {
        let (_, command) = read_packet(&mut s).await?;
        match command.first() {
            Some(0x01) | None => return Ok(()),
            Some(0x09) => {
                write_packet(&mut s, 1, b"Uptime: 1  Threads: 1  Questions: 1  Slow queries: 0  Opens: 1  Open tables: 1  Queries per second avg: 1.000").await?
            }
            Some(0x03) => {
                // One column "1", one row "1".
                write_packet(&mut s, 1, &[1]).await?;
                let mut column = Vec::new();
                for text in ["def", "", "", "", "1", ""] {
                    column.push(text.len() as u8);
                    column.extend_from_slice(text.as_bytes());
                }
                column.extend_from_slice(&[0x0c, 63, 0, 1, 0, 0, 0, 8, 0x81, 0, 0, 0, 0]);
                write_packet(&mut s, 2, &column).await?;
                write_packet(&mut s, 3, &[0xfe, 0, 0, 2, 0]).await?;
                write_packet(&mut s, 4, &[1, b'1']).await?;
                write_packet(&mut s, 5, &[0xfe, 0, 0, 2, 0]).await?;
            }
            Some(_) => write_packet(&mut s, 1, OK).await?,
        }
    }
}

fn spec(port: u16, command: MysqlCommand, password: &str, skip_ssl: bool) -> MysqlSpec {
    MysqlSpec {
        host: Host {
            name: "127.0.0.1".into(),
            from_env: None,
        },
        port,
        user: Some(Credential::Given("probe".into())),
        password: Some(Credential::Given(password.into())),
        database: None,
        command,
        skip_ssl,
        ca_file: None,
        cert_file: None,
        key_file: None,
        verify_server_cert: false,
    }
}

/// `mariadb-admin ping`, `mariadb-admin status` and `mariadb -e` with
/// `password`, with `--skip-ssl` or not, each beside its check.
async fn compare(state: &str, port: u16, password: &str, skip_ssl: bool) -> Vec<(Ran, Outcome)> {
    let args = format!(
        "--no-defaults -h 127.0.0.1 -P {port} -u probe -p{password}{}",
        if skip_ssl { " --skip-ssl" } else { "" }
    );
    let one = |form: String, command: MysqlCommand| {
        let spec = spec(port, command, password, skip_ssl);
        async move {
            let check = MysqlCheck::new(spec).unwrap();
            let (real, ours) = tokio::join!(sh(&form, &[], BOUND), check.run(BOUND));
            agree(state, &form, &real, &ours);
            (real, ours)
        }
    };
    let (ping, status, query) = tokio::join!(
        one(format!("mariadb-admin {args} ping"), MysqlCommand::Ping),
        one(format!("mariadb-admin {args} status"), MysqlCommand::Status),
        one(
            format!("mariadb {args} -e 'SELECT 1'"),
            MysqlCommand::Query("SELECT 1".into())
        ),
    );
    vec![ping, status, query]
}

/// Whether a ping passed and the logins failed, for tool and check.
fn only_ping_passes(ran: &[(Ran, Outcome)]) -> bool {
    ran[0].0.passed()
        && ran[0].1.verdict.is_success()
        && ran[1..]
            .iter()
            .all(|(r, o)| !r.passed() && !o.verdict.is_success())
}

fn all_pass(ran: &[(Ran, Outcome)]) -> bool {
    ran.iter().all(|(r, o)| r.passed() && o.verdict.is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_password_gives_the_mariadb_clients_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let start = |script| Mysql8::start(script, Arc::clone(&keys));

    // Over TLS, the user in the server's cache: the fast path.
    let server = start(Script {
        tls: true,
        cached: true,
        default: SHA2,
    })
    .await;
    let ran = compare("fast auth over TLS", server.port, PASSWORD, false).await;
    assert!(
        all_pass(&ran) && server.saw("tls") && server.saw("fast"),
        "{ran:?}"
    );
    // A wrong password misses the cache: full authentication refuses it.
    let ran = compare("a wrong password over TLS", server.port, "wrong", false).await;
    assert!(only_ping_passes(&ran) && server.saw("full over tls"), "{ran:?}");
    drop(server);

    // Over TLS, not cached: the password in clear, inside TLS.
    let server = start(Script {
        tls: true,
        cached: false,
        default: SHA2,
    })
    .await;
    let ran = compare("full auth over TLS", server.port, PASSWORD, false).await;
    assert!(all_pass(&ran) && server.saw("full over tls"), "{ran:?}");
    // --skip-ssl: the server's RSA key, asked for.
    let ran = compare("full auth with RSA", server.port, PASSWORD, true).await;
    assert!(all_pass(&ran) && server.saw("full over rsa"), "{ran:?}");
    let ran = compare("a wrong password with RSA", server.port, "wrong", true).await;
    assert!(only_ping_passes(&ran), "{ran:?}");
    drop(server);

    // A server without TLS: without --skip-ssl the client still counts
    // the connection as secure and sends the password in clear, which
    // the server refuses; with it, RSA.
    let server = start(Script {
        tls: false,
        cached: false,
        default: SHA2,
    })
    .await;
    let ran = compare("full auth, no TLS offered", server.port, PASSWORD, false).await;
    assert!(
        only_ping_passes(&ran) && server.saw("clear text refused") && !server.saw("tls"),
        "{ran:?}"
    );
    assert!(server.saw("password in clear"), "the tools send it in clear");
    drop(server);
    // The check gets the same refusal without putting the password on
    // the wire.
    let server = start(Script {
        tls: false,
        cached: false,
        default: SHA2,
    })
    .await;
    let ours = MysqlCheck::new(spec(server.port, MysqlCommand::Status, PASSWORD, false))
        .unwrap()
        .run(BOUND)
        .await;
    assert!(!ours.verdict.is_success(), "{ours:?}");
    assert!(
        server.saw("clear text refused") && !server.saw("password in clear"),
        "{ours:?}"
    );
    let ran = compare("full auth, no TLS, --skip-ssl", server.port, PASSWORD, true).await;
    assert!(all_pass(&ran) && server.saw("full over rsa"), "{ran:?}");
    drop(server);

    // A server whose default method is mysql_native_password, for a user
    // of caching_sha2_password: the client begins with the default, and
    // the server switches it.
    let server = start(Script {
        tls: true,
        cached: true,
        default: "mysql_native_password",
    })
    .await;
    let ran = compare("switched to caching_sha2_password", server.port, PASSWORD, false).await;
    assert!(
        all_pass(&ran) && server.saw("switch") && server.saw("fast"),
        "{ran:?}"
    );
    let ran = compare("switched, a wrong password", server.port, "wrong", false).await;
    assert!(only_ping_passes(&ran), "{ran:?}");
    // The fast path needs no secure connection.
    let ran = compare("switched, fast auth, --skip-ssl", server.port, PASSWORD, true).await;
    assert!(all_pass(&ran) && !server.saw("full over rsa"), "{ran:?}");
}
