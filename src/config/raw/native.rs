//! The tables of the protocol checks (`redis`, ...) as written, and their
//! validation; the settings they yield are in `config::native`.

use super::kinds::{ONLY_WITH_TLS, Site, host_of, tls_keys};
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

/// The keys `redis` and `mysql` share, as written: where the server is
/// and who logs in.
struct RawLogin<'a> {
    host: &'a Option<Spanned<String>>,
    port: &'a Option<Spanned<u16>>,
    user: &'a Option<String>,
    user_env: &'a Option<String>,
    password_file: &'a Option<PathBuf>,
    password_env: &'a Option<String>,
}

/// The login keys of table `$t` as a [`RawLogin`].
macro_rules! login_keys {
    ($t:expr) => {
        RawLogin {
            host: &$t.host,
            port: &$t.port,
            user: &$t.user,
            user_env: &$t.user_env,
            password_file: &$t.password_file,
            password_env: &$t.password_env,
        }
    };
}

/// Where the server is and who logs in, each `None` when wrong (and
/// recorded) or, for the credentials, not given.
struct Login {
    host: Option<Host>,
    port: u16,
    user: Option<Credential>,
    password: Option<Credential>,
}

impl RawLogin<'_> {
    fn validate(&self, table: &str, default_port: u16, site: &Site<'_>, errors: &mut Errors<'_>) -> Login {
        let host = host_of(&format!("{table}.host"), self.host, site, errors);
        let port = match self.port {
            Some(p) => {
                check_port(p, &site.at(&format!("{table}.port")), errors);
                *p.get_ref()
            }
            None => default_port,
        };
        let user = credential(
            table,
            "user",
            self.user.as_ref(),
            None,
            self.user_env.as_ref(),
            site,
            errors,
        );
        let password = credential(
            table,
            "password",
            None,
            self.password_file.as_ref(),
            self.password_env.as_ref(),
            site,
            errors,
        );
        Login {
            host,
            port,
            user,
            password,
        }
    }
}

