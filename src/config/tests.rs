use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Parses `text`; one without a check gets one at its end (a file
/// without checks is refused, see `an_empty_config_is_refused_unless_allowed`),
/// which moves no line of an error.
fn parse(text: &str) -> Result<Config, ConfigErrors> {
    if text.contains("[[check]]") || text.contains("allow_empty") {
        return Config::from_toml_str(text, "t.toml", &no_env);
    }
    let filled =
        format!("{text}\n[[check]]\nname = \"filler\"\nprobes = [\"liveness\"]\ntcp = {{ port = 1 }}\n");
    Config::from_toml_str(&filled, "t.toml", &no_env)
}

fn errors(text: &str) -> Vec<ConfigError> {
    parse(text).expect_err("config should be rejected").errors
}

const WEB: &str = "[[check]]\nname = \"web\"\nprobes = [\"readiness\"]\ntcp = { port = 8080 }\n";

#[test]
fn minimal_check_gets_kubelet_defaults() {
    let c = parse(WEB).unwrap();
    assert_eq!(c.checks[0].timing, Timing::default());
    assert_eq!(c.checks[0].timing.period, Duration::from_secs(10));
    assert_eq!(c.checks[0].timing.timeout, Duration::from_secs(1));
    assert_eq!(c.checks[0].timing.failure_threshold, 3);
    assert!(c.checks[0].critical);
    assert_eq!(c.listen, "[::]:9775".parse().unwrap());
    assert_eq!(c.listen.port(), DEFAULT_PORT);
    assert_eq!(c.drain.min, Duration::from_secs(5));
    match &c.checks[0].kind {
        CheckKind::Tcp(t) => assert_eq!(t.host.name, "127.0.0.1"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn durations_take_units() {
    let c = parse(&format!(
        "{WEB}period = \"500ms\"\ntimeout = \"200ms\"\ninitial_delay = \"1m30s\"\n"
    ))
    .unwrap();
    let t = c.checks[0].timing;
    assert_eq!(t.period, Duration::from_millis(500));
    assert_eq!(t.timeout, Duration::from_millis(200));
    assert_eq!(t.initial_delay, Duration::from_secs(90));
}

#[test]
fn parse_duration_without_unit_or_with_space_is_invalid() {
    for bad in ["5", "", "1 s", "-1s", "fast"] {
        let e = errors(&format!("{WEB}period = \"{bad}\"\n"));
        assert!(e[0].message.contains("invalid duration"), "{bad}: {e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), ("period", 5), "{bad}");
    }
}

#[test]
fn unknown_key_is_named_with_line_and_column() {
    let e = errors(&format!("{WEB}perod = \"2s\"\n"));
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].line, e[0].column), (5, 1));
    assert_eq!(e[0].key, "perod");
    assert!(e[0].message.contains("unknown field `perod`"), "{e:?}");
}

#[test]
fn unknown_key_inside_a_handler_is_rejected() {
    let e = errors("[[check]]\nname = \"a\"\nprobes = [\"liveness\"]\nhttp = { port = 1, pth = \"/\" }\n");
    assert_eq!((e[0].key.as_str(), e[0].line), ("pth", 4));
    assert!(e[0].message.contains("pth"), "{e:?}");
}

#[test]
fn period_below_100ms_is_rejected_at_its_line() {
    let e = errors(&format!("{WEB}period = \"50ms\"\n"));
    assert_eq!(e[0].key, "check[0].period");
    assert_eq!((e[0].line, e[0].column), (5, 10));
    assert!(e[0].message.contains("100ms"));
}

#[test]
fn exactly_one_handler() {
    let none = errors("[[check]]\nname = \"a\"\nprobes = [\"liveness\"]\n");
    assert!(
        none[0].message.contains("must specify a handler type"),
        "{none:?}"
    );
    let two = errors(&format!("{WEB}file = {{ path = \"/x\", max_age = \"1s\" }}\n"));
    assert_eq!(two[0].key, "check[0].file");
    assert!(
        two[0]
            .message
            .contains("may not specify more than 1 handler type")
    );
}

#[test]
fn names_must_be_unique_and_lowercase() {
    let dup = errors(&format!("{WEB}{WEB}"));
    assert_eq!(dup[0].key, "check[1].name");
    assert_eq!(dup[0].line, 6);
    assert!(dup[0].message.contains("already"));
    let bad = errors("[[check]]\nname = \"Web_1\"\nprobes = [\"liveness\"]\ntcp = { port = 1 }\n");
    assert!(bad[0].message.contains("a-z, 0-9"));
}

#[test]
fn success_threshold_must_be_1_for_liveness_and_startup() {
    let e = errors(
        "[[check]]\nname = \"a\"\nprobes = [\"liveness\"]\ntcp = { port = 1 }\nsuccess_threshold = 2\n",
    );
    assert!(e[0].message.contains("must be 1"));
    let ok = parse(&format!("{WEB}success_threshold = 2\n")).unwrap();
    assert_eq!(ok.checks[0].timing.success_threshold, 2);
}

#[test]
fn zero_thresholds_and_ports_are_rejected() {
    let e = errors(&format!("{WEB}failure_threshold = 0\n"));
    assert!(e[0].message.contains("at least 1"));
    let e = errors("[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\ntcp = { port = 0 }\n");
    assert!(e[0].message.contains("invalid port number: 0"));
    let e = errors("[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\ntcp = { port = 70000 }\n");
    assert_eq!(e[0].line, 4);
}

#[test]
fn every_error_is_reported_at_once_in_file_order() {
    let text =
        format!("{WEB}period = \"1ms\"\n[[check]]\nname = \"BAD\"\nprobes = []\ntcp = {{ port = 1 }}\n");
    let e = errors(&text);
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["check[0].period", "check[1].name", "check[1].probes"]);
}

#[test]
fn errors_display_as_file_line_column_key() {
    let shown = parse(&format!("{WEB}period = \"1ms\"\n"))
        .unwrap_err()
        .to_string();
    assert_eq!(shown, "t.toml:5:10: check[0].period: must be at least 100ms");
}

#[test]
fn host_from_the_environment() {
    let env = |name: &str| (name == "POD_IP").then(|| "10.1.2.3".to_string());
    let c = Config::from_toml_str(
        "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\nhttp = { host = \"${POD_IP}\", port = 80 }\n",
        "t",
        &env,
    )
    .unwrap();
    let CheckKind::Http(h) = &c.checks[0].kind else {
        panic!()
    };
    assert_eq!(h.host.name, "10.1.2.3");
    assert_eq!(h.host.from_env.as_deref(), Some("POD_IP"));
    assert_eq!(h.url(), "http://10.1.2.3:80/");
    let e = errors(
        "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\ntcp = { host = \"${POD_IP}\", port = 80 }\n",
    );
    assert!(e[0].message.contains("POD_IP"), "{e:?}");
}

#[test]
fn ipv6_hosts_get_brackets_in_urls() {
    let c = parse("[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\nhttp = { host = \"::1\", port = 80, path = \"/h?x=1\" }\n")
        .unwrap();
    let CheckKind::Http(h) = &c.checks[0].kind else {
        panic!()
    };
    assert_eq!(h.url(), "http://[::1]:80/h?x=1");
}

#[test]
fn drain_min_may_not_exceed_max() {
    let e = errors("[drain]\nmin = \"30s\"\nmax = \"10s\"\n");
    assert_eq!(e[0].key, "drain.max");
    assert_eq!(e[0].line, 3);
}

#[test]
fn bad_listen_address_is_named() {
    let e = errors("listen = \"9775\"\n");
    assert_eq!(e[0].key, "listen");
    assert_eq!(e[0].line, 1);
}

#[test]
fn broken_toml_names_the_line() {
    let e = errors("[[check]]\nname = \"a\nprobes = []\n");
    assert_eq!(e[0].line, 2);
}

#[test]
fn lints_warn_about_traps_without_failing() {
    let text = "[[check]]\nname = \"remote\"\nprobes = [\"liveness\"]\ntcp = { host = \"db.example\", port = 5432 }\n\
                [[check]]\nname = \"slow\"\nprobes = [\"readiness\"]\ntcp = { port = 1 }\nperiod = \"30s\"\ntimeout = \"30s\"\n\
                [[check]]\nname = \"local\"\nprobes = [\"liveness\"]\ntcp = { host = \"::1\", port = 1 }\n";
    let config = parse(text).unwrap();
    let found = lints(&config);
    let named: Vec<(&str, usize)> = found.iter().map(|l| (l.subject.as_str(), l.line)).collect();
    assert_eq!(
        named,
        [
            ("check \"remote\"", 1),
            ("check \"slow\"", 5),
            ("check \"slow\"", 5),
            ("drain.token_file", 0)
        ],
        "{found:?}"
    );
    assert!(found[0].message.contains("not this pod"));
    assert!(found[1].message.contains("not shorter than period"));
    assert!(found[2].message.contains("in rotation"));
}

#[test]
fn pod_ip_liveness_is_not_remote() {
    let env = |_: &str| Some("10.0.0.7".to_string());
    let config = Config::from_toml_str(
        "[[check]]\nname = \"a\"\nprobes = [\"liveness\"]\ntcp = { host = \"${POD_IP}\", port = 80 }\n",
        "t",
        &env,
    )
    .unwrap();
    assert!(lints(&config).iter().all(|l| l.subject == "drain.token_file"));
}

#[test]
fn lifecycle_endpoints_without_a_token_are_linted() {
    let lints_of = |text: &str| lints(&parse(text).unwrap());
    let without = lints_of("[drain]\nports = [8080]\n");
    assert_eq!(without.len(), 1, "{without:?}");
    assert_eq!(without[0].subject, "drain.token_file");
    assert!(
        without[0].message.contains("loopback clients only"),
        "{without:?}"
    );
    assert!(without[0].message.contains("403"), "{without:?}");
    assert_eq!(
        without[0].to_string(),
        format!(" warning: drain.token_file: {}", without[0].message),
        "no line for a key left out"
    );
    assert!(lints_of("[drain]\ntoken_file = \"/run/token\"\n").is_empty());
}

#[test]
fn exit_when_app_exits_needs_ports() {
    let e = errors("[drain]\nmin = \"1s\"\nexit_when_app_exits = true\n");
    assert_eq!(
        (e[0].key.as_str(), e[0].line, e[0].column),
        ("drain.exit_when_app_exits", 3, 23)
    );
    assert!(
        parse("[drain]\nports = [80]\nexit_when_app_exits = true\n")
            .unwrap()
            .drain
            .exit_when_app_exits
    );
}

#[test]
fn drain_mesh_names_the_proxy_and_its_uid() {
    let mesh = |text: &str| parse(text).unwrap().drain.mesh;
    assert_eq!(mesh(""), Mesh::None);
    assert_eq!(mesh("[drain]\nmesh = \"none\"\n"), Mesh::None);
    assert_eq!(
        mesh("[drain]\nmesh = \"istio\"\n"),
        Mesh::Istio { proxy_uid: 1337 }
    );
    assert_eq!(
        mesh("[drain]\nmesh = \"linkerd\"\n"),
        Mesh::Linkerd { proxy_uid: 2102 }
    );
    assert_eq!(
        mesh("[drain]\nmesh = \"linkerd\"\nmesh_proxy_uid = 4000\n"),
        Mesh::Linkerd { proxy_uid: 4000 }
    );
    let e = errors("[drain]\nmesh = \"consul\"\n");
    assert!(e[0].key.ends_with("mesh") && e[0].line == 2, "{e:?}");
    assert!(e[0].message.contains("istio"), "{}", e[0].message);
    let e = errors("[drain]\nmesh_proxy_uid = 1337\n");
    assert_eq!((e[0].key.as_str(), e[0].line), ("drain.mesh_proxy_uid", 2));
    assert!(e[0].message.contains("needs drain.mesh"), "{}", e[0].message);
    let e = errors("[drain]\nmesh = \"istio\"\nmesh_proxy_uid = 0\n");
    assert_eq!((e[0].key.as_str(), e[0].line), ("drain.mesh_proxy_uid", 3));
}

#[test]
fn server_limits_have_defaults_and_bounds() {
    assert_eq!(parse("").unwrap().server, ServerConfig::default());
    let c = parse("[server]\nheader_read_timeout = \"2s\"\nmax_connections = 64\n").unwrap();
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(c.server.max_connections, 64);
    let e =
        errors("[server]\nidle_timeout = \"10m\"\nmax_connections = 1\nmax_header_bytes = 1024\nbogus = 1\n");
    assert_eq!(e.len(), 4, "the unknown key and every bad value: {e:?}");
    assert_eq!(e[3].key, "bogus");
    let e = errors("[server]\nidle_timeout = \"10m\"\nmax_connections = 1\nmax_header_bytes = 1024\n");
    let keys: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [
            ("server.idle_timeout", 2),
            ("server.max_connections", 3),
            ("server.max_header_bytes", 4)
        ]
    );
}

