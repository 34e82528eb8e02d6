//! Configuration: the TOML file as written (`raw`), validated into the
//! types the rest of the crate uses (this module), and the lints that
//! `check-config` prints without failing (`lint`).
//!
//! Only validated types leave this module. Every error names the file,
//! line, column and key; all errors are gathered before any is reported.

mod lint;
mod native;
mod postgres;
mod raw;
mod rules;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use lint::missing_program;
#[cfg(feature = "inject")]
pub(crate) use lint::original_probe_lints;
pub use lint::{Lint, lints};
pub use native::{
    Credential, DialogueSpec, DialogueStep, MysqlCommand, MysqlSpec, ProcessSpec, RedisExpect, RedisSpec,
};
pub(crate) use postgres::{DEFAULT_POSTGRES_PORT, DEFAULT_POSTGRES_USER, PgAddress, PostgresSpec, SslMode};
pub(crate) use raw::parse_duration;
pub use rules::{Pattern, SecretHeader, SecretSource, StatusSet, TlsSpec};

/// Kubelet default for `initialDelaySeconds` (kubelet-semantics §3.1).
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::ZERO;
/// Kubelet default for `periodSeconds`.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// Kubelet default for `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Kubelet default for `successThreshold`.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Kubelet default for `failureThreshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The shortest period accepted. The kubelet's minimum is one second; the
/// sidecar allows sub-second periods but not busier than this.
pub(crate) const MIN_PERIOD: Duration = Duration::from_millis(100);
/// The shortest timeout accepted.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// The sidecar's port unless `listen` says otherwise, and the port
/// `inject` and the webhook give it.
#[cfg_attr(
    not(feature = "inject"),
    allow(dead_code, reason = "named by the inject and webhook CLIs")
)]
pub(crate) const DEFAULT_PORT: u16 = 9775;
/// Where the sidecar listens unless `listen` says otherwise: every address,
/// IPv4 and IPv6, on [`DEFAULT_PORT`].
pub const DEFAULT_LISTEN: &str = "[::]:9775";
/// Default time readiness stays failed before a drain looks at connections.
pub const DEFAULT_DRAIN_MIN: Duration = Duration::from_secs(5);
/// Default time without a new connection to the app after which a drain
/// takes its load balancers to have let go of the pod. Twice the 1 s
/// period of the kubelet's probes and of most balancers' health checks; a
/// still-sending balancer with a request every 2 s or more often is never
/// taken for gone, and the pod-network suite's balancers (lag 1.5 s and
/// 3 s) end their drains 2.1 s after their last request (BENCHMARKS.md,
/// "Adaptive drain").
pub const DEFAULT_DRAIN_QUIET: Duration = Duration::from_secs(2);
/// Default upper bound of a drain; keep it below the pod's grace period.
pub const DEFAULT_DRAIN_MAX: Duration = Duration::from_secs(25);
/// A client must send a request's headers within this time; it also bounds
/// the wait for the next request on a kept-alive connection.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request not answered within this time gets 408 (`/prestop`, which
/// lasts as long as the drain, is exempt).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no request for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections beyond which the oldest is closed to make room.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest request head accepted; a larger one gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// The host every network check dials unless told otherwise.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The Kubernetes version whose kubelet the `http` and `grpc` checks
/// identify as, `kube-probe/1.36`, unless `kubelet_version` says
/// otherwise.
pub const DEFAULT_KUBELET_VERSION: &str = "1.36";

/// The kubelet's probe `User-Agent` for Kubernetes `version`
/// (`MAJOR.MINOR`): `fmt.Sprintf("kube-%s/%s.%s", "probe", v.Major,
/// v.Minor)` (pkg/probe/http/request.go `userAgent`; the gRPC prober sends
/// the same, pkg/probe/grpc/grpc.go `Probe`).
pub(crate) fn kube_probe_user_agent(version: &str) -> String {
    format!("kube-probe/{version}")
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the probe, lifecycle and metrics endpoints.
    pub listen: SocketAddr,
    /// Address of the `grpc.health.v1.Health` service, when wanted.
    pub grpc_listen: Option<SocketAddr>,
    /// When the file is read again while running.
    pub reload: ReloadConfig,
    /// The log filter, unless `--log-level` overrides it; a reload applies
    /// a new one.
    pub log_level: Option<crate::log::LogLevel>,
    /// Graceful drain settings.
    pub drain: DrainConfig,
    /// Limits of the HTTP server.
    pub server: ServerConfig,
    /// The probe kinds that may be left without a check (`allow_empty`):
    /// a file without any check is refused unless it names every kind,
    /// and a reload that takes the last check of a kind away is refused
    /// unless it names that kind. A kind without checks passes whatever
    /// the app does, which is what an empty or truncated file would
    /// otherwise do by accident.
    pub(crate) allow_empty: ProbeSet,
    /// The checks, in file order.
    pub checks: Vec<CheckConfig>,
}

