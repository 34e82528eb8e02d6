//! The server's HTTP/2 header blocks as Go's clients take them, under the
//! h2 crate that hyper and tonic use.
//!
//! h2 refuses a response whose header block carries a connection-specific
//! field (`connection`, `keep-alive`, `proxy-connection`,
//! `transfer-encoding`, `upgrade`, or `te` other than `trailers`; RFC 9113
//! §8.2.2): the stream is reset with PROTOCOL_ERROR. x/net's client
//! (net/http's HTTP/2 and grpc-go's transport, both through
//! `http2.Framer.ReadMetaHeaders`) checks only that names and values are
//! valid, and keeps them. The kubelet's verdict on such an app is the
//! status or the gRPC answer; h2 has no setting to relax the rule.
//!
//! [`GoHeaders`] sits between the connection and h2 and follows the
//! frames the server sends. Each header block is decoded (HPACK, RFC
//! 7541) with a table kept as the server's encoder keeps it. A block with
//! nothing h2 refuses goes through as it came, byte for byte. The first
//! one with such a field is written again without it, every field a
//! literal that touches no table, and so is every block after it (h2's
//! table no longer follows the server's from then on). Anything this
//! filter does not follow (a block it cannot decode, a PUSH_PROMISE, a
//! frame out of place) and everything after it goes through untouched,
//! for h2 to judge as it always has.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Frame types and flags (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The largest frame the client accepts (h2's and hyper's default
/// SETTINGS_MAX_FRAME_SIZE): the largest written, and past it h2's error.
const MAX_FRAME: usize = 16_384;

/// The largest header block followed: 64 frames, four times the header
/// list hyper's client accepts. A larger one goes to h2 as it is.
const MAX_BLOCK: usize = 64 * MAX_FRAME;

/// The client's HPACK table size (SETTINGS_HEADER_TABLE_SIZE; hyper's
/// client leaves it at the default).
const TABLE_SIZE: usize = 4096;

/// A stream whose incoming header blocks are made acceptable to h2.
pub(crate) struct GoHeaders<S> {
    inner: S,
    /// Bytes from the server not yet looked at.
    input: BytesMut,
    /// Bytes for h2.
    output: BytesMut,
    /// Payload bytes of a frame that goes through as it is, still to come.
    passing: usize,
    /// The header block being gathered.
    block: Option<Block>,
    decoder: Decoder,
    /// A block has been written again: every later one is too.
    rewriting: bool,
    /// Everything goes through untouched from now on.
    transparent: bool,
    /// The server has closed its side.
    eof: bool,
}

/// A header block split over a HEADERS frame and its CONTINUATIONs.
struct Block {
    /// The frames as they came.
    original: Vec<u8>,
    /// The block fragment, padding and priority taken out.
    fragment: Vec<u8>,
    stream: u32,
    end_stream: bool,
}

impl<S> GoHeaders<S> {
    pub(crate) fn new(inner: S) -> Self {
        GoHeaders {
            inner,
            input: BytesMut::new(),
            output: BytesMut::new(),
            passing: 0,
            block: None,
            decoder: Decoder::new(),
            rewriting: false,
            transparent: false,
            eof: false,
        }
    }

    /// Moves what can be judged from `input` to `output`.
    fn process(&mut self) {
        loop {
            if self.transparent {
                let rest = self.input.split();
                self.output.extend_from_slice(&rest);
                return;
            }
            if self.passing > 0 {
                let n = self.passing.min(self.input.len());
                if n == 0 {
                    return;
                }
                let through = self.input.split_to(n);
                self.output.extend_from_slice(&through);
                self.passing -= n;
                continue;
            }
            if self.input.len() < 9 {
                return;
            }
            let length = usize::from(self.input[0]) << 16
                | usize::from(self.input[1]) << 8
                | usize::from(self.input[2]);
            let kind = self.input[3];
            match kind {
                HEADERS | CONTINUATION if length <= MAX_FRAME => {
                    if self.input.len() < 9 + length {
                        return;
                    }
                    let frame = self.input.split_to(9 + length);
                    self.header_frame(&frame);
                }
                // Within a block only CONTINUATION may come; a PUSH_PROMISE
                // (push is off) or an oversized frame is h2's to refuse.
                _ if self.block.is_some()
                    || kind == PUSH_PROMISE
                    || kind == HEADERS
                    || kind == CONTINUATION =>
                {
                    self.give_up(&[]);
                }
                _ => {
                    let head = self.input.split_to(9);
                    self.output.extend_from_slice(&head);
                    self.passing = length;
                }
            }
        }
    }

