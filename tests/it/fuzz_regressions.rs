//! Inputs the fuzzers of `fuzz/` found crashing, each replayed through the
//! same public API as its target, named for what it broke.

use healthproxy::config::{Config, lints};

/// fuzz/config_fields, crash-52a1659535a59bacddf95a5dc355a0700bb2def9: a
/// readiness check whose `period x failure_threshold` did not fit in a
/// `Duration` panicked in `lints` ("overflow when multiplying duration by
/// scalar", src/config/lint.rs), so `check-config` died instead of
/// reporting. Such periods are now a config error naming the key, and the
/// largest valid values lint without panicking.
#[test]
fn absurd_periods_are_config_errors_not_panics() {
    for text in [
        "[[check]]\nname = \"c0\"\nprobes = [\"readiness\"]\n\
         period = \"3110627432037296939s\"\nfailure_threshold = 724249387\n\
         exec = { command = [\"q\"] }\n",
        "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\nperiod = \"18446744073709551615s\"\n\
         timeout = \"1s\"\nfailure_threshold = 1\ntcp = { port = 1 }\n",
    ] {
        let errors = Config::from_toml_str(text, "fuzz", &|_: &str| None).unwrap_err();
        assert_eq!(errors.errors[0].key, "period", "{errors}");
        assert!(errors.to_string().contains("longer than a day"), "{errors}");
    }
}

/// The largest valid `period x failure_threshold + timeout` still lints.
#[test]
fn the_largest_valid_thresholds_lint_without_overflow() {
    let config = Config::from_toml_str(
        "[[check]]\nname = \"a\"\nprobes = [\"readiness\"]\nperiod = \"24h\"\ntimeout = \"24h\"\n\
         failure_threshold = 4294967295\ntcp = { port = 1 }\n",
        "fuzz",
        &|_: &str| None,
    )
    .unwrap();
    assert!(
        lints(&config)
            .iter()
            .any(|l| l.message.contains("stays in rotation"))
    );
}