impl Config {
    /// The probe kinds some check of this config belongs to.
    pub(crate) fn kinds(&self) -> ProbeSet {
        let mut set = ProbeSet::default();
        for c in &self.checks {
            for kind in ProbeKind::ALL {
                if c.probes.contains(kind) {
                    set.insert(kind);
                }
            }
        }
        set
    }
}

/// How often the config file is looked at for a change, unless told
/// otherwise: a mounted ConfigMap's update is picked up within this.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// When the config file is read again while running (`[reload]`); SIGHUP
/// and `POST /reload` reload whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Reload when the file at the config path changes.
    pub watch: bool,
    /// How often the path is looked at.
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// Graceful drain settings (`[drain]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// Readiness fails at once; the drain waits at least this long.
    pub min: Duration,
    /// The drain never lasts longer than this.
    pub max: Duration,
    /// After `min`, the drain also waits until no new connection to `ports`
    /// has come for this long (load balancers have let go).
    pub quiet: Duration,
    /// The app's ports whose established connections the drain waits on.
    pub ports: Vec<u16>,
    /// A file holding the bearer token that guards lifecycle endpoints.
    pub token_file: Option<PathBuf>,
    /// Exit by itself once the app has listened on `ports` and stopped.
    pub exit_when_app_exits: bool,
    /// The mesh whose proxy forwards the app's traffic, if any: it decides
    /// which connections to `ports` are the app's serving traffic.
    pub mesh: Mesh,
}

/// Istio's proxy runs as this user (`istio-proxy`); its iptables rules
/// know it by this uid (`--uid-owner 1337`).
pub const ISTIO_PROXY_UID: u32 = 1337;
/// Linkerd's proxy runs as this user (`proxyUID`, and
/// `config.linkerd.io/proxy-uid`); its iptables rules know it by this uid.
pub(crate) const LINKERD_PROXY_UID: u32 = 2102;

/// Which of the connections to `drain.ports` are the app's serving
/// traffic (`drain.mesh`), decided by where they come from in the pod.
///
/// - From outside the pod: always serving traffic (with a mesh, the ports
///   the mesh skips are reached directly).
/// - From inside the pod (loopback, or the pod's own address at both
///   ends): another container's client (a cache client, a log shipper),
///   neither new nor established traffic; unless a mesh's proxy opened
///   it, which forwards the serving traffic and pools its connections, so
///   that these count by their new connections and bytes, and as open
///   only while a request waits for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mesh {
    /// No mesh: the serving traffic comes from outside the pod.
    #[default]
    None,
    /// Istio's sidecar: Envoy connects to the pod IP from `127.0.0.6`
    /// (its inbound passthrough, istio/istio#29603), as user `proxy_uid`.
    Istio {
        /// The uid of Envoy's sockets.
        proxy_uid: u32,
    },
    /// Linkerd's proxy: it connects to the pod IP from the pod IP (2.11
    /// on; to and from loopback before), as user `proxy_uid`.
    Linkerd {
        /// The uid of the proxy's sockets.
        proxy_uid: u32,
    },
}

impl Mesh {
    /// The name written in `drain.mesh`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mesh::None => "none",
            Mesh::Istio { .. } => "istio",
            Mesh::Linkerd { .. } => "linkerd",
        }
    }

    /// The uid of the mesh proxy's sockets, if there is a mesh.
    pub fn proxy_uid(self) -> Option<u32> {
        match self {
            Mesh::None => None,
            Mesh::Istio { proxy_uid } | Mesh::Linkerd { proxy_uid } => Some(proxy_uid),
        }
    }
}

