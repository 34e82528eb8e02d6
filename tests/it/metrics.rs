//! `/metrics` of the real binary: values, bounded labels, `promtool check
//! metrics`, a real Prometheus scraping it, and the alerting rules.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{App, Process, Proxy, eventually, metric, request, series, tool};

fn config(app: &App) -> String {
    format!(
        r#"[[check]]
name = "web"
probes = ["liveness", "readiness"]
period = "100ms"
http = {{ port = {}, path = "/healthz" }}
[[check]]
name = "db"
probes = ["readiness"]
critical = false
period = "100ms"
failure_threshold = 1
tcp = {{ port = 1 }}
"#,
        app.addr.port()
    )
}

#[tokio::test]
async fn metrics_show_runs_states_reasons_and_probes() {
    let app = App::start().await;
    let proxy = Proxy::start(&config(&app));
    proxy.wait_status("/readyz", 200).await;
    eventually(Duration::from_secs(10), "db has failed", || async {
        metric(
            &proxy.get("/metrics").await.body,
            "healthproxy_check_transitions_total{check=\"db\",to=\"failed\"}",
        ) == Some(1.0)
    })
    .await;
    let reply = proxy.get("/metrics").await;
    assert_eq!(reply.headers["content-type"], "text/plain; version=0.0.4");
    let m = reply.body;
    assert!(
        metric(
            &m,
            "healthproxy_check_runs_total{check=\"web\",kind=\"http\",result=\"success\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &m,
            "healthproxy_check_failures_total{check=\"db\",reason=\"refused\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(
            &m,
            "healthproxy_check_failures_total{check=\"db\",reason=\"timeout\"}"
        ),
        None,
        "a reason's series appears with its first failure (docs/metrics.md)"
    );
    assert_eq!(
        metric(
            &m,
            "healthproxy_check_runs_total{check=\"web\",kind=\"http\",result=\"failure\"}"
        ),
        Some(0.0),
        "the runs series are there from the start"
    );
    assert_eq!(
        metric(&m, "healthproxy_check_healthy{check=\"web\",probe=\"liveness\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "healthproxy_check_healthy{check=\"web\",probe=\"readiness\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "healthproxy_check_healthy{check=\"db\",probe=\"readiness\"}"),
        Some(0.0)
    );
    assert!(metric(&m, "healthproxy_check_consecutive_failures{check=\"db\"}").unwrap() >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_success = metric(
        &m,
        "healthproxy_check_last_success_timestamp_seconds{check=\"web\"}",
    )
    .unwrap();
    assert!(
        (now - 60.0..=now).contains(&last_success),
        "{last_success} is not a recent time"
    );
    assert_eq!(
        metric(
            &m,
            "healthproxy_check_last_success_timestamp_seconds{check=\"db\"}"
        ),
        None,
        "absent until the check first succeeds"
    );
    // Five phases for an HTTP check, none for a TCP one: bounded labels.
    let phases: Vec<f64> = ["resolve", "connect", "tls", "processing", "transfer"]
        .iter()
        .map(|phase| {
            let series = format!("healthproxy_check_http_phase_seconds{{check=\"web\",phase=\"{phase}\"}}");
            metric(&m, &series).unwrap_or_else(|| panic!("{series} in {m}"))
        })
        .collect();
    assert_eq!(phases[2], 0.0, "plain HTTP has no TLS phase: {phases:?}");
    assert!(phases[3] > 0.0, "the app answered in some time: {phases:?}");
    assert!(
        !m.contains("healthproxy_check_http_phase_seconds{check=\"db\""),
        "{m}"
    );
    assert_eq!(
        metric(&m, "healthproxy_check_consecutive_failures{check=\"web\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "healthproxy_probe_ok{probe=\"readiness\"}"),
        Some(1.0),
        "db is non-critical"
    );
    assert_eq!(metric(&m, "healthproxy_probe_ok{probe=\"startup\"}"), Some(1.0));
    assert_eq!(metric(&m, "healthproxy_draining"), Some(0.0));
    let build_info = format!(
        "healthproxy_build_info{{revision=\"{}\",rustversion=\"{}\",version=\"{}\"}}",
        healthproxy::version::REVISION,
        healthproxy::version::RUSTC_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&m, &build_info), Some(1.0));
    assert!(
        metric(
            &m,
            "healthproxy_check_duration_seconds_count{check=\"web\",kind=\"http\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(metric(&m, "process_resident_memory_bytes").unwrap() > 0.0);

    app.set_status(500);
    proxy.wait_status("/livez", 503).await;
    let m = proxy.get("/metrics").await.body;
    assert_eq!(metric(&m, "healthproxy_probe_ok{probe=\"liveness\"}"), Some(0.0));
    assert!(
        metric(
            &m,
            "healthproxy_check_failures_total{check=\"web\",reason=\"status\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert_eq!(
        metric(
            &m,
            "healthproxy_check_transitions_total{check=\"web\",to=\"failed\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn request_labels_stay_bounded_whatever_the_paths() {
    let proxy = Proxy::start(
        r#"[[check]]
name = "a"
probes = ["liveness"]
tcp = { port = 1 }
"#,
    );
    for i in 0..50 {
        proxy.get(&format!("/random/{i}")).await;
        proxy.get(&format!("/livez/nope-{i}")).await;
    }
    request(proxy.addr, "DELETE", "/livez", &[]).await;
    let m = proxy.get("/metrics").await.body;
    assert_eq!(
        series(&m, "healthproxy_http_requests_total"),
        [
            "healthproxy_http_requests_total{code=\"404\",route=\"/livez/{name}\"} 50",
            "healthproxy_http_requests_total{code=\"404\",route=\"unmatched\"} 50",
            "healthproxy_http_requests_total{code=\"405\",route=\"/livez\"} 1",
        ]
    );
}

#[tokio::test]
async fn drain_metrics_after_a_drain() {
    let proxy = Proxy::start(
        r#"allow_empty = true
[drain]
min = "200ms"
"#,
    );
    assert_eq!(proxy.get("/prestop").await.status, 200);
    let m = proxy.get("/metrics").await.body;
    assert_eq!(metric(&m, "healthproxy_draining"), Some(1.0));
    assert_eq!(metric(&m, "healthproxy_probe_ok{probe=\"readiness\"}"), Some(0.0));
    assert_eq!(metric(&m, "healthproxy_probe_ok{probe=\"liveness\"}"), Some(1.0));
    let min_wait = metric(&m, "healthproxy_drain_duration_seconds{phase=\"min_wait\"}").unwrap();
    assert!((0.2..1.0).contains(&min_wait), "{min_wait}");
    assert!(metric(&m, "healthproxy_drain_duration_seconds{phase=\"total\"}").unwrap() >= min_wait);
    assert_eq!(metric(&m, "healthproxy_drain_timed_out"), Some(0.0));
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let app = App::start().await;
    let proxy = Proxy::start(&config(&app));
    proxy.wait_status("/readyz", 200).await;
    proxy.get("/nope").await;
    let text = proxy.get("/metrics").await.body;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
}

/// One refused preStop hook is enough: it means an app stopped undrained.
#[test]
fn one_refused_lifecycle_request_raises_the_alert() {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("refused_test.yml");
    std::fs::write(
        &test,
        format!(
            r#"rule_files: ["{}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'healthproxy_lifecycle_refused_total{{namespace="n",pod="p",route="/prestop",reason="token"}}'
        values: '0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'healthproxy_lifecycle_refused_total{{namespace="n",pod="p",route="/drain",reason="not_loopback"}}'
        values: '0x15'
    alert_rule_test:
      - eval_time: 1m
        alertname: HealthproxyLifecycleRefused
        exp_alerts: []
      - eval_time: 4m
        alertname: HealthproxyLifecycleRefused
        exp_alerts:
          - exp_labels: {{namespace: n, pod: p, route: /prestop, reason: token, severity: warning}}
            exp_annotations:
              summary: "Lifecycle request to /prestop refused (token)"
              description: 'healthproxy in n/p refused /prestop (token); the log line "lifecycle request refused" names the source. A refused preStop hook drains nothing: check that the hook''s Authorization header carries the token of drain.token_file.'
      - eval_time: 15m
        alertname: HealthproxyLifecycleRefused
        exp_alerts: []
"#,
            rules.display()
        ),
    )
    .unwrap();
    let out = Command::new(tool("promtool"))
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_reload_alert_fires_ten_minutes_after_a_rejected_reload_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("reload_test.yml");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    // One pod's gauge: applied, then rejected from minute 2 on.
    std::fs::write(
        &tests,
        format!(
            r#"rule_files: ["{}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'healthproxy_config_last_reload_successful{{namespace="shop",pod="web-1"}}'
        values: "1 1 0x30"
    alert_rule_test:
      - eval_time: 10m
        alertname: HealthproxyConfigReloadFailed
        exp_alerts: []
      - eval_time: 20m
        alertname: HealthproxyConfigReloadFailed
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, pod: web-1}}
            exp_annotations:
              summary: "healthproxy rejected its new config"
              description: "healthproxy in shop/web-1 rejected the last reload of its config and runs the previous one; a restart would fail. Its log has the errors, as `healthproxy check-config` prints them: fix the ConfigMap."
"#,
            rules.display()
        ),
    )
    .unwrap();
    let out = Command::new(tool("promtool"))
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns the values of the result vector.
async fn query(prometheus: std::net::SocketAddr, promql: &str) -> Vec<f64> {
    let reply = request(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={}", encode(promql)),
        &[],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_sidecar() {
    let app = App::start().await;
    let proxy = Proxy::start(&config(&app));
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: healthproxy\n    static_configs:\n      - targets: ['{}']\n",
            proxy.addr
        ),
    )
    .unwrap();
    let _prometheus = Process(
        Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(
        Duration::from_secs(60),
        "prometheus has scraped healthproxy",
        || async {
            tokio::net::TcpStream::connect(api).await.is_ok()
                && query(api, "up{job=\"healthproxy\"}").await == [1.0]
                && query(
                    api,
                    "healthproxy_check_failures_total{check=\"db\",reason=\"refused\"}",
                )
                .await
                .first()
                    > Some(&0.0)
        },
    )
    .await;
    assert_eq!(
        query(
            api,
            "healthproxy_check_healthy{check=\"web\",probe=\"readiness\"}"
        )
        .await,
        [1.0]
    );
    assert_eq!(
        query(api, "healthproxy_check_healthy{check=\"db\",probe=\"readiness\"}").await,
        [0.0]
    );
    assert_eq!(
        query(api, "count(healthproxy_check_runs_total)").await,
        [6.0],
        "2 checks x 3 results"
    );
    assert_eq!(
        query(api, "healthproxy_check_failures_total{check=\"web\"}").await,
        Vec::<f64>::new(),
        "a check that never failed has no reason series"
    );
}

/// The alerts on the metrics of checks beyond the kubelet's: no success
/// for 10 minutes (here from minute 5 on: it fires after minute 16), and a
/// certificate that expires in under 14 days for an hour (here on day 20:
/// it fires after day 6 and an hour).
#[test]
fn the_no_success_and_certificate_alerts_fire_when_due_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("checks_test.yml");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    std::fs::write(
        &tests,
        format!(
            r#"rule_files: ["{}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'healthproxy_check_last_success_timestamp_seconds{{namespace="shop",pod="web-1",check="app"}}'
        values: "0 60 120 180 240 300 300x30"
    alert_rule_test:
      - eval_time: 15m
        alertname: HealthproxyCheckNoRecentSuccess
        exp_alerts: []
      - eval_time: 17m
        alertname: HealthproxyCheckNoRecentSuccess
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, pod: web-1, check: app}}
            exp_annotations:
              summary: "Check app has not succeeded for 10 minutes"
              description: "Check app in shop/web-1 last succeeded 12m 0s ago. See `curl POD:9775/readyz?verbose`."
  - interval: 1m
    input_series:
      - series: 'healthproxy_check_tls_cert_expiry_timestamp_seconds{{namespace="shop",pod="web-1",check="app"}}'
        values: "1728000x10200"
    alert_rule_test:
      - eval_time: 6d
        alertname: HealthproxyCheckCertificateExpiringSoon
        exp_alerts: []
      - eval_time: 6d30m
        alertname: HealthproxyCheckCertificateExpiringSoon
        exp_alerts: []
      - eval_time: 7d
        alertname: HealthproxyCheckCertificateExpiringSoon
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, pod: web-1, check: app}}
            exp_annotations:
              summary: "The certificate checked by app expires in under 14 days"
              description: "The server certificate chain seen by check app in shop/web-1 expires in 13d 0h 0m 0s."
"#,
            rules.display()
        ),
    )
    .unwrap();
    let out = Command::new(tool("promtool"))
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
