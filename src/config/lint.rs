//! Lints: valid settings that are usually a mistake. `check-config` prints
//! them; they never stop the sidecar from starting.

use std::fmt;
use std::time::Duration;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::{CheckConfig, CheckKind, Config, ExecSpec, SecretSource, TlsSpec};

/// How long a failed pod may stay in rotation before a lint speaks up.
const MAX_IN_ROTATION: Duration = Duration::from_secs(60);

/// A warning about one check, or about a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// What it is about: `check "NAME"`, or a key such as
    /// `drain.token_file`.
    pub subject: String,
    /// The line of the check's table; 0 for a key left out of the file.
    pub(crate) line: usize,
    /// What is likely wrong, and why.
    pub message: String,
}

/// Shown after the file name: `FILE:LINE: warning: check "NAME": ...`, or
/// `FILE: warning: KEY: ...` for a key left out.
impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:", self.line)?;
        }
        write!(f, " warning: {}: {}", self.subject, self.message)
    }
}

/// Every lint for `config`: the checks' in file order, then the drain's.
pub fn lints(config: &Config) -> Vec<Lint> {
    let own = own_ports(config);
    let mut lints: Vec<Lint> = config
        .checks
        .iter()
        .flat_map(|c| {
            let mut found = check_lints(c, &own);
            if c.origin.is_none() {
                found.extend(probe_lints(c));
            }
            found
        })
        .collect();
    for port in config.drain.ports.iter().filter(|p| own.contains(p)) {
        lints.push(Lint {
            subject: "drain.ports".into(),
            line: 0,
            message: format!(
                "holds {port}, the sidecar's own port: the drain would wait on the sidecar's own listener, which stays open, so every drain lasts drain.max; list the app's ports"
            ),
        });
    }
    // A config whose checks all come from probes was written by `inject`,
    // which sets token_file whenever it writes the preStop hook that needs
    // it: without one, no preStop is sent to the sidecar.
    let generated = !config.checks.is_empty() && config.checks.iter().all(|c| c.origin.is_some());
    if config.drain.token_file.is_none() && !generated {
        lints.push(Lint {
            subject: "drain.token_file".into(),
            line: 0,
            message: "not set: /prestop, /drain and /exit answer loopback clients only, so the kubelet's preStop httpGet (sent from the node to the pod IP) gets 403 and drains nothing; set it and send the token in the hook's Authorization header".into(),
        });
    }
    lints
}

/// The ports the sidecar itself listens on (`listen`, `grpc_listen`).
fn own_ports(config: &Config) -> Vec<u16> {
    std::iter::once(config.listen)
        .chain(config.grpc_listen)
        .map(|a| a.port())
        .filter(|p| *p != 0)
        .collect()
}

fn check_lints(c: &CheckConfig, own: &[u16]) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut warn = |message: String| {
        out.push(Lint {
            subject: format!("check {:?}", c.name),
            line: c.line,
            message,
        })
    };
    let port = match &c.kind {
        CheckKind::Http(h) => Some(h.port),
        CheckKind::Tcp(t) => Some(t.port),
        CheckKind::Grpc(g) => Some(g.port),
        CheckKind::Redis(r) => Some(r.port),
        CheckKind::Postgres(p) => Some(p.port),
        CheckKind::Mysql(m) => Some(m.port),
        CheckKind::Dialogue(d) => Some(d.port),
        CheckKind::Process(_) => None,
        CheckKind::Exec(_) | CheckKind::File(_) => None,
    };
    if let (Some(port), Some(host)) = (port, c.kind.host())
        && host.from_env.is_none()
        && host.is_loopback()
        && own.contains(&port)
    {
        warn(format!(
            "it asks the sidecar's own port {port}: it tests healthproxy, not the app; give the app's port"
        ));
    }
    if let CheckKind::Exec(spec) = &c.kind
        && let Some(found) = found_on_path(spec)
    {
        warn(format!(
            "the command {:?} was found on this machine's PATH ({}), but the healthproxy image is FROM scratch and holds nothing but /healthproxy: in the sidecar it is absent unless the pod mounts it there; name it by the path it is mounted at",
            spec.command[0],
            found.display()
        ));
    }
    if let CheckKind::Exec(spec) = &c.kind
        && let Some(missing) = missing_program(spec)
    {
        let consequence = if c.probes.liveness {
            "as a liveness check it can never fail"
        } else {
            "it can never pass"
        };
        warn(format!(
            "{missing}: every run is Unknown, which moves no threshold (the kubelet throws away an exec probe that cannot start, too), so {consequence}"
        ));
    }
    let tls = match &c.kind {
        CheckKind::Http(h) => {
            let patterns = h
                .body_matches
                .iter()
                .map(|p| ("body_matches", p))
                .chain(h.header_matches.iter().map(|(_, p)| ("header_matches", p)));
            for (key, pattern) in patterns {
                if pattern.is_match(b"") {
                    warn(format!(
                        "{key} {:?} matches the empty string, so it matches anything: anchor it or make it longer",
                        pattern.as_str()
                    ));
                }
            }
            if let Some(pattern) = &h.body_not_matches
                && pattern.is_match(b"")
            {
                warn(format!(
                    "body_not_matches {:?} matches the empty string, so every run fails",
                    pattern.as_str()
                ));
            }
            for header in &h.secret_headers {
                if let SecretSource::File(path) = &header.source
                    && readable_by_everyone(path)
                {
                    warn(format!(
                        "header_files {}: {} is readable by every user: {CHMOD}",
                        header.name,
                        path.display()
                    ));
                }
            }
            Some(&h.tls)
        }
        CheckKind::Grpc(g) => g.tls.as_ref(),
        _ => None,
    };
    if let Some(TlsSpec {
        key_file: Some(key), ..
    }) = tls
        && readable_by_everyone(key)
    {
        warn(format!(
            "key_file {} is readable by every user: {CHMOD}",
            key.display()
        ));
    }
    out
}

