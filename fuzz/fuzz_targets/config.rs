//! The config parser and validator on arbitrary text: `Config::from_toml_str`
//! must return errors, never panic, and so must the lints and the error
//! and lint messages of whatever it returns.

#![no_main]

use healthproxy::config::{Config, ConfigErrors, lints};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // No environment, as most tests; then one where every `${VAR}` is set
    // to its own name, so arbitrary host names reach the lints.
    check(Config::from_toml_str(text, "fuzz", &|_: &str| None));
    check(Config::from_toml_str(text, "fuzz", &|name: &str| {
        Some(name.to_string())
    }));
});

fn check(result: Result<Config, ConfigErrors>) {
    match result {
        Ok(config) => {
            for lint in lints(&config) {
                let _ = lint.to_string();
            }
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an Err with no error");
            let _ = errors.to_string();
        }
    }
}
