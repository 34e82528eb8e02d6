//! Signals, through signal-hook: SIGTERM is how the kubelet stops a
//! container; SIGINT is Ctrl-C when run by hand; SIGHUP reloads the config,
//! the habit from Prometheus, nginx and blackbox_exporter.
//!
//! Other signals an operator sends by habit (SIGUSR1/SIGUSR2 to dump or
//! rotate, SIGALRM, SIGQUIT for a core dump) would kill the process by
//! default, and with it the app's liveness answers: they are logged and
//! ignored.

use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

/// The signals that stop the sidecar (through the drain).
const STOP: [i32; 2] = [SIGTERM, SIGINT];

/// The signals that are logged and otherwise ignored.
const IGNORED: [i32; 4] = [SIGUSR1, SIGUSR2, SIGALRM, SIGQUIT];

/// Every SIGTERM and SIGINT from now on, as a stream of signal numbers;
/// from now on too, the signals of [`IGNORED`] no longer kill the process.
/// Call it first: a signal that comes before is handled by its default
/// action, which for SIGTERM is to die without the drain.
pub fn listen() -> mpsc::UnboundedReceiver<i32> {
    let (tx, rx) = mpsc::unbounded_channel();
    match Signals::new(STOP.iter().chain(&IGNORED)) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for signal in signals.forever() {
                    if IGNORED.contains(&signal) {
                        ignored(signal);
                    } else if tx.send(signal).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::error!("cannot listen for signals: {e}"),
    }
    rx
}

fn ignored(signal: i32) {
    let name = signal_hook::low_level::signal_name(signal).unwrap_or("?");
    tracing::warn!(signal, "{name} ignored");
}

/// Every SIGHUP from now on. SIGHUP no longer ends the process.
pub(crate) fn hangups() -> mpsc::UnboundedReceiver<()> {
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
