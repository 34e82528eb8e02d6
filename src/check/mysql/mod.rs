//! `mysql`: the MySQL client/server protocol, with the exit status of
//! `mysqladmin ping`, `mysqladmin status` or `mysql -e QUERY` (MariaDB
//! `client/mysqladmin.cc` and `client/mysql.cc`, as Debian bookworm's
//! MariaDB 10.11 ships them):
//!
//! - `mysqladmin` connects with `sql_connect()`; when that fails,
//!   `main()` exits 1 for a client-side error (`CR_MIN_ERROR..CR_MAX_ERROR`,
//!   2000–2999: refused, lost connection, bad packet) and **0 when every
//!   command is `ping`** for any error the server sent (access denied
//!   1045, too many connections 1040, host not allowed 1130, shutdown in
//!   progress 1053); any other command exits 1.
//! - Connected, `ping` is `mysql_ping()` (COM_PING) and `status` is
//!   `mysql_stat()` (COM_STATISTICS); an error exits 1.
//! - `mysql -e` exits 1 for any error: connecting, logging in, the query.
//!
//! - An error the server sends instead of its greeting (1040 too many
//!   connections, 1130 host not allowed) is, for Connector/C 3.3 (the
//!   client library of Debian's 10.11.19), which asks for TLS by default, a
//!   client error, 2002: "Received error packet before completion of TLS
//!   handshake. The authenticity of the following error cannot be
//!   verified"; so `mysqladmin ping` exits 1 there, and 0 with
//!   `--skip-ssl` (`skip_ssl = true`).
//!
//! TLS (Connector/C 3.3, `send_client_reply_packet` in
//! `plugins/auth/my_auth.c` and `ma_tls_connect` in
//! `libmariadb/secure/openssl.c`): the tools ask for it by default
//! (`--ssl` is on; `--skip-ssl` turns it off) whenever the greeting offers
//! `CLIENT_SSL`, and go on in plaintext when it does not. They accept any
//! certificate unless `--ssl-ca` is given (the chain is verified, not the
//! name) or `--ssl-verify-server-cert` (the name too, and a server without
//! TLS is an error). A failed handshake is a client error (2026): exit 1,
//! for `ping` too.
//!
//! The login begins as Connector/C's does (`run_plugin_auth`), with the
//! method the greeting names if it is `caching_sha2_password` (MySQL 8's
//! default; see [`MysqlCheck::caching_sha2`]) and `mysql_native_password`
//! otherwise, and follows the server's switch to either. A server asking for another
//! method is alive for `ping` (it answered; the tool's login would end in
//! a server answer either way) and cannot be judged for the others
//! (Unknown).

mod auth;
mod conn;
mod tls;

use std::time::Duration;

use super::wire::{self, ReadError};
use super::{Failed, Outcome, Reason, Resolver, describe_io};
use crate::config::{MysqlCommand, MysqlSpec};
use conn::Conn;

/// The largest packet read whole; a larger row of a result is skipped.
const MAX_PACKET: usize = 64 * 1024;

/// The most result bytes read; the rest of a larger result is not read.
const MAX_RESULT: usize = 1 << 20;

/// Capability flags (`include/mysql_com.h`).
const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_LONG_FLAG: u32 = 4;
const CLIENT_CONNECT_WITH_DB: u32 = 8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_MULTI_STATEMENTS: u32 = 0x1_0000;
const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;

/// `SERVER_MORE_RESULTS_EXIST` in a status word.
const MORE_RESULTS: u16 = 8;

/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

const NATIVE: &str = "mysql_native_password";
const CACHING_SHA2: &str = "caching_sha2_password";

/// caching_sha2_password's answers after the fast scramble, behind the
/// `0x01` of "more data".
const FAST_AUTH_OK: u8 = 3;
const FULL_AUTH: u8 = 4;

/// The client's request for the server's RSA public key.
const REQUEST_PUBLIC_KEY: u8 = 2;

/// A prepared MySQL check.
#[derive(Debug)]
pub struct MysqlCheck {
    spec: MysqlSpec,
    resolver: Resolver,
    /// TLS settings, unless `skip_ssl`.
    tls: Option<tls::Tls>,
}

