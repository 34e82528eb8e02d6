//! `postgres`: a PostgreSQL server as `pg_isready` sees it (no `query`),
//! or as `psql -c QUERY` does (with one).
//!
//! **As `pg_isready`** (postgres `src/bin/scripts/pg_isready.c`, libpq
//! `internal_ping()` in `src/interfaces/libpq/fe-connect.c`): the check
//! never logs in. It sends the startup packet and reads the first answer:
//! any authentication request means the server is up, whatever the
//! method; an error with any SQLSTATE but 57P03 means up too (a wrong
//! user or database, too many clients: the server answered); 57P03
//! (`cannot_connect_now`: starting up, shutting down, in recovery without
//! hot standby) is "rejecting connections", pg_isready's exit 1; no
//! answer, or an answer without a SQLSTATE, is "no response", exit 2.
//! Both are failures here, with the reasons `rejecting` and the transport's.
//!
//! **As `psql -c QUERY`** (`src/bin/psql/startup.c`): a real login
//! (trust, cleartext password, MD5, SCRAM-SHA-256) then the query with the
//! simple query protocol. Any connection error is psql's exit 2, an error
//! from the query its exit 1; both fail the check, with the reasons
//! `auth` (a password refused, an unknown user), `rejecting` (57P03) or
//! `reply` (any other error: an unknown database, too many clients, the
//! query's own).
//!
//! As libpq: `sslmode = "prefer"` (the default) asks for TLS and goes on
//! in plaintext if the server has none or the handshake fails, and
//! retries once in plaintext if the server refuses the login over TLS;
//! `allow` starts in plaintext and retries once with TLS if the server
//! refuses it; `require`, `verify-ca` and `verify-full` insist. What is
//! verified, and how, is `tls`'s (libpq's `initialize_SSL`) and
//! `names`' (verify-full's host-name rule). A Unix socket never uses TLS.
//!
//! Hand-written rather than a client crate: the ping needs what a client
//! hides (the first message, before any authentication), the login is
//! four message types, and SCRAM takes its keys from ring, which rustls
//! already brings (Cargo.toml, docs/native-checks.md).

mod auth;
mod frame;
mod names;
mod passfile;
mod tls;

use std::time::Duration;

use super::{Failed, Outcome, Reason, Resolver, describe_io, note_exhaustion, wire};
use crate::config::{PgAddress, PostgresSpec, SslMode};
use crate::whole_ms;
use frame::{Conn, ServerError, WireError};

/// The `application_name` sent, as pg_isready and psql send theirs.
const APPLICATION: &str = "healthproxy";

/// The SQLSTATE of "the database system is starting up / shutting down /
/// not accepting connections": `ERRCODE_CANNOT_CONNECT_NOW`.
const CANNOT_CONNECT_NOW: &str = "57P03";

/// The longest authentication request body libpq reads as one
/// (fe-connect.c: `beresp == 'R' && (msgLength < 8 || msgLength > 2000)`
/// is "expected authentication request from server"; the length counts
/// its own four bytes).
const MAX_AUTH_REQUEST: usize = 1996;

/// A prepared `postgres` check.
#[derive(Debug)]
pub struct PostgresCheck {
    spec: PostgresSpec,
    resolver: Resolver,
    /// TLS settings, for every `sslmode` but `disable`, over TCP.
    tls: Option<tls::PgTls>,
    /// SCRAM keys kept from the last login.
    keys: auth::KeyCache,
}

/// The answer of a ping, as libpq's `PGPing`.
enum Ping {
    /// `PQPING_OK`; the error the server answered, if it did.
    Accepting(Option<ServerError>),
    /// `PQPING_REJECT`.
    Rejecting(ServerError),
    /// `PQPING_NO_RESPONSE`.
    NoResponse(Failed),
}

/// Why a login failed.
enum Login {
    /// The server said no; whether it said so before accepting the
    /// authentication (libpq's `prefer` then retries without TLS).
    Server(ServerError, bool),
    /// Anything else.
    Failed(Failed),
}

impl From<Failed> for Login {
    fn from(f: Failed) -> Self {
        Login::Failed(f)
    }
}

