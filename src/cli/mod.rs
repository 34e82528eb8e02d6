//! The command line: `run` (the default), `check-config`, `probe`,
//! `status`, `wait`, `inject`, `uninject`, `webhook`, and where `inject`
//! is built, `completions` and `man`.

mod check_config;
#[cfg(feature = "inject")]
mod inject;
mod probe;
mod run;
mod status;
mod wait;
#[cfg(feature = "webhook")]
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::log::{LogFormat, LogLevel};

/// Exit status for a configuration error.
pub(crate) const EXIT_CONFIG: u8 = 2;

/// healthproxy: runs an app's health checks with the kubelet's semantics and
/// serves /livez, /readyz and /startupz for the kubelet's probes.
#[derive(Debug, Parser)]
#[command(version = crate::version::LONG, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the probe endpoints and run the checks (the default).
    Run(RunArgs),
    /// Validate a config file: exit 0 when valid, 2 with every error.
    CheckConfig {
        /// The file to check: by default the one `run` would read.
        #[arg(env = "HEALTHPROXY_CONFIG", default_value = "/etc/healthproxy/config.toml")]
        file: PathBuf,
    },
    /// One HTTP GET with the kubelet's semantics: exit 0 for 200–399, 1
    /// otherwise (for Docker HEALTHCHECK and exec probes).
    Probe {
        /// http:// or https:// URL.
        url: String,
        /// Bound on the whole request.
        #[arg(long, default_value = "1s", value_parser = wait::duration)]
        timeout: std::time::Duration,
        /// An extra request header, "Name: value" (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Print the answer's body (its first 10 KiB) on stdout, and the
        /// verdict on stderr even on success.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Why is this pod unready? Each check of the running sidecar: its
    /// verdict, last message, consecutive counts, last success and recent
    /// transitions (`kubectl exec POD -c healthproxy -- healthproxy status`).
    Status(status::StatusArgs),
    /// Wait until dependencies answer (for init containers): exit 0 when
    /// all have, 1 at the deadline.
    Wait(wait::WaitArgs),
    #[cfg(feature = "inject")]
    /// Add healthproxy to Kubernetes workloads: their probes move into the
    /// sidecar's config (a ConfigMap), the probes ask the sidecar.
    Inject(inject::InjectArgs),
    #[cfg(feature = "inject")]
    /// Undo `inject`: the workloads exactly as they were.
    Uninject(inject::UninjectArgs),
    #[cfg(feature = "webhook")]
    /// Serve a mutating admission webhook that injects healthproxy into
    /// opted-in pods as they are created.
    Webhook(webhook::WebhookArgs),
    #[cfg(feature = "inject")]
    /// Print a completion script for SHELL on stdout, e.g.
    /// `healthproxy completions bash > /etc/bash_completion.d/healthproxy`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[cfg(feature = "inject")]
    /// Print the man page (roff) on stdout: of healthproxy, or of one
    /// subcommand (`healthproxy man status | man -l -`).
    Man {
        /// A subcommand, for its own page.
        subcommand: Option<String>,
    },
}

/// Options of `healthproxy run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The config file.
    #[arg(
        long,
        env = "HEALTHPROXY_CONFIG",
        default_value = "/etc/healthproxy/config.toml"
    )]
    pub(crate) config: PathBuf,
    /// Overrides `listen` from the config file.
    #[arg(long, env = "HEALTHPROXY_LISTEN")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Log line format.
    #[arg(long, env = "HEALTHPROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Log filter: a level (trace, debug, info, warn or warning, error,
    /// off) or directives such as `info,healthproxy::engine=debug`.
    /// Overrides `log_level` from the config file; without either, `info`.
    #[arg(long, env = "HEALTHPROXY_LOG_LEVEL")]
    pub(crate) log_level: Option<LogLevel>,
}

/// Loads the config at `path` (with `listen` overriding its address) and
/// builds the application, as `run` and `check-config` both do; on failure
/// prints every error and returns exit status 2.
fn build(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> Result<crate::App, ExitCode> {
    crate::App::load(path, listen).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Parses the command line and runs it; returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(args),
        Some(Command::CheckConfig { file }) => check_config::check_config(&file),
        Some(Command::Probe {
            url,
            timeout,
            headers,
            verbose,
        }) => probe::probe(&url, timeout, &headers, verbose),
        Some(Command::Status(args)) => status::status(args),
        Some(Command::Wait(args)) => wait::wait(args),
        #[cfg(feature = "inject")]
        Some(Command::Inject(args)) => inject::inject(args),
        #[cfg(feature = "inject")]
        Some(Command::Uninject(args)) => inject::uninject(args),
        #[cfg(feature = "webhook")]
        Some(Command::Webhook(args)) => webhook::webhook(args),
        #[cfg(feature = "inject")]
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "healthproxy", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        #[cfg(feature = "inject")]
        Some(Command::Man { subcommand }) => man(subcommand.as_deref()),
    }
}

/// Writes the man page of healthproxy, or of `subcommand`, on stdout.
#[cfg(feature = "inject")]
fn man(subcommand: Option<&str>) -> ExitCode {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let page = match subcommand {
        None => command,
        Some(name) => match command.find_subcommand(name) {
            // Built, a subcommand is displayed as `healthproxy-NAME`.
            Some(sub) => sub.clone(),
            None => {
                eprintln!("man: no subcommand {name:?}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(page).render(&mut out) {
        eprintln!("man: {e}");
        return ExitCode::FAILURE;
    }
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