/// How a step ended badly: the server said so (`ER_*`), or the client saw
/// the problem (`CR_*`, 2000–2999), or the login method is not ours.
enum Error {
    Server {
        code: u16,
        state: String,
        message: String,
    },
    Client(Failed),
    Unsupported(String),
}

impl Error {
    fn client(reason: Reason, message: impl Into<String>) -> Self {
        Error::Client(Failed::new(reason, message))
    }
}

impl MysqlCheck {
    /// Prepares a MySQL check: its TLS settings, whose files must load.
    pub fn new(spec: MysqlSpec) -> Result<Self, String> {
        let tls = if spec.skip_ssl {
            None
        } else {
            Some(tls::Tls::new(&spec)?)
        };
        Ok(MysqlCheck {
            spec,
            resolver: Resolver::default(),
            tls,
        })
    }

    /// Connects, logs in and runs the command once, within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.exchange()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failure(
                Reason::Timeout,
                format!(
                    "{}: no answer from {} within {}",
                    self.tool(),
                    self.spec.host.authority(self.spec.port),
                    humantime::format_duration(timeout)
                ),
            ),
        }
    }

    /// The command line the check stands for, for messages.
    fn tool(&self) -> &'static str {
        match self.spec.command {
            MysqlCommand::Ping => "mysqladmin ping",
            MysqlCommand::Status => "mysqladmin status",
            MysqlCommand::Query(_) => "mysql -e",
        }
    }

    async fn exchange(&self) -> Outcome {
        let user = match self.spec.user.as_ref().map(|u| u.value()).transpose() {
            Ok(user) => user.unwrap_or_default(),
            Err(e) => return Outcome::unknown(format!("cannot read the MySQL user: {e}")),
        };
        let password = match self.spec.password.as_ref().map(|p| p.value()).transpose() {
            Ok(password) => password.unwrap_or_default(),
            Err(e) => return Outcome::unknown(format!("cannot read the MySQL password: {e}")),
        };
        let mut conn = match self.login(&user, &password).await {
            Ok(conn) => conn,
            Err(e) => return self.connect_failed(e),
        };
        let result = match &self.spec.command {
            MysqlCommand::Ping => conn.simple(&[0x0e]).await.map(|_| "mysqld is alive".to_string()),
            MysqlCommand::Status => conn.simple(&[0x09]).await,
            MysqlCommand::Query(query) => conn.query(query).await,
        };
        // COM_QUIT, as the tools' mysql_close(); its fate changes nothing.
        let _ = conn.send(&[0x01]).await;
        match result {
            Ok(text) => Outcome::success(text),
            Err(Error::Server { code, state, message }) => {
                Outcome::failure(Reason::Reply, self.server_error(code, &state, &message))
            }
            Err(Error::Client(f)) => Outcome::failure(f.reason, f.message),
            Err(Error::Unsupported(m)) => Outcome::unknown(m),
        }
    }

    /// The verdict when the connection or login failed.
    fn connect_failed(&self, e: Error) -> Outcome {
        let host = &self.spec.host.name;
        match (e, &self.spec.command) {
            // main(): every command is ping and the error is the server's.
            (Error::Server { code, message, .. }, MysqlCommand::Ping) => Outcome::success(format!(
                "mysqld is alive (connect to server at '{host}' failed: error {code}: '{message}')"
            )),
            (Error::Unsupported(why), MysqlCommand::Ping) => {
                Outcome::success(format!("mysqld is alive ({why})"))
            }
            (Error::Server { code, state, message }, _) => {
                let reason = if matches!(code, 1044 | 1045 | 1698) {
                    Reason::Auth
                } else {
                    Reason::Reply
                };
                Outcome::failure(reason, self.server_error(code, &state, &message))
            }
            (Error::Client(f), MysqlCommand::Query(_)) => Outcome::failure(
                f.reason,
                format!("ERROR {} (HY000): {}", client_code(&f), f.message),
            ),
            (Error::Client(f), _) => Outcome::failure(
                f.reason,
                format!("connect to server at '{host}' failed: error: '{}'", f.message),
            ),
            (Error::Unsupported(why), _) => Outcome::unknown(why),
        }
    }

    /// A server error in the words of the tool.
    fn server_error(&self, code: u16, state: &str, message: &str) -> String {
        match self.spec.command {
            MysqlCommand::Query(_) => format!("ERROR {code} ({state}): {message}"),
            _ => format!(
                "connect to server at '{}' failed: error: '{message}'",
                self.spec.host.name
            ),
        }
    }

    /// Connects and logs in.
    async fn login(&self, user: &str, password: &str) -> Result<Conn, Error> {
        let mut conn = self.connect().await?;
        let greeting = self.greeting(&mut conn).await?;
        let mut response = self.open_response(&mut conn, &greeting).await?;
        let pending = self
            .first_answer(&mut conn, &mut response, &greeting, user, password)
            .await?;
        self.auth_replies(&mut conn, password, pending).await?;
        Ok(conn)
    }

    /// The TCP connection, failing as CR_CONN_HOST_ERROR.
    async fn connect(&self) -> Result<Conn, Error> {
        let host = &self.spec.host.name;
        let tcp = wire::connect(&self.resolver, &self.spec.host, self.spec.port)
            .await
            .map_err(|f| {
                let errno = if f.reason == Reason::Refused { " (111)" } else { "" };
                Error::client(
                    f.reason,
                    format!("Can't connect to server on '{host}'{errno}: {}", f.message),
                )
            })?;
        Ok(Conn::new(Box::pin(tcp)))
    }

    /// The server's initial packet: its greeting, or an error that cannot
    /// be trusted when TLS was wanted.
    async fn greeting(&self, conn: &mut Conn) -> Result<auth::Greeting, Error> {
        let greeting = conn
            .packet()
            .await
            .map_err(|e| conn_lost(e, &lost("handshake: reading initial communication packet")))?;
        if greeting.first() == Some(&0xff) {
            let error = server_error(&greeting);
            return match error {
                Error::Server { code, message, .. } if !self.spec.skip_ssl => Err(Error::client(
                    Reason::Reply,
                    format!(
                        "Received error packet before completion of TLS handshake. The authenticity of the following error cannot be verified: {code} - {message}"
                    ),
                )),
                error => Err(error),
            };
        }
        auth::parse_greeting(&greeting)
    }

    /// The handshake response's fixed head, after the SSL request and the
    /// TLS handshake when the check has TLS and the server offers it.
    async fn open_response(&self, conn: &mut Conn, greeting: &auth::Greeting) -> Result<Vec<u8>, Error> {
        let mut caps = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_STATEMENTS
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH;
        if self.spec.database.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        let mut response = Vec::with_capacity(64);
        match &self.tls {
            Some(tls) if greeting.caps & CLIENT_SSL != 0 => {
                caps |= CLIENT_SSL;
                head(&mut response, caps);
                conn.send(&response).await?;
                self.secure(conn, tls).await?;
            }
            Some(_) if self.spec.verify_server_cert => {
                return Err(Error::client(
                    Reason::Tls,
                    "SSL connection error: SSL is required, but the server does not support it",
                ));
            }
            _ => head(&mut response, caps),
        }
        Ok(response)
    }

    /// Completes and sends the handshake response with its first answer;
    /// a reply caching_sha2_password already read, if any.
    async fn first_answer(
        &self,
        conn: &mut Conn,
        response: &mut Vec<u8>,
        greeting: &auth::Greeting,
        user: &str,
        password: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        // The first answer is for the method the greeting names, when it
        // is caching_sha2_password; mysql_native_password's otherwise
        // (Connector/C's run_plugin_auth takes the server's method when
        // it has the plugin; another one the server switches away from).
        let sha2_first = greeting.plugin.as_deref() == Some(CACHING_SHA2);
        let (auth, method) = if sha2_first {
            (sha2_answer(password, &greeting.data)?, CACHING_SHA2)
        } else {
            (
                auth::native_password(password.as_bytes(), &greeting.scramble),
                NATIVE,
            )
        };
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.push(auth.len() as u8);
        response.extend_from_slice(&auth);
        if let Some(db) = &self.spec.database {
            response.extend_from_slice(db.as_bytes());
            response.push(0);
        }
        response.extend_from_slice(method.as_bytes());
        response.push(0);
        conn.send(response).await?;
        if sha2_first && !password.is_empty() {
            return self.caching_sha2(conn, password, &greeting.data[..20]).await;
        }
        Ok(None)
    }

    /// The server's answers until OK or error: at most four, following
    /// AuthSwitchRequests.
    async fn auth_replies(
        &self,
        conn: &mut Conn,
        password: &str,
        mut pending: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        for _ in 0..4 {
            let reply = match pending.take() {
                Some(reply) => reply,
                None => conn
                    .packet()
                    .await
                    .map_err(|e| conn_lost(e, &lost("reading authorization packet")))?,
            };
            match reply.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(server_error(&reply)),
                Some(0xfe) => pending = self.auth_switch(conn, password, &reply[1..]).await?,
                _ => return Err(Error::client(Reason::Protocol, "Malformed packet")),
            }
        }
        Err(Error::client(Reason::Protocol, "Malformed packet"))
    }

    /// AuthSwitchRequest: the plugin's name, then its data. Answers with
    /// the named method; a reply caching_sha2_password already read, if any.
    async fn auth_switch(
        &self,
        conn: &mut Conn,
        password: &str,
        rest: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        let data = rest.get(end + 1..).unwrap_or_default();
        match name.as_str() {
            NATIVE => {
                let data = data.strip_suffix(&[0]).unwrap_or(data);
                conn.send(&auth::native_password(password.as_bytes(), data))
                    .await?;
                Ok(None)
            }
            CACHING_SHA2 => {
                conn.send(&sha2_answer(password, data)?).await?;
                if password.is_empty() {
                    return Ok(None);
                }
                self.caching_sha2(conn, password, &data[..20]).await
            }
            _ => Err(Error::Unsupported(format!(
                "the server asks for the authentication method {name}, which this check does not speak"
            ))),
        }
    }

    /// The TLS handshake after the SSL request, as CR_SSL_CONNECTION_ERROR
    /// when it fails.
    async fn secure(&self, conn: &mut Conn, tls: &tls::Tls) -> Result<(), Error> {
        let failed = |m: String| Error::client(Reason::Tls, format!("SSL connection error: {m}"));
        if conn.has_pending() {
            return Err(failed("the server spoke before the TLS handshake".into()));
        }
        let config = tls.config().map_err(failed)?;
        let name = rustls_pki_types::ServerName::try_from(self.spec.host.name.clone())
            .map_err(|e| failed(format!("invalid host name: {e}")))?;
        let plain = std::mem::replace(&mut conn.stream, Box::pin(tokio::io::empty()));
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, plain)
            .await
            .map_err(|e| failed(describe_io(&e)))?;
        conn.stream = Box::pin(stream);
        conn.encrypted = true;
        Ok(())
    }

    /// caching_sha2_password as Connector/C's client plugin
    /// (`plugins/auth/caching_sha2_pw.c`, `auth_caching_sha2_client`),
    /// after its first answer ([`sha2_answer`]) was sent with a password:
    ///
    /// - the server answers `0x01 0x03` (its cache knew the user: the OK
    ///   follows) or `0x01 0x04` (full authentication), or switches
    ///   methods (the packet is returned for the login to follow);
    /// - full authentication on a "secure" connection sends the password
    ///   in clear with its NUL. Secure is `use_ssl`, the option (on unless
    ///   `--skip-ssl`), not whether TLS was set up: against a server
    ///   without TLS the tools send it in clear, and MySQL refuses it
    ///   (this check sends an empty one there, for the same refusal);
    /// - otherwise, with no `--server-public-key` (the MariaDB tools have
    ///   no such flag), the client asks the server for its RSA key
    ///   (`0x02`) and sends the password encrypted with it. (The error
    ///   2061, "Authentication requires secure connection", is
    ///   libmysqlclient's and GnuTLS builds'; Debian's Connector/C is
    ///   built with OpenSSL.)
    async fn caching_sha2(
        &self,
        conn: &mut Conn,
        password: &str,
        scramble: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        let lost = |e| conn_lost(e, "Lost connection to server at 'reading authorization packet'");
        let reply = conn.packet().await.map_err(lost)?;
        match reply.first() {
            Some(0xff) => return Err(server_error(&reply)),
            Some(0xfe) => return Ok(Some(reply)),
            _ => {}
        }
        match more_data(&reply) {
            [FAST_AUTH_OK] => return Ok(None),
            [FULL_AUTH] => {}
            [_] => return Err(Error::client(Reason::Protocol, "Error in server handshake")),
            _ => {}
        }
        if !self.spec.skip_ssl {
            // Where TLS was not set up the tools' password would go in
            // clear to a server that reads the packet as RSA-encrypted and
            // refuses it (sql/auth/sha2_password.cc): the same refusal
            // comes for an empty packet, without the password on the wire.
            let mut clear = if conn.encrypted {
                password.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            clear.push(0);
            conn.send(&clear).await?;
            return Ok(None);
        }
        conn.send(&[REQUEST_PUBLIC_KEY]).await?;
        let key = conn
            .packet()
            .await
            .map_err(|_| Error::client(Reason::Protocol, "Couldn't read RSA public key from server"))?;
        if key.first() == Some(&0xff) {
            return Err(server_error(&key));
        }
        let encrypted = auth::rsa_password(more_data(&key), password.as_bytes(), scramble)
            .map_err(|m| Error::client(Reason::Protocol, m))?;
        conn.send(&encrypted).await?;
        Ok(None)
    }
}

