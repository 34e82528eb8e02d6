//! The URLs of an HTTP check: the target of each hop, and a `Location`
//! header resolved against it as Go's `url.ResolveReference` does.

use std::fmt;

use hyper::Uri;

use crate::config::Host;

/// Where one request goes: an `http`/`https` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// Lower-case scheme; anything but `http`/`https` fails to connect.
    pub(super) scheme: String,
    /// Host without brackets, as Go's `URL.Hostname()`.
    pub(super) host: String,
    /// Port to dial (the scheme's default when the URL has none).
    pub(super) port: u16,
    /// Host and port as written in the URL: the `Host` header.
    pub(super) authority: String,
    /// Path and query, starting with `/`.
    pub(super) path: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)
    }
}

impl Target {
    /// The request target, checked.
    pub(super) fn origin_form(&self) -> Result<Uri, String> {
        self.path.parse::<Uri>().map_err(|e| e.to_string())
    }

    /// Resolves a `Location` value against this URL (RFC 3986 §5.2):
    /// absolute, scheme-relative, absolute-path and relative references.
    pub(super) fn join(&self, location: &str) -> Result<Target, String> {
        let location = location.trim();
        let location = location.split_once('#').map_or(location, |(l, _)| l);
        if let Some((scheme, rest)) = split_scheme(location) {
            let rest = rest.strip_prefix("//").ok_or("missing host")?;
            return Target::parse(&scheme.to_ascii_lowercase(), rest);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Target::parse(&self.scheme, rest);
        }
        let (base_path, base_query) = split_query(&self.path);
        let (path, query) = split_query(location);
        let path = if path.is_empty() {
            base_path.to_string()
        } else if path.starts_with('/') {
            remove_dot_segments(path)
        } else {
            let dir = &base_path[..=base_path.rfind('/').unwrap_or(0)];
            remove_dot_segments(&format!("{dir}{path}"))
        };
        let query = match query {
            Some(q) => Some(q),
            None if location.is_empty() => base_query,
            None => None,
        };
        let path = match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        Ok(Target { path, ..self.clone() })
    }

    /// Parses `authority[/path][?query]` of a URL with `scheme`.
    pub(super) fn parse(scheme: &str, rest: &str) -> Result<Target, String> {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = Host::split_authority(authority)?;
        let port = match port {
            Some(p) if !p.is_empty() => p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"))?,
            _ if scheme == "https" => 443,
            _ => 80,
        };
        let path = if path.starts_with('/') {
            remove_dot_segments(path)
        } else {
            format!("/{path}")
        };
        Ok(Target {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }
}

/// Splits `scheme:rest` when `reference` starts with a URI scheme.
fn split_scheme(reference: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Splits a path at its `?`.
fn split_query(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    }
}

/// RFC 3986 §5.2.4 on an absolute path (and its query, left untouched).
fn remove_dot_segments(path: &str) -> String {
    let (path, query) = split_query(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if let Some(q) = query {
        result.push('?');
        result.push_str(q);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Target {
        Target::parse("http", "127.0.0.1:8080/a/b/c?x=1").unwrap()
    }

    #[test]
    fn join_resolves_every_reference_form() {
        let b = base();
        assert_eq!(
            b.join("http://example.com/p").unwrap().to_string(),
            "http://example.com/p"
        );
        assert_eq!(b.join("HTTPS://h:9/").unwrap().port, 9);
        assert_eq!(b.join("//other/p?q").unwrap().to_string(), "http://other/p?q");
        assert_eq!(b.join("//other").unwrap().port, 80);
        assert_eq!(b.join("/z").unwrap().to_string(), "http://127.0.0.1:8080/z");
        assert_eq!(b.join("d").unwrap().path, "/a/b/d");
        assert_eq!(b.join("../d?y").unwrap().path, "/a/d?y");
        assert_eq!(b.join("./").unwrap().path, "/a/b/");
        assert_eq!(b.join("?y=2").unwrap().path, "/a/b/c?y=2");
        assert_eq!(b.join("#frag").unwrap().path, "/a/b/c?x=1");
        let v6 = b.join("http://[::1]:81/x").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.authority.as_str()),
            ("::1", 81, "[::1]:81")
        );
        assert!(b.join("http://:80/").is_err());
        assert!(b.join("http://h:99999/").is_err());
    }
}
