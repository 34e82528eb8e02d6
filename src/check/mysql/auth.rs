//! The greeting and the login methods: `mysql_native_password` and
//! `caching_sha2_password` (its SHA-256 scramble, and the RSA encryption
//! of the password that Connector/C uses without TLS).

use ring::digest::{self, SHA1_FOR_LEGACY_USE_ONLY as SHA1, SHA256, digest};

use super::{CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, Error};
use crate::check::Reason;

/// What the client reads in a Handshake V10.
pub(super) struct Greeting {
    /// The capability flags (both halves).
    pub(super) caps: u32,
    /// The scramble (20 bytes from a MySQL or MariaDB server).
    pub(super) scramble: Vec<u8>,
    /// The authentication data as Connector/C hands it to the first
    /// plugin: as many bytes as the greeting says (21 from MySQL 8: the
    /// scramble and a NUL).
    pub(super) data: Vec<u8>,
    /// The server's default authentication method, if it names one.
    pub(super) plugin: Option<String>,
}

/// A Handshake V10: its capabilities and scramble.
pub(super) fn parse_greeting(p: &[u8]) -> Result<Greeting, Error> {
    let malformed = || Error::client(Reason::Protocol, "Malformed packet");
    if p.first() != Some(&10) {
        return Err(Error::client(
            Reason::Protocol,
            format!(
                "Received error packet before completion of TLS handshake or unsupported protocol version {}",
                p.first().copied().unwrap_or(0)
            ),
        ));
    }
    let version_end = 1 + p[1..].iter().position(|b| *b == 0).ok_or_else(malformed)?;
    let mut at = version_end + 1 + 4;
    let part1 = p.get(at..at + 8).ok_or_else(malformed)?.to_vec();
    at += 8 + 1;
    let caps_low = p.get(at..at + 2).ok_or_else(malformed)?;
    let caps_low = u16::from_le_bytes([caps_low[0], caps_low[1]]);
    if u32::from(caps_low) & CLIENT_PROTOCOL_41 == 0 {
        return Err(Error::client(
            Reason::Protocol,
            "the server speaks a protocol before 4.1",
        ));
    }
    at += 2 + 1 + 2;
    let caps_high = p.get(at..at + 2).ok_or_else(malformed)?;
    let caps = u32::from(caps_low) | u32::from(u16::from_le_bytes([caps_high[0], caps_high[1]])) << 16;
    at += 2;
    let data_len = usize::from(*p.get(at).ok_or_else(malformed)?);
    at += 1 + 10;
    let part2_len = data_len.saturating_sub(8).max(13);
    let part2 = p.get(at..(at + part2_len).min(p.len())).ok_or_else(malformed)?;
    let mut data = part1.clone();
    data.extend_from_slice(part2);
    data.truncate(data_len);
    let mut scramble = part1;
    scramble.extend_from_slice(part2.strip_suffix(&[0]).unwrap_or(part2));
    let plugin = p
        .get(at + part2_len..)
        .filter(|_| caps & CLIENT_PLUGIN_AUTH != 0)
        .map(|rest| {
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        });
    Ok(Greeting {
        caps,
        scramble,
        data,
        plugin,
    })
}

/// mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)));
/// nothing for an empty password.
pub(super) fn native_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = digest(&SHA1, password);
    let stage2 = digest(&SHA1, stage1.as_ref());
    let mut ctx = digest::Context::new(&SHA1);
    ctx.update(scramble.get(..20).unwrap_or(scramble));
    ctx.update(stage2.as_ref());
    let mix = ctx.finish();
    xor(stage1.as_ref(), mix.as_ref())
}

/// caching_sha2_password's fast answer (Connector/C
/// `ma_sha256_scramble`): SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) +
/// scramble).
pub(super) fn sha256_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    let digest1 = digest(&SHA256, password);
    let digest2 = digest(&SHA256, digest1.as_ref());
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(digest2.as_ref());
    ctx.update(scramble);
    xor(digest1.as_ref(), ctx.finish().as_ref())
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(a, b)| a ^ b).collect()
}

/// caching_sha2_password's answer without TLS (Connector/C
/// `auth_caching_sha2_client`): the password with its NUL, XORed with
/// the scramble, encrypted with the server's RSA public key (a PEM
/// `PUBLIC KEY`) in OAEP padding with SHA-1, OpenSSL's
/// `RSA_PKCS1_OAEP_PADDING`.
pub(super) fn rsa_password(pem: &[u8], password: &[u8], scramble: &[u8]) -> Result<Vec<u8>, String> {
    let (n, e) = rsa::public_key(pem)?;
    let mut message = password.to_vec();
    message.push(0);
    for (i, b) in message.iter_mut().enumerate() {
        *b ^= scramble[i % scramble.len()];
    }
    let k = n.len();
    let padded = rsa::oaep_sha1(&message, k)?;
    Ok(rsa::encrypt(&n, &e, &padded))
}

