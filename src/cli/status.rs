//! `healthproxy status`: "why is this pod unready?" Asks the running
//! sidecar for `/status` over its port on loopback (`kubectl exec POD -c
//! healthproxy -- healthproxy status`) and prints each probe's verdict and
//! each check's: its state, last message, consecutive counts, last success
//! and recent transitions; as text for a terminal, or the sidecar's JSON.
//! Loopback clients see the checks' messages, as with `/readyz?verbose`;
//! `--address` to another host sees names and verdicts only, unless the
//! lifecycle token is given.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::{Config, DEFAULT_LISTEN, ProcessEnv};

/// The most of an answer read: a status of thousands of checks fits.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Options of `healthproxy status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The sidecar's address; by default its `listen` port on loopback,
    /// read from the config file it runs with.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The config file whose `listen` names the port.
    #[arg(
        long,
        env = "HEALTHPROXY_CONFIG",
        default_value = "/etc/healthproxy/config.toml"
    )]
    config: PathBuf,
    /// Overrides the config's `listen`, as for `run`.
    #[arg(long, env = "HEALTHPROXY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Print the sidecar's JSON (the same as `--output json`).
    #[arg(long, conflicts_with = "output")]
    json: bool,
    /// How to print: `text` for a terminal, `json` for tools.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// A file holding the lifecycle token, sent so that a client off
    /// loopback sees the messages too.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Bound on connecting and on the whole answer.
    #[arg(long, default_value = "5s", value_parser = super::wait::duration)]
    timeout: Duration,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Lines for a terminal.
    Text,
    /// The sidecar's JSON document.
    Json,
}

