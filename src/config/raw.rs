//! The TOML file as written, and its validation into [`super::Config`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;

mod http;
mod kinds;
mod native;
mod postgres;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    kubelet_version: Option<Spanned<String>>,
    grpc_listen: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    allow_empty: Option<Spanned<toml::Value>>,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    drain: RawDrain,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    watch: Option<bool>,
    interval: Option<Spanned<Dur>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_read_timeout: Option<Spanned<Dur>>,
    request_timeout: Option<Spanned<Dur>>,
    idle_timeout: Option<Spanned<Dur>>,
    max_connections: Option<Spanned<usize>>,
    max_header_bytes: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrain {
    min: Option<Spanned<Dur>>,
    max: Option<Spanned<Dur>>,
    quiet: Option<Spanned<Dur>>,
    #[serde(default)]
    ports: Vec<Spanned<u16>>,
    token_file: Option<PathBuf>,
    exit_when_app_exits: Option<Spanned<bool>>,
    mesh: Option<Spanned<MeshName>>,
    mesh_proxy_uid: Option<Spanned<u32>>,
}

/// `drain.mesh` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MeshName {
    None,
    Istio,
    Linkerd,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Option<Spanned<String>>,
    probes: Option<Spanned<Vec<ProbeKind>>>,
    #[serde(default = "yes")]
    critical: bool,
    container: Option<Spanned<String>>,
    origin: Option<String>,
    initial_delay: Option<Spanned<Dur>>,
    period: Option<Spanned<Dur>>,
    timeout: Option<Spanned<Dur>>,
    success_threshold: Option<Spanned<u32>>,
    failure_threshold: Option<Spanned<u32>>,
    http: Option<Spanned<http::RawHttp>>,
    tcp: Option<Spanned<kinds::RawTcp>>,
    exec: Option<Spanned<kinds::RawExec>>,
    grpc: Option<Spanned<kinds::RawGrpc>>,
    file: Option<Spanned<kinds::RawFile>>,
    redis: Option<Spanned<native::RawRedis>>,
    postgres: Option<Spanned<postgres::RawPostgres>>,
    mysql: Option<Spanned<native::RawMysql>>,
    dialogue: Option<Spanned<native::RawDialogue>>,
    process: Option<Spanned<native::RawProcess>>,
}

fn yes() -> bool {
    true
}

/// A duration written as text: `"500ms"`, `"2s"`, `"1m30s"`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// The longest duration accepted anywhere in the config.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `"500ms"`, `"2s"`, `"1m30s"`: digits followed by a unit, no
/// spaces, no bare numbers, at most a day.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration {text:?}: write a number with a unit, such as \"500ms\" or \"2s\"");
    if text.is_empty()
        || text.contains(char::is_whitespace)
        || text.starts_with(|c: char| !c.is_ascii_digit())
    {
        return Err(bad());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let d = humantime::parse_duration(text).map_err(|_| bad())?;
    if d > MAX_DURATION {
        return Err(format!("duration {text:?} is longer than a day"));
    }
    Ok(d)
}

/// Collects errors with their locations while validating.
struct Errors<'a> {
    text: &'a str,
    /// Where each line of `text` starts, so that locating a span costs a
    /// binary search, not a scan of the text before it: with thousands of
    /// checks, a scan per check made parsing quadratic.
    line_starts: Vec<usize>,
    list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Errors {
            text,
            line_starts,
            list: Vec::new(),
        }
    }

    /// 1-based line and column of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    /// A parse or type error from the TOML reader, with `hint` after its
    /// message.
    fn push_serde(&mut self, e: &toml::de::Error, hint: String) {
        let span = e.span().unwrap_or(0..0);
        let key = key_at(self.text, &span);
        let message = format!("{}{hint}", e.message().trim());
        self.push(key, span, message);
    }

    fn sorted(mut self) -> Vec<ConfigError> {
        self.list.sort_by_key(|e| (e.line, e.column));
        self.list
    }

    fn push(&mut self, key: impl Into<String>, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.line_col(span.start);
        self.list.push(ConfigError {
            key: key.into(),
            line,
            column,
            message: message.into(),
        });
    }
}

