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
//! The login is `mysql_native_password` (MariaDB's default), also after an
//! authentication switch to it. A server asking for another method is
//! alive for `ping` (it answered; the tool's login would end in a server
//! answer either way) and cannot be judged for the others (Unknown).

use std::time::Duration;

use super::wire::{self, ReadError, Reader, Stream};
use super::{Failed, Outcome, Reason, Resolver};
use crate::config::{MysqlCommand, MysqlSpec};

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
const CLIENT_MULTI_STATEMENTS: u32 = 0x1_0000;
const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;

/// `SERVER_MORE_RESULTS_EXIST` in a status word.
const MORE_RESULTS: u16 = 8;

/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

const NATIVE: &str = "mysql_native_password";

/// A prepared MySQL check.
#[derive(Debug)]
pub struct MysqlCheck {
    spec: MysqlSpec,
    resolver: Resolver,
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
    /// Prepares a MySQL check.
    pub fn new(spec: MysqlSpec) -> Self {
        MysqlCheck {
            spec,
            resolver: Resolver::default(),
        }
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
        let stream: Stream = Box::pin(tcp);
        let mut conn = Conn {
            stream,
            reader: Reader::new(MAX_PACKET + 4),
            seq: 0,
        };
        let lost = |what: &str| format!("Lost connection to server at '{what}'");
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
        let scramble = parse_greeting(&greeting)?;
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
        // The first answer is mysql_native_password's whatever the server
        // offered; it switches methods if the user needs another.
        let auth = native_password(password.as_bytes(), &scramble);
        let mut response = Vec::with_capacity(64 + user.len());
        response.extend_from_slice(&caps.to_le_bytes());
        response.extend_from_slice(&(16u32 << 20).to_le_bytes());
        response.push(CHARSET);
        response.extend_from_slice(&[0; 23]);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.push(auth.len() as u8);
        response.extend_from_slice(&auth);
        if let Some(db) = &self.spec.database {
            response.extend_from_slice(db.as_bytes());
            response.push(0);
        }
        response.extend_from_slice(NATIVE.as_bytes());
        response.push(0);
        conn.send(&response).await?;
        for _ in 0..4 {
            let reply = conn
                .packet()
                .await
                .map_err(|e| conn_lost(e, &lost("reading authorization packet")))?;
            match reply.first() {
                Some(0x00) => return Ok(conn),
                Some(0xff) => return Err(server_error(&reply)),
                Some(0xfe) => {
                    // AuthSwitchRequest: the plugin's name, then its data.
                    let rest = &reply[1..];
                    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    let name = String::from_utf8_lossy(&rest[..end]).into_owned();
                    if name != NATIVE {
                        return Err(Error::Unsupported(format!(
                            "the server asks for the authentication method {name}, which this check does not speak"
                        )));
                    }
                    let data = rest.get(end + 1..).unwrap_or_default();
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    conn.send(&native_password(password.as_bytes(), data)).await?;
                }
                Some(0x01) => {
                    return Err(Error::Unsupported(
                        "the server asks for more authentication data (caching_sha2_password), which this check does not send"
                            .into(),
                    ));
                }
                _ => return Err(Error::client(Reason::Protocol, "Malformed packet")),
            }
        }
        Err(Error::client(Reason::Protocol, "Malformed packet"))
    }
}

/// A connection after the login: the packet sequence numbers.
struct Conn {
    stream: Stream,
    reader: Reader,
    seq: u8,
}

impl Conn {
    /// Sends one packet with the next sequence number.
    async fn send(&mut self, payload: &[u8]) -> Result<(), Error> {
        let len = payload.len() as u32;
        let mut packet = Vec::with_capacity(4 + payload.len());
        packet.extend_from_slice(&len.to_le_bytes()[..3]);
        packet.push(self.seq);
        packet.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        wire::send(&mut self.stream, &packet).await.map_err(|f| {
            Error::client(
                f.reason,
                format!("Lost connection to server during query: {}", f.message),
            )
        })
    }

    /// Reads one packet, whole when it fits [`MAX_PACKET`], else `None`
    /// after skipping it.
    async fn packet_or_skip(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let head = self.reader.exact(&mut self.stream, 4).await?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        self.seq = head[3].wrapping_add(1);
        if len <= MAX_PACKET {
            return self.reader.exact(&mut self.stream, len).await.map(Some);
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(MAX_PACKET);
            self.reader.exact(&mut self.stream, n).await?;
            left -= n;
        }
        Ok(None)
    }

    /// Reads one packet, which must fit [`MAX_PACKET`].
    async fn packet(&mut self) -> Result<Vec<u8>, ReadError> {
        self.packet_or_skip().await?.ok_or(ReadError::TooLong)
    }

