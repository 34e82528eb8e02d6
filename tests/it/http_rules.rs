//! The http check's rules beyond the kubelet's: status sets, body and
//! header patterns, and secret request headers, against real servers on
//! 127.0.0.1. Each failure names its rule and carries its own reason.

use std::time::Duration;

use bytes::Bytes;
use healthproxy::check::{HttpCheck, Outcome, Reason, Verdict};
use healthproxy::config::{HttpSpec, Pattern, SecretHeader, SecretSource, StatusSet};
use http_body_util::Full;
use hyper::Response;

use super::http_check::{Server, reply, spec};
use super::support::{Proxy, eventually};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn run(spec: HttpSpec) -> Outcome {
    HttpCheck::new(spec).unwrap().run(TIMEOUT).await
}

fn failed(outcome: &Outcome) -> (Verdict, Option<Reason>, &str) {
    (outcome.verdict, outcome.reason, outcome.message.as_str())
}

fn pattern(text: &str) -> Option<Pattern> {
    Some(Pattern::new(text).unwrap())
}

#[tokio::test]
async fn expect_status_accepts_what_it_lists_and_names_itself_when_it_refuses() {
    let unauthorized = Server::start(|_| reply(401, "who are you")).await;
    // Unset: the kubelet's rule and the kubelet's words.
    let outcome = run(spec(unauthorized.port(), "/")).await;
    assert_eq!(
        failed(&outcome),
        (
            Verdict::Failure,
            Some(Reason::Status),
            "HTTP probe failed with statuscode: 401"
        )
    );
    let accept_401 = |port| HttpSpec {
        expect_status: Some(StatusSet::new(vec![200..=299, 401..=401])),
        ..spec(port, "/")
    };
    let outcome = run(accept_401(unauthorized.port())).await;
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");

    // A 302 without Location is final: out of a set that excludes 3xx.
    let moved = Server::start(|_| reply(302, "")).await;
    assert_eq!(run(spec(moved.port(), "/")).await.verdict, Verdict::Warning);
    let outcome = run(accept_401(moved.port())).await;
    assert_eq!(
        failed(&outcome),
        (
            Verdict::Failure,
            Some(Reason::Status),
            "HTTP probe failed: status 302 not in [200-299, 401]"
        )
    );
}

fn json_body(status: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{{\"status\": \"{status}\"}}"))))
        .unwrap()
}

