//! URLs as Go's `net/url` reads them, for the `http` check.
//!
//! The kubelet builds a probe's URL with `url.Parse(path)`
//! (pkg/probe/http/request.go `formatURL`), and Go's client resolves a
//! redirect's `Location` with `(*url.URL).Parse` (net/http/client.go
//! `(*Client).do`). A `Location` that Go rejects fails the run with Go's
//! words; one that Go accepts is followed, even where `http::Uri` would
//! refuse it (a raw space, a `"`, non-ASCII), escaped as
//! `URL.EscapedPath` escapes it. The functions below are ports of Go's
//! (net/url/url.go), named after them.

use std::fmt;

/// A parsed URL or reference, with Go's fields. Paths are bytes: an
/// escape such as `%ff` decodes to a byte that is not UTF-8, as in Go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Url {
    /// Lower-case scheme; empty for a relative reference.
    pub(crate) scheme: String,
    /// The part after `scheme:` when it does not start with `/`.
    pub(crate) opaque: String,
    /// `host[:port]`, unescaped (Go's `URL.Host`).
    pub(crate) host: String,
    /// The unescaped path.
    path: Vec<u8>,
    /// The path as written, when it differs from `escape(path)`.
    raw_path: String,
    /// The query as written, without `?`.
    raw_query: String,
    /// A `?` with nothing after it.
    force_query: bool,
}

impl Url {
    /// Go's `url.Parse`: the error reads `parse "RAW": why`.
    pub(crate) fn parse(raw: &[u8]) -> Result<Url, String> {
        let (u, fragment) = match raw.iter().position(|&b| b == b'#') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let quoted = |s: &[u8]| format!("{:?}", String::from_utf8_lossy(s));
        let url = parse(u).map_err(|e| format!("parse {}: {e}", quoted(u)))?;
        if let Some(fragment) = fragment {
            unescape(fragment, Mode::Fragment).map_err(|e| format!("parse {}: {e}", quoted(raw)))?;
        }
        Ok(url)
    }

    /// The URL the kubelet probes: `url.Parse(path)`, or the raw path
    /// when that fails ("Something is busted with the path, but it's too
    /// late to reject it. Pass it along as is.", request.go `formatURL`),
    /// with the scheme and `host:port` set.
    pub(crate) fn probe(scheme: &str, authority: &str, path: &str) -> Url {
        let mut url = Url::parse(path.as_bytes()).unwrap_or_else(|_| Url {
            path: path.as_bytes().to_vec(),
            ..Url::default()
        });
        url.scheme = scheme.to_string();
        url.host = authority.to_string();
        url
    }

    /// Go's `(*URL).Parse`: `reference` resolved against this URL.
    pub(crate) fn join(&self, reference: &[u8]) -> Result<Url, String> {
        let r = Url::parse(reference)?;
        Ok(self.resolve(&r))
    }

    /// Go's `ResolveReference` (RFC 3986 §5.2).
    fn resolve(&self, r: &Url) -> Url {
        let mut url = r.clone();
        if r.scheme.is_empty() {
            url.scheme = self.scheme.clone();
        }
        if !r.scheme.is_empty() || !r.host.is_empty() {
            url.set_resolved_path(&resolve_path(r.escaped_path().as_bytes(), b""));
            return url;
        }
        if !r.opaque.is_empty() {
            url.host.clear();
            url.path.clear();
            return url;
        }
        if r.path.is_empty() && !r.force_query && r.raw_query.is_empty() {
            url.raw_query = self.raw_query.clone();
        }
        url.host = self.host.clone();
        url.set_resolved_path(&resolve_path(
            self.escaped_path().as_bytes(),
            r.escaped_path().as_bytes(),
        ));
        url
    }

    fn set_resolved_path(&mut self, escaped: &[u8]) {
        // An escaped path always unescapes.
        let _ = self.set_path(escaped);
    }

    /// Go's `setPath`.
    fn set_path(&mut self, p: &[u8]) -> Result<(), String> {
        let path = unescape(p, Mode::Path)?;
        self.raw_path = if escape(&path) == p {
            String::new()
        } else {
            String::from_utf8_lossy(p).into_owned()
        };
        self.path = path;
        Ok(())
    }

