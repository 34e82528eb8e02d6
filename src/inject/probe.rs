//! One Kubernetes probe: read with the kubelet's defaults, turned into a
//! healthproxy check, and replaced by a probe of the sidecar's endpoint.
//!
//! # The rewritten probe's timing
//!
//! The check keeps the original probe's handler and timing, so the sidecar
//! reaches its verdict when the kubelet would have. The kubelet then asks
//! the sidecar (`/containers/NAME/livez|readyz|startupz`), which answers
//! from its cache at once:
//!
//! - liveness and readiness: `periodSeconds` = max(1, period / 2),
//!   `failureThreshold` 2, `successThreshold` 1, `timeoutSeconds` 1. The
//!   kubelet acts at most 2 × max(1, period / 2) ≤ period + 1 s after the
//!   sidecar's verdict, and one lost answer (the sidecar restarting) is
//!   never a second consecutive failure, so never a restart.
//!   `initialDelaySeconds` = the original delay + failureThreshold ×
//!   period (liveness) or successThreshold × period (readiness): the
//!   sidecar may have run its check before the app container started (a
//!   native sidecar starts first), and those runs must not count before
//!   the original delay, so the kubelet waits until the verdict rests on
//!   runs made after it. "period" is max(period, timeout) here: runs are
//!   never closer than that, for the kubelet as for the sidecar.
//! - startup: `periodSeconds` 1 and `failureThreshold` =
//!   (failureThreshold + 1) × period + 1, after the same
//!   `initialDelaySeconds`: the app gets the original budget
//!   (failureThreshold × period), one more period (the sidecar samples at
//!   its own phase) and one second (one lost answer); success is seen
//!   within a second of the sidecar's.
//!
//! A probe-level `terminationGracePeriodSeconds` stays on the rewritten
//! probe: it is the kubelet's, used when it kills the container.

use std::fmt::Write as _;

use serde_yaml_ng::{Mapping, Value};

use super::FieldError;
use super::exec::{self, Converted};
use crate::config::{
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_INITIAL_DELAY, DEFAULT_PERIOD, DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_TIMEOUT, ProbeKind,
};

/// The probe fields the kubelet knows; any other makes the translation
/// unfaithful.
const PROBE_FIELDS: &[&str] = &[
    "httpGet",
    "tcpSocket",
    "grpc",
    "exec",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
];

/// The probe's field name on a container.
pub(crate) fn field(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Startup => "startupProbe",
        ProbeKind::Liveness => "livenessProbe",
        ProbeKind::Readiness => "readinessProbe",
    }
}

/// The kubelet's timing of one probe, defaults applied (kubelet-semantics
/// §3.1: 0 or absent means the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// `initialDelaySeconds`.
    pub initial_delay: u64,
    /// `periodSeconds`.
    pub period: u64,
    /// `timeoutSeconds`.
    pub timeout: u64,
    /// `successThreshold`.
    pub(crate) success: u64,
    /// `failureThreshold`.
    pub(crate) failure: u64,
}

/// What a check does, as read from the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handler {
    /// `httpGet`.
    Http {
        /// `true` for `HTTPS`.
        https: bool,
        /// `host`, when given (else the check's default, loopback).
        host: Option<String>,
        /// The resolved port.
        port: u16,
        /// The path as the kubelet requests it.
        path: String,
        /// `httpHeaders`, in order.
        headers: Vec<(String, String)>,
    },
    /// `tcpSocket`.
    Tcp {
        /// `host`, when given.
        host: Option<String>,
        /// The resolved port.
        port: u16,
    },
    /// `grpc`.
    Grpc {
        /// `port` (never named).
        port: u16,
        /// `service`; empty for the server.
        service: String,
    },
    /// `exec`, its command recognised as a tool a native check stands for.
    Native(Box<Converted>),
}

