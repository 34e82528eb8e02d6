//! The real tools as oracles for the protocol checks (tests/it/db_*): a
//! command run to completion within a bound (a command still running then
//! is killed, as the kubelet kills an exec probe, and counts as a failure),
//! and servers started from a temporary directory on a port of their own.

use std::process::Stdio;
use std::time::Duration;

use healthproxy::check::Outcome;

/// How a real command ended: its exit code, or `None` when it was still
/// running at the bound; and what it wrote.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub output: String,
}

impl Ran {
    /// Whether an exec probe running it would pass.
    pub fn passed(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `sh -c script` with `env`, killed after `within`.
pub async fn sh(script: &str, env: &[(&str, &str)], within: Duration) -> Ran {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so that the pipeline's commands die with it.
        .process_group(0);
    let child = command.spawn().expect("sh runs");
    let pid = child.id().expect("running") as i32;
    match tokio::time::timeout(within, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("sh is waited for");
            Ran {
                code: out.status.code(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
        Err(_) => {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            Ran {
                code: None,
                output: "(killed at the bound)".into(),
            }
        }
    }
}

/// Asserts that the native outcome gives the real command's verdict.
#[track_caller]
pub fn agree(state: &str, form: &str, real: &Ran, native: &Outcome) {
    assert_eq!(
        native.verdict.is_success(),
        real.passed(),
        "{state}: `{form}` exited {:?} ({}) but the native check said {} ({})",
        real.code,
        real.output.trim(),
        native.verdict,
        native.message
    );
}

/// Kept at this path for the protocol checks' tests.
pub use crate::support::free_port;

/// `healthproxy wait --KIND TARGET --timeout TIMEOUT --attempt-timeout 1s`:
/// its exit code and stderr.
pub async fn wait_for(kind: &str, target: &str, timeout: &str) -> (i32, String) {
    let flag = format!("--{kind}");
    let args = [
        "wait",
        &flag,
        target,
        "--timeout",
        timeout,
        "--attempt-timeout",
        "1s",
    ];
    crate::support::run_binary(&args, Duration::from_secs(20)).await
}

/// The tables of the protocol checks, each with the keys it needs besides
/// the one whose default is checked.
const NATIVE_TABLES: &[(&str, &str)] = &[
    ("redis", ""),
    ("postgres", ""),
    ("mysql", r#"command = "query""#),
    ("dialogue", r#"port = 1, steps = [{ send = "x" }]"#),
    ("process", r#"pattern = "x""#),
];

/// Whether `key` (`redis.port`) belongs to a protocol check.
pub fn is_native_key(key: &str) -> bool {
    NATIVE_TABLES
        .iter()
        .any(|(table, _)| key.split_once('.').is_some_and(|(t, _)| t == *table))
}

/// Asserts that writing `key = value`, as config.example.toml states its
/// default, yields the check that leaving it out yields.
pub fn assert_stated_default(key: &str, value: &toml::Value, at: &str) {
    let (table, field) = key.split_once('.').expect("table.field");
    let needs: Vec<&str> = NATIVE_TABLES
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, needs)| *needs)
        .unwrap_or_default()
        .split(", ")
        .filter(|part| !part.is_empty() && part.split(" = ").next() != Some(field))
        .collect();
    let needs = needs.join(", ");
    let sep = if needs.is_empty() { "" } else { ", " };
    let check = |inner: String| {
        let text = format!(
            r#"[[check]]
name = "n"
probes = ["readiness"]
{table} = {{ {inner} }}
"#
        );
        healthproxy::config::Config::from_toml_str(&text, "t.toml", &|_: &str| None)
            .unwrap_or_else(|e| panic!("{at}: {e}"))
            .checks
            .remove(0)
            .kind
    };
    assert_eq!(
        check(format!("{needs}{sep}{field} = {value}")),
        check(needs.to_string()),
        "{at}: the stated default is not the default"
    );
}
