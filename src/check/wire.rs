//! What the protocol checks (`redis`, ...) share: a connection, plain or
//! TLS, and a reader that never holds more than a bound.

use std::pin::Pin;
use std::sync::Arc;

use bytes::BufMut as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::http::tls::{TlsClient, caused_by_tls};
use super::{Failed, Reason, Resolver, describe_io, note_exhaustion};
use crate::config::Host;

/// A byte stream to the server: TCP, or TLS over TCP.
pub(crate) trait Wire: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Wire for T {}

/// A connection, boxed so that plain and TLS runs share one code path.
pub(crate) type Stream = Pin<Box<dyn Wire>>;

/// An I/O error as C's `strerror` words it: "Connection refused".
pub(crate) fn strerror(e: &std::io::Error) -> String {
    let text = describe_io(e);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// Connects to `host:port`, each address in turn, with no deadline of its
/// own (the run's covers it); the error is C's words for the last failure.
pub(crate) async fn connect(
    resolver: &Resolver,
    host: &Host,
    port: u16,
) -> Result<tokio::net::TcpStream, Failed> {
    let addrs = resolver
        .lookup(&host.name)
        .await
        .map_err(|e| Failed::new(Reason::Dns, format!("Name or service not known: {e}")))?;
    let mut last = Failed::new(Reason::Dns, "Name or service not known");
    for ip in addrs {
        match tokio::net::TcpStream::connect((ip, port)).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                note_exhaustion(&e);
                let reason = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => Reason::Refused,
                    _ => Reason::Other,
                };
                last = Failed::new(reason, strerror(&e));
            }
        }
    }
    Err(last)
}

/// Wraps `tcp` in TLS when `tls` is set.
pub(crate) async fn secure(
    tcp: tokio::net::TcpStream,
    tls: Option<&TlsClient>,
    host: &Host,
) -> Result<Stream, Failed> {
    let Some(tls) = tls else {
        return Ok(Box::pin(tcp));
    };
    let config = tls.config().map_err(|e| Failed::new(Reason::Tls, e))?;
    let name = tls
        .server_name(&host.name)
        .map_err(|e| Failed::new(Reason::Tls, e))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
        .map_err(|e| Failed::new(Reason::Tls, format!("TLS handshake failed: {}", describe_io(&e))))?;
    Ok(Box::pin(stream))
}

/// Writes all of `bytes`.
pub(crate) async fn send(stream: &mut Stream, bytes: &[u8]) -> Result<(), Failed> {
    stream.write_all(bytes).await.map_err(io_failed)?;
    stream.flush().await.map_err(io_failed)
}

/// A read or write error: TLS when TLS caused it.
pub(crate) fn io_failed(e: std::io::Error) -> Failed {
    let reason = if caused_by_tls(&e) {
        Reason::Tls
    } else {
        Reason::Other
    };
    Failed::new(reason, strerror(&e))
}

/// A buffered reader that holds at most `limit` bytes of the peer's
/// answer at once; a line or block longer than that is a protocol error.
pub(crate) struct Reader {
    buf: Vec<u8>,
    start: usize,
    limit: usize,
}

/// Why a read ended without the bytes asked for.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection first.
    Closed,
    /// A read failed.
    Io(std::io::Error),
    /// More than the bound without the end of a line or block.
    TooLong,
}

impl Reader {
    /// A reader that holds at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Reader {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Reads once more from `stream` into the buffer.
    async fn fill(&mut self, stream: &mut Stream) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.len() >= self.limit {
            return Err(ReadError::TooLong);
        }
        let room = (self.limit - self.buf.len()).min(4096);
        self.buf.reserve(room);
        // Into the spare capacity, which is not zeroed first: zeroing 4
        // KiB before each read was a tenth of a Redis check's
        // instructions.
        let mut spare = (&mut self.buf).limit(room);
        match stream.read_buf(&mut spare).await {
            Ok(0) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// The next line, without its `\r\n`.
    pub(crate) async fn line(&mut self, stream: &mut Stream) -> Result<Vec<u8>, ReadError> {
        loop {
            let pending = &self.buf[self.start..];
            if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                let line = pending[..i].to_vec();
                self.start += i + 2;
                return Ok(line);
            }
            self.fill(stream).await?;
        }
    }

    /// The next `n` bytes.
    pub(crate) async fn exact(&mut self, stream: &mut Stream, n: usize) -> Result<Vec<u8>, ReadError> {
        if n > self.limit {
            return Err(ReadError::TooLong);
        }
        while self.buf.len() - self.start < n {
            self.fill(stream).await?;
        }
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        Ok(out)
    }

    /// Reads once more from `stream`: what arrives joins [`Reader::pending`].
    pub(crate) async fn more(&mut self, stream: &mut Stream) -> Result<(), ReadError> {
        self.fill(stream).await
    }

    /// The bytes read and not yet taken.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Takes everything pending.
    pub(crate) fn take_all(&mut self) -> Vec<u8> {
        let out = self.buf[self.start..].to_vec();
        self.start = self.buf.len();
        out
    }
}
