//! A connection of the gRPC endpoint or the webhook, in its listener's
//! table (`accept`, `table`): its reads and writes fail once the table
//! closes it to make room, so that connections opened and left (idle, a
//! preface or a request head never finished) can neither hold memory and
//! descriptors without bound nor keep a fresh connection (the kubelet's
//! probe, the API server) out. The HTTP endpoints' connections need no
//! such wrapper: their task selects on the same signal.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::accept::Admitted;

/// The HTTP/2 client preface.
const PREFACE_LEN: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();

/// One connection: its reads and writes fail once it is evicted, or when
/// its client has not sent the HTTP/2 preface in time, which ends it;
/// dropping it leaves the table.
pub(crate) struct Held {
    stream: TcpStream,
    admitted: Admitted,
    /// Until the preface has come: its bytes read so far, and the deadline.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
}

impl Held {
    /// `stream`, in its table as `admitted`. With `preface`, the
    /// connection is closed unless its client sends the HTTP/2 preface
    /// within that time.
    pub(crate) fn new(stream: TcpStream, admitted: Admitted, preface: Option<Duration>) -> Held {
        Held {
            stream,
            admitted,
            preface: preface.map(|within| (0, Box::pin(tokio::time::sleep(within)))),
        }
    }

    /// `Err` once evicted (and the task woken when that happens).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.admitted.slot.poll_closed(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for Held {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let came = buf.filled().len() - before;
        if let Some((got, deadline)) = &mut self.preface {
            *got += came;
            if *got >= PREFACE_LEN {
                self.preface = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface in time",
                )));
            }
        }
        read
    }
}

impl AsyncWrite for Held {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