/// The key a serde error points at, read off the text at its span.
fn key_at(text: &str, span: &Range<usize>) -> String {
    let is_key = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    // A bad value (or an item of an array value): the key is what stands
    // before the last `=` in front of it on its line, after the last `{` or
    // `,` of an inline table.
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let names_a_key = text[end..].trim_start().starts_with('=');
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    if !names_a_key && let Some(eq) = text[line_start..start].rfind('=') {
        let before = &text[line_start..line_start + eq];
        let key = before.rsplit(['{', ',']).next().unwrap_or("").trim();
        if !key.is_empty() && key.chars().all(is_key) {
            return key.to_string();
        }
    }
    // An unknown key: the span is the key itself.
    let found = text.get(span.clone()).unwrap_or("").trim();
    let key: String = found
        .chars()
        .take_while(|c| is_key(*c) || matches!(c, '[' | ']'))
        .collect();
    if key.is_empty() { "value".into() } else { key }
}

pub(super) fn parse(text: &str, env: &dyn Env) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors::new(text);
    let (mut table, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            errors.push_serde(e, String::new());
        }
        return Err(errors.sorted());
    }
    // Every unknown key and bad value in one run: each is reported, taken
    // out of the document, and the document read again. The spans are
    // the text's, so taking an entry out moves no other.
    let mut guessed = HashSet::new();
    let mut bad_values: HashSet<(Option<usize>, String)> = HashSet::new();
    let raw = loop {
        let e = match RawConfig::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(raw) => break Some(raw),
            Err(e) => e,
        };
        let unknown = unknown_field(e.message());
        // A bad value in an inline table goes with its table, or the
        // table would then miss it.
        let inline = |s: &Range<usize>| unknown.is_none() && text[s.clone()].starts_with('{');
        let removed = e
            .span()
            .and_then(|span| take_out(table.get_mut(), &span, None, &inline));
        let hint = match (&removed, unknown) {
            (Some(r), Some(key)) => hint(key, &text[r.value.clone()], e.message()),
            _ => value_hint(&key_at(text, &e.span().unwrap_or(0..0)), e.message()),
        };
        // A bad value taken out of a `[check.tcp]` section leaves its
        // table without the key: that is the same error, not a second.
        let check = removed.as_ref().and_then(|r| r.check);
        match missing_field(e.message()) {
            Some(key) if bad_values.contains(&(check, key.to_string())) => {}
            _ => errors.push_serde(&e, hint),
        }
        if unknown.is_none()
            && let Some(span) = e.span()
        {
            bad_values.insert((check, key_at(text, &span)));
        }
        // Errors of the check that only say what was taken out is missing.
        match (removed, unknown) {
            (None, _) => break None,
            (Some(r), None) => {
                if let Some(i) = r.check {
                    for key in ["name", "probes", "handler"] {
                        guessed.insert(format!("check[{i}].{key}"));
                    }
                }
            }
            (Some(r), Some(key)) => {
                if let (Some(i), true) = (
                    r.check,
                    KUBERNETES_FIELDS
                        .iter()
                        .any(|(k, ours, _)| *k == key && HANDLERS.contains(ours)),
                ) {
                    guessed.insert(format!("check[{i}].handler"));
                }
            }
        }
        if errors.list.len() >= MAX_ERRORS {
            break None;
        }
    };
    let Some(raw) = raw else {
        return Err(errors.sorted());
    };
    let config = validate(raw, env, &mut errors);
    errors.list.retain(|e| !guessed.contains(&e.key));
    if errors.list.is_empty() {
        Ok(config)
    } else {
        Err(errors.sorted())
    }
}

/// More errors than this in one file are not worth reading.
const MAX_ERRORS: usize = 100;

