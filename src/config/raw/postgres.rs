//! `postgres = { ... }` as written, and its validation.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::kinds::Site;
use super::native::credential;
use super::{Dur, Errors, check_port, expand_host};
use crate::config::{
    CheckKind, Credential, DEFAULT_POSTGRES_PORT, DEFAULT_POSTGRES_USER, PgAddress, PostgresSpec, SslMode,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    user: Option<Spanned<String>>,
    /// The user name from the sidecar's environment (a Secret's key, as
    /// `inject` copies it from the app container), read at load.
    user_env: Option<Spanned<String>>,
    dbname: Option<Spanned<String>>,
    /// The database's name from the sidecar's environment.
    dbname_env: Option<Spanned<String>>,
    sslmode: Option<Spanned<SslMode>>,
    sslrootcert: Option<Spanned<PathBuf>>,
    sslcert: Option<Spanned<PathBuf>>,
    sslkey: Option<Spanned<PathBuf>>,
    connect_timeout: Option<Spanned<Dur>>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    passfile: Option<PathBuf>,
    query: Option<Spanned<String>>,
}

/// The validated handler, or `None` after recording what is wrong.
pub(super) fn validate(
    raw: &Spanned<RawPostgres>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let span: Range<usize> = raw.span();
    // Errors about keys that do not go together point at this table.
    let site = Site {
        span: span.clone(),
        env: site.env,
        prefix: site.prefix,
    };
    let p = raw.get_ref();
    let before = errors.list.len();
    let address = address(p, &site, errors);
    let port = port(p, &site, errors);
    let (user, dbname) = login(p, &site, errors);
    let query = text("query", &p.query, &site, errors);
    let connect_timeout = connect_timeout(p, &site, errors);
    let password = password(p, query.is_some(), &span, &site, errors);
    let sslmode = p.sslmode.as_ref().map_or(SslMode::Prefer, |m| *m.get_ref());
    let sslcert = tls_files(p, sslmode, &site, errors);
    (errors.list.len() == before).then(|| {
        CheckKind::Postgres(Box::new(PostgresSpec {
            address,
            port,
            user,
            dbname,
            sslmode,
            sslrootcert: p.sslrootcert.as_ref().map(|p| p.get_ref().clone()),
            sslcert,
            connect_timeout,
            password,
            passfile: p.passfile.clone(),
            query,
        }))
    })
}

/// `host`: a TCP host (the default, or expanded from the environment) or,
/// as libpq reads a host that starts with a slash, a socket directory.
fn address(p: &RawPostgres, site: &Site<'_>, errors: &mut Errors<'_>) -> PgAddress {
    match &p.host {
        None => PgAddress::Tcp(crate::config::Host {
            name: crate::config::DEFAULT_HOST.into(),
            from_env: None,
        }),
        // libpq: a host that starts with a slash is a socket directory.
        Some(h) if h.get_ref().starts_with('/') => PgAddress::Socket(PathBuf::from(h.get_ref())),
        Some(h) => match expand_host(h.get_ref(), site.env) {
            Ok(host) => PgAddress::Tcp(host),
            Err(message) => {
                errors.push(site.at("postgres.host"), h.span(), message);
                PgAddress::Socket(PathBuf::new())
            }
        },
    }
}

fn port(p: &RawPostgres, site: &Site<'_>, errors: &mut Errors<'_>) -> u16 {
    match &p.port {
        Some(port) => {
            check_port(port, &site.at("postgres.port"), errors);
            *port.get_ref()
        }
        None => DEFAULT_POSTGRES_PORT,
    }
}

/// `user` and `dbname`, each written or read from the environment
/// (`user_env`, `dbname_env`); the database is named after the user
/// unless given.
fn login(p: &RawPostgres, site: &Site<'_>, errors: &mut Errors<'_>) -> (String, String) {
    let user_value = from_env("user", &p.user, &p.user_env, site, errors);
    let dbname_value = from_env("dbname", &p.dbname, &p.dbname_env, site, errors);
    let user = text("user", &p.user, site, errors)
        .or_else(|| text("user_env", &user_value, site, errors))
        .unwrap_or_else(|| DEFAULT_POSTGRES_USER.to_string());
    let dbname = text("dbname", &p.dbname, site, errors)
        .or_else(|| text("dbname_env", &dbname_value, site, errors))
        .unwrap_or_else(|| user.clone());
    (user, dbname)
}