impl Handler {
    /// The port it dials (a process check dials none).
    pub(crate) fn port(&self) -> Option<u16> {
        match self {
            Handler::Http { port, .. } | Handler::Tcp { port, .. } | Handler::Grpc { port, .. } => {
                Some(*port)
            }
            Handler::Native(c) => c.port,
        }
    }

    /// Whether it dials the pod itself (no host, or loopback).
    pub(crate) fn on_pod(&self) -> bool {
        match self {
            Handler::Http { host, .. } | Handler::Tcp { host, .. } => is_local(host.as_deref()),
            Handler::Grpc { .. } => true,
            Handler::Native(c) => c.port.is_some() && is_local(c.host.as_deref()),
        }
    }

    /// A short description for the summary: `httpGet :8080/healthz`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Handler::Http {
                https,
                host,
                port,
                path,
                ..
            } => format!(
                "httpGet {}{}:{port}{path}",
                if *https { "https://" } else { "" },
                host.as_deref().unwrap_or("")
            ),
            Handler::Tcp { host, port } => format!("tcpSocket {}:{port}", host.as_deref().unwrap_or("")),
            Handler::Grpc { port, service } => format!("grpc :{port} service {service:?}"),
            Handler::Native(c) => format!("exec `{}` as {}", c.command, c.table()),
        }
    }
}

/// No host, or the loopback.
fn is_local(host: Option<&str>) -> bool {
    host.is_none_or(|h| h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

/// A probe that the sidecar takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Moved {
    /// The container it belongs to.
    pub(crate) container: String,
    /// Which probe it was.
    pub(crate) kind: ProbeKind,
    /// What it does.
    pub(crate) handler: Handler,
    /// When.
    pub(crate) timing: Timing,
}

impl Moved {
    /// The check's name: `CONTAINER-KIND`.
    pub(crate) fn check_name(&self) -> String {
        format!("{}-{}", self.container, self.kind)
    }

    /// The sidecar's endpoint the rewritten probe asks.
    pub(crate) fn endpoint(&self) -> String {
        format!("/containers/{}/{}", self.container, self.kind.endpoint())
    }

    /// The check as a `[[check]]` table.
    pub(crate) fn toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = String::new();
        let _ = writeln!(out, "[[check]]");
        let _ = writeln!(out, "name = {}", q(&self.check_name()));
        let _ = writeln!(out, "container = {}", q(&self.container));
        let _ = writeln!(out, "probes = [{}]", q(self.kind.as_str()));
        let _ = writeln!(
            out,
            "origin = {}",
            q(&format!("containers[{}].{}", self.container, field(self.kind)))
        );
        let host = |h: &Option<String>| {
            h.as_ref()
                .map(|h| format!("host = {}, ", q(h)))
                .unwrap_or_default()
        };
        match &self.handler {
            Handler::Http {
                https,
                host: h,
                port,
                path,
                headers,
            } => {
                let scheme = if *https { "scheme = \"https\", " } else { "" };
                let mut line = format!("http = {{ {scheme}{}port = {port}, path = {}", host(h), q(path));
                if !headers.is_empty() {
                    let list: Vec<String> = headers
                        .iter()
                        .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                        .collect();
                    let _ = write!(line, ", headers = {{ {} }}", list.join(", "));
                }
                let _ = writeln!(out, "{line} }}");
            }
            Handler::Tcp { host: h, port } => {
                let _ = writeln!(out, "tcp = {{ {}port = {port} }}", host(h));
            }
            Handler::Grpc { port, service } => {
                let _ = writeln!(out, "grpc = {{ port = {port}, service = {} }}", q(service));
            }
            Handler::Native(c) => {
                let _ = writeln!(out, "{}", c.table());
            }
        }
        let t = &self.timing;
        let _ = writeln!(out, "initial_delay = \"{}s\"", t.initial_delay);
        let _ = writeln!(out, "period = \"{}s\"", t.period);
        let _ = writeln!(out, "timeout = \"{}s\"", t.timeout);
        let _ = writeln!(out, "success_threshold = {}", t.success);
        let _ = writeln!(out, "failure_threshold = {}", t.failure);
        out
    }

    /// The probe that replaces the original on the app container, asking
    /// the sidecar on `port` (see the module's documentation for the rule).
    pub(crate) fn rewritten(&self, port: u16, original: &Mapping) -> Result<Value, DoesNotFit> {
        let t = &self.timing;
        let spacing = t.period.max(t.timeout);
        let (delay, period, failure) = match self.kind {
            ProbeKind::Startup => (t.initial_delay, 1, (t.failure + 1) * spacing + 1),
            ProbeKind::Liveness => (t.initial_delay + t.failure * spacing, (t.period / 2).max(1), 2),
            ProbeKind::Readiness => (t.initial_delay + t.success * spacing, (t.period / 2).max(1), 2),
        };
        let int32 = |value: u64, field: &'static str| -> Result<Value, DoesNotFit> {
            i32::try_from(value)
                .map(Value::from)
                .map_err(|_| DoesNotFit { field, value })
        };
        let mut http = Mapping::new();
        http.insert("path".into(), self.endpoint().into());
        http.insert("port".into(), u64::from(port).into());
        let mut probe = Mapping::new();
        probe.insert("httpGet".into(), Value::Mapping(http));
        probe.insert("initialDelaySeconds".into(), int32(delay, "initialDelaySeconds")?);
        probe.insert("periodSeconds".into(), int32(period, "periodSeconds")?);
        probe.insert("timeoutSeconds".into(), 1.into());
        probe.insert("successThreshold".into(), 1.into());
        probe.insert("failureThreshold".into(), int32(failure, "failureThreshold")?);
        if let Some(grace) = original.get("terminationGracePeriodSeconds")
            && !grace.is_null()
        {
            probe.insert("terminationGracePeriodSeconds".into(), grace.clone());
        }
        Ok(Value::Mapping(probe))
    }
}

