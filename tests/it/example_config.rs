//! `config.example.toml` at the repository root: it is valid, it is the
//! configuration of the demo, it mentions every key, and the defaults its
//! comments state are the ones the code applies.
//!
//! The file marks a default with a line of the form `KEY = VALUE  # default
//! ...`, commented out or not (its header says so).

use std::net::SocketAddr;
use std::time::Duration;

use healthproxy::config::{
    self, CheckKind, Config, DEFAULT_DRAIN_MAX, DEFAULT_DRAIN_MIN, DEFAULT_FAILURE_THRESHOLD, DEFAULT_HOST,
    DEFAULT_INITIAL_DELAY, DEFAULT_KUBELET_VERSION, DEFAULT_LISTEN, DEFAULT_PERIOD,
    DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT, HttpMethod, Scheme,
};

const EXAMPLE: &str = include_str!("../../config.example.toml");

/// Every key the config accepts; handler keys in their dotted form.
const ALL_KEYS: &[&str] = &[
    "listen",
    "kubelet_version",
    "grpc_listen",
    "log_level",
    "allow_empty",
    "watch",
    "interval",
    "header_read_timeout",
    "request_timeout",
    "idle_timeout",
    "max_connections",
    "max_header_bytes",
    "min",
    "quiet",
    "max",
    "ports",
    "token_file",
    "exit_when_app_exits",
    "name",
    "probes",
    "critical",
    "container",
    "initial_delay",
    "period",
    "timeout",
    "success_threshold",
    "failure_threshold",
    "http.scheme",
    "http.host",
    "http.port",
    "http.path",
    "http.method",
    "http.headers",
    "http.keep_alive",
    "http.body_contains",
    "http.expect_status",
    "http.follow_redirects",
    "http.body_matches",
    "http.body_not_matches",
    "http.header_matches",
    "http.header_files",
    "http.header_env",
    "http.ca_file",
    "http.cert_file",
    "http.key_file",
    "http.server_name",
    "http.insecure_skip_verify",
    "tcp.host",
    "tcp.port",
    "exec.command",
    "exec.env",
    "exec.workdir",
    "grpc.host",
    "grpc.port",
    "grpc.service",
    "grpc.user_agent",
    "grpc.tls",
    "grpc.ca_file",
    "grpc.cert_file",
    "grpc.key_file",
    "grpc.server_name",
    "grpc.insecure_skip_verify",
    "file.path",
    "file.max_age",
    "postgres.host",
    "postgres.port",
    "postgres.user",
    "postgres.dbname",
    "postgres.sslmode",
    "postgres.connect_timeout",
    "postgres.query",
    "postgres.password_file",
    "postgres.password_env",
    "postgres.passfile",
];

/// The keys whose default the file must state.
const KEYS_WITH_DEFAULTS: &[&str] = &[
    "listen",
    "kubelet_version",
    "log_level",
    "watch",
    "interval",
    "header_read_timeout",
    "request_timeout",
    "idle_timeout",
    "max_connections",
    "max_header_bytes",
    "min",
    "quiet",
    "max",
    "exit_when_app_exits",
    "critical",
    "initial_delay",
    "period",
    "timeout",
    "success_threshold",
    "failure_threshold",
    "http.scheme",
    "http.host",
    "http.path",
    "http.method",
    "http.keep_alive",
    "http.follow_redirects",
    "tcp.host",
    "grpc.host",
    "grpc.service",
    "grpc.user_agent",
    "grpc.tls",
    "postgres.host",
    "postgres.port",
    "postgres.user",
    "postgres.sslmode",
];

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Config {
    Config::from_toml_str(text, "config.example.toml", &no_env).unwrap_or_else(|e| panic!("{e}"))
}

