//! YAML text in and out: a stream split into its documents (so that the
//! documents `inject` leaves alone are written back byte for byte, comments
//! included), and an emitter whose quoting the Kubernetes tools read back
//! as the same types.
//!
//! `kubectl` reads YAML 1.1, where a plain `yes`, `on`, `0644` or `1:20` is
//! a boolean or a number; serde_yaml_ng writes YAML 1.2 and leaves such
//! strings unquoted. The emitter here quotes every string that is not
//! plainly a string in both, and writes the one YAML 1.1 number the
//! parser keeps as text (a file mode such as `defaultMode: 0644`) as it
//! was.

use serde_yaml_ng::Value;

/// One document of a stream: its text as written (without the `---` line
/// in front of it, unless that line holds content) and its first line.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's text.
    pub text: String,
    /// 1-based line of the document's first line in the stream.
    pub line: usize,
}

/// Splits a YAML stream at its `---` lines.
pub fn split(stream: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut text = String::new();
    let mut first = 1;
    for (i, line) in stream.split_inclusive('\n').enumerate() {
        let rest = line.strip_prefix("---");
        let is_marker = rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']));
        if is_marker {
            docs.push(Document {
                text: std::mem::take(&mut text),
                line: first,
            });
            first = i + 1;
            // `--- {a: 1}` or `--- !tag`: the line is part of the document.
            let content = rest.unwrap_or("").split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                first = i + 2;
                continue;
            }
        }
        text.push_str(line);
    }
    docs.push(Document { text, line: first });
    docs
}

/// Writes `value` as one block-style YAML document, ending with a newline.
pub fn emit(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0),
        other => {
            out.push_str(&inline(other, None, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn mapping(out: &mut String, m: &serde_yaml_ng::Mapping, at: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first entry of a sequence item follows its "- ".
        if i > 0 || !out.ends_with("- ") {
            indent(out, at);
        }
        let key = k.as_str();
        out.push_str(&inline(k, None, at));
        out.push(':');
        value_after_key(out, v, key, at);
    }
}

fn value_after_key(out: &mut String, v: &Value, key: Option<&str>, at: usize) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            mapping(out, m, at + 2);
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            sequence(out, s, at + 2);
        }
        Value::Tagged(t) if is_block(&t.value) => {
            out.push(' ');
            out.push_str(&t.tag.to_string());
            value_after_key(out, &t.value, None, at);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, key, at));
            out.push('\n');
        }
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        _ => false,
    }
}

fn sequence(out: &mut String, s: &[Value], at: usize) {
    for item in s {
        indent(out, at);
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                out.push_str("- ");
                mapping(out, m, at + 2);
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push_str("-\n");
                sequence(out, inner, at + 2);
            }
            other => {
                out.push_str("- ");
                out.push_str(&inline(other, None, at));
                out.push('\n');
            }
        }
    }
}

/// A scalar, an empty collection or a tagged scalar on one line (or a
/// literal block starting on this line).
fn inline(v: &Value, key: Option<&str>, at: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, key, at),
        Value::Sequence(_) => "[]".into(),
        Value::Mapping(_) => "{}".into(),
        Value::Tagged(t) => format!("{} {}", t.tag, inline(&t.value, None, at)),
    }
}

fn string(s: &str, key: Option<&str>, at: usize) -> String {
    if matches!(key, Some("defaultMode" | "mode"))
        && s.len() > 1
        && s.starts_with('0')
        && s.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        // A plain 0644 in the source: YAML 1.1 (kubectl) reads an octal
        // number, the parser here kept the text. Write it as it was.
        return s.to_string();
    }
    if plain_ok(s) {
        return s.to_string();
    }
    if let Some(block) = literal(s, at) {
        return block;
    }
    quoted(s)
}

