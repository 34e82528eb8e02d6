//! Build metadata for `--version` and `healthproxy_build_info`: the git
//! revision and the rustc version, passed to the crate as environment
//! variables.
//!
//! `HEALTHPROXY_GIT_REVISION`, when set, is taken as the revision: image
//! builds copy the sources without `.git` and pass it as a build argument.
//! Otherwise `git rev-parse` is asked, and a build outside a repository (a
//! tarball, a vendored crate) says `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HEALTHPROXY_GIT_REVISION");
    let revision = match std::env::var("HEALTHPROXY_GIT_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => git_revision().unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=HEALTHPROXY_GIT_REVISION={revision}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(Command::new(rustc).arg("--version"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HEALTHPROXY_RUSTC_VERSION={rustc_version}");
}

/// The checked-out commit, abbreviated; rebuilds when HEAD moves.
fn git_revision() -> Option<String> {
    let revision = output(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]))?;
    // HEAD names a branch whose ref file (or packed-refs) moves on commit.
    for path in ["HEAD", "packed-refs"] {
        watch(output(Command::new("git").args([
            "rev-parse",
            "--git-path",
            path,
        ])));
    }
    let branch = output(Command::new("git").args(["symbolic-ref", "-q", "HEAD"]));
    if let Some(branch) = branch {
        watch(output(Command::new("git").args([
            "rev-parse",
            "--git-path",
            &branch,
        ])));
    }
    Some(revision)
}

fn watch(path: Option<String>) {
    if let Some(path) = path.map(PathBuf::from).filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// A command's trimmed standard output, if it ran and succeeded.
fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}