/// Limits of the HTTP server (`[server]`), so that hostile or broken
/// clients cannot starve the kubelet's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Time allowed for a request's headers to arrive, counted from when the
    /// connection starts waiting for them: when it opens, or when the
    /// previous answer on a kept-alive connection was sent (slowloris).
    pub header_read_timeout: Duration,
    /// Time allowed to answer one request.
    pub request_timeout: Duration,
    /// A kept-alive connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Open connections beyond which the oldest is closed.
    pub max_connections: usize,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// The probe kinds this check belongs to.
    pub probes: ProbeSet,
    /// A non-critical check is reported but cannot fail its probes.
    pub critical: bool,
    /// The app container this check belongs to, for per-container endpoints.
    pub container: Option<String>,
    /// Timers and thresholds.
    pub timing: Timing,
    /// What the check does.
    pub kind: CheckKind,
    /// Where the check was taken from, when `inject` wrote it: the probe
    /// (`containers[app].readinessProbe`) whose handler and timing it
    /// keeps. Lints about those are for checks people write: `inject`
    /// says once what is worth saying about the original probe.
    pub(crate) origin: Option<String>,
    /// The line of the check's table in the file, for lint messages.
    pub(crate) line: usize,
}

impl CheckConfig {
    /// Whether `other` defines the same check: everything but where it
    /// stands in the file. A reload keeps such a check running as it is.
    pub fn same_definition(&self, other: &CheckConfig) -> bool {
        // Field by field, without a copy: a reload compares every check.
        let CheckConfig {
            name,
            probes,
            critical,
            container,
            timing,
            kind,
            // Where it came from changes nothing in how it runs.
            origin: _,
            line: _,
        } = self;
        *name == other.name
            && *probes == other.probes
            && *critical == other.critical
            && *container == other.container
            && *timing == other.timing
            && *kind == other.kind
    }
}

/// The kubelet's timing knobs for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Wait this long after the sidecar starts before the first run.
    pub initial_delay: Duration,
    /// Time between the starts of two runs.
    pub period: Duration,
    /// A run that takes longer is a failure.
    pub timeout: Duration,
    /// Consecutive successes that make a failed check healthy.
    pub success_threshold: u32,
    /// Consecutive failures that make a healthy check failed.
    pub failure_threshold: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_delay: DEFAULT_INITIAL_DELAY,
            period: DEFAULT_PERIOD,
            timeout: DEFAULT_TIMEOUT,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
        }
    }
}

/// A probe kind, as the kubelet names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `startupProbe`: latches once every startup check has succeeded.
    Startup,
    /// `livenessProbe`: a failure restarts the app container.
    Liveness,
    /// `readinessProbe`: a failure takes the pod out of rotation.
    Readiness,
}

impl ProbeKind {
    /// All kinds, in the order the kubelet starts them.
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness];

    /// The kubelet's capitalised name, used in its event messages.
    pub(crate) fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The lower-case name used in config, JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }

    /// The endpoint path segment: `startupz`, `livez`, `readyz`.
    pub fn endpoint(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startupz",
            ProbeKind::Liveness => "livez",
            ProbeKind::Readiness => "readyz",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of probe kinds a check belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeSet {
    /// Member of the startup probe.
    pub startup: bool,
    /// Member of the liveness probe.
    pub liveness: bool,
    /// Member of the readiness probe.
    pub readiness: bool,
}

impl ProbeSet {
    /// Every probe kind.
    pub(crate) const ALL: ProbeSet = ProbeSet {
        startup: true,
        liveness: true,
        readiness: true,
    };

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Startup => self.startup,
            ProbeKind::Liveness => self.liveness,
            ProbeKind::Readiness => self.readiness,
        }
    }

    fn insert(&mut self, kind: ProbeKind) {
        match kind {
            ProbeKind::Startup => self.startup = true,
            ProbeKind::Liveness => self.liveness = true,
            ProbeKind::Readiness => self.readiness = true,
        }
    }
}

