//! `healthproxy check-config FILE`: every error with file, line, column and
//! key, then exit 2; or the lints as warnings, then exit 0. The file is
//! built into the application as `run` builds it (checks prepared, token
//! read), so it passes here exactly when `run` accepts it.

use std::path::Path;
use std::process::ExitCode;

use crate::config::lints;

pub(super) fn check_config(file: &Path) -> ExitCode {
    let app = match super::build(file, None) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let config = app.config();
    for lint in lints(config) {
        eprintln!("{}:{lint}", file.display());
    }
    println!("{}: ok ({} checks)", file.display(), config.checks.len());
    ExitCode::SUCCESS
}
