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
    let malformed =
        |why: &str| tonic::Status::internal(format!("transport: malformed grpc-status-details-bin: {why}"));
    let mut from_details = None;
    if let Some(details) = map.remove(GRPC_STATUS_DETAILS) {
        let bytes = decode_bin_header(details.as_bytes())
            .map_err(|offset| malformed(&format!("illegal base64 data at input byte {offset}")))?;
        // grpc-go unmarshals a google.rpc.Status and takes the call's
        // status from it (`status.FromProto`), whatever grpc-status says.
        from_details = Some(rpc_status(&bytes).map_err(malformed)?);
        let canonical = base64::engine::general_purpose::STANDARD.encode(bytes);
        let value = HeaderValue::from_str(&canonical).expect("base64 is a valid header value");
        map.insert(GRPC_STATUS_DETAILS, value);
    }
    let message = match from_details {
        Some((code, message)) => {
            // Go's `codes.Code(uint32)` of the int32.
            let code = HeaderValue::from_str(&(code as u32).to_string()).expect("digits");
            map.insert("grpc-status", code);
            Some(message.into_bytes())
        }
        None => map
            .remove(GRPC_MESSAGE)
            .map(|m| decode_grpc_message(m.as_bytes())),
    };
    if let Some(decoded) = message {
        let text = String::from_utf8_lossy(&decoded);
        let encoded = utf8_percent_encode(&text, ESCAPED).to_string();
        let value = HeaderValue::from_str(&encoded).expect("percent-encoded text is a valid header value");
        map.insert(GRPC_MESSAGE, value);
    }
    Ok(())
}

/// protobuf-go's error for bytes that are not a message.
const INVALID_WIRE: &str = "proto: cannot parse invalid wire-format data";

/// The code and message of a `google.rpc.Status` (`int32 code = 1;
/// string message = 2; repeated google.protobuf.Any details = 3;`), read
/// as protobuf-go's `proto.Unmarshal` reads it: the last value of a field
/// wins, a field with another wire type is an unknown field and skipped,
/// strings must be UTF-8 (proto3), and the `Any` details are parsed too.
/// Groups (deprecated wire types 3 and 4) are refused.
fn rpc_status(mut bytes: &[u8]) -> Result<(i32, String), &'static str> {
    let (mut code, mut message) = (0i32, String::new());
    while !bytes.is_empty() {
        let (field, wire, value) = proto_field(&mut bytes)?;
        match (field, wire, value) {
            (1, 0, Value::Varint(v)) => code = v as i32,
            (2, 2, Value::Bytes(b)) => {
                message = String::from_utf8(b.to_vec())
                    .map_err(|_| "proto: field google.rpc.Status.message contains invalid UTF-8")?;
            }
            (3, 2, Value::Bytes(mut any)) => {
                while !any.is_empty() {
                    if let (1, 2, Value::Bytes(url)) = proto_field(&mut any)?
                        && std::str::from_utf8(url).is_err()
                    {
                        return Err("proto: field google.protobuf.Any.type_url contains invalid UTF-8");
                    }
                }
            }
            _ => {}
        }
    }
    Ok((code, message))
}

/// The value of one protobuf field.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads one field: its number, wire type and value.
fn proto_field<'a>(bytes: &mut &'a [u8]) -> Result<(u64, u64, Value<'a>), &'static str> {
    let tag = varint(bytes)?;
    let (field, wire) = (tag >> 3, tag & 7);
    if field == 0 || field > (1 << 29) - 1 {
        return Err(INVALID_WIRE);
    }
    let value = match wire {
        0 => Value::Varint(varint(bytes)?),
        1 | 5 => {
            let n = if wire == 1 { 8 } else { 4 };
            *bytes = bytes.get(n..).ok_or(INVALID_WIRE)?;
            Value::Fixed
        }
        2 => {
            let n = usize::try_from(varint(bytes)?).map_err(|_| INVALID_WIRE)?;
            let value = bytes.get(..n).ok_or(INVALID_WIRE)?;
            *bytes = &bytes[n..];
            Value::Bytes(value)
        }
        _ => return Err(INVALID_WIRE),
    };
    Ok((field, wire, value))
}

/// A base-128 varint of at most ten bytes.
fn varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first().ok_or(INVALID_WIRE)?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(INVALID_WIRE)
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
    fn status_details_are_read_as_protobuf_go_reads_them() {
        // code 5, message "gone", one Any with a type URL.
        let details = b"\x08\x05\x12\x04gone\x1a\x05\x0a\x03x/y";
        assert_eq!(rpc_status(details), Ok((5, "gone".into())));
        assert_eq!(rpc_status(b""), Ok((0, String::new())));
        // An unknown field, and the code with another wire type: skipped.
        assert_eq!(rpc_status(b"\x20\x01\x0a\x01x\x08\x02"), Ok((2, String::new())));
        // A negative code, as an int32 varint.
        assert_eq!(
            rpc_status(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
            Ok((-1, String::new()))
        );
        for bad in [
            &b"\x08"[..],
            b"\x12\x05ab",
            b"\x00\x01",
            b"\x0b",
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ] {
            assert_eq!(rpc_status(bad), Err(INVALID_WIRE), "{bad:x?}");
        }
        assert!(rpc_status(b"\x12\x01\xff").is_err());
        assert!(rpc_status(b"\x1a\x03\x0a\x01\xff").is_err());
    }

    #[test]
    fn the_status_comes_from_the_details_as_grpc_go_takes_it() {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from_static("0"));
        map.insert(GRPC_MESSAGE, HeaderValue::from_static("fine"));
        let details =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b"\x08\x0e\x12\x05d\xc3\xa9j\xc3");
        map.insert(GRPC_STATUS_DETAILS, HeaderValue::from_str(&details).unwrap());
        // The message is not UTF-8 (cut inside a character): malformed.
        let status = as_grpc_go_reads(&mut map).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);

        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from_static("0"));
        let details = base64::engine::general_purpose::STANDARD.encode(b"\x08\x0e\x12\x0525%\xc3\xa9");
        map.insert(GRPC_STATUS_DETAILS, HeaderValue::from_str(&details).unwrap());
        as_grpc_go_reads(&mut map).unwrap();
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "25%\u{e9}")
        );
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
        as_grpc_go_reads(&mut map).unwrap();
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
        assert_eq!(status.message(), "caf\u{fffd} 100%");

        // Details in Go's unpadded base64 with trailing bits (08 00:
        // code 0), written back canonical for tonic.
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from_static("0"));
        map.insert(GRPC_STATUS_DETAILS, HeaderValue::from_static("CAB"));
        as_grpc_go_reads(&mut map).unwrap();
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
        assert_eq!(status.details(), b"\x08\x00");

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