    /// Gathers one HEADERS or CONTINUATION frame, and judges the block
    /// when it ends.
    fn header_frame(&mut self, frame: &[u8]) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        match (&mut self.block, kind) {
            (None, HEADERS) => {
                let Some(fragment) = fragment(flags, payload) else {
                    return self.give_up(frame);
                };
                self.block = Some(Block {
                    original: frame.to_vec(),
                    fragment: fragment.to_vec(),
                    stream,
                    end_stream: flags & END_STREAM != 0,
                });
            }
            (Some(block), CONTINUATION)
                if block.stream == stream && block.original.len() + frame.len() <= MAX_BLOCK =>
            {
                block.original.extend_from_slice(frame);
                block.fragment.extend_from_slice(payload);
            }
            _ => return self.give_up(frame),
        }
        if flags & END_HEADERS != 0 {
            self.finish();
        }
    }

    /// Judges a complete block.
    fn finish(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        let Ok(fields) = self.decoder.decode(&block.fragment) else {
            self.output.extend_from_slice(&block.original);
            self.transparent = true;
            return;
        };
        if !self.rewriting && !fields.iter().any(Field::refused_by_h2) {
            self.output.extend_from_slice(&block.original);
            return;
        }
        self.rewriting = true;
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        for field in fields.iter().filter(|f| !f.refused_by_h2()) {
            field.encode(&mut encoded);
        }
        let chunks: Vec<&[u8]> = if encoded.is_empty() {
            vec![&[]]
        } else {
            encoded.chunks(MAX_FRAME).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let mut flags = 0;
            if i == 0 && block.end_stream {
                flags |= END_STREAM;
            }
            if i + 1 == chunks.len() {
                flags |= END_HEADERS;
            }
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let length = (chunk.len() as u32).to_be_bytes();
            self.output.extend_from_slice(&length[1..]);
            self.output.extend_from_slice(&[kind, flags]);
            self.output.extend_from_slice(&block.stream.to_be_bytes());
            self.output.extend_from_slice(chunk);
        }
    }

    /// Lets the block gathered so far, `frame` and everything after go to
    /// h2 as they came.
    fn give_up(&mut self, frame: &[u8]) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.original);
        }
        self.output.extend_from_slice(frame);
        self.transparent = true;
    }
}

/// The block fragment of a HEADERS frame's payload: without the padding
/// and the priority fields. `None` when they do not fit.
fn fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&length, after) = rest.split_first()?;
        pad = usize::from(length);
        rest = after;
    }
    if flags & PRIORITY != 0 {
        rest = rest.get(5..)?;
    }
    rest.get(..rest.len().checked_sub(pad)?)
}

impl<S: AsyncRead + Unpin> AsyncRead for GoHeaders<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A frame cut short: h2 sees it as it came.
                this.give_up(&[]);
                this.process();
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    this.process();
                }
            }
        }
    }
}

write_through!(GoHeaders);

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: Vec<u8>,
    value: Vec<u8>,
    /// Sent as never-indexed (a sensitive value): kept so.
    never_indexed: bool,
}

impl Field {
    /// The fields h2 refuses in a response (h2 `frame/headers.rs`
    /// `HeaderBlock::load`) and x/net keeps.
    fn refused_by_h2(&self) -> bool {
        matches!(
            self.name.as_slice(),
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
        ) || (self.name == b"te" && self.value != b"trailers")
    }

