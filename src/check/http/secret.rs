//! Request headers whose values are secrets (`header_files`, `header_env`).
//! A file is read when the check is prepared and again when it changes, so
//! a rotated Kubernetes Secret is sent from the next run on. Values are
//! marked sensitive and appear in no message, log, status or metric.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

use crate::config::{SecretHeader, SecretSource};

/// The secret headers of one check.
#[derive(Debug, Default)]
pub(super) struct SecretHeaders {
    secrets: Vec<Secret>,
    /// Every form of every current value (see [`SecretHeaders::redact`]),
    /// longest first: made when a value is read, not at every run.
    forms: Mutex<Arc<[String]>>,
}

#[derive(Debug)]
struct Secret {
    name: HeaderName,
    /// The file the value comes from, if it does.
    file: Option<PathBuf>,
    /// The value in use and the file version it was read from.
    current: Mutex<(Stamp, HeaderValue)>,
}

/// One version of a file: a Secret update swaps a symlink (new inode), an
/// edit changes the time or size.
type Stamp = Option<(SystemTime, u64, u64)>;

impl SecretHeaders {
    /// Reads every value once; a file that cannot be read or a value that
    /// is not a valid header value stops the start.
    pub(super) fn new(headers: &[SecretHeader]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(headers.len());
        for header in headers {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| format!("header {:?}: invalid header name", header.name))?;
            let (file, stamp, value) = match &header.source {
                SecretSource::File(path) => {
                    let (stamp, value) = read(&name, path)?;
                    (Some(path.clone()), stamp, value)
                }
                SecretSource::Env { var, value } => {
                    (None, None, sensitive(&name, value, &format!("${var}"))?)
                }
            };
            out.push(Secret {
                name,
                file,
                current: Mutex::new((stamp, value)),
            });
        }
        let forms = Mutex::new(all_forms(&out));
        Ok(SecretHeaders { secrets: out, forms })
    }

    /// Re-reads the files that changed since the last run. An error names
    /// the header and the file, never the value.
    pub(super) fn refresh(&self) -> Result<(), String> {
        let mut changed = false;
        let mut result = Ok(());
        for secret in &self.secrets {
            let Some(path) = &secret.file else { continue };
            let now = stamp(path);
            let mut current = secret.current.lock().expect("not poisoned");
            if now.is_none() || current.0 != now {
                match read(&secret.name, path) {
                    Ok(read) => {
                        changed |= read.1 != current.1;
                        *current = read;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        // The forms follow the values that were read, also when a later
        // file failed.
        if changed {
            *self.forms.lock().expect("not poisoned") = all_forms(&self.secrets);
        }
        result
    }

    /// Adds the current values to a request's headers; whether there
    /// were any.
    pub(super) fn append_to(&self, headers: &mut HeaderMap) -> bool {
        for secret in &self.secrets {
            let value = secret.current.lock().expect("not poisoned").1.clone();
            headers.insert(&secret.name, value);
        }
        !self.secrets.is_empty()
    }

    /// `message` with every form of every secret value replaced by
    /// `[redacted]`, or `None` when it holds none. An app may echo a
    /// request header (a redirect's body or `Location`, an error page), and
    /// a message is stored, logged and served. The forms: the value, the
    /// credentials after an auth scheme (`Bearer TOKEN`), a `Basic`
    /// value's decoded `user:password` and password, and each of those
    /// escaped as a message quotes it, as JSON, URL (percent and form) and
    /// HTML write it. A message cut at its bound in the middle of a value
    /// loses the part that is there too.
    pub(super) fn redact(&self, message: &str) -> Option<String> {
        if self.secrets.is_empty() {
            return None;
        }
        let forms = Arc::clone(&self.forms.lock().expect("not poisoned"));
        let mut out = message.to_string();
        for form in forms.iter() {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), REDACTED);
            }
        }
        if let Some(kept) = out.strip_suffix('…') {
            // The longest end of the cut text that begins a form.
            let cut = forms
                .iter()
                .filter_map(|form| {
                    (1..form.len().min(kept.len() + 1))
                        .rev()
                        .filter(|n| form.is_char_boundary(*n) && kept.is_char_boundary(kept.len() - n))
                        .find(|n| kept.ends_with(&form[..*n]))
                })
                .max();
            if let Some(n) = cut {
                out = format!("{}{REDACTED}…", &kept[..kept.len() - n]);
            }
        }
        if out == message {
            return None;
        }
        if out.len() > crate::check::MAX_MESSAGE {
            let mut end = crate::check::MAX_MESSAGE;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push('…');
        }
        Some(out)
    }
}

/// Every form of the current values of `secrets`, longest first, so that
/// `Bearer TOKEN` goes whole.
fn all_forms(secrets: &[Secret]) -> Arc<[String]> {
    let mut forms = Vec::new();
    for secret in secrets {
        let value = secret.current.lock().expect("not poisoned").1.clone();
        if let Ok(value) = value.to_str() {
            forms_of(value, &mut forms);
        }
    }
    forms.retain(|f| !f.is_empty());
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms.into()
}

/// What a secret value is replaced by in messages.
const REDACTED: &str = "[redacted]";