/// The lints about what a check shares with a Kubernetes probe (where it
/// points, its timing): for checks people write, and for what `inject`
/// says about an original probe ([`original_probe_lints`]).
fn probe_lints(c: &CheckConfig) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut warn = |message: String| {
        out.push(Lint {
            subject: format!("check {:?}", c.name),
            line: c.line,
            message,
        })
    };
    if c.probes.liveness
        && let Some(host) = c.kind.host()
        && host.from_env.is_none()
        && !host.is_loopback()
    {
        warn(format!(
            "a liveness check aimed at {:?}, which is not this pod: when that service fails, every pod restarts and nothing is fixed; make it a readiness check",
            host.name
        ));
    }
    let t = &c.timing;
    if t.timeout >= t.period {
        warn(format!(
            "timeout ({}) is not shorter than period ({}): runs queue behind each other and the period is not kept",
            humantime::format_duration(t.timeout),
            humantime::format_duration(t.period)
        ));
    }
    if c.probes.readiness {
        // Saturating: absurd values are valid config and must not panic here.
        let in_rotation = t
            .period
            .saturating_mul(t.failure_threshold)
            .saturating_add(t.timeout);
        if in_rotation > MAX_IN_ROTATION {
            warn(format!(
                "a failed app stays in rotation for up to {} (failure_threshold {} x period {} + timeout): lower one of them",
                humantime::format_duration(in_rotation),
                t.failure_threshold,
                humantime::format_duration(t.period)
            ));
        }
    }
    out
}

/// What is worth saying about the original probes of the checks `inject`
/// took from them (those with an `origin`): the lints [`lints`] leaves
/// out for them. `inject` prints these once, the webhook returns them as
/// admission warnings.
#[cfg(feature = "inject")]
pub(crate) fn original_probe_lints(config: &Config) -> Vec<Lint> {
    config
        .checks
        .iter()
        .filter_map(|c| Some((c.origin.as_ref()?, c)))
        .flat_map(|(origin, c)| {
            probe_lints(c).into_iter().map(|lint| Lint {
                subject: origin.clone(),
                ..lint
            })
        })
        .collect()
}

/// What to do about a secret file that every user may read. A Secret's
/// files belong to root unless the pod sets `fsGroup`, so 0400 or 0440
/// alone leaves the sidecar (deploy/'s `runAsUser: 65532`) "permission
/// denied"; with `fsGroup` the kubelet gives the files that group (and
/// adds group read to a read-only volume's files). Issue 27.
const CHMOD: &str = "chmod o-r it (or mount the Secret with defaultMode 0440 and the pod's securityContext.fsGroup set to the sidecar's runAsGroup, 65532 in deploy/: without fsGroup the files belong to root and the sidecar cannot read them; Kubernetes' default mode is 0644)";

/// Whether every user may read the file at `path` (through a symlink, as
/// a mounted Secret's files are).
fn readable_by_everyone(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Why an exec check's program cannot be started here, if it cannot: a
/// path that is no executable file, or a name found on no directory of the
/// `PATH` the command gets (its own `env` if it sets one, else the
/// sidecar's). Read from the file system of the process that asks, so
/// `check-config` answers for the image it runs in.
pub(crate) fn missing_program(spec: &ExecSpec) -> Option<String> {
    let program = spec.command.first()?;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = match &spec.workdir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        return (!executable(&path)).then(|| format!("the command {program:?} is not an executable file"));
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.into())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| executable(&dir.join(program)));
    (!found).then(|| format!("the command {program:?} is found on no directory of PATH"))
}

/// Where a program named without a path was found on the `PATH` of the
/// process that asks (the command's own `PATH` is the image's, if it sets
/// one: no lint then).
fn found_on_path(spec: &ExecSpec) -> Option<PathBuf> {
    let program = spec.command.first()?;
    if program.contains('/') || spec.env.iter().any(|(k, _)| k == "PATH") {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, env: &[(&str, &str)]) -> ExecSpec {
        ExecSpec {
            command: vec![command.to_string()],
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            workdir: None,
        }
    }

    #[test]
    fn a_missing_program_is_named() {
        assert_eq!(missing_program(&spec("sh", &[])), None);
        assert_eq!(missing_program(&spec("/bin/sh", &[])), None);
        assert_eq!(
            missing_program(&spec("/nonexistent/probe", &[])).as_deref(),
            Some("the command \"/nonexistent/probe\" is not an executable file")
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = plain.to_str().unwrap();
        assert_eq!(
            missing_program(&spec(plain, &[])),
            Some(format!("the command {plain:?} is not an executable file"))
        );
        assert_eq!(
            missing_program(&spec("no-such-probe-program", &[])).as_deref(),
            Some("the command \"no-such-probe-program\" is found on no directory of PATH")
        );
        // The command's own PATH is the one searched.
        assert!(missing_program(&spec("sh", &[("PATH", "/nonexistent")])).is_some());
    }
}
