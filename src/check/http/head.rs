//! HTTP/1.x response heads as Go reads them, before hyper does.
//!
//! hyper's parser (httparse) and Go's `ReadResponse` disagree on heads
//! that real apps send: two spaces before the status code, an empty line
//! before the status line, a space before a header's colon, a
//! `Transfer-Encoding` on HTTP/1.0, a `Content-Length` of `2, 2`. hyper
//! has no switch for most of them, so [`GoHead`] sits between the socket
//! and hyper's HTTP/1 client and reads each response head first, with
//! Go's rules (Go ≥ 1.24):
//!
//! - a head Go refuses fails the read with Go's error, so that hyper never
//!   judges it ([`Refused`]);
//! - a head Go accepts goes on as it is when hyper frames its body as Go
//!   does, the common case, with no copy when it arrived in one read;
//! - otherwise it goes on rewritten into the head hyper reads the same
//!   way: status line `HTTP/1.x CODE`, folded lines joined, fields whose
//!   name has a space (a key nobody looks up in Go) and `Transfer-Encoding`
//!   below HTTP/1.1 (ignored by Go) left out.
//!
//! Sources: go:`net/http/response.go` `ReadResponse`, go:`net/http/
//! transfer.go` `readTransfer`, `parseTransferEncoding`, `fixLength`,
//! `parseContentLength`, `fixTrailer`; go:`net/textproto/reader.go`
//! `readMIMEHeader`, `readContinuedLineSlice`, `canonicalMIMEHeaderKey`.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Go's error for a response head it refuses, carried to the check
/// through hyper as the cause of an I/O error.
#[derive(Debug)]
pub(super) struct Refused(pub(super) String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// What Go makes of the first bytes of a response.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// The head is not complete yet.
    Incomplete,
    /// `ReadResponse` fails with this error.
    Refused(String),
    /// A head Go accepts, `len` bytes long; `rewrite` is the head hyper
    /// must read instead to frame the body as Go does. An informational
    /// (1xx but 101) head is followed by another one.
    Accepted {
        len: usize,
        rewrite: Option<Vec<u8>>,
        informational: bool,
    },
}

/// Reads the response head at the start of `bytes` as Go's
/// `ReadResponse` does; `eof`: no more bytes will come.
pub(super) fn read_head(bytes: &[u8], eof: bool) -> Head {
    match parse(bytes, eof) {
        Ok(head) => head,
        Err(Stop::Incomplete) => Head::Incomplete,
        Err(Stop::Refused(why)) => Head::Refused(why),
    }
}

/// Why parsing stopped short.
enum Stop {
    Incomplete,
    Refused(String),
}

fn refused<T>(why: String) -> Result<T, Stop> {
    Err(Stop::Refused(why))
}

/// The lines of a head, as bufio's `ReadLine` cuts them: ended by `\n`,
/// one `\r` before it dropped; at the end of the stream, what is left.
struct Lines<'a> {
    bytes: &'a [u8],
    pos: usize,
    eof: bool,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Result<&'a [u8], Stop> {
        let rest = &self.bytes[self.pos..];
        match memchr::memchr(b'\n', rest) {
            Some(at) => {
                self.pos += at + 1;
                Ok(rest[..at].strip_suffix(b"\r").unwrap_or(&rest[..at]))
            }
            // ReadResponse turns the end of the stream inside a head into
            // io.ErrUnexpectedEOF.
            None if self.eof && rest.is_empty() => refused("unexpected EOF".into()),
            None if self.eof => {
                self.pos = self.bytes.len();
                Ok(rest)
            }
            None => Err(Stop::Incomplete),
        }
    }

    /// Whether the next line continues the current one (textproto
    /// `skipSpace`).
    fn continued(&self) -> Result<bool, Stop> {
        match self.bytes.get(self.pos) {
            Some(&b) => Ok(b == b' ' || b == b'\t'),
            None if self.eof => Ok(false),
            None => Err(Stop::Incomplete),
        }
    }
}

/// A header field as `readMIMEHeader` reads it.
struct Field<'a> {
    /// The name, uncanonicalised; `None` when it has a space, which Go
    /// keeps as a key of its own that no lookup finds.
    name: Option<&'a [u8]>,
    /// The value, leading blanks removed, folded lines joined.
    value: Cow<'a, [u8]>,
    /// Whether it was folded over more than one line.
    folded: bool,
}