    /// A command answered by one packet: OK (ping) or a string (status).
    async fn simple(&mut self, command: &[u8]) -> Result<String, Error> {
        self.seq = 0;
        self.send(command).await?;
        let reply = self
            .packet()
            .await
            .map_err(|e| conn_lost(e, "Lost connection to server during query"))?;
        match reply.first() {
            Some(0xff) => Err(server_error(&reply)),
            Some(0x00) if command == [0x0e] => Ok(String::new()),
            _ => Ok(String::from_utf8_lossy(&reply).into_owned()),
        }
    }

    /// COM_QUERY, and every result it yields, read to its end (up to
    /// [`MAX_RESULT`] bytes).
    async fn query(&mut self, query: &str) -> Result<String, Error> {
        self.seq = 0;
        let mut command = vec![0x03];
        command.extend_from_slice(query.as_bytes());
        self.send(&command).await?;
        let lost = |e| conn_lost(e, "Lost connection to server during query");
        let mut read = 0usize;
        let mut rows = 0u64;
        loop {
            let first = self.packet().await.map_err(lost)?;
            let status = match first.first() {
                Some(0xff) => return Err(server_error(&first)),
                Some(0x00) => ok_status(&first),
                Some(0xfb) => {
                    return Err(Error::client(
                        Reason::Protocol,
                        "LOAD DATA LOCAL INFILE is not allowed",
                    ));
                }
                _ => {
                    // A result set: column definitions, EOF, rows, EOF.
                    let mut eofs = 0;
                    let mut status = 0;
                    while eofs < 2 {
                        let packet = self.packet_or_skip().await.map_err(lost)?;
                        let Some(packet) = packet else {
                            read += MAX_PACKET;
                            continue;
                        };
                        read += packet.len();
                        match packet.first() {
                            Some(0xff) => return Err(server_error(&packet)),
                            Some(0xfe) if packet.len() < 9 => {
                                eofs += 1;
                                status = packet.get(3..5).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
                            }
                            _ if eofs == 1 => rows += 1,
                            _ => {}
                        }
                        if read > MAX_RESULT {
                            return Ok(format!("{rows} rows read, the rest of the result not read"));
                        }
                    }
                    status
                }
            };
            if status & MORE_RESULTS == 0 {
                return Ok(match rows {
                    1 => "1 row".to_string(),
                    n => format!("{n} rows"),
                });
            }
        }
    }
}

/// The status word of an OK packet: after the affected rows and last
/// insert id (length-encoded integers).
fn ok_status(packet: &[u8]) -> u16 {
    let mut at = 1;
    for _ in 0..2 {
        at += match packet.get(at) {
            Some(0xfc) => 3,
            Some(0xfd) => 4,
            Some(0xfe) => 9,
            _ => 1,
        };
    }
    packet
        .get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

/// The 20-byte scramble of a Handshake V10.
fn parse_greeting(p: &[u8]) -> Result<Vec<u8>, Error> {
    let malformed = || Error::client(Reason::Protocol, "Malformed packet");
    if p.first() != Some(&10) {
        return Err(Error::client(
            Reason::Protocol,
            format!(
                "Received error packet before completion of TLS handshake or unsupported protocol version {}",
                p.first().copied().unwrap_or(0)
            ),
        ));
    }
    let version_end = 1 + p[1..].iter().position(|b| *b == 0).ok_or_else(malformed)?;
    let mut at = version_end + 1 + 4;
    let part1 = p.get(at..at + 8).ok_or_else(malformed)?.to_vec();
    at += 8 + 1;
    let caps_low = p.get(at..at + 2).ok_or_else(malformed)?;
    let caps_low = u16::from_le_bytes([caps_low[0], caps_low[1]]);
    if u32::from(caps_low) & CLIENT_PROTOCOL_41 == 0 {
        return Err(Error::client(
            Reason::Protocol,
            "the server speaks a protocol before 4.1",
        ));
    }
    at += 2 + 1 + 2 + 2;
    let data_len = usize::from(*p.get(at).ok_or_else(malformed)?);
    at += 1 + 10;
    let part2_len = data_len.saturating_sub(8).max(13);
    let part2 = p.get(at..(at + part2_len).min(p.len())).ok_or_else(malformed)?;
    let mut scramble = part1;
    scramble.extend_from_slice(part2.strip_suffix(&[0]).unwrap_or(part2));
    Ok(scramble)
}

/// mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)));
/// nothing for an empty password.
fn native_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY as SHA1, digest};
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = digest(&SHA1, password);
    let stage2 = digest(&SHA1, stage1.as_ref());
    let mut ctx = ring::digest::Context::new(&SHA1);
    ctx.update(scramble.get(..20).unwrap_or(scramble));
    ctx.update(stage2.as_ref());
    let mix = ctx.finish();
    stage1
        .as_ref()
        .iter()
        .zip(mix.as_ref())
        .map(|(a, b)| a ^ b)
        .collect()
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
    fn native_password_matches_the_servers_formula() {
        // The empty password sends nothing; another is 20 bytes that
        // change with the scramble.
        assert!(native_password(b"", &[1; 20]).is_empty());
        let a = native_password(b"s3cret", &[1; 20]);
        let b = native_password(b"s3cret", &[2; 20]);
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }

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
