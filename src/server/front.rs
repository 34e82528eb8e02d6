//! The front path: a plain probe answered from the connection's bytes,
//! before hyper sees them. A kubelet probe is one small head in one
//! segment (`GET /readyz HTTP/1.1`, `Host`, `User-Agent`, `Accept`,
//! `Connection: close`); answering it here skips hyper's buffers, its
//! header map and its encoder, which cost more than the answer itself.
//!
//! Only what is unambiguous is answered here: one whole HTTP/1.1 head,
//! alone in what was read, `GET` or `HEAD` of `/healthz`, `/startupz`,
//! `/livez` or `/readyz` with no query, and no header that gives the
//! request a body, an expectation or an upgrade. It is parsed by
//! `httparse` with hyper's settings, answered by [`Endpoints::plain`] and
//! written as hyper writes it (`Answer::head`). Anything else — a partial
//! head, pipelined requests, any other request — goes to hyper with the
//! bytes read so far, and hyper serves the connection from then on
//! exactly as if it had read them itself.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::answer::{Answer, visible};
use super::budget::SHUTDOWN_GRACE;
use super::endpoints::Endpoints;
use super::route::Route;
use super::table::Slot;

/// The most bytes read for a head answered here: a kubelet
/// probe's head is about 120 bytes, one with a few `httpHeaders` a few
/// hundred. A longer head goes to hyper (whose limit, at least 8 KiB, is
/// above this one).
const MAX_HEAD: usize = 2048;

/// The most header lines of a head answered here.
const MAX_HEADERS: usize = 16;

/// What one read of a connection gave.
pub(crate) enum Read {
    /// Nothing after all: the readiness was stale.
    Nothing,
    /// The client closed the connection, or it failed.
    Closed,
    /// A plain probe, answered.
    Answered(Reply),
    /// Anything else: hyper serves the connection from these bytes on.
    Hyper(Bytes),
}

/// A plain probe's answer as bytes to write.
pub(crate) struct Reply {
    head: Vec<u8>,
    /// Empty for `HEAD`. Held until written: a large one holds its share
    /// of the answers' budget (`answers`).
    body: Bytes,
    /// The client asked for the connection to be closed after it.
    pub(crate) close: bool,
}

/// Reads what `stream` has (it was readable) and answers it if it is a
/// plain probe from `peer`.
pub(crate) fn read(stream: &TcpStream, endpoints: &Endpoints, peer: SocketAddr) -> Read {
    // One buffer per thread, reused: nothing is held between reads, and
    // nothing is zeroed or allocated for each.
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(MAX_HEAD));
    }
    BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        match stream.try_read_buf(buf) {
            Ok(0) => Read::Closed,
            Ok(_) => match answer(buf, endpoints, peer) {
                Some(reply) => Read::Answered(reply),
                None => Read::Hyper(Bytes::copy_from_slice(buf)),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Nothing,
            Err(_) => Read::Closed,
        }
    })
}

/// The reply to `bytes` when they are one plain probe's whole head and
/// nothing else; `None` leaves them to hyper.
fn answer(bytes: &[u8], endpoints: &Endpoints, peer: SocketAddr) -> Option<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    // Hyper's parser settings are httparse's defaults.
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
        _ => return None,
    }
    if request.version != Some(1) {
        return None;
    }
    let head = match request.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let route = match request.path? {
        path @ ("/healthz" | "/startupz" | "/livez" | "/readyz") => Route::parse(path),
        _ => return None,
    };
    let mut close = false;
    for header in request.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(header.value, "close");
        } else if [
            &b"content-length"[..],
            b"transfer-encoding",
            b"expect",
            b"upgrade",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
    }
    let named = |wanted: &'static [u8]| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.as_bytes().eq_ignore_ascii_case(wanted))
            .map(|h| h.value)
    };
    let answer = endpoints.plain(&route, named(b"accept"), || named(b"authorization").next(), peer)?;
    endpoints.count(&route, answer.status);
    Some(Reply::new(answer, head, close))
}

