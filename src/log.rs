//! Logging: the level filter (`--log-level`, `HEALTHPROXY_LOG_LEVEL` or
//! the config's `log_level`), validated before anything starts; lines on
//! stderr as text or JSON; and a handle that changes the filter while the
//! sidecar runs (a reload).
//!
//! JSON lines carry typed fields: numbers stay numbers, a list logged with
//! `?` stays an array, and durations are numbers with their unit in the key
//! (`duration_ms`). The level is written three ways, each read without
//! configuration by one family of log stores: `level` (`WARN`, as tracing writes it: Loki, Grafana,
//! Vector, Datadog), `severity` (Google Cloud Logging, which wants
//! `WARNING`) and `log.level` (Elastic Common Schema).

use std::fmt;
use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Registry, reload};

/// What `--log-level` accepts, for error messages.
pub(crate) const ACCEPTED_LEVELS: &str = "a level (trace, debug, info, warn or warning, error, off; any case) \
     or comma-separated directives such as \"info,healthproxy::engine=debug\" \
     (a level, or target=level)";

/// A validated log filter: a level, or `target=level` directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel {
    /// The filter as normalised (`warning` becomes `warn`), for messages.
    text: String,
}

impl LogLevel {
    /// The filter that tracing applies. A bare level is the sidecar's own
    /// (`healthproxy`); the libraries stay at `warn` or quieter, as
    /// linkerd-proxy's `LINKERD2_PROXY_LOG=debug` does, so `debug` shows
    /// the checks and the drain rather than every HTTP/2 frame of h2 and
    /// tower. A directive that names a library (`h2=debug`) reaches it.
    fn targets(&self) -> Targets {
        self.effective()
            .parse()
            .expect("a validated filter is understood by Targets")
    }

    /// The directives given to tracing: the bare level split into the
    /// sidecar's and the libraries'.
    fn effective(&self) -> String {
        let directives: Vec<&str> = self.text.split(',').collect();
        let bare = directives.iter().rev().find(|d| !d.contains('='));
        let Some(&level) = bare else {
            return self.text.clone();
        };
        let libraries = match level {
            "error" | "off" => level,
            _ => "warn",
        };
        let mut out = vec![libraries.to_string()];
        if !directives
            .iter()
            .any(|d| d.split_once('=').is_some_and(|(t, _)| t == "healthproxy"))
        {
            out.push(format!("healthproxy={level}"));
        }
        out.extend(
            directives
                .iter()
                .filter(|d| d.contains('='))
                .map(|d| d.to_string()),
        );
        out.join(",")
    }
}

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel { text: "info".into() }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Accepts a level, or comma-separated `level` and `target=level`
    /// directives, and nothing else: `tracing`'s own parser reads an
    /// unknown word as a target name, which silences every line.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("{what}: expected {ACCEPTED_LEVELS}");
        let mut directives = Vec::new();
        for directive in text.split(',').map(str::trim) {
            let (target, level) = match directive.split_once('=') {
                Some((target, level)) => (Some(target.trim()), level.trim()),
                None => (None, directive),
            };
            let level = level_name(level).ok_or_else(|| bad(&format!("{level:?} is not a log level")))?;
            match target {
                None => directives.push(level.to_string()),
                Some(t) if valid_target(t) => directives.push(format!("{t}={level}")),
                Some(t) => return Err(bad(&format!("{t:?} is not a target such as healthproxy::engine"))),
            }
        }
        Ok(LogLevel {
            text: directives.join(","),
        })
    }
}

/// The canonical name of a level, with `warning` for `warn`.
fn level_name(text: &str) -> Option<&'static str> {
    let levels = [
        ("trace", "trace"),
        ("debug", "debug"),
        ("info", "info"),
        ("warn", "warn"),
        ("warning", "warn"),
        ("error", "error"),
        ("off", "off"),
    ];
    levels
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, canonical)| *canonical)
}

/// A module path: `healthproxy`, `healthproxy::engine`, `hyper_util`.
fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target
            .split("::")
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// A duration as a log field: milliseconds, to the microsecond, in a key
/// ending in `_ms`.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with typed fields.
    Json,
}

/// Changes the level of the installed logger.
#[derive(Debug, Clone)]
pub(crate) struct Logging {
    handle: reload::Handle<Targets, Registry>,
}