/// The header fields after the status line; `None` at the blank line.
fn next_field<'a>(lines: &mut Lines<'a>) -> Result<Option<Field<'a>>, Stop> {
    let line = lines.next()?;
    if line.is_empty() {
        return Ok(None);
    }
    // mustHaveFieldNameColon
    let Some(colon) = memchr::memchr(b':', line) else {
        return refused(format!("malformed MIME header: missing colon: {}", quote(line)));
    };
    // A field's first line starts with no blank (that would continue the
    // previous one), so trimming leaves the colon where it is.
    let first = trim(line);
    let mut kv = Cow::Borrowed(first);
    let mut folded = false;
    while lines.continued()? {
        let next = match lines.next() {
            Ok(next) => next,
            // readContinuedLineSlice ends the field where a continuation
            // line cannot be read.
            Err(Stop::Refused(_)) => break,
            Err(stop) => return Err(stop),
        };
        let joined = kv.to_mut();
        joined.push(b' ');
        joined.extend_from_slice(trim(next));
        folded = true;
    }
    let malformed = |kv: &[u8]| format!("malformed MIME header line: {}", String::from_utf8_lossy(kv));
    let (name, value) = (&kv[..colon], &kv[colon + 1..]);
    // canonicalMIMEHeaderKey: token bytes, or spaces (kept, not canonical).
    if name.is_empty() || !name.iter().all(|&b| is_token(b) || b == b' ') {
        return refused(malformed(&kv));
    }
    if !value.iter().all(|&b| is_value_byte(b)) {
        return refused(malformed(&kv));
    }
    let spaced = name.contains(&b' ');
    let skip = value.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let field = match kv {
        Cow::Borrowed(kv) => Field {
            name: (!spaced).then_some(&kv[..colon]),
            value: Cow::Borrowed(&kv[colon + 1 + skip..]),
            folded,
        },
        Cow::Owned(kv) => Field {
            // A folded field's name is on its first line, unfolded.
            name: (!spaced).then(|| &first[..colon]),
            value: Cow::Owned(kv[colon + 1 + skip..].to_vec()),
            folded,
        },
    };
    Ok(Some(field))
}

/// The framing fields, as `readTransfer` looks them up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    ContentLength,
    TransferEncoding,
    Trailer,
    Other,
}

fn framing(name: Option<&[u8]>) -> Framing {
    match name {
        Some(n) if n.eq_ignore_ascii_case(b"content-length") => Framing::ContentLength,
        Some(n) if n.eq_ignore_ascii_case(b"transfer-encoding") => Framing::TransferEncoding,
        Some(n) if n.eq_ignore_ascii_case(b"trailer") => Framing::Trailer,
        _ => Framing::Other,
    }
}

fn parse(bytes: &[u8], eof: bool) -> Result<Head, Stop> {
    let mut lines = Lines { bytes, pos: 0, eof };
    let status = status_line(&mut lines)?;
    no_initial_continuation(&mut lines)?;
    let from = lines.pos;
    let scan = scan_fields(&mut lines)?;
    let block = Block {
        bytes: &bytes[..lines.pos],
        from,
    };
    let chunked = transfer_encoding(&scan, status.at_least_11, &block)?;
    content_length(&scan, &block)?;
    if chunked {
        trailer_keys(&scan, &block)?;
    }
    let ignored_te = scan.te > 0 && !status.at_least_11;
    let rewrite = (!status.plain || scan.odd || ignored_te).then(|| rewritten(&status, &block));
    Ok(Head::Accepted {
        len: block.bytes.len(),
        rewrite,
        informational: (100..200).contains(&status.number) && status.number != 101,
    })
}

/// What the status line says.
struct StatusLine<'a> {
    code: &'a [u8],
    number: u16,
    at_least_11: bool,
    /// Taken as it is by httparse, so the head needs no rewriting for it.
    plain: bool,
}

