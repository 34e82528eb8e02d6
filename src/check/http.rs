//! `http`: TODO.

use std::time::Duration;

use super::Outcome;
use crate::config::HttpSpec;

/// A prepared http check.
#[derive(Debug)]
pub struct HttpCheck {
    spec: HttpSpec,
}

impl HttpCheck {
    /// Prepares the check.
    pub fn new(spec: HttpSpec) -> Result<Self, String> {
        Ok(HttpCheck { spec })
    }

    /// Runs the check once, bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let _ = (&self.spec, timeout);
        Outcome::unknown("not implemented")
    }
}
