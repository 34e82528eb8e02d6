//! The password exchanges libpq answers: cleartext, MD5 and
//! SCRAM-SHA-256 (RFC 5802, RFC 7677, as `src/interfaces/libpq/fe-auth-scram.c`
//! speaks it: no channel binding, an empty user name in the SCRAM messages).
//!
//! SCRAM's keys come from ring (already in the binary for rustls); MD5,
//! which nothing else here needs, is the 60 lines of RFC 1321 below rather
//! than a crate.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};

/// The password message of the MD5 method: `"md5" + hex(md5(hex(md5(password
/// + user)) + salt))`, NUL-terminated by the caller (libpq `pg_md5_encrypt`
/// twice, `fe-auth.c` `pg_password_sendauth`).
pub(super) fn md5_password(user: &str, password: &[u8], salt: &[u8; 4]) -> String {
    let mut inner = Vec::with_capacity(password.len() + user.len());
    inner.extend_from_slice(password);
    inner.extend_from_slice(user.as_bytes());
    let mut outer = hex(&md5(&inner)).into_bytes();
    outer.extend_from_slice(salt);
    format!("md5{}", hex(&md5(&outer)))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// MD5 (RFC 1321).
pub(super) fn md5(data: &[u8]) -> [u8; 16] {
    const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    // floor(abs(sin(i + 1)) * 2^32)
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
    ];
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut message = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bits.to_le_bytes());
    for block in message.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (i, word) in block.chunks_exact(4).enumerate() {
            m[i] = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(K[i])
                .wrapping_add(m[g])
                .rotate_left(SHIFTS[(i / 16) * 4 + i % 4]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The mechanism asked for in SASLInitialResponse.
pub(super) const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The keys derived from a password, a salt and an iteration count: the
/// costly part of SCRAM (4096 rounds of PBKDF2 by default), kept for the
/// next run while the server's salt and count stay the same, as RFC 5802
/// §5.1 allows a client to.
#[derive(Default)]
pub(super) struct KeyCache(Mutex<Option<CachedKeys>>);

struct CachedKeys {
    /// What the keys were derived from: the password's SHA-256, the salt
    /// and the iteration count.
    from: ([u8; 32], Vec<u8>, u32),
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

impl KeyCache {
    fn keys(&self, password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest::digest(&digest::SHA256, password).as_ref());
        let from = (fingerprint, salt.to_vec(), iterations);
        let mut cached = self.0.lock().expect("not poisoned");
        if let Some(keys) = cached.as_ref().filter(|k| k.from == from) {
            return (keys.client_key, keys.server_key);
        }
        let mut salted = [0u8; 32];
        let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password, &mut salted);
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = sign(&salted, b"Client Key");
        let server_key = sign(&salted, b"Server Key");
        *cached = Some(CachedKeys {
            from,
            client_key,
            server_key,
        });
        (client_key, server_key)
    }
}

fn sign(key: &hmac::Key, data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(key, data).as_ref());
    out
}

/// One SCRAM-SHA-256 exchange, client side.
pub(super) struct Scram {
    nonce: String,
    client_first_bare: String,
    /// The AuthMessage and the server key, once the proof is sent.
    expect: Option<(String, [u8; 32])>,
}

impl Scram {
    /// Starts an exchange with 18 random bytes of nonce (libpq's
    /// `SCRAM_RAW_NONCE_LEN`); the client-first message to send.
    pub(super) fn start() -> Result<(Scram, String), String> {
        let mut raw = [0u8; 18];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| "could not generate nonce".to_string())?;
        let nonce = B64.encode(raw);
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}");
        Ok((
            Scram {
                nonce,
                client_first_bare,
                expect: None,
            },
            first,
        ))
    }

    /// Reads the server-first message; the client-final message to send.
    /// Errors are libpq's words (`fe-auth-scram.c`).
    pub(super) fn client_final(
        &mut self,
        server_first: &[u8],
        password: &[u8],
        cache: &KeyCache,
    ) -> Result<String, String> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| "malformed SCRAM message".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok().filter(|n| *n > 0),
                _ => {}
            }
        }
        let nonce = nonce.ok_or("malformed SCRAM message (attribute \"r\" expected)")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("invalid SCRAM response (nonce mismatch)".into());
        }
        let salt = salt.ok_or("malformed SCRAM message (invalid salt)")?;
        let iterations = iterations.ok_or("malformed SCRAM message (invalid iteration count)")?;
        let (client_key, server_key) = cache.keys(password, &salt, iterations);
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let stored = hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref());
        let signature = sign(&stored, auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.expect = Some((auth_message, server_key));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server proves it knew the
    /// password too.
    pub(super) fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "malformed SCRAM message".to_string())?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("error received from server in SCRAM exchange: {error}"));
        }
        let (auth_message, server_key) = self.expect.as_ref().ok_or("unexpected SCRAM message")?;
        let given = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or("malformed SCRAM message (invalid server signature)")?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, server_key);
        hmac::verify(&key, auth_message.as_bytes(), &given)
            .map_err(|_| "incorrect server signature".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321() {
        let cases: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex(&md5(input.as_bytes())), want, "md5({input:?})");
        }
    }

    #[test]
    fn md5_password_is_libpqs() {
        // SELECT 'md5' || md5(md5('secret' || 'app') || 'salt') on a server.
        let inner = hex(&md5(b"secretapp"));
        let mut outer = inner.into_bytes();
        outer.extend_from_slice(b"salt");
        assert_eq!(
            md5_password("app", b"secret", b"salt"),
            format!("md5{}", hex(&md5(&outer)))
        );
        assert_eq!(md5_password("app", b"secret", b"salt").len(), 35);
    }

    /// RFC 7677 §3: user "user", password "pencil", the client nonce
    /// "rOprNGfwEbeRWgbNEkqO".
    #[test]
    fn scram_sha_256_matches_rfc_7677() {
        let mut scram = Scram {
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            expect: None,
        };
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let cache = KeyCache::default();
        let last = scram.client_final(server_first, b"pencil", &cache).unwrap();
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            scram.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err("incorrect server signature".into())
        );
        // The second exchange with the same salt takes the kept keys.
        let again = scram.client_final(server_first, b"pencil", &cache).unwrap();
        assert_eq!(again, last);
    }

    #[test]
    fn scram_refuses_a_nonce_the_client_did_not_start() {
        let (mut scram, first) = Scram::start().unwrap();
        assert!(first.starts_with("n,,n=,r="));
        let err = scram
            .client_final(
                b"r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                b"x",
                &KeyCache::default(),
            )
            .unwrap_err();
        assert!(err.contains("nonce mismatch"), "{err}");
    }
}