#[tokio::test]
async fn body_patterns_judge_the_body_and_name_the_pattern() {
    let server = Server::start(|_| json_body("ready")).await;
    let with = |matches: Option<&str>, not: Option<&str>| HttpSpec {
        body_matches: matches.and_then(pattern),
        body_not_matches: not.and_then(pattern),
        ..spec(server.port(), "/")
    };
    let ok = run(with(Some(r#""status":\s*"(ok|ready)""#), Some("degraded"))).await;
    assert_eq!(ok.verdict, Verdict::Success, "{ok:?}");

    let outcome = run(with(Some("^starting"), None)).await;
    assert_eq!(
        failed(&outcome),
        (
            Verdict::Failure,
            Some(Reason::Body),
            "HTTP probe failed: body did not match \"^starting\""
        )
    );
    let outcome = run(with(None, Some("re+ady"))).await;
    assert_eq!(
        failed(&outcome),
        (
            Verdict::Failure,
            Some(Reason::Body),
            "HTTP probe failed: body matched \"re+ady\""
        )
    );
}

#[tokio::test]
async fn body_patterns_see_only_the_first_10_kib() {
    let mut body = "x".repeat(10 * 1024);
    body.push_str("ready");
    let server = Server::start(move |_| reply(200, body.clone())).await;
    let outcome = run(HttpSpec {
        body_matches: pattern("ready"),
        ..spec(server.port(), "/")
    })
    .await;
    assert_eq!(outcome.reason, Some(Reason::Body), "{outcome:?}");
    let outcome = run(HttpSpec {
        body_matches: pattern("^x*$"),
        ..spec(server.port(), "/")
    })
    .await;
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");
}

/// A header rule looks at the header's values up to 10 KiB in all, as a
/// body rule at the body: what a match may cost is bounded by the
/// pattern's size, whatever the app sends (a head may be megabytes).
#[tokio::test]
async fn header_patterns_see_only_the_first_10_kib_of_the_values() {
    let server = Server::start(|_| {
        Response::builder()
            .header("x-state", "x".repeat(6 * 1024))
            .header("x-state", format!("{}ready", "x".repeat(6 * 1024)))
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap()
    })
    .await;
    let with = |text: &str| HttpSpec {
        header_matches: vec![("X-State".to_string(), Pattern::new(text).unwrap())],
        ..spec(server.port(), "/")
    };
    let outcome = run(with("ready")).await;
    assert_eq!(outcome.reason, Some(Reason::Header), "{outcome:?}");
    let outcome = run(with("^x+$")).await;
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");
}

#[tokio::test]
async fn header_matches_needs_the_header_present_and_matching() {
    let server = Server::start(|_| json_body("ready")).await;
    let with = |name: &str, text: &str| HttpSpec {
        header_matches: vec![(name.to_string(), Pattern::new(text).unwrap())],
        ..spec(server.port(), "/")
    };
    let ok = run(with("Content-Type", "^application/json")).await;
    assert_eq!(ok.verdict, Verdict::Success, "{ok:?}");
    let outcome = run(with("content-type", "^text/")).await;
    assert_eq!(
        failed(&outcome),
        (
            Verdict::Failure,
            Some(Reason::Header),
            "HTTP probe failed: header content-type did not match \"^text/\""
        )
    );
    let outcome = run(with("X-Version", ".")).await;
    assert_eq!(
        failed(&outcome),
        (
            Verdict::Failure,
            Some(Reason::Header),
            "HTTP probe failed: header x-version missing, expected to match \".\""
        )
    );
}

#[tokio::test]
async fn a_secret_header_comes_from_its_file_and_follows_a_rotation() {
    let server = Server::start(|seen| {
        let token = seen.headers.get("x-token").map(|v| v.as_bytes().to_vec());
        match token.as_deref() {
            Some(b"second") => reply(200, "ok"),
            Some(b"first") => reply(200, "ok"),
            _ => reply(401, "no"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let check = HttpCheck::new(HttpSpec {
        secret_headers: vec![
            SecretHeader {
                name: "X-Token".into(),
                source: SecretSource::File(token.clone()),
            },
            SecretHeader {
                name: "Authorization".into(),
                source: SecretSource::Env {
                    var: "PROBE_AUTH".into(),
                    value: "Bearer from-env".into(),
                },
            },
        ],
        ..spec(server.port(), "/")
    })
    .unwrap();
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);

    // A Kubernetes Secret update: a new file renamed over the old one.
    let next = dir.path().join("token.new");
    std::fs::write(&next, "second").unwrap();
    std::fs::rename(&next, &token).unwrap();
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);

    // Gone: the run fails naming the header and the file, not the value.
    std::fs::remove_file(&token).unwrap();
    let outcome = check.run(TIMEOUT).await;
    assert_eq!(outcome.verdict, Verdict::Failure);
    assert!(
        outcome.message.contains("X-Token") || outcome.message.contains("x-token"),
        "{outcome:?}"
    );
    assert!(
        outcome.message.contains(&token.display().to_string()),
        "{outcome:?}"
    );
    assert!(!outcome.message.contains("second"), "{outcome:?}");

    let tokens: Vec<_> = server
        .seen()
        .iter()
        .map(|s| {
            (
                s.headers["x-token"].to_str().unwrap().to_string(),
                s.headers["authorization"].to_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tokens,
        [
            ("first".to_string(), "Bearer from-env".to_string()),
            ("second".to_string(), "Bearer from-env".to_string())
        ]
    );
}

/// The secret is sent, and appears in no output of the sidecar: not its
/// log, not `?verbose`, not the JSON status, not the metrics, not
/// `check-config`.
#[tokio::test]
async fn a_secret_header_is_sent_and_shown_nowhere() {
    const SECRET: &str = "s3cr3t-t0ken-9f8e";
    let server = Server::start(|seen| match seen.headers.get("x-token") {
        Some(v) if v == SECRET => reply(503, "token accepted, but not ready"),
        _ => reply(401, "no token"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, SECRET).unwrap();
    let config = format!(
        r#"
[[check]]
name = "app"
probes = ["readiness"]
period = "1s"
timeout = "500ms"
failure_threshold = 1
http = {{ port = {port}, header_files = {{ "X-Token" = {token:?} }}, headers = {{ "X-Probe" = "yes" }} }}
"#,
        port = server.port(),
        token = token.display().to_string(),
    );
    let proxy = Proxy::start(&config);
    // The app saw the secret: a 503, not a 401, is what the check reports.
    eventually(Duration::from_secs(10), "the check to report the 503", || async {
        proxy.get("/readyz?verbose").await.body.contains("503")
    })
    .await;
    let mut outputs = Vec::new();
    for path in [
        "/readyz?verbose",
        "/readyz?format=json",
        "/readyz/app?verbose&format=json",
        "/metrics",
    ] {
        outputs.push((path.to_string(), proxy.get(path).await.body));
    }
    outputs.push(("log".into(), proxy.log_lines("").join("\n")));
    let file = dir.path().join("healthproxy.toml");
    std::fs::write(&file, &config).unwrap();
    let (_, check_config) = super::support::run_binary(
        &["check-config", "--config", file.to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    outputs.push(("check-config".into(), check_config));
    assert!(server.seen().iter().any(|s| s.headers["x-token"] == SECRET));
    for (what, text) in &outputs {
        assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
    }
    assert!(outputs[0].1.contains("503"), "{outputs:?}");
}

/// A reload that changes a check's rules and adds a secret header applies
/// them from the next run on; the reload's answer and log name the check,
/// never the secret.
#[tokio::test]
async fn a_reload_applies_new_rules_and_secret_headers() {
    const SECRET: &str = "r3load-t0ken-77";
    let server = Server::start(|seen| match seen.headers.get("x-token") {
        Some(v) if v == SECRET => reply(200, "ok"),
        _ => reply(401, "no token"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, SECRET).unwrap();
    let config = |keys: &str| {
        format!(
            r#"[reload]
watch = false
[[check]]
name = "app"
probes = ["readiness"]
period = "200ms"
failure_threshold = 1
http = {{ port = {}{keys} }}
"#,
            server.port()
        )
    };
    let proxy = Proxy::start(&config(""));
    eventually(Duration::from_secs(10), "the kubelet's 401 failure", || {
        says(&proxy, "HTTP probe failed with statuscode: 401")
    })
    .await;

    std::fs::write(proxy.config_path(), config(", expect_status = [204]")).unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually(Duration::from_secs(10), "the status set's failure", || {
        says(&proxy, "HTTP probe failed: status 401 not in [204]")
    })
    .await;

    let keys = format!(
        r#", expect_status = [200], header_files = {{ "X-Token" = {:?} }}"#,
        token.display().to_string()
    );
    std::fs::write(proxy.config_path(), config(&keys)).unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("changed: app;"), "{}", reply.body);
    proxy.wait_status("/readyz/app", 200).await;
    assert!(!reply.body.contains(SECRET), "{}", reply.body);
    let log = proxy.log_lines("").join("\n");
    assert!(!log.contains(SECRET), "{log}");
}

/// Whether the check's verbose status says `text`.
async fn says(proxy: &Proxy, text: &str) -> bool {
    proxy.get("/readyz/app?verbose").await.body.contains(text)
}

/// Patterns whose compiled program is over the bound are refused by
/// `check-config` and by `run` before anything starts, naming the key and
/// the line: the two the costs were measured with (552 ms and 3.4 s a run
/// on a 10 KiB body, holding every probe meanwhile) and a stacked
/// repetition. The costliest that fits is accepted.
#[tokio::test]
async fn costly_patterns_are_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("healthproxy.toml");
    let refused = [
        ("body_matches", ".{0,5000}ok"),
        ("body_not_matches", "(?:.{0,1000}){20}z"),
        ("header_matches", "a{5}{5}{5}{5}{5}"),
    ];
    for (key, pattern) in refused {
        let rule = match key {
            "header_matches" => format!(r#"header_matches = {{ "X-State" = {pattern:?} }}"#),
            _ => format!("{key} = {pattern:?}"),
        };
        std::fs::write(
            &config,
            format!(
                r#"[[check]]
name = "web"
probes = ["readiness"]

http = {{ port = 8080, {rule} }}
"#
            ),
        )
        .unwrap();
        let path = config.to_str().unwrap();
        for args in [
            vec!["check-config", path],
            vec!["run", "--listen", "127.0.0.1:0", "--config", path],
        ] {
            let (code, stderr) = super::support::run_binary(&args, Duration::from_secs(20)).await;
            assert_eq!(code, 2, "{args:?} with {key} = {pattern:?}: {stderr}");
            assert!(stderr.contains(":5:"), "the line of {key}: {stderr}");
            assert!(stderr.contains(&format!("check[0].http.{key}")), "{stderr}");
            assert!(stderr.contains("too costly to match"), "{stderr}");
            assert!(stderr.contains("over 16 KiB"), "{stderr}");
        }
    }
    std::fs::write(
        &config,
        r#"[[check]]
name = "web"
probes = ["readiness"]
http = { port = 8080, body_matches = "(?:[^z]{0,16}){10}z" }
"#,
    )
    .unwrap();
    let (code, stderr) = super::support::run_binary(
        &["check-config", config.to_str().unwrap()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
}

/// An app that echoes the secret headers it is sent, in a redirect's body
/// and `Location` (to another host: a warning whose message is the body;
/// to itself, ten times: a failure naming the `Location`), decoded from
/// `Basic`, and where the message is cut at its bound: no form of a
/// secret reaches the log, `?verbose`, the JSON status or the metrics.
#[tokio::test]
async fn a_secret_echoed_by_the_app_is_redacted_everywhere() {
    const TOKEN: &str = "s3cr3t-echo-t0ken-4d1f";
    const PASSWORD: &str = "pa55-echo-w0rd-77e2";
    let basic = "Basic dXNlcjpwYTU1LWVjaG8tdzByZC03N2Uy"; // base64("user:" + PASSWORD)
    let server = Server::start(|seen| {
        let header = |name: &str| {
            seen.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (auth, token) = (header("authorization"), header("x-token"));
        let echo = |location: String, body: String| {
            Response::builder()
                .status(302)
                .header("location", location)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        match seen.path.as_str() {
            "/bearer" => echo(
                format!("http://login.example/?auth={}", auth.replace(' ', "%20")),
                format!(
                    "{{\"you_sent\": \"{auth}\", \"token\": \"{}\"}}",
                    auth.trim_start_matches("Bearer ")
                ),
            ),
            "/basic" => echo(
                "http://login.example/".into(),
                format!("credentials {auth} are user:{PASSWORD}; password {PASSWORD}"),
            ),
            "/cut" => echo(
                "http://login.example/".into(),
                format!("{}{token}", "x".repeat(1024 - 43 - 9)),
            ),
            _ => echo(format!("/loop?token={token}"), String::new()),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, format!("Bearer {TOKEN}")).unwrap();
    let check = |name: &str, secret: String| {
        format!(
            r#"[[check]]
name = "{name}"
probes = ["readiness"]
period = "1s"
failure_threshold = 1
http = {{ port = {}, path = "/{name}", {secret} }}
"#,
            server.port()
        )
    };
    let config = [
        check(
            "bearer",
            format!(
                r#"header_files = {{ "Authorization" = {:?} }}"#,
                bearer.display().to_string()
            ),
        ),
        check(
            "basic",
            r#"header_env = { "Authorization" = "ECHO_TEST_BASIC" }"#.into(),
        ),
        check(
            "cut",
            format!(
                r#"header_files = {{ "X-Token" = {:?} }}"#,
                token.display().to_string()
            ),
        ),
        check(
            "loop",
            format!(
                r#"header_files = {{ "X-Token" = {:?} }}"#,
                token.display().to_string()
            ),
        ),
    ]
    .concat();
    let dir2 = tempfile::tempdir().unwrap();
    let path = dir2.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let child = std::process::Command::new(super::support::binary())
        .args([
            "run",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&path)
        .env("ECHO_TEST_BASIC", basic)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = super::support::Process(child);
    let (logs, ready) = super::support::collect_logs(&mut child.0, "healthproxy serving");
    let addr: std::net::SocketAddr = ready["listen"].as_str().unwrap().parse().unwrap();
    let get = |path: &'static str| async move { super::support::request(addr, "GET", path, &[]).await.body };
    eventually(Duration::from_secs(20), "every check to have run", || async {
        let json = get("/readyz?verbose&format=json").await;
        json.matches("\"last_result\":").count() == 4 && !json.contains("\"last_result\":null")
    })
    .await;
    // The app saw the secrets and echoed them: the messages are its.
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.headers.get("authorization").is_some_and(|v| v == basic))
    );
    let mut outputs = Vec::new();
    for path in [
        "/readyz?verbose",
        "/readyz?verbose&format=json",
        "/readyz/loop?verbose",
        "/metrics",
    ] {
        outputs.push((path.to_string(), get(path).await));
    }
    let json = &outputs[1].1;
    assert!(json.contains("Probe terminated redirects"), "{json}");
    assert!(json.contains("stopped after 10 redirects"), "{json}");
    eventually(Duration::from_secs(10), "the warning's log line", || async {
        logs.lock().unwrap().iter().any(|l| l.contains("probe warning"))
    })
    .await;
    outputs.push(("log".into(), logs.lock().unwrap().join("\n")));
    let forms = [
        TOKEN,
        &TOKEN[..12],
        PASSWORD,
        "dXNlcjpwYTU1LWVjaG8tdzByZC03N2Uy",
        "s3cr3t-echo",
    ];
    for (what, text) in &outputs {
        for form in forms {
            assert!(!text.contains(form), "{what} shows {form:?}:\n{text}");
        }
    }
    assert!(outputs[1].1.contains("[redacted]"), "{}", outputs[1].1);
}