/// An entry taken out of the document because of an error.
struct Removed {
    /// Where its value was.
    value: Range<usize>,
    /// The `[[check]]` it was in, by index.
    check: Option<usize>,
}

/// Takes out of `table` the innermost entry whose key or value holds
/// `span`. Tables and arrays are searched whatever their own span says
/// (a table written as `[[check]]` sections has no span of its own).
fn take_out(
    table: &mut toml::de::DeTable<'_>,
    span: &Range<usize>,
    check: Option<usize>,
    whole: &dyn Fn(&Range<usize>) -> bool,
) -> Option<Removed> {
    use toml::de::DeValue;
    let holds =
        |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end && outer.end > outer.start;
    let mut found = None;
    for (key, value) in table.iter_mut() {
        let value_span = value.span();
        let inner = match value.get_mut() {
            DeValue::Table(t) if whole(&value_span) => take_out(t, span, check, whole).map(|_| Removed {
                value: value_span.clone(),
                check,
            }),
            DeValue::Table(t) => take_out(t, span, check, whole),
            DeValue::Array(items) => {
                items
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, item)| match item.get_mut() {
                        DeValue::Table(t) => {
                            let index = if key.get_ref() == "check" { Some(i) } else { check };
                            take_out(t, span, index, whole)
                        }
                        _ => None,
                    })
            }
            _ => None,
        };
        if let Some(inner) = inner {
            if inner.value != value_span {
                return Some(inner);
            }
            found = Some((key.clone(), inner));
            break;
        }
        if holds(key.span()) || holds(value_span.clone()) {
            found = Some((
                key.clone(),
                Removed {
                    value: value_span,
                    check,
                },
            ));
            break;
        }
    }
    let (key, removed) = found?;
    table.remove(&key);
    Some(removed)
}

/// The key of an "unknown field `KEY`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// The key of a "missing field `KEY`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The keys whose value is a duration written as text.
const DURATION_KEYS: &[&str] = &[
    "period",
    "timeout",
    "initial_delay",
    "max_age",
    "min",
    "max",
    "quiet",
    "interval",
    "header_read_timeout",
    "request_timeout",
    "idle_timeout",
];

/// What to write instead of a value of the wrong type, when it is clear.
fn value_hint(key: &str, message: &str) -> String {
    let number = message
        .strip_prefix("invalid type: integer `")
        .or_else(|| message.strip_prefix("invalid type: floating point `"))
        .and_then(|rest| rest.split('`').next());
    match (key, number) {
        (k, Some(n)) if DURATION_KEYS.contains(&k) => {
            return format!("; a duration takes its unit: write `{k} = \"{n}s\"`");
        }
        ("port", _) if message.starts_with("invalid value: integer") => {
            return "; a port is 1 to 65535".into();
        }
        ("port", _) if message.starts_with("invalid type: string") => {
            return "; a named port (a container port's name) is resolved to its number by \
                    `healthproxy inject`, which reads the pod's container ports; here write the number"
                .into();
        }
        ("[check]", _) if message.contains("expected a sequence") => {
            return "; write each check as `[[check]]` (an array of tables), not `[check]`".into();
        }
        _ => {}
    }
    String::new()
}

/// The handler keys of a check.
const HANDLERS: &[&str] = &[
    "http", "tcp", "exec", "grpc", "file", "redis", "postgres", "mysql", "dialogue", "process",
];

/// Kubernetes probe fields pasted into the config: the key to write
/// instead, and whether the value is in seconds.
const KUBERNETES_FIELDS: &[(&str, &str, bool)] = &[
    ("failureThreshold", "failure_threshold", false),
    ("successThreshold", "success_threshold", false),
    ("periodSeconds", "period", true),
    ("timeoutSeconds", "timeout", true),
    ("initialDelaySeconds", "initial_delay", true),
    ("httpGet", "http", false),
    ("tcpSocket", "tcp", false),
];

