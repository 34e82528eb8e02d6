//! Lints: valid settings that are usually a mistake. `check-config` prints
//! them; they never stop the sidecar from starting.

use std::fmt;
use std::time::Duration;

use super::{CheckConfig, Config};

/// How long a failed pod may stay in rotation before a lint speaks up.
const MAX_IN_ROTATION: Duration = Duration::from_secs(60);

/// A warning about one check, or about a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// What it is about: `check "NAME"`, or a key such as
    /// `drain.token_file`.
    pub subject: String,
    /// The line of the check's table; 0 for a key left out of the file.
    pub line: usize,
    /// What is likely wrong, and why.
    pub message: String,
}

/// Shown after the file name: `FILE:LINE: warning: check "NAME": ...`, or
/// `FILE: warning: KEY: ...` for a key left out.
impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:", self.line)?;
        }
        write!(f, " warning: {}: {}", self.subject, self.message)
    }
}

/// Every lint for `config`: the checks' in file order, then the drain's.
pub fn lints(config: &Config) -> Vec<Lint> {
    let mut lints: Vec<Lint> = config.checks.iter().flat_map(check_lints).collect();
    if config.drain.token_file.is_none() {
        lints.push(Lint {
            subject: "drain.token_file".into(),
            line: 0,
            message: "not set: /prestop, /drain and /exit answer loopback clients only, so the kubelet's preStop httpGet (sent from the node to the pod IP) gets 403 and drains nothing; set it and send the token in the hook's Authorization header".into(),
        });
    }
    lints
}

fn check_lints(c: &CheckConfig) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut warn = |message: String| {
        out.push(Lint {
            subject: format!("check {:?}", c.name),
            line: c.line,
            message,
        })
    };
    if c.probes.liveness
        && let Some(host) = c.kind.host()
        && host.from_env.is_none()
        && !host.is_loopback()
    {
        warn(format!(
            "a liveness check aimed at {:?}, which is not this pod: when that service fails, every pod restarts and nothing is fixed; make it a readiness check",
            host.name
        ));
    }
    let t = &c.timing;
    if t.timeout >= t.period {
        warn(format!(
            "timeout ({}) is not shorter than period ({}): runs queue behind each other and the period is not kept",
            humantime::format_duration(t.timeout),
            humantime::format_duration(t.period)
        ));
    }
    if c.probes.readiness {
        // Saturating: absurd values are valid config and must not panic here.
        let in_rotation = t
            .period
            .saturating_mul(t.failure_threshold)
            .saturating_add(t.timeout);
        if in_rotation > MAX_IN_ROTATION {
            warn(format!(
                "a failed app stays in rotation for up to {} (failure_threshold {} x period {} + timeout): lower one of them",
                humantime::format_duration(in_rotation),
                t.failure_threshold,
                humantime::format_duration(t.period)
            ));
        }
    }
    out
}
