//! The reload rule, through the real binary: a reload never turns a
//! passing probe into a failing one unless a check fails under its new
//! definition. Every key of a passing startup, liveness and readiness
//! check is changed in turn, checks are added, removed, renamed and
//! reordered, through each of the three triggers (SIGHUP, `POST /reload`,
//! the file watch), while every probe endpoint is polled every 40 ms; no
//! answer may change.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::task::JoinSet;

use crate::support::{App, Proxy, eventually, request};

/// One `[[check]]` of the configs under test.
#[derive(Debug, Clone)]
struct Check {
    name: String,
    /// `"startup"`, `"liveness"` or `"readiness"`.
    probe: &'static str,
    /// The handler line, such as `http = { port = 1, path = "/healthz" }`.
    handler: String,
    /// Timing keys, one per line.
    timing: Vec<String>,
}

impl Check {
    fn new(name: &str, probe: &'static str, app: &App) -> Check {
        Check {
            name: name.into(),
            probe,
            handler: http(app, "/healthz"),
            timing: vec![r#"period = "100ms""#.into()],
        }
    }

    fn toml(&self) -> String {
        format!(
            r#"[[check]]
name = "{}"
probes = ["{}"]
{}
{}
"#,
            self.name,
            self.probe,
            self.handler,
            self.timing.join("\n")
        )
    }

    /// Its own endpoint, such as `/readyz/ready`.
    fn path(&self) -> String {
        let endpoint = match self.probe {
            "startup" => "startupz",
            "liveness" => "livez",
            _ => "readyz",
        };
        format!("/{endpoint}/{}", self.name)
    }
}

fn http(app: &App, path: &str) -> String {
    format!(r#"http = {{ port = {}, path = "{path}" }}"#, app.addr.port())
}

/// Two passing checks of each probe kind against `app`.
fn base(app: &App) -> Vec<Check> {
    [
        ("boot", "startup"),
        ("boot-2", "startup"),
        ("live", "liveness"),
        ("live-2", "liveness"),
        ("ready", "readiness"),
        ("ready-2", "readiness"),
    ]
    .into_iter()
    .map(|(name, probe)| Check::new(name, probe, app))
    .collect()
}

/// A change of the base config, by name.
type Mutation = (String, Box<dyn Fn(&mut Vec<Check>)>);

/// Every change the rule covers.
fn mutations(app: &App) -> Vec<Mutation> {
    let mut out: Vec<Mutation> = Vec::new();
    let tcp = format!("tcp = {{ port = {} }}", app.addr.port());
    for name in ["boot", "live", "ready"] {
        let at = move |checks: &mut Vec<Check>| checks.iter().position(|c| c.name == name).unwrap();
        let timing = |key: &'static str, line: &'static str| -> Mutation {
            (
                format!("{name}: {key}"),
                Box::new(move |checks: &mut Vec<Check>| {
                    let i = at(checks);
                    checks[i].timing.retain(|l| !l.starts_with(key));
                    checks[i].timing.push(line.into());
                }),
            )
        };
        out.push(timing("period", r#"period = "150ms""#));
        out.push(timing("timeout", r#"timeout = "500ms""#));
        out.push(timing("failure_threshold", "failure_threshold = 1"));
        out.push(timing("initial_delay", r#"initial_delay = "5s""#));
        if name == "ready" {
            // Kubernetes allows another success threshold on readiness only.
            out.push(timing("success_threshold", "success_threshold = 3"));
        }
        let target = http(app, "/started");
        out.push((
            format!("{name}: target"),
            Box::new(move |checks: &mut Vec<Check>| {
                let i = at(checks);
                checks[i].handler = target.clone();
            }),
        ));
        let tcp = tcp.clone();
        out.push((
            format!("{name}: handler kind"),
            Box::new(move |checks: &mut Vec<Check>| {
                let i = at(checks);
                checks[i].handler = tcp.clone();
            }),
        ));
        out.push((
            format!("{name}: removed"),
            Box::new(move |checks: &mut Vec<Check>| {
                let i = at(checks);
                checks.remove(i);
            }),
        ));
        out.push((
            format!("{name}: renamed"),
            Box::new(move |checks: &mut Vec<Check>| {
                let i = at(checks);
                checks[i].name = format!("{name}-renamed");
            }),
        ));
    }
    for (name, probe) in [
        ("boot-new", "startup"),
        ("live-new", "liveness"),
        ("ready-new", "readiness"),
    ] {
        let check = Check::new(name, probe, app);
        out.push((
            format!("{name}: added"),
            Box::new(move |checks: &mut Vec<Check>| checks.insert(2, check.clone())),
        ));
    }
    out.push((
        "reordered".into(),
        Box::new(|checks: &mut Vec<Check>| checks.reverse()),
    ));
    out
}

fn config(head: &str, checks: &[Check]) -> String {
    let mut text = head.to_string();
    for c in checks {
        text.push_str(&c.toml());
    }
    text
}

/// Answers that differed from the expected one: (path, status, when).
type Surprises = Arc<Mutex<Vec<(String, u16, Duration)>>>;

/// Polls `paths` on `proxy` every 40 ms, each round's requests at once,
/// until dropped; every answer other than 200 is a surprise. Returns the
/// surprises and the longest time between two rounds.
struct Poller {
    /// The paths to poll, and how many times they were set.
    paths: Arc<Mutex<(u64, Vec<String>)>>,
    /// The setting of `paths` the last finished round began with.
    finished: Arc<Mutex<u64>>,
    surprises: Surprises,
    longest_gap: Arc<Mutex<Duration>>,
    rounds: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(addr: std::net::SocketAddr) -> Poller {
        let paths = Arc::new(Mutex::new((0, Vec::new())));
        let finished = Arc::new(Mutex::new(0));
        let surprises: Surprises = Arc::default();
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let rounds = Arc::new(Mutex::new(0));
        let task = {
            let (paths, finished, surprises, longest_gap, rounds) = (
                paths.clone(),
                finished.clone(),
                surprises.clone(),
                longest_gap.clone(),
                rounds.clone(),
            );
            tokio::spawn(async move {
                let origin = Instant::now();
                let mut last = Instant::now();
                let mut ticks = tokio::time::interval(Duration::from_millis(40));
                loop {
                    ticks.tick().await;
                    let now = Instant::now();
                    {
                        let mut gap = longest_gap.lock().unwrap();
                        *gap = (*gap).max(now - last);
                    }
                    last = now;
                    let (setting, round): (u64, Vec<String>) = paths.lock().unwrap().clone();
                    let mut asks = JoinSet::new();
                    for path in round {
                        asks.spawn(async move { (request(addr, "GET", &path, &[]).await.status, path) });
                    }
                    while let Some(answer) = asks.join_next().await {
                        let (status, path) = answer.unwrap();
                        if status != 200 {
                            surprises.lock().unwrap().push((path, status, origin.elapsed()));
                        }
                    }
                    *rounds.lock().unwrap() += 1;
                    *finished.lock().unwrap() = setting;
                }
            })
        };
        Poller {
            paths,
            finished,
            surprises,
            longest_gap,
            rounds,
            task,
        }
    }

    /// Polls the three probes and the own endpoint of each check of
    /// every one of `configs`' that is in all of them, from a round that
    /// begins after this call; returns once such a round has finished, so
    /// that no request of a round begun under the old paths is answered
    /// after the change that follows (a reload that the old paths do not
    /// allow for).
    async fn watch(&self, configs: &[&[Check]]) {
        let mut paths: Vec<String> = ["/startupz", "/livez", "/readyz"].map(String::from).to_vec();
        let first = configs[0];
        for c in first {
            if configs
                .iter()
                .all(|cs| cs.iter().any(|o| o.name == c.name && o.probe == c.probe))
            {
                paths.push(c.path());
            }
        }
        let setting = {
            let mut current = self.paths.lock().unwrap();
            *current = (current.0 + 1, paths);
            current.0
        };
        eventually(Duration::from_secs(10), "a round polls the new paths", || async {
            *self.finished.lock().unwrap() >= setting
        })
        .await;
    }

    async fn rounds(&self) -> u64 {
        *self.rounds.lock().unwrap()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a reload is asked for.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Hangup,
    Request,
    Watch,
}

/// `consecutive_successes` of every check of the three probes.
async fn successes(proxy: &Proxy) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for probe in ["startupz", "livez", "readyz"] {
        let body = proxy.get(&format!("/{probe}?format=json")).await.body;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        for c in doc["checks"].as_array().unwrap() {
            let n = c["consecutive_successes"].as_u64().unwrap();
            out.insert(c["name"].as_str().unwrap().to_string(), n);
        }
    }
    out
}

/// Waits until every check that still runs (not a startup check, which
/// stops once it has succeeded, nor one held by a long initial delay) has
/// succeeded `runs` more times in a row.
async fn settle(proxy: &Proxy, checks: &[Check], runs: u64) {
    let running: Vec<&Check> = checks
        .iter()
        .filter(|c| c.probe != "startup" && !c.timing.iter().any(|t| t.starts_with("initial_delay")))
        .collect();
    let before = successes(proxy).await;
    eventually(Duration::from_secs(20), "the checks run on", || async {
        let now = successes(proxy).await;
        running.iter().all(|c| {
            now.get(&c.name).copied().unwrap_or(0) >= before.get(&c.name).copied().unwrap_or(0) + runs
        })
    })
    .await;
}

fn write(path: &Path, text: &str) {
    // In one step, so that the watch never reads it half written.
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

async fn reload(proxy: &Proxy, trigger: Trigger, text: &str) {
    let applied = proxy.log_lines("config reloaded").len();
    write(&proxy.config_path(), text);
    match trigger {
        Trigger::Request => {
            let reply = proxy.send("POST", "/reload", &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        Trigger::Hangup => proxy.signal(Signal::SIGHUP),
        Trigger::Watch => {}
    }
    eventually(Duration::from_secs(20), "the reload is applied", || async {
        proxy.log_lines("config reloaded").len() > applied
    })
    .await;
    assert!(
        proxy.log_lines("config reload rejected").is_empty(),
        "{:?}",
        proxy.log_lines("error")
    );
}

/// Every mutation and back through `trigger`, polled throughout.
async fn every_change_keeps_every_answer(trigger: Trigger) {
    let app = App::start().await;
    let head = match trigger {
        Trigger::Watch => {
            r#"[reload]
interval = "100ms"
"#
        }
        _ => "[reload]\nwatch = false\n",
    };
    let base = base(&app);
    let proxy = Proxy::start(&config(head, &base));
    for path in ["/startupz", "/livez", "/readyz"] {
        proxy.wait_status(path, 200).await;
    }
    settle(&proxy, &base, 2).await;
    let poller = Poller::start(proxy.addr);
    poller.watch(&[&base]).await;
    for (what, change) in mutations(&app) {
        let mut changed = base.clone();
        change(&mut changed);
        poller.watch(&[&base, &changed]).await;
        reload(&proxy, trigger, &config(head, &changed)).await;
        poller.watch(&[&changed]).await;
        settle(&proxy, &changed, 3).await;
        poller.watch(&[&changed, &base]).await;
        reload(&proxy, trigger, &config(head, &base)).await;
        poller.watch(&[&base]).await;
        settle(&proxy, &base, 3).await;
        let surprises = poller.surprises.lock().unwrap().clone();
        assert!(surprises.is_empty(), "{trigger:?}, {what}: {surprises:?}");
    }
    let rounds = poller.rounds().await;
    let gap = *poller.longest_gap.lock().unwrap();
    eprintln!("{trigger:?}: {rounds} polling rounds, at most {gap:?} apart");
    assert!(rounds > 50, "polled throughout: {rounds} rounds");
}

#[tokio::test]
async fn no_change_through_sighup_flips_a_probe() {
    every_change_keeps_every_answer(Trigger::Hangup).await;
}

#[tokio::test]
async fn no_change_through_post_reload_flips_a_probe() {
    every_change_keeps_every_answer(Trigger::Request).await;
}

#[tokio::test]
async fn no_change_through_the_file_watch_flips_a_probe() {
    every_change_keeps_every_answer(Trigger::Watch).await;
}

/// The other half of the rule: a check that fails under its new
/// definition does fail its probe, by its thresholds and not before.
#[tokio::test]
async fn a_new_or_changed_check_that_fails_fails_its_probe_at_its_threshold() {
    let app = App::start().await;
    let (_refusing, closed) = crate::support::refusing_port();
    let head = "[reload]\nwatch = false\n";
    let ready = Check::new("ready", "readiness", &app);
    let proxy = Proxy::start(&config(head, std::slice::from_ref(&ready)));
    proxy.wait_status("/readyz", 200).await;

    for (what, checks) in [
        ("added", {
            let mut down = Check::new("down", "readiness", &app);
            down.handler = format!("tcp = {{ port = {closed} }}");
            down.timing.push("failure_threshold = 3".into());
            vec![ready.clone(), down]
        }),
        ("changed", {
            let mut moved = ready.clone();
            moved.handler = format!("tcp = {{ port = {closed} }}");
            moved.timing.push("failure_threshold = 3".into());
            vec![moved]
        }),
    ] {
        let failing = &checks.last().unwrap().name;
        reload(&proxy, Trigger::Request, &config(head, &checks)).await;
        // Watch it fall: every 503 must come with three failures in a row.
        eventually(Duration::from_secs(20), "readiness fails", || async {
            let reply = proxy.get("/readyz?format=json").await;
            let doc: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            let check = doc["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == failing.as_str())
                .unwrap()
                .clone();
            let failures = check["consecutive_failures"].as_u64().unwrap();
            if reply.status == 503 {
                assert!(failures >= 3, "{what}: 503 after {failures} failures: {check}");
            } else {
                assert!(failures < 3, "{what}: 200 after {failures} failures: {check}");
            }
            reply.status == 503
        })
        .await;
        reload(
            &proxy,
            Trigger::Request,
            &config(head, std::slice::from_ref(&ready)),
        )
        .await;
        proxy.wait_status("/readyz", 200).await;
    }
}