/// "did you mean" for an unknown key, with the value it had.
fn hint(key: &str, value: &str, message: &str) -> String {
    let value = value.trim();
    if let Some((_, ours, seconds)) = KUBERNETES_FIELDS.iter().find(|(k, ..)| *k == key) {
        return if !*seconds {
            format!("; did you mean `{ours}`? (`{key}` is the Kubernetes name)")
        } else if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
            format!(
                "; did you mean `{ours}`? It takes a duration with its unit: `{key} = {value}` is `{ours} = \"{value}s\"`"
            )
        } else {
            format!("; did you mean `{ours}`? It takes a duration with its unit, such as `{ours} = \"10s\"`")
        };
    }
    match key {
        "httpHeaders" => {
            return "; did you mean `headers`? It is a table: `headers = { \"X-Name\" = \"value\" }`".into();
        }
        "terminationGracePeriodSeconds" => {
            return "; it is the kubelet's: it stays on the pod's probe, the sidecar has no such setting"
                .into();
        }
        _ => {}
    }
    // The keys the message says were expected: the snake_case spelling of
    // a camelCase key, or one a typo away.
    let expected: Vec<&str> = message
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let snake: String = key
        .chars()
        .flat_map(|c| {
            let lower = c.to_ascii_lowercase();
            (c.is_ascii_uppercase().then_some('_').into_iter()).chain(std::iter::once(lower))
        })
        .collect();
    let best = expected.iter().find(|e| **e == snake).or_else(|| {
        expected
            .iter()
            .filter(|e| edit_distance(e, key) <= 2)
            .min_by_key(|e| edit_distance(e, key))
    });
    best.map(|b| format!("; did you mean `{b}`?")).unwrap_or_default()
}

/// Levenshtein distance, for short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn validate(raw: RawConfig, env: &dyn Env, errors: &mut Errors<'_>) -> Config {
    let default_listen = || DEFAULT_LISTEN.parse().expect("default listen address parses");
    let listen = raw.listen.map_or_else(default_listen, |l| {
        address("listen", &l, errors).unwrap_or_else(default_listen)
    });
    let grpc_listen = raw.grpc_listen.and_then(|l| address("grpc_listen", &l, errors));
    let reload = validate_reload(raw.reload, errors);
    let log_level = raw.log_level.and_then(|l| match l.get_ref().parse() {
        Ok(level) => Some(level),
        Err(e) => {
            errors.push("log_level", l.span(), e);
            None
        }
    });
    let drain = validate_drain(raw.drain, errors);
    let server = validate_server(raw.server, errors);
    let user_agent = kube_probe_user_agent(&validate_kubelet_version(raw.kubelet_version, errors));
    let allow_empty = validate_allow_empty(raw.allow_empty, errors);
    if raw.check.is_empty() && allow_empty != ProbeSet::ALL && errors.list.is_empty() {
        // Where a template rendered to nothing or a write was cut short:
        // every probe would pass whatever the app does. (A file with
        // other errors, such as `[check]` for `[[check]]`, says those.)
        errors.push(
            "check",
            0..0,
            "no [[check]]: every probe would pass whatever the app does; add checks, or set allow_empty = true",
        );
    }
    let mut names = HashSet::new();
    let checks = raw
        .check
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| validate_check(i, c, env, &user_agent, &mut names, errors))
        .collect();
    Config {
        listen,
        grpc_listen,
        log_level,
        reload,
        drain,
        server,
        allow_empty,
        checks,
    }
}