/// A number of the rewritten probe that the API's 32 bits cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the rewritten probe's {field} ({value}) does not fit the API's 32 bits")]
pub(crate) struct DoesNotFit {
    /// The probe's field, such as `failureThreshold`.
    pub(crate) field: &'static str,
    /// The number.
    pub(crate) value: u64,
}

/// What to do with one probe of a container.
#[derive(Debug)]
pub(crate) enum Plan {
    /// The sidecar runs it.
    Move(Moved),
    /// It stays with the kubelet (an `exec` probe): why.
    Keep(String),
}

/// Reads the probe `kind` of `container` (its mapping `c`) in a pod that
/// shares its process namespace or not. Errors name the field under the
/// probe, such as `httpGet.port`.
pub(crate) fn plan(
    container: &str,
    c: &Mapping,
    kind: ProbeKind,
    probe: &Mapping,
    shares_processes: bool,
) -> Result<Plan, FieldError> {
    let handler = handler_of(probe)?;
    let timing = timing(probe, kind);
    if handler == "exec" {
        // An exec probe stays when it cannot move, as before this version
        // moved any: its timing is the kubelet's to judge then.
        return Ok(match timing {
            Ok(timing) => plan_exec(container, c, kind, probe, timing, shares_processes),
            Err(e) => Plan::Keep(e.to_string()),
        });
    }
    let timing = timing?;
    let body = match probe.get(handler) {
        Some(Value::Mapping(m)) => Body { handler, fields: m },
        _ => return Err(FieldError::new(handler.to_string(), "must be a mapping".into())),
    };
    let handler = match handler {
        "httpGet" => http_get(c, &body)?,
        "tcpSocket" => tcp_socket(c, &body)?,
        _ => grpc(&body)?,
    };
    Ok(Plan::Move(Moved {
        container: container.to_string(),
        kind,
        handler,
        timing,
    }))
}

