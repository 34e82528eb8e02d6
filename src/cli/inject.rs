//! `healthproxy inject` and `healthproxy uninject`: YAML streams from files
//! or stdin to stdout, warnings and the `--dry-run` summary on stderr.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::EXIT_CONFIG;
use crate::inject::{self, ConfigMapName, MeshChoice, Options, Output, Refusal, Sidecar};

/// The sidecar's flags, the same for `inject` and `webhook`.
#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// The sidecar's image, built from this repository's Dockerfile and
    /// pushed where the cluster pulls from (README, "Build and push the
    /// image"). Without it, a placeholder that no cluster can pull, with a
    /// warning.
    #[arg(long, default_value = inject::DEFAULT_IMAGE)]
    image: String,
    /// `native`: an initContainers entry with restartPolicy Always
    /// (Kubernetes 1.29+); `classic`: the first of `containers`.
    #[arg(long, value_enum, default_value_t = Sidecar::Native)]
    sidecar: Sidecar,
    /// The sidecar's port.
    #[arg(long, default_value_t = crate::config::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The sidecar's drain.max; the grace period is raised to this plus
    /// 10s where it is shorter.
    #[arg(long, default_value = "20s", value_parser = super::wait::duration)]
    drain_max: Duration,
}

impl SidecarArgs {
    /// The options these flags give, the others at their defaults.
    pub(super) fn options(self) -> Options {
        Options {
            image: self.image,
            sidecar: self.sidecar,
            port: self.port,
            drain_max: self.drain_max,
            ..Options::default()
        }
    }
}

/// Options of `healthproxy inject`.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// YAML files (several documents, `kind: List`); `-` or none: stdin.
    files: Vec<PathBuf>,
    #[command(flatten)]
    sidecar: SidecarArgs,
    /// How the generated ConfigMap is named. `hashed` (the default):
    /// WORKLOAD-healthproxy-HASH, named by its content as kustomize's
    /// configMapGenerator does, so that a config change reaches only the
    /// pods of the new template: the rollout carries it, a config that
    /// fails stops at the first new pods while the old ones keep theirs,
    /// and a rollback brings the old config back. Old ConfigMaps stay
    /// until deleted (keep those of the ReplicaSets you may roll back to).
    /// `fixed`: WORKLOAD-healthproxy, changed in place: running pods reload
    /// it within seconds (their probes keep their verdicts), all at once.
    #[arg(long, value_enum, default_value_t = ConfigMapName::Hashed)]
    config_map: ConfigMapName,
    /// Only these app containers (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    containers: Vec<String>,
    /// The mesh whose proxy forwards the app's traffic (drain.mesh):
    /// `auto` finds Istio's or Linkerd's in the pod, its annotations or its
    /// Namespace in the stream.
    #[arg(long, value_enum, default_value_t = MeshChoice::Auto)]
    mesh: MeshChoice,
    /// Write nothing: print on stderr what would move where.
    #[arg(long)]
    dry_run: bool,
    /// Where a `pgrep -f` exec probe is to become a `process` check, set
    /// `shareProcessNamespace: true` on its pod (without it the sidecar
    /// sees only its own processes). This changes the pod: every container
    /// then sees the others' processes, their `/proc/PID/environ` and, as
    /// the same user, may signal them; PID 1 is the pause container, so an
    /// app that expects to be PID 1 no longer is.
    #[arg(long)]
    share_process_namespace: bool,
}

/// Options of `healthproxy uninject`.
#[derive(Debug, Args)]
pub(crate) struct UninjectArgs {
    /// YAML files; `-` or none: stdin.
    files: Vec<PathBuf>,
}

pub(super) fn inject(args: InjectArgs) -> ExitCode {
    let options = Options {
        containers: (!args.containers.is_empty()).then_some(args.containers),
        config_map: args.config_map,
        mesh: args.mesh,
        share_process_namespace: args.share_process_namespace,
        ..args.sidecar.options()
    };
    if let Some(warning) = inject::placeholder_image(&options.image) {
        eprintln!("warning: {warning}");
    }
    run("inject", &args.files, args.dry_run, |text| {
        inject::inject(text, &options)
    })
}

pub(super) fn uninject(args: UninjectArgs) -> ExitCode {
    run("uninject", &args.files, false, inject::uninject)
}

fn run(
    command: &str,
    files: &[PathBuf],
    dry_run: bool,
    transform: impl Fn(&str) -> Result<Output, Refusal>,
) -> ExitCode {
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut text = String::new();
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let mut summary = Vec::new();
    let mut restored = Vec::new();
    for file in files {
        let input = match read(file) {
            Ok(input) => input,
            Err(e) => {
                eprintln!("healthproxy {command}: {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        };
        match transform(&input) {
            Ok(out) => {
                if !text.is_empty() && !out.text.is_empty() {
                    text.push_str("---\n");
                }
                text.push_str(&out.text);
                warnings.extend(out.warnings);
                notes.extend(out.notes);
                summary.extend(out.summary);
                restored.extend(out.restored);
            }
            Err(refusal) => {
                // Nothing is written: a partial stream must not be applied.
                eprintln!("healthproxy {command}: {}: {refusal}", file.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    for field in &restored {
        eprintln!("restored: {field}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    if dry_run {
        for line in &summary {
            eprintln!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("healthproxy {command}: cannot write: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn read(file: &PathBuf) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use crate::cli::{Cli, Command};
    use crate::inject::Options;

    /// The flags' defaults are [`Options::default`]'s: `20s` is
    /// [`crate::inject::DEFAULT_DRAIN_MAX`], the port is the config's.
    #[test]
    fn the_sidecar_flags_default_to_the_options_defaults() {
        for command in [
            &["healthproxy", "inject"][..],
            &["healthproxy", "webhook", "--tls-cert", "c", "--tls-key", "k"],
        ] {
            let sidecar = match Cli::try_parse_from(command).unwrap().command {
                Some(Command::Inject(args)) => args.sidecar,
                Some(Command::Webhook(args)) => args.sidecar,
                other => panic!("{other:?}"),
            };
            let options = sidecar.options();
            let default = Options::default();
            assert_eq!(
                (options.image, options.sidecar, options.port, options.drain_max),
                (default.image, default.sidecar, default.port, default.drain_max),
                "{command:?}"
            );
        }
    }

    /// The webhook, and only the webhook, reads the image from its
    /// environment too.
    #[test]
    fn only_the_webhook_reads_the_image_from_the_environment() {
        let cli = Cli::command();
        let env = |command: &str| {
            let sub = cli.find_subcommand(command).unwrap();
            let image = sub.get_arguments().find(|a| a.get_id() == "image").unwrap();
            image.get_env().map(|e| e.to_str().unwrap().to_string())
        };
        assert_eq!(env("webhook").as_deref(), Some("HEALTHPROXY_WEBHOOK_IMAGE"));
        assert_eq!(env("inject"), None);
    }
}