    /// Whether the URL has a scheme (Go's `IsAbs`).
    pub(crate) fn is_abs(&self) -> bool {
        !self.scheme.is_empty()
    }

    /// The host without port and brackets (Go's `Hostname`).
    pub(crate) fn hostname(&self) -> &str {
        split_host_port(&self.host).0
    }

    /// The port as written, possibly empty (Go's `Port`).
    pub(crate) fn port(&self) -> &str {
        split_host_port(&self.host).1
    }

    /// Go's `EscapedPath`.
    pub(crate) fn escaped_path(&self) -> String {
        if !self.raw_path.is_empty()
            && valid_encoded(self.raw_path.as_bytes())
            && unescape(self.raw_path.as_bytes(), Mode::Path).is_ok_and(|p| p == self.path)
        {
            return self.raw_path.clone();
        }
        if self.path == b"*" {
            return "*".into();
        }
        // `escape` only emits ASCII.
        String::from_utf8(escape(&self.path)).unwrap_or_default()
    }

    /// The request target (Go's `RequestURI`), made acceptable to
    /// `http::Uri`: Go writes the query as received, `http::Uri` refuses
    /// some bytes in it, so those are percent-escaped (a documented
    /// deviation: docs/kubelet-parity.md).
    pub(crate) fn request_uri(&self) -> String {
        let mut out = if self.opaque.is_empty() {
            let p = self.escaped_path();
            if p.is_empty() { "/".to_string() } else { p }
        } else if self.opaque.starts_with("//") {
            format!("{}:{}", self.scheme, self.opaque)
        } else {
            self.opaque.clone()
        };
        if self.force_query || !self.raw_query.is_empty() {
            out.push('?');
            for &b in self.raw_query.as_bytes() {
                if b <= b' ' || b >= 0x7f || b"\"<>\\^`{|}".contains(&b) {
                    out.push_str(&format!("%{b:02X}"));
                } else {
                    out.push(b as char);
                }
            }
        }
        out
    }
}

/// Go's `URL.String`, for messages such as `Get "URL": ...`.
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.scheme.is_empty() {
            write!(f, "{}:", self.scheme)?;
        }
        if !self.opaque.is_empty() {
            f.write_str(&self.opaque)?;
        } else {
            let path = self.escaped_path();
            if !self.scheme.is_empty() || !self.host.is_empty() {
                if !self.host.is_empty() || !path.is_empty() {
                    f.write_str("//")?;
                }
                f.write_str(&self.host)?;
            }
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                f.write_str("/")?;
            }
            f.write_str(&path)?;
        }
        if self.force_query || !self.raw_query.is_empty() {
            write!(f, "?{}", self.raw_query)?;
        }
        Ok(())
    }
}

/// Go's `parse(rawURL, viaRequest=false)`.
fn parse(raw: &[u8]) -> Result<Url, String> {
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let mut url = Url::default();
    if raw == b"*" {
        url.path = b"*".to_vec();
        return Ok(url);
    }
    let (scheme, mut rest) = scheme(raw)?;
    url.scheme = String::from_utf8_lossy(scheme).to_ascii_lowercase();
    if rest.ends_with(b"?") && rest.iter().filter(|&&b| b == b'?').count() == 1 {
        url.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else if let Some(i) = rest.iter().position(|&b| b == b'?') {
        url.raw_query = String::from_utf8_lossy(&rest[i + 1..]).into_owned();
        rest = &rest[..i];
    }
    if !rest.starts_with(b"/") {
        if !url.scheme.is_empty() {
            url.opaque = String::from_utf8_lossy(rest).into_owned();
            return Ok(url);
        }
        let segment = rest.split(|&b| b == b'/').next().unwrap_or_default();
        if segment.contains(&b':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    if (!url.scheme.is_empty() || !rest.starts_with(b"///")) && rest.starts_with(b"//") {
        let after = &rest[2..];
        let end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
        let authority = &after[..end];
        rest = &after[end..];
        // Userinfo is dropped: a probe never sends credentials from a URL.
        let host = match authority.iter().rposition(|&b| b == b'@') {
            Some(i) => &authority[i + 1..],
            None => authority,
        };
        url.host = parse_host(host)?;
    }
    url.set_path(rest)?;
    Ok(url)
}

/// Go's `getScheme`.
fn scheme(raw: &[u8]) -> Result<(&[u8], &[u8]), String> {
    for (i, &c) in raw.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok((b"", raw)),
        }
    }
    Ok((b"", raw))
}

