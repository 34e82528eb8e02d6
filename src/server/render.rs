//! Rendering a probe from the snapshot: the verdict, and the body in
//! kube-apiserver's text format, our JSON, or the IETF health+json draft.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::config::ProbeKind;
use crate::state::{CheckStatus, Snapshot};

/// Which checks a request asks about.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every check of the kind (`/livez`).
    All,
    /// The checks of one app container (`/containers/NAME/livez`).
    Container(&'a str),
    /// One check (`/livez/NAME`).
    Check(&'a str),
}

/// The body format a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// kube-apiserver's plain text.
    Text,
    /// Our JSON document with every check's state.
    Json,
    /// `application/health+json` (draft-inadarei-api-health-check).
    HealthJson,
}

/// A request's options, from its query string and `Accept` header.
#[derive(Debug, Default)]
pub struct Options<'a> {
    /// `?verbose`: list every check even on success.
    pub verbose: bool,
    /// `?exclude=NAME`, repeatable.
    pub(crate) exclude: Vec<&'a str>,
    /// `?format=json`.
    pub(crate) json: bool,
}

impl<'a> Options<'a> {
    /// Neither verbose nor excluding checks: a kubelet's probe.
    pub(crate) fn is_plain(&self) -> bool {
        !self.verbose && self.exclude.is_empty()
    }

    /// Parses a raw query string. Unknown keys are ignored, as
    /// kube-apiserver does.
    pub fn parse(query: Option<&'a str>) -> Self {
        let mut options = Options::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "verbose" => options.verbose = true,
                "exclude" if !value.is_empty() => options.exclude.push(value),
                "format" if value == "json" => options.json = true,
                _ => {}
            }
        }
        options
    }
}

/// One check's line in a probe.
struct Line<'s> {
    check: &'s CheckStatus,
    excluded: bool,
    passes: bool,
}

/// The verdict of a probe and what it is made of.
pub struct Probe<'s> {
    kind: ProbeKind,
    /// The verdict, as [`Snapshot::passes_counting`] gives it.
    ok: bool,
    lines: Vec<Line<'s>>,
    /// Extra failing reasons that are not checks: startup, drain.
    gates: Vec<(&'static str, &'static str)>,
    unmatched: Vec<String>,
    snapshot: &'s Snapshot,
    /// Whether the checks' messages are left out (see [`Probe::withhold_messages`]).
    withheld: bool,
}

/// What a check's failure reason reads when it is withheld, in
/// kube-apiserver's words.
pub(crate) const WITHHELD: &str = "reason withheld";

