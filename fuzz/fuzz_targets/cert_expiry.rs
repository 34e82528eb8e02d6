//! The certificate-expiry reader (`check::certificate_not_after`) on
//! arbitrary bytes: the certificates a server presents are the app's
//! bytes, read after every TLS handshake. Must never panic.
//!
//! Input: a first byte, then the rest. An even first byte gives the rest
//! as the whole certificate. An odd one wraps it in the shape of a real
//! certificate, so that the fuzzer reaches the time field at once: the
//! second byte is the tag of `notAfter` (0x17 UTCTime, 0x18
//! GeneralizedTime) and the rest its contents.

#![no_main]

use healthproxy::check::certificate_not_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = certificate_not_after(rest);
        return;
    }
    let Some((&tag, time)) = rest.split_first() else {
        return;
    };
    let _ = certificate_not_after(&certificate(tag, time));
});

/// `Certificate { tbsCertificate { [0] { version 2 }, serialNumber,
/// signature, issuer, validity { notBefore, notAfter: tag time }, ... },
/// signatureAlgorithm, signature }`, lengths in DER.
fn certificate(tag: u8, time: &[u8]) -> Vec<u8> {
    let algorithm = der(
        0x30,
        &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    let name = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[&der(0x06, &[0x55, 0x04, 0x03])[..], &der(0x0c, b"app")[..]].concat(),
            ),
        ),
    );
    let validity = der(0x30, &[der(0x17, b"250101000000Z"), der(tag, time)].concat());
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[1]),
            algorithm.clone(),
            name.clone(),
            validity,
            name,
        ]
        .concat(),
    );
    der(0x30, &[tbs, algorithm, der(0x03, &[0])].concat())
}

/// One DER element: `tag`, the definite length of `contents`, `contents`.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}
