//! `file`: a heartbeat file whose modification time must be younger than
//! `max_age`. A missing file is a failure.

use std::time::{Duration, SystemTime};

use super::{Outcome, Reason, describe_io};
use crate::config::FileSpec;
use crate::text::whole_ms;

/// A prepared heartbeat-file check.
#[derive(Debug)]
pub struct FileCheck {
    spec: FileSpec,
}

impl FileCheck {
    /// Prepares a file check.
    pub(crate) fn new(spec: FileSpec) -> Self {
        FileCheck { spec }
    }

    /// Reads the file's modification time once.
    pub(crate) async fn run(&self, timeout: Duration) -> Outcome {
        let path = self.spec.path.clone();
        let stat = tokio::time::timeout(timeout, tokio::fs::metadata(path)).await;
        let shown = self.spec.path.display();
        let modified = match stat {
            Err(_) => {
                return Outcome::failure(Reason::Timeout, format!("heartbeat file {shown}: stat timed out"));
            }
            Ok(Err(e)) => {
                return Outcome::failure(
                    Reason::Stale,
                    format!("heartbeat file {shown}: {}", describe_io(&e)),
                );
            }
            Ok(Ok(meta)) => match meta.modified() {
                Ok(t) => t,
                Err(e) => return Outcome::unknown(format!("heartbeat file {shown}: {}", describe_io(&e))),
            },
        };
        // A modification time in the future (clock skew, touch -d) is fresh.
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO);
        let max_age = humantime::format_duration(self.spec.max_age);
        if age < self.spec.max_age {
            Outcome::success(format!("heartbeat file {shown} is {} old", whole_ms(age)))
        } else {
            Outcome::failure(
                Reason::Stale,
                format!(
                    "heartbeat file {shown} is {} old, older than max_age {max_age}",
                    whole_ms(age)
                ),
            )
        }
    }
}
