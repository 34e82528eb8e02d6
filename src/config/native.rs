//! The settings of the checks that speak a server's own protocol in place
//! of the command an exec probe would run (`redis-cli ping`, `mysqladmin
//! ping`, ...): each follows the verdicts of one tool, named on its type.

use std::fmt;
use std::path::PathBuf;

use super::{Host, Pattern, TlsSpec};

/// A credential (a password, a user name): written in the file, read from
/// a file, or from an environment variable. Its `Debug` names the source,
/// never a value read from a file or the environment.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Written in the configuration (a user name).
    Given(String),
    /// A file, read at every run (a rotated Secret is used from the next
    /// run on), trimmed of surrounding whitespace.
    File(PathBuf),
    /// An environment variable, read once when the configuration is
    /// loaded.
    Env {
        /// The variable's name.
        var: String,
        /// Its value.
        value: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Given(value) => write!(f, "{value:?}"),
            Credential::File(path) => write!(f, "<from file {}>", path.display()),
            Credential::Env { var, .. } => write!(f, "<from ${var}>"),
        }
    }
}

impl Credential {
    /// The value now. The error names the file, never the value.
    pub(crate) fn value(&self) -> Result<String, String> {
        match self {
            Credential::Given(value) | Credential::Env { value, .. } => Ok(value.clone()),
            Credential::File(path) => {
                let bytes = crate::files::read_bounded(path, crate::files::MAX_TOKEN_BYTES)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let text =
                    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
                Ok(text.trim().to_string())
            }
        }
    }
}

/// Which answers to PING pass a `redis` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisExpect {
    /// Any reply, errors included, as bare `redis-cli ping`'s exit status:
    /// the port speaks RESP.
    Reply,
    /// `PONG`, as `redis-cli ping | grep -q PONG` and `redis-cli -e ping`
    /// (plus the error codes of `accept_errors`).
    Pong,
}

/// A `redis = { ... }` handler: `redis-cli [--tls] [--user U] [-a P] ping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    /// The server's host.
    pub host: Host,
    /// The server's port (6379).
    pub port: u16,
    /// `--user`: the ACL user AUTH names, if any.
    pub user: Option<Credential>,
    /// `-a` / `REDISCLI_AUTH`: the password; AUTH is sent only with one.
    pub password: Option<Credential>,
    /// `--tls`, with its settings.
    pub tls: Option<TlsSpec>,
    /// Which replies pass.
    pub expect: RedisExpect,
    /// Error codes (the reply's first word, `LOADING`, `MASTERDOWN`) that
    /// pass as PONG does, with [`RedisExpect::Pong`].
    pub accept_errors: Vec<String>,
}

/// What a `mysql` check does once connected, and the tool it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MysqlCommand {
    /// `mysqladmin ping`: any answer of the server is alive, an access
    /// denied, too many connections or host not allowed included.
    Ping,
    /// `mysqladmin status`: a login and `COM_STATISTICS`; any error fails.
    Status,
    /// `mysql -e QUERY`: a login and the query; any error fails.
    Query(String),
}

/// A `mysql = { ... }` handler: `mysqladmin -h H -P P -u U -p ping`,
/// `... status` or `mysql ... -e QUERY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSpec {
    /// The server's host.
    pub host: Host,
    /// The server's port (3306).
    pub port: u16,
    /// `-u`: the user to log in as (none: the empty user name).
    pub user: Option<Credential>,
    /// `-p`, `MYSQL_PWD`: the password (none: no password).
    pub password: Option<Credential>,
    /// `-D`: the database to log into.
    pub database: Option<String>,
    /// What to do once connected.
    pub command: MysqlCommand,
    /// `--skip-ssl`: an error the server sends instead of its greeting
    /// (too many connections, host not allowed) is the server's. Without
    /// it, the client (Connector/C 3.3, which asks for TLS by default)
    /// cannot trust an error before the TLS handshake and fails with its
    /// own error 2002: `mysqladmin ping` exits 1. Without it, TLS is
    /// asked for whenever the server's greeting offers it, as the tools
    /// do.
    pub skip_ssl: bool,
    /// `--ssl-ca`: the server's certificate chain is verified against
    /// this CA bundle (not its name). Without it, any certificate is
    /// accepted, as the tools accept one.
    pub ca_file: Option<PathBuf>,
    /// `--ssl-cert`: a client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// `--ssl-key`: the client certificate's key (PEM).
    pub key_file: Option<PathBuf>,
    /// `--ssl-verify-server-cert`: TLS is required (a server without it
    /// fails) and the certificate must name the host; needs `ca_file`.
    pub verify_server_cert: bool,
}

/// One step of a `dialogue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogueStep {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Read until what arrived since the last match matches.
    Expect(Pattern),
}

/// A `dialogue = { ... }` handler: blackbox_exporter's `query_response`,
/// the `echo ruok | nc HOST PORT | grep imok` of exec probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueSpec {
    /// The server's host.
    pub host: Host,
    /// The server's port.
    pub port: u16,
    /// TLS from the first byte, with its settings.
    pub tls: Option<TlsSpec>,
    /// The steps, in order.
    pub steps: Vec<DialogueStep>,
}

/// A `process = { ... }` handler: `pgrep -f PATTERN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Matched against each process's full command line, its arguments
    /// joined by spaces, as `pgrep -f`.
    pub pattern: Pattern,
}
