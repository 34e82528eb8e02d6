//! The status fields of a gRPC response as grpc-go reads them, put in
//! the form tonic reads: tonic is stricter than grpc-go with
//! `grpc-message` and `grpc-status-details-bin`, and panics on a
//! `grpc-status-details-bin` that is not base64. No byte from the app
//! reaches tonic's status parser before it has been through here.

use base64::Engine as _;
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// What tonic's `percent_decode` must not see raw: controls, `%`, and
/// every byte outside printable ASCII (a header value tonic reads as
/// UTF-8 after decoding).
const ESCAPED: &AsciiSet = &CONTROLS.add(b'%');

/// Rewrites the status fields of one header block (response headers or
/// trailers) so that tonic reads from them what grpc-go reads:
///
/// - `grpc-message` is decoded as grpc-go decodes it, which never fails
///   (a `%` not followed by two hex digits, raw Latin-1 bytes: kept as
///   they are), and written back percent-encoded as valid UTF-8, so tonic
///   never turns a message it cannot decode into an Unknown status.
/// - `grpc-status-details-bin` that grpc-go cannot decode fails the call
///   with Internal, as grpc-go does; one it can is written back in the
///   canonical base64 tonic's decoder accepts (tonic panics on anything
///   else).
///
/// grpc-go: internal/transport/http_util.go `decodeGrpcMessage`,
/// `decodeBinHeader`, `(*decodeState).processHeaderField`
/// ("transport: malformed grpc-status-details-bin: %v").
pub(super) fn as_grpc_go_reads(map: &mut HeaderMap) -> Result<(), tonic::Status> {
    if let Some(details) = map.remove(GRPC_STATUS_DETAILS) {
        let bytes = decode_bin_header(details.as_bytes()).map_err(|offset| {
            tonic::Status::internal(format!(
                "transport: malformed grpc-status-details-bin: illegal base64 data at input byte {offset}"
            ))
        })?;
        let canonical = base64::engine::general_purpose::STANDARD.encode(bytes);
        let value = HeaderValue::from_str(&canonical).expect("base64 is a valid header value");
        map.insert(GRPC_STATUS_DETAILS, value);
    }
    if let Some(message) = map.remove(GRPC_MESSAGE) {
        let decoded = decode_grpc_message(message.as_bytes());
        let text = String::from_utf8_lossy(&decoded);
        let encoded = utf8_percent_encode(&text, ESCAPED).to_string();
        let value = HeaderValue::from_str(&encoded).expect("percent-encoded text is a valid header value");
        map.insert(GRPC_MESSAGE, value);
    }
    Ok(())
}