#[test]
fn durations_longer_than_a_day_are_rejected() {
    let e = errors(&format!("{WEB}period = \"5000000000000000000s\"\n"));
    assert_eq!((e[0].key.as_str(), e[0].line), ("period", 5));
    assert!(e[0].message.contains("longer than a day"), "{e:?}");
    assert!(parse(&format!("{WEB}period = \"24h\"\n")).is_ok());
}

#[test]
fn a_bad_value_inside_an_inline_table_names_its_key() {
    let e = errors(
        "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\nfile = { path = \"/x\", max_age = \"soon\" }\n",
    );
    assert_eq!((e[0].key.as_str(), e[0].line), ("max_age", 4), "{e:?}");
    let e = errors("[[check]]\nname = \"a\"\nprobes = [\"sometimes\"]\ntcp = { port = 1 }\n");
    assert_eq!((e[0].key.as_str(), e[0].line), ("probes", 3), "{e:?}");
}

#[test]
fn one_authority_parser_for_names_ipv4_and_bracketed_ipv6() {
    use crate::config::Host;
    let cases = [
        ("db:5432", Ok(("db", Some("5432")))),
        ("db", Ok(("db", None))),
        ("10.0.0.1:80", Ok(("10.0.0.1", Some("80")))),
        ("[::1]:8080", Ok(("::1", Some("8080")))),
        ("[::1]", Ok(("::1", None))),
        ("[::1", Err("unterminated IPv6 literal")),
        ("[::1]x", Err("junk after the IPv6 literal")),
        (":80", Err("missing host")),
    ];
    for (text, want) in cases {
        let got = Host::split_authority(text);
        assert_eq!(got, want.map_err(String::from), "{text}");
    }
}