/// Go's `parseHost`: brackets and port checked, escapes decoded.
fn parse_host(host: &[u8]) -> Result<String, String> {
    let port_error = |p: &[u8]| format!("invalid port {:?} after host", String::from_utf8_lossy(p));
    if host.starts_with(b"[") {
        let Some(i) = host.iter().rposition(|&b| b == b']') else {
            return Err("missing ']' in host".into());
        };
        let colon_port = &host[i + 1..];
        if !valid_optional_port(colon_port) {
            return Err(port_error(colon_port));
        }
    } else if let Some(i) = host.iter().rposition(|&b| b == b':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            return Err(port_error(colon_port));
        }
    }
    let host = unescape(host, Mode::Host)?;
    Ok(String::from_utf8_lossy(&host).into_owned())
}

/// Go's `validOptionalPort`: empty, or `:` and digits.
fn valid_optional_port(port: &[u8]) -> bool {
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// Go's `splitHostPort`.
fn split_host_port(host_port: &str) -> (&str, &str) {
    let (mut host, mut port) = (host_port, "");
    if let Some(colon) = host_port.rfind(':')
        && valid_optional_port(&host_port.as_bytes()[colon..])
    {
        (host, port) = (&host_port[..colon], &host_port[colon + 1..]);
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        host = inner;
    }
    (host, port)
}

/// Which part of a URL is being unescaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Fragment,
}

