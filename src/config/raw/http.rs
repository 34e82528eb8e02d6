//! `http = { ... }` as written, and its validation.

use super::kinds::{Site, host_of, tls_keys};
use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    scheme: Option<Scheme>,
    host: Option<Spanned<String>>,
    port: Spanned<u16>,
    path: Option<Spanned<String>>,
    method: Option<HttpMethod>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    keep_alive: bool,
    body_contains: Option<String>,
    expect_status: Option<Spanned<Vec<toml::Value>>>,
    #[serde(default = "yes")]
    follow_redirects: bool,
    body_matches: Option<Spanned<String>>,
    body_not_matches: Option<Spanned<String>>,
    #[serde(default)]
    header_matches: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    header_files: BTreeMap<String, PathBuf>,
    #[serde(default)]
    header_env: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
}

/// The validated handler, or `None` after recording what is wrong.
pub(super) fn validate(
    h: &RawHttp,
    site: &Site<'_>,
    user_agent: &str,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let host = host_of("http.host", &h.host, site, errors);
    let path = h
        .path
        .as_ref()
        .map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
    if !path.starts_with('/') {
        let span = h.path.as_ref().map_or(0..0, |p| p.span());
        errors.push(
            site.at("http.path"),
            span,
            format!("{path:?} must start with '/'"),
        );
        return None;
    }
    let tls = tls_keys!(h).validate_when(
        h.scheme == Some(Scheme::Https),
        "only applies to scheme = \"https\"",
        "http",
        site,
        errors,
    );
    check_port(&h.port, &site.at("http.port"), errors);
    check_header_names(h, site, errors);
    let secret_headers = secret_headers(h, site, errors);
    let (body_matches, body_not_matches, header_matches) = patterns(h, site, errors);
    let reads_body = h.body_contains.is_some() || h.body_matches.is_some() || h.body_not_matches.is_some();
    if reads_body && h.method == Some(HttpMethod::Head) {
        errors.push(
            site.at("http.method"),
            site.span.clone(),
            "HEAD reads no body: body_contains, body_matches and body_not_matches need GET",
        );
    }
    let expect_status = h
        .expect_status
        .as_ref()
        .and_then(|list| expect_status(list, site, errors));
    Some(CheckKind::Http(Box::new(HttpSpec {
        scheme: h.scheme.unwrap_or(Scheme::Http),
        host: host?,
        port: *h.port.get_ref(),
        path,
        method: h.method.unwrap_or(HttpMethod::Get),
        headers: h.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        keep_alive: h.keep_alive,
        body_contains: h.body_contains.clone(),
        user_agent: user_agent.to_string(),
        expect_status,
        follow_redirects: h.follow_redirects,
        body_matches,
        body_not_matches,
        header_matches,
        secret_headers,
        tls: tls?,
    })))
}

/// Every header name of every header table is a token (RFC 9110 §5.1).
fn check_header_names(h: &RawHttp, site: &Site<'_>, errors: &mut Errors<'_>) {
    let names = (h.headers.keys().map(|n| ("headers", n)))
        .chain(h.header_matches.keys().map(|n| ("header_matches", n)))
        .chain(h.header_files.keys().map(|n| ("header_files", n)))
        .chain(h.header_env.keys().map(|n| ("header_env", n)));
    for (key, name) in names {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            errors.push(
                site.at(&format!("http.{key}")),
                site.span.clone(),
                format!("{name:?} is not a valid header name"),
            );
        }
    }
}

/// The headers whose values come from files and the environment; each
/// header is set in one place only.
fn secret_headers(h: &RawHttp, site: &Site<'_>, errors: &mut Errors<'_>) -> Vec<SecretHeader> {
    let mut secret_headers = Vec::new();
    for (name, path) in &h.header_files {
        secret_headers.push(SecretHeader {
            name: name.clone(),
            source: SecretSource::File(path.clone()),
        });
    }
    for (name, var) in &h.header_env {
        match site.env.var(var) {
            Some(value) => secret_headers.push(SecretHeader {
                name: name.clone(),
                source: SecretSource::Env {
                    var: var.clone(),
                    value,
                },
            }),
            None => errors.push(
                site.at("http.header_env"),
                site.span.clone(),
                format!("{name}: the environment variable {var} is not set"),
            ),
        }
    }
    for name in &secret_headers {
        let twice = h.headers.keys().any(|n| n.eq_ignore_ascii_case(&name.name))
            || secret_headers
                .iter()
                .filter(|o| o.name.eq_ignore_ascii_case(&name.name))
                .count()
                > 1;
        if twice {
            errors.push(
                site.at("http.header_files"),
                site.span.clone(),
                format!(
                    "{} is set more than once (headers, header_files, header_env)",
                    name.name
                ),
            );
            break;
        }
    }
    secret_headers
}

/// `body_matches`, `body_not_matches` and `header_matches`, compiled.
type Patterns = (Option<Pattern>, Option<Pattern>, Vec<(String, Pattern)>);

fn patterns(h: &RawHttp, site: &Site<'_>, errors: &mut Errors<'_>) -> Patterns {
    // `header` names the header of a `header_matches` entry.
    let mut pattern = |key: &str, header: Option<&str>, text: &Spanned<String>| {
        Pattern::new(text.get_ref())
            .map_err(|message| {
                let message = match header {
                    Some(name) => format!("{name}: {message}"),
                    None => message,
                };
                errors.push(site.at(&format!("http.{key}")), text.span(), message);
            })
            .ok()
    };
    let body_matches = h
        .body_matches
        .as_ref()
        .and_then(|t| pattern("body_matches", None, t));
    let body_not_matches = h
        .body_not_matches
        .as_ref()
        .and_then(|t| pattern("body_not_matches", None, t));
    let mut header_matches = Vec::new();
    for (name, text) in &h.header_matches {
        if let Some(p) = pattern("header_matches", Some(name), text) {
            header_matches.push((name.clone(), p));
        }
    }
    (body_matches, body_not_matches, header_matches)
}

/// `expect_status`: statuses and ranges, at least one.
fn expect_status(
    list: &Spanned<Vec<toml::Value>>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<StatusSet> {
    let mut ranges = Vec::new();
    for entry in list.get_ref() {
        match StatusSet::parse_entry(entry) {
            Ok(r) => ranges.push(r),
            Err(message) => errors.push(site.at("http.expect_status"), list.span(), message),
        }
    }
    if list.get_ref().is_empty() {
        errors.push(
            site.at("http.expect_status"),
            list.span(),
            "lists no status: every response would fail",
        );
    }
    (ranges.len() == list.get_ref().len() && !ranges.is_empty()).then(|| StatusSet::new(ranges))
}