#[test]
fn pasted_kubernetes_probe_fields_get_their_name_here_with_the_unit() {
    let e = errors(&format!(
        "{WEB}failureThreshold = 5\nperiodSeconds = 10\ntimeoutSeconds = \"x\"\nhttpGet = {{ port = 1 }}\nterminationGracePeriodSeconds = 3\n"
    ));
    let keys: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [
            ("failureThreshold", 5),
            ("periodSeconds", 6),
            ("timeoutSeconds", 7),
            ("httpGet", 8),
            ("terminationGracePeriodSeconds", 9)
        ],
        "every unknown key at once: {e:?}"
    );
    assert!(
        e[0].message.contains("did you mean `failure_threshold`?"),
        "{e:?}"
    );
    assert!(
        e[1].message
            .contains("did you mean `period`? It takes a duration with its unit: `periodSeconds = 10` is `period = \"10s\"`"),
        "{e:?}"
    );
    assert!(e[2].message.contains("such as `timeout = \"10s\"`"), "{e:?}");
    assert!(e[3].message.contains("did you mean `http`?"), "{e:?}");
    assert!(e[4].message.contains("stays on the pod's probe"), "{e:?}");
}

#[test]
fn camel_case_and_typos_get_the_nearest_key() {
    let e = errors(&format!(
        "[drain]\ntokenFile = \"/t\"\n{WEB}perod = \"2s\"\nhttp_get = 1\n"
    ));
    assert!(e[0].message.contains("did you mean `token_file`?"), "{e:?}");
    assert!(e[1].message.contains("did you mean `period`?"), "{e:?}");
    assert!(!e[2].message.contains("did you mean"), "nothing near: {e:?}");
}

