//! Reload through the real binary: by SIGHUP, by `POST /reload` and by the
//! file changing (a ConfigMap's symlink swap included); a bad file kept out
//! while the running checks go on untouched; unchanged checks kept,
//! changed ones restarted, removed ones gone from the endpoints and
//! `/metrics`; settings bound at start reported, never half applied; a
//! drain untouched.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{App, Proxy, binary, eventually, metric, proc_status, run_binary};

/// A readiness check named `name` against the app, every 100 ms.
fn check(name: &str, app: &App) -> String {
    format!(
        r#"[[check]]
name = "{name}"
probes = ["readiness"]
period = "100ms"
http = {{ port = {}, path = "/healthz" }}
"#,
        app.addr.port()
    )
}

/// Replaces the file at `path` in one step, as an editor's save by rename
/// does: a reader never sees it half written.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

async fn scrape(proxy: &Proxy) -> String {
    proxy.get("/metrics").await.body
}

/// `healthproxy_check_runs_total` of `check`'s successes.
async fn successes(proxy: &Proxy, check: &str) -> Option<f64> {
    metric(
        &scrape(proxy).await,
        &format!("healthproxy_check_runs_total{{check=\"{check}\",kind=\"http\",result=\"success\"}}"),
    )
}

async fn wait_successes(proxy: &Proxy, check: &str, at_least: f64) {
    eventually(
        Duration::from_secs(20),
        &format!("{check} has {at_least} successes"),
        || async { successes(proxy, check).await.is_some_and(|n| n >= at_least) },
    )
    .await;
}

/// The count of log lines of reloads applied by `trigger`.
fn reloads_by(proxy: &Proxy, trigger: &str) -> usize {
    proxy
        .log_lines("config reloaded")
        .iter()
        .filter(|l| l.contains(&format!("\"trigger\":\"{trigger}\"")))
        .count()
}

#[tokio::test]
async fn sighup_and_post_reload_apply_the_file_and_change_the_log_level() {
    let app = App::start().await;
    let head = r#"log_level = "info"
[reload]
watch = false
"#;
    let mut proxy = Proxy::start(&format!("{head}{}", check("web", &app)));
    proxy.wait_status("/readyz/web", 200).await;
    assert_eq!(proxy.get("/readyz/db").await.status, 404);

    // SIGHUP: a second check, and debug logs (each run).
    std::fs::write(
        proxy.config_path(),
        format!(
            "{}{}{}",
            head.replace("info", "debug"),
            check("web", &app),
            check("db", &app)
        ),
    )
    .unwrap();
    proxy.signal(Signal::SIGHUP);
    proxy.wait_status("/readyz/db", 200).await;
    assert_eq!(reloads_by(&proxy, "SIGHUP"), 1);
    proxy.wait_log("\"verdict\":\"success\"").await;
    assert!(proxy.exited().is_none(), "SIGHUP does not end the sidecar");

    // POST /reload: db removed; the answer says what changed.
    std::fs::write(proxy.config_path(), format!("{head}{}", check("web", &app))).unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body,
        "reloaded: 1 checks; unchanged: web; changed: none; added: none; removed: db\n"
    );
    assert_eq!(proxy.get("/readyz/db").await.status, 404);
    assert_eq!(reloads_by(&proxy, "/reload"), 1);
    let reloaded = &proxy.log_lines("config reloaded")[1];
    let line: serde_json::Value = serde_json::from_str(reloaded).unwrap();
    assert_eq!(line["removed"], serde_json::json!(["db"]), "{line}");
    assert_eq!(proxy.send("GET", "/reload", &[]).await.status, 405);
}

