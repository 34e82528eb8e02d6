//! Request headers whose values are secrets (`header_files`, `header_env`).
//! A file is read when the check is prepared and again when it changes, so
//! a rotated Kubernetes Secret is sent from the next run on. Values are
//! marked sensitive and appear in no message, log, status or metric.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

use crate::config::{SecretHeader, SecretSource};

/// The secret headers of one check.
#[derive(Debug, Default)]
pub(super) struct SecretHeaders(Vec<Secret>);

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
        Ok(SecretHeaders(out))
    }

    /// Re-reads the files that changed since the last run. An error names
    /// the header and the file, never the value.
    pub(super) fn refresh(&self) -> Result<(), String> {
        for secret in &self.0 {
            let Some(path) = &secret.file else { continue };
            let now = stamp(path);
            let mut current = secret.current.lock().expect("not poisoned");
            if now.is_none() || current.0 != now {
                *current = read(&secret.name, path)?;
            }
        }
        Ok(())
    }

    /// Adds the current values to a request's headers; whether there
    /// were any.
    pub(super) fn append_to(&self, headers: &mut HeaderMap) -> bool {
        for secret in &self.0 {
            let value = secret.current.lock().expect("not poisoned").1.clone();
            headers.insert(&secret.name, value);
        }
        !self.0.is_empty()
    }
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
