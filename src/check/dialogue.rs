//! `dialogue`: send bytes, expect patterns, in order, as
//! blackbox_exporter's `query_response` (prober/query_response.go) and the
//! `echo ruok | nc HOST 2181 | grep -q imok` of exec probes: ZooKeeper's
//! four-letter words, memcached's `version`, SMTP banners.
//!
//! A `send` step writes its bytes. An `expect` step reads until what
//! arrived since the last match matches its regular expression; the peer
//! closing first, or 10 KiB arriving without a match, fails the run. Like
//! `nc`, what the server answers is only compared, never a verdict by
//! itself: a ZooKeeper that says "ruok is not executed because it is not
//! in the whitelist." fails `expect = "imok"` and nothing else.

use std::time::Duration;

use super::http::tls::TlsClient;
use super::wire::{self, ReadError, Reader, Stream};
use super::{MAX_OUTPUT, Outcome, Reason, Resolver, one_line};
use crate::config::{DialogueSpec, DialogueStep};

/// A prepared dialogue.
#[derive(Debug)]
pub struct DialogueCheck {
    spec: DialogueSpec,
    resolver: Resolver,
    tls: Option<TlsClient>,
}

impl DialogueCheck {
    /// Prepares a dialogue: loads its TLS files.
    pub fn new(spec: DialogueSpec) -> Result<Self, String> {
        let tls = spec.tls.clone().map(|t| TlsClient::new(t, &[])).transpose()?;
        Ok(DialogueCheck {
            spec,
            resolver: Resolver::default(),
            tls,
        })
    }

    /// Runs the steps once, within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let mut step = 0;
        match tokio::time::timeout(timeout, self.exchange(&mut step)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failure(
                Reason::Timeout,
                format!(
                    "{}: step {} of {} not done within {}",
                    self.authority(),
                    step + 1,
                    self.spec.steps.len(),
                    humantime::format_duration(timeout)
                ),
            ),
        }
    }

    fn authority(&self) -> String {
        self.spec.host.authority(self.spec.port)
    }

    async fn exchange(&self, step: &mut usize) -> Outcome {
        let tcp = match wire::connect(&self.resolver, &self.spec.host, self.spec.port).await {
            Ok(tcp) => tcp,
            Err(f) => {
                return Outcome::failure(
                    f.reason,
                    format!("connect to {}: {}", self.authority(), f.message),
                );
            }
        };
        let mut stream: Stream = match wire::secure(tcp, self.tls.as_ref(), &self.spec.host).await {
            Ok(stream) => stream,
            Err(f) => return Outcome::failure(f.reason, f.message),
        };
        let mut reader = Reader::new(MAX_OUTPUT);
        let mut last = Vec::new();
        for (i, s) in self.spec.steps.iter().enumerate() {
            *step = i;
            match s {
                DialogueStep::Send(bytes) => {
                    if let Err(f) = wire::send(&mut stream, bytes).await {
                        return Outcome::failure(f.reason, format!("step {}: send: {}", i + 1, f.message));
                    }
                }
                DialogueStep::Expect(pattern) => loop {
                    if pattern.is_match(reader.pending()) {
                        last = reader.take_all();
                        break;
                    }
                    if let Err(e) = reader.more(&mut stream).await {
                        let got = one_line(&String::from_utf8_lossy(reader.pending()));
                        let (reason, why) = match e {
                            ReadError::Closed => {
                                (Reason::Reply, "the server closed the connection".to_string())
                            }
                            ReadError::TooLong => {
                                (Reason::Reply, format!("{MAX_OUTPUT} bytes without a match"))
                            }
                            ReadError::Io(e) => {
                                let f = wire::io_failed(e);
                                (f.reason, f.message)
                            }
                        };
                        return Outcome::failure(
                            reason,
                            format!(
                                "step {}: expected {:?}: {why} after {got:?}",
                                i + 1,
                                pattern.as_str()
                            ),
                        );
                    }
                },
            }
        }
        let got = one_line(&String::from_utf8_lossy(&last));
        Outcome::success(if got.is_empty() {
            format!("{}: every step done", self.authority())
        } else {
            got
        })
    }
}