#[tokio::test]
async fn a_bad_file_is_rejected_whole_and_the_running_checks_go_on_untouched() {
    let app = App::start().await;
    let good = format!("[reload]\nwatch = false\n{}", check("web", &app));
    let proxy = Proxy::start(&good);
    wait_successes(&proxy, "web", 3.0).await;
    let before = proxy.get("/readyz/web?format=json").await.body;
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, "healthproxy_config_last_reload_successful"),
        Some(1.0)
    );
    let started_at = metric(&text, "healthproxy_config_last_reload_success_timestamp_seconds").unwrap();
    let runs_before = successes(&proxy, "web").await.unwrap();

    // Two errors, one of them in a check that would otherwise be valid:
    // nothing of the file is applied.
    let bad = format!(
        "{good}{}[[check]]\nname = \"Bad Name\"\nprobes = [\"readiness\"]\ntcp = {{ port = 1 }}\nperiod = \"10ms\"\n",
        check("db", &app)
    );
    std::fs::write(proxy.config_path(), &bad).unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    // The errors as check-config prints them.
    let (code, check_config) = run_binary(
        &["check-config", proxy.config_path().to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        reply.body.starts_with(&check_config),
        "{}\nagainst check-config's\n{check_config}",
        reply.body
    );
    for line in check_config.lines() {
        proxy.wait_log(&line.replace('"', "\\\"")).await;
    }
    proxy.signal(Signal::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the SIGHUP's rejection is logged",
        || async { proxy.log_lines("config reload rejected").len() == 2 },
    )
    .await;

    assert_eq!(
        proxy.get("/readyz/db").await.status,
        404,
        "nothing of the file applied"
    );
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, "healthproxy_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "healthproxy_config_last_reload_success_timestamp_seconds"),
        Some(started_at)
    );
    // The running check kept its state and counters and goes on.
    let after = proxy.get("/readyz/web?format=json").await.body;
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    let web = |v: &serde_json::Value| v["checks"][0].clone();
    assert_eq!(web(&after)["state"], web(&before)["state"], "{after}");
    assert_eq!(web(&after)["last_transition"], web(&before)["last_transition"]);
    wait_successes(&proxy, "web", runs_before + 2.0).await;

    // Fixed: applied, and the gauge says so.
    std::fs::write(proxy.config_path(), format!("{good}{}", check("db", &app))).unwrap();
    assert_eq!(proxy.send("POST", "/reload", &[]).await.status, 200);
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, "healthproxy_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(metric(&text, "healthproxy_config_last_reload_success_timestamp_seconds").unwrap() > started_at);
}

#[tokio::test]
async fn unchanged_and_changed_checks_keep_their_counters_and_removed_leave_metrics() {
    let app = App::start().await;
    let head = "[reload]\nwatch = false\n";
    let proxy = Proxy::start(&format!(
        "{head}{}{}{}",
        check("kept", &app),
        check("changed", &app),
        check("removed", &app)
    ));
    for name in ["kept", "changed", "removed"] {
        wait_successes(&proxy, name, 10.0).await;
    }
    let kept_before = successes(&proxy, "kept").await.unwrap();
    let changed = check("changed", &app).replace("100ms", "150ms");
    std::fs::write(
        proxy.config_path(),
        format!("{head}{changed}{}", check("kept", &app)),
    )
    .unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(
        reply.body,
        "reloaded: 2 checks; unchanged: kept; changed: changed; added: none; removed: removed\n"
    );
    let text = scrape(&proxy).await;
    assert!(!text.contains("check=\"removed\""), "{text}");
    assert!(
        successes(&proxy, "kept").await.unwrap() >= kept_before,
        "an unchanged check keeps its counters"
    );
    assert!(
        successes(&proxy, "changed").await.unwrap() >= 10.0,
        "a changed check of the same kind keeps its counters"
    );
    assert_eq!(proxy.get("/readyz/removed").await.status, 404);
    let verbose = proxy.get("/readyz?verbose").await.body;
    assert!(!verbose.contains("removed"), "{verbose}");
    // Both still run.
    wait_successes(&proxy, "changed", 3.0).await;
    wait_successes(&proxy, "kept", kept_before + 3.0).await;
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    let app = App::start().await;
    // The layout of a mounted ConfigMap: config.toml -> ..data/config.toml,
    // ..data -> ..TIMESTAMP; an update writes a new timestamped directory
    // and swaps ..data in one rename.
    let dir = tempfile::tempdir().unwrap();
    let data = |version: &str, text: &str| {
        let at = dir.path().join(format!("..{version}"));
        std::fs::create_dir(&at).unwrap();
        std::fs::write(at.join("config.toml"), text).unwrap();
        let link = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &link).unwrap();
        std::fs::rename(&link, dir.path().join("..data")).unwrap();
    };
    let head = r#"[reload]
interval = "100ms"
"#;
    data("2026_11_30_10_00_00.1", &format!("{head}{}", check("web", &app)));
    let path = dir.path().join("config.toml");
    std::os::unix::fs::symlink("..data/config.toml", &path).unwrap();
    let proxy = Proxy::spawn(&binary(), &path);
    proxy.wait_status("/readyz/web", 200).await;

    data(
        "2026_11_30_10_05_00.2",
        &format!("{head}{}{}", check("web", &app), check("db", &app)),
    );
    proxy.wait_status("/readyz/db", 200).await;
    assert_eq!(reloads_by(&proxy, "file changed"), 1);
}

