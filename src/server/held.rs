//! A cap on a listener's open connections: accepting one more past it
//! closes the oldest, so that connections opened and left (idle, a preface
//! or a request head never finished) can neither hold memory and
//! descriptors without bound nor keep a fresh connection (the kubelet's
//! probe, the API server) out. The gRPC endpoint and the webhook use it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client preface.
const PREFACE_LEN: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();

/// The open connections of a listener, oldest first.
#[derive(Default)]
pub(crate) struct Open {
    next: u64,
    by_age: VecDeque<(u64, CancellationToken)>,
}

impl Open {
    /// Takes `stream` in, closing the oldest connection first when `cap`
    /// are open. With `preface`, the connection is closed unless its
    /// client sends the HTTP/2 preface within that time.
    pub(crate) fn admit(
        open: &Arc<Mutex<Open>>,
        stream: TcpStream,
        cap: usize,
        preface: Option<Duration>,
    ) -> Held {
        let mut table = open.lock().expect("not poisoned");
        while table.by_age.len() >= cap && table.evict_oldest() {}
        let id = table.next;
        table.next += 1;
        let evicted = CancellationToken::new();
        table.by_age.push_back((id, evicted.clone()));
        Held {
            stream,
            evicted: Box::pin(evicted.cancelled_owned()),
            preface: preface.map(|within| (0, Box::pin(tokio::time::sleep(within)))),
            id,
            open: Arc::clone(open),
        }
    }

    /// Closes the oldest connection; `false` when none is open.
    pub(crate) fn evict_oldest(&mut self) -> bool {
        match self.by_age.pop_front() {
            Some((_, evicted)) => {
                evicted.cancel();
                true
            }
            None => false,
        }
    }
}

/// One connection: its reads and writes fail once it is evicted, or when
/// its client has not sent the HTTP/2 preface in time, which ends it;
/// dropping it leaves the table.
pub(crate) struct Held {
    stream: TcpStream,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Until the preface has come: its bytes read so far, and the deadline.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
    id: u64,
    open: Arc<Mutex<Open>>,
}

impl Held {
    /// `Err` once evicted (and the task woken when that happens).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.evicted.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = self.open.lock().expect("not poisoned");
        if let Some(at) = table.by_age.iter().position(|(id, _)| *id == self.id) {
            table.by_age.remove(at);
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
