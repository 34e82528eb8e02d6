//! The tables of the protocol checks (`redis`, ...) as written, and their
//! validation; the settings they yield are in `config::native`.

use super::*;

/// `redis = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    user: Option<String>,
    user_env: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    #[serde(default)]
    tls: bool,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    expect: Option<Spanned<String>>,
    #[serde(default)]
    accept_errors: Vec<String>,
}

/// redis-cli's default port.
const REDIS_PORT: u16 = 6379;

/// A host as written, or the loopback address.
fn host_of(
    field: &str,
    h: &Option<Spanned<String>>,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Option<Host> {
    match h {
        None => Some(Host {
            name: DEFAULT_HOST.into(),
            from_env: None,
        }),
        Some(h) => match expand_host(h.get_ref(), env) {
            Ok(host) => Some(host),
            Err(message) => {
                errors.push(at(field), h.span(), message);
                None
            }
        },
    }
}

/// A credential from a literal, a file or an environment variable; at
/// most one of them.
#[allow(clippy::too_many_arguments)]
pub(super) fn credential(
    table: &str,
    name: &str,
    literal: Option<&String>,
    file: Option<&PathBuf>,
    var: Option<&String>,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
    span: &Range<usize>,
    errors: &mut Errors<'_>,
) -> Option<Credential> {
    let given = usize::from(literal.is_some()) + usize::from(file.is_some()) + usize::from(var.is_some());
    if given > 1 {
        errors.push(
            at(&format!("{table}.{name}")),
            span.clone(),
            format!("give {name} one way only: {name}, {name}_file or {name}_env"),
        );
        return None;
    }
    if let Some(value) = literal {
        return Some(Credential::Given(value.clone()));
    }
    if let Some(path) = file {
        return Some(Credential::File(path.clone()));
    }
    let var = var?;
    match env.var(var) {
        Some(value) => Some(Credential::Env {
            var: var.clone(),
            value,
        }),
        None => {
            errors.push(
                at(&format!("{table}.{name}_env")),
                span.clone(),
                format!("the environment variable {var} is not set"),
            );
            None
        }
    }
}

/// A port as written, or `default`.
fn port_of(port: &Option<Spanned<u16>>, default: u16, key: &str, errors: &mut Errors<'_>) -> u16 {
    match port {
        Some(p) => {
            check_port(p, key, errors);
            *p.get_ref()
        }
        None => default,
    }
}

pub(super) fn redis(
    r: &RawRedis,
    span: &Range<usize>,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let before = errors.list.len();
    let host = host_of("redis.host", &r.host, env, at, errors);
    let port = port_of(&r.port, REDIS_PORT, &at("redis.port"), errors);
    let user = credential(
        "redis",
        "user",
        r.user.as_ref(),
        None,
        r.user_env.as_ref(),
        env,
        at,
        span,
        errors,
    );
    let password = credential(
        "redis",
        "password",
        None,
        r.password_file.as_ref(),
        r.password_env.as_ref(),
        env,
        at,
        span,
        errors,
    );
    if user.is_some() && password.is_none() && errors.list.len() == before {
        errors.push(
            at("redis.user"),
            span.clone(),
            "needs a password (password_file or password_env): redis-cli sends AUTH only with one",
        );
    }
    let raw_tls = RawTls {
        ca_file: &r.ca_file,
        cert_file: &r.cert_file,
        key_file: &r.key_file,
        server_name: &r.server_name,
        insecure_skip_verify: r.insecure_skip_verify,
    };
    if !r.tls {
        for key in raw_tls.keys_set() {
            errors.push(
                at(&format!("redis.{key}")),
                span.clone(),
                "only applies with tls = true",
            );
        }
    }
    let tls = raw_tls.validate("redis", at, span, errors);
    let expect = match r.expect.as_ref().map(|e| (e.get_ref().as_str(), e.span())) {
        None | Some(("pong", _)) => RedisExpect::Pong,
        Some(("reply", _)) => RedisExpect::Reply,
        Some((other, span)) => {
            errors.push(
                at("redis.expect"),
                span,
                format!(
                    "{other:?} is neither \"pong\" (the reply must be PONG, as `redis-cli ping | grep -q PONG`) nor \"reply\" (any reply, as bare `redis-cli ping`)"
                ),
            );
            RedisExpect::Pong
        }
    };
    for code in &r.accept_errors {
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            errors.push(
                at("redis.accept_errors"),
                span.clone(),
                format!("{code:?} is not an error code such as \"LOADING\" or \"MASTERDOWN\""),
            );
        }
    }
    if !r.accept_errors.is_empty() && expect == RedisExpect::Reply {
        errors.push(
            at("redis.accept_errors"),
            span.clone(),
            "has no use with expect = \"reply\": every reply passes",
        );
    }
    if errors.list.len() != before {
        return None;
    }
    Some(CheckKind::Redis(Box::new(RedisSpec {
        host: host?,
        port,
        user,
        password,
        tls: if r.tls { Some(tls?) } else { None },
        expect,
        accept_errors: r.accept_errors.clone(),
    })))
}