/// What a check does: exactly one handler, as a Kubernetes probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// An HTTP or HTTPS request.
    Http(Box<HttpSpec>),
    /// A TCP connect.
    Tcp(TcpSpec),
    /// A command, run without a shell.
    Exec(ExecSpec),
    /// `grpc.health.v1.Health/Check`.
    Grpc(GrpcSpec),
    /// A heartbeat file's age.
    File(FileSpec),
    /// PING, as `redis-cli ping`.
    Redis(Box<RedisSpec>),
    /// A PostgreSQL server, as `pg_isready` or `psql -c QUERY` sees it.
    Postgres(Box<PostgresSpec>),
    /// `mysqladmin ping|status`, `mysql -e`.
    Mysql(Box<MysqlSpec>),
    /// Bytes sent and patterns expected, as `echo ruok | nc`.
    Dialogue(Box<DialogueSpec>),
    /// A process whose command line matches, as `pgrep -f`.
    Process(Box<ProcessSpec>),
}

impl CheckKind {
    /// The handler's name as written in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Exec(_) => "exec",
            CheckKind::Grpc(_) => "grpc",
            CheckKind::File(_) => "file",
            CheckKind::Redis(_) => "redis",
            CheckKind::Postgres(_) => "postgres",
            CheckKind::Mysql(_) => "mysql",
            CheckKind::Dialogue(_) => "dialogue",
            CheckKind::Process(_) => "process",
        }
    }

    /// The host a network check dials, if it is one.
    pub(crate) fn host(&self) -> Option<&Host> {
        match self {
            CheckKind::Http(h) => Some(&h.host),
            CheckKind::Tcp(t) => Some(&t.host),
            CheckKind::Grpc(g) => Some(&g.host),
            CheckKind::Redis(r) => Some(&r.host),
            CheckKind::Postgres(p) => match &p.address {
                PgAddress::Tcp(host) => Some(host),
                PgAddress::Socket(_) => None,
            },
            CheckKind::Mysql(m) => Some(&m.host),
            CheckKind::Dialogue(d) => Some(&d.host),
            CheckKind::Process(_) => None,
            CheckKind::Exec(_) | CheckKind::File(_) => None,
        }
    }
}

/// The host of a network check, after `${VAR}` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host to dial: an IP literal or a name.
    pub name: String,
    /// The environment variable it came from (`${POD_IP}`), if any.
    pub from_env: Option<String>,
}

impl Host {
    /// The host for `host:port`, with brackets around an IPv6 literal.
    pub(crate) fn authority(&self, port: u16) -> String {
        if self.name.contains(':') {
            format!("[{}]:{port}", self.name)
        } else {
            format!("{}:{port}", self.name)
        }
    }

    /// Splits an authority, `host`, `host:port`, `[v6]` or `[v6]:port`,
    /// into the host without brackets and the port as written, if any.
    /// The one host parser of URLs, `Location` headers and `wait` targets.
    pub(crate) fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unterminated IPv6 literal")?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or("junk after the IPv6 literal")?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        Ok((host, port))
    }

    /// Whether the host is the loopback interface.
    pub(crate) fn is_loopback(&self) -> bool {
        match self.name.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.name.eq_ignore_ascii_case("localhost"),
        }
    }
}

/// URL scheme of an HTTP check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// Request method of an HTTP check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET, as the kubelet.
    Get,
    /// HEAD: no body is read.
    Head,
}

/// An `http = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host to connect to.
    pub host: Host,
    /// Port to connect to.
    pub port: u16,
    /// Path and optional query, starting with `/`.
    pub path: String,
    /// GET (default) or HEAD.
    pub method: HttpMethod,
    /// Request headers in file order. A `Host` entry replaces the Host
    /// header; an entry with an empty value removes a default header
    /// (`User-Agent`, `Accept`), as the kubelet.
    pub headers: Vec<(String, String)>,
    /// Reuse one connection between runs instead of a fresh one per run.
    pub keep_alive: bool,
    /// The (first 10 KiB of the) body must contain this text.
    pub body_contains: Option<String>,
    /// The `User-Agent` sent unless `headers` has one: the kubelet's
    /// `kube-probe/1.<minor>`.
    pub user_agent: String,
    /// The statuses that pass; the kubelet's 200–399 by default.
    pub expect_status: Option<StatusSet>,
    /// Follow same-host redirects, as the kubelet (the default); off, a
    /// 3xx is the final answer, as `curl -f` without `-L` takes it.
    pub follow_redirects: bool,
    /// The (first 10 KiB of the) body must match this pattern.
    pub body_matches: Option<Pattern>,
    /// The (first 10 KiB of the) body must not match this pattern.
    pub body_not_matches: Option<Pattern>,
    /// Response headers that must be present and match, by name.
    pub header_matches: Vec<(String, Pattern)>,
    /// Request headers whose values are secrets, from files or the
    /// environment.
    pub secret_headers: Vec<SecretHeader>,
    /// TLS client settings for `https` hops.
    pub tls: TlsSpec,
}