impl Logging {
    /// Installs the process's logger: `format` lines on stderr, filtered
    /// by `level`.
    pub(crate) fn init(format: LogFormat, level: &LogLevel) -> Logging {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;

        let (filter, handle) = reload::Layer::new(level.targets());
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        let registry = tracing_subscriber::registry().with(filter);
        match format {
            LogFormat::Text => registry.with(layer).init(),
            LogFormat::Json => registry.with(layer.event_format(JsonLines)).init(),
        }
        Logging { handle }
    }

    /// Applies `level` from now on.
    pub(crate) fn set_level(&self, level: &LogLevel) {
        if let Err(e) = self.handle.reload(level.targets()) {
            tracing::warn!("cannot change the log level: {e}");
        }
    }
}

/// One JSON object per event: time, the level three ways, target,
/// message, then the event's fields with their types.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let level = meta.level();
        let mut fields = JsonFields(vec![
            ("timestamp", time.into()),
            ("level", level.as_str().into()),
            ("severity", severity(*level).into()),
            ("log.level", level.as_str().into()),
            ("target", meta.target().into()),
        ]);
        event.record(&mut fields);
        let mut line = String::from("{");
        for (i, (key, value)) in fields.0.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&serde_json::to_string(key).map_err(|_| fmt::Error)?);
            line.push(':');
            line.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Google Cloud Logging's severity names.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// An event's fields in the order written, as JSON values.
struct JsonFields(Vec<(&'static str, serde_json::Value)>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }

    /// `?value` and `%value`: a list's Debug form (`[8080, 8081]`) is
    /// written as a JSON array; anything else as a string.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let array = (field.name() != "message" && text.starts_with('['))
            .then(|| serde_json::from_str::<serde_json::Value>(&text).ok())
            .flatten()
            .filter(serde_json::Value::is_array);
        self.0.push((field.name(), array.unwrap_or(text.into())));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::*;

    #[test]
    fn every_level_is_accepted_in_any_case_and_warning_means_warn() {
        for (given, canonical) in [
            ("trace", "trace"),
            ("DEBUG", "debug"),
            ("Info", "info"),
            ("warn", "warn"),
            ("warning", "warn"),
            ("WARNING", "warn"),
            ("error", "error"),
            ("off", "off"),
        ] {
            assert_eq!(given.parse::<LogLevel>().unwrap().to_string(), canonical);
        }
    }

    #[test]
    fn directives_are_accepted_and_normalised() {
        let level: LogLevel = "info, healthproxy::engine=warning".parse().unwrap();
        assert_eq!(level.to_string(), "info,healthproxy::engine=warn");
        assert_eq!(level.targets().default_level(), Some(LevelFilter::WARN));
        assert_eq!(
            level.effective(),
            "warn,healthproxy=info,healthproxy::engine=warn"
        );
    }

    #[test]
    fn a_bare_level_is_the_sidecars_and_libraries_stay_at_warn_unless_named() {
        let debug: LogLevel = "debug".parse().unwrap();
        let t = debug.targets();
        assert!(t.would_enable("healthproxy::engine", &Level::DEBUG));
        assert!(!t.would_enable("h2::codec", &Level::DEBUG));
        assert!(!t.would_enable("tower::buffer", &Level::INFO));
        assert!(t.would_enable("h2::codec", &Level::WARN));
        let named: LogLevel = "debug,h2=trace".parse().unwrap();
        assert!(named.targets().would_enable("h2::codec", &Level::TRACE));
        let error: LogLevel = "error".parse().unwrap();
        assert!(!error.targets().would_enable("hyper", &Level::WARN));
        let own: LogLevel = "trace,healthproxy=info".parse().unwrap();
        assert_eq!(own.effective(), "warn,healthproxy=info");
        let only: LogLevel = "healthproxy::engine=debug".parse().unwrap();
        assert_eq!(only.effective(), "healthproxy::engine=debug");
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "verbose",
            "warnings",
            "info,",
            "=debug",
            "healthproxy[span]=debug",
            "a b=info",
            "3",
        ] {
            let e = bad.parse::<LogLevel>().unwrap_err();
            assert!(e.contains("warn or warning"), "{bad:?}: {e}");
        }
    }
}