pub(super) fn status(args: StatusArgs) -> ExitCode {
    let address = args.address.clone().unwrap_or_else(|| local_address(&args));
    let token = match &args.token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(token) => Some(token.trim().to_string()),
            Err(e) => {
                eprintln!("--token-file {}: {e}", path.display());
                return ExitCode::from(super::EXIT_CONFIG);
            }
        },
        None => None,
    };
    let body = match fetch(&address, token.as_deref(), args.timeout) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("healthproxy status: cannot ask the sidecar at {address}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let doc: Value = match serde_json::from_str(&body) {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("healthproxy status: the sidecar at {address} answered no status ({e}): {body}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json || args.output == Output::Json {
        format!("{doc:#}\n")
    } else {
        render(&doc, &address, SystemTime::now())
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// The sidecar's port on loopback: `--listen`, else the config's
/// `listen`, else the default port.
fn local_address(args: &StatusArgs) -> String {
    let listen = args.listen.unwrap_or_else(|| {
        Config::load(&args.config, &ProcessEnv).map_or_else(
            |_| DEFAULT_LISTEN.parse().expect("the default address parses"),
            |c| c.listen,
        )
    });
    let ip = if listen.ip().is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// GET /status from `address`: the body of a 200, or why there is none.
fn fetch(address: &str, token: Option<&str>, timeout: Duration) -> Result<String, String> {
    let addr = address
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET /status HTTP/1.1\r\nHost: {address}\r\nUser-Agent: healthproxy-status\r\n{auth}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("an incomplete answer")?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        let line = head.lines().next().unwrap_or_default();
        return Err(format!("{line}: {}", body.trim()));
    }
    Ok(body.to_string())
}

/// The status as lines for a terminal.
fn render(doc: &Value, address: &str, now: SystemTime) -> String {
    let mut out = String::new();
    let state = if doc["draining"].as_bool() == Some(true) {
        "draining"
    } else if doc["started"].as_bool() == Some(true) {
        "started"
    } else {
        "starting: startup checks have not all succeeded yet"
    };
    out += &format!("healthproxy at {address}: {state}\n");
    for kind in ["startup", "liveness", "readiness"] {
        let probe = &doc["probes"][kind];
        let verdict = if probe["ok"].as_bool() == Some(true) {
            "ok".to_string()
        } else {
            let gates: Vec<String> = probe["gates"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| format!("{}: {}", text(&g["name"]), text(&g["reason"])))
                .collect();
            if gates.is_empty() {
                "FAILING".to_string()
            } else {
                format!("FAILING ({})", gates.join("; "))
            }
        };
        out += &format!("  {kind:<10} {verdict}\n");
    }
    if doc["messages_withheld"].as_bool() == Some(true) {
        out += "  (messages withheld: ask from the pod itself, or give --token-file)\n";
    }
    for c in doc["checks"].as_array().into_iter().flatten() {
        let passes: Vec<String> = c["passes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(kind, ok)| {
                format!(
                    "{kind} {}",
                    if ok.as_bool() == Some(true) {
                        "ok"
                    } else {
                        "FAILING"
                    }
                )
            })
            .collect();
        let critical = if c["critical"].as_bool() == Some(false) {
            ", non-critical"
        } else {
            ""
        };
        let container = c["container"]
            .as_str()
            .map_or_else(String::new, |n| format!(", container {n}"));
        out += &format!(
            "\n{} ({}{critical}{container}): {}\n",
            text(&c["name"]),
            text(&c["kind"]),
            passes.join(", ")
        );
        out += &format!("  state        {}\n", text(&c["state"]));
        match c["last_result"].as_str() {
            None => out += "  last run     pending: not run yet\n",
            Some(result) => {
                let took = c["duration_seconds"]
                    .as_f64()
                    .map_or_else(String::new, |s| format!(" in {}", millis(s)));
                out += &format!("  last run     {result}{took}, {}\n", when(&c["last_run"], now));
                if let Some(message) = c["message"].as_str() {
                    out += &format!("  message      {message}\n");
                }
            }
        }
        out += &format!(
            "  consecutive  {} successes, {} failures (thresholds: {} successes, {} failures)\n",
            c["consecutive_successes"],
            c["consecutive_failures"],
            c["success_threshold"],
            c["failure_threshold"]
        );
        out += &format!("  last success {}\n", when(&c["last_success"], now));
        let transitions = c["transitions"].as_array().map(Vec::as_slice).unwrap_or_default();
        if transitions.is_empty() {
            out += "  transitions  none yet\n";
        }
        for (i, t) in transitions.iter().enumerate().rev() {
            let label = if i + 1 == transitions.len() {
                "transitions "
            } else {
                "            "
            };
            let message = t["message"]
                .as_str()
                .map_or_else(String::new, |m| format!(": {m}"));
            out += &format!("  {label} {} {}{message}\n", text(&t["to"]), when(&t["at"], now));
        }
    }
    out
}

/// A JSON string as text, `-` for anything else.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Seconds as milliseconds, to the tenth.
fn millis(seconds: f64) -> String {
    format!("{:.1}ms", seconds * 1000.0)
}

/// An RFC 3339 time with how long ago it was: `never` for none.
fn when(v: &Value, now: SystemTime) -> String {
    let Some(at) = v.as_str() else {
        return "never".into();
    };
    match humantime::parse_rfc3339(at) {
        Ok(t) => {
            let ago = now.duration_since(t).unwrap_or_default();
            let ago = Duration::from_secs(ago.as_secs());
            format!("{at} ({} ago)", humantime::format_duration(ago))
        }
        Err(_) => at.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_has_not_run_reads_pending_and_times_say_how_long_ago() {
        let doc = serde_json::json!({
            "started": false, "draining": false, "messages_withheld": false,
            "probes": {
                "startup": {"ok": true, "gates": []},
                "liveness": {"ok": true, "gates": []},
                "readiness": {"ok": false, "gates": [{"name": "startup", "reason": "startup checks have not all succeeded yet"}]},
            },
            "checks": [{
                "name": "web", "kind": "http", "critical": true, "container": null,
                "passes": {"readiness": false}, "state": "initial", "last_result": null,
                "message": null, "consecutive_successes": 0, "consecutive_failures": 0,
                "success_threshold": 1, "failure_threshold": 3, "last_success": null,
                "transitions": [],
            }],
        });
        let text = render(&doc, "127.0.0.1:9775", SystemTime::now());
        assert!(
            text.contains("readiness  FAILING (startup: startup checks"),
            "{text}"
        );
        assert!(text.contains("last run     pending: not run yet"), "{text}");
        assert!(text.contains("last success never"), "{text}");
        let at = humantime::parse_rfc3339("2026-01-01T00:00:00.000Z").unwrap();
        assert_eq!(
            when(
                &"2026-01-01T00:00:00.000Z".into(),
                at + Duration::from_millis(90_500)
            ),
            "2026-01-01T00:00:00.000Z (1m 30s ago)"
        );
    }
}
