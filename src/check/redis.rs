//! `redis`: PING with optional AUTH and TLS, with the exit status of
//! `redis-cli ping` (redis `src/redis-cli.c`, read at 7.0.15, the version
//! Debian bookworm ships, and at unstable 4f8cdc2 of 2024-10-18; the
//! steps below are the same in both):
//!
//! - `main()` calls `cliConnect(CC_QUIET)` and ignores its result, then
//!   `noninteractive()` → `issueCommandRepeat()`, which connects again
//!   (`CC_FORCE`) if there is no context or it broke (I/O error or EOF);
//!   a second failure exits 1 ("Could not connect to Redis at ...").
//! - `cliConnect()` sends `AUTH [user] password` only when a password is
//!   given (`-a`, `REDISCLI_AUTH`); an error reply prints "AUTH failed:
//!   ..." and fails `cliConnect`, but the context stays, so the first
//!   attempt's failed AUTH still sends PING on the same connection; only
//!   in the second attempt does a failed AUTH exit 1.
//! - The reply to PING is printed whatever it is; the exit status is 0
//!   for any reply (an error reply too, `-NOAUTH`, `-LOADING`, `-BUSY`,
//!   `-MASTERDOWN`), unless `-e` (`config.set_errcode`, in
//!   `cliReadReply()`) makes an error reply exit 1. A broken connection or
//!   a reply that is not RESP ("Protocol error") exits 1.
//!
//! Where they differ: unstable has `-t` (a connect timeout, 7.2) and
//! re-selects the database after reconnecting; the check's timeout stands
//! for `-t` and the kubelet's `timeoutSeconds`, and no database is
//! selected (PING needs none).

use std::time::Duration;

use super::http::tls::TlsClient;
use super::wire::{self, ReadError, Reader, Stream};
use super::{Failed, Outcome, Reason, Resolver};
use crate::config::{RedisExpect, RedisSpec};

/// The longest reply read: more is a protocol error (a PING reply is a
/// few bytes; an error line at most a few hundred).
const MAX_REPLY: usize = 64 * 1024;

/// Aggregates nested deeper than this are a protocol error.
const MAX_DEPTH: usize = 8;

/// A prepared Redis check.
#[derive(Debug)]
pub struct RedisCheck {
    spec: RedisSpec,
    resolver: Resolver,
    tls: Option<TlsClient>,
}

/// A reply, as far as a verdict needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// `+TEXT`.
    Status(String),
    /// `-CODE text`.
    Error(String),
    /// Anything else, as redis-cli would print it (roughly).
    Other(String),
}

impl RedisCheck {
    /// Prepares a Redis check: loads its TLS files.
    pub fn new(spec: RedisSpec) -> Result<Self, String> {
        let tls = spec.tls.clone().map(|t| TlsClient::new(t, &[])).transpose()?;
        Ok(RedisCheck {
            spec,
            resolver: Resolver::default(),
            tls,
        })
    }

    /// PINGs once, within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.exchange()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failure(
                Reason::Timeout,
                format!(
                    "redis-cli ping: no reply from {} within {}",
                    self.spec.host.authority(self.spec.port),
                    humantime::format_duration(timeout)
                ),
            ),
        }
    }

    async fn exchange(&self) -> Outcome {
        let auth = match self.auth_command() {
            Ok(auth) => auth,
            Err(e) => return Outcome::unknown(format!("cannot read the Redis credentials: {e}")),
        };
        // The first attempt: cliConnect(CC_QUIET), whose failure main()
        // ignores.
        let mut auth_failed = None;
        let first = match self.connect().await {
            Ok(mut stream) => match &auth {
                None => Some((stream, Reader::new(MAX_REPLY))),
                Some(command) => {
                    let mut reader = Reader::new(MAX_REPLY);
                    match self.command(&mut stream, &mut reader, command).await {
                        Ok(Reply::Error(e)) => {
                            auth_failed = Some(e);
                            Some((stream, reader))
                        }
                        Ok(_) => Some((stream, reader)),
                        // hiredis keeps a protocol error in the context:
                        // no reconnect, and PING fails at once.
                        Err(failed) if failed.reason == Reason::Protocol => {
                            return Outcome::failure(failed.reason, failed.message);
                        }
                        // An I/O error or EOF: issueCommandRepeat connects again.
                        Err(_) => None,
                    }
                }
            },
            Err(_) => None,
        };
        // The second attempt: issueCommandRepeat's cliConnect(CC_FORCE),
        // whose failure exits 1.
        let (mut stream, mut reader) = match first {
            Some(connected) => connected,
            None => {
                let mut stream = match self.connect().await {
                    Ok(stream) => stream,
                    Err(failed) => return Outcome::failure(failed.reason, failed.message),
                };
                let mut reader = Reader::new(MAX_REPLY);
                if let Some(command) = &auth {
                    match self.command(&mut stream, &mut reader, command).await {
                        Ok(Reply::Error(e)) => {
                            return Outcome::failure(auth_reason(&e), format!("AUTH failed: {e}"));
                        }
                        Ok(_) => {}
                        Err(failed) => return Outcome::failure(failed.reason, failed.message),
                    }
                }
                (stream, reader)
            }
        };
        let reply = match self
            .command(&mut stream, &mut reader, b"*1\r\n$4\r\nPING\r\n")
            .await
        {
            Ok(reply) => reply,
            Err(failed) => return Outcome::failure(failed.reason, failed.message),
        };
        self.verdict(reply, auth_failed)
    }

    /// The verdict for PING's `reply`.
    fn verdict(&self, reply: Reply, auth_failed: Option<String>) -> Outcome {
        let note = |text: String| match &auth_failed {
            Some(e) => format!("AUTH failed: {e}; {text}"),
            None => text,
        };
        match (self.spec.expect, reply) {
            (RedisExpect::Reply, Reply::Status(text) | Reply::Error(text) | Reply::Other(text)) => {
                Outcome::success(note(text))
            }
            (RedisExpect::Pong, Reply::Status(text)) if text == "PONG" => Outcome::success(note(text)),
            (RedisExpect::Pong, Reply::Error(text)) => {
                let code = text.split(' ').next().unwrap_or_default();
                if self.spec.accept_errors.iter().any(|a| a == code) {
                    Outcome::success(note(text))
                } else {
                    Outcome::failure(auth_reason(&text), note(text))
                }
            }
            (RedisExpect::Pong, Reply::Status(text) | Reply::Other(text)) => {
                Outcome::failure(Reason::Reply, note(format!("{text} (expected PONG)")))
            }
        }
    }

    /// `AUTH [user] password` as RESP, if a password is set.
    fn auth_command(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(password) = &self.spec.password else {
            return Ok(None);
        };
        let mut args = vec![b"AUTH".to_vec()];
        if let Some(user) = &self.spec.user {
            args.push(user.value()?.into_bytes());
        }
        args.push(password.value()?.into_bytes());
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(&arg);
            out.extend_from_slice(b"\r\n");
        }
        Ok(Some(out))
    }

    /// A connection, TLS included, in redis-cli's words when it fails.
    async fn connect(&self) -> Result<Stream, Failed> {
        let tcp = wire::connect(&self.resolver, &self.spec.host, self.spec.port)
            .await
            .map_err(|f| {
                Failed::new(
                    f.reason,
                    format!(
                        "Could not connect to Redis at {}: {}",
                        self.spec.host.authority(self.spec.port),
                        f.message
                    ),
                )
            })?;
        wire::secure(tcp, self.tls.as_ref(), &self.spec.host)
            .await
            .map_err(|f| {
                Failed::new(
                    f.reason,
                    format!("Could not negotiate a TLS connection: {}", f.message),
                )
            })
    }

    /// Sends `command` and reads its reply.
    async fn command(
        &self,
        stream: &mut Stream,
        reader: &mut Reader,
        command: &[u8],
    ) -> Result<Reply, Failed> {
        wire::send(stream, command)
            .await
            .map_err(|f| Failed::new(f.reason, format!("Error: {}", f.message)))?;
        read_reply(stream, reader).await
    }
}

