//! The validator on well-formed TOML with arbitrary values: the `config`
//! target mutates bytes and seldom gets past the TOML parser with extreme
//! numbers in every field, so this one builds the file from a structure
//! (`arbitrary`) and leaves only the values to chance: huge durations,
//! thresholds, ports, odd names and hosts. Same oracle: no panic in
//! `Config::from_toml_str` or `config::lints`.

#![no_main]

use std::fmt::Write as _;

use healthproxy::config::{Config, lints};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct File {
    listen: Option<String>,
    drain_min: Option<Dur>,
    drain_max: Option<Dur>,
    drain_ports: Vec<u16>,
    exit_when_app_exits: Option<bool>,
    header_read_timeout: Option<Dur>,
    request_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_connections: Option<u64>,
    max_header_bytes: Option<u64>,
    checks: Vec<Check>,
}

#[derive(Debug, Arbitrary)]
struct Check {
    /// `None`: a valid, unique name.
    name: Option<String>,
    /// Bit mask over startup, liveness, readiness; 0 is an empty list.
    probes: u8,
    critical: Option<bool>,
    container: Option<String>,
    initial_delay: Option<Dur>,
    period: Option<Dur>,
    timeout: Option<Dur>,
    success_threshold: Option<u32>,
    failure_threshold: Option<u32>,
    handler: Handler,
}

#[derive(Debug, Arbitrary)]
enum Handler {
    Http {
        host: Option<String>,
        port: u16,
        path: Option<String>,
        header: Option<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    Grpc {
        host: Option<String>,
        port: u16,
        service: String,
    },
    File {
        max_age: Dur,
    },
}

/// A duration as written: a number and one of humantime's units.
#[derive(Debug, Arbitrary)]
struct Dur {
    value: u64,
    unit: u8,
}

impl Dur {
    fn toml(&self) -> String {
        const UNITS: [&str; 10] = ["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y"];
        format!(
            "\"{}{}\"",
            self.value,
            UNITS[usize::from(self.unit) % UNITS.len()]
        )
    }
}

/// A TOML basic string.
fn s(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn host(out: &mut String, host: &Option<String>) {
    if let Some(h) = host {
        let _ = write!(out, "host = {}, ", s(h));
    }
}

fn render(file: &File) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = writeln!(out, "{key} = {v}");
        }
    };
    line("listen", file.listen.as_deref().map(s));
    line("[drain]\nmin", file.drain_min.as_ref().map(Dur::toml));
    line("max", file.drain_max.as_ref().map(Dur::toml));
    line("ports", Some(format!("{:?}", file.drain_ports)));
    line(
        "exit_when_app_exits",
        file.exit_when_app_exits.map(|b| b.to_string()),
    );
    line(
        "[server]\nheader_read_timeout",
        file.header_read_timeout.as_ref().map(Dur::toml),
    );
    line("request_timeout", file.request_timeout.as_ref().map(Dur::toml));
    line("idle_timeout", file.idle_timeout.as_ref().map(Dur::toml));
    // TOML integers are i64.
    line(
        "max_connections",
        file.max_connections.map(|n| (n >> 1).to_string()),
    );
    line(
        "max_header_bytes",
        file.max_header_bytes.map(|n| (n >> 1).to_string()),
    );
    for (i, c) in file.checks.iter().enumerate() {
        let _ = writeln!(out, "[[check]]");
        let name = c.name.clone().unwrap_or_else(|| format!("c{i}"));
        let _ = writeln!(out, "name = {}", s(&name));
        let probes: Vec<&str> = ["\"startup\"", "\"liveness\"", "\"readiness\""]
            .into_iter()
            .enumerate()
            .filter(|(b, _)| c.probes & (1 << b) != 0)
            .map(|(_, p)| p)
            .collect();
        let _ = writeln!(out, "probes = [{}]", probes.join(", "));
        let mut line = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                let _ = writeln!(out, "{key} = {v}");
            }
        };
        line("critical", c.critical.map(|b| b.to_string()));
        line("container", c.container.as_deref().map(s));
        line("initial_delay", c.initial_delay.as_ref().map(Dur::toml));
        line("period", c.period.as_ref().map(Dur::toml));
        line("timeout", c.timeout.as_ref().map(Dur::toml));
        line("success_threshold", c.success_threshold.map(|n| n.to_string()));
        line("failure_threshold", c.failure_threshold.map(|n| n.to_string()));
        let mut h = String::new();
        let kind = match &c.handler {
            Handler::Http {
                host: hh,
                port,
                path,
                header,
            } => {
                host(&mut h, hh);
                if let Some(p) = path {
                    let _ = write!(h, "path = {}, ", s(p));
                }
                if let Some((k, v)) = header {
                    let _ = write!(h, "headers = {{ {} = {} }}, ", s(k), s(v));
                }
                let _ = write!(h, "port = {port}");
                "http"
            }
            Handler::Tcp { host: hh, port } => {
                host(&mut h, hh);
                let _ = write!(h, "port = {port}");
                "tcp"
            }
            Handler::Exec { command } => {
                let args: Vec<String> = command.iter().map(|a| s(a)).collect();
                let _ = write!(h, "command = [{}]", args.join(", "));
                "exec"
            }
            Handler::Grpc {
                host: hh,
                port,
                service,
            } => {
                host(&mut h, hh);
                let _ = write!(h, "port = {port}, service = {}", s(service));
                "grpc"
            }
            Handler::File { max_age } => {
                let _ = write!(h, "path = \"/tmp/x\", max_age = {}", max_age.toml());
                "file"
            }
        };
        let _ = writeln!(out, "{kind} = {{ {h} }}");
    }
    out
}

fuzz_target!(|file: File| {
    let text = render(&file);
    for env in [
        &(|_: &str| None) as &dyn Fn(&str) -> Option<String>,
        &|name: &str| Some(name.to_string()),
    ] {
        match Config::from_toml_str(&text, "fuzz", &env) {
            Ok(config) => {
                for lint in lints(&config) {
                    let _ = lint.to_string();
                }
            }
            Err(errors) => {
                let _ = errors.to_string();
            }
        }
    }
});
