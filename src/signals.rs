//! Signals, through signal-hook: SIGTERM is how the kubelet stops a
//! container; SIGINT is Ctrl-C when run by hand; SIGHUP reloads the config,
//! the habit from Prometheus, nginx and blackbox_exporter (whose default
//! action, exiting, would kill the sidecar).

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

/// Every SIGTERM and SIGINT from now on, as a stream of signal numbers.
pub fn listen() -> mpsc::UnboundedReceiver<i32> {
    let (tx, rx) = mpsc::unbounded_channel();
    match Signals::new([SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::error!("cannot listen for signals: {e}"),
    }
    rx
}

/// Every SIGHUP from now on. SIGHUP no longer ends the process.
pub fn hangups() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    match Signals::new([SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for _ in signals.forever() {
                    tracing::info!(signal = "SIGHUP", "signal received: reloading the config");
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::error!("cannot listen for SIGHUP: {e}"),
    }
    rx
}