/// Whether a `Connection` value lists `token`, as hyper reads it: a
/// comma-separated list, compared without case, of a value that is
/// visible ASCII.
fn has_token(value: &[u8], token: &str) -> bool {
    visible(value).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

impl Reply {
    fn new(answer: Answer, head: bool, close: bool) -> Reply {
        Reply {
            head: answer.head(close),
            body: if head { Bytes::new() } else { answer.body },
            close,
        }
    }

    /// Writes the reply to `stream`: at once when the socket takes it
    /// whole (as it takes any answer shorter than its 8 KiB buffer),
    /// else as it drains.
    pub(crate) async fn write(mut self, stream: &mut TcpStream) -> io::Result<()> {
        let slices = [IoSlice::new(&self.head), IoSlice::new(&self.body)];
        let written = match stream.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        let in_head = written.min(self.head.len());
        self.body.advance(written - in_head);
        stream.write_all(&self.head[in_head..]).await?;
        stream.write_all(&self.body).await
    }
}

/// A connection whose first bytes the front path read: hyper reads them
/// first, then the socket.
pub(crate) struct Prefixed {
    pub(crate) read: Bytes,
    pub(crate) stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves the plain probes of a connection from their bytes (`front`)
/// until it ends (`None`) or a request for hyper arrives: then the bytes
/// read of it. The sweep closes the connection if no head follows in time.
pub(crate) async fn serve(
    stream: &mut TcpStream,
    slot: &Slot,
    endpoints: &Endpoints,
    peer: SocketAddr,
) -> Option<Bytes> {
    let mut nodelay = false;
    loop {
        tokio::select! {
            biased;
            () = slot.closed() => return None,
            readable = stream.readable() => readable.ok()?,
        }
        slot.reading.store(true, Ordering::Release);
        if !nodelay {
            let _ = stream.set_nodelay(true);
            nodelay = true;
        }
        let reply = match read(stream, endpoints, peer) {
            Read::Nothing => continue,
            Read::Closed => return None,
            Read::Hyper(read) => return Some(read),
            Read::Answered(reply) => reply,
        };
        slot.begun.fetch_add(1, Ordering::AcqRel);
        slot.ended.fetch_add(1, Ordering::AcqRel);
        let close = reply.close;
        if !write(stream, slot, reply).await || close {
            let _ = stream.shutdown().await;
            return None;
        }
    }
}

/// Writes a front-path reply; false if the connection must end. Idle
/// while it drains, as a connection whose answer hyper writes: closed at
/// once to make room, given the grace to finish when the server stops.
async fn write(stream: &mut TcpStream, slot: &Slot, reply: Reply) -> bool {
    let mut write = std::pin::pin!(reply.write(stream));
    tokio::select! {
        biased;
        () = slot.closed() => {
            if slot.stopping.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, write).await;
            }
            false
        }
        written = &mut write => written.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair of real sockets: the client's end and the server's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// What the front path makes of `sent`, written in one piece.
    async fn front(sent: &[u8]) -> Read {
        let (endpoints, _, _) = super::super::endpoints::tests::endpoints();
        let (mut client, server) = pair().await;
        client.write_all(sent).await.unwrap();
        loop {
            server.readable().await.unwrap();
            match read(&server, &endpoints, client.local_addr().unwrap()) {
                Read::Nothing => continue,
                read => return read,
            }
        }
    }

    const KUBELET: &str = "Host: 10.0.0.7:9775\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n";

    #[tokio::test]
    async fn a_plain_probe_is_answered_from_its_bytes() {
        let cases = [
            (
                "GET /readyz",
                "Connection: close\r\n",
                true,
                "503 Service Unavailable",
            ),
            ("GET /livez", "", false, "200 OK"),
            (
                "HEAD /startupz",
                "connection: Keep-Alive, CLOSE\r\n",
                true,
                "200 OK",
            ),
            ("GET /healthz", "Connection: keep-alive\r\n", false, "200 OK"),
        ];
        for (line, extra, close, status) in cases {
            let sent = format!("{line} HTTP/1.1\r\n{KUBELET}{extra}\r\n");
            let Read::Answered(reply) = front(sent.as_bytes()).await else {
                panic!("{sent:?} went to hyper");
            };
            let head = String::from_utf8(reply.head.clone()).unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{sent:?}: {head}"
            );
            assert_eq!(
                head.contains("\r\nconnection: close\r\n"),
                close,
                "{sent:?}: {head}"
            );
            assert_eq!(reply.close, close, "{sent:?}");
            assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
            assert_eq!(reply.body.is_empty(), line.starts_with("HEAD"), "{sent:?}");
        }
    }

    #[tokio::test]
    async fn anything_else_goes_to_hyper_with_every_byte_read() {
        let probe = |line: &str, extra: &str| format!("{line}\r\n{KUBELET}{extra}\r\n");
        let mut cases = vec![
            probe("POST /readyz HTTP/1.1", ""),
            probe("get /readyz HTTP/1.1", ""),
            probe("GET /readyz HTTP/1.0", ""),
            probe("GET /readyz?verbose HTTP/1.1", ""),
            probe("GET /readyz? HTTP/1.1", ""),
            probe("GET /readyz/a HTTP/1.1", ""),
            probe("GET /metrics HTTP/1.1", ""),
            probe("GET http://10.0.0.7/readyz HTTP/1.1", ""),
            probe("GET /readyz HTTP/1.1", "Content-Length: 0\r\n"),
            probe("GET /readyz HTTP/1.1", "Transfer-Encoding: chunked\r\n"),
            probe("GET /readyz HTTP/1.1", "Expect: 100-continue\r\n"),
            probe("GET /readyz HTTP/1.1", "Upgrade: h2c\r\n"),
            probe("GET /readyz HTTP/1.1", "Accept: application/health+json\r\n"),
            probe("GET /readyz HTTP/1.1", &"X-Pad: 1\r\n".repeat(MAX_HEADERS)),
            probe("GET /readyz HTTP/1.1", "Bad Header: 1\r\n"),
            // Half a head; two heads at once.
            format!("GET /readyz HTTP/1.1\r\n{KUBELET}"),
            probe("GET /readyz HTTP/1.1", "").repeat(2),
        ];
        // Longer than what is read here: hyper gets the first part.
        cases.push(probe(
            "GET /readyz HTTP/1.1",
            &format!("X-Pad: {}\r\n", "a".repeat(MAX_HEAD)),
        ));
        for sent in cases {
            let Read::Hyper(read) = front(sent.as_bytes()).await else {
                panic!("{sent:?} was not left to hyper");
            };
            let whole = sent.len().min(MAX_HEAD);
            assert_eq!(&read[..], &sent.as_bytes()[..whole], "{sent:?}");
        }
    }

    #[tokio::test]
    async fn hyper_reads_the_bytes_read_first_then_the_socket() {
        let (mut client, server) = pair().await;
        let mut prefixed = Prefixed {
            read: Bytes::from_static(b"GET /re"),
            stream: server,
        };
        client.write_all(b"adyz HTTP/1.1\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut all = String::new();
        prefixed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET /readyz HTTP/1.1\r\n\r\n");
        prefixed.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        prefixed.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "HTTP/1.1 200 OK\r\n\r\n");
    }
}