/// caching_sha2_password's first answer to the method's data, which must
/// be the 20-byte scramble and its NUL: nothing without a password, else
/// the SHA-256 scramble.
fn sha2_answer(password: &str, data: &[u8]) -> Result<Vec<u8>, Error> {
    if data.len() != 21 {
        return Err(Error::client(Reason::Protocol, "Error in server handshake"));
    }
    if password.is_empty() {
        return Ok(Vec::new());
    }
    Ok(auth::sha256_password(password.as_bytes(), &data[..20]))
}

/// The first 32 bytes of a HandshakeResponse41, which are also the SSL
/// request: capabilities, the largest packet, the character set, zeros.
fn head(response: &mut Vec<u8>, caps: u32) {
    response.clear();
    response.extend_from_slice(&caps.to_le_bytes());
    response.extend_from_slice(&(16u32 << 20).to_le_bytes());
    response.push(CHARSET);
    response.extend_from_slice(&[0; 23]);
}

/// A packet to an authentication plugin: without the `0x01` that marks
/// "more data" (Connector/C's `client_mpvio_read_packet`).
fn more_data(packet: &[u8]) -> &[u8] {
    packet.strip_prefix(&[1]).unwrap_or(packet)
}

/// An ERR packet: code, SQL state (when the protocol gives one), message.
fn server_error(p: &[u8]) -> Error {
    let code = p.get(1..3).map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
    let (state, message) = match p.get(3) {
        Some(b'#') if p.len() >= 9 => (String::from_utf8_lossy(&p[4..9]).into_owned(), &p[9..]),
        _ => ("HY000".to_string(), p.get(3..).unwrap_or_default()),
    };
    Error::Server {
        code,
        state,
        message: String::from_utf8_lossy(message).into_owned(),
    }
}

