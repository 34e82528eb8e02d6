//! The validated settings of a `postgres = { ... }` check: where the
//! server is, who logs in, and whether the check asks as `pg_isready` (no
//! `query`: is the server accepting connections?) or as
//! `psql -c QUERY` (a real login and the query).

use std::path::PathBuf;
use std::time::Duration;

use super::{Credential, Host};

/// libpq's default port.
pub(crate) const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// The user name sent when `user` is not given. libpq's default is the
/// client's operating-system user, which in an exec probe is the database
/// container's user: `postgres` in the official and Bitnami images. The
/// sidecar's own user name says nothing about the app, so the default is
/// written down instead.
pub(crate) const DEFAULT_POSTGRES_USER: &str = "postgres";

/// Where a `postgres` check connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PgAddress {
    /// TCP to a host and port.
    Tcp(Host),
    /// A Unix socket in this directory, named `.s.PGSQL.<port>`, as libpq
    /// reads a host that starts with `/`.
    Socket(PathBuf),
}

/// libpq's `sslmode` (libpq's docs, "SSL Mode Descriptions";
/// `fe-connect.c` `PQconnectPoll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext first; TLS only if the server answers the plaintext
    /// startup with an error (a `hostssl`-only `pg_hba.conf`).
    Allow,
    /// Ask for TLS (SSLRequest) and go on in plaintext if the server
    /// declines, the handshake fails, or the server refuses the login
    /// over TLS: libpq's default.
    Prefer,
    /// TLS or nothing; the chain is verified only when `sslrootcert`
    /// names a file that exists, as libpq does.
    Require,
    /// TLS with the server's chain verified against `sslrootcert`; the
    /// host name is not checked.
    VerifyCa,
    /// `verify-ca` and the host name checked against the certificate's
    /// names, as libpq checks them.
    VerifyFull,
}

impl SslMode {
    /// The value as written.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate must be verified (`verify-ca`,
    /// `verify-full`): without a root certificate such a mode fails.
    pub(crate) fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// A `postgres = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// Where to connect (`-h`, `PGHOST`).
    pub(crate) address: PgAddress,
    /// The port (`-p`, `PGPORT`); also names the Unix socket file.
    pub(crate) port: u16,
    /// The user name in the startup message (`-U`, `PGUSER`).
    pub(crate) user: String,
    /// The database (`-d`, `PGDATABASE`); the user name when not given,
    /// as libpq.
    pub(crate) dbname: String,
    /// `sslmode` (`PGSSLMODE`); libpq's `prefer` by default. Unix sockets
    /// never use TLS, as in libpq.
    pub(crate) sslmode: SslMode,
    /// The CA bundle the server's chain is verified against
    /// (`sslrootcert`, `PGSSLROOTCERT`). libpq's default,
    /// `~/.postgresql/root.crt`, is not read: the sidecar's home directory
    /// is not the app container's.
    pub(crate) sslrootcert: Option<PathBuf>,
    /// The client certificate chain and its key (`sslcert`/`sslkey`,
    /// `PGSSLCERT`/`PGSSLKEY`), presented when the server asks for one;
    /// given together or not at all.
    pub(crate) sslcert: Option<(PathBuf, PathBuf)>,
    /// A bound on the connection phase (`-t`, `PGCONNECT_TIMEOUT`), below
    /// the check's own timeout; none by default.
    pub(crate) connect_timeout: Option<Duration>,
    /// The password (`PGPASSWORD`), for `query` only.
    pub(crate) password: Option<Credential>,
    /// A password file as libpq reads one (`passfile`, `PGPASSFILE`),
    /// read at every run when no password is given; for `query` only.
    pub(crate) passfile: Option<PathBuf>,
    /// `psql -c QUERY` semantics when set; `pg_isready` when not.
    pub(crate) query: Option<String>,
}

impl PostgresSpec {
    /// `host:port` as pg_isready prints it, or the socket directory and
    /// port.
    pub(crate) fn shown(&self) -> String {
        match &self.address {
            PgAddress::Tcp(host) => format!("{}:{}", host.name, self.port),
            PgAddress::Socket(dir) => format!("{}:{}", dir.display(), self.port),
        }
    }
}