#[tokio::test]
async fn an_edited_file_is_picked_up_once_and_a_bad_edit_is_kept_out() {
    let app = App::start().await;
    let head = r#"[reload]
interval = "100ms"
"#;
    let proxy = Proxy::start(&format!("{head}{}", check("web", &app)));
    proxy.wait_status("/readyz/web", 200).await;
    replace(
        &proxy.config_path(),
        &format!("{head}{}{}", check("web", &app), check("db", &app)),
    );
    proxy.wait_status("/readyz/db", 200).await;
    replace(&proxy.config_path(), &format!("{head}bogus = 1\n"));
    proxy.wait_log("config reload rejected").await;
    assert_eq!(
        proxy.get("/readyz/db").await.status,
        200,
        "the running config stays"
    );
    assert_eq!(reloads_by(&proxy, "file changed"), 1);
    assert_eq!(
        proxy.log_lines("config reload rejected").len(),
        1,
        "a bad file is reported once, not at every look"
    );
}

#[tokio::test]
async fn a_reload_never_touches_a_drain_and_reports_what_needs_a_restart() {
    let app = App::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let head = |min: &str| {
        format!(
            r#"[reload]
watch = false
[drain]
min = "{min}"
max = "60s"
token_file = "{}"
"#,
            token.display()
        )
    };
    let proxy = Proxy::start(&format!("{}{}", head("30s"), check("web", &app)));
    proxy.wait_status("/readyz", 200).await;
    let auth = [("authorization", "Bearer s3cret")];
    assert_eq!(
        proxy.send("POST", "/reload", &[]).await.status,
        401,
        "guarded as /drain"
    );
    assert_eq!(proxy.send("POST", "/drain", &auth).await.status, 202);
    proxy.wait_status("/readyz", 503).await;

    std::fs::write(
        proxy.config_path(),
        format!(
            r#"grpc_listen = "127.0.0.1:0"
{}{}{}"#,
            head("1s"),
            check("web", &app),
            check("db", &app)
        ),
    )
    .unwrap();
    let reply = proxy.send("POST", "/reload", &auth).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for key in ["grpc_listen", "drain"] {
        assert!(
            reply
                .body
                .contains(&format!("{key} changed: it takes effect at the next restart")),
            "{}",
            reply.body
        );
    }
    // 15 runs at 100 ms: longer than the new drain.min, which is not
    // applied.
    wait_successes(&proxy, "db", 15.0).await;
    assert_eq!(proxy.get("/readyz").await.status, 503, "still draining");
    let text = scrape(&proxy).await;
    assert_eq!(metric(&text, "healthproxy_draining"), Some(1.0));
    assert!(
        !text.contains("healthproxy_drain_duration_seconds"),
        "the drain has not ended at the new drain.min"
    );
}

/// `check`, with the probe kinds `probes` and the failure threshold 1.
fn check_of(name: &str, probes: &str, app: &App) -> String {
    check(name, app).replace("[\"readiness\"]", probes) + "failure_threshold = 1\n"
}

#[tokio::test]
async fn an_empty_file_or_one_without_a_kind_never_passes_a_failing_probe() {
    let app = App::start().await;
    app.set_status(500);
    let head = r#"[reload]
interval = "100ms"
"#;
    let checks = format!(
        "{}{}",
        check_of("ready", "[\"readiness\"]", &app),
        check_of("live", "[\"liveness\"]", &app)
    );
    let proxy = Proxy::start(&format!("{head}{checks}"));
    proxy.wait_status("/readyz", 503).await;
    proxy.wait_status("/livez", 503).await;

    // Truncated in place (a template that rendered to nothing, a full
    // disk), then asked for by every trigger.
    std::fs::File::create(proxy.config_path()).unwrap();
    proxy.wait_log("config reload rejected").await;
    proxy.signal(Signal::SIGHUP);
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("check: no [[check]]: every probe would pass whatever the app does"),
        "{}",
        reply.body
    );
    eventually(Duration::from_secs(10), "three refusals", || async {
        proxy.log_lines("config reload rejected").len() == 3
    })
    .await;
    // Runs go on and every answer stays a failure.
    let runs = |text: &str| {
        metric(
            text,
            "healthproxy_check_runs_total{check=\"live\",kind=\"http\",result=\"failure\"}",
        )
        .unwrap_or(0.0)
    };
    let before = runs(&scrape(&proxy).await);
    eventually(Duration::from_secs(20), "five more runs", || async {
        for path in ["/readyz", "/livez"] {
            assert_eq!(proxy.get(path).await.status, 503, "{path}");
        }
        runs(&scrape(&proxy).await) >= before + 5.0
    })
    .await;
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, "healthproxy_config_last_reload_successful"),
        Some(0.0)
    );

    // The last readiness check removed: refused unless the file says so.
    let only_live = format!("{head}{}", check_of("live", "[\"liveness\"]", &app));
    std::fs::write(proxy.config_path(), &only_live).unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains(
            "config.toml: allow_empty: the new file has no readiness check left: the readyz probe would pass whatever the app does; set allow_empty = [\"readiness\"] if that is meant\n"
        ),
        "{}",
        reply.body
    );
    assert_eq!(proxy.get("/readyz").await.status, 503);
    std::fs::write(
        proxy.config_path(),
        format!(
            r#"allow_empty = ["readiness"]
{only_live}"#
        ),
    )
    .unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        proxy.get("/readyz").await.status,
        200,
        "no readiness check, as the file says"
    );
    assert_eq!(proxy.get("/livez").await.status, 503);
}

