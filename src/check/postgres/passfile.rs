//! The password file (`.pgpass`, `PGPASSFILE`, libpq's `passfile`), read
//! as libpq's `passwordFromFile()` and `pwdfMatchesString()` read it
//! (postgres `src/interfaces/libpq/fe-connect.c`, 15):
//!
//! - Lines are `hostname:port:database:username:password`; a line whose
//!   first byte is `#` is a comment; a trailing `\r\n` or `\n` is cut.
//! - A field that is exactly `*` matches anything; otherwise it must equal
//!   the value, where `\` makes the next byte literal (`\:`, `\\`).
//! - The first line whose four fields match gives the password, read up
//!   to its first unescaped `:` with its escapes removed.
//! - The host matched is the one connected to; an empty one, or a socket
//!   directory equal to the default (`/var/run/postgresql` in Debian's
//!   build), matches as `localhost`.
//! - A file that is missing or not a plain file, or that the group or
//!   others may read or write (any of the mode bits 077), is ignored: no
//!   password (libpq warns on stderr for the last two).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// libpq's `DEFAULT_PGSOCKET_DIR` as Debian builds it.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// The most of the file read: a password file is a few lines.
const MAX_FILE: u64 = 1 << 20;

/// What is matched against a line: the host as connected to, the port,
/// the database and the user.
pub(super) struct Target<'a> {
    pub(super) host: &'a str,
    pub(super) port: u16,
    pub(super) dbname: &'a str,
    pub(super) user: &'a str,
}

/// The password for `target` from the file at `path`, if the file is one
/// libpq would read and a line matches.
pub(super) fn lookup(path: &Path, target: &Target<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE)
        .read_to_end(&mut text)
        .ok()?;
    find(&text, target)
}

/// The password of the first line of `text` that matches `target`.
fn find(text: &[u8], target: &Target<'_>) -> Option<String> {
    if target.dbname.is_empty() || target.user.is_empty() {
        return None;
    }
    let host = if target.host.is_empty() || target.host == DEFAULT_SOCKET_DIR {
        "localhost"
    } else {
        target.host
    };
    let port = target.port.to_string();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let rest = [host, port.as_str(), target.dbname, target.user]
            .iter()
            .try_fold(line, |rest, token| field_matches(rest, token.as_bytes()));
        if let Some(rest) = rest {
            return Some(String::from_utf8_lossy(&unescape(rest)).into_owned());
        }
    }
    None
}

/// `pwdfMatchesString()`: what follows the field at the start of `line`
/// when it matches `token`.
fn field_matches<'l>(line: &'l [u8], token: &[u8]) -> Option<&'l [u8]> {
    if line.starts_with(b"*:") {
        return Some(&line[2..]);
    }
    let mut i = 0;
    let mut t = 0;
    while i < line.len() {
        let mut escaped = false;
        if line[i] == b'\\' {
            i += 1;
            escaped = true;
            if i == line.len() {
                return None;
            }
        }
        if line[i] == b':' && t == token.len() && !escaped {
            return Some(&line[i + 1..]);
        }
        if t == token.len() || line[i] != token[t] {
            return None;
        }
        i += 1;
        t += 1;
    }
    None
}

/// The password field: up to its first unescaped `:`, escapes removed.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < field.len() && field[i] != b':' {
        if field[i] == b'\\' && i + 1 < field.len() {
            i += 1;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str) -> Target<'_> {
        Target {
            host,
            port: 5432,
            dbname: "app",
            user: "probe",
        }
    }

    #[test]
    fn the_first_matching_line_gives_the_password() {
        let file = b"# a comment\n\
            db:5432:app:other:no\n\
            db:5432:app:probe:first\n\
            *:*:*:*:second\n";
        assert_eq!(find(file, &at("db")).as_deref(), Some("first"));
        assert_eq!(find(file, &at("10.0.0.1")).as_deref(), Some("second"));
        assert_eq!(find(b"db:5433:app:probe:x\n", &at("db")), None);
        assert_eq!(find(b"db:5432:app:probe\n", &at("db")), None, "no password field");
    }

    #[test]
    fn escapes_wildcards_and_line_ends_read_as_libpq() {
        assert_eq!(
            find(b"db:*:app:probe:pa\\:ss\\\\word:ignored\r\n", &at("db")).as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(
            find(b"h\\:x:5432:app:probe:esc\n", &at("h:x")).as_deref(),
            Some("esc")
        );
        // `*` is a wildcard only as the whole field.
        assert_eq!(find(b"d*:5432:app:probe:x\n", &at("db")), None);
        // A host-less connection and the default socket directory are
        // `localhost`; another directory is itself.
        let file = b"localhost:5432:app:probe:local\n/run/pg:5432:app:probe:dir\n";
        assert_eq!(find(file, &at("/var/run/postgresql")).as_deref(), Some("local"));
        assert_eq!(find(file, &at("")).as_deref(), Some("local"));
        assert_eq!(find(file, &at("/run/pg")).as_deref(), Some("dir"));
        // A last line without a newline counts; an empty password is one.
        assert_eq!(find(b"db:5432:app:probe:", &at("db")).as_deref(), Some(""));
    }
}