/// RSA public-key encryption, the little of it caching_sha2_password
/// needs: ring has no RSA encryption, and the `rsa` crate would bring a
/// big-number library for one rarely taken path (a login without TLS
/// that the server's cache cannot answer). Nothing here is secret but the
/// message, which the padding randomises.
mod rsa {
    use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY as SHA1, digest};
    use ring::rand::SecureRandom as _;
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject as _;

    /// The largest modulus accepted, in bytes (16,384 bits).
    const MAX_MODULUS: usize = 2048;

    /// The modulus and exponent of a PEM `PUBLIC KEY` (an RSA
    /// SubjectPublicKeyInfo), big-endian, without leading zeros.
    pub(super) fn public_key(pem: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let bad = || "Couldn't read RSA public key from server".to_string();
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| bad())?;
        let mut spki = Der(der.as_ref());
        let mut outer = Der(spki.take(0x30).ok_or_else(bad)?);
        let algorithm = outer.take(0x30).ok_or_else(bad)?;
        // rsaEncryption, 1.2.840.113549.1.1.1.
        if !algorithm.starts_with(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]) {
            return Err(bad());
        }
        let bits = outer.take(0x03).ok_or_else(bad)?;
        let (0, key) = bits.split_first().ok_or_else(bad)? else {
            return Err(bad());
        };
        let mut key = Der(Der(key).take(0x30).ok_or_else(bad)?);
        let n = unsigned(key.take(0x02).ok_or_else(bad)?);
        let e = unsigned(key.take(0x02).ok_or_else(bad)?);
        if n.len() < 64 || n.len() > MAX_MODULUS || e.is_empty() || n[n.len() - 1] & 1 == 0 {
            return Err(bad());
        }
        Ok((n.to_vec(), e.to_vec()))
    }

    /// An INTEGER's bytes without its leading zeros.
    fn unsigned(mut int: &[u8]) -> &[u8] {
        while let [0, rest @ ..] = int {
            int = rest;
        }
        int
    }

    /// A cursor over DER: each element in turn.
    struct Der<'a>(&'a [u8]);

    impl<'a> Der<'a> {
        /// The contents of the next element, which must have `tag`.
        fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
            let [t, first, rest @ ..] = self.0 else {
                return None;
            };
            if *t != tag {
                return None;
            }
            let (len, rest) = match *first {
                l if l < 0x80 => (usize::from(l), rest),
                0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
                0x82 => (
                    usize::from(*rest.first()?) << 8 | usize::from(*rest.get(1)?),
                    rest.get(2..)?,
                ),
                _ => return None,
            };
            let body = rest.get(..len)?;
            self.0 = &rest[len..];
            Some(body)
        }
    }

    /// EME-OAEP (RFC 8017 §7.1.1) with SHA-1, MGF1-SHA-1 and an empty
    /// label, into `k` bytes.
    pub(super) fn oaep_sha1(message: &[u8], k: usize) -> Result<Vec<u8>, String> {
        const H: usize = 20;
        if message.len() + 2 * H + 2 > k {
            return Err("the password is too long for the server's RSA key".into());
        }
        let mut db = Vec::with_capacity(k - H - 1);
        db.extend_from_slice(digest(&SHA1, b"").as_ref());
        db.resize(k - message.len() - H - 2, 0);
        db.push(1);
        db.extend_from_slice(message);
        let mut seed = [0u8; H];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "no random numbers for the RSA padding".to_string())?;
        mask(&mut db, &seed);
        mask(&mut seed, &db);
        let mut em = Vec::with_capacity(k);
        em.push(0);
        em.extend_from_slice(&seed);
        em.extend_from_slice(&db);
        Ok(em)
    }

    /// XORs `out` with MGF1-SHA-1 of `seed`.
    fn mask(out: &mut [u8], seed: &[u8]) {
        for (counter, chunk) in out.chunks_mut(20).enumerate() {
            let mut ctx = ring::digest::Context::new(&SHA1);
            ctx.update(seed);
            ctx.update(&(counter as u32).to_be_bytes());
            for (b, m) in chunk.iter_mut().zip(ctx.finish().as_ref()) {
                *b ^= m;
            }
        }
    }

    /// `m^e mod n`, all big-endian, as `n.len()` bytes: Montgomery
    /// multiplication over 64-bit limbs.
    pub(super) fn encrypt(n: &[u8], e: &[u8], m: &[u8]) -> Vec<u8> {
        let modulus = limbs(n);
        let k = modulus.len();
        let mut mm = limbs(m);
        mm.resize(k, 0);
        let inv = n0_inverse(modulus[0]);
        // R^2 mod n, R = 2^(64k), by doubling 1 modulo n.
        let mut r2 = vec![0u64; k];
        r2[0] = 1;
        for _ in 0..128 * k {
            let carry = shl1(&mut r2);
            if carry || !less(&r2, &modulus) {
                sub(&mut r2, &modulus);
            }
        }
        let base = mont_mul(&mm, &r2, &modulus, inv);
        let mut one = vec![0u64; k];
        one[0] = 1;
        let mut acc = mont_mul(&one, &r2, &modulus, inv);
        for byte in e {
            for bit in (0..8).rev() {
                acc = mont_mul(&acc, &acc, &modulus, inv);
                if byte >> bit & 1 == 1 {
                    acc = mont_mul(&acc, &base, &modulus, inv);
                }
            }
        }
        let out = mont_mul(&acc, &one, &modulus, inv);
        let mut bytes: Vec<u8> = out.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
        bytes.drain(..bytes.len() - n.len());
        bytes
    }

    /// Big-endian bytes as little-endian limbs.
    fn limbs(bytes: &[u8]) -> Vec<u64> {
        bytes
            .rchunks(8)
            .map(|c| c.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
            .collect()
    }

    /// `-n0^-1 mod 2^64` (n0 odd), by Newton's iteration.
    fn n0_inverse(n0: u64) -> u64 {
        let mut inv = 1u64;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        inv.wrapping_neg()
    }

    /// Shifts left by one bit; the bit shifted out.
    fn shl1(a: &mut [u64]) -> bool {
        let mut carry = 0;
        for limb in a.iter_mut() {
            let next = *limb >> 63;
            *limb = *limb << 1 | carry;
            carry = next;
        }
        carry == 1
    }

    fn less(a: &[u64], b: &[u64]) -> bool {
        for (x, y) in a.iter().rev().zip(b.iter().rev()) {
            if x != y {
                return x < y;
            }
        }
        false
    }

    /// `a -= b`, wrapping.
    fn sub(a: &mut [u64], b: &[u64]) {
        let mut borrow = false;
        for (x, y) in a.iter_mut().zip(b) {
            let (d, b1) = x.overflowing_sub(*y);
            let (d, b2) = d.overflowing_sub(u64::from(borrow));
            *x = d;
            borrow = b1 || b2;
        }
    }

    /// `a * b / R mod n` (CIOS), for `a, b < n`.
    fn mont_mul(a: &[u64], b: &[u64], n: &[u64], inv: u64) -> Vec<u64> {
        let k = n.len();
        let mut t = vec![0u64; k + 2];
        for &bi in b {
            let mut carry = 0u128;
            for j in 0..k {
                let sum = u128::from(t[j]) + u128::from(a[j]) * u128::from(bi) + carry;
                t[j] = sum as u64;
                carry = sum >> 64;
            }
            let sum = u128::from(t[k]) + carry;
            t[k] = sum as u64;
            t[k + 1] = (sum >> 64) as u64;
            let m = t[0].wrapping_mul(inv);
            let mut carry = (u128::from(t[0]) + u128::from(m) * u128::from(n[0])) >> 64;
            for j in 1..k {
                let sum = u128::from(t[j]) + u128::from(m) * u128::from(n[j]) + carry;
                t[j - 1] = sum as u64;
                carry = sum >> 64;
            }
            let sum = u128::from(t[k]) + carry;
            t[k - 1] = sum as u64;
            t[k] = t[k + 1] + (sum >> 64) as u64;
            t[k + 1] = 0;
        }
        let mut out = t[..k].to_vec();
        if t[k] != 0 || !less(&out, n) {
            sub(&mut out, n);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn modular_exponentiation_matches_small_numbers() {
            // 4^13 mod 497 = 445; 2^61 - 1 is prime, so 3^(p-1) mod p
            // = 1 (Fermat); across limbs, (2^64)^2 mod (2^127 - 1) = 2.
            assert_eq!(encrypt(&[0x01, 0xf1], &[13], &[4]), [0x01, 0xbd]);
            let p = ((1u64 << 61) - 1).to_be_bytes();
            let e = ((1u64 << 61) - 2).to_be_bytes();
            assert_eq!(encrypt(&p, &e, &[3]), 1u64.to_be_bytes());
            let p = ((1u128 << 127) - 1).to_be_bytes();
            let mut m = [0u8; 9];
            m[0] = 1;
            assert_eq!(encrypt(&p, &[2], &m), 2u128.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_matches_the_servers_formula() {
        // The empty password sends nothing; another is 20 bytes that
        // change with the scramble.
        assert!(native_password(b"", &[1; 20]).is_empty());
        let a = native_password(b"s3cret", &[1; 20]);
        let b = native_password(b"s3cret", &[2; 20]);
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }
}
