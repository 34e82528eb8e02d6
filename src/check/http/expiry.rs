//! When a certificate chain expires: the earliest `notAfter` of the
//! certificates a server presented, for
//! `healthproxy_check_tls_cert_expiry_timestamp_seconds`. Only that one
//! field is read from the DER, so no X.509 crate is linked for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

/// The earliest expiry in `chain`; `None` when no certificate can be read.
pub(crate) fn earliest(chain: &[CertificateDer<'_>]) -> Option<SystemTime> {
    chain.iter().filter_map(|c| not_after(c)).min()
}

/// The `notAfter` of one DER certificate (RFC 5280 §4.1), `None` when it
/// cannot be read; whatever the bytes, it never panics:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE {
/// notBefore, notAfter }, ... }, ... }`.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (0x30, cert, _) = tlv(der)? else { return None };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let mut rest = tbs;
    if let (0xA0, _, after) = tlv(rest)? {
        rest = after;
    }
    for _ in 0..3 {
        // serialNumber, signature, issuer
        rest = tlv(rest)?.2;
    }
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (_, _, rest) = tlv(validity)?;
    let (tag, time, _) = tlv(rest)?;
    let digits = time.strip_suffix(b"Z")?;
    // Bytes, never a `str` sliced by index: the field is the server's and
    // may hold anything (a multi-byte character once panicked here).
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |at: usize, len: usize| {
        digits[at..at + len]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let (year, at) = match (tag, digits.len()) {
        // UTCTime: YYMMDDHHMMSSZ, 1950-2049.
        (0x17, 12) => {
            let yy = number(0, 2);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        (0x18, 14) => (number(0, 4), 4),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| number(at + i, 2));
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// The days of `month` (1-12) in `year`, Gregorian.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One DER element (single-byte tags): its tag, its contents and what
/// follows it. Also the postgres check's reader of certificate names.
pub(crate) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        rest = &rest[count..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_expiring(year: i32, month: u8, day: u8) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["app.internal".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // date -u -d 2031-05-17 +%s; date -u -d 2051-01-01 +%s
        assert_eq!(not_after(&cert_expiring(2031, 5, 17)), Some(at(1_936_742_400)));
        assert_eq!(not_after(&cert_expiring(2051, 1, 1)), Some(at(2_556_144_000)));
    }

    /// The certificate's DER with its `notAfter` text replaced by `time`,
    /// of the same length.
    fn with_not_after(der: &[u8], was: &[u8], time: &[u8]) -> Vec<u8> {
        assert_eq!(was.len(), time.len());
        let at = der
            .windows(was.len())
            .position(|w| w == was)
            .expect("the time is there");
        let mut out = der.to_vec();
        out[at..at + time.len()].copy_from_slice(time);
        out
    }

    #[test]
    fn a_time_that_is_not_digits_or_not_a_date_is_unread_never_a_panic() {
        let cert = cert_expiring(2031, 5, 17);
        assert_eq!(
            not_after(&with_not_after(&cert, b"310517000000Z", b"310517000000Z")),
            Some(at(1_936_742_400))
        );
        for time in [
            // A two-byte character across the year's end: slicing a `str`
            // there panicked.
            "3\u{e9}517000000Z".as_bytes(),
            "3105170000\u{e9}Z".as_bytes(),
            b"\xff10517000000Z",
            b"+10517000000Z",
            b"-10517000000Z",
            b"311317000000Z",
            b"310532000000Z",
            b"310231000000Z",
            b"310517240000Z",
            b"310517006000Z",
            b"310517000060Z",
            b"3105170000000",
        ] {
            assert_eq!(
                not_after(&with_not_after(&cert, b"310517000000Z", time)),
                None,
                "{time:?}"
            );
        }
    }

    #[test]
    fn the_earliest_of_the_chain_and_nothing_from_garbage() {
        let chain = [cert_expiring(2040, 2, 29), cert_expiring(2031, 5, 17)];
        assert_eq!(earliest(&chain), Some(at(1_936_742_400)));
        assert_eq!(earliest(&[CertificateDer::from(vec![0x30, 0x82, 0xff])]), None);
        assert_eq!(earliest(&[]), None);
    }
}