/// The probe's one handler (`httpGet`, `tcpSocket`, `grpc` or `exec`),
/// once every field of the probe is one the kubelet knows.
fn handler_of(probe: &Mapping) -> Result<&'static str, FieldError> {
    for key in probe.keys() {
        let name = key.as_str().unwrap_or("");
        if !PROBE_FIELDS.contains(&name) {
            return Err(FieldError::new(
                name.to_string(),
                "is not a probe field this version knows: its meaning cannot be carried over".into(),
            ));
        }
    }
    let handlers: Vec<&'static str> = ["httpGet", "tcpSocket", "grpc", "exec"]
        .into_iter()
        .filter(|h| probe.get(*h).is_some_and(|v| !v.is_null()))
        .collect();
    match handlers.as_slice() {
        [] => Err(FieldError::new(
            String::new(),
            "must specify a handler type (httpGet, tcpSocket, grpc or exec)".into(),
        )),
        [one] => Ok(*one),
        [_, second, ..] => Err(FieldError::new(
            second.to_string(),
            "may not specify more than 1 handler type".into(),
        )),
    }
}

/// An `exec` probe: moved when its command is one a native check stands
/// for, else kept, saying why.
fn plan_exec(
    container: &str,
    c: &Mapping,
    kind: ProbeKind,
    probe: &Mapping,
    mut timing: Timing,
    shares_processes: bool,
) -> Plan {
    let command = match probe.get("exec").and_then(|e| e.get("command")) {
        Some(Value::Sequence(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>(),
        _ => None,
    };
    let Some(command) = command else {
        return Plan::Keep("its command is not a list of strings".into());
    };
    if probe
        .get("exec")
        .and_then(Value::as_mapping)
        .is_some_and(|m| m.keys().any(|k| k.as_str() != Some("command")))
    {
        return Plan::Keep("exec has fields this version does not know".into());
    }
    let ctx = exec::Context {
        container: c,
        name: container,
        probe: kind.as_str(),
        shares_processes,
        timeout: timing.timeout,
    };
    match exec::convert(&command, &ctx) {
        Err(why) => Plan::Keep(why),
        Ok(converted) => {
            if let Some(t) = converted.timeout {
                timing.timeout = timing.timeout.min(t.max(1));
            }
            Plan::Move(Moved {
                container: container.to_string(),
                kind,
                handler: Handler::Native(Box::new(converted)),
                timing,
            })
        }
    }
}

/// A handler's mapping (`httpGet: {...}`), its fields named under it.
struct Body<'a> {
    /// `httpGet`, `tcpSocket` or `grpc`.
    handler: &'static str,
    /// Its fields.
    fields: &'a Mapping,
}

impl Body<'_> {
    /// `httpGet.port` for `port`.
    fn at(&self, field: &str) -> String {
        format!("{}.{field}", self.handler)
    }

    /// Refuses a field other than `known`.
    fn only(&self, known: &[&str]) -> Result<(), FieldError> {
        for key in self.fields.keys() {
            let name = key.as_str().unwrap_or("");
            if !known.contains(&name) {
                return Err(FieldError::new(
                    self.at(name),
                    "is not a field this version knows: its meaning cannot be carried over".into(),
                ));
            }
        }
        Ok(())
    }

    /// A text field, or `None` when absent.
    fn text(&self, field: &str) -> Result<Option<String>, FieldError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(FieldError::new(self.at(field), "must be a string".into())),
        }
    }

    /// `host`, when given and not empty.
    fn host(&self) -> Result<Option<String>, FieldError> {
        Ok(self.text("host")?.filter(|h| !h.is_empty()))
    }

    /// `port`, resolved against the container `c`'s ports.
    fn port(&self, c: &Mapping) -> Result<u16, FieldError> {
        resolve_port(c, self.fields.get("port")).map_err(|m| FieldError::new(self.at("port"), m))
    }
}