/// A credential from a literal, a file or an environment variable; at
/// most one of them.
pub(super) fn credential(
    table: &str,
    name: &str,
    literal: Option<&String>,
    file: Option<&PathBuf>,
    var: Option<&String>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<Credential> {
    let given = usize::from(literal.is_some()) + usize::from(file.is_some()) + usize::from(var.is_some());
    if given > 1 {
        errors.push(
            site.at(&format!("{table}.{name}")),
            site.span.clone(),
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
    match site.env.var(var) {
        Some(value) => Some(Credential::Env {
            var: var.clone(),
            value,
        }),
        None => {
            errors.push(
                site.at(&format!("{table}.{name}_env")),
                site.span.clone(),
                format!("the environment variable {var} is not set"),
            );
            None
        }
    }
}

pub(super) fn redis(r: &RawRedis, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<CheckKind> {
    let before = errors.list.len();
    let login = login_keys!(r).validate("redis", REDIS_PORT, site, errors);
    if login.user.is_some() && login.password.is_none() && errors.list.len() == before {
        errors.push(
            site.at("redis.user"),
            site.span.clone(),
            "needs a password (password_file or password_env): redis-cli sends AUTH only with one",
        );
    }
    let tls = tls_keys!(r).validate_when(r.tls, ONLY_WITH_TLS, "redis", site, errors);
    let expect = match r.expect.as_ref().map(|e| (e.get_ref().as_str(), e.span())) {
        None | Some(("pong", _)) => RedisExpect::Pong,
        Some(("reply", _)) => RedisExpect::Reply,
        Some((other, span)) => {
            errors.push(
                site.at("redis.expect"),
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
                site.at("redis.accept_errors"),
                site.span.clone(),
                format!("{code:?} is not an error code such as \"LOADING\" or \"MASTERDOWN\""),
            );
        }
    }
    if !r.accept_errors.is_empty() && expect == RedisExpect::Reply {
        errors.push(
            site.at("redis.accept_errors"),
            site.span.clone(),
            "has no use with expect = \"reply\": every reply passes",
        );
    }
    if errors.list.len() != before {
        return None;
    }
    Some(CheckKind::Redis(Box::new(RedisSpec {
        host: login.host?,
        port: login.port,
        user: login.user,
        password: login.password,
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
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    verify_server_cert: bool,
}

/// The MySQL protocol's default port.
const MYSQL_PORT: u16 = 3306;

pub(super) fn mysql(
    m: &RawMysql,
    span: Range<usize>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let before = errors.list.len();
    let login = login_keys!(m).validate("mysql", MYSQL_PORT, site, errors);
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
                site.at("mysql.command"),
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
                site.at("mysql.query"),
                q.span(),
                "only applies with command = \"query\"",
            );
        } else if q.get_ref().trim().is_empty() || q.get_ref().len() > MAX_QUERY {
            errors.push(
                site.at("mysql.query"),
                q.span(),
                format!("must be a statement of at most {MAX_QUERY} bytes"),
            );
        }
    }
    mysql_tls(m, span, site, errors);
    if errors.list.len() != before {
        return None;
    }
    Some(CheckKind::Mysql(Box::new(MysqlSpec {
        host: login.host?,
        port: login.port,
        user: login.user,
        password: login.password,
        database: m.database.clone(),
        command,
        skip_ssl: m.skip_ssl,
        ca_file: m.ca_file.clone(),
        cert_file: m.cert_file.clone(),
        key_file: m.key_file.clone(),
        verify_server_cert: m.verify_server_cert,
    })))
}

/// The TLS keys of `mysql`, each one of the tools' `--ssl-*` flags:
/// none of them goes with `skip_ssl`, a client certificate needs its key,
/// and verifying the server needs a CA bundle (the tools fall back on the
/// system's trust store, which the sidecar's image does not have).
/// Errors point at the `mysql` table, `span`.
fn mysql_tls(m: &RawMysql, span: Range<usize>, site: &Site<'_>, errors: &mut Errors<'_>) {
    let set = [
        ("ca_file", m.ca_file.is_some()),
        ("cert_file", m.cert_file.is_some()),
        ("key_file", m.key_file.is_some()),
        ("verify_server_cert", m.verify_server_cert),
    ];
    if m.skip_ssl {
        for (key, _) in set.iter().filter(|(_, on)| *on) {
            errors.push(
                site.at(&format!("mysql.{key}")),
                span.clone(),
                "contradicts skip_ssl = true: it is a TLS setting",
            );
        }
    }
    if m.cert_file.is_some() != m.key_file.is_some() {
        let (key, other) = if m.cert_file.is_some() {
            ("cert_file", "key_file")
        } else {
            ("key_file", "cert_file")
        };
        errors.push(
            site.at(&format!("mysql.{key}")),
            span.clone(),
            format!("a client certificate needs both cert_file and key_file; {other} is missing"),
        );
    }
    if m.verify_server_cert && m.ca_file.is_none() {
        errors.push(
            site.at("mysql.verify_server_cert"),
            span.clone(),
            "needs a ca_file to verify the server against (there is no system trust store)",
        );
    }
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

pub(super) fn dialogue(d: &RawDialogue, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<CheckKind> {
    let before = errors.list.len();
    let host = host_of("dialogue.host", &d.host, site, errors);
    check_port(&d.port, &site.at("dialogue.port"), errors);
    let tls = tls_keys!(d).validate_when(d.tls, ONLY_WITH_TLS, "dialogue", site, errors);
    let mut steps = Vec::new();
    let list = d.steps.get_ref();
    if list.is_empty() || list.len() > MAX_STEPS {
        errors.push(
            site.at("dialogue.steps"),
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
                Err(e) => errors.push(site.at(&format!("dialogue.steps[{i}].expect")), d.steps.span(), e),
            },
            _ => errors.push(
                site.at(&format!("dialogue.steps[{i}]")),
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

pub(super) fn process(p: &RawProcess, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<CheckKind> {
    let text = p.pattern.get_ref();
    if text.is_empty() {
        errors.push(
            site.at("process.pattern"),
            p.pattern.span(),
            "must not be empty: it would match every process",
        );
        return None;
    }
    match Pattern::new(text) {
        Ok(pattern) => Some(CheckKind::Process(Box::new(ProcessSpec { pattern }))),
        Err(e) => {
            errors.push(site.at("process.pattern"), p.pattern.span(), e);
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

    #[test]
    fn mysql_tls_keys_are_the_tools_ssl_flags() {
        let config = parse("mysql = { ca_file = \"/ca.pem\", verify_server_cert = true }").unwrap();
        let CheckKind::Mysql(m) = &config.checks[0].kind else {
            panic!("a mysql check")
        };
        assert_eq!(
            (m.ca_file.as_deref(), m.verify_server_cert, m.skip_ssl),
            (Some(std::path::Path::new("/ca.pem")), true, false)
        );
        let bad = parse("mysql = { skip_ssl = true, ca_file = \"/ca.pem\" }").unwrap_err();
        assert!(
            bad.contains("check[0].mysql.ca_file")
                && bad.contains("contradicts skip_ssl")
                && bad.contains("test.toml:4:"),
            "{bad}"
        );
        let bad = parse("mysql = { verify_server_cert = true }").unwrap_err();
        assert!(
            bad.contains("mysql.verify_server_cert") && bad.contains("needs a ca_file"),
            "{bad}"
        );
        let bad = parse("mysql = { cert_file = \"/c.pem\" }").unwrap_err();
        assert!(
            bad.contains("mysql.cert_file") && bad.contains("key_file is missing"),
            "{bad}"
        );
    }
}
