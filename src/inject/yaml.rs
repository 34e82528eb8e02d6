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
//! was. Keys are quoted on one line (never a block scalar), and a key too
//! long for an implicit key is written as an explicit `? ` key.
//!
//! [`too_deep`] bounds the nesting of flow collections before the YAML
//! reader sees a document: the reader's time grows with the square of
//! that depth (100,000 levels took 36 s to be refused by its own limit).

use serde_yaml_ng::Value;

/// The deepest nesting read: the YAML reader's own limit (serde_yaml_ng
/// refuses a document nested deeper), checked for flow collections by
/// [`too_deep`] before the reader runs.
pub(crate) const MAX_DEPTH: usize = 128;

/// The longest implicit key YAML allows (YAML 1.2 §7.4.2, 1.1 the same).
const MAX_IMPLICIT_KEY: usize = 1024;

/// One document of a stream: its text as written (without the `---` line
/// in front of it, unless that line holds content) and its first line.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    /// The document's text.
    pub(crate) text: String,
    /// 1-based line of the document's first line in the stream.
    pub(crate) line: usize,
}

/// Splits a YAML stream at its `---` lines.
pub(crate) fn split(stream: &str) -> Vec<Document> {
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

/// Where a document nests flow collections (`[`, `{`) deeper than `max`,
/// as (line, column), both 1-based; `None` when it does not. One pass,
/// before the YAML reader runs: quoted scalars, comments, block scalars
/// and plain scalars in block context are skipped, so that brackets in
/// text are not counted.
pub(crate) fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    // Inside a quoted scalar, which may span lines.
    let mut quote: Option<char> = None;
    // Inside a block scalar: lines indented more than this are its text.
    let mut block: Option<usize> = None;
    for (n, line) in text.split('\n').enumerate() {
        let indentation = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block {
            if line.trim().is_empty() || indentation > parent {
                continue;
            }
            block = None;
        }
        let chars: Vec<char> = line.chars().collect();
        // A plain scalar in block context runs to the end of the line, a
        // ": " or a " #".
        let mut plain = false;
        let mut prev = ' ';
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            let spaced = |c: Option<char>| c.is_none_or(|c| c == ' ' || c == '\t' || c == '\r');
            if let Some(q) = quote {
                if q == '"' && c == '\\' {
                    i += 2;
                    prev = ' ';
                    continue;
                }
                if c == q {
                    if q == '\'' && next == Some('\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                }
                prev = c;
                i += 1;
                continue;
            }
            let token_start = matches!(prev, ' ' | '\t' | '[' | '{' | ',') || (depth > 0 && prev == ':');
            if c == '#' && matches!(prev, ' ' | '\t') {
                break;
            }
            if depth > 0 {
                match c {
                    '[' | '{' => {
                        depth += 1;
                        if depth > max {
                            return Some((n + 1, i + 1));
                        }
                    }
                    ']' | '}' => depth -= 1,
                    '"' | '\'' if token_start => quote = Some(c),
                    _ => {}
                }
            } else if plain {
                if c == ':' && spaced(next) {
                    plain = false;
                }
            } else if token_start {
                match c {
                    '[' | '{' => {
                        depth = 1;
                        if depth > max {
                            return Some((n + 1, i + 1));
                        }
                    }
                    '"' | '\'' => quote = Some(c),
                    '|' | '>' => {
                        let rest: String = chars[i + 1..].iter().collect();
                        let rest = rest.split(" #").next().unwrap_or("");
                        if rest
                            .trim()
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
                        {
                            block = Some(indentation);
                            break;
                        }
                        plain = true;
                    }
                    '-' | '?' | ':' if spaced(next) => {}
                    ' ' | '\t' | '\r' | ']' | '}' | ',' => {}
                    '&' | '!' | '*' => {
                        // An anchor, tag or alias: up to the next space.
                        while i + 1 < chars.len() && !matches!(chars[i + 1], ' ' | '\t') {
                            i += 1;
                        }
                    }
                    _ => plain = true,
                }
            }
            prev = chars[i];
            i += 1;
        }
    }
    None
}

/// Writes `value` as one block-style YAML document, ending with a newline.
pub(crate) fn emit(value: &Value) -> String {
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
        let written = key(k);
        if written.chars().count() > MAX_IMPLICIT_KEY {
            // `? key` on its line, then `: value`.
            out.push_str("? ");
            out.push_str(&written);
            out.push('\n');
            indent(out, at);
        } else {
            out.push_str(&written);
        }
        out.push(':');
        value_after_key(out, v, k.as_str(), at);
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

/// A key on one line: plain when it reads back as the same string,
/// else double-quoted (a block scalar cannot be a key); a collection as a
/// key in flow style.
fn key(k: &Value) -> String {
    match k {
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => quoted(s),
        Value::Tagged(t) => format!("{} {}", t.tag, key(&t.value)),
        Value::Mapping(_) | Value::Sequence(_) => flow(k),
        other => inline(other, None, 0),
    }
}

/// A value in flow style on one line, every string double-quoted.
fn flow(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        Value::Sequence(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Mapping(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Tagged(t) => format!("{} {}", t.tag, flow(&t.value)),
        other => inline(other, None, 0),
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

/// `100m`, `128Mi`, `1.5Gi`: digits, an optional fraction, letters; not
/// `0xdeadbeef` (a hexadecimal number in YAML 1.1 and 1.2) nor `1e3`.
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
    !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_alphabetic())
        && !rest.starts_with(['e', 'E', 'x', 'X', 'o', 'O', 'b', 'B'])
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
    fn hex_looking_strings_are_quoted_and_quantities_stay_plain() {
        // Issue 27: "0xdeadbeef" was written plain, an integer to YAML 1.1.
        let (_, out) = round(
            "a: \"0xdeadbeef\"\nb: \"0XCAFE\"\nc: \"0xbad\"\nd: \"0o17\"\ne: \"0b101\"\nf: \"1E3\"\ng: \"0b\"\n",
        );
        for line in out.lines() {
            assert!(line.contains(": \""), "{line} is quoted");
        }
        let (_, out) = round("cpu: 100m\nmem: 1.5Gi\nz: 0m\n");
        assert_eq!(out, "cpu: 100m\nmem: 1.5Gi\nz: 0m\n");
    }

    #[test]
    fn keys_are_written_on_one_line_and_long_ones_as_explicit_keys() {
        // Issue 27: a key with a newline was written as a block scalar.
        let mut m = serde_yaml_ng::Mapping::new();
        m.insert("line\nbreak".into(), "v".into());
        m.insert("yes".into(), "w".into());
        m.insert(
            "k".repeat(2000).into(),
            serde_yaml_ng::from_str("{a: [1]}").unwrap(),
        );
        m.insert(serde_yaml_ng::from_str("{x: [y]}").unwrap(), "z".into());
        let v = Value::Mapping(m);
        let out = emit(&v);
        let back: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(back, v, "{out}");
        assert!(out.starts_with("\"line\\nbreak\": v\n\"yes\": w\n? "), "{out}");
    }

    #[test]
    fn flow_nesting_past_the_bound_is_found_before_parsing() {
        let deep = |n: usize| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep(&deep(MAX_DEPTH), MAX_DEPTH), None);
        assert_eq!(
            too_deep(&deep(MAX_DEPTH + 1), MAX_DEPTH),
            Some((1, 4 + MAX_DEPTH))
        );
        assert!(too_deep(&format!("x:\n  - {{a: {}", "{b: [".repeat(100_000)), MAX_DEPTH).is_some());
        // Brackets in text are not nesting.
        let text = "a: \"[[[[\"\nb: '{{{{ it''s'\nc: x [[[[\n# [[[[\nd: |\n  [[[[\n  {{{{\ne: [\"]]\", '[', {f: \"\\\"[\"}]\n";
        assert_eq!(too_deep(text, 3), None);
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(v["d"], Value::from("[[[[\n{{{{\n"));
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
