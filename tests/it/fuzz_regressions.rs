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
        r#"[[check]]
name = "c0"
probes = ["readiness"]
period = "3110627432037296939s"
failure_threshold = 724249387
exec = { command = ["q"] }
"#,
        r#"[[check]]
name = "a"
probes = ["readiness"]
period = "18446744073709551615s"
timeout = "1s"
failure_threshold = 1
tcp = { port = 1 }
"#,
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
        r#"[[check]]
name = "a"
probes = ["readiness"]
period = "24h"
timeout = "24h"
failure_threshold = 4294967295
tcp = { port = 1 }
"#,
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

/// A certificate made by rcgen, expiring 2031-05-17 (`notAfter` the
/// UTCTime `310517000000Z`), with that time's 13 bytes replaced by `time`
/// (as many): what a server may present, signed or not.
pub(super) fn certificate_expiring_at(time: &[u8]) -> Vec<u8> {
    const WAS: &[u8] = b"310517000000Z";
    assert_eq!(time.len(), WAS.len(), "the same length keeps the DER valid");
    let mut params = rcgen::CertificateParams::new(vec!["app.internal".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut der = params.self_signed(&key).unwrap().der().to_vec();
    let at = der.windows(WAS.len()).position(|w| w == WAS).expect("notAfter");
    der[at..at + WAS.len()].copy_from_slice(time);
    der
}

/// fuzz/cert_expiry, seeds/cert_expiry/utctime-non-ascii: a `notAfter`
/// with a two-byte character across the end of the year's digits panicked
/// the certificate-expiry reader ("byte index 2 is not a char boundary",
/// src/check/http/expiry.rs slicing a `str`), so every run of an HTTPS or
/// gRPC-over-TLS check whose server presented such a certificate was
/// Unknown, which moves no threshold. Such a time is now unread (no
/// expiry metric), and the run goes on.
#[test]
fn a_non_ascii_certificate_time_is_unread_not_a_panic() {
    use healthproxy::check::certificate_not_after;
    let good = certificate_expiring_at(b"310517000000Z");
    // date -u -d 2031-05-17 +%s
    assert_eq!(
        certificate_not_after(&good),
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_936_742_400))
    );
    for time in [
        "3\u{e9}517000000Z",
        "\u{e9}0517000000Z",
        "3105170000\u{e9}Z",
        "31\u{2603}7000000Z",
    ] {
        let der = certificate_expiring_at(time.as_bytes());
        assert_eq!(certificate_not_after(&der), None, "{time:?}");
        for cut in 0..der.len() {
            let _ = certificate_not_after(&der[..cut]);
        }
    }
}