/// `allow_empty = true`, or a list of the probe kinds that may be left
/// without a check.
fn validate_allow_empty(raw: Option<Spanned<toml::Value>>, errors: &mut Errors<'_>) -> ProbeSet {
    let Some(raw) = raw else {
        return ProbeSet::default();
    };
    const MESSAGE: &str =
        "must be true, false or a list of probe kinds (\"startup\", \"liveness\", \"readiness\")";
    match raw.get_ref() {
        toml::Value::Boolean(true) => ProbeSet::ALL,
        toml::Value::Boolean(false) => ProbeSet::default(),
        toml::Value::Array(kinds) => {
            let mut set = ProbeSet::default();
            for kind in kinds {
                match kind
                    .as_str()
                    .and_then(|k| ProbeKind::ALL.into_iter().find(|p| p.as_str() == k))
                {
                    Some(kind) => set.insert(kind),
                    None => {
                        errors.push("allow_empty", raw.span(), MESSAGE);
                        return ProbeSet::default();
                    }
                }
            }
            set
        }
        _ => {
            errors.push("allow_empty", raw.span(), MESSAGE);
            ProbeSet::default()
        }
    }
}

/// `kubelet_version = "1.36"`: the Kubernetes version in the checks'
/// `kube-probe/` User-Agent, `MAJOR.MINOR` as the kubelet's
/// `version.Get()` gives it.
fn validate_kubelet_version(raw: Option<Spanned<String>>, errors: &mut Errors<'_>) -> String {
    let Some(raw) = raw else {
        return DEFAULT_KUBELET_VERSION.to_string();
    };
    let value = raw.get_ref();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let minor = |s: &str| number(s.strip_suffix('+').unwrap_or(s));
    match value.split_once('.') {
        Some((major, rest)) if number(major) && minor(rest) => value.clone(),
        _ => {
            errors.push(
                "kubelet_version",
                raw.span(),
                format!("{value:?} is not a Kubernetes version such as \"{DEFAULT_KUBELET_VERSION}\""),
            );
            DEFAULT_KUBELET_VERSION.to_string()
        }
    }
}

/// An address and port, such as `[::]:9775`.
fn address(key: &str, text: &Spanned<String>, errors: &mut Errors<'_>) -> Option<SocketAddr> {
    let parsed = text.get_ref().parse::<SocketAddr>();
    if parsed.is_err() {
        errors.push(
            key,
            text.span(),
            format!(
                "{:?} is not an address and port such as \"[::]:9775\" or \"0.0.0.0:9775\"",
                text.get_ref()
            ),
        );
    }
    parsed.ok()
}

fn validate_reload(raw: RawReload, errors: &mut Errors<'_>) -> ReloadConfig {
    let mut reload = ReloadConfig::default();
    reload.watch = raw.watch.unwrap_or(reload.watch);
    if let Some(d) = &raw.interval {
        reload.interval = d.get_ref().0;
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&reload.interval) {
            errors.push("reload.interval", d.span(), "must be between 100ms and 5m");
        }
    }
    reload
}

fn validate_server(raw: RawServer, errors: &mut Errors<'_>) -> ServerConfig {
    let mut server = ServerConfig::default();
    let durations = [
        (
            "header_read_timeout",
            &raw.header_read_timeout,
            &mut server.header_read_timeout,
        ),
        (
            "request_timeout",
            &raw.request_timeout,
            &mut server.request_timeout,
        ),
        ("idle_timeout", &raw.idle_timeout, &mut server.idle_timeout),
    ];
    for (key, given, field) in durations {
        if let Some(d) = given {
            *field = d.get_ref().0;
            if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(field) {
                errors.push(format!("server.{key}"), d.span(), "must be between 100ms and 5m");
            }
        }
    }
    if let Some(n) = &raw.max_connections {
        server.max_connections = *n.get_ref();
        if server.max_connections < 16 {
            errors.push("server.max_connections", n.span(), "must be at least 16");
        }
    }
    if let Some(n) = &raw.max_header_bytes {
        server.max_header_bytes = *n.get_ref();
        // hyper's smallest read buffer is 8 KiB.
        if !(8192..=65536).contains(&server.max_header_bytes) {
            errors.push(
                "server.max_header_bytes",
                n.span(),
                "must be between 8192 and 65536",
            );
        }
    }
    server
}

