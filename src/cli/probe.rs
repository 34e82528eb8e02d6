//! `healthproxy probe URL`: one HTTP GET with the kubelet's semantics, for
//! Docker `HEALTHCHECK` and exec probes in images without curl. Exit 0 for
//! 200–399, 1 otherwise, with a one-line reason on stderr. With `-v`, the
//! answer's body (its first 10 KiB) on stdout and the verdict on stderr
//! either way: `kubectl describe pod` never shows a probe's body.

use std::process::ExitCode;
use std::time::Duration;

use crate::check::HttpCheck;
use crate::config::HttpSpec;

pub(super) fn probe(url: &str, timeout: Duration, headers: &[String], verbose: bool) -> ExitCode {
    let mut spec = match HttpSpec::from_url(url) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    for h in headers {
        match h.split_once(':') {
            Some((name, value)) => spec
                .headers
                .push((name.trim().to_string(), value.trim().to_string())),
            None => {
                eprintln!("--header {h:?}: write it as \"Name: value\"");
                return ExitCode::from(super::EXIT_CONFIG);
            }
        }
    }
    let unwritten = url.parse::<hyper::Uri>().is_ok_and(|u| u.port().is_none());
    let check = match HttpCheck::new(spec) {
        Ok(check) => {
            let check = if unwritten { check.port_unwritten() } else { check };
            if verbose { check.keep_body() } else { check }
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(check.run(timeout)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if verbose {
        use std::io::Write as _;
        let body = check.body().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&body);
        if !body.is_empty() && !body.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
        if outcome.verdict.is_success() {
            eprintln!("{}", outcome.message);
        }
    }
    if outcome.verdict.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", outcome.message);
        ExitCode::FAILURE
    }
}