/// The forms in which `value` may come back in a message (see
/// [`SecretHeaders::redact`]).
fn forms_of(value: &str, forms: &mut Vec<String>) {
    let mut bare = vec![value.to_string()];
    // `Bearer TOKEN`, `Basic CREDENTIALS`, `Token T`: the credentials
    // alone too.
    if let Some((scheme, rest)) = value.split_once([' ', '\t'])
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        let rest = rest.trim();
        bare.push(rest.to_string());
        if scheme.eq_ignore_ascii_case("basic")
            && let Some(decoded) = base64_decode(rest)
            && let Ok(decoded) = String::from_utf8(decoded)
        {
            if let Some((_, password)) = decoded.split_once(':') {
                bare.push(password.to_string());
            }
            bare.push(decoded);
        }
    }
    for form in bare {
        let folded = crate::check::one_line(&form);
        let debug = form.escape_debug().to_string();
        let json = serde_json::to_string(&form).unwrap_or_default();
        let json = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default()
            .to_string();
        let upper = percent(&form, false, b"0123456789ABCDEF");
        let lower = percent(&form, false, b"0123456789abcdef");
        let plus = percent(&form, true, b"0123456789ABCDEF");
        let html = form
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        forms.extend([folded, debug, json, upper, lower, plus, html, form]);
    }
}

/// `text` percent-encoded as a URL's query writes it: every byte but the
/// unreserved ones, with `+` for a space when `plus`.
fn percent(text: &str, plus: bool, hex: &[u8; 16]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if plus && b == b' ' {
            out.push('+');
        } else {
            out.extend([
                '%',
                char::from(hex[usize::from(b >> 4)]),
                char::from(hex[usize::from(b & 15)]),
            ]);
        }
    }
    out
}

/// Standard base64 (RFC 4648 §4), padding optional, as `Basic`
/// credentials are written; `None` when `text` is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(text).ok()
}

fn stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Reads a value from `path`, trimmed of surrounding whitespace (the
/// newline an editor or `echo` leaves).
fn read(name: &HeaderName, path: &std::path::Path) -> Result<(Stamp, HeaderValue), String> {
    let stamp = stamp(path);
    let text = crate::files::read_bounded(path, crate::files::MAX_TOKEN_BYTES)
        .map_err(|e| format!("header_files {name}: {}: {e}", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| format!("header_files {name}: {}: not UTF-8 text", path.display()))?;
    Ok((stamp, sensitive(name, text.trim(), &path.display().to_string())?))
}

/// A header value marked sensitive (hyper and h2 then keep it out of
/// HPACK's dynamic table); the error says where it came from only.
fn sensitive(name: &HeaderName, value: &str, from: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("header {name} from {from}: not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[&str]) -> SecretHeaders {
        let headers: Vec<SecretHeader> = values
            .iter()
            .enumerate()
            .map(|(i, v)| SecretHeader {
                name: format!("x-secret-{i}"),
                source: SecretSource::Env {
                    var: format!("V{i}"),
                    value: (*v).to_string(),
                },
            })
            .collect();
        SecretHeaders::new(&headers).unwrap()
    }

    #[test]
    fn every_form_of_a_value_is_redacted() {
        let s = secrets(&["Bearer tok/en+1 \"q\"", "Basic dXNlcjpwYXNzd29yZA=="]);
        for (message, want) in [
            ("got Bearer tok/en+1 \"q\" back", "got [redacted] back"),
            ("token tok/en+1 \"q\"", "token [redacted]"),
            ("\"tok/en+1 \\\"q\\\"\"", "\"[redacted]\""),
            ("?a=tok%2Fen%2B1%20%22q%22", "?a=[redacted]"),
            ("?a=tok%2fen%2b1%20%22q%22", "?a=[redacted]"),
            ("?a=tok%2Fen%2B1+%22q%22", "?a=[redacted]"),
            ("user:password", "[redacted]"),
            ("the password is password", "the [redacted] is [redacted]"),
            ("dXNlcjpwYXNzd29yZA==", "[redacted]"),
            ("cut at tok/e…", "cut at [redacted]…"),
        ] {
            assert_eq!(s.redact(message).as_deref(), Some(want), "{message}");
        }
        assert_eq!(s.redact("nothing here"), None);
        assert_eq!(secrets(&[]).redact("Bearer x"), None);
    }

    #[test]
    fn a_rotated_file_is_redacted_in_its_new_value_from_the_next_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "Bearer first-token\n").unwrap();
        let s = SecretHeaders::new(&[SecretHeader {
            name: "authorization".into(),
            source: SecretSource::File(path.clone()),
        }])
        .unwrap();
        assert_eq!(s.redact("got first-token").as_deref(), Some("got [redacted]"));
        // A Secret update: a new file renamed over the old one.
        std::fs::write(dir.path().join("next"), "Bearer second-token\n").unwrap();
        std::fs::rename(dir.path().join("next"), &path).unwrap();
        s.refresh().unwrap();
        assert_eq!(s.redact("got second-token").as_deref(), Some("got [redacted]"));
        assert_eq!(
            s.redact("got first-token"),
            None,
            "the old value is no longer sent"
        );
    }
}