/// Characters a YAML reader treats as line breaks or must not see raw.
fn special(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

/// A double-quoted scalar, escaping what YAML would fold or reject.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if special(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string that reads back as the same string in YAML 1.1 and 1.2.
fn plain_ok(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    if WORDS.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return false;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./:@+=%()".contains(c) || c == ' ';
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_')
        || !s.chars().all(allowed)
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
    {
        // Anything starting with a digit, a sign or a dot may be a
        // number, a date or a time in one YAML version or the other:
        // quoted, except a quantity such as "100m" or "128Mi" below.
        return quantity(s);
    }
    true
}

/// `100m`, `128Mi`, `1.5Gi`: digits, an optional fraction, letters.
fn quantity(s: &str) -> bool {
    let digits = s.trim_start_matches(|c: char| c.is_ascii_digit());
    if digits.len() == s.len() {
        return false;
    }
    let rest = match digits.strip_prefix('.') {
        Some(f) => {
            let r = f.trim_start_matches(|c: char| c.is_ascii_digit());
            if r.len() == f.len() {
                return false;
            }
            r
        }
        None => digits,
    };
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphabetic()) && !rest.starts_with(['e', 'E'])
}

/// A multi-line string as a literal block (`|`, `|-`, `|+`), when it can
/// be one.
fn literal(s: &str, at: usize) -> Option<String> {
    if !s.contains('\n') || s.starts_with([' ', '\n', '\t']) || s.chars().any(|c| c != '\n' && special(c)) {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let chomp = match s.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut out = format!("|{chomp}");
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', at + 2));
            out.push_str(line);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> (Value, String) {
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        let out = emit(&v);
        let back: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(back, v, "{out}\n{back:?}\n{v:?}");
        (v, out)
    }

    #[test]
    fn strings_that_yaml_1_1_reads_as_other_types_are_quoted() {
        let (_, out) = round(
            "a: \"yes\"\nb: \"on\"\nc: \"0777\"\nd: \"1e3\"\ne: \"~\"\nf: \"y\"\ng: \"1:20\"\nh: \"2024-01-01\"\ni: \"1_000\"\nj: \"\"\nk: \".5\"\n",
        );
        for line in out.lines() {
            assert!(line.contains(": \""), "{line} is quoted");
        }
    }

    #[test]
    fn characters_a_reader_would_fold_or_reject_are_escaped() {
        round("a: \"x\\u2028y\\u0085z\\u0007\\tq\\\"\\\\\"\nb: \"l1\\nl2\\u2028\\n\"\nc: \"ünï cödé\"\n");
    }

    #[test]
    fn ordinary_values_stay_plain() {
        let (_, out) = round(
            "image: nginx:1.25\ncpu: 100m\nmemory: 128Mi\npath: /healthz\nnum: 8080\nf: 1.0\nt: true\nz: null\nmode: 0644\n",
        );
        assert_eq!(
            out,
            "image: nginx:1.25\ncpu: 100m\nmemory: 128Mi\npath: /healthz\nnum: 8080\nf: 1.0\nt: true\nz: null\nmode: 0644\n"
        );
    }

    #[test]
    fn nested_collections_and_blocks_round_trip() {
        let (_, out) = round(
            "spec:\n  containers:\n  - name: app\n    args: [\"a\", \"b c\"]\n    script: |\n      echo 1\n\n      echo 2\n    kept: \"x\\n\\n\"\n    bare: \"x\\ny\"\n    empty: {}\n    none: []\n  - - nested\n    - list\n",
        );
        assert!(
            out.contains("script: |\n        echo 1\n\n        echo 2\n"),
            "{out}"
        );
        assert!(out.contains("    -\n      - nested\n"), "{out}");
        assert!(out.contains("kept: |+\n"), "{out}");
        assert!(out.contains("bare: |-\n"), "{out}");
    }

    #[test]
    fn a_stream_splits_at_its_markers_only() {
        let docs = split("a: 1\n---\n# c\nb: 2\n--- {c: 3}\n----\n---x\n");
        let texts: Vec<_> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["a: 1\n", "# c\nb: 2\n", "--- {c: 3}\n----\n---x\n"]);
        assert_eq!(docs[1].line, 3);
        assert_eq!(docs[2].line, 5);
    }
}