fn validate_drain(raw: RawDrain, errors: &mut Errors<'_>) -> DrainConfig {
    let min = raw.min.as_ref().map_or(DEFAULT_DRAIN_MIN, |d| d.get_ref().0);
    let max = raw.max.as_ref().map_or(DEFAULT_DRAIN_MAX, |d| d.get_ref().0);
    let quiet = raw.quiet.as_ref().map_or(DEFAULT_DRAIN_QUIET, |d| d.get_ref().0);
    if min > max {
        let span = raw.max.as_ref().or(raw.min.as_ref()).map_or(0..0, |d| d.span());
        errors.push(
            "drain.max",
            span,
            format!(
                "must not be shorter than drain.min ({})",
                humantime::format_duration(min)
            ),
        );
    }
    for p in &raw.ports {
        if *p.get_ref() == 0 {
            errors.push("drain.ports", p.span(), "port 0 is not a port");
        }
    }
    let exit_when_app_exits = raw.exit_when_app_exits.as_ref().is_some_and(|e| *e.get_ref());
    if let Some(e) = &raw.exit_when_app_exits
        && *e.get_ref()
        && raw.ports.is_empty()
    {
        errors.push(
            "drain.exit_when_app_exits",
            e.span(),
            "needs drain.ports: the app's ports tell when it has stopped",
        );
    }
    let name = raw.mesh.as_ref().map_or(MeshName::None, |m| *m.get_ref());
    let uid = raw.mesh_proxy_uid.as_ref().map(|u| *u.get_ref());
    let mesh = match name {
        MeshName::None => Mesh::None,
        MeshName::Istio => Mesh::Istio {
            proxy_uid: uid.unwrap_or(ISTIO_PROXY_UID),
        },
        MeshName::Linkerd => Mesh::Linkerd {
            proxy_uid: uid.unwrap_or(LINKERD_PROXY_UID),
        },
    };
    if let Some(u) = &raw.mesh_proxy_uid {
        if name == MeshName::None {
            errors.push(
                "drain.mesh_proxy_uid",
                u.span(),
                "needs drain.mesh = \"istio\" or \"linkerd\": without a mesh no proxy forwards the app's traffic",
            );
        } else if *u.get_ref() == 0 {
            errors.push(
                "drain.mesh_proxy_uid",
                u.span(),
                "must not be 0: every root process's connections would be taken for the mesh's",
            );
        }
    }
    DrainConfig {
        min,
        max,
        quiet,
        ports: raw.ports.into_iter().map(Spanned::into_inner).collect(),
        token_file: raw.token_file,
        exit_when_app_exits,
        mesh,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Names that the probes' answers give to conditions that are not checks
/// (`[-]startup failed`, `[-]drain failed`, kube-apiserver's `[+]ping ok`
/// when there is no check): a check of that name would be ambiguous in
/// text and overwrite the entry in `health+json`.
pub(crate) const RESERVED_NAMES: [&str; 3] = ["drain", "ping", "startup"];

fn validate_check(
    index: usize,
    check: Spanned<RawCheck>,
    env: &dyn Env,
    user_agent: &str,
    names: &mut HashSet<String>,
    errors: &mut Errors<'_>,
) -> Option<CheckConfig> {
    let span = check.span();
    let (line, _) = errors.line_col(span.start);
    let c = check.into_inner();
    let at = |field: &str| format!("check[{index}].{field}");

    let name = match &c.name {
        None => {
            errors.push(at("name"), span.clone(), "missing: every check needs a name");
            None
        }
        Some(n) => {
            let value = n.get_ref().clone();
            if !valid_name(&value) {
                errors.push(
                    at("name"),
                    n.span(),
                    format!("{value:?} must be made of a-z, 0-9 and '-'"),
                );
                None
            } else if RESERVED_NAMES.contains(&value.as_str()) {
                errors.push(
                    at("name"),
                    n.span(),
                    format!(
                        "{value:?} is reserved: the probes' answers use it for a condition that is not a check ({})",
                        RESERVED_NAMES.join(", ")
                    ),
                );
                None
            } else if !names.insert(value.clone()) {
                errors.push(
                    at("name"),
                    n.span(),
                    format!("{value:?} is already the name of another check"),
                );
                None
            } else {
                Some(value)
            }
        }
    };

    let mut probes = ProbeSet::default();
    match &c.probes {
        None => errors.push(
            at("probes"),
            span.clone(),
            "missing: list the probe kinds, such as [\"liveness\", \"readiness\"]",
        ),
        Some(p) if p.get_ref().is_empty() => errors.push(
            at("probes"),
            p.span(),
            "must name at least one of \"startup\", \"liveness\", \"readiness\"",
        ),
        Some(p) => p.get_ref().iter().for_each(|k| probes.insert(*k)),
    }

    if let Some(container) = &c.container
        && !valid_name(container.get_ref())
    {
        errors.push(
            at("container"),
            container.span(),
            format!("{:?} must be made of a-z, 0-9 and '-'", container.get_ref()),
        );
    }

    let timing = validate_timing(&c, probes, &at, errors);
    let kind = kinds::validate(&c, span, env, user_agent, &at, errors);

    Some(CheckConfig {
        name: name?,
        probes,
        critical: c.critical,
        container: c.container.as_ref().map(|c| c.get_ref().clone()),
        timing,
        kind: kind?,
        origin: c.origin.clone(),
        line,
    })
}

fn validate_timing(
    c: &RawCheck,
    probes: ProbeSet,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Timing {
    let mut timing = Timing::default();
    if let Some(d) = &c.initial_delay {
        timing.initial_delay = d.get_ref().0;
    }
    if let Some(d) = &c.period {
        timing.period = d.get_ref().0;
        if timing.period < MIN_PERIOD {
            errors.push(at("period"), d.span(), "must be at least 100ms");
        }
    }
    if let Some(d) = &c.timeout {
        timing.timeout = d.get_ref().0;
        if timing.timeout < MIN_TIMEOUT {
            errors.push(at("timeout"), d.span(), "must be at least 100ms");
        }
    }
    if let Some(n) = &c.success_threshold {
        timing.success_threshold = *n.get_ref();
        if timing.success_threshold == 0 {
            errors.push(at("success_threshold"), n.span(), "must be at least 1");
        } else if timing.success_threshold != 1 && (probes.liveness || probes.startup) {
            // kubelet validation: "must be 1" for liveness and startup probes.
            errors.push(
                at("success_threshold"),
                n.span(),
                "must be 1 for a liveness or startup check, as in Kubernetes",
            );
        }
    }
    if let Some(n) = &c.failure_threshold {
        timing.failure_threshold = *n.get_ref();
        if timing.failure_threshold == 0 {
            errors.push(at("failure_threshold"), n.span(), "must be at least 1");
        }
    }
    timing
}

fn check_port(port: &Spanned<u16>, key: &str, errors: &mut Errors<'_>) {
    if *port.get_ref() == 0 {
        errors.push(key, port.span(), "invalid port number: 0");
    }
}

/// Expands a host written as `${VAR}` from the environment.
fn expand_host(text: &str, env: &dyn Env) -> Result<Host, String> {
    if let Some(var) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        return match env.var(var) {
            Some(value) if !value.trim().is_empty() => Ok(Host {
                name: value.trim().to_string(),
                from_env: Some(var.to_string()),
            }),
            _ => Err(format!(
                "{text} names the environment variable {var}, which is not set (set it from the downward API: fieldRef status.podIP)"
            )),
        };
    }
    if text.is_empty() || text.contains(['$', '/', ' ', '[', ']']) {
        return Err(format!(
            "{text:?} is not a host: write an IP address, a name, or ${{VAR}}"
        ));
    }
    Ok(Host {
        name: text.to_string(),
        from_env: None,
    })
}
