//! The harness's http-check CPU helper: runs one `http` check RUNS times against URL on a current-thread
//! runtime, for callgrind: the instructions of (RUNS = 210) minus those of
//! (RUNS = 10), divided by 200, are one run's.
//!
//! ```not_rust
//! valgrind --tool=callgrind target/release/examples/bench-http-cpu URL RUNS
//! ```

use std::time::Duration;

use healthproxy::check::HttpCheck;
use healthproxy::config::HttpSpec;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: bench-http-cpu URL RUNS");
    let runs: usize = args.next().and_then(|r| r.parse().ok()).expect("RUNS");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = HttpCheck::new(HttpSpec::from_url(&url).unwrap()).unwrap();
    runtime.block_on(async {
        for _ in 0..runs {
            let outcome = check.run(Duration::from_secs(5)).await;
            assert!(outcome.verdict.is_success(), "{outcome:?}");
        }
    });
}
