//! `exec`: TODO.

use std::time::Duration;

use super::Outcome;
use crate::config::ExecSpec;

/// A prepared exec check.
#[derive(Debug)]
pub struct ExecCheck {
    spec: ExecSpec,
}

impl ExecCheck {
    /// Prepares the check.
    pub fn new(spec: ExecSpec) -> Self {
        ExecCheck { spec }
    }

    /// Runs the check once, bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let _ = (&self.spec, timeout);
        Outcome::unknown("not implemented")
    }
}