/// `httpGet`, read as the kubelet reads it.
fn http_get(c: &Mapping, body: &Body<'_>) -> Result<Handler, FieldError> {
    body.only(&["path", "port", "host", "scheme", "httpHeaders"])?;
    let https = match body.text("scheme")?.as_deref() {
        None | Some("HTTP") => false,
        Some("HTTPS") => true,
        Some(other) => {
            return Err(FieldError::new(
                body.at("scheme"),
                format!("{other:?} is not HTTP or HTTPS"),
            ));
        }
    };
    // url.Parse keeps a relative path relative; Go's URL.String puts a
    // '/' between the host and it (kubelet-semantics §1.1).
    let path = match body.text("path")?.filter(|p| !p.is_empty()) {
        None => "/".to_string(),
        Some(p) if p.starts_with('/') => p,
        Some(p) => format!("/{p}"),
    };
    Ok(Handler::Http {
        https,
        host: body.host()?,
        port: body.port(c)?,
        path,
        headers: headers(body.fields.get("httpHeaders"))
            .map_err(|e| FieldError::new(body.at(&e.field), e.message))?,
    })
}

/// `tcpSocket`.
fn tcp_socket(c: &Mapping, body: &Body<'_>) -> Result<Handler, FieldError> {
    body.only(&["port", "host"])?;
    Ok(Handler::Tcp {
        host: body.host()?,
        port: body.port(c)?,
    })
}

/// `grpc`: its port is a number, never a name.
fn grpc(body: &Body<'_>) -> Result<Handler, FieldError> {
    body.only(&["port", "service"])?;
    let port = match body.fields.get("port") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0),
        _ => None,
    };
    Ok(Handler::Grpc {
        port: port.ok_or_else(|| {
            FieldError::new(body.at("port"), "must be a port number from 1 to 65535".into())
        })?,
        service: body.text("service")?.unwrap_or_default(),
    })
}

/// The probe's timing, the kubelet's defaults applied.
fn timing(probe: &Mapping, kind: ProbeKind) -> Result<Timing, FieldError> {
    let number = |f: &str| int(probe, f).map_err(|m| FieldError::new(f.into(), m));
    let or = |n: Option<u64>, default: u64| n.filter(|n| *n > 0).unwrap_or(default);
    let success = number("successThreshold")?;
    if kind != ProbeKind::Readiness && success.is_some_and(|s| s > 1) {
        return Err(FieldError::new(
            "successThreshold".into(),
            "must be 1 for liveness and startup probes (the API rejects it)".into(),
        ));
    }
    let timing = Timing {
        initial_delay: number("initialDelaySeconds")?.unwrap_or(DEFAULT_INITIAL_DELAY.as_secs()),
        period: or(number("periodSeconds")?, DEFAULT_PERIOD.as_secs()),
        timeout: or(number("timeoutSeconds")?, DEFAULT_TIMEOUT.as_secs()),
        success: or(success, u64::from(DEFAULT_SUCCESS_THRESHOLD)),
        failure: or(number("failureThreshold")?, u64::from(DEFAULT_FAILURE_THRESHOLD)),
    };
    number("terminationGracePeriodSeconds")?;
    Ok(timing)
}

/// A whole, non-negative 32-bit number, or `None` when absent.
fn int(m: &Mapping, key: &str) -> Result<Option<u64>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => Ok(Some(v as u64)),
            Some(_) => Err("must be a number from 0 to 2147483647".into()),
            None => Err("must be a whole number".into()),
        },
        Some(_) => Err("must be a number, not text".into()),
    }
}

/// The kubelet's `ResolveContainerPort`: a number, or a name looked up in
/// the container's own `ports` (the first that matches), or a name that
/// is a number after all.
fn resolve_port(c: &Mapping, port: Option<&Value>) -> Result<u16, String> {
    let valid = |p: i64| u16::try_from(p).ok().filter(|p| *p > 0);
    match port {
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(valid)
            .ok_or_else(|| format!("invalid port number: {n}")),
        Some(Value::String(name)) => {
            let ports = c
                .get("ports")
                .and_then(Value::as_sequence)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let found = ports
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_i64);
            match found.or_else(|| name.parse().ok()) {
                Some(p) => valid(p).ok_or_else(|| format!("invalid port number: {p}")),
                None => Err(format!(
                    "port {name:?} not found among the container's ports: the kubelet's probe would never run"
                )),
            }
        }
        _ => Err("missing: a number or the name of one of the container's ports".into()),
    }
}