/// grpc-go's `decodeGrpcMessage`: `%XX` becomes the byte XX when XX is
/// two hex digits; anything else is kept as it is.
fn decode_grpc_message(msg: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        // Go: `msg[i] == '%' && i+2 < lenMsg`, then ParseUint(msg[i+1:i+3], 16, 8).
        if msg[i] == b'%'
            && i + 2 < msg.len()
            && let (Some(high), Some(low)) = (hex(msg[i + 1]), hex(msg[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(msg[i]);
        i += 1;
    }
    out
}

/// grpc-go's `decodeBinHeader`: standard base64, padded when the length
/// is a multiple of four and unpadded otherwise, decoded as Go's
/// `encoding/base64` decodes it (CR and LF skipped, non-zero trailing bits
/// accepted). The error is the offset Go's `CorruptInputError` reports.
fn decode_bin_header(src: &[u8]) -> Result<Vec<u8>, usize> {
    let padded = src.len().is_multiple_of(4);
    let mut out = Vec::with_capacity(src.len() / 4 * 3 + 2);
    let mut si = 0;
    loop {
        let (next, bytes, end) = decode_quantum(src, si, padded)?;
        out.extend_from_slice(&bytes);
        if end {
            return Ok(out);
        }
        si = next;
    }
}

/// The value of a base64 digit of the standard alphabet.
fn digit(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// One quantum of Go's `(*Encoding).decodeQuantum` (encoding/base64):
/// where the next one starts, its bytes, and whether the input ended.
fn decode_quantum(src: &[u8], mut si: usize, padded: bool) -> Result<(usize, Vec<u8>, bool), usize> {
    let is_newline = |b: u8| b == b'\n' || b == b'\r';
    let mut dbuf = [0u8; 4];
    let mut dlen = 4;
    let mut end = false;
    let mut j = 0;
    while j < 4 {
        if si == src.len() {
            if j == 0 {
                return Ok((si, Vec::new(), true));
            }
            if j == 1 || padded {
                return Err(si - j);
            }
            dlen = j;
            end = true;
            break;
        }
        let b = src[si];
        si += 1;
        if let Some(value) = digit(b) {
            dbuf[j] = value;
            j += 1;
            continue;
        }
        if is_newline(b) {
            continue;
        }
        if !padded || b != b'=' {
            return Err(si - 1);
        }
        // Padding: the input must end here.
        match j {
            0 | 1 => return Err(si - 1),
            2 => {
                while si < src.len() && is_newline(src[si]) {
                    si += 1;
                }
                if si == src.len() {
                    return Err(src.len());
                }
                if src[si] != b'=' {
                    return Err(si - 1);
                }
                si += 1;
            }
            _ => {}
        }
        while si < src.len() && is_newline(src[si]) {
            si += 1;
        }
        if si < src.len() {
            return Err(si);
        }
        dlen = j;
        end = true;
        break;
    }
    let val = (u32::from(dbuf[0]) << 18)
        | (u32::from(dbuf[1]) << 12)
        | (u32::from(dbuf[2]) << 6)
        | u32::from(dbuf[3]);
    let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
    Ok((si, bytes[..dlen - 1].to_vec(), end || si == src.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_headers_decode_as_gos_base64_decodes_them() {
        // Padded and unpadded, as decodeBinHeader chooses by length.
        assert_eq!(decode_bin_header(b"aGk="), Ok(b"hi".to_vec()));
        assert_eq!(decode_bin_header(b"aGk"), Ok(b"hi".to_vec()));
        assert_eq!(decode_bin_header(b"aGVsbG8"), Ok(b"hello".to_vec()));
        assert_eq!(decode_bin_header(b""), Ok(Vec::new()));
        // Non-zero trailing bits: Go's non-strict decoder accepts them.
        assert_eq!(decode_bin_header(b"aGl"), Ok(b"hi".to_vec()));
        // Go's CorruptInputError offsets.
        assert_eq!(decode_bin_header(b"!!!!"), Err(0));
        assert_eq!(decode_bin_header(b"aGk!"), Err(3));
        assert_eq!(decode_bin_header(b"a"), Err(0));
        assert_eq!(decode_bin_header(b"aGVsb"), Err(4));
        assert_eq!(decode_bin_header(b"a==="), Err(1));
        assert_eq!(decode_bin_header(b"aGk=aGk="), Err(4));
        assert_eq!(decode_bin_header(b"aG=="), Ok(b"h".to_vec()));
        assert_eq!(decode_bin_header(b"aG=x"), Err(2));
        // A `=` in an unpadded value is a bad byte.
        assert_eq!(decode_bin_header(b"aG="), Err(2));
    }

    #[test]
    fn messages_decode_as_grpc_go_decodes_them() {
        assert_eq!(decode_grpc_message(b"a%20b"), b"a b");
        assert_eq!(decode_grpc_message(b"100%"), b"100%");
        assert_eq!(decode_grpc_message(b"%zz"), b"%zz");
        // Go's `i+2 < len`: a `%` needs two bytes after it.
        assert_eq!(decode_grpc_message(b"%41"), b"A");
        assert_eq!(decode_grpc_message(b"x%4"), b"x%4");
        assert_eq!(decode_grpc_message(b"%41x"), b"Ax");
        assert_eq!(decode_grpc_message(b"caf\xe9"), b"caf\xe9");
    }

    #[test]
    fn status_fields_are_rewritten_for_tonic() {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from_static("0"));
        map.insert(GRPC_MESSAGE, HeaderValue::from_bytes(b"caf\xe9 100%").unwrap());
        map.insert(GRPC_STATUS_DETAILS, HeaderValue::from_static("aGl"));
        as_grpc_go_reads(&mut map).unwrap();
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
        assert_eq!(status.message(), "caf\u{fffd} 100%");
        assert_eq!(status.details(), b"hi");

        let mut bad = HeaderMap::new();
        bad.insert("grpc-status", HeaderValue::from_static("0"));
        bad.insert(GRPC_STATUS_DETAILS, HeaderValue::from_static("no base64!"));
        let status = as_grpc_go_reads(&mut bad).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.message(),
            "transport: malformed grpc-status-details-bin: illegal base64 data at input byte 2"
        );
    }
}