/// `mysql = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMysql {
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    user: Option<String>,
    user_env: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    database: Option<String>,
    command: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    #[serde(default)]
    skip_ssl: bool,
}

/// The MySQL protocol's default port.
const MYSQL_PORT: u16 = 3306;

pub(super) fn mysql(
    m: &RawMysql,
    span: &Range<usize>,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let before = errors.list.len();
    let host = host_of("mysql.host", &m.host, env, at, errors);
    let port = port_of(&m.port, MYSQL_PORT, &at("mysql.port"), errors);
    let user = credential(
        "mysql",
        "user",
        m.user.as_ref(),
        None,
        m.user_env.as_ref(),
        env,
        at,
        span,
        errors,
    );
    let password = credential(
        "mysql",
        "password",
        None,
        m.password_file.as_ref(),
        m.password_env.as_ref(),
        env,
        at,
        span,
        errors,
    );
    let command = match m.command.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
        None | Some(("ping", _)) => MysqlCommand::Ping,
        Some(("status", _)) => MysqlCommand::Status,
        Some(("query", _)) => MysqlCommand::Query(
            m.query
                .as_ref()
                .map_or_else(|| DEFAULT_QUERY.to_string(), |q| q.get_ref().clone()),
        ),
        Some((other, span)) => {
            errors.push(
                at("mysql.command"),
                span,
                format!(
                    "{other:?} is none of \"ping\" (mysqladmin ping), \"status\" (mysqladmin status), \"query\" (mysql -e QUERY)"
                ),
            );
            MysqlCommand::Ping
        }
    };
    if let Some(q) = &m.query {
        if !matches!(command, MysqlCommand::Query(_)) {
            errors.push(
                at("mysql.query"),
                q.span(),
                "only applies with command = \"query\"",
            );
        } else if q.get_ref().trim().is_empty() || q.get_ref().len() > MAX_QUERY {
            errors.push(
                at("mysql.query"),
                q.span(),
                format!("must be a statement of at most {MAX_QUERY} bytes"),
            );
        }
    }
    if errors.list.len() != before {
        return None;
    }
    Some(CheckKind::Mysql(Box::new(MysqlSpec {
        host: host?,
        port,
        user,
        password,
        database: m.database.clone(),
        command,
        skip_ssl: m.skip_ssl,
    })))
}

/// `mysql -e`'s query when none is written.
const DEFAULT_QUERY: &str = "SELECT 1";

/// The longest query accepted: a health check's statement is short.
const MAX_QUERY: usize = 4096;

/// `dialogue = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDialogue {
    host: Option<Spanned<String>>,
    port: Spanned<u16>,
    #[serde(default)]
    tls: bool,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    steps: Spanned<Vec<RawStep>>,
}

/// One step: exactly one of `send` and `expect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    send: Option<String>,
    expect: Option<String>,
}

/// The most steps a dialogue may have.
const MAX_STEPS: usize = 32;

pub(super) fn dialogue(
    d: &RawDialogue,
    span: &Range<usize>,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let before = errors.list.len();
    let host = host_of("dialogue.host", &d.host, env, at, errors);
    check_port(&d.port, &at("dialogue.port"), errors);
    let raw_tls = RawTls {
        ca_file: &d.ca_file,
        cert_file: &d.cert_file,
        key_file: &d.key_file,
        server_name: &d.server_name,
        insecure_skip_verify: d.insecure_skip_verify,
    };
    if !d.tls {
        for key in raw_tls.keys_set() {
            errors.push(
                at(&format!("dialogue.{key}")),
                span.clone(),
                "only applies with tls = true",
            );
        }
    }
    let tls = raw_tls.validate("dialogue", at, span, errors);
    let mut steps = Vec::new();
    let list = d.steps.get_ref();
    if list.is_empty() || list.len() > MAX_STEPS {
        errors.push(
            at("dialogue.steps"),
            d.steps.span(),
            format!(
                "must list 1 to {MAX_STEPS} steps, each {{ send = \"...\" }} or {{ expect = \"REGEX\" }}"
            ),
        );
    }
    for (i, step) in list.iter().enumerate() {
        match (&step.send, &step.expect) {
            (Some(send), None) if !send.is_empty() => {
                steps.push(DialogueStep::Send(send.clone().into_bytes()))
            }
            (None, Some(expect)) => match Pattern::new(expect) {
                Ok(p) => steps.push(DialogueStep::Expect(p)),
                Err(e) => errors.push(at(&format!("dialogue.steps[{i}].expect")), d.steps.span(), e),
            },
            _ => errors.push(
                at(&format!("dialogue.steps[{i}]")),
                d.steps.span(),
                "must be exactly one of { send = \"...\" } (not empty) and { expect = \"REGEX\" }",
            ),
        }
    }
    if errors.list.len() != before {
        return None;
    }
    Some(CheckKind::Dialogue(Box::new(DialogueSpec {
        host: host?,
        port: *d.port.get_ref(),
        tls: if d.tls { Some(tls?) } else { None },
        steps,
    })))
}

