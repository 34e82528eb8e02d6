//! The `healthproxy` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    healthproxy::cli::main()
}
