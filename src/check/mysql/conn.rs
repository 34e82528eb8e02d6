//! A MySQL connection after the greeting: packets with their sequence
//! numbers, plain or TLS, and the commands the tools send.

use super::{Error, MAX_PACKET, MAX_RESULT, MORE_RESULTS, conn_lost, server_error};
use crate::check::Reason;
use crate::check::wire::{self, ReadError, Reader, Stream};

/// A connection: the stream, and the packet sequence numbers.
pub(super) struct Conn {
    /// TCP, or TLS once upgraded.
    pub(super) stream: Stream,
    /// Whether `stream` is TLS.
    pub(super) encrypted: bool,
    reader: Reader,
    seq: u8,
}

impl Conn {
    pub(super) fn new(stream: Stream) -> Self {
        Conn {
            stream,
            encrypted: false,
            reader: Reader::new(MAX_PACKET + 4),
            seq: 0,
        }
    }

    /// Whether bytes arrived that were not read yet: none may come
    /// between the request for TLS and the handshake.
    pub(super) fn has_pending(&self) -> bool {
        !self.reader.pending().is_empty()
    }

    /// Sends one packet with the next sequence number.
    pub(super) async fn send(&mut self, payload: &[u8]) -> Result<(), Error> {
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
    pub(super) async fn packet(&mut self) -> Result<Vec<u8>, ReadError> {
        self.packet_or_skip().await?.ok_or(ReadError::TooLong)
    }

    /// A command answered by one packet: OK (ping) or a string (status).
    pub(super) async fn simple(&mut self, command: &[u8]) -> Result<String, Error> {
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
    pub(super) async fn query(&mut self, query: &str) -> Result<String, Error> {
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