/// `process = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pattern: Spanned<String>,
}

pub(super) fn process(
    p: &RawProcess,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let text = p.pattern.get_ref();
    if text.is_empty() {
        errors.push(
            at("process.pattern"),
            p.pattern.span(),
            "must not be empty: it would match every process",
        );
        return None;
    }
    match Pattern::new(text) {
        Ok(pattern) => Some(CheckKind::Process(Box::new(ProcessSpec { pattern }))),
        Err(e) => {
            errors.push(at("process.pattern"), p.pattern.span(), e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{CheckKind, Config, Credential, RedisExpect};

    fn parse(table: &str) -> Result<Config, String> {
        let text = format!("[[check]]\nname = \"r\"\nprobes = [\"readiness\"]\n{table}\n");
        let env = |var: &str| (var == "REDIS_PASSWORD").then(|| "s3cret".to_string());
        Config::from_toml_str(&text, "test.toml", &env).map_err(|errors| errors.to_string())
    }

    #[test]
    fn redis_defaults_are_redis_clis() {
        let config = parse("redis = {}").unwrap();
        let CheckKind::Redis(r) = &config.checks[0].kind else {
            panic!("a redis check")
        };
        assert_eq!((r.host.name.as_str(), r.port), ("127.0.0.1", 6379));
        assert_eq!(
            (r.expect, r.password.is_none(), r.tls.is_none()),
            (RedisExpect::Pong, true, true)
        );
    }

    #[test]
    fn redis_credentials_come_from_one_place_and_never_show() {
        let config =
            parse("redis = { password_env = \"REDIS_PASSWORD\", user = \"probe\", expect = \"reply\" }")
                .unwrap();
        let CheckKind::Redis(r) = &config.checks[0].kind else {
            panic!("a redis check")
        };
        assert_eq!(r.password.as_ref().unwrap().value().unwrap(), "s3cret");
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(r.user, Some(Credential::Given("probe".into())));
        let both =
            parse("redis = { password_env = \"REDIS_PASSWORD\", password_file = \"/p\" }").unwrap_err();
        assert!(
            both.contains("redis.password") && both.contains("one way only"),
            "{both}"
        );
        let unset = parse("redis = { password_env = \"NOPE\" }").unwrap_err();
        assert!(unset.contains("NOPE is not set"), "{unset}");
        let user_alone = parse("redis = { user = \"probe\" }").unwrap_err();
        assert!(user_alone.contains("needs a password"), "{user_alone}");
    }

    #[test]
    fn redis_rejects_what_it_cannot_mean() {
        let bad = parse("redis = { expect = \"PONG\" }").unwrap_err();
        assert!(
            bad.contains("check[0].redis.expect") && bad.contains("test.toml:4:"),
            "{bad}"
        );
        let bad = parse("redis = { expect = \"reply\", accept_errors = [\"LOADING\"] }").unwrap_err();
        assert!(bad.contains("has no use"), "{bad}");
        let bad = parse("redis = { ca_file = \"/ca.pem\" }").unwrap_err();
        assert!(bad.contains("only applies with tls = true"), "{bad}");
        let bad = parse("redis = { port = 6379 }\ntcp = { port = 1 }").unwrap_err();
        assert!(bad.contains("more than 1 handler"), "{bad}");
    }

    #[test]
    fn mysql_defaults_are_mysqladmin_pings() {
        use crate::config::MysqlCommand;
        let config = parse("mysql = {}").unwrap();
        let CheckKind::Mysql(m) = &config.checks[0].kind else {
            panic!("a mysql check")
        };
        assert_eq!(
            (m.port, &m.command, m.skip_ssl, m.user.is_none()),
            (3306, &MysqlCommand::Ping, false, true)
        );
        let config =
            parse("mysql = { command = \"query\", user = \"probe\", password_env = \"REDIS_PASSWORD\" }")
                .unwrap();
        let CheckKind::Mysql(m) = &config.checks[0].kind else {
            panic!("a mysql check")
        };
        assert_eq!(m.command, MysqlCommand::Query("SELECT 1".into()));
        let bad = parse("mysql = { command = \"pong\" }").unwrap_err();
        assert!(bad.contains("mysql.command"), "{bad}");
        let bad = parse("mysql = { query = \"SELECT 2\" }").unwrap_err();
        assert!(bad.contains("only applies with command = \"query\""), "{bad}");
    }
}
