//! A check's handler: exactly one of its handler tables, each validated by
//! a function of its own (`http` in `http.rs`, the protocol checks in
//! `native.rs` and `postgres.rs`, the plain ones here), and the pieces
//! several tables share (host, TLS keys).

use super::*;

/// The TLS keys of table `$t` (a raw handler table with the fields
/// `ca_file`, `cert_file`, `key_file`, `server_name` and
/// `insecure_skip_verify`) as a [`RawTls`].
macro_rules! tls_keys {
    ($t:expr) => {
        $crate::config::raw::kinds::RawTls {
            ca_file: &$t.ca_file,
            cert_file: &$t.cert_file,
            key_file: &$t.key_file,
            server_name: &$t.server_name,
            insecure_skip_verify: $t.insecure_skip_verify,
        }
    };
}
pub(super) use tls_keys;

/// What a handler's validator needs besides its own table.
pub(super) struct Site<'s> {
    /// The check's span: errors about keys that do not go together
    /// point at it.
    pub(super) span: Range<usize>,
    /// What `${VAR}` hosts and the `*_env` keys read.
    pub(super) env: &'s dyn Env,
    /// The check's key prefix (`check[3].`) put before a field.
    pub(super) prefix: &'s dyn Fn(&str) -> String,
}

impl Site<'_> {
    /// The full key of `field`, such as `check[3].redis.port`.
    pub(super) fn at(&self, field: &str) -> String {
        (self.prefix)(field)
    }
}

/// The handler of check `c`, or `None` after recording what is wrong.
pub(super) fn validate(
    c: &RawCheck,
    span: Range<usize>,
    env: &dyn Env,
    user_agent: &str,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors<'_>,
) -> Option<CheckKind> {
    let handlers = [
        c.http.as_ref().map(|h| ("http", h.span())),
        c.tcp.as_ref().map(|h| ("tcp", h.span())),
        c.exec.as_ref().map(|h| ("exec", h.span())),
        c.grpc.as_ref().map(|h| ("grpc", h.span())),
        c.file.as_ref().map(|h| ("file", h.span())),
        c.redis.as_ref().map(|h| ("redis", h.span())),
        c.postgres.as_ref().map(|h| ("postgres", h.span())),
        c.mysql.as_ref().map(|h| ("mysql", h.span())),
        c.dialogue.as_ref().map(|h| ("dialogue", h.span())),
        c.process.as_ref().map(|h| ("process", h.span())),
    ];
    let given: Vec<_> = handlers.into_iter().flatten().collect();
    match given.as_slice() {
        [] => {
            errors.push(
                at("handler"),
                span,
                format!("must specify a handler type: one of {}", HANDLERS.join(", ")),
            );
            return None;
        }
        [_] => {}
        [_, (second, span), ..] => {
            errors.push(
                at(second),
                span.clone(),
                format!(
                    "may not specify more than 1 handler type: choose one of {}",
                    HANDLERS.join(", ")
                ),
            );
            return None;
        }
    }
    let site = Site {
        span,
        env,
        prefix: at,
    };
    if let Some(h) = &c.http {
        return http::validate(h.get_ref(), &site, user_agent, errors);
    }
    if let Some(t) = &c.tcp {
        return tcp(t.get_ref(), &site, errors);
    }
    if let Some(g) = &c.grpc {
        return grpc(g.get_ref(), &site, user_agent, errors);
    }
    if let Some(e) = &c.exec {
        return exec(e.get_ref(), &site, errors);
    }
    if let Some(f) = &c.file {
        return file(f.get_ref(), &site, errors);
    }
    if let Some(r) = &c.redis {
        return native::redis(r.get_ref(), &site, errors);
    }
    if let Some(p) = &c.postgres {
        return postgres::validate(p, &site, errors);
    }
    if let Some(m) = &c.mysql {
        return native::mysql(m.get_ref(), m.span(), &site, errors);
    }
    if let Some(d) = &c.dialogue {
        return native::dialogue(d.get_ref(), &site, errors);
    }
    if let Some(p) = &c.process {
        return native::process(p.get_ref(), &site, errors);
    }
    None
}

/// A host as written (`${VAR}` read from the environment), or the
/// loopback address.
pub(super) fn host_of(
    field: &str,
    h: &Option<Spanned<String>>,
    site: &Site<'_>,
    errors: &mut Errors<'_>,
) -> Option<Host> {
    match h {
        None => Some(Host {
            name: DEFAULT_HOST.into(),
            from_env: None,
        }),
        Some(h) => match expand_host(h.get_ref(), site.env) {
            Ok(host) => Some(host),
            Err(message) => {
                errors.push(site.at(field), h.span(), message);
                None
            }
        },
    }
}

/// `tcp = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    host: Option<Spanned<String>>,
    port: Spanned<u16>,
}

