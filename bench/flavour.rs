//! `healthproxy run` on a runtime flavour chosen on the command line, so
//! that `bench/run` can compare flavours in one run without rebuilding the
//! product. Everything but the runtime is the product's own code; logging
//! is off, as for the product at its default level when nothing changes.
//!
//! Run with
//!
//! ```not_rust
//! cargo run --release --example bench-flavour -- current|multi-1|multi-2 CONFIG
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use healthproxy::App;
use healthproxy::config::{Config, ProcessEnv};

#[path = "runtime.rs"]
mod runtime;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(flavour), Some(config)) = (args.next(), args.next()) else {
        eprintln!("usage: bench-flavour {} CONFIG", runtime::FLAVOURS);
        return ExitCode::from(2);
    };
    let config_path = PathBuf::from(config);
    let config = match Config::load(&config_path, &ProcessEnv) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let app = match App::build(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{}: {e}", config_path.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime::build(&flavour) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-flavour: {e}");
            return ExitCode::from(2);
        }
    };
    let signals = healthproxy::signals::listen();
    match runtime.block_on(healthproxy::run(app, signals, None, Default::default())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-flavour: {e:#}");
            ExitCode::FAILURE
        }
    }
}