/// `ReadResponse`: the status line, `proto SP+ code [SP reason]`.
fn status_line<'a>(lines: &mut Lines<'a>) -> Result<StatusLine<'a>, Stop> {
    let line = lines.next()?;
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return refused(format!("malformed HTTP response {}", quote(line)));
    };
    let proto = &line[..space];
    let status = &line[space + 1..];
    let status = &status[status.iter().take_while(|&&b| b == b' ').count()..];
    let code = &status[..status.iter().position(|&b| b == b' ').unwrap_or(status.len())];
    let Some(number) = atoi3(code) else {
        return refused(format!("malformed HTTP status code {}", quote(code)));
    };
    let Some(at_least_11) = http_version(proto).map(|(major, minor)| major > 1 || major == 1 && minor >= 1)
    else {
        return refused(format!("malformed HTTP version {}", quote(proto)));
    };
    let reason = &status[code.len()..];
    // What httparse takes as it is: HTTP/1.0 or 1.1, one space, three
    // digits, a reason of visible bytes.
    let plain = (proto == b"HTTP/1.1" || proto == b"HTTP/1.0")
        && status.len() + 9 == line.len()
        && code.iter().all(u8::is_ascii_digit)
        && reason.iter().all(|&b| b == b'\t' || b >= b' ' && b != 0x7f);
    Ok(StatusLine {
        code,
        number,
        at_least_11,
        plain,
    })
}

/// `readMIMEHeader`: the first line may not continue a field.
fn no_initial_continuation(lines: &mut Lines<'_>) -> Result<(), Stop> {
    if !lines.continued()? {
        return Ok(());
    }
    let line = lines.next()?;
    // Read with a limit of 80 bytes ("errorLimit").
    if line.len() > 80 {
        return refused("message too large".into());
    }
    refused(format!(
        "malformed MIME header initial line: {}",
        String::from_utf8_lossy(line)
    ))
}

/// The framing fields seen while reading the header block.
struct Scan<'a> {
    /// A field was folded or has a name Go keeps but no lookup finds.
    odd: bool,
    te: usize,
    te_first: Cow<'a, [u8]>,
    cl: usize,
    cl_first: Cow<'a, [u8]>,
    cl_differ: bool,
    trailer: bool,
}

/// `readMIMEHeader`: every field up to the blank line, counting the ones
/// `readTransfer` looks up.
fn scan_fields<'a>(lines: &mut Lines<'a>) -> Result<Scan<'a>, Stop> {
    let mut scan = Scan {
        odd: false,
        te: 0,
        te_first: Cow::Borrowed(b""),
        cl: 0,
        cl_first: Cow::Borrowed(b""),
        cl_differ: false,
        trailer: false,
    };
    while let Some(field) = next_field(lines)? {
        scan.odd |= field.folded || field.name.is_none();
        match framing(field.name) {
            Framing::TransferEncoding => {
                scan.te += 1;
                if scan.te == 1 {
                    scan.te_first = field.value;
                }
            }
            Framing::ContentLength => {
                scan.cl += 1;
                if scan.cl == 1 {
                    scan.cl_first = field.value;
                } else if trim_string(&field.value) != trim_string(&scan.cl_first) {
                    scan.cl_differ = true;
                }
            }
            Framing::Trailer => scan.trailer = true,
            Framing::Other => {}
        }
    }
    Ok(scan)
}

/// A head read to its blank line; its fields start at `from`.
struct Block<'a> {
    bytes: &'a [u8],
    from: usize,
}

impl<'a> Block<'a> {
    fn fields(&self) -> impl Iterator<Item = Field<'a>> {
        let mut lines = Lines {
            bytes: self.bytes,
            pos: self.from,
            eof: true,
        };
        std::iter::from_fn(move || next_field(&mut lines).ok().flatten())
    }

    /// The values of one framing field, as Go prints a `[]string`.
    fn values(&self, which: Framing) -> String {
        let list: Vec<String> = self
            .fields()
            .filter(|f| framing(f.name) == which)
            .map(|f| quote(&f.value))
            .collect();
        format!("[{}]", list.join(" "))
    }
}

