//! Signals, through signal-hook: SIGTERM is how the kubelet stops a
//! container; SIGINT is Ctrl-C when run by hand.
//!
//! Signals an operator sends by habit (SIGHUP to reload, SIGUSR1/SIGUSR2
//! to dump or rotate, SIGALRM, SIGQUIT for a core dump) would kill the
//! process by default, and with it the app's liveness answers: they are
//! logged and ignored.

use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

/// The signals that stop the sidecar (through the drain).
const STOP: [i32; 2] = [SIGTERM, SIGINT];

/// The signals that are logged and otherwise ignored.
const IGNORED: [i32; 5] = [SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGQUIT];

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
    if signal == SIGHUP {
        tracing::warn!(
            signal,
            "{name} ignored: the configuration is not reloaded; restart to apply a change"
        );
    } else {
        tracing::warn!(signal, "{name} ignored");
    }
}