/// `user_env`/`dbname_env`: the variable's value, as if written.
fn from_env(
    key: &str,
    literal: &Option<Spanned<String>>,
    var: &Option<Spanned<String>>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<Spanned<String>> {
    let var = var.as_ref()?;
    if literal.is_some() {
        errors.push(
            site.at(&format!("postgres.{key}")),
            var.span(),
            format!("give {key} one way only: {key} or {key}_env"),
        );
        return None;
    }
    match site.env.var(var.get_ref()) {
        Some(value) => Some(Spanned::new(var.span(), value)),
        None => {
            errors.push(
                site.at(&format!("postgres.{key}_env")),
                var.span(),
                format!("the environment variable {} is not set", var.get_ref()),
            );
            None
        }
    }
}

/// A text value, which must be neither empty nor hold a NUL byte.
fn text(
    key: &str,
    value: &Option<Spanned<String>>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<String> {
    let value = value.as_ref()?;
    if value.get_ref().is_empty() || value.get_ref().contains('\0') {
        errors.push(
            site.at(&format!("postgres.{key}")),
            value.span(),
            "must not be empty or hold a NUL byte",
        );
    }
    Some(value.get_ref().clone())
}

fn connect_timeout(p: &RawPostgres, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<std::time::Duration> {
    p.connect_timeout.as_ref().map(|d| {
        if d.get_ref().0.is_zero() {
            errors.push(
                site.at("postgres.connect_timeout"),
                d.span(),
                "must be longer than 0s",
            );
        }
        d.get_ref().0
    })
}

/// `password_file`/`password_env`, and with `passfile` only beside a
/// `query`: without one the check never logs in.
fn password(
    p: &RawPostgres,
    has_query: bool,
    span: &Range<usize>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<Credential> {
    let password = credential(
        "postgres",
        "password",
        None,
        p.password_file.as_ref(),
        p.password_env.as_ref(),
        site,
        errors,
    );
    if (password.is_some() || p.passfile.is_some()) && !has_query {
        let key = if p.password_file.is_some() {
            "password_file"
        } else if p.password_env.is_some() {
            "password_env"
        } else {
            "passfile"
        };
        errors.push(
            site.at(&format!("postgres.{key}")),
            span.clone(),
            "is only used with `query`: without one the check asks as pg_isready does, which never logs in",
        );
    }
    password
}

/// Checks `sslrootcert`, `sslcert` and `sslkey` against `sslmode`;
/// the client certificate and key when both are given.
fn tls_files(
    p: &RawPostgres,
    sslmode: SslMode,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<(PathBuf, PathBuf)> {
    let files = [
        ("sslrootcert", &p.sslrootcert),
        ("sslcert", &p.sslcert),
        ("sslkey", &p.sslkey),
    ];
    for (key, file) in files {
        let Some(file) = file else { continue };
        if sslmode == SslMode::Disable {
            errors.push(
                site.at(&format!("postgres.{key}")),
                file.span(),
                "is not used with sslmode = \"disable\", which never uses TLS",
            );
        } else if file.get_ref().as_os_str().is_empty() {
            errors.push(
                site.at(&format!("postgres.{key}")),
                file.span(),
                "must not be empty",
            );
        }
    }
    if let Some(root) = &p.sslrootcert
        && root.get_ref().as_os_str() == "system"
    {
        errors.push(
            site.at("postgres.sslrootcert"),
            root.span(),
            "\"system\" (PostgreSQL 16's system trust store) is not supported: name the CA bundle's file",
        );
    }
    if sslmode.verifies() && p.sslrootcert.is_none() {
        let span = p.sslmode.as_ref().map_or(site.span.clone(), |m| m.span());
        errors.push(
            site.at("postgres.sslmode"),
            span,
            format!(
                "{} needs sslrootcert: libpq would read ~/.postgresql/root.crt, which is in the app's container, not the sidecar's",
                sslmode.as_str()
            ),
        );
    }
    match (&p.sslcert, &p.sslkey) {
        (Some(cert), Some(key)) => Some((cert.get_ref().clone(), key.get_ref().clone())),
        (Some(file), None) | (None, Some(file)) => {
            let (key, missing) = if p.sslcert.is_some() {
                ("sslcert", "sslkey")
            } else {
                ("sslkey", "sslcert")
            };
            errors.push(
                site.at(&format!("postgres.{key}")),
                file.span(),
                format!("needs {missing} too: libpq's defaults in ~/.postgresql are not the sidecar's"),
            );
            None
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{CheckKind, Config, PgAddress, SslMode};

    fn parse(table: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let text = format!("[[check]]\nname = \"db\"\nprobes = [\"readiness\"]\npostgres = {table}\n");
        let env = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Config::from_toml_str(&text, "c.toml", &env).map_err(|e| e.to_string())
    }

    #[test]
    fn a_bare_postgres_check_is_pg_isready_with_libpqs_defaults() {
        let config = parse("{}", &[]).unwrap();
        let CheckKind::Postgres(spec) = &config.checks[0].kind else {
            panic!("not postgres");
        };
        assert!(matches!(&spec.address, PgAddress::Tcp(h) if h.name == "127.0.0.1"));
        assert_eq!(
            (spec.port, spec.user.as_str(), spec.dbname.as_str()),
            (5432, "postgres", "postgres")
        );
        assert_eq!(spec.sslmode, SslMode::Prefer);
        assert_eq!((spec.query.as_ref(), spec.password.as_ref()), (None, None));
        let config = parse("{ host = \"/var/run/postgresql\", user = \"app\" }", &[]).unwrap();
        let CheckKind::Postgres(spec) = &config.checks[0].kind else {
            panic!("not postgres");
        };
        assert_eq!(spec.address, PgAddress::Socket("/var/run/postgresql".into()));
        assert_eq!(spec.dbname, "app", "the user's name, as libpq");
    }

    #[test]
    fn postgres_keys_are_validated_naming_the_key() {
        let err = parse("{ password_env = \"PW\" }", &[("PW", "x")]).unwrap_err();
        assert!(
            err.contains("check[0].postgres.password_env: is only used with `query`"),
            "{err}"
        );
        let err = parse("{ query = \"SELECT 1\", password_env = \"PW\" }", &[]).unwrap_err();
        assert!(
            err.contains("postgres.password_env: the environment variable PW is not set"),
            "{err}"
        );
        let err = parse(
            "{ query = \"SELECT 1\", password_env = \"PW\", password_file = \"/p\" }",
            &[("PW", "x")],
        )
        .unwrap_err();
        assert!(err.contains("give password one way only"), "{err}");
        let err = parse("{ user = \"\" }", &[]).unwrap_err();
        assert!(err.contains("check[0].postgres.user: must not be empty"), "{err}");
        let err = parse("{ port = 0 }", &[]).unwrap_err();
        assert!(err.contains("postgres.port: invalid port number: 0"), "{err}");
        let err = parse("{ sslmode = \"verify-full\" }", &[]).unwrap_err();
        assert!(
            err.contains("c.toml:4:")
                && err.contains("check[0].postgres.sslmode: verify-full needs sslrootcert"),
            "{err}"
        );
        let err = parse("{ sslmode = \"verify-all\" }", &[]).unwrap_err();
        assert!(err.contains("sslmode"), "{err}");
        let err = parse("{ sslmode = \"disable\", sslrootcert = \"/ca\" }", &[]).unwrap_err();
        assert!(
            err.contains("check[0].postgres.sslrootcert: is not used with sslmode = \"disable\""),
            "{err}"
        );
        let err = parse("{ sslcert = \"/c\" }", &[]).unwrap_err();
        assert!(
            err.contains("check[0].postgres.sslcert: needs sslkey too"),
            "{err}"
        );
        let err = parse("{ sslkey = \"/k\" }", &[]).unwrap_err();
        assert!(
            err.contains("check[0].postgres.sslkey: needs sslcert too"),
            "{err}"
        );
        let err = parse("{ sslmode = \"verify-ca\", sslrootcert = \"system\" }", &[]).unwrap_err();
        assert!(err.contains("postgres.sslrootcert: \"system\""), "{err}");
        let err = parse("{ host = \"${NOPE}\" }", &[]).unwrap_err();
        assert!(err.contains("postgres.host"), "{err}");
        let err = parse("{ connect_timeout = \"0s\" }", &[]).unwrap_err();
        assert!(err.contains("must be longer than 0s"), "{err}");
        let err = parse("{ user = \"a\", user_env = \"U\" }", &[("U", "b")]).unwrap_err();
        assert!(err.contains("give user one way only"), "{err}");
        let err = parse("{ dbname_env = \"D\" }", &[]).unwrap_err();
        assert!(
            err.contains("postgres.dbname_env: the environment variable D is not set"),
            "{err}"
        );
        let err = parse("{ passfile = \"/p\" }", &[]).unwrap_err();
        assert!(
            err.contains("check[0].postgres.passfile: is only used with `query`"),
            "{err}"
        );
        let err = parse("{ password = \"x\" }", &[]).unwrap_err();
        assert!(err.contains("unknown field `password`"), "{err}");
    }

    #[test]
    fn every_libpq_sslmode_is_read_with_its_files() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Allow),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let files = if text == "disable" {
                String::new()
            } else {
                ", sslrootcert = \"/ca.crt\", sslcert = \"/c.crt\", sslkey = \"/c.key\"".to_string()
            };
            let config = parse(&format!("{{ sslmode = {text:?}{files} }}"), &[]).unwrap();
            let CheckKind::Postgres(spec) = &config.checks[0].kind else {
                panic!("not postgres");
            };
            assert_eq!(spec.sslmode, mode);
            assert_eq!(mode.as_str(), text);
            if text != "disable" {
                assert_eq!(spec.sslrootcert.as_deref(), Some(std::path::Path::new("/ca.crt")));
                assert_eq!(spec.sslcert, Some(("/c.crt".into(), "/c.key".into())));
            }
        }
    }

    #[test]
    fn user_and_dbname_may_come_from_the_environment() {
        let config = parse(
            "{ user_env = \"U\", dbname_env = \"D\" }",
            &[("U", "app"), ("D", "shop")],
        )
        .unwrap();
        let CheckKind::Postgres(spec) = &config.checks[0].kind else {
            panic!("not postgres");
        };
        assert_eq!((spec.user.as_str(), spec.dbname.as_str()), ("app", "shop"));
        let config = parse("{ user_env = \"U\" }", &[("U", "app")]).unwrap();
        let CheckKind::Postgres(spec) = &config.checks[0].kind else {
            panic!("not postgres");
        };
        assert_eq!(spec.dbname, "app", "the user's name, as libpq");
    }

    #[test]
    fn the_password_from_the_environment_is_never_shown() {
        let config = parse(
            "{ query = \"SELECT 1\", password_env = \"PW\" }",
            &[("PW", "hunter2")],
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<from $PW>"), "{shown}");
    }
}
