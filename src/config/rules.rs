//! The settings of checks that go beyond the kubelet: which statuses pass,
//! patterns over the body and headers, request headers whose values are
//! secrets, and TLS client settings. Each is validated here, once; none of
//! them changes a verdict unless it is set.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// The statuses an HTTP check accepts. The default is the kubelet's
/// 200–399 (kubelet-semantics §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

impl StatusSet {
    /// Parses one entry of `expect_status`: a code (`401`) or an
    /// inclusive range (`"200-299"`), each within 100–599.
    pub(crate) fn parse_entry(entry: &toml::Value) -> Result<RangeInclusive<u16>, String> {
        let code = |n: i64| {
            u16::try_from(n)
                .ok()
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| format!("{n} is not an HTTP status (100-599)"))
        };
        match entry {
            toml::Value::Integer(n) => code(*n).map(|n| n..=n),
            toml::Value::String(s) => {
                let (low, high) = s.split_once('-').unwrap_or((s, s));
                let parse = |t: &str| {
                    t.trim()
                        .parse::<i64>()
                        .map_err(|_| format!("{s:?} is neither a status nor a range such as \"200-299\""))
                        .and_then(code)
                };
                let (low, high) = (parse(low)?, parse(high)?);
                if low > high {
                    return Err(format!("{s:?} is an empty range"));
                }
                Ok(low..=high)
            }
            other => Err(format!(
                "{other} is neither a status nor a range such as \"200-299\""
            )),
        }
    }

    /// A set of the given ranges, which must not be empty.
    pub fn new(ranges: Vec<RangeInclusive<u16>>) -> Self {
        StatusSet(ranges)
    }

    /// Whether `status` is accepted.
    pub(crate) fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// `[200-399]`, `[200, 401]`: as the failure message names it.
impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        f.write_str("]")
    }
}

/// The largest compiled program a pattern may have, in `regex-lite`'s
/// accounting (`RegexBuilder::size_limit`): 16 KiB. Matching costs time in
/// proportion to the program's size times the text's length, and counted
/// repetitions are compiled as copies (`.{0,5000}` is 5,000 of them), so a
/// short pattern can be costly: `.{0,5000}ok` took 552 ms a run on a 10 KiB
/// body, `(?:.{0,1000}){20}z` 3.4 s. At the bound the worst found takes
/// about 0.1 s (README, "Limits and failure behaviour"); such patterns as
/// `"status":\s*"(ok|UP)"` compile to well under 1 KiB.
pub(crate) const MAX_PATTERN_PROGRAM: usize = 16 * 1024;

/// A regular expression from the configuration, shown as written, with an
/// estimate of what matching it costs.
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: regex_lite::Regex,
    /// An upper bound of the compiled program's size, in bytes (within a
    /// factor of two): a match costs about this times the text's length.
    program: usize,
}

impl Pattern {
    /// Compiles `text`; the error is the regex crate's, on one line, or
    /// says that the compiled program is over [`MAX_PATTERN_PROGRAM`].
    pub fn new(text: &str) -> Result<Pattern, String> {
        // The size is not exposed: the smallest power of two it compiles
        // within, from 512 bytes up (at most six compilations, each
        // stopped as soon as it is over).
        let mut limit = 512;
        loop {
            match regex_lite::RegexBuilder::new(text).size_limit(limit).build() {
                Ok(regex) => {
                    return Ok(Pattern {
                        regex,
                        program: limit,
                    });
                }
                Err(_) if limit < MAX_PATTERN_PROGRAM => limit = (limit * 2).min(MAX_PATTERN_PROGRAM),
                Err(e) if e.to_string().contains("size limit") => {
                    return Err(format!(
                        "too costly to match: compiled, it is over {} KiB, the most a pattern may be \
                         (a counted repetition is compiled as that many copies: `.{{0,100}}` is 100 \
                         copies of `.`); use a shorter repetition, or body_contains for plain text",
                        MAX_PATTERN_PROGRAM / 1024
                    ));
                }
                Err(e) => return Err(crate::text::one_line(&e.to_string())),
            }
        }
    }

    /// Whether the pattern matches anywhere in `text`. A body that is not
    /// UTF-8 is matched with its invalid bytes replaced by U+FFFD.
    pub(crate) fn is_match(&self, text: &[u8]) -> bool {
        match std::str::from_utf8(text) {
            Ok(text) => self.regex.is_match(text),
            Err(_) => self.regex.is_match(&String::from_utf8_lossy(text)),
        }
    }

    /// What matching `len` bytes may cost, in units of about a
    /// nanosecond's work or less: the program's size times the length.
    pub(crate) fn cost(&self, len: usize) -> usize {
        self.program.saturating_mul(len)
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// Two patterns are the same when written the same: a reload keeps a
/// check whose patterns did not change.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

/// A request header whose value is a secret: it is never logged, never
/// shown in a message, the status JSON or the metrics.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHeader {
    /// The header's name.
    pub name: String,
    /// Where its value comes from.
    pub source: SecretSource,
}

/// Where a secret header's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, read when the check is prepared and again whenever it
    /// changes (a rotated Kubernetes Secret); surrounding whitespace is
    /// trimmed.
    File(PathBuf),
    /// An environment variable, read once when the configuration is
    /// loaded: the value itself.
    Env {
        /// The variable's name.
        var: String,
        /// Its value.
        value: String,
    },
}

/// Names the header and its source, never the value.
impl fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::File(path) => write!(f, "{}: <from file {}>", self.name, path.display()),
            SecretSource::Env { var, .. } => write!(f, "{}: <from ${var}>", self.name),
        }
    }
}

/// TLS client settings of an `https` check or a gRPC check over TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSpec {
    /// Verify the server against this CA bundle (PEM).
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain (PEM), presented when the server
    /// asks; set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name sent as SNI and verified in the server's certificate,
    /// instead of the host.
    pub server_name: Option<String>,
    /// Accept any server certificate. True when no `ca_file` is given, as
    /// the kubelet (kubelet-semantics §1.1); `false` then requires one.
    pub insecure_skip_verify: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Result<RangeInclusive<u16>, String> {
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {text}")).unwrap()["v"].clone();
        StatusSet::parse_entry(&value)
    }

    #[test]
    fn status_entries_are_codes_or_ranges() {
        assert_eq!(entry("401"), Ok(401..=401));
        assert_eq!(entry("\"200-299\""), Ok(200..=299));
        assert_eq!(entry("\" 300 - 399 \""), Ok(300..=399));
        assert!(entry("99").unwrap_err().contains("not an HTTP status"));
        assert!(entry("\"399-200\"").unwrap_err().contains("empty range"));
        assert!(entry("\"2xx\"").unwrap_err().contains("neither"));
        assert!(entry("true").unwrap_err().contains("neither"));
    }

    #[test]
    fn status_set_is_shown_as_written() {
        let set = StatusSet::new(vec![200..=299, 401..=401]);
        assert_eq!(set.to_string(), "[200-299, 401]");
        assert_eq!(StatusSet::default().to_string(), "[200-399]");
        assert!(set.contains(401) && set.contains(204) && !set.contains(302));
    }

    #[test]
    fn a_secret_header_never_shows_its_value() {
        let header = SecretHeader {
            name: "X-Token".into(),
            source: SecretSource::Env {
                var: "TOKEN".into(),
                value: "hunter2".into(),
            },
        };
        let shown = format!("{header:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("$TOKEN"), "{shown}");
    }
}