impl PostgresCheck {
    /// Prepares the check: its TLS settings, for every mode but
    /// `disable`.
    pub(crate) fn new(spec: PostgresSpec) -> Result<Self, String> {
        let tls = match (&spec.address, spec.sslmode) {
            (_, SslMode::Disable) | (PgAddress::Socket(_), _) => None,
            (PgAddress::Tcp(host), mode) => Some(tls::PgTls::new(
                mode,
                &host.name,
                spec.sslrootcert.clone(),
                spec.sslcert.clone(),
            )?),
        };
        Ok(PostgresCheck {
            spec,
            resolver: Resolver::default(),
            tls,
            keys: auth::KeyCache::default(),
        })
    }

    /// Asks once, bounded by `timeout` (and `connect_timeout`, for the
    /// connection).
    pub(crate) async fn run(&self, timeout: Duration) -> Outcome {
        let connect = self.spec.connect_timeout.map_or(timeout, |c| c.min(timeout));
        match &self.spec.query {
            None => self.ping(connect).await,
            Some(query) => match tokio::time::timeout(timeout, self.query(query, connect)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::failure(
                    Reason::Timeout,
                    format!("query did not complete within {}", whole_ms(timeout)),
                ),
            },
        }
    }

    /// pg_isready: `HOST:PORT - accepting connections`.
    async fn ping(&self, bound: Duration) -> Outcome {
        let shown = self.spec.shown();
        let ping = match tokio::time::timeout(bound, self.ping_once()).await {
            Ok(ping) => ping,
            Err(_) => Ping::NoResponse(Failed::new(
                Reason::Timeout,
                format!("timeout expired after {}", whole_ms(bound)),
            )),
        };
        match ping {
            Ping::Accepting(None) => Outcome::success(format!("{shown} - accepting connections")),
            Ping::Accepting(Some(said)) => Outcome::success(format!(
                "{shown} - accepting connections (the server answered {said})"
            )),
            Ping::Rejecting(said) => Outcome::failure(
                Reason::Rejecting,
                format!("{shown} - rejecting connections: {said}"),
            ),
            Ping::NoResponse(why) => {
                Outcome::failure(why.reason, format!("{shown} - no response: {}", why.message))
            }
        }
    }

    async fn ping_once(&self) -> Ping {
        let mut ssl = self.first_ssl();
        let mut retried = false;
        loop {
            let (mut conn, tls) = match self.open(ssl).await {
                Ok(opened) => opened,
                Err(why) => return Ping::NoResponse(why),
            };
            let said = loop {
                match conn.read().await {
                    // Any authentication request: the server is up
                    // (internal_ping: `auth_req_received`), once libpq
                    // has taken it for one: 8 to 2000 bytes long.
                    Ok((b'R', body)) if (4..=MAX_AUTH_REQUEST).contains(&body.len()) => {
                        return Ping::Accepting(None);
                    }
                    Ok((b'E', body)) => break ServerError::parse(body),
                    Ok((b'N', _)) => continue,
                    Ok((tag, _)) => {
                        return Ping::NoResponse(Failed::new(
                            Reason::Protocol,
                            format!(
                                "expected authentication request from server, but received {}",
                                tag as char
                            ),
                        ));
                    }
                    Err(e) => return Ping::NoResponse(wire_failed(e)),
                }
            };
            match said.code.as_deref() {
                None => {
                    return Ping::NoResponse(Failed::new(
                        Reason::Protocol,
                        format!("{said} (without a SQLSTATE)"),
                    ));
                }
                Some(CANNOT_CONNECT_NOW) => return Ping::Rejecting(said),
                Some(_) if !retried && self.retries(tls) => {
                    retried = true;
                    ssl = !tls;
                }
                Some(_) => return Ping::Accepting(Some(said)),
            }
        }
    }

