//! Lints: valid settings that are usually a mistake. `check-config` prints
//! them; they never stop the sidecar from starting.

use std::fmt;
use std::time::Duration;

use super::{CheckConfig, Config};

/// How long a failed pod may stay in rotation before a lint speaks up.
const MAX_IN_ROTATION: Duration = Duration::from_secs(60);

/// A warning about one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// The check's name.
    pub check: String,
    /// The line of the check's table.
    pub line: usize,
    /// What is likely wrong, and why.
    pub message: String,
}

/// Shown after the file name: `FILE:LINE: warning: check "NAME": ...`.
impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: warning: check {:?}: {}",
            self.line, self.check, self.message
        )
    }
}

/// Every lint for `config`, in file order.
pub fn lints(config: &Config) -> Vec<Lint> {
    config.checks.iter().flat_map(check_lints).collect()
}

fn check_lints(c: &CheckConfig) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut warn = |message: String| {
        out.push(Lint {
            check: c.name.clone(),
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
