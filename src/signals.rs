//! Signals, through signal-hook: SIGTERM is how the kubelet stops a
//! container; SIGINT is Ctrl-C when run by hand.

use signal_hook::consts::{SIGINT, SIGTERM};
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