    /// psql -c QUERY.
    async fn query(&self, query: &str, bound: Duration) -> Outcome {
        let port = self.spec.port;
        let target = match &self.spec.address {
            PgAddress::Tcp(host) => format!("connection to server at \"{}\", port {port} failed", host.name),
            PgAddress::Socket(dir) => format!(
                "connection to server on socket \"{}/.s.PGSQL.{port}\" failed",
                dir.display()
            ),
        };
        // A password file that cannot be read: the app was not checked.
        let password = match self.spec.password.as_ref().map(|p| p.value()).transpose() {
            Ok(password) => password,
            Err(e) => return Outcome::unknown(format!("password_file {e}")),
        };
        // libpq: the password file only when no password is given (an
        // empty one is none), and an empty password from it is none.
        let password = match password {
            Some(p) if !p.is_empty() => Some(p),
            _ => self.passfile_password().filter(|p| !p.is_empty()),
        };
        let password = password.as_deref().map(str::as_bytes);
        let mut conn = match tokio::time::timeout(bound, self.login(password)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(why)) => return Outcome::failure(why.reason, format!("{target}: {}", why.message)),
            Err(_) => return Outcome::failure(Reason::Timeout, format!("{target}: timeout expired")),
        };
        if let Err(e) = conn.send(&frame::message(b'Q', &[query.as_bytes(), b"\0"])).await {
            let why = wire_failed(WireError::Io(e));
            return Outcome::failure(why.reason, why.message);
        }
        let mut error = None;
        let mut rows: u64 = 0;
        loop {
            match conn.read().await {
                Ok((b'Z', _)) => break,
                Ok((b'E', body)) => {
                    error.get_or_insert_with(|| ServerError::parse(body));
                }
                Ok((b'D', _)) => rows += 1,
                Ok((b'G' | b'H' | b'W', _)) => {
                    return Outcome::failure(
                        Reason::Reply,
                        "the query starts a COPY, which this check does not run",
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    let why = wire_failed(e);
                    return Outcome::failure(why.reason, why.message);
                }
            }
        }
        // Terminate, as PQfinish does after a login.
        let _ = conn.send(&frame::message(b'X', &[])).await;
        match error {
            Some(e) => Outcome::failure(Reason::Reply, e.to_string()),
            None => Outcome::success(format!(
                "{query}: ({rows} row{})",
                if rows == 1 { "" } else { "s" }
            )),
        }
    }

    /// Connects and logs in, up to ReadyForQuery.
    /// The password of the `passfile` for this server, database and user.
    fn passfile_password(&self) -> Option<String> {
        let path = self.spec.passfile.as_ref()?;
        let host = match &self.spec.address {
            PgAddress::Tcp(host) => host.name.clone(),
            PgAddress::Socket(dir) => dir.display().to_string(),
        };
        passfile::lookup(
            path,
            &passfile::Target {
                host: &host,
                port: self.spec.port,
                dbname: &self.spec.dbname,
                user: &self.spec.user,
            },
        )
    }

    async fn login(&self, password: Option<&[u8]>) -> Result<Conn, Failed> {
        let mut ssl = self.first_ssl();
        let mut retried = false;
        loop {
            let (mut conn, tls) = self.open(ssl).await?;
            match self.authenticate(&mut conn, password).await {
                Ok(()) => return Ok(conn),
                // Not for 57P03, which moves on to the next host instead.
                Err(Login::Server(e, before_ok))
                    if !retried
                        && before_ok
                        && self.retries(tls)
                        && e.code.as_deref() != Some(CANNOT_CONNECT_NOW) =>
                {
                    retried = true;
                    ssl = !tls;
                }
                Err(Login::Server(e, _)) => {
                    let reason = match e.code.as_deref() {
                        Some(CANNOT_CONNECT_NOW) => Reason::Rejecting,
                        Some(code) if code.starts_with("28") => Reason::Auth,
                        _ => Reason::Reply,
                    };
                    return Err(Failed::new(reason, e.to_string()));
                }
                Err(Login::Failed(f)) => return Err(f),
            }
        }
    }

    /// Answers the server's authentication requests until it is ready
    /// for a query (fe-auth.c `pg_fe_sendauth`).
    async fn authenticate(&self, conn: &mut Conn, password: Option<&[u8]>) -> Result<(), Login> {
        let mut accepted = false;
        let mut scram: Option<auth::Scram> = None;
        loop {
            let (tag, body) = conn.read().await.map_err(wire_failed)?;
            match tag {
                b'R' if !(4..=MAX_AUTH_REQUEST).contains(&body.len()) => {
                    return Err(
                        protocol("expected authentication request from server, but received R").into(),
                    );
                }
                b'R' => {
                    let code = body
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or_else(|| protocol("invalid authentication request"))?;
                    if code == 0 {
                        accepted = true;
                        continue;
                    }
                    let data = body[4..].to_vec();
                    if let Some(reply) = self.answer(code, &data, password, &mut scram)? {
                        conn.send(&reply)
                            .await
                            .map_err(|e| wire_failed(WireError::Io(e)))?;
                    }
                }
                b'E' => return Err(Login::Server(ServerError::parse(body), !accepted)),
                b'Z' if accepted => return Ok(()),
                b'S' | b'K' | b'N' => {}
                other => {
                    return Err(protocol(format!(
                        "expected authentication request from server, but received {}",
                        other as char
                    ))
                    .into());
                }
            }
        }
    }

