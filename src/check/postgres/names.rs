//! `verify-full`'s host-name check, as libpq makes it
//! (`fe-secure-openssl.c` `pgtls_verify_peer_name_matches_certificate_guts`,
//! `fe-secure-common.c` `pq_verify_peer_name_matches_certificate*`).
//!
//! libpq's rule is not the one webpki (and so rustls) applies: a host
//! given as an IP address is compared with the iPAddress names, and with
//! the subject's Common Name when there are none, even beside dNSName
//! entries; a DNS host is compared with the dNSName entries, and with the
//! Common Name when there are none; a wildcard is `*.` and matches one
//! label. So the names are read here, from a certificate whose chain
//! webpki has already verified: the subject and the subjectAltName
//! extension, by a DER reader that only walks lengths.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::check::http::expiry::tlv;

/// Whether the certificate's names match `host`; libpq's message when
/// they do not.
pub(super) fn check(cert: &[u8], host: &str) -> Result<(), String> {
    let names = Names::read(cert).ok_or("could not parse the server certificate's names")?;
    let ip = host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok();
    let mut check_cn = true;
    let mut examined = 0usize;
    let mut first: Option<String> = None;
    let mut matched = false;
    for san in &names.sans {
        let same_type = matches!(san, San::Ip(_)) == ip;
        if same_type {
            check_cn = false;
        }
        examined += 1;
        let (shown, result) = match san {
            San::Dns(name) => (show(name), name_matches(name, host)?),
            San::Ip(addr) => ip_matches(addr, host)?,
        };
        first.get_or_insert(shown);
        if result {
            matched = true;
            check_cn = false;
            break;
        }
    }
    if check_cn && let Some(cn) = names.cn {
        examined += 1;
        first.get_or_insert(show(cn));
        matched = name_matches(cn, host)?;
    }
    if matched {
        return Ok(());
    }
    Err(match (first, examined) {
        (Some(first), 1) => format!("server certificate for \"{first}\" does not match host name \"{host}\""),
        (Some(first), n) => format!(
            "server certificate for \"{first}\" (and {} other name{}) does not match host name \"{host}\"",
            n - 1,
            if n == 2 { "" } else { "s" }
        ),
        (None, _) => "could not get server's host name from server certificate".to_string(),
    })
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// `pq_verify_peer_name_matches_certificate_name`: equal ignoring ASCII
/// case, or a `*.` wildcard over one label; a name with a NUL is an error.
fn name_matches(name: &[u8], host: &str) -> Result<bool, String> {
    if name.contains(&0) {
        return Err("SSL certificate's name contains embedded null".into());
    }
    let host = host.as_bytes();
    if name.eq_ignore_ascii_case(host) {
        return Ok(true);
    }
    // wildcard_certificate_match: "*." then the rest equal to the end of
    // the host, with no dot in the part the star stands for.
    let Some(rest) = name.strip_prefix(b"*") else {
        return Ok(false);
    };
    if name.len() < 3 || !rest.starts_with(b".") || name.len() > host.len() {
        return Ok(false);
    }
    let split = host.len() - rest.len();
    Ok(host[split..].eq_ignore_ascii_case(rest) && !host[..split].contains(&b'.'))
}

/// `pq_verify_peer_name_matches_certificate_ip`: the address's bytes
/// against the host read as an address of the same family; the address
/// as shown, and whether it matched.
fn ip_matches(addr: &[u8], host: &str) -> Result<(String, bool), String> {
    match addr.len() {
        4 => {
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(addr).expect("4 bytes"));
            Ok((ip.to_string(), host.parse::<Ipv4Addr>() == Ok(ip)))
        }
        16 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(addr).expect("16 bytes"));
            Ok((ip.to_string(), host.parse::<Ipv6Addr>() == Ok(ip)))
        }
        n => Err(format!("certificate contains IP address with invalid length {n}")),
    }
}

/// The names libpq reads from a certificate.
struct Names<'a> {
    /// dNSName and iPAddress entries of subjectAltName, in order.
    sans: Vec<San<'a>>,
    /// The subject's first Common Name.
    cn: Option<&'a [u8]>,
}