#[tokio::test]
async fn a_file_without_checks_does_not_start_and_check_config_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "").unwrap();
    let file = path.to_str().unwrap();
    let expected = format!(
        "{file}:1:1: check: no [[check]]: every probe would pass whatever the app does; add checks, or set allow_empty = true"
    );
    for args in [
        &["run", "--listen", "127.0.0.1:0", "--config", file][..],
        &["check-config", file][..],
    ] {
        let (code, out) = run_binary(args, Duration::from_secs(10)).await;
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(&expected), "{args:?}: {out}");
    }
    std::fs::write(&path, "allow_empty = true\n").unwrap();
    let (code, out) = run_binary(&["check-config", file], Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{out}");
}

/// The watched path turned into `make(path)`: the running config stays,
/// the refusal is logged once, the process stays small, and SIGTERM ends
/// it promptly.
async fn an_unreadable_watched_path_keeps_the_config(make: impl Fn(&Path), what: &str) {
    let app = App::start().await;
    let head = r#"[reload]
interval = "100ms"
[drain]
min = "0s"
max = "1s"
"#;
    let mut proxy = Proxy::start(&format!("{head}{}", check("web", &app)));
    proxy.wait_status("/readyz/web", 200).await;
    let path = proxy.config_path();
    std::fs::remove_file(&path).unwrap();
    make(&path);
    proxy.wait_log(what).await;
    // Ten more looks at the path.
    let runs = successes(&proxy, "web").await.unwrap();
    wait_successes(&proxy, "web", runs + 10.0).await;
    assert_eq!(proxy.get("/readyz/web").await.status, 200);
    assert_eq!(proxy.log_lines(what).len(), 1, "logged once");
    assert!(proxy.log_lines("config reloaded").is_empty());
    let rss_kib = proc_status(proxy.child.id(), "VmRSS");
    assert!(rss_kib < 64 << 10, "VmRSS {rss_kib} kB");
    proxy.signal(Signal::SIGTERM);
    let exit = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_watched_path_that_becomes_dev_zero_is_refused_and_sigterm_still_exits() {
    an_unreadable_watched_path_keeps_the_config(
        |path| std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "is a character device, not a regular file: the running config stays",
    )
    .await;
}

#[tokio::test]
async fn a_watched_path_that_becomes_a_fifo_is_refused_and_sigterm_still_exits() {
    an_unreadable_watched_path_keeps_the_config(
        |path| {
            let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
            assert!(made.success());
        },
        "is a FIFO, not a regular file: the running config stays",
    )
    .await;
}

/// Finding: a reload compared every check with every other on the thread
/// that answers the probes; 6,000 checks held it 1.73 s, and a probe
/// timed out. Matched by name, off that thread, a no-op reload and one
/// that changes every check leave the probes answering within the
/// kubelet's default timeout of one second.
#[tokio::test]
async fn a_reload_of_thousands_of_checks_never_holds_the_probes() {
    let app = App::start().await;
    let checks = |period: &str| -> String {
        (0..6000)
            .map(|i| {
                format!(
                    r#"[[check]]
name = "c{i}"
probes = ["liveness"]
tcp = {{ port = {} }}
period = "{period}"
"#,
                    app.addr.port()
                )
            })
            .collect()
    };
    let head = "[reload]\nwatch = false\n";
    let proxy = Proxy::start(&format!("{head}{}", checks("1h")));
    proxy.wait_status("/livez", 200).await;
    for (what, text) in [("no-op", checks("1h")), ("every check changed", checks("2h"))] {
        std::fs::write(proxy.config_path(), format!("{head}{text}")).unwrap();
        let applied = proxy.log_lines("config reloaded").len();
        let asked = Instant::now();
        proxy.signal(Signal::SIGHUP);
        let mut slowest = Duration::ZERO;
        while proxy.log_lines("config reloaded").len() == applied {
            let start = Instant::now();
            assert_eq!(proxy.get("/livez").await.status, 200);
            slowest = slowest.max(start.elapsed());
            assert!(
                asked.elapsed() < Duration::from_secs(120),
                "{what}: the reload was not applied"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "{what}: applied after {:?}, slowest /livez {slowest:?}",
            asked.elapsed()
        );
        assert!(
            slowest < Duration::from_secs(1),
            "{what}: /livez took {slowest:?}"
        );
    }
}
