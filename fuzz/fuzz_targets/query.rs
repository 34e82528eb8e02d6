//! Endpoint query handling on arbitrary text: `Options::parse` then
//! `Probe::evaluate` for every probe kind and scope over a few fixed
//! snapshots, rendered as text, JSON and health+json. Must never panic,
//! and the three renderings must agree on the verdict.
//!
//! Input: the query string, then optionally `\n` and a name used as the
//! container and check of the `Container` and `Check` scopes.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use healthproxy::check::{Outcome, Reason};
use healthproxy::config::{Config, ProbeKind};
use healthproxy::server::{Options, Probe, Scope};
use healthproxy::state::{Place, Snapshot, State};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[check]]
name = "web"
probes = ["liveness", "readiness"]
container = "app"
http = { port = 8080, path = "/healthz" }

[[check]]
name = "db"
probes = ["readiness"]
critical = false
container = "app"
success_threshold = 2
failure_threshold = 1
tcp = { port = 5432 }

[[check]]
name = "boot"
probes = ["startup"]
exec = { command = ["true"] }

[[check]]
name = "heartbeat"
probes = ["liveness"]
container = "worker"
file = { path = "/tmp/heartbeat", max_age = "30s" }

[[check]]
name = "grpc-api"
probes = ["startup", "liveness", "readiness"]
failure_threshold = 1
grpc = { port = 9090 }
"#;

/// Fresh (nothing run, startup pending), busy (every state and odd
/// messages), and busy while draining.
static STATES: LazyLock<[State; 3]> = LazyLock::new(|| {
    let config = Config::from_toml_str(CONFIG, "fuzz", &|_: &str| None).expect("fixed config is valid");
    let fresh = State::new(&config.checks);
    let busy = || {
        let state = State::new(&config.checks);
        let runs = [
            (0, Outcome::success("HTTP probe succeeded")),
            (
                1,
                Outcome::failure(Reason::Refused, "dial tcp 127.0.0.1:5432: connect: connection refused \"quoted\" \u{1F4A5}"),
            ),
            (1, Outcome::success("")),
            (2, Outcome::success("exit 0")),
            (
                3,
                Outcome::unknown("cannot stat /tmp/heartbeat\nsecond line\t\u{0}"),
            ),
            (4, Outcome::warning("redirect to another host")),
            (4, Outcome::failure(Reason::NotServing, "status: NOT_SERVING")),
        ];
        for (index, outcome) in runs {
            state.record(&Place::new(index, index), 0, outcome, Duration::from_millis(7));
        }
        state
    };
    let draining = busy();
    draining.begin_drain();
    [fresh, busy(), draining]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, name) = text.split_once('\n').unwrap_or((text, "app"));
    let options = Options::parse(Some(query));
    let scopes = [
        Scope::All,
        Scope::Container(name),
        Scope::Container("app"),
        Scope::Check(name),
        Scope::Check("db"),
    ];
    for state in STATES.iter() {
        let snapshot = state.borrow();
        for kind in ProbeKind::ALL {
            for scope in scopes {
                render(&snapshot, kind, scope, &options);
            }
        }
    }
});

fn render(snapshot: &Snapshot, kind: ProbeKind, scope: Scope<'_>, options: &Options<'_>) {
    let probe = Probe::evaluate(snapshot, kind, scope, options);
    let ok = probe.ok();
    let text = probe.text(options.verbose);
    assert_eq!(
        probe.text(false) == "ok",
        ok,
        "terse text and verdict disagree: {text:?}"
    );
    let _ = probe.text(true);
    let json = probe.json();
    assert_eq!(json["status"], if ok { "pass" } else { "fail" }, "json: {json}");
    let health = probe.health_json();
    assert_eq!(health["status"] == "fail", !ok, "health+json: {health}");
    let _ = (json.to_string(), health.to_string());
}