/// Go's `unescape`: `%XX` decoded, a bad escape refused with
/// `invalid URL escape "%zz"`, and in a host the characters Go refuses.
fn unescape(s: &[u8], mode: Mode) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let valid = i + 2 < s.len() && s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit();
                if !valid {
                    let bad = &s[i..s.len().min(i + 3)];
                    return Err(format!("invalid URL escape {:?}", String::from_utf8_lossy(bad)));
                }
                out.push(hex(s[i + 1]) << 4 | hex(s[i + 2]));
                i += 3;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && should_escape(c, mode) {
                    return Err(format!(
                        "invalid character {:?} in host name",
                        (c as char).to_string()
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Go's `shouldEscape` for the path and host modes.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if mode == Mode::Host && b"!$&'()*+,;=:[]<>\"".contains(&c) {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => c == b'?',
            Mode::Host | Mode::Fragment => false,
        },
        _ => true,
    }
}

/// Go's `escape(s, encodePath)`.
fn escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &c in s {
        if should_escape(c, Mode::Path) {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

/// Go's `validEncoded(s, encodePath)`.
fn valid_encoded(s: &[u8]) -> bool {
    s.iter()
        .all(|&c| b"!$&'()*+,;=:@[]%".contains(&c) || !should_escape(c, Mode::Path))
}

/// Go's `resolvePath`: `reference` against `base`, dot segments removed.
fn resolve_path(base: &[u8], reference: &[u8]) -> Vec<u8> {
    let full: Vec<u8> = if reference.is_empty() {
        base.to_vec()
    } else if reference[0] != b'/' {
        let cut = base.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        [&base[..cut], reference].concat()
    } else {
        reference.to_vec()
    };
    if full.is_empty() {
        return Vec::new();
    }
    let mut dst: Vec<u8> = vec![b'/'];
    let mut first = true;
    let mut last: &[u8] = b"";
    for elem in full.split(|&b| b == b'/') {
        last = elem;
        match elem {
            b"." => first = false,
            b".." => {
                let kept = dst[1..].iter().rposition(|&b| b == b'/');
                match kept {
                    Some(i) => dst.truncate(i + 1),
                    None => {
                        dst.truncate(1);
                        first = true;
                    }
                }
            }
            _ => {
                if !first {
                    dst.push(b'/');
                }
                dst.extend_from_slice(elem);
                first = false;
            }
        }
    }
    if last == b"." || last == b".." {
        dst.push(b'/');
    }
    if dst.len() > 1 && dst[1] == b'/' {
        dst.remove(0);
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::probe("http", "127.0.0.1:8080", "/a/b/c?x=1")
    }

    fn join(location: &str) -> String {
        base()
            .join(location.as_bytes())
            .map_or_else(|e| e, |u| u.to_string())
    }

    #[test]
    fn references_resolve_as_go_resolves_them() {
        for (location, want) in [
            ("http://example.com/p", "http://example.com/p"),
            ("HTTPS://h:9/", "https://h:9/"),
            ("//other/p?q", "http://other/p?q"),
            ("//other", "http://other"),
            ("/z", "http://127.0.0.1:8080/z"),
            ("d", "http://127.0.0.1:8080/a/b/d"),
            ("../d?y", "http://127.0.0.1:8080/a/d?y"),
            ("./", "http://127.0.0.1:8080/a/b/"),
            ("?y=2", "http://127.0.0.1:8080/a/b/c?y=2"),
            ("#frag", "http://127.0.0.1:8080/a/b/c?x=1"),
            ("", "http://127.0.0.1:8080/a/b/c?x=1"),
            ("/../../x", "http://127.0.0.1:8080/x"),
            ("http://[::1]:81/x", "http://[::1]:81/x"),
            // Accepted by Go, refused by http::Uri: escaped and followed.
            ("/a b", "http://127.0.0.1:8080/a%20b"),
            ("/q\"uote", "http://127.0.0.1:8080/q%22uote"),
            ("/caf\u{e9}", "http://127.0.0.1:8080/caf%C3%A9"),
            ("/ok%20already", "http://127.0.0.1:8080/ok%20already"),
            ("/keep!sub(delims)", "http://127.0.0.1:8080/keep!sub(delims)"),
            ("/mixed%41 b", "http://127.0.0.1:8080/mixedA%20b"),
            ("http:opaque", "http:opaque"),
        ] {
            assert_eq!(join(location), want, "Location {location:?}");
        }
    }

    #[test]
    fn go_parse_errors_are_kept_word_for_word() {
        for (location, want) in [
            ("http://[::1", "parse \"http://[::1\": missing ']' in host"),
            ("/a%zz", "parse \"/a%zz\": invalid URL escape \"%zz\""),
            ("/a%2", "parse \"/a%2\": invalid URL escape \"%2\""),
            (
                "http://h:8a/",
                "parse \"http://h:8a/\": invalid port \":8a\" after host",
            ),
            (
                "http://a b/",
                "parse \"http://a b/\": invalid character \" \" in host name",
            ),
            (":x", "parse \":x\": missing protocol scheme"),
            (
                "/a\tb",
                "parse \"/a\\tb\": net/url: invalid control character in URL",
            ),
            (
                "1a:b",
                "parse \"1a:b\": first path segment in URL cannot contain colon",
            ),
        ] {
            assert_eq!(join(location), want, "Location {location:?}");
        }
    }

    #[test]
    fn hostname_and_port_split_as_go_splits_them() {
        let u = base().join(b"http://[::1]:81/x").unwrap();
        assert_eq!((u.hostname(), u.port()), ("::1", "81"));
        let u = base().join(b"http://LOCALHOST/x").unwrap();
        assert_eq!((u.hostname(), u.port()), ("LOCALHOST", ""));
        let u = base().join(b"http:/nohost").unwrap();
        assert_eq!(u.hostname(), "", "another host: not followed");
        let u = base().join(b"http://h:99999/").unwrap();
        assert_eq!(u.port(), "99999", "Go accepts any digits; the dial refuses them");
    }

    #[test]
    fn request_uri_is_what_goes_on_the_wire() {
        let u = base().join(b"/p a?q r&s=\"1\"").unwrap();
        assert_eq!(u.request_uri(), "/p%20a?q%20r&s=%221%22");
        let u = base().join(b"http://h").unwrap();
        assert_eq!(u.request_uri(), "/");
        assert_eq!(Url::probe("http", "h:1", "/x?").request_uri(), "/x?");
        assert_eq!(Url::probe("http", "h:1", "/bad%zz").request_uri(), "/bad%25zz");
    }
}
