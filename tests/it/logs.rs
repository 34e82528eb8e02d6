//! Logs of the real binary: `--log-level` and `HEALTHPROXY_LOG_LEVEL`
//! validated (an unknown value exits 2 naming the accepted forms), each
//! check run at debug, and JSON lines whose fields keep their types.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Proxy, binary, eventually, run_binary};

/// Runs the binary at `level` on a config whose exec check fails on every
/// run (a transition at its first) and whose drain waits on the port of a
/// listener held here, until the check has run twice; then stops it with
/// SIGTERM and returns every JSON line it wrote. With `drain`, the app
/// still listens at SIGTERM: the sidecar drains, and exits at `drain.max`
/// (1s); otherwise at once.
async fn lines_at(level: &str, drain: bool) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[drain]
min = "0s"
max = "1s"
ports = [{port}]

[[check]]
name = "flaky"
probes = ["readiness"]
period = "100ms"
failure_threshold = 1
exec = {{ command = ["/bin/sh", "-c", "echo run >> '{runs}'; exit 1"] }}
"#,
            port = app.local_addr().unwrap().port(),
            runs = runs.display(),
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(binary())
        .args([
            "run",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            level,
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Runs are one at a time: a second run has begun only after the first
    // was recorded and logged.
    eventually(Duration::from_secs(20), "two runs of the check", || async {
        std::fs::read_to_string(&runs).is_ok_and(|r| r.lines().count() >= 2)
    })
    .await;
    let app = drain.then_some(app);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    drop(app);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn has(lines: &[Value], message: &str) -> bool {
    lines
        .iter()
        .any(|l| l["message"].as_str().is_some_and(|m| m.contains(message)))
}

fn line<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains(message)))
        .unwrap_or_else(|| panic!("no line with {message:?} in {lines:#?}"))
}

/// A check run's line: it carries the run's verdict.
fn runs(lines: &[Value]) -> usize {
    lines.iter().filter(|l| l.get("verdict").is_some()).count()
}

#[tokio::test]
async fn every_accepted_log_level_lets_through_what_it_names() {
    // (level, run lines at debug, "healthproxy serving" at info, the
    // failure transition at warn)
    let cases = [
        ("trace", true, true, true),
        ("debug", true, true, true),
        ("DEBUG", true, true, true),
        ("info", false, true, true),
        ("warn", false, false, true),
        ("warning", false, false, true),
        ("Warning", false, false, true),
        ("error", false, false, false),
        ("off", false, false, false),
        ("warn,healthproxy::engine=debug", true, false, true),
        ("info, healthproxy::engine=warning", false, true, true),
    ];
    for (level, debug, info, warn) in cases {
        let lines = lines_at(level, false).await;
        assert_eq!(
            runs(&lines) > 0,
            debug,
            "{level}: check runs at debug: {lines:#?}"
        );
        assert_eq!(
            has(&lines, "healthproxy serving"),
            info,
            "{level}: info: {lines:#?}"
        );
        assert_eq!(has(&lines, "probe failed"), warn, "{level}: warn: {lines:#?}");
    }
}

