//! What this binary is: its version, the git revision it was built from
//! and the rustc that built it (`--version`, `healthproxy_build_info`).
//! The revision is `unknown` for a build outside a git checkout that was
//! not given `HEALTHPROXY_GIT_REVISION` (build.rs).

/// The crate's version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit, abbreviated, or `unknown`.
pub const REVISION: &str = env!("HEALTHPROXY_GIT_REVISION");
/// The version of rustc that built the binary, such as `1.95.0`.
pub const RUSTC_VERSION: &str = env!("HEALTHPROXY_RUSTC_VERSION");
/// `--version`'s text after the program name.
pub(crate) const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("HEALTHPROXY_GIT_REVISION"),
    ", rustc ",
    env!("HEALTHPROXY_RUSTC_VERSION"),
    ")"
);