impl HttpSpec {
    /// A GET of `url` (`http://` or `https://`) with no extra headers, for
    /// the one-shot `probe` and `wait` commands.
    pub fn from_url(url: &str) -> Result<HttpSpec, String> {
        let bad = |why: &str| format!("{url:?} is not a usable URL: {why}");
        let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(bad("write it as http://HOST:PORT/PATH or https://...")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        Ok(HttpSpec {
            scheme,
            host: Host {
                name: host,
                from_env: None,
            },
            port,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            method: HttpMethod::Get,
            headers: Vec::new(),
            keep_alive: false,
            body_contains: None,
            user_agent: kube_probe_user_agent(DEFAULT_KUBELET_VERSION),
            expect_status: None,
            follow_redirects: true,
            body_matches: None,
            body_not_matches: None,
            header_matches: Vec::new(),
            secret_headers: Vec::new(),
            tls: TlsSpec {
                insecure_skip_verify: true,
                ..TlsSpec::default()
            },
        })
    }

    /// The URL of the first request.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.host.authority(self.port), self.path)
    }
}

/// A `tcp = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// Host to connect to.
    pub host: Host,
    /// Port to connect to.
    pub port: u16,
}

/// An `exec = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv; the first element is the program, looked up in `PATH`.
    pub command: Vec<String>,
    /// Extra environment variables for the command.
    pub env: Vec<(String, String)>,
    /// Working directory; the sidecar's own when absent.
    pub workdir: Option<PathBuf>,
}

/// A `grpc = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSpec {
    /// Host to connect to.
    pub host: Host,
    /// Port to connect to.
    pub port: u16,
    /// The service name sent in `HealthCheckRequest`; empty means the server.
    pub service: String,
    /// The `User-Agent` of the call (grpc-go appends its own
    /// `grpc-go/<version>`; this sidecar's client, tonic, likewise).
    pub user_agent: String,
    /// TLS client settings when the call goes over TLS; plaintext HTTP/2
    /// (h2c) otherwise, as the kubelet.
    pub tls: Option<TlsSpec>,
}

/// A `file = { ... }` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The heartbeat file.
    pub path: PathBuf,
    /// The file's modification time must be younger than this.
    pub max_age: Duration,
}

/// One configuration error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, such as `check[2].period`.
    pub key: String,
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// Every error found in one file, and the file's name.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file (or other origin) the text came from.
    pub(crate) origin: String,
    /// The errors, in file order.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// One line per error, in file order: `FILE:LINE:COLUMN: KEY: MESSAGE`,
    /// or `FILE: MESSAGE` for the file itself (it cannot be read).
    pub(crate) fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.errors.iter().map(|e| {
            if e.line == 0 {
                format!("{}: {}", self.origin, e.message)
            } else {
                format!(
                    "{}:{}:{}: {}: {}",
                    self.origin, e.line, e.column, e.key, e.message
                )
            }
        })
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

/// Where `${VAR}` references in hosts are looked up. Tests pass a map; the
/// binary passes the process environment.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let text = Config::read(path)?;
        Config::from_toml_str(&text, &path.display().to_string(), env)
    }

    /// The text of the file at `path` (a regular file, read up to
    /// [`crate::files::MAX_CONFIG_BYTES`]), or the error that says it
    /// cannot be read.
    pub(crate) fn read(path: &Path) -> Result<String, ConfigErrors> {
        let text = crate::files::read_bounded(path, crate::files::MAX_CONFIG_BYTES).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                crate::files::ReadError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                ))
            })
        });
        text.map_err(|e| ConfigErrors {
            origin: path.display().to_string(),
            errors: vec![ConfigError {
                key: "file".into(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }],
        })
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
        raw::parse(text, env).map_err(|errors| ConfigErrors {
            origin: origin.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests;