    /// Writes the field as a literal with a literal name that adds
    /// nothing to the table (RFC 7541 §6.2.2, §6.2.3).
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(if self.never_indexed { 0x10 } else { 0x00 });
        for string in [&self.name, &self.value] {
            encode_integer(string.len(), 7, 0, out);
            out.extend_from_slice(string);
        }
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn encode_integer(mut value: usize, n: u32, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Why a block could not be decoded; it then goes to h2 as it came.
#[derive(Debug, PartialEq, Eq)]
struct Undecodable;

/// An HPACK decoder (RFC 7541): the static table, the dynamic table as the
/// server's encoder keeps it, Huffman-coded strings.
struct Decoder {
    /// Newest first.
    table: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    /// The table's size as RFC 7541 §4.1 counts it.
    size: usize,
    /// The largest size the server has set.
    max: usize,
}

impl Decoder {
    fn new() -> Self {
        Decoder {
            table: std::collections::VecDeque::new(),
            size: 0,
            max: TABLE_SIZE,
        }
    }

    /// The fields of one complete header block.
    fn decode(&mut self, mut src: &[u8]) -> Result<Vec<Field>, Undecodable> {
        let mut fields = Vec::new();
        let mut at_start = true;
        while let Some(&first) = src.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(&mut src, 7)?;
                let (name, value) = self.get(index)?;
                fields.push(Field {
                    name,
                    value,
                    never_indexed: false,
                });
            } else if first & 0xE0 == 0x20 {
                // Table size update (§6.3): only at the start of a block.
                let size = integer(&mut src, 5)?;
                if !at_start || size > TABLE_SIZE {
                    return Err(Undecodable);
                }
                self.max = size;
                self.evict(0);
                continue;
            } else {
                // Literal with incremental indexing (§6.2.1), without
                // indexing (§6.2.2) or never indexed (§6.2.3).
                let indexing = first & 0xC0 == 0x40;
                let index = integer(&mut src, if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    string(&mut src)?
                } else {
                    self.get(index)?.0
                };
                let value = string(&mut src)?;
                if indexing {
                    self.insert(name.clone(), value.clone());
                }
                fields.push(Field {
                    name,
                    value,
                    never_indexed: first & 0xF0 == 0x10,
                });
            }
            at_start = false;
        }
        Ok(fields)
    }

    fn get(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), Undecodable> {
        match index {
            0 => Err(Undecodable),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((name.as_bytes().to_vec(), value.as_bytes().to_vec()))
            }
            _ => self.table.get(index - 62).cloned().ok_or(Undecodable),
        }
    }

    /// Adds an entry, evicting the oldest to make room (§4.4).
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        if size > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + 32;
        }
    }
}

/// Reads an integer with an `n`-bit prefix (§5.1).
fn integer(src: &mut &[u8], n: u32) -> Result<usize, Undecodable> {
    let (&first, rest) = src.split_first().ok_or(Undecodable)?;
    *src = rest;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = src.split_first().ok_or(Undecodable)?;
        *src = rest;
        // Past 28 bits no real length or index; refused, as h2 does.
        if shift > 21 {
            return Err(Undecodable);
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Reads a string literal (§5.2).
fn string(src: &mut &[u8]) -> Result<Vec<u8>, Undecodable> {
    let huffman = src.first().ok_or(Undecodable)? & 0x80 != 0;
    let length = integer(src, 7)?;
    if length > src.len() {
        return Err(Undecodable);
    }
    let (bytes, rest) = src.split_at(length);
    *src = rest;
    if huffman {
        huffman_decode(bytes)
    } else {
        Ok(bytes.to_vec())
    }
}

/// The code length of each symbol of HPACK's Huffman code, 0-255 and EOS
/// (RFC 7541 Appendix B). The code is canonical, so the lengths are all
/// it takes to decode.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28,
    28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6,
    6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7,
    8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7,
    15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24,
    23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23,
    23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26,
    26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20,
    21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27,
    27, 27, 26, 30,
];

/// The end-of-string symbol, never part of a string.
const EOS: u16 = 256;

/// The canonical code, as decoding walks it: how many codes have each
/// length, and the symbols in code order.
struct Canonical {
    count: [u16; 31],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut count = [0u16; 31];
        for &length in &HUFFMAN_LENGTHS {
            count[usize::from(length)] += 1;
        }
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&s| HUFFMAN_LENGTHS[usize::from(s)]);
        Canonical { count, symbols }
    })
}

