//! The validated settings of a `postgres = { ... }` check: where the
//! server is, who logs in, and whether the check asks as `pg_isready` (no
//! `query`: is the server accepting connections?) or as
//! `psql -c QUERY` (a real login and the query).

use std::path::PathBuf;
use std::time::Duration;

use super::{Credential, Host};

/// libpq's default port.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// The user name sent when `user` is not given. libpq's default is the
/// client's operating-system user, which in an exec probe is the database
/// container's user: `postgres` in the official and Bitnami images. The
/// sidecar's own user name says nothing about the app, so the default is
/// written down instead.
pub const DEFAULT_POSTGRES_USER: &str = "postgres";

/// Where a `postgres` check connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgAddress {
    /// TCP to a host and port.
    Tcp(Host),
    /// A Unix socket in this directory, named `.s.PGSQL.<port>`, as libpq
    /// reads a host that starts with `/`.
    Socket(PathBuf),
}

/// libpq's `sslmode`, the values that do not verify the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Ask for TLS (SSLRequest) and go on in plaintext if the server
    /// declines: libpq's default.
    Prefer,
    /// TLS or nothing, without verifying the certificate (libpq's
    /// `require` without a root certificate file).
    Require,
}

impl SslMode {
    /// The value as written.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
        }
    }
}

/// A `postgres = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// Where to connect (`-h`, `PGHOST`).
    pub address: PgAddress,
    /// The port (`-p`, `PGPORT`); also names the Unix socket file.
    pub port: u16,
    /// The user name in the startup message (`-U`, `PGUSER`).
    pub user: String,
    /// The database (`-d`, `PGDATABASE`); the user name when not given,
    /// as libpq.
    pub dbname: String,
    /// `sslmode` (`PGSSLMODE`); libpq's `prefer` by default. Unix sockets
    /// never use TLS, as in libpq.
    pub sslmode: SslMode,
    /// A bound on the connection phase (`-t`, `PGCONNECT_TIMEOUT`), below
    /// the check's own timeout; none by default.
    pub connect_timeout: Option<Duration>,
    /// The password (`PGPASSWORD`), for `query` only.
    pub password: Option<Credential>,
    /// A password file as libpq reads one (`passfile`, `PGPASSFILE`),
    /// read at every run when no password is given; for `query` only.
    pub passfile: Option<PathBuf>,
    /// `psql -c QUERY` semantics when set; `pg_isready` when not.
    pub query: Option<String>,
}

impl PostgresSpec {
    /// `host:port` as pg_isready prints it, or the socket directory and
    /// port.
    pub fn shown(&self) -> String {
        match &self.address {
            PgAddress::Tcp(host) => format!("{}:{}", host.name, self.port),
            PgAddress::Socket(dir) => format!("{}:{}", dir.display(), self.port),
        }
    }
}
