//! The recognisers over command lines from real manifests
//! (/work/shared/exec-probes.md's survey: Helm charts, operators).

use serde_yaml_ng::{Mapping, Value};

use super::{Context, Converted, convert};

const ENV: &str = r#"
name: db
env:
  - {name: POSTGRES_USER, value: app}
  - {name: POSTGRES_DB, value: shop}
  - {name: PORT, value: "6380"}
  - {name: SPACED, value: "a b"}
  - {name: NONE, value: ""}
  - name: POSTGRES_PASSWORD
    valueFrom: {secretKeyRef: {name: db, key: password}}
  - name: REDIS_PASSWORD
    valueFrom: {secretKeyRef: {name: redis, key: redis-password}}
  - name: MYSQL_ROOT_PASSWORD
    valueFrom: {secretKeyRef: {name: mariadb, key: mariadb-root-password}}
  - name: POD_IP
    valueFrom: {fieldRef: {fieldPath: status.podIP}}
  - name: MEM
    valueFrom: {resourceFieldRef: {resource: limits.memory}}
"#;

fn container(extra: &str) -> Mapping {
    serde_yaml_ng::from_str(&format!("{ENV}{extra}")).unwrap()
}

fn run(c: &Mapping, argv: &[&str], timeout: u64) -> Result<Converted, String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let ctx = Context {
        container: c,
        name: "db",
        probe: "liveness",
        shares_processes: false,
        timeout,
    };
    convert(&argv, &ctx)
}

fn table(argv: &[&str]) -> String {
    run(&container(""), argv, 5)
        .unwrap_or_else(|e| panic!("{argv:?} kept: {e}"))
        .table()
}

fn sh(script: &str) -> String {
    table(&["/bin/sh", "-c", script])
}

fn kept(argv: &[&str]) -> String {
    match run(&container(""), argv, 5) {
        Ok(c) => panic!("{argv:?} converted to {}", c.table()),
        Err(why) => why,
    }
}

fn kept_sh(script: &str) -> String {
    kept(&["sh", "-c", script])
}

