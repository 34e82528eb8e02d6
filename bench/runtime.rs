//! The runtime flavours the harness compares, by name: `current` (one
//! thread), `multi-1` and `multi-2` (a multi-thread scheduler with one or
//! two workers). Shared by the bench examples through `#[path]`.

use std::io;

/// The flavour names `build` accepts, for usage messages.
pub const FLAVOURS: &str = "current|multi-1|multi-2";

/// A Tokio runtime of the named flavour, with I/O and timers enabled.
pub fn build(flavour: &str) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = match flavour {
        "current" => tokio::runtime::Builder::new_current_thread(),
        "multi-1" | "multi-2" => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(if flavour == "multi-1" { 1 } else { 2 });
            b
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown runtime flavour {other:?}, expected {FLAVOURS}"),
            ));
        }
    };
    builder.enable_all().build()
}