/// Decodes a Huffman-coded string (§5.2): the padding must be a prefix of
/// EOS (all ones) shorter than a byte, and EOS itself may not appear.
fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, Undecodable> {
    let code = canonical();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    // The code read so far, its length, the first code of that length and
    // the index of its symbols (a canonical decoder, as zlib's puff.c).
    let (mut bits, mut length, mut first, mut index) = (0u32, 0usize, 0u32, 0usize);
    let mut ones = true;
    for &byte in bytes {
        for shift in (0..8).rev() {
            let bit = u32::from(byte >> shift) & 1;
            bits |= bit;
            ones &= bit == 1;
            length += 1;
            let count = u32::from(code.count[length]);
            if bits.wrapping_sub(first) < count {
                let symbol = code.symbols[index + (bits - first) as usize];
                if symbol == EOS {
                    return Err(Undecodable);
                }
                out.push(symbol as u8);
                (bits, length, first, index, ones) = (0, 0, 0, 0, true);
                continue;
            }
            index += count as usize;
            first = (first + count) << 1;
            bits <<= 1;
            if length == 30 {
                return Err(Undecodable);
            }
        }
    }
    if length > 7 || !ones {
        return Err(Undecodable);
    }
    Ok(out)
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.into(),
            value: value.into(),
            never_indexed: false,
        }
    }

    #[test]
    fn decodes_rfc_7541_appendix_c_responses_with_huffman() {
        // C.6.1-C.6.3: three responses sharing one table of 256 bytes.
        let mut decoder = Decoder::new();
        decoder.max = 256;
        let hex = |s: &str| {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let first = decoder
            .decode(&hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"))
            .unwrap();
        assert_eq!(
            first,
            vec![
                field(":status", "302"),
                field("cache-control", "private"),
                field("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                field("location", "https://www.example.com"),
            ]
        );
        let second = decoder.decode(&hex("4883 640e ff c1 c0 bf")).unwrap();
        assert_eq!(second[0], field(":status", "307"));
        assert_eq!(second[3], field("location", "https://www.example.com"));
        let third = decoder
            .decode(&hex("88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07"))
            .unwrap();
        assert_eq!(third[2], field("date", "Mon, 21 Oct 2013 20:13:22 GMT"));
        assert_eq!(third[4], field("content-encoding", "gzip"));
        assert_eq!(
            third[5],
            field(
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
            )
        );
        assert_eq!(decoder.size, 215);
    }

    #[test]
    fn bad_blocks_are_undecodable_never_a_panic() {
        let mut decoder = Decoder::new();
        for bad in [
            &[0x80][..],                           // index 0
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], // an index past any table
            &[0xbf],                               // index 62, table empty
            &[0x00, 0x05, b'a'],                   // a string cut short
            &[0x00, 0x81, 0xff],                   // Huffman padding longer than 7 bits
            &[0x00, 0x81, 0x00],                   // padding that is not all ones
            &[0x88, 0x20],                         // a size update after a field
            &[0x3f, 0xe2, 0x1f],                   // a size update over 4,096
            &[0x00, 0x84, 0xff, 0xff, 0xff, 0xff], // EOS inside a string
        ] {
            assert_eq!(decoder.decode(bad), Err(Undecodable), "{bad:x?}");
        }
    }

    #[test]
    fn written_fields_decode_to_themselves() {
        let fields = vec![
            field(":status", "200"),
            field("x-long", &"v".repeat(300)),
            Field {
                name: b"authorization".to_vec(),
                value: b"secret".to_vec(),
                never_indexed: true,
            },
        ];
        let mut out = Vec::new();
        for f in &fields {
            f.encode(&mut out);
        }
        assert_eq!(Decoder::new().decode(&out).unwrap(), fields);
    }

    /// Feeds `bytes` through the filter in `cuts` pieces, as reads of any
    /// size would bring them.
    fn filtered(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut filter = GoHeaders::new(());
        let mut out = Vec::new();
        let mut rest = bytes;
        for &cut in cuts {
            let (piece, after) = rest.split_at(cut.min(rest.len()));
            filter.input.extend_from_slice(piece);
            filter.process();
            out.extend_from_slice(&filter.output.split());
            rest = after;
        }
        filter.input.extend_from_slice(rest);
        filter.process();
        filter.give_up(&[]);
        filter.process();
        out.extend_from_slice(&filter.output.split());
        out
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_panic_the_decoder(block in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Decoder::new().decode(&block);
            let _ = huffman_decode(&block);
        }

        #[test]
        fn no_frames_panic_the_filter_and_frames_without_a_block_pass_as_they_came(
            frames in proptest::collection::vec(
                (0u8..12, proptest::prelude::any::<u8>(), 0u32..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..8,
            ),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let mut bytes = Vec::new();
            for (kind, flags, stream, payload) in &frames {
                bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                bytes.extend_from_slice(&[*kind, *flags]);
                bytes.extend_from_slice(&stream.to_be_bytes());
                bytes.extend_from_slice(payload);
            }
            let out = filtered(&bytes, &cuts);
            // Frames that carry no header block pass as they came, however
            // the reads cut them.
            if !frames.iter().any(|(kind, ..)| *kind == HEADERS) {
                proptest::prop_assert_eq!(out, bytes);
            }
        }
    }

    #[test]
    fn a_block_with_a_connection_field_is_written_again_without_it() {
        let block = [
            field(":status", "200"),
            field("connection", "keep-alive"),
            field("x-a", "1"),
        ];
        let mut fragment = vec![0x88]; // :status 200, indexed
        block[1].encode(&mut fragment);
        // x-a, incrementally indexed: the server's table now has it.
        fragment.extend_from_slice(&[0x40, 3, b'x', b'-', b'a', 1, b'1']);
        let mut bytes = (fragment.len() as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[HEADERS, END_HEADERS | END_STREAM, 0, 0, 0, 1]);
        bytes.extend_from_slice(&fragment);
        // A second block on stream 3 refers to the server's table entry.
        bytes.extend_from_slice(&[0, 0, 2, HEADERS, END_HEADERS, 0, 0, 0, 3, 0x88, 0xbe]);
        let out = filtered(&bytes, &[5, 3]);
        let mut decoder = Decoder::new();
        let first_length = usize::from(out[2]);
        assert_eq!(out[3..5], [HEADERS, END_HEADERS | END_STREAM]);
        assert_eq!(
            decoder.decode(&out[9..9 + first_length]).unwrap(),
            vec![block[0].clone(), block[2].clone()]
        );
        let second = &out[9 + first_length..];
        assert_eq!(second[3..9], [HEADERS, END_HEADERS, 0, 0, 0, 3]);
        // Written again too, as literals: the client's table never got x-a.
        assert_eq!(
            decoder.decode(&second[9..]).unwrap(),
            vec![block[0].clone(), block[2].clone()]
        );
        assert!(decoder.table.is_empty());
    }

    #[test]
    fn connection_specific_fields_are_the_ones_h2_refuses() {
        assert!(field("connection", "keep-alive").refused_by_h2());
        assert!(field("te", "gzip").refused_by_h2());
        assert!(!field("te", "trailers").refused_by_h2());
        assert!(!field("content-type", "application/grpc").refused_by_h2());
    }
}
