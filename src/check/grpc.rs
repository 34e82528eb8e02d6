//! `grpc`: TODO.

use std::time::Duration;

use super::Outcome;
use crate::config::GrpcSpec;

/// A prepared grpc check.
#[derive(Debug)]
pub struct GrpcCheck {
    spec: GrpcSpec,
}

impl GrpcCheck {
    /// Prepares the check.
    pub fn new(spec: GrpcSpec) -> Self {
        GrpcCheck { spec }
    }

    /// Runs the check once, bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let _ = (&self.spec, timeout);
        Outcome::unknown("not implemented")
    }
}
