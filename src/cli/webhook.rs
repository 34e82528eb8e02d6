//! `healthproxy webhook`: the mutating admission webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::inject::SidecarArgs;
use super::{EXIT_CONFIG, LogFormat};
use crate::inject;
use crate::log::{LogLevel, Logging};
use crate::webhook::{serve, tls::Reloading};

/// Options of `healthproxy webhook`.
#[derive(Debug, Args)]
#[command(mut_arg("image", |a| a.env("HEALTHPROXY_WEBHOOK_IMAGE")))]
pub(crate) struct WebhookArgs {
    /// HTTPS address for the API server (`POST /mutate`).
    #[arg(long, env = "HEALTHPROXY_WEBHOOK_LISTEN", default_value = "[::]:8443")]
    listen: SocketAddr,
    /// Plain HTTP address for `/healthz` and `/metrics`.
    #[arg(long, env = "HEALTHPROXY_WEBHOOK_ADMIN", default_value = "[::]:9090")]
    admin_listen: SocketAddr,
    /// The serving certificate chain (PEM), re-read when it changes.
    #[arg(long, env = "HEALTHPROXY_WEBHOOK_TLS_CERT")]
    tls_cert: PathBuf,
    /// Its private key (PEM), re-read when it changes.
    #[arg(long, env = "HEALTHPROXY_WEBHOOK_TLS_KEY")]
    tls_key: PathBuf,
    /// The sidecar (`--image`, also from HEALTHPROXY_WEBHOOK_IMAGE).
    #[command(flatten)]
    pub(super) sidecar: SidecarArgs,
    /// Log line format.
    #[arg(long, env = "HEALTHPROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter: a level (trace, debug, info, warn or warning, error,
    /// off) or directives such as `info,healthproxy::webhook=debug`.
    #[arg(long, env = "HEALTHPROXY_LOG_LEVEL", default_value = "info")]
    log_level: LogLevel,
}

pub(super) fn webhook(args: WebhookArgs) -> ExitCode {
    let _logging = Logging::init(args.log_format, &args.log_level);
    let certs = match Reloading::new(&args.tls_cert, &args.tls_key) {
        Ok(certs) => certs,
        Err(e) => {
            eprintln!("healthproxy webhook: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Every container, the mesh found in the pod; the config travels in
    // the pod's annotations: no ConfigMap.
    let options = args.sidecar.options();
    if let Some(warning) = inject::placeholder_image(&options.image) {
        tracing::warn!("{warning} (--image or HEALTHPROXY_WEBHOOK_IMAGE)");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping");
            on_signal.cancel();
        });
        serve::run(args.listen, args.admin_listen, certs, options, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
