//! The frontend/backend protocol 3.0 as far as a login and a simple query
//! need it: messages framed and bounded in bytes, the startup and SSL
//! request packets, and the fields of an ErrorResponse.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The largest message kept and parsed (authentication requests, errors,
/// parameter statuses). Row data and descriptions larger than this are
/// read and dropped, never kept.
pub(super) const MAX_KEPT: usize = 10 * 1024;

/// SSLRequest: length 8, code 80877103 (`1234 << 16 | 5679`).
pub(super) const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Protocol version 3.0.
const PROTOCOL_3_0: u32 = 196_608;

/// A byte stream the protocol runs over: TCP, a Unix socket, or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why reading a message failed.
#[derive(Debug)]
pub(super) enum WireError {
    /// The connection failed or closed.
    Io(io::Error),
    /// A message that breaks the protocol or is larger than [`MAX_KEPT`].
    Protocol(String),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// One connection, read through a small buffer.
pub(super) struct Conn {
    io: BufReader<Box<dyn Io>>,
    body: Vec<u8>,
}

impl Conn {
    pub(super) fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io: BufReader::with_capacity(2048, io),
            body: Vec::new(),
        }
    }

    /// Sends `bytes` whole.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let io = self.io.get_mut();
        io.write_all(bytes).await?;
        io.flush().await
    }

    /// Reads the next message: its type byte and body. A body longer than
    /// [`MAX_KEPT`] is skipped for the types whose content does not matter
    /// (rows, row descriptions, notices, parameters); for any other it is
    /// a protocol error, before a byte of it is read.
    pub(super) async fn read(&mut self) -> Result<(u8, &[u8]), WireError> {
        let mut head = [0u8; 5];
        self.io.read_exact(&mut head).await?;
        let tag = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len < 4 {
            return Err(WireError::Protocol(format!("invalid message length {len}")));
        }
        let len = len - 4;
        if len > MAX_KEPT {
            if !matches!(tag, b'D' | b'T' | b'N' | b'S' | b'C' | b'A') {
                return Err(WireError::Protocol(format!(
                    "message of type {:?} is {len} bytes, more than the {MAX_KEPT} read",
                    tag as char
                )));
            }
            let skipped =
                tokio::io::copy(&mut (&mut self.io).take(len as u64), &mut tokio::io::sink()).await?;
            if skipped < len as u64 {
                return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            return Ok((tag, &[]));
        }
        self.body.resize(len, 0);
        self.io.read_exact(&mut self.body).await?;
        Ok((tag, &self.body))
    }

    /// Reads the one-byte answer to an SSLRequest.
    pub(super) async fn read_byte(&mut self) -> io::Result<u8> {
        self.io.read_u8().await
    }

    /// Whether bytes arrived that were not read yet: after the answer to
    /// an SSLRequest, bytes that came before the TLS handshake could have
    /// been injected (CVE-2021-23222), and libpq refuses them.
    pub(super) fn has_buffered(&self) -> bool {
        !self.io.buffer().is_empty()
    }

    /// The stream, for the TLS handshake.
    pub(super) fn into_inner(self) -> Box<dyn Io> {
        self.io.into_inner()
    }
}

/// The startup packet: protocol 3.0, user, database and application name.
pub(super) fn startup(user: &str, database: &str, application: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + user.len() + database.len());
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (key, value) in [
        ("user", user),
        ("database", database),
        ("application_name", application),
    ] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A frontend message: type byte, length, body.
pub(super) fn message(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    let mut out = Vec::with_capacity(len + 1);
    out.push(tag);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// The fields of an ErrorResponse or NoticeResponse that the messages use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ServerError {
    /// `S`: localized severity (`FATAL`, `ERROR`).
    pub(super) severity: String,
    /// `C`: the SQLSTATE.
    pub(super) code: Option<String>,
    /// `M`: the primary message.
    pub(super) message: String,
}

impl ServerError {
    /// Parses the body of an `E` message; fields that are not there stay
    /// empty, and a code must be five characters, as libpq keeps it.
    pub(super) fn parse(body: &[u8]) -> ServerError {
        let mut out = ServerError::default();
        let mut rest = body;
        while let Some((&field, tail)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]);
            match field {
                b'S' => out.severity = value.into_owned(),
                b'C' if value.len() == 5 => out.code = Some(value.into_owned()),
                b'M' => out.message = value.into_owned(),
                _ => {}
            }
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        out
    }
}

/// `FATAL:  message`, as libpq formats a server's error (two spaces).
impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = if self.severity.is_empty() {
            "ERROR"
        } else {
            &self.severity
        };
        write!(f, "{severity}:  {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_packet_is_length_prefixed_protocol_3() {
        let p = startup("app", "db", "healthproxy");
        assert_eq!(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize, p.len());
        assert_eq!(&p[4..8], &[0, 3, 0, 0]);
        assert!(p.ends_with(b"application_name\0healthproxy\0\0"));
    }

    #[test]
    fn error_fields_are_read_and_shown_as_libpq() {
        let body = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is shutting down\0Fpostmaster.c\0\0";
        let e = ServerError::parse(body);
        assert_eq!(e.code.as_deref(), Some("57P03"));
        assert_eq!(e.to_string(), "FATAL:  the database system is shutting down");
        // A code that is not five characters is no SQLSTATE (libpq's
        // `strlen(conn->last_sqlstate) != 5`).
        assert_eq!(ServerError::parse(b"C123\0\0").code, None);
        // Truncated input ends the fields, never panics.
        assert_eq!(ServerError::parse(b"Mcut").message, "cut");
    }
}