#[test]
fn pg_isready_as_charts_write_it() {
    assert_eq!(
        sh(r#"exec pg_isready -U "postgres" -d "dbname=postgres" -h 127.0.0.1 -p 5432"#),
        r#"postgres = { host = "127.0.0.1", user = "postgres", dbname = "postgres", connect_timeout = "3s" }"#
    );
    assert_eq!(
        table(&["pg_isready", "-h", "localhost", "-U", "$(POSTGRES_USER)"]),
        r#"postgres = { host = "localhost", user = "app", connect_timeout = "3s" }"#
    );
    assert_eq!(
        sh(r#"pg_isready -U "$POSTGRES_USER" -d "$POSTGRES_DB" -h 127.0.0.1 -p 5433 -t 1"#),
        r#"postgres = { host = "127.0.0.1", port = 5433, user = "app", dbname = "shop", connect_timeout = "1s" }"#
    );
    // The tool's 3 s limit never acts under a 1 s probe; -t 0 is none.
    let c = container("");
    assert_eq!(
        run(&c, &["pg_isready", "-h", "127.0.0.1"], 1).unwrap().table(),
        r#"postgres = { host = "127.0.0.1" }"#
    );
    assert_eq!(
        table(&["pg_isready", "--host=127.0.0.1", "--timeout=0", "-q"]),
        r#"postgres = { host = "127.0.0.1" }"#
    );
    // The pod's IP from the downward API, copied by reference.
    let c = run(
        &container(""),
        &["sh", "-c", "pg_isready -h $POD_IP -U postgres"],
        5,
    )
    .unwrap();
    assert!(c.table().contains(r#"host = "${POD_IP}""#), "{}", c.table());
    assert_eq!(c.env.len(), 1);
    assert_eq!(
        c.env[0].1["valueFrom"]["fieldRef"]["fieldPath"],
        Value::from("status.podIP")
    );
    // PGUSER and PGHOST of the container are the tool's defaults.
    let c = container("\n  - {name: PGHOST, value: 127.0.0.1}\n  - {name: PGUSER, value: web}");
    assert_eq!(
        run(&c, &["pg_isready"], 1).unwrap().table(),
        r#"postgres = { host = "127.0.0.1", user = "web" }"#
    );
}

#[test]
fn pg_isready_without_a_host_or_with_a_socket_stays() {
    assert!(kept(&["pg_isready", "-U", "postgres"]).contains("Unix socket"));
    assert!(kept(&["pg_isready", "-h", "/var/run/postgresql"]).contains("Unix socket"));
    assert!(kept(&["pg_isready", "-h", "127.0.0.1", "--version"]).contains("--version"));
    assert!(kept(&["pg_isready", "-h", "127.0.0.1", "-d", "postgresql://x@y/z"]).contains("URI"));
    assert!(kept(&["pg_isready", "-h", "127.0.0.1", "-d", "dbname=x service=y"]).contains("service"));
    let c = container("\n  - {name: PGSERVICE, value: x}");
    assert!(
        run(&c, &["pg_isready", "-h", "x"], 1)
            .unwrap_err()
            .contains("PGSERVICE")
    );
}

#[test]
fn psql_logs_in_with_the_password_by_reference() {
    let c = container("\n  - name: PGPASSWORD\n    valueFrom: {secretKeyRef: {name: db, key: password}}");
    let out = run(
        &c,
        &[
            "sh",
            "-c",
            r#"psql -w -U "$POSTGRES_USER" -d "$POSTGRES_DB" -h 127.0.0.1 -c 'SELECT 1'"#,
        ],
        5,
    )
    .unwrap();
    assert_eq!(
        out.table(),
        r#"postgres = { host = "127.0.0.1", user = "app", dbname = "shop", password_env = "PGPASSWORD", query = "SELECT 1" }"#
    );
    assert_eq!(
        out.env[0].1["valueFrom"]["secretKeyRef"]["key"],
        Value::from("password")
    );
    // Positional database and user, as psql takes them.
    assert_eq!(
        table(&["psql", "-h", "127.0.0.1", "-tAc", "select 1", "shop", "app"]),
        r#"postgres = { host = "127.0.0.1", user = "app", dbname = "shop", query = "select 1" }"#
    );
    assert!(kept(&["psql", "-h", "127.0.0.1"]).contains("stdin"));
    assert!(kept(&["psql", "-h", "127.0.0.1", "-c", "SELECT 1"]).contains("OS user"));
    assert!(kept(&["psql", "-h", "127.0.0.1", "-c", "\\l"]).contains("not an SQL"));
    assert!(kept(&["psql", "-h", "127.0.0.1", "-f", "/check.sql"]).contains("-f"));
}

#[test]
fn redis_cli_ping_in_its_forms() {
    assert_eq!(table(&["redis-cli", "ping"]), r#"redis = { expect = "reply" }"#);
    assert_eq!(super::toml_str("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    assert_eq!(sh("redis-cli ping"), r#"redis = { expect = "reply" }"#);
    assert_eq!(sh("redis-cli PING | grep PONG"), r#"redis = { expect = "pong" }"#);
    assert_eq!(
        sh(r#"redis-cli -h localhost -p $PORT ping | grep -q PONG"#),
        r#"redis = { host = "localhost", port = 6380, expect = "pong" }"#
    );
    assert_eq!(
        sh(r#"redis-cli -a "$REDIS_PASSWORD" --no-auth-warning ping | grep -qw '^PONG$'"#),
        r#"redis = { password_env = "REDIS_PASSWORD", expect = "pong" }"#
    );
    assert_eq!(
        sh(r#"timeout 1 redis-cli -h 127.0.0.1 -a $REDIS_PASSWORD -e ping"#),
        r#"redis = { host = "127.0.0.1", password_env = "REDIS_PASSWORD", expect = "pong" }"#
    );
    let c = run(&container(""), &["redis-cli", "-a", "s3cret", "ping"], 5).unwrap();
    assert_eq!(
        c.table(),
        r#"redis = { password_env = "HEALTHPROXY_DB_LIVENESS_PASSWORD", expect = "reply" }"#
    );
    assert_eq!(
        c.env[0].1["value"],
        Value::from("s3cret"),
        "in the pod spec, as it was"
    );
    let c = container("\n  - name: REDISCLI_AUTH\n    valueFrom: {secretKeyRef: {name: r, key: p}}");
    assert_eq!(
        run(&c, &["redis-cli", "ping"], 5).unwrap().table(),
        r#"redis = { password_env = "REDISCLI_AUTH", expect = "reply" }"#
    );
    assert_eq!(
        sh("redis-cli --tls --insecure --user probe --pass $REDIS_PASSWORD ping"),
        r#"redis = { user = "probe", password_env = "REDIS_PASSWORD", tls = true, insecure_skip_verify = true, expect = "reply" }"#
    );
}

#[test]
fn redis_cli_forms_that_stay() {
    assert!(kept_sh("redis-cli -s /tmp/redis.sock ping").contains("-s"));
    // redis-cli compares whole words: these fail it, whatever the server.
    for script in [
        "redis-cli -h127.0.0.1 ping",
        "redis-cli -ec ping",
        "redis-cli --user=u -a p ping",
    ] {
        assert!(kept_sh(script).contains("a word of its own"), "{script}");
    }
    assert!(kept_sh("redis-cli ping | grep LOADING").contains("grep"));
    assert!(kept_sh("redis-cli -n 1 ping").contains("-n 1"));
    assert!(kept_sh("redis-cli info replication").contains("only PING"));
    assert!(kept_sh("redis-cli --tls --cacert /certs/ca.crt ping").contains("--cacert"));
    assert!(kept_sh("redis-cli --tls ping").contains("CA"));
    assert!(kept_sh(r#"[ "$(redis-cli ping)" = "PONG" ]"#).contains("substitution"));
    assert!(kept_sh("redis-cli -h $(hostname) ping").contains("substitution"));
    assert!(kept_sh("redis-cli ping && redis-cli info").contains("&&"));
    assert!(kept_sh("/health/ping_liveness_local.sh 5").contains("ping_liveness_local.sh"));
    assert!(kept(&["redis-cli", "-a", "$(REDIS_PASSWORD)", "ping"]).contains("empty string"));
    assert!(kept_sh("redis-cli -a $UNKNOWN ping").contains("$UNKNOWN is not in the container's env"));
    assert!(kept_sh("redis-cli -h $SPACED ping").contains("unquoted"));
}

#[test]
fn mysqladmin_and_mysql_as_charts_write_them() {
    assert_eq!(
        sh(r#"mysqladmin status -uroot -p"${MYSQL_ROOT_PASSWORD}" -h 127.0.0.1"#),
        r#"mysql = { user = "root", password_env = "MYSQL_ROOT_PASSWORD", command = "status" }"#
    );
    assert_eq!(
        table(&[
            "mysqladmin",
            "ping",
            "-h",
            "127.0.0.1",
            "-P",
            "3307",
            "--skip-ssl"
        ]),
        r#"mysql = { port = 3307, skip_ssl = true }"#
    );
    assert_eq!(
        table(&["mariadb-admin", "--protocol=tcp", "-h", "localhost", "ping"]),
        r#"mysql = { host = "localhost" }"#
    );
    assert_eq!(
        sh("mysqladmin -h 127.0.0.1 -uroot -p$MYSQL_ROOT_PASSWORD ping | grep 'mysqld is alive'"),
        r#"mysql = { user = "root", password_env = "MYSQL_ROOT_PASSWORD", command = "status" }"#
    );
    assert_eq!(
        sh(r#"mysql -h 127.0.0.1 -uroot -p"$MYSQL_ROOT_PASSWORD" -e 'SELECT 1'"#),
        r#"mysql = { user = "root", password_env = "MYSQL_ROOT_PASSWORD", command = "query" }"#
    );
    assert_eq!(
        sh(
            r#"mariadb --host=127.0.0.1 --user=root --password="$MYSQL_ROOT_PASSWORD" -N -e "select 1;" mysql"#
        ),
        r#"mysql = { user = "root", password_env = "MYSQL_ROOT_PASSWORD", database = "mysql", command = "query", query = "select 1" }"#
    );
    let c = container("\n  - name: MYSQL_PWD\n    valueFrom: {secretKeyRef: {name: m, key: p}}");
    assert_eq!(
        run(&c, &["mysqladmin", "-h", "127.0.0.1", "-u", "probe", "status"], 5)
            .unwrap()
            .table(),
        r#"mysql = { user = "probe", password_env = "MYSQL_PWD", command = "status" }"#
    );
}

#[test]
fn mysql_forms_that_stay() {
    assert!(kept(&["mysqladmin", "ping"]).contains("Unix socket"));
    assert!(kept(&["mysqladmin", "-h", "localhost", "ping"]).contains("Unix socket"));
    assert!(kept(&["mysqladmin", "-S", "/run/mysqld/mysqld.sock", "ping"]).contains("socket"));
    assert!(kept(&["mysqladmin", "-h", "127.0.0.1", "-p", "ping"]).contains("terminal"));
    assert!(kept(&["mysqladmin", "-h", "127.0.0.1", "processlist"]).contains("only ping and status"));
    assert!(
        kept(&[
            "mysqladmin",
            "--defaults-file=/etc/my.cnf",
            "-h",
            "127.0.0.1",
            "ping"
        ])
        .contains("defaults-file")
    );
    assert!(kept(&["mysql", "-h", "127.0.0.1"]).contains("stdin"));
    assert!(kept(&["mysql", "-h", "127.0.0.1", "-e", "SELECT 1"]).contains("OS user"));
    assert!(kept(&["mysqladmin", "-h", "127.0.0.1", "status"]).contains("OS user"));
    // `ping | grep alive` needs the login too.
    assert!(kept_sh("mysqladmin -h 127.0.0.1 ping | grep 'mysqld is alive'").contains("OS user"));
    assert!(kept_sh("mysqladmin -h 127.0.0.1 -uroot -p\"$NONE\" ping").contains("terminal"));
    let script = "password_aux=\"${MARIADB_ROOT_PASSWORD:-}\"\nif [[ -f \"${MARIADB_ROOT_PASSWORD_FILE:-}\" ]]; then\n  password_aux=$(cat \"$MARIADB_ROOT_PASSWORD_FILE\")\nfi\nmysqladmin status -uroot -p\"${password_aux}\"\n";
    let why = kept(&["/bin/bash", "-ec", script]);
    assert!(why.contains("in the bash -c script"), "{why}");
}

#[test]
fn the_kubelets_expansion_is_its_own() {
    // `$$` escapes, unknown names stay, static values only.
    assert_eq!(
        table(&["redis-cli", "-p", "$(PORT)", "ping"]),
        r#"redis = { port = 6380, expect = "reply" }"#
    );
    assert!(kept(&["redis-cli", "-p", "$(NOPE)", "ping"]).contains("$(NOPE)"));
    assert!(kept(&["redis-cli", "-p", "$$(PORT)", "ping"]).contains("$(PORT)"));
    assert_eq!(
        sh("redis-cli -p $(PORT) ping"),
        r#"redis = { port = 6380, expect = "reply" }"#,
        "expanded by the kubelet before the shell sees it"
    );
    assert!(kept_sh("redis-cli -p $$(PORT) ping").contains("substitution"));
}

#[test]
fn a_resource_field_names_the_app_container_in_the_sidecar() {
    let c = run(&container(""), &["sh", "-c", "redis-cli -a \"$MEM\" ping"], 5).unwrap();
    assert_eq!(
        c.env[0].1["valueFrom"]["resourceFieldRef"]["containerName"],
        Value::from("db")
    );
}

#[test]
fn timeout_bounds_the_check() {
    let c = run(&container(""), &["timeout", "2", "redis-cli", "ping"], 5).unwrap();
    assert_eq!(c.timeout, Some(2));
    let c = run(&container(""), &["sh", "-c", "exec timeout 3s redis-cli ping"], 5).unwrap();
    assert_eq!(c.timeout, Some(3));
    assert!(kept(&["timeout", "0.5", "redis-cli", "ping"]).contains("timeout"));
}

#[test]
fn the_shells_options_come_before_the_script() {
    assert_eq!(
        table(&[
            "/bin/sh",
            "-c",
            "-e",
            "exec pg_isready -U postgres -h 127.0.0.1 -p 5432"
        ]),
        r#"postgres = { host = "127.0.0.1", user = "postgres", connect_timeout = "3s" }"#
    );
    assert_eq!(
        table(&["bash", "-ec", "redis-cli ping"]),
        r#"redis = { expect = "reply" }"#
    );
    assert!(kept(&["sh", "/probe.sh"]).contains("script file /probe.sh"));
    assert!(kept(&["bash", "-o", "pipefail", "-c", "redis-cli ping"]).contains("-o"));
    // Bitnami's readiness: pg_isready, then a file test on the next line.
    let script = "exec pg_isready -U \"postgres\" -h 127.0.0.1 -p 5432\n[ -f /opt/bitnami/postgresql/tmp/.initialized ] || [ -f /bitnami/postgresql/.initialized ]\n";
    assert!(kept(&["/bin/sh", "-c", "-e", script]).contains("several commands"));
}

#[test]
fn curl_and_wget_give_the_http_check_their_verdicts() {
    assert_eq!(
        table(&["curl", "-f", "http://localhost:8080/healthz"]),
        r#"http = { host = "localhost", port = 8080, path = "/healthz", follow_redirects = false }"#
    );
    assert_eq!(
        sh("curl -fsSL http://127.0.0.1:9000/minio/health/live >/dev/null 2>&1"),
        r#"http = { port = 9000, path = "/minio/health/live" }"#
    );
    assert_eq!(
        sh("curl -s -o /dev/null http://127.0.0.1:8080/"),
        r#"http = { port = 8080, path = "/", expect_status = ["100-599"], follow_redirects = false }"#
    );
    assert_eq!(
        sh(
            r#"curl -sf -H "Accept: application/json" --max-time 3 http://localhost:$PORT/actuator/health | grep UP"#
        ),
        r#"http = { host = "localhost", port = 6380, path = "/actuator/health", headers = { "Accept" = "application/json" }, follow_redirects = false, body_contains = "UP" }"#
    );
    let c = run(
        &container(""),
        &[
            "sh",
            "-c",
            "curl -fk -H \"X-Token: $REDIS_PASSWORD\" \"https://$POD_IP:8443/ready?full=1\"",
        ],
        5,
    )
    .unwrap();
    assert_eq!(
        c.table(),
        r#"http = { scheme = "https", host = "${POD_IP}", port = 8443, path = "/ready?full=1", header_env = { "X-Token" = "REDIS_PASSWORD" }, insecure_skip_verify = true, follow_redirects = false }"#
    );
    assert_eq!(
        run(
            &container(""),
            &["curl", "--max-time", "2", "-f", "localhost:80"],
            5
        )
        .unwrap()
        .timeout,
        Some(2)
    );
    assert_eq!(
        sh("wget -q -O- http://localhost:8080/health | grep -q ok"),
        r#"http = { host = "localhost", port = 8080, path = "/health", body_contains = "ok" }"#
    );
    assert_eq!(
        table(&[
            "wget",
            "-q",
            "-T",
            "2",
            "-O",
            "/dev/null",
            "http://127.0.0.1:3000/api/health"
        ]),
        r#"http = { port = 3000, path = "/api/health" }"#
    );
}

#[test]
fn curl_and_wget_forms_that_stay() {
    assert!(kept(&["curl", "-f", "https://localhost:8443/"]).contains("CA certificates"));
    assert!(kept(&["curl", "-u", "a:b", "http://localhost/"]).contains("-u"));
    assert!(kept(&["curl", "--cacert", "/ca.pem", "https://localhost/"]).contains("--cacert"));
    assert!(kept(&["curl", "-f", "http://user:pw@localhost/"]).contains("credentials"));
    assert!(kept_sh("curl -s -o /dev/null -w '%{http_code}' http://localhost/ | grep 200").contains("-w"));
    assert!(kept_sh("curl -s http://localhost/ | grep -E 'UP|OK'").contains("plain text"));
    assert!(kept(&["curl", "--unix-socket", "/run/app.sock", "http://x/"]).contains("--unix-socket"));
    assert!(kept(&["wget", "http://localhost/"]).contains("file in the app's filesystem"));
    assert!(kept(&["wget", "--spider", "http://localhost/"]).contains("HEAD"));
    assert!(kept(&["curl", "-f", "ftp://localhost/"]).contains("not http"));
}

#[test]
fn grpc_health_probe_and_nc_z() {
    assert_eq!(
        table(&["/bin/grpc_health_probe", "-addr=:50051"]),
        r#"grpc = { port = 50051 }"#
    );
    let c = run(
        &container(""),
        &[
            "grpc_health_probe",
            "-addr",
            "localhost:9090",
            "-service=shop.Cart",
            "-rpc-timeout=5s",
        ],
        10,
    )
    .unwrap();
    assert_eq!(
        c.table(),
        r#"grpc = { host = "localhost", port = 9090, service = "shop.Cart" }"#
    );
    assert_eq!(c.timeout, Some(6));
    assert_eq!(
        table(&[
            "grpc_health_probe",
            "-addr=127.0.0.1:8443",
            "-tls",
            "-tls-no-verify",
            "-tls-server-name=api"
        ]),
        r#"grpc = { port = 8443, tls = true, insecure_skip_verify = true, server_name = "api" }"#
    );
    assert!(kept(&["grpc_health_probe", "-addr=:1", "-tls", "-tls-ca-cert=/ca.pem"]).contains("tls-ca-cert"));
    assert!(kept(&["grpc_health_probe", "-addr=:1", "-tls"]).contains("CA"));
    assert!(kept(&["grpc_health_probe", "-addr=:1", "-spiffe"]).contains("spiffe"));
    assert_eq!(
        table(&["nc", "-z", "localhost", "5672"]),
        r#"tcp = { host = "localhost", port = 5672 }"#
    );
    assert_eq!(sh("nc -zv -w 2 127.0.0.1 9092"), r#"tcp = { port = 9092 }"#);
    assert!(kept(&["nc", "-z", "localhost", "1-100"]).contains("not a port"));
}

#[test]
fn zookeeper_ruok_in_both_forms() {
    assert_eq!(
        sh("echo ruok | nc 127.0.0.1 2181 | grep imok"),
        r#"dialogue = { port = 2181, steps = [{ send = "ruok\n" }, { expect = "(?m)imok" }] }"#
    );
    assert_eq!(
        sh(r#"[ "$(echo ruok | nc 127.0.0.1 2181)" = "imok" ]"#),
        r#"dialogue = { port = 2181, steps = [{ send = "ruok\n" }, { expect = "^imok\\n*$" }] }"#
    );
    assert_eq!(
        sh(r#"test "$(printf ruok | nc localhost $PORT)" == imok"#),
        r#"dialogue = { host = "localhost", port = 6380, steps = [{ send = "ruok" }, { expect = "^imok\\n*$" }] }"#
    );
    assert_eq!(
        sh("echo stats | nc -q 1 127.0.0.1 11211 | grep -q '^STAT uptime'"),
        r#"dialogue = { port = 11211, steps = [{ send = "stats\n" }, { expect = "(?m)^STAT uptime" }] }"#
    );
    assert!(kept_sh("echo stats | nc 127.0.0.1 11211 | grep -q uptime").contains("close"));
    assert!(kept_sh("echo ruok | nc 127.0.0.1 2181").contains("pipeline"));
    assert!(kept_sh(r#"[ "$(echo ruok | nc 127.0.0.1 2181)" != "imok" ]"#).contains("!="));
}

#[test]
fn pgrep_only_where_the_processes_are_seen() {
    let c = container("");
    let ctx = Context {
        container: &c,
        name: "db",
        probe: "liveness",
        shares_processes: true,
        timeout: 1,
    };
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        convert(&argv(&["pgrep", "-f", "celery.*worker"]), &ctx)
            .unwrap()
            .table(),
        r#"process = { pattern = "celery.*worker" }"#
    );
    assert_eq!(
        convert(&argv(&["sh", "-c", "exec pgrep -fx 'java -jar app.jar'"]), &ctx)
            .unwrap()
            .table(),
        r#"process = { pattern = "^(?:java -jar app.jar)$" }"#
    );
    assert_eq!(
        convert(&argv(&["bash", "-c", "pgrep -f celery"]), &ctx)
            .unwrap()
            .kind,
        "process",
        "bash execs a lone command"
    );
    // The shell or timeout stays, its command line holding the pattern:
    // pgrep finds it and the probe always passes.
    for a in [
        &["sh", "-c", "pgrep -f celery"][..],
        &["bash", "-c", "pgrep -f celery >/dev/null"],
        &["bash", "-c", "exec pgrep -f celery | grep -q 1"],
        &["timeout", "2", "pgrep", "-f", "celery"],
        &["sh", "-c", "exec timeout 2 pgrep -f celery"],
    ] {
        let why = convert(&argv(a), &ctx).unwrap_err();
        assert!(why.contains("always passes"), "{a:?}: {why}");
    }
    assert_eq!(
        convert(&argv(&["sh", "-c", "exec pgrep -f celery >/dev/null"]), &ctx)
            .unwrap()
            .kind,
        "process"
    );
    assert!(
        convert(&argv(&["pgrep", "nginx"]), &ctx)
            .unwrap_err()
            .contains("without -f")
    );
    assert!(
        convert(&argv(&["pgrep", "-u", "app", "-f", "x"]), &ctx)
            .unwrap_err()
            .contains("-u")
    );
    assert!(kept(&["pgrep", "-f", "celery"]).contains("shareProcessNamespace"));
}

/// Command lines as the survey's charts write them, each with what it
/// becomes: the check's kind, or a part of the reason it stays.
#[test]
fn command_lines_from_real_charts() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["sh", "-c", "redis-cli -h $(hostname) ping"],
            "kept: $(hostname)",
        ),
        (&["sh", "-c", "redis-cli -a $REDIS_PASSWORD ping"], "redis"),
        (&["sh", "-c", "redis-cli -p 26379 ping"], "redis"),
        (
            &["/bin/sh", "-c", "test \"$(redis-cli ping)\" = PONG"],
            "kept: $(redis-cli ping)",
        ),
        (
            &[
                "sh",
                "-c",
                "redis-cli -a \"${REDIS_PASSWORD}\" ping | grep -E '^(PONG|LOADING)'",
            ],
            "kept: only grep PONG",
        ),
        (&["mysqladmin", "ping", "-h", "localhost"], "kept: Unix socket"),
        (
            &["sh", "-c", "mysqladmin ping -u root -p${MYSQL_ROOT_PASSWORD}"],
            "kept: Unix socket",
        ),
        (
            &[
                "bash",
                "-c",
                "mysql -h 127.0.0.1 -u root -p$MYSQL_ROOT_PASSWORD -e \"SELECT 1\"",
            ],
            "mysql",
        ),
        (
            &[
                "sh",
                "-c",
                "mysqladmin -h 127.0.0.1 -uroot -p\"$MYSQL_ROOT_PASSWORD\" ping",
            ],
            "mysql",
        ),
        (&["pg_isready", "-U", "postgres"], "kept: Unix socket"),
        (
            &["sh", "-c", "pg_isready -h localhost -U $POSTGRES_USER"],
            "postgres",
        ),
        (&["sh", "-c", "exec pg_isready --host $POD_IP"], "postgres"),
        (
            &[
                "psql",
                "-w",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-h",
                "127.0.0.1",
                "-c",
                "SELECT 1",
            ],
            "postgres",
        ),
        (
            &["sh", "-c", "psql -U postgres -c 'SELECT 1'"],
            "kept: Unix socket",
        ),
        (
            &["/bin/sh", "-c", "echo ruok | nc localhost 2181 | grep imok"],
            "dialogue",
        ),
        (
            &["sh", "-c", "echo mntr | nc localhost 2181 | grep zk_server_state"],
            "dialogue",
        ),
        (&["grpc_health_probe", "-addr=localhost:50051"], "grpc"),
        (
            &["/bin/grpc_health_probe", "-addr=:8080", "-tls", "-tls-no-verify"],
            "grpc",
        ),
        (&["curl", "-f", "http://localhost:8080/health"], "http"),
        (
            &[
                "sh",
                "-c",
                "curl --fail http://localhost:9200/_cluster/health?local=true",
            ],
            "http",
        ),
        (
            &["sh", "-c", "curl -s -k https://localhost:9200 -u elastic:$PW"],
            "kept: -u",
        ),
        (
            &["sh", "-c", "wget -O /dev/null -q http://localhost:8080/ping"],
            "http",
        ),
        (&["nc", "-z", "localhost", "6379"], "tcp"),
        (&["celery", "inspect", "ping"], "kept: celery"),
        (&["cat", "/tmp/healthy"], "kept: cat"),
        (&["pgrep", "-f", "gunicorn"], "kept: shareProcessNamespace"),
        (
            &["sh", "-c", "ps aux | grep -v grep | grep java"],
            "kept: the pipeline ps | grep | grep",
        ),
        (
            &["redis-cli", "--tls", "--cacert", "/tls/ca.crt", "ping"],
            "kept: --cacert",
        ),
        (
            &["sh", "-c", "exec /usr/local/bin/docker-healthcheck"],
            "kept: docker-healthcheck",
        ),
        (
            &["rabbitmq-diagnostics", "-q", "check_running"],
            "kept: rabbitmq-diagnostics",
        ),
        (
            &["/bin/sh", "-c", "nodetool status | grep -E \"^UN\\s+${POD_IP}\""],
            "kept: nodetool",
        ),
        (&["sh", "-c", "ls *.pid"], "kept: the pattern"),
    ];
    let env = container(
        "\n  - name: PW\n    valueFrom: {secretKeyRef: {name: e, key: p}}\n  - name: POSTGRES_USER2\n    value: x",
    );
    for (argv, expected) in cases {
        let got = run(&env, argv, 5);
        match (expected.strip_prefix("kept: "), got) {
            (Some(part), Err(why)) => assert!(why.contains(part), "{argv:?}: {why}"),
            (None, Ok(c)) => assert_eq!(c.kind, *expected, "{argv:?}"),
            (_, got) => panic!("{argv:?}: {got:?}, expected {expected}"),
        }
    }
}
