//! An answer and its encodings. Every endpoint builds an [`Answer`];
//! hyper sends it as [`Answer::response`], and the front path (`front`)
//! writes [`Answer::head`] itself, the bytes hyper would write. Both come
//! from one set of header templates built once ([`Format::template`]),
//! so the two encodings cannot drift apart in what they say; the order
//! and spelling of hyper's head is checked byte for byte by
//! `tests/it/endpoints.rs`. The request's side is here too: which format
//! its `Accept` headers ask for.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;

use super::render::Format;

/// An answer, built the same way whichever path the request took.
pub(crate) struct Answer {
    pub(super) status: StatusCode,
    pub(super) format: Format,
    /// A probe's answer: never cached nor sniffed.
    pub(super) probe: bool,
    pub(super) body: Bytes,
}

impl Answer {
    /// `/healthz`: the sidecar answers.
    pub(super) fn healthz() -> Answer {
        Answer {
            status: StatusCode::OK,
            format: Format::Text,
            probe: false,
            body: Bytes::from_static(b"ok"),
        }
    }

    /// Rendering the answer failed (it panicked).
    pub(super) fn failed() -> Answer {
        Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            format: Format::Text,
            probe: true,
            body: Bytes::from_static(b"cannot render the answer\n"),
        }
    }

    /// Too many large answers wait for their clients to read them.
    pub(super) fn busy() -> Answer {
        Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            format: Format::Text,
            probe: true,
            body: Bytes::from_static(
                b"busy: too many large answers are waiting for their clients to read them; try again\n",
            ),
        }
    }

    pub(super) fn not_found(body: String) -> Answer {
        Answer {
            status: StatusCode::NOT_FOUND,
            format: Format::Text,
            probe: false,
            body: Bytes::from(body),
        }
    }

    /// The response, without its body for `head` (with the length a GET's
    /// body has, as axum does).
    pub(crate) fn response(self, head: bool) -> axum::http::Response<Full<Bytes>> {
        let headers = self.format.headers(self.probe, self.body.len());
        let body = if head { Bytes::new() } else { self.body };
        let mut response = axum::http::Response::new(Full::new(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }

    /// The head hyper writes for this answer to an HTTP/1.1 request, byte
    /// for byte, for the front path that answers without it (`front`):
    /// the status line, [`Format::headers`] in their order, `connection:
    /// close` when the connection ends after it, and the date. A `HEAD`
    /// answer has the same head.
    pub(crate) fn head(&self, close: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(224);
        if self.status == StatusCode::OK {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            let reason = self.status.canonical_reason().unwrap_or("<none>");
            for part in ["HTTP/1.1 ", self.status.as_str(), " ", reason, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
        out.extend_from_slice(&self.format.template(self.probe).lines);
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&date());
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

impl Format {
    const ALL: [Format; 3] = [Format::Text, Format::Json, Format::HealthJson];

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::HealthJson => "application/health+json",
        }
    }

    /// The headers of an answer in this format, `len` bytes long, a
    /// probe's (never cached nor sniffed) or not: the template, copied.
    fn headers(self, probe: bool, len: usize) -> HeaderMap {
        let mut headers = self.template(probe).headers.clone();
        if len != TEMPLATE_LEN {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        headers
    }

    /// The headers of an answer in this format, a probe's or not, for a
    /// body of [`TEMPLATE_LEN`] bytes (`ok`). Built once and copied: the
    /// kubelet's probes come many times a second, and inserting each
    /// header hashes it.
    fn template(self, probe: bool) -> &'static Template {
        static TEMPLATES: std::sync::LazyLock<Vec<Template>> = std::sync::LazyLock::new(|| {
            let mut all = Vec::new();
            for format in Format::ALL {
                for probe in [false, true] {
                    let mut headers = HeaderMap::with_capacity(4);
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    if probe {
                        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        headers.insert(
                            header::X_CONTENT_TYPE_OPTIONS,
                            HeaderValue::from_static("nosniff"),
                        );
                    }
                    let mut lines = Vec::new();
                    for (name, value) in &headers {
                        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                            lines.extend_from_slice(part);
                        }
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(TEMPLATE_LEN));
                    all.push(Template { headers, lines });
                }
            }
            all
        });
        &TEMPLATES[self as usize * 2 + usize::from(probe)]
    }
}

/// The headers of one kind of answer.
struct Template {
    headers: HeaderMap,
    /// The lines hyper writes for them, but the last, `content-length`.
    lines: Vec<u8>,
}

/// The body length the header templates are built for: `ok`.
const TEMPLATE_LEN: usize = b"ok".len();

impl Answer {
    pub(super) fn probe(status: StatusCode, format: Format, body: Bytes) -> Answer {
        Answer {
            status,
            format,
            probe: true,
            body,
        }
    }
}

/// The format an answer is asked for, from the values of its `Accept`
/// headers and `?format=json` (`json`): `application/health+json` in
/// `Accept` wins, then `?format=json` or `application/json`; else text. A
/// value that is not visible ASCII is skipped, as `HeaderValue::to_str`
/// would refuse it.
pub(super) fn format<'h>(accepts: impl IntoIterator<Item = &'h [u8]>, mut json: bool) -> Format {
    for value in accepts {
        let Some(value) = visible(value) else { continue };
        if value.contains(Format::HealthJson.content_type()) {
            return Format::HealthJson;
        }
        json |= value.contains(Format::Json.content_type());
    }
    if json { Format::Json } else { Format::Text }
}

/// The values of the `Accept` headers. The headers are scanned rather than
/// looked up: a probe carries three or four, and a lookup hashes the name.
pub(super) fn accepts(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|(name, _)| *name == header::ACCEPT)
        .map(|(_, value)| value.as_bytes())
}

/// `value` as text when it is visible ASCII (tabs allowed): the rule of
/// `HeaderValue::to_str`, for header values read from the bytes.
pub(super) fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// The value of the `date` header, as hyper writes it: formatted once a
/// second per thread.
pub(crate) fn date() -> [u8; 29] {
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, date) = cached.get();
        if at == second {
            return date;
        }
        let mut date = [0; 29];
        date.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        cached.set((second, date));
        date
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date_of_now() {
        let date = date();
        let date = std::str::from_utf8(&date).unwrap();
        let parsed = httpdate::parse_http_date(date).unwrap();
        let now = SystemTime::now();
        assert!(
            parsed <= now && now.duration_since(parsed).unwrap().as_secs() < 2,
            "{date}"
        );
    }
}