fn tcp(t: &RawTcp, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<CheckKind> {
    check_port(&t.port, &site.at("tcp.port"), errors);
    Some(CheckKind::Tcp(TcpSpec {
        host: host_of("tcp.host", &t.host, site, errors)?,
        port: *t.port.get_ref(),
    }))
}

/// `grpc = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrpc {
    host: Option<Spanned<String>>,
    port: Spanned<u16>,
    #[serde(default)]
    service: String,
    user_agent: Option<String>,
    #[serde(default)]
    tls: bool,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
}

fn grpc(g: &RawGrpc, site: &Site<'_>, user_agent: &str, errors: &mut Errors<'_>) -> Option<CheckKind> {
    check_port(&g.port, &site.at("grpc.port"), errors);
    let tls = tls_keys!(g).validate_when(g.tls, ONLY_WITH_TLS, "grpc", site, errors);
    Some(CheckKind::Grpc(GrpcSpec {
        host: host_of("grpc.host", &g.host, site, errors)?,
        port: *g.port.get_ref(),
        service: g.service.clone(),
        user_agent: g.user_agent.clone().unwrap_or_else(|| user_agent.to_string()),
        tls: if g.tls { Some(tls?) } else { None },
    }))
}

/// `exec = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExec {
    command: Spanned<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<PathBuf>,
}

fn exec(e: &RawExec, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<CheckKind> {
    if e.command.get_ref().is_empty() || e.command.get_ref()[0].is_empty() {
        errors.push(
            site.at("exec.command"),
            e.command.span(),
            "must name a program to run",
        );
        return None;
    }
    Some(CheckKind::Exec(ExecSpec {
        command: e.command.get_ref().clone(),
        env: e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: e.workdir.clone(),
    }))
}

/// `file = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    path: PathBuf,
    max_age: Spanned<Dur>,
}

fn file(f: &RawFile, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<CheckKind> {
    if f.max_age.get_ref().0.is_zero() {
        errors.push(
            site.at("file.max_age"),
            f.max_age.span(),
            "must be longer than 0s",
        );
    }
    Some(CheckKind::File(FileSpec {
        path: f.path.clone(),
        max_age: f.max_age.get_ref().0,
    }))
}

/// What a TLS key set while a table's `tls` switch is off is told.
pub(super) const ONLY_WITH_TLS: &str = "only applies with tls = true";

/// The TLS keys of a handler table, as written.
pub(super) struct RawTls<'a> {
    pub(super) ca_file: &'a Option<PathBuf>,
    pub(super) cert_file: &'a Option<PathBuf>,
    pub(super) key_file: &'a Option<PathBuf>,
    pub(super) server_name: &'a Option<String>,
    pub(super) insecure_skip_verify: Option<bool>,
}

impl RawTls<'_> {
    /// The keys that are set.
    fn keys_set(&self) -> Vec<&'static str> {
        [
            ("ca_file", self.ca_file.is_some()),
            ("cert_file", self.cert_file.is_some()),
            ("key_file", self.key_file.is_some()),
            ("server_name", self.server_name.is_some()),
            ("insecure_skip_verify", self.insecure_skip_verify.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// The settings of a table whose TLS is `on` or off by another key
    /// (`tls`, `scheme`): while off, each key that is set is an error
    /// saying `off`. The settings are validated either way.
    pub(super) fn validate_when(
        &self,
        on: bool,
        off: &str,
        table: &str,
        site: &Site<'_>,
        errors: &mut Errors<'_>,
    ) -> Option<TlsSpec> {
        if !on {
            for key in self.keys_set() {
                errors.push(site.at(&format!("{table}.{key}")), site.span.clone(), off);
            }
        }
        self.validate(table, site, errors)
    }

    /// The settings, or `None` after recording what is inconsistent. The
    /// files themselves are read when the check is prepared.
    fn validate(&self, table: &str, site: &Site<'_>, errors: &mut Errors<'_>) -> Option<TlsSpec> {
        let before = errors.list.len();
        let mut error = |key: &str, message: &str| {
            errors.push(site.at(&format!("{table}.{key}")), site.span.clone(), message)
        };
        if self.cert_file.is_some() != self.key_file.is_some() {
            let (key, other) = if self.cert_file.is_some() {
                ("cert_file", "key_file")
            } else {
                ("key_file", "cert_file")
            };
            error(
                key,
                &format!("a client certificate needs both cert_file and key_file; {other} is missing"),
            );
        }
        match (self.insecure_skip_verify, self.ca_file.is_some()) {
            (Some(true), true) => error(
                "insecure_skip_verify",
                "contradicts ca_file: verify against the CA, or skip verification, not both",
            ),
            (Some(false), false) => error(
                "insecure_skip_verify",
                "false needs a ca_file to verify the server against (there is no system trust store)",
            ),
            _ => {}
        }
        if let Some(name) = self.server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            error(
                "server_name",
                &format!("{name:?} is not a DNS name or IP address"),
            );
        }
        (errors.list.len() == before).then(|| TlsSpec {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
            insecure_skip_verify: self.ca_file.is_none(),
        })
    }
}
