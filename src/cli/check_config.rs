//! `healthproxy check-config FILE`: every error with file, line, column and
//! key, then exit 2; or the lints as warnings, then exit 0.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config::{Config, ProcessEnv, lints};
use crate::engine::Engine;

pub(super) fn check_config(file: &Path) -> ExitCode {
    let config = match Config::load(file, &ProcessEnv) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = Engine::new(&config.checks) {
        eprintln!("{}: {e}", file.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    for lint in lints(&config) {
        eprintln!("{}:{lint}", file.display());
    }
    println!("{}: ok ({} checks)", file.display(), config.checks.len());
    ExitCode::SUCCESS
}