enum San<'a> {
    Dns(&'a [u8]),
    Ip(&'a [u8]),
}

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3]` EXPLICIT: the extensions of a v3 certificate.
const EXTENSIONS: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// GeneralName's `[2] dNSName` and `[7] iPAddress`, IMPLICIT primitive.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

impl<'a> Names<'a> {
    fn read(cert: &'a [u8]) -> Option<Names<'a>> {
        let (cert, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        // version [0] (optional), serial, signature, issuer, validity,
        // subject.
        let mut rest = tbs;
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after;
        }
        for _ in 0..4 {
            rest = tlv(rest)?.2;
        }
        let (subject, mut rest) = expect(rest, SEQUENCE)?;
        let cn = common_name(subject)?;
        let mut sans = Vec::new();
        // spki, then the optional unique IDs and extensions.
        rest = tlv(rest)?.2;
        while !rest.is_empty() {
            let (tag, body, after) = tlv(rest)?;
            rest = after;
            if tag == EXTENSIONS {
                let (mut list, _) = expect(body, SEQUENCE)?;
                while !list.is_empty() {
                    let (ext, after) = expect(list, SEQUENCE)?;
                    list = after;
                    let (oid, mut ext) = expect(ext, OID)?;
                    if oid != SUBJECT_ALT_NAME {
                        continue;
                    }
                    if let Some((BOOLEAN, _, after)) = tlv(ext) {
                        ext = after;
                    }
                    let (value, _) = expect(ext, OCTET_STRING)?;
                    let (mut general, _) = expect(value, SEQUENCE)?;
                    while !general.is_empty() {
                        let (tag, name, after) = tlv(general)?;
                        general = after;
                        match tag {
                            DNS_NAME => sans.push(San::Dns(name)),
                            IP_ADDRESS => sans.push(San::Ip(name)),
                            _ => {}
                        }
                    }
                }
            }
        }
        Some(Names { sans, cn })
    }
}

/// The first commonName of a Name (RDNSequence), as
/// `X509_NAME_get_index_by_NID(subject, NID_commonName, -1)` finds it;
/// its string's bytes as they are.
fn common_name(mut name: &[u8]) -> Option<Option<&[u8]>> {
    while !name.is_empty() {
        let (mut rdn, after) = expect(name, SET)?;
        name = after;
        while !rdn.is_empty() {
            let (attribute, after) = expect(rdn, SEQUENCE)?;
            rdn = after;
            let (oid, value) = expect(attribute, OID)?;
            if oid == COMMON_NAME {
                return Some(Some(tlv(value)?.1));
            }
        }
    }
    Some(None)
}

/// The next TLV with tag `tag`: its body and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, body, rest) = tlv(input)?;
    (found == tag).then_some((body, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "test");
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(s.to_string().try_into().unwrap()),
            })
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_dns_host_is_matched_against_dns_names_then_the_cn() {
        let c = cert(Some("cn.example"), &["db.example", "127.0.0.1"]);
        assert_eq!(check(&c, "db.example"), Ok(()));
        assert_eq!(check(&c, "DB.Example"), Ok(()), "case is ignored");
        assert_eq!(
            check(&c, "cn.example"),
            Err("server certificate for \"db.example\" (and 1 other name) does not match host name \"cn.example\"".into()),
            "a dNSName entry hides the CN"
        );
        let c = cert(Some("cn.example"), &["127.0.0.1"]);
        assert_eq!(check(&c, "cn.example"), Ok(()), "no dNSName: the CN");
        let c = cert(Some("cn.example"), &[]);
        assert_eq!(check(&c, "cn.example"), Ok(()));
        assert_eq!(
            check(&c, "other.example"),
            Err("server certificate for \"cn.example\" does not match host name \"other.example\"".into())
        );
        let c = cert(None, &[]);
        assert_eq!(
            check(&c, "x"),
            Err("could not get server's host name from server certificate".into())
        );
    }

    #[test]
    fn an_ip_host_is_matched_against_ip_names_then_the_cn_beside_dns_names() {
        let c = cert(Some("localhost"), &["localhost", "127.0.0.1", "::1"]);
        assert_eq!(check(&c, "127.0.0.1"), Ok(()));
        assert_eq!(check(&c, "::1"), Ok(()));
        assert!(check(&c, "127.0.0.2").is_err());
        // Only a dNSName: libpq falls back to the CN for an IP host.
        let c = cert(Some("127.0.0.1"), &["localhost"]);
        assert_eq!(check(&c, "127.0.0.1"), Ok(()));
        let c = cert(Some("pg"), &["localhost"]);
        assert_eq!(
            check(&c, "127.0.0.1"),
            Err("server certificate for \"localhost\" (and 1 other name) does not match host name \"127.0.0.1\"".into())
        );
        // An iPAddress entry hides the CN.
        let c = cert(Some("127.0.0.1"), &["10.0.0.1"]);
        assert!(check(&c, "127.0.0.1").is_err());
    }

    #[test]
    fn wildcards_are_a_leading_star_over_one_label() {
        assert_eq!(name_matches(b"*.example.com", "db.example.com"), Ok(true));
        assert_eq!(name_matches(b"*.EXAMPLE.com", "db.example.COM"), Ok(true));
        assert_eq!(name_matches(b"*.example.com", "a.db.example.com"), Ok(false));
        assert_eq!(name_matches(b"*.example.com", "example.com"), Ok(false));
        assert_eq!(name_matches(b"db*.example.com", "db1.example.com"), Ok(false));
        assert_eq!(name_matches(b"*", "x"), Ok(false));
        assert!(name_matches(b"db\0.example.com", "db").is_err());
    }

    #[test]
    fn truncated_der_is_no_names_not_a_panic() {
        let c = cert(Some("cn"), &["a.example"]);
        for end in 0..c.len() {
            let _ = Names::read(&c[..end]);
        }
    }
}