/// `(line, key, value)` of every line that states a default.
fn stated_defaults(text: &str) -> Vec<(usize, String, toml::Value)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let line = line.strip_prefix('#').unwrap_or(line).trim_start();
        let Some((key, rest)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
        {
            continue;
        }
        let Some((value, comment)) = rest.split_once('#') else {
            continue;
        };
        let Some(after) = comment.trim_start().strip_prefix("default") else {
            continue;
        };
        if after.starts_with(|c: char| c.is_alphanumeric()) {
            continue;
        }
        let parsed: toml::Table = toml::from_str(&format!("v = {}", value.trim()))
            .unwrap_or_else(|e| panic!("line {}: {key}: value is not TOML: {e}", i + 1));
        out.push((i + 1, key.to_string(), parsed["v"].clone()));
    }
    out
}

fn duration(line: usize, key: &str, value: &toml::Value) -> Duration {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("line {line}: {key}: a duration is a string"));
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("line {line}: {key}: {text:?}: {e}"))
}

#[test]
fn example_config_is_valid_and_is_the_demo_config() {
    let config = parse(EXAMPLE);
    assert_eq!(config.listen, "[::]:9775".parse::<SocketAddr>().unwrap());
    assert_eq!(config.drain.ports, [8080]);
    let names: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "port", "grpc", "heartbeat", "migrations", "docs"]);
    let check = |name: &str| config.checks.iter().find(|c| c.name == name).unwrap();

    let web = check("web");
    assert!(web.probes.liveness && web.probes.readiness && !web.probes.startup);
    assert_eq!(web.timing.period, Duration::from_secs(2));
    match &web.kind {
        CheckKind::Http(h) => {
            assert_eq!(h.url(), "http://127.0.0.1:8080/healthz");
            assert_eq!(h.method, HttpMethod::Get);
        }
        other => panic!("web is {}", other.as_str()),
    }
    assert!(matches!(&check("port").kind, CheckKind::Tcp(t) if t.port == 8080));
    assert!(matches!(&check("grpc").kind, CheckKind::Grpc(g) if g.port == 8081 && g.service == "demo"));
    match &check("heartbeat").kind {
        CheckKind::File(f) => {
            assert_eq!(f.path.to_str(), Some("/tmp/healthproxy-demo/heartbeat"));
            assert_eq!(f.max_age, Duration::from_secs(5));
        }
        other => panic!("heartbeat is {}", other.as_str()),
    }
    assert!(check("heartbeat").probes.liveness);
    assert!(check("migrations").probes.startup);
    assert!(matches!(&check("migrations").kind, CheckKind::Exec(e) if e.command[0] == "/bin/sh"));
    assert!(!check("docs").critical);
    assert!(
        config
            .checks
            .iter()
            .filter(|c| c.name != "docs")
            .all(|c| c.critical)
    );
    assert!(config.checks.iter().all(|c| c.container.is_none()));
}

#[test]
fn example_config_has_no_lints_but_the_default_guard() {
    // The example shows the defaults, and by default no token is set: the
    // lint that says what that means for the preStop hook is the only one.
    let lints = config::lints(&parse(EXAMPLE));
    let subjects: Vec<&str> = lints.iter().map(|l| l.subject.as_str()).collect();
    assert_eq!(subjects, ["drain.token_file"], "{lints:?}");
}

#[test]
fn example_config_mentions_every_key() {
    let keys: Vec<String> = EXAMPLE
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix('#').unwrap_or(line);
            Some(line.split_once('=')?.0.trim().to_string())
        })
        .collect();
    let missing: Vec<&&str> = ALL_KEYS
        .iter()
        .filter(|k| !keys.iter().any(|found| found == *k))
        .collect();
    assert!(
        missing.is_empty(),
        "config.example.toml does not mention {missing:?}"
    );
}