/// `readTransfer`: `parseTransferEncoding` ignores the field below
/// HTTP/1.1, and takes exactly one `chunked` field above. Whether the body
/// is chunked.
fn transfer_encoding(scan: &Scan<'_>, at_least_11: bool, block: &Block<'_>) -> Result<bool, Stop> {
    if scan.te == 0 || !at_least_11 {
        return Ok(false);
    }
    if scan.te > 1 {
        return refused(format!(
            "too many transfer encodings: {}",
            block.values(Framing::TransferEncoding)
        ));
    }
    if !scan.te_first.eq_ignore_ascii_case(b"chunked") {
        return refused(format!(
            "unsupported transfer encoding: {}",
            quote(&scan.te_first)
        ));
    }
    Ok(true)
}

/// `fixLength`: equal duplicates, then a number, whatever the status.
fn content_length(scan: &Scan<'_>, block: &Block<'_>) -> Result<(), Stop> {
    if scan.cl_differ {
        return refused(format!(
            "http: message cannot contain multiple Content-Length headers; got {}",
            block.values(Framing::ContentLength)
        ));
    }
    if scan.cl > 0 {
        let length = trim_string(&scan.cl_first);
        if length.is_empty() {
            return refused("invalid empty Content-Length \"\"".into());
        }
        if !parse_uint63(length) {
            return refused(format!("bad Content-Length {}", quote(length)));
        }
    }
    Ok(())
}