impl<'s> Probe<'s> {
    /// Evaluates probe `kind` for the checks in `scope`.
    pub fn evaluate(
        snapshot: &'s Snapshot,
        kind: ProbeKind,
        scope: Scope<'_>,
        options: &Options<'_>,
    ) -> Self {
        let line = |c: &'s CheckStatus| Line {
            check: c,
            excluded: options.exclude.contains(&c.name.as_str()),
            passes: snapshot.check_passes(c, kind),
        };
        let of_kind = |c: &&CheckStatus| c.probes.contains(kind);
        // Only the checks of the scope are looked at: one check, or one
        // container's, is found through the snapshot's index.
        let lines: Vec<Line<'s>> = match scope {
            Scope::All => snapshot.checks.iter().filter(of_kind).map(line).collect(),
            Scope::Container(name) => snapshot
                .container_checks(name)
                .filter(of_kind)
                .map(line)
                .collect(),
            Scope::Check(name) => snapshot
                .check_named(name)
                .filter(of_kind)
                .map(line)
                .into_iter()
                .collect(),
        };
        let unmatched = options
            .exclude
            .iter()
            .filter(|name| !lines.iter().any(|l| l.check.name == **name))
            .map(|name| name.to_string())
            .collect();
        // A path naming one check reports that check's own state, critical
        // or not; elsewhere a non-critical check is listed but not counted.
        // As `Snapshot::passes_counting` over the lines.
        let one = matches!(scope, Scope::Check(_));
        let ok = snapshot.gates(kind).next().is_none()
            && lines
                .iter()
                .filter(|l| !l.excluded && (l.check.critical || one))
                .all(|l| l.passes);
        Probe {
            kind,
            ok,
            lines,
            gates: snapshot.gates(kind).collect(),
            unmatched,
            snapshot,
            withheld: false,
        }
    }

    /// Leaves the checks' messages out of every body: a message can hold
    /// what the app or a command said (a redirect's body, a token in
    /// output), and clients on the pod network get names and verdicts
    /// only, as kube-apiserver answers `[-]NAME failed: reason withheld`.
    pub(crate) fn withhold_messages(mut self) -> Self {
        self.withheld = true;
        self
    }

    /// A check's reason, or [`WITHHELD`].
    fn reason(&self, check: &'s CheckStatus) -> &'s str {
        if self.withheld { WITHHELD } else { check.reason() }
    }

    /// How many checks the answer lists when it lists them.
    pub(crate) fn listed(&self) -> usize {
        self.lines.len()
    }

    /// Whether the probe passes: no gate closed and every counted critical
    /// check passing.
    pub fn ok(&self) -> bool {
        self.ok
    }

    fn degraded(&self) -> bool {
        self.lines.iter().any(|l| !l.excluded && !l.passes)
    }

    /// kube-apiserver's text: `ok`, or the lines and `livez check passed`
    /// when verbose; always the lines on failure.
    pub fn text(&self, verbose: bool) -> String {
        let ok = self.ok();
        if ok && !verbose {
            return "ok".into();
        }
        let mut out = String::new();
        for (name, reason) in &self.gates {
            let _ = writeln!(out, "[-]{name} failed: {reason}");
        }
        if self.lines.is_empty() && self.gates.is_empty() {
            out.push_str("[+]ping ok\n");
        }
        for line in &self.lines {
            let name = &line.check.name;
            if line.excluded {
                let _ = writeln!(out, "[+]{name} excluded: ok");
            } else if line.passes {
                let _ = writeln!(out, "[+]{name} ok");
            } else {
                let reason = self.reason(line.check);
                // A check that has not run has not failed: it is pending,
                // and fails its probe as a not-yet-ready one does.
                let verdict = if line.check.last.is_none() {
                    "pending"
                } else {
                    "failed"
                };
                let _ = if line.check.critical {
                    writeln!(out, "[-]{name} {verdict}: {reason}")
                } else {
                    writeln!(out, "[-]{name} {verdict} (non-critical): {reason}")
                };
            }
        }
        if !self.unmatched.is_empty() {
            let names: Vec<String> = self.unmatched.iter().map(|n| format!("{n:?}")).collect();
            let _ = writeln!(
                out,
                "warn: some health checks cannot be excluded: no matches for {}",
                names.join(",")
            );
        }
        let _ = writeln!(
            out,
            "{} check {}",
            self.kind.endpoint(),
            if ok { "passed" } else { "failed" }
        );
        out
    }

    /// Our JSON: the verdict and every check's full state.
    pub fn json(&self) -> Value {
        let checks: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                let c = l.check;
                let last = c.last.as_ref();
                json!({
                    "name": c.name,
                    "kind": c.kind,
                    "container": c.container,
                    "critical": c.critical,
                    "excluded": l.excluded,
                    "ok": l.passes,
                    "state": c.health.as_str(),
                    "presumed": c.presumed,
                    "last_result": last.map(|r| r.outcome.verdict.as_str()),
                    "message": last.filter(|_| !self.withheld).map(|r| r.outcome.message.as_str()),
                    "consecutive_successes": c.consecutive_successes,
                    "consecutive_failures": c.consecutive_failures,
                    "last_run": last.map(|r| rfc3339(r.at)),
                    "last_transition": c.last_transition.map(rfc3339),
                    "duration_seconds": last.map(|r| r.duration.as_secs_f64()),
                })
            })
            .collect();
        json!({
            "probe": self.kind.as_str(),
            "status": if self.ok() { "pass" } else { "fail" },
            "started": self.snapshot.started,
            "draining": self.snapshot.draining(),
            "messages_withheld": self.withheld,
            "checks": checks,
        })
    }

    /// The IETF draft's health+json: `pass`, `warn` (a non-critical or
    /// excluded check failing) or `fail`, and a `checks` map.
    pub fn health_json(&self) -> Value {
        let status = if !self.ok() {
            "fail"
        } else if self.degraded() {
            "warn"
        } else {
            "pass"
        };
        let mut checks = Map::new();
        for (name, reason) in &self.gates {
            checks.insert((*name).into(), json!([{ "status": "fail", "output": reason }]));
        }
        for l in &self.lines {
            let c = l.check;
            let status = match (l.passes, c.critical && !l.excluded) {
                (true, _) => "pass",
                (false, true) => "fail",
                (false, false) => "warn",
            };
            let mut entry = Map::new();
            entry.insert("componentType".into(), json!(c.kind));
            entry.insert("status".into(), json!(status));
            if let Some(last) = &c.last {
                entry.insert(
                    "observedValue".into(),
                    json!(last.duration.as_secs_f64() * 1000.0),
                );
                entry.insert("observedUnit".into(), json!("ms"));
                entry.insert("time".into(), json!(rfc3339(last.at)));
            }
            if !l.passes {
                entry.insert("output".into(), json!(self.reason(c)));
            }
            checks.insert(c.name.clone(), Value::Array(vec![Value::Object(entry)]));
        }
        json!({
            "status": status,
            "description": format!("{} probe", self.kind.as_str()),
            "checks": checks,
        })
    }
}