/// CR_SERVER_LOST's words for a read that failed.
fn lost(what: &str) -> String {
    format!("Lost connection to server at '{what}'")
}

/// A read that ended early: libmariadb's CR_SERVER_LOST in its words.
fn conn_lost(e: ReadError, what: &str) -> Error {
    match e {
        ReadError::Closed => Error::client(Reason::Other, format!("{what}, system error: 0")),
        ReadError::Io(e) => {
            let f = wire::io_failed(e);
            Error::client(f.reason, format!("{what}, system error: {}", f.message))
        }
        ReadError::TooLong => Error::client(Reason::Protocol, "Malformed packet"),
    }
}

/// The client error code a client-side failure stands for.
fn client_code(f: &Failed) -> u16 {
    match f.reason {
        Reason::Refused | Reason::Dns => 2002,
        Reason::Protocol => 2027,
        _ => 2013,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_err_packet_before_the_handshake_has_no_sql_state() {
        let Error::Server { code, state, message } = server_error(b"\xff\x10\x04Too many connections") else {
            panic!("a server error")
        };
        assert_eq!(
            (code, state.as_str(), message.as_str()),
            (1040, "HY000", "Too many connections")
        );
        let Error::Server { code, state, .. } = server_error(b"\xff\x15\x04#28000Access denied") else {
            panic!("a server error")
        };
        assert_eq!((code, state.as_str()), (1045, "28000"));
    }
}