/// `fixTrailer`: a chunked body's Trailer may not name the framing.
fn trailer_keys(scan: &Scan<'_>, block: &Block<'_>) -> Result<(), Stop> {
    if !scan.trailer {
        return Ok(());
    }
    for field in block.fields().filter(|f| framing(f.name) == Framing::Trailer) {
        for key in field.value.split(|&b| b == b',').map(trim_string) {
            if key.iter().all(|&b| is_token(b)) {
                for bad in ["Transfer-Encoding", "Trailer", "Content-Length"] {
                    if key.eq_ignore_ascii_case(bad.as_bytes()) {
                        return refused(format!("bad trailer key {bad:?}"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The head as httparse can take it: the version Go settled on, the code
/// without its reason, and the fields Go keeps (below HTTP/1.1 without
/// Transfer-Encoding), each on one line.
fn rewritten(status: &StatusLine<'_>, block: &Block<'_>) -> Vec<u8> {
    let mut head = Vec::with_capacity(block.bytes.len());
    head.extend_from_slice(if status.at_least_11 {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    });
    head.extend_from_slice(status.code);
    head.extend_from_slice(b"\r\n");
    for field in block.fields() {
        let Some(name) = field.name else { continue };
        if !status.at_least_11 && framing(Some(name)) == Framing::TransferEncoding {
            continue;
        }
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(&field.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `strconv.Atoi` of a three-byte status code, refused below zero.
fn atoi3(code: &[u8]) -> Option<u16> {
    if code.len() != 3 {
        return None;
    }
    let digits = match code[0] {
        b'+' => &code[1..],
        b'-' => return (code[1..].iter().all(|&b| b == b'0')).then_some(0),
        _ => code,
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
}

/// `ParseHTTPVersion`: `HTTP/1.1`, `HTTP/1.0`, or `HTTP/` and a digit, a
/// dot and a digit.
fn http_version(proto: &[u8]) -> Option<(u8, u8)> {
    match proto {
        b"HTTP/1.1" => Some((1, 1)),
        b"HTTP/1.0" => Some((1, 0)),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((major - b'0', minor - b'0'))
        }
        _ => None,
    }
}

/// `strconv.ParseUint(s, 10, 63)` succeeds.
fn parse_uint63(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter().all(u8::is_ascii_digit)
        && s.iter()
            .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .is_some_and(|n| n < 1 << 63)
}

/// textproto `trim`: spaces and tabs off both ends.
fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let end = s.len()
        - s[start..]
            .iter()
            .rev()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    &s[start..end]
}

/// textproto `TrimString`: ASCII spaces (space, tab, CR, LF) off both ends.
fn trim_string(s: &[u8]) -> &[u8] {
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().take_while(|b| blank(b)).count();
    let end = s.len() - s[start..].iter().rev().take_while(|b| blank(b)).count();
    &s[start..end]
}

/// textproto `validHeaderFieldByte`: an RFC 7230 token byte.
fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// [`is_token`] by byte: a table, as the check runs on every name byte of
/// every response.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~');
        b += 1;
    }
    table
};

/// textproto `validHeaderValueByte`: visible, space, tab or obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b >= b' ' && b != 0x7f
}

/// Go's `%q` of a byte string (strconv.Quote): invalid UTF-8 as `\x..`.
pub(super) fn quote(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// Whether `bytes` hold a blank line: the end of a head.
fn has_blank_line(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| matches!(&bytes[at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// How many bytes of a head are held at most before it is handed to
/// hyper unjudged, for hyper to refuse as too large.
const MAX_HELD: usize = super::MAX_HEAD_BYTES + 1;

/// A stream whose response heads are read as Go reads them before hyper
/// sees them (see the module's documentation).
pub(super) struct GoHead<T> {
    inner: T,
    /// Bytes read and not yet handed on: a head not yet complete, and
    /// what came after it.
    held: Vec<u8>,
    /// How many bytes of `held` hyper has had (handed on a piece at a
    /// time, without moving the rest).
    handed: usize,
    /// How many bytes of `held` after those are judged, ready for hyper.
    ready: usize,
    /// Whether the bytes read next belong to a response head.
    in_head: bool,
    /// The stream has ended.
    eof: bool,
    /// `held` may now hold a whole head (or one Go refuses already).
    judge: bool,
}

impl<T> GoHead<T> {
    pub(super) fn new(inner: T) -> Self {
        GoHead {
            inner,
            held: Vec::new(),
            handed: 0,
            ready: 0,
            in_head: true,
            eof: false,
            judge: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GoHead<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[this.handed..this.handed + n]);
                this.handed += n;
                this.ready -= n;
                if this.handed == this.held.len() {
                    this.held.clear();
                    this.handed = 0;
                } else if this.ready == 0 {
                    // The rest is the next head: judged from its start.
                    this.held.drain(..this.handed);
                    this.handed = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if !this.in_head {
                if !this.held.is_empty() {
                    this.ready = this.held.len();
                    continue;
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.judge || this.eof {
                this.judge = false;
                if this.eof && this.held.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match read_head(&this.held, this.eof) {
                    Head::Incomplete if this.eof => this.in_head = false,
                    Head::Incomplete => {}
                    judged => {
                        if let Some(err) = this.judged(judged) {
                            return Poll::Ready(Err(err));
                        }
                    }
                }
                continue;
            }
            if this.held.len() >= MAX_HELD {
                // Too large: hyper refuses it in its own words.
                this.in_head = false;
                continue;
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Read more, into hyper's buffer.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let new = &buf.filled()[before..];
            if new.is_empty() {
                this.eof = true;
                continue;
            }
            if this.held.is_empty()
                && let Head::Accepted {
                    rewrite: None,
                    informational: false,
                    ..
                } = read_head(new, false)
            {
                // The common case: a whole head in one read, that hyper
                // reads as Go does. It stays where it is.
                this.in_head = false;
                return Poll::Ready(Ok(()));
            }
            // Judged again while the head is short (a status line Go
            // refuses fails at once), then once its blank line is in.
            let tail = this.held.len().saturating_sub(2);
            this.held.extend_from_slice(new);
            buf.set_filled(before);
            this.judge = this.held.len() <= JUDGED_EVERY_READ || has_blank_line(&this.held[tail..]);
        }
    }
}

/// Up to how many bytes a head that is not complete is judged after
/// every read; past it only once its blank line is in, so that a large
/// head is scanned a bounded number of times.
const JUDGED_EVERY_READ: usize = 4096;

impl<T> GoHead<T> {
    /// Acts on a head judged complete (or refused): the error to fail the
    /// read with, if any.
    fn judged(&mut self, head: Head) -> Option<io::Error> {
        match head {
            Head::Incomplete => None,
            Head::Refused(why) => Some(io::Error::new(io::ErrorKind::InvalidData, Refused(why))),
            Head::Accepted {
                len,
                rewrite,
                informational,
            } => {
                let len = match rewrite {
                    Some(head) => {
                        let n = head.len();
                        self.held.splice(..len, head);
                        n
                    }
                    None => len,
                };
                if informational {
                    // The final head follows.
                    self.ready = len;
                    self.judge = true;
                } else {
                    self.ready = self.held.len();
                    self.in_head = false;
                }
                None
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GoHead<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A request on a kept connection: its response's head comes next.
        if !this.in_head && this.held.is_empty() {
            this.in_head = true;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.in_head && this.held.is_empty() {
            this.in_head = true;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(bytes: &[u8]) -> Option<String> {
        match read_head(bytes, false) {
            Head::Accepted { rewrite, .. } => rewrite.map(|r| String::from_utf8(r).unwrap()),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn refused(bytes: &[u8]) -> String {
        match read_head(bytes, true) {
            Head::Refused(why) => why,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn a_plain_head_goes_on_as_it_is() {
        assert_eq!(accepted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), None);
        assert_eq!(accepted(b"HTTP/1.1 200\nTransfer-Encoding: chunked\n\n"), None);
        assert_eq!(accepted(b"HTTP/1.0 204 No Content\r\n\r\n"), None);
        assert_eq!(
            read_head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Head::Incomplete
        );
        assert_eq!(read_head(b"HTTP/1.1 200 OK\r\nX: 1\r\n", false), Head::Incomplete);
    }

    #[test]
    fn heads_hyper_reads_otherwise_are_rewritten() {
        assert_eq!(
            accepted(b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n").as_deref(),
            Some("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        );
        assert_eq!(
            accepted(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n")
                .as_deref(),
            Some("HTTP/1.0 200\r\nContent-Length: 2\r\n\r\n")
        );
        assert_eq!(
            accepted(b"HTTP/1.1 200 OK\r\nContent-Length : 9\r\nX: a\r\n  b\r\n\r\n").as_deref(),
            Some("HTTP/1.1 200\r\nX: a b\r\n\r\n")
        );
        assert_eq!(
            accepted(b"HTTP/1.2 200 OK\r\n\r\n").as_deref(),
            Some("HTTP/1.1 200\r\n\r\n")
        );
        assert_eq!(
            accepted(b"HTTP/0.9 200 OK\r\n\r\n").as_deref(),
            Some("HTTP/1.0 200\r\n\r\n")
        );
    }

    #[test]
    fn heads_go_refuses_get_gos_words() {
        assert_eq!(
            refused(b"\r\nHTTP/1.1 200 OK\r\n\r\n"),
            "malformed HTTP response \"\""
        );
        assert_eq!(refused(b"garbage"), "malformed HTTP response \"garbage\"");
        assert_eq!(
            refused(b"HTTP/1.1 2000 OK\r\n\r\n"),
            "malformed HTTP status code \"2000\""
        );
        assert_eq!(
            refused(b"HTTP/1.1 -12 OK\r\n\r\n"),
            "malformed HTTP status code \"-12\""
        );
        assert_eq!(
            refused(b"HTTP/1.x 200 OK\r\n\r\n"),
            "malformed HTTP version \"HTTP/1.x\""
        );
        assert_eq!(refused(b"HTTP/1.1 200 OK"), "unexpected EOF");
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nContent-Le"),
            "malformed MIME header: missing colon: \"Content-Le\""
        );
        assert_eq!(refused(b"HTTP/1.1 200 OK\r\nX: 1\r\n"), "unexpected EOF");
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\n X: 1\r\n\r\n"),
            "malformed MIME header initial line:  X: 1"
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nX@Y: 1\r\n\r\n"),
            "malformed MIME header line: X@Y: 1"
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n"),
            "malformed MIME header line: X: a\x01b"
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n"),
            "bad Content-Length \"2, 2\""
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"),
            "invalid empty Content-Length \"\""
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            "http: message cannot contain multiple Content-Length headers; got [\"1\" \"2\"]"
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n"),
            "unsupported transfer encoding: \"identity\""
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            "unsupported transfer encoding: \"gzip, chunked\""
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "too many transfer encodings: [\"chunked\" \"chunked\"]"
        );
        assert_eq!(
            refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: content-length\r\n\r\n"),
            "bad trailer key \"Content-Length\""
        );
    }

    #[test]
    fn go_quotes_as_strconv_quote() {
        assert_eq!(
            quote(b"a\"b\\c\r\n\t\x00\x7f\xff\xc3\xa9"),
            "\"a\\\"b\\\\c\\r\\n\\t\\x00\\x7f\\xffé\""
        );
    }
}
