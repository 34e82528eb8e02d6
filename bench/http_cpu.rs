//! The harness's http-check CPU helper: runs one `http` check RUNS times against URL on a current-thread
//! runtime, for callgrind: the instructions of (RUNS = 210) minus those of
//! (RUNS = 10), divided by 200, are one run's.
//!
//! ```not_rust
//! valgrind --tool=callgrind target/release/examples/bench-http-cpu URL RUNS [KEY=VALUE...]
//! ```
//!
//! The check's keys beyond the URL: `body_matches=PATTERN`, `ca_file=PEM`,
//! `cert_file=PEM`, `key_file=PEM`, `secret_header=NAME:VALUE` (a header
//! whose value is a secret, as `header_env` gives one); `bench-check-targets`
//! serves what they need. Only the client is in this binary, so that what callgrind counts
//! is compiled as in the product.

use std::time::Duration;

use healthproxy::check::HttpCheck;
use healthproxy::config::{HttpSpec, Pattern, SecretHeader, SecretSource};

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: bench-http-cpu URL RUNS [KEY=VALUE...]");
    let runs: usize = args.next().and_then(|r| r.parse().ok()).expect("RUNS");
    let mut spec = HttpSpec::from_url(&url).unwrap();
    for arg in args {
        let (key, value) = arg.split_once('=').expect("KEY=VALUE");
        match key {
            "body_matches" => spec.body_matches = Some(Pattern::new(value).unwrap()),
            "ca_file" => {
                spec.tls.ca_file = Some(value.into());
                spec.tls.insecure_skip_verify = false;
            }
            "cert_file" => spec.tls.cert_file = Some(value.into()),
            "key_file" => spec.tls.key_file = Some(value.into()),
            "secret_header" => {
                let (name, value) = value.split_once(':').expect("NAME:VALUE");
                spec.secret_headers.push(SecretHeader {
                    name: name.into(),
                    source: SecretSource::Env {
                        var: "BENCH_SECRET".into(),
                        value: value.into(),
                    },
                });
            }
            other => panic!("unknown key {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = HttpCheck::new(spec).unwrap();
    runtime.block_on(async {
        for _ in 0..runs {
            let outcome = check.run(Duration::from_secs(5)).await;
            assert!(outcome.verdict.is_success(), "{outcome:?}");
        }
    });
}