/// `/status`: every check's whole state with its recent transitions, and
/// each probe's verdict with the gates that close it, for `healthproxy
/// status`. With `withheld`, the checks' messages are left out, as
/// [`Probe::withhold_messages`] leaves them out of a probe's answer.
pub(crate) fn status(snapshot: &Snapshot, withheld: bool) -> Value {
    let mut probes = Map::new();
    for kind in ProbeKind::ALL {
        let gates: Vec<Value> = snapshot
            .gates(kind)
            .map(|(name, reason)| json!({ "name": name, "reason": reason }))
            .collect();
        probes.insert(
            kind.as_str().into(),
            json!({ "ok": snapshot.passes(kind), "gates": gates }),
        );
    }
    let message = |m: &str| (!withheld).then(|| m.to_string());
    let checks: Vec<Value> = snapshot
        .checks
        .iter()
        .map(|c| {
            let last = c.last.as_ref();
            let mut passes = Map::new();
            for kind in ProbeKind::ALL.into_iter().filter(|k| c.probes.contains(*k)) {
                passes.insert(kind.as_str().into(), json!(snapshot.check_passes(c, kind)));
            }
            let transitions: Vec<Value> = c
                .transitions
                .iter()
                .map(|t| json!({ "at": rfc3339(t.at), "to": t.to.as_str(), "message": message(&t.message) }))
                .collect();
            json!({
                "name": c.name,
                "kind": c.kind,
                "container": c.container,
                "critical": c.critical,
                "passes": passes,
                "state": c.health.as_str(),
                "last_result": last.map(|r| r.outcome.verdict.as_str()),
                "message": last.and_then(|r| message(&r.outcome.message)),
                "consecutive_successes": c.consecutive_successes,
                "consecutive_failures": c.consecutive_failures,
                "success_threshold": c.timing.success_threshold,
                "failure_threshold": c.timing.failure_threshold,
                "period_seconds": c.timing.period.as_secs_f64(),
                "last_run": last.map(|r| rfc3339(r.at)),
                "duration_seconds": last.map(|r| r.duration.as_secs_f64()),
                "last_success": c.last_success.map(rfc3339),
                "last_transition": c.last_transition.map(rfc3339),
                "transitions": transitions,
            })
        })
        .collect();
    json!({
        "started": snapshot.started,
        "draining": snapshot.draining(),
        "messages_withheld": withheld,
        "probes": probes,
        "checks": checks,
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