#[test]
fn every_error_of_a_file_is_reported_in_one_run() {
    // An unknown key, a bad value in an inline table, a bad value of a
    // second check, and a validation error after them.
    let text = "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\ntcp = { port = 1, hots = \"x\" }\nperiod = \"5\"\n\
                [[check]]\nname = \"b\"\nprobes = [\"liveness\"]\nhttp = { port = \"web\" }\n\
                [[check]]\nname = \"C\"\nprobes = [\"readiness\"]\ntcp = { port = 1 }\n";
    let e = errors(text);
    let keys: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [("hots", 4), ("period", 5), ("port", 9), ("check[2].name", 11)],
        "{e:?}"
    );
    // A check whose handler was taken out is not also "missing a handler".
    assert!(!e.iter().any(|e| e.key == "check[1].handler"), "{e:?}");
}

#[test]
fn every_syntax_error_is_reported() {
    let e = errors("[[check]]\nname = \"a\nprobes = [\"readiness\"]\n[drain\n");
    assert!(e.len() >= 2, "{e:?}");
    assert_eq!(e[0].line, 2);
}

#[test]
fn gate_names_are_reserved_with_key_and_line() {
    for name in ["drain", "startup", "ping"] {
        let shown = parse(&format!(
            "{WEB}[[check]]\nname = \"{name}\"\nprobes = [\"readiness\"]\ntcp = {{ port = 1 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            shown.starts_with(&format!("t.toml:6:8: check[1].name: \"{name}\" is reserved")),
            "{shown}"
        );
    }
}

