//! `tcp`: open a connection within the timeout, then close it at once; no
//! bytes are sent or read (kubelet-semantics §2.1).

use std::time::Duration;

use super::{Outcome, Resolver, dial};
use crate::config::TcpSpec;

/// A prepared TCP check.
#[derive(Debug)]
pub struct TcpCheck {
    spec: TcpSpec,
    resolver: Resolver,
}

impl TcpCheck {
    /// Prepares a TCP check.
    pub(crate) fn new(spec: TcpSpec) -> Self {
        TcpCheck {
            spec,
            resolver: Resolver::default(),
        }
    }

    /// Connects once.
    pub(crate) async fn run(&self, timeout: Duration) -> Outcome {
        match dial(&self.resolver, &self.spec.host, self.spec.port, timeout).await {
            Ok(_stream) => Outcome::success(format!(
                "connected to {}",
                self.spec.host.authority(self.spec.port)
            )),
            Err(failed) => Outcome::failure(failed.reason, failed.message),
        }
    }
}