    /// The answer to one authentication request other than AuthenticationOk
    /// (code 0); `None` when it needs none.
    fn answer(
        &self,
        code: u32,
        data: &[u8],
        password: Option<&[u8]>,
        scram: &mut Option<auth::Scram>,
    ) -> Result<Option<Vec<u8>>, Login> {
        let reply = match code {
            3 => {
                let password = needed(password)?;
                frame::message(b'p', &[password, b"\0"])
            }
            5 => {
                let password = needed(password)?;
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| protocol("invalid MD5 authentication request"))?;
                let hashed = auth::md5_password(&self.spec.user, password, &salt);
                frame::message(b'p', &[hashed.as_bytes(), b"\0"])
            }
            10 => sasl_start(data, password, scram)?,
            11 => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| protocol("unexpected SASL message"))?;
                let password = needed(password)?;
                let last = exchange
                    .client_final(data, password, &self.keys)
                    .map_err(|m| Failed::new(Reason::Auth, m))?;
                frame::message(b'p', &[last.as_bytes()])
            }
            12 => {
                let exchange = scram
                    .as_ref()
                    .ok_or_else(|| protocol("unexpected SASL message"))?;
                exchange.verify(data).map_err(|m| Failed::new(Reason::Auth, m))?;
                return Ok(None);
            }
            other => {
                return Err(Failed::new(
                    Reason::Auth,
                    format!("authentication method {other} not supported"),
                )
                .into());
            }
        };
        Ok(Some(reply))
    }

    /// Whether the first connection asks for TLS: `allow` tries without
    /// it first (fe-connect.c: `wait_ssl_try`).
    fn first_ssl(&self) -> bool {
        self.tls.is_some() && self.spec.sslmode != SslMode::Allow
    }

    /// Whether an error from the server before the login is accepted
    /// makes libpq try once more the other way (fe-connect.c,
    /// `CONNECTION_AWAITING_RESPONSE`): "if sslmode is "allow" and we
    /// haven't tried an SSL connection already, then retry with an SSL
    /// connection"; "if sslmode is "prefer" and we're in an SSL
    /// connection, then do a non-SSL retry".
    fn retries(&self, tls: bool) -> bool {
        match self.spec.sslmode {
            SslMode::Allow => !tls && self.tls.is_some(),
            SslMode::Prefer => tls,
            _ => false,
        }
    }

    /// Connects, negotiates TLS when `ssl`, and sends the startup packet;
    /// whether TLS is in use. In `prefer` mode a failed handshake is
    /// retried in plaintext, as libpq does.
    async fn open(&self, ssl: bool) -> Result<(Conn, bool), Failed> {
        match self.open_once(ssl).await {
            Err(why) if ssl && why.reason == Reason::Tls && self.spec.sslmode == SslMode::Prefer => {
                self.open_once(false).await
            }
            opened => opened,
        }
    }

    async fn open_once(&self, ssl: bool) -> Result<(Conn, bool), Failed> {
        let port = self.spec.port;
        let mut conn = match &self.spec.address {
            PgAddress::Tcp(host) => {
                // The caller's deadline bounds the connect.
                Conn::new(Box::new(wire::connect(&self.resolver, host, port).await?))
            }
            PgAddress::Socket(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                match tokio::net::UnixStream::connect(&path).await {
                    Ok(stream) => Conn::new(Box::new(stream)),
                    Err(e) => {
                        note_exhaustion(&e);
                        let reason = match e.kind() {
                            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                                Reason::Refused
                            }
                            _ => Reason::Other,
                        };
                        return Err(Failed::new(reason, wire::strerror(&e)));
                    }
                }
            }
        };
        let mut tls_used = false;
        if let (true, Some(tls)) = (ssl, &self.tls) {
            conn.send(&frame::SSL_REQUEST)
                .await
                .map_err(|e| wire_failed(WireError::Io(e)))?;
            match conn.read_byte().await {
                Ok(b'S') => {
                    if conn.has_buffered() {
                        return Err(protocol("received unencrypted data after SSL response"));
                    }
                    let config = tls.config().map_err(|m| Failed::new(Reason::Tls, m))?;
                    let name = tls.server_name().map_err(|m| Failed::new(Reason::Tls, m))?;
                    let stream = tokio_rustls::TlsConnector::from(config)
                        .connect(name, conn.into_inner())
                        .await
                        .map_err(|e| handshake_failed(&e))?;
                    conn = Conn::new(Box::new(stream));
                    tls_used = true;
                }
                Ok(b'N')
                    if matches!(
                        self.spec.sslmode,
                        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
                    ) =>
                {
                    return Err(Failed::new(
                        Reason::Tls,
                        "server does not support SSL, but SSL was required",
                    ));
                }
                Ok(b'N') => {}
                Ok(other) => {
                    return Err(protocol(format!(
                        "received invalid response to SSL negotiation: {}",
                        other as char
                    )));
                }
                Err(e) => return Err(wire_failed(WireError::Io(e))),
            }
        }
        let startup = frame::startup(&self.spec.user, &self.spec.dbname, APPLICATION);
        conn.send(&startup)
            .await
            .map_err(|e| wire_failed(WireError::Io(e)))?;
        Ok((conn, tls_used))
    }
}