#[test]
fn lines_and_columns_count_from_one_past_multibyte_text() {
    let text = format!("# é\n\n{WEB}period = \"1ms\"\n");
    let shown = parse(&text).unwrap_err().to_string();
    assert_eq!(shown, "t.toml:7:10: check[0].period: must be at least 100ms");
    let first = parse("listen = 1\n").unwrap_err().to_string();
    assert!(first.starts_with("t.toml:1:10: listen:"), "{first}");
}

#[test]
fn kubelet_version_sets_every_checks_user_agent_and_a_grpc_check_may_override_it() {
    let text = "kubelet_version = \"1.31\"\n\
                [[check]]\nname = \"h\"\nprobes = [\"readiness\"]\nhttp = { port = 1 }\n\
                [[check]]\nname = \"g\"\nprobes = [\"readiness\"]\ngrpc = { port = 1 }\n\
                [[check]]\nname = \"o\"\nprobes = [\"readiness\"]\ngrpc = { port = 1, user_agent = \"mine/2\" }\n";
    let c = parse(text).unwrap();
    let agents: Vec<&str> = c
        .checks
        .iter()
        .map(|c| match &c.kind {
            CheckKind::Http(h) => h.user_agent.as_str(),
            CheckKind::Grpc(g) => g.user_agent.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(agents, ["kube-probe/1.31", "kube-probe/1.31", "mine/2"]);
    match &parse(
        WEB.replace("tcp = { port = 8080 }", "http = { port = 1 }")
            .as_str(),
    )
    .unwrap()
    .checks[0]
        .kind
    {
        CheckKind::Http(h) => assert_eq!(h.user_agent, "kube-probe/1.36"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_kubelet_version_that_is_not_major_dot_minor_is_rejected() {
    let e = errors(&format!("kubelet_version = \"v1.36\"\n{WEB}"));
    assert_eq!(e[0].key, "kubelet_version");
    assert_eq!(e[0].line, 1);
    assert!(
        e[0].message.contains("\"v1.36\" is not a Kubernetes version"),
        "{e:?}"
    );
}

#[test]
fn a_check_moved_in_the_file_has_the_same_definition_and_an_edited_one_not() {
    let a = parse(&format!("{WEB}period = \"2s\"\n"))
        .unwrap()
        .checks
        .remove(0);
    let moved = parse(&format!("listen = \"[::]:1\"\n\n{WEB}period = \"2s\"\n"))
        .unwrap()
        .checks
        .remove(0);
    assert_ne!(a.line, moved.line);
    assert!(a.same_definition(&moved));
    let edited = parse(&format!("{WEB}period = \"3s\"\n"))
        .unwrap()
        .checks
        .remove(0);
    assert!(!a.same_definition(&edited));
}

#[test]
fn grpc_listen_and_reload_are_validated() {
    let c = parse("grpc_listen = \"[::]:9776\"\n[reload]\nwatch = false\ninterval = \"500ms\"\n").unwrap();
    assert_eq!(c.grpc_listen, Some("[::]:9776".parse().unwrap()));
    assert!(!c.reload.watch);
    assert_eq!(c.reload.interval, Duration::from_millis(500));
    let e = errors("grpc_listen = \"9776\"\n[reload]\ninterval = \"10ms\"\n");
    let keys: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(keys, [("grpc_listen", 1), ("reload.interval", 3)]);
}

fn http(keys: &str) -> String {
    format!("[[check]]\nname = \"web\"\nprobes = [\"readiness\"]\nhttp = {{ port = 8080, {keys} }}\n")
}

fn messages(text: &str) -> Vec<String> {
    errors(text)
        .iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect()
}

#[test]
fn rules_beyond_the_kubelet_are_validated_naming_the_key() {
    let cases = [
        (
            r#"expect_status = [200, "2xx"]"#,
            "check[0].http.expect_status: \"2xx\" is neither",
        ),
        (
            "expect_status = [600]",
            "check[0].http.expect_status: 600 is not an HTTP status",
        ),
        (
            "expect_status = []",
            "check[0].http.expect_status: lists no status",
        ),
        (r#"body_matches = "(ready""#, "check[0].http.body_matches: "),
        (
            r#"body_matches = ".{0,5000}ok""#,
            "check[0].http.body_matches: too costly to match: compiled, it is over 16 KiB",
        ),
        (
            r#"header_matches = { "X-A" = "(?:.{0,1000}){20}z" }"#,
            "check[0].http.header_matches: X-A: too costly to match",
        ),
        (
            r#"header_matches = { "X-A" = "[" }"#,
            "check[0].http.header_matches: ",
        ),
        (
            r#"header_matches = { "X A" = "." }"#,
            "check[0].http.header_matches: \"X A\" is not a valid header name",
        ),
        (
            r#"method = "HEAD", body_matches = "ok""#,
            "check[0].http.method: HEAD reads no body",
        ),
        (
            r#"header_env = { "X-Token" = "UNSET_VAR" }"#,
            "the environment variable UNSET_VAR is not set",
        ),
        (
            r#"headers = { "X-Token" = "a" }, header_files = { "x-token" = "/t" }"#,
            "is set more than once",
        ),
        (
            r#"cert_file = "/c.pem""#,
            "check[0].http.cert_file: only applies to scheme = \"https\"",
        ),
        (
            r#"scheme = "https", cert_file = "/c.pem""#,
            "check[0].http.cert_file: a client certificate needs both cert_file and key_file; key_file is missing",
        ),
        (
            r#"scheme = "https", insecure_skip_verify = false"#,
            "check[0].http.insecure_skip_verify: false needs a ca_file",
        ),
        (
            r#"scheme = "https", insecure_skip_verify = true, ca_file = "/ca.pem""#,
            "check[0].http.insecure_skip_verify: contradicts ca_file",
        ),
        (
            r#"scheme = "https", server_name = "no spaces.example""#,
            "check[0].http.server_name: \"no spaces.example\" is not a DNS name",
        ),
    ];
    for (keys, want) in cases {
        let got = messages(&http(keys));
        assert!(
            got.iter().any(|m| m.contains(want)),
            "{keys}: want {want:?} in {got:?}"
        );
    }
    let grpc =
        "[[check]]\nname = \"g\"\nprobes = [\"readiness\"]\ngrpc = { port = 8081, ca_file = \"/ca.pem\" }\n";
    assert!(
        messages(grpc)
            .iter()
            .any(|m| m == "check[0].grpc.ca_file: only applies with tls = true"),
        "{:?}",
        messages(grpc)
    );
}

#[test]
fn unset_rules_keep_the_kubelets_and_set_ones_are_kept() {
    let c = parse(&http("path = \"/\"")).unwrap();
    let CheckKind::Http(h) = &c.checks[0].kind else {
        unreachable!()
    };
    assert_eq!(h.expect_status, None);
    assert!(h.body_matches.is_none() && h.header_matches.is_empty() && h.secret_headers.is_empty());
    assert!(
        h.tls.insecure_skip_verify,
        "no ca_file: not verified, as the kubelet"
    );

    let env = |name: &str| (name == "PROBE_AUTH").then(|| "Bearer x".to_string());
    let text = http(
        r#"scheme = "https", ca_file = "/ca.pem", expect_status = [401, "200-299"], header_env = { "Authorization" = "PROBE_AUTH" }"#,
    );
    let c = Config::from_toml_str(&text, "t.toml", &env).unwrap();
    let CheckKind::Http(h) = &c.checks[0].kind else {
        unreachable!()
    };
    assert_eq!(h.expect_status.as_ref().unwrap().to_string(), "[401, 200-299]");
    assert!(!h.tls.insecure_skip_verify);
    assert!(
        !format!("{:?}", c).contains("Bearer x"),
        "the value is never shown"
    );
}

#[test]
fn lints_name_patterns_that_match_anything_and_secret_files_anyone_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (key, token) = (dir.path().join("client.key"), dir.path().join("token"));
    for file in [&key, &token] {
        std::fs::write(file, "").unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let text = http(&format!(
        r#"scheme = "https", body_matches = "ready|", body_not_matches = "x*", cert_file = "/c.pem", key_file = {:?}, header_files = {{ "X-Token" = {:?} }}"#,
        key.display().to_string(),
        token.display().to_string()
    ));
    let found: Vec<String> = lints(&parse(&text).unwrap())
        .iter()
        .map(|l| l.message.clone())
        .collect();
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("body_matches \"ready|\" matches the empty string")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("body_not_matches \"x*\" matches the empty string")),
        "{found:?}"
    );
    let readable = |found: &[String], what: &str| {
        found
            .iter()
            .any(|l| l.starts_with(what) && l.contains("is readable by every user"))
    };
    assert!(readable(&found, "key_file "), "{found:?}");
    assert!(readable(&found, "header_files X-Token: "), "{found:?}");

    // Group-readable is how a Secret shared with the app's group is
    // mounted: not a mistake.
    for file in [&key, &token] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let after = lints(&parse(&text).unwrap());
    assert!(!after.iter().any(|l| l.message.contains("readable")), "{after:?}");
}

#[test]
fn an_empty_config_is_refused_unless_allowed() {
    for text in ["", "\n", "# nothing yet\n", "[drain]\nmin = \"1s\"\n"] {
        let e = Config::from_toml_str(text, "t.toml", &no_env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:1:1: check: no [[check]]: every probe would pass whatever the app does; add checks, or set allow_empty = true",
            "{text:?}"
        );
    }
    let c = Config::from_toml_str("allow_empty = true\n", "t.toml", &no_env).unwrap();
    assert_eq!(c.allow_empty, ProbeSet::ALL);
    // Allowing some kinds is not allowing a file without any check.
    let e = Config::from_toml_str("allow_empty = [\"readiness\"]\n", "t.toml", &no_env).unwrap_err();
    assert_eq!(e.errors[0].key, "check");
    let c = parse(&format!("allow_empty = [\"readiness\", \"startup\"]\n{WEB}")).unwrap();
    assert_eq!(
        c.allow_empty,
        ProbeSet {
            startup: true,
            liveness: false,
            readiness: true
        }
    );
    for bad in [
        "allow_empty = \"yes\"",
        "allow_empty = [\"ready\"]",
        "allow_empty = 1",
    ] {
        let e = errors(&format!("{bad}\n{WEB}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "allow_empty");
        assert_eq!(e[0].line, 1);
        assert!(e[0].message.contains("a list of probe kinds"), "{}", e[0].message);
    }
}