#[tokio::test]
async fn an_unknown_log_level_exits_2_naming_the_accepted_forms() {
    for bad in [
        "verbose",
        "warnings",
        "information",
        "3",
        "info,",
        "healthproxy=loud",
        "web[span]=debug",
    ] {
        let (code, stderr) = run_binary(
            &["--log-level", bad, "--config", "/nonexistent.toml"],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(code, 2, "--log-level {bad}: {stderr}");
        assert!(
            stderr.contains("warn or warning") && stderr.contains("target=level"),
            "--log-level {bad}: {stderr}"
        );
        let out = tokio::process::Command::new(binary())
            .args(["--config", "/nonexistent.toml"])
            .env("HEALTHPROXY_LOG_LEVEL", bad)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "HEALTHPROXY_LOG_LEVEL={bad}: {stderr}"
        );
        assert!(
            stderr.contains("warn or warning"),
            "HEALTHPROXY_LOG_LEVEL={bad}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_bad_log_level_in_the_config_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hp.toml");
    std::fs::write(
        &path,
        r#"listen = "127.0.0.1:0"
log_level = "loud"
"#,
    )
    .unwrap();
    let (code, stderr) = run_binary(&["check-config", path.to_str().unwrap()], Duration::from_secs(10)).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains(":2:13: log_level: \"loud\" is not a log level"),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_lines_carry_typed_fields_and_a_level_every_log_store_reads() {
    let lines = lines_at("debug", true).await;
    for l in &lines {
        let level = l["level"].as_str().unwrap();
        assert!(["DEBUG", "INFO", "WARN", "ERROR"].contains(&level), "{l}");
        assert_eq!(l["log.level"], l["level"], "Elastic's key: {l}");
        let severity = l["severity"].as_str().unwrap();
        let expected = match level {
            "WARN" => "WARNING",
            other => other,
        };
        assert_eq!(severity, expected, "Cloud Logging's key: {l}");
        assert!(l["timestamp"].is_string() && l["message"].is_string(), "{l}");
    }
    let run = lines.iter().find(|l| l.get("verdict").is_some()).unwrap();
    assert_eq!(run["level"], "DEBUG");
    assert_eq!(run["check"], "flaky");
    assert_eq!(run["verdict"], "failure");
    assert!(
        run["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "a number: {run}"
    );
    assert!(
        run["message"].as_str().unwrap().contains("exit"),
        "the run's message: {run}"
    );

    let listening = line(&lines, "the app is listening");
    let ports = listening["ports"].as_array().expect("ports is an array");
    assert!(ports.len() == 1 && ports[0].is_u64(), "{listening}");

    let drained = line(&lines, "drain complete");
    for key in ["total_ms", "min_wait_ms", "connection_wait_ms"] {
        assert!(drained[key].is_number(), "{key}: {drained}");
    }
    let stopped = lines.iter().find(|l| l["message"] == "stopped").unwrap();
    assert_eq!(stopped["exit_code"], 0);
    assert!(line(&lines, "healthproxy serving")["checks"].is_u64());
}

#[tokio::test]
async fn version_names_the_revision_and_the_rustc_version() {
    let out = tokio::process::Command::new(binary())
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let rustc = rustc.split_whitespace().nth(1).unwrap();
    // In a git checkout the revision is the checked-out commit; elsewhere
    // (a tarball, an image build without .git) it is `unknown`.
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_string(),
            |o| String::from_utf8(o.stdout).unwrap().trim().to_string(),
        );
    assert_eq!(
        text,
        format!(
            "healthproxy {} (revision {git}, rustc {rustc})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The targets of the lines a sidecar with one gRPC check writes at
/// `level` (from the config's `log_level`) over four runs of the check.
async fn grpc_targets_at(level: &str) -> Vec<String> {
    let server = crate::grpc_check::health_server().await;
    let proxy = Proxy::start(&format!(
        r#"log_level = "{level}"

[[check]]
name = "api"
probes = ["readiness"]
period = "100ms"
grpc = {{ port = {} }}
"#,
        server.addr.port()
    ));
    eventually(Duration::from_secs(20), "four runs of the check", || async {
        proxy.log_lines("\"verdict\"").len() >= 4
    })
    .await;
    let lines = proxy.logs.lock().unwrap().clone();
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["target"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn debug_is_the_sidecars_own_debug_and_libraries_speak_only_when_named() {
    let targets = grpc_targets_at("debug").await;
    assert!(
        targets.iter().all(|t| t.starts_with("healthproxy")),
        "only the sidecar's lines at debug: {targets:?}"
    );
    let named = grpc_targets_at("debug,h2=debug").await;
    assert!(
        named.iter().any(|t| t.starts_with("h2")),
        "a directive naming h2 reaches it: {named:?}"
    );
}