/// `auth` for the errors that say the credentials were refused.
fn auth_reason(error: &str) -> Reason {
    match error.split(' ').next() {
        Some("NOAUTH" | "WRONGPASS") => Reason::Auth,
        _ if error.starts_with("ERR invalid password") || error.starts_with("ERR AUTH") => Reason::Auth,
        _ => Reason::Reply,
    }
}

/// Reads one reply, as hiredis's reader: RESP2 and RESP3 types.
async fn read_reply(stream: &mut Stream, reader: &mut Reader) -> Result<Reply, Failed> {
    let mut pending = 1usize;
    let mut first = None;
    let mut depth = 0;
    while pending > 0 {
        pending -= 1;
        let line = reader.line(stream).await.map_err(read_failed)?;
        let (kind, rest) = match line.split_first() {
            Some((kind, rest)) => (*kind, String::from_utf8_lossy(rest).into_owned()),
            None => return Err(protocol("\\r")),
        };
        let number = || -> Result<i64, Failed> {
            rest.parse::<i64>()
                .map_err(|_| Failed::new(Reason::Protocol, "Error: Protocol error, bad integer value"))
        };
        let reply = match kind {
            b'+' => Reply::Status(rest.clone()),
            b'-' => Reply::Error(rest.clone()),
            b':' | b',' | b'(' | b'#' | b'_' => Reply::Other(rest.clone()),
            b'$' | b'=' | b'!' => {
                let len = number()?;
                if len < 0 {
                    Reply::Other("(nil)".into())
                } else {
                    let body = reader
                        .exact(stream, len as usize + 2)
                        .await
                        .map_err(read_failed)?;
                    let text = String::from_utf8_lossy(&body[..len as usize]).into_owned();
                    if kind == b'!' {
                        Reply::Error(text)
                    } else {
                        Reply::Other(text)
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = number()?;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Failed::new(
                        Reason::Protocol,
                        "Error: Protocol error, too deeply nested reply",
                    ));
                }
                if n > 0 {
                    let n = n as usize * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
                    pending = pending.saturating_add(n);
                    if pending > MAX_REPLY {
                        return Err(Failed::new(
                            Reason::Protocol,
                            "Error: Protocol error, reply too long",
                        ));
                    }
                }
                Reply::Other(format!("(an aggregate of {n})"))
            }
            other => return Err(protocol(&String::from_utf8_lossy(&[other]))),
        };
        first.get_or_insert(reply);
    }
    Ok(first.expect("one reply read"))
}

/// hiredis's words for a type byte it does not know.
fn protocol(byte: &str) -> Failed {
    Failed::new(
        Reason::Protocol,
        format!("Error: Protocol error, got {byte:?} as reply type byte"),
    )
}

fn read_failed(e: ReadError) -> Failed {
    match e {
        ReadError::Closed => Failed::new(Reason::Other, "Error: Server closed the connection"),
        ReadError::Io(e) => {
            let f = wire::io_failed(e);
            Failed::new(f.reason, format!("Error: {}", f.message))
        }
        ReadError::TooLong => Failed::new(Reason::Protocol, "Error: Protocol error, reply too long"),
    }
}