/// AuthenticationSASL: SCRAM-SHA-256 among the offered mechanisms, and
/// the SASLInitialResponse that starts it.
fn sasl_start(
    data: &[u8],
    password: Option<&[u8]>,
    scram: &mut Option<auth::Scram>,
) -> Result<Vec<u8>, Login> {
    let offered = data
        .split(|&b| b == 0)
        .any(|m| m == auth::SCRAM_SHA_256.as_bytes());
    if !offered {
        return Err(protocol("none of the server's SASL authentication mechanisms are supported").into());
    }
    needed(password)?;
    let (exchange, first) = auth::Scram::start().map_err(protocol)?;
    *scram = Some(exchange);
    Ok(frame::message(
        b'p',
        &[
            auth::SCRAM_SHA_256.as_bytes(),
            b"\0",
            &(first.len() as u32).to_be_bytes(),
            first.as_bytes(),
        ],
    ))
}

/// The password, or libpq's error when the server asks for one and
/// there is none.
fn needed(password: Option<&[u8]>) -> Result<&[u8], Failed> {
    password.ok_or_else(|| Failed::new(Reason::Auth, "fe_sendauth: no password supplied"))
}

/// A failed handshake: libpq's words for a host name the certificate
/// does not match, rustls' for the rest.
fn handshake_failed(e: &std::io::Error) -> Failed {
    use tokio_rustls::rustls::{CertificateError, Error, OtherError};
    let mismatch = e.get_ref().and_then(|inner| match inner.downcast_ref::<Error>() {
        Some(Error::InvalidCertificate(CertificateError::Other(OtherError(other)))) => {
            other.downcast_ref::<tls::NameMismatch>()
        }
        _ => None,
    });
    let message = match mismatch {
        Some(m) => m.0.clone(),
        None => format!("SSL error: {}", describe_io(e)),
    };
    Failed::new(Reason::Tls, message)
}

fn protocol(message: impl Into<String>) -> Failed {
    Failed::new(Reason::Protocol, message)
}

/// A failed read or write, in libpq's words where it has some.
fn wire_failed(e: WireError) -> Failed {
    match e {
        WireError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Failed::new(Reason::Other, "server closed the connection unexpectedly")
        }
        WireError::Io(e) => {
            note_exhaustion(&e);
            let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                Reason::Refused
            } else if super::http::tls::caused_by_tls(&e) {
                Reason::Tls
            } else {
                Reason::Other
            };
            Failed::new(
                reason,
                format!("could not receive data from server: {}", describe_io(&e)),
            )
        }
        WireError::Protocol(message) => protocol(message),
    }
}