/// `httpHeaders`, checked: a name given twice (in any letter case) cannot
/// be carried over, as the check's headers are one value per name.
fn headers(list: Option<&Value>) -> Result<Vec<(String, String)>, FieldError> {
    let items = match list {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => return Err(FieldError::new("httpHeaders".into(), "must be a list".into())),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, h) in items.iter().enumerate() {
        let at = format!("httpHeaders[{i}]");
        let name = h.get("name").and_then(Value::as_str);
        let value = match h.get("value") {
            Some(Value::String(v)) => Some(v.clone()),
            None | Some(Value::Null) => Some(String::new()),
            Some(_) => None,
        };
        let known = h
            .as_mapping()
            .is_some_and(|m| m.keys().all(|k| matches!(k.as_str(), Some("name" | "value"))));
        let (Some(name), Some(value), true) = (name, value, known) else {
            return Err(FieldError::new(at, "must be a name and a text value".into()));
        };
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!("{name:?} is given twice: the kubelet sends both, a check sends one"),
            ));
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> Mapping {
        serde_yaml_ng::from_str(text).unwrap()
    }

    fn moved(container: &str, probe: &str, kind: ProbeKind) -> Moved {
        match plan("app", &map(container), kind, &map(probe), false).unwrap() {
            Plan::Move(m) => m,
            Plan::Keep(why) => panic!("kept: {why}"),
        }
    }

    #[test]
    fn absent_and_zero_fields_take_the_kubelets_defaults() {
        let m = moved(
            "name: app",
            "httpGet: {port: 8080}\nperiodSeconds: 0",
            ProbeKind::Liveness,
        );
        assert_eq!(
            m.timing,
            Timing {
                initial_delay: 0,
                period: 10,
                timeout: 1,
                success: 1,
                failure: 3
            }
        );
        assert_eq!(
            m.handler,
            Handler::Http {
                https: false,
                host: None,
                port: 8080,
                path: "/".into(),
                headers: vec![]
            }
        );
    }

    #[test]
    fn a_named_port_resolves_against_the_containers_ports_as_the_kubelet() {
        let c = "ports: [{name: web, containerPort: 8080}, {name: web, containerPort: 9090}, {name: admin, containerPort: 8081}]";
        assert_eq!(
            moved(c, "tcpSocket: {port: web}", ProbeKind::Readiness)
                .handler
                .port(),
            Some(8080)
        );
        assert_eq!(
            moved(c, "httpGet: {port: admin, path: healthz}", ProbeKind::Readiness).handler,
            Handler::Http {
                https: false,
                host: None,
                port: 8081,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(
            moved("name: app", "tcpSocket: {port: \"8080\"}", ProbeKind::Readiness)
                .handler
                .port(),
            Some(8080)
        );
        let FieldError { field, message } = plan(
            "app",
            &map(c),
            ProbeKind::Liveness,
            &map("httpGet: {port: metrics}"),
            false,
        )
        .unwrap_err();
        assert_eq!(field, "httpGet.port");
        assert!(message.contains("\"metrics\" not found"), "{message}");
    }

    #[test]
    fn what_cannot_be_carried_over_is_refused_with_its_field() {
        let refuse = |probe: &str, kind| {
            plan("app", &map("name: app"), kind, &map(probe), false)
                .unwrap_err()
                .field
        };
        assert_eq!(refuse("httpGet: {port: 1}\nfoo: 1", ProbeKind::Liveness), "foo");
        assert_eq!(
            refuse("httpGet: {port: 1, bar: 1}", ProbeKind::Liveness),
            "httpGet.bar"
        );
        assert_eq!(
            refuse("httpGet: {port: 1}\ntcpSocket: {port: 1}", ProbeKind::Liveness),
            "tcpSocket"
        );
        assert_eq!(
            refuse("httpGet: {port: 1}\nsuccessThreshold: 2", ProbeKind::Liveness),
            "successThreshold"
        );
        assert_eq!(
            refuse("httpGet: {port: 1}\nperiodSeconds: \"10\"", ProbeKind::Liveness),
            "periodSeconds"
        );
        assert_eq!(
            refuse("httpGet: {port: 1}\nperiodSeconds: -1", ProbeKind::Liveness),
            "periodSeconds"
        );
        assert_eq!(
            refuse("httpGet: {port: 70000}", ProbeKind::Liveness),
            "httpGet.port"
        );
        assert_eq!(refuse("grpc: {port: web}", ProbeKind::Liveness), "grpc.port");
        assert_eq!(
            refuse(
                "httpGet: {port: 1, httpHeaders: [{name: X-A, value: a}, {name: x-a, value: b}]}",
                ProbeKind::Liveness
            ),
            "httpGet.httpHeaders[1].name"
        );
        assert_eq!(
            refuse("httpGet: {port: 1, scheme: FTP}", ProbeKind::Liveness),
            "httpGet.scheme"
        );
    }

    #[test]
    fn exec_probes_stay() {
        assert!(matches!(
            plan(
                "app",
                &map("name: app"),
                ProbeKind::Liveness,
                &map("exec: {command: [true]}"),
                false
            )
            .unwrap(),
            Plan::Keep(_)
        ));
    }

    #[test]
    fn an_exec_probe_whose_timing_cannot_be_read_stays_saying_which_field() {
        let kept = plan(
            "app",
            &map("name: app"),
            ProbeKind::Liveness,
            &map("exec: {command: [pg_isready]}\nperiodSeconds: \"10\""),
            false,
        )
        .unwrap();
        let Plan::Keep(why) = kept else {
            panic!("moved: {kept:?}")
        };
        assert_eq!(why, "periodSeconds must be a number, not text");
    }

    #[test]
    fn a_rewritten_number_past_32_bits_is_refused_naming_it() {
        let probe = "httpGet: {port: 8080}\nperiodSeconds: 2147483647\nfailureThreshold: 2147483647";
        let e = moved("name: app", probe, ProbeKind::Startup)
            .rewritten(9775, &map(probe))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the rewritten probe's failureThreshold (4611686016279904257) does not fit the API's 32 bits"
        );
    }

    #[test]
    fn the_rewritten_timing_follows_the_documented_rule() {
        let probe = "httpGet: {port: 8080}\ninitialDelaySeconds: 5\nperiodSeconds: 10\nfailureThreshold: 3\nterminationGracePeriodSeconds: 7";
        let live = moved("name: app", probe, ProbeKind::Liveness)
            .rewritten(9775, &map(probe))
            .unwrap();
        assert_eq!(
            serde_yaml_ng::to_string(&live).unwrap(),
            "httpGet:\n  path: /containers/app/livez\n  port: 9775\ninitialDelaySeconds: 35\nperiodSeconds: 5\ntimeoutSeconds: 1\nsuccessThreshold: 1\nfailureThreshold: 2\nterminationGracePeriodSeconds: 7\n"
        );
        let start = "httpGet: {port: 8080}\nperiodSeconds: 10\nfailureThreshold: 30";
        let s = moved("name: app", start, ProbeKind::Startup)
            .rewritten(9775, &map(start))
            .unwrap();
        assert_eq!(s["failureThreshold"], Value::from(311));
        assert_eq!(s["periodSeconds"], Value::from(1));
        let ready = "tcpSocket: {port: 8080}\nperiodSeconds: 1\ntimeoutSeconds: 3\nsuccessThreshold: 2";
        let r = moved("name: app", ready, ProbeKind::Readiness)
            .rewritten(9775, &map(ready))
            .unwrap();
        assert_eq!(r["initialDelaySeconds"], Value::from(6));
        assert_eq!(r["periodSeconds"], Value::from(1));
    }
}