#[test]
fn example_config_defaults_are_the_code_defaults() {
    // What the code does when the keys are left out.
    let bare = parse(
        r#"
        [[check]]
        name = "h"
        probes = ["readiness"]
        http.port = 1

        [[check]]
        name = "t"
        probes = ["readiness"]
        tcp.port = 1

        [[check]]
        name = "g"
        probes = ["readiness"]
        grpc.port = 1
        "#,
    );
    let (CheckKind::Http(http), CheckKind::Tcp(tcp), CheckKind::Grpc(grpc)) =
        (&bare.checks[0].kind, &bare.checks[1].kind, &bare.checks[2].kind)
    else {
        panic!("unexpected kinds");
    };
    let timing = bare.checks[0].timing;

    let stated = stated_defaults(EXAMPLE);
    for key in KEYS_WITH_DEFAULTS {
        assert!(
            stated.iter().any(|(_, k, _)| k == key),
            "config.example.toml states no default for {key} (write `# {key} = VALUE  # default`)"
        );
    }
    for (line, key, value) in &stated {
        let at = format!("config.example.toml:{line}: {key}");
        let str_value = || {
            value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: expected a string"))
        };
        let int_value = || {
            value
                .as_integer()
                .unwrap_or_else(|| panic!("{at}: expected an integer"))
        };
        let bool_value = || {
            value
                .as_bool()
                .unwrap_or_else(|| panic!("{at}: expected a boolean"))
        };
        match key.as_str() {
            "listen" => {
                assert_eq!(str_value(), DEFAULT_LISTEN, "{at}");
                assert_eq!(str_value().parse::<SocketAddr>().unwrap(), bare.listen, "{at}");
            }
            "watch" => assert_eq!(bool_value(), bare.reload.watch, "{at}"),
            "interval" => {
                assert_eq!(
                    duration(*line, key, value),
                    config::DEFAULT_RELOAD_INTERVAL,
                    "{at}"
                );
                assert_eq!(bare.reload.interval, config::DEFAULT_RELOAD_INTERVAL, "{at}");
            }
            "log_level" => {
                assert_eq!(bare.log_level, None, "{at}");
                assert_eq!(
                    str_value(),
                    healthproxy::log::LogLevel::default().to_string(),
                    "{at}"
                );
            }
            "min" => {
                assert_eq!(duration(*line, key, value), DEFAULT_DRAIN_MIN, "{at}");
                assert_eq!(bare.drain.min, DEFAULT_DRAIN_MIN, "{at}");
            }
            "quiet" => {
                assert_eq!(duration(*line, key, value), config::DEFAULT_DRAIN_QUIET, "{at}");
                assert_eq!(bare.drain.quiet, config::DEFAULT_DRAIN_QUIET, "{at}");
            }
            "max" => {
                assert_eq!(duration(*line, key, value), DEFAULT_DRAIN_MAX, "{at}");
                assert_eq!(bare.drain.max, DEFAULT_DRAIN_MAX, "{at}");
            }
            "exit_when_app_exits" => assert_eq!(bool_value(), bare.drain.exit_when_app_exits, "{at}"),
            "mesh" => {
                assert_eq!(str_value(), "none", "{at}");
                assert_eq!(bare.drain.mesh, config::Mesh::None, "{at}");
            }
            "mesh_proxy_uid" => {
                assert_eq!(int_value(), i64::from(config::ISTIO_PROXY_UID), "{at}");
                assert_eq!(config::Mesh::None.proxy_uid(), None, "{at}: only with a mesh");
            }
            "header_read_timeout" => {
                assert_eq!(
                    duration(*line, key, value),
                    config::DEFAULT_HEADER_READ_TIMEOUT,
                    "{at}"
                );
                assert_eq!(
                    bare.server.header_read_timeout,
                    config::DEFAULT_HEADER_READ_TIMEOUT,
                    "{at}"
                );
            }
            "request_timeout" => {
                assert_eq!(
                    duration(*line, key, value),
                    config::DEFAULT_REQUEST_TIMEOUT,
                    "{at}"
                );
                assert_eq!(
                    bare.server.request_timeout,
                    config::DEFAULT_REQUEST_TIMEOUT,
                    "{at}"
                );
            }
            "idle_timeout" => {
                assert_eq!(duration(*line, key, value), config::DEFAULT_IDLE_TIMEOUT, "{at}");
                assert_eq!(bare.server.idle_timeout, config::DEFAULT_IDLE_TIMEOUT, "{at}");
            }
            "max_connections" => {
                assert_eq!(int_value(), config::DEFAULT_MAX_CONNECTIONS as i64, "{at}");
                assert_eq!(
                    bare.server.max_connections,
                    config::DEFAULT_MAX_CONNECTIONS,
                    "{at}"
                );
            }
            "max_header_bytes" => {
                assert_eq!(int_value(), config::DEFAULT_MAX_HEADER_BYTES as i64, "{at}");
                assert_eq!(
                    bare.server.max_header_bytes,
                    config::DEFAULT_MAX_HEADER_BYTES,
                    "{at}"
                );
            }
            "critical" => assert_eq!(bool_value(), bare.checks[0].critical, "{at}"),
            "initial_delay" => {
                assert_eq!(duration(*line, key, value), DEFAULT_INITIAL_DELAY, "{at}");
                assert_eq!(timing.initial_delay, DEFAULT_INITIAL_DELAY, "{at}");
            }
            "period" => {
                assert_eq!(duration(*line, key, value), DEFAULT_PERIOD, "{at}");
                assert_eq!(timing.period, DEFAULT_PERIOD, "{at}");
            }
            "timeout" => {
                assert_eq!(duration(*line, key, value), DEFAULT_TIMEOUT, "{at}");
                assert_eq!(timing.timeout, DEFAULT_TIMEOUT, "{at}");
            }
            "success_threshold" => {
                assert_eq!(int_value(), i64::from(DEFAULT_SUCCESS_THRESHOLD), "{at}");
                assert_eq!(timing.success_threshold, DEFAULT_SUCCESS_THRESHOLD, "{at}");
            }
            "failure_threshold" => {
                assert_eq!(int_value(), i64::from(DEFAULT_FAILURE_THRESHOLD), "{at}");
                assert_eq!(timing.failure_threshold, DEFAULT_FAILURE_THRESHOLD, "{at}");
            }
            "http.scheme" => {
                assert_eq!(str_value(), "http", "{at}");
                assert_eq!(http.scheme, Scheme::Http, "{at}");
            }
            "http.method" => {
                assert_eq!(str_value(), "GET", "{at}");
                assert_eq!(http.method, HttpMethod::Get, "{at}");
            }
            "http.path" => assert_eq!(str_value(), http.path, "{at}"),
            "http.keep_alive" => assert_eq!(bool_value(), http.keep_alive, "{at}"),
            "http.follow_redirects" => assert_eq!(bool_value(), http.follow_redirects, "{at}"),
            "http.host" | "tcp.host" | "grpc.host" => {
                assert_eq!(str_value(), DEFAULT_HOST, "{at}");
                assert_eq!(http.host.name, DEFAULT_HOST, "{at}");
                assert_eq!(tcp.host.name, DEFAULT_HOST, "{at}");
                assert_eq!(grpc.host.name, DEFAULT_HOST, "{at}");
            }
            "grpc.service" => assert_eq!(str_value(), grpc.service, "{at}"),
            "kubelet_version" => {
                assert_eq!(str_value(), DEFAULT_KUBELET_VERSION, "{at}");
                let agent = format!("kube-probe/{}", str_value());
                assert_eq!(http.user_agent, agent, "{at}");
                assert_eq!(grpc.user_agent, agent, "{at}");
            }
            "grpc.user_agent" => assert_eq!(str_value(), grpc.user_agent, "{at}"),
            "grpc.tls" => assert_eq!(bool_value(), grpc.tls.is_some(), "{at}"),
            native if crate::oracle::is_native_key(native) => {
                crate::oracle::assert_stated_default(native, value, &at)
            }
            other => panic!("{at}: states a default for {other}, which this test does not check"),
        }
    }
}
