//! How the sidecar words things on one line, for check messages, logs and
//! errors: text folded onto one line and bounded, I/O errors and error
//! chains as Go and the kubelet print them, durations in whole
//! milliseconds. A leaf: the config, the checks, the files and the server
//! all word things this way, and it imports none of them.

use std::time::Duration;

/// Longest message kept for one run, in bytes.
pub(crate) const MAX_MESSAGE: usize = 1024;

/// Folds text onto one line: newlines become spaces, runs of whitespace
/// shrink, other control characters (binary output) become U+FFFD, and the
/// result is cut at [`MAX_MESSAGE`] bytes.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE));
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }));
        if out.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// An I/O error as a short lower-case phrase, without the
/// "(os error N)" suffix: "connection refused".
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An error and its causes on one line, `a: b: c`, the way Go prints a
/// wrapped error: I/O errors as [`describe_io`] words them, and a cause
/// whose text an earlier part already holds left out.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = match e.downcast_ref::<std::io::Error>() {
            Some(io) => describe_io(io),
            None => e.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// `d` rounded down to whole milliseconds, for messages and logs:
/// `1s 234ms`, never `1s 234ms 567us 890ns`.
pub(crate) fn whole_ms(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}
