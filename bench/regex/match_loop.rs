//! The loop behind the regex-crate table in BENCHMARKS.md: compile a
//! pattern and match it against a 10 KiB body whose only match is at its
//! end. Not built with the project: the `src/main.rs` of a scratch crate
//! depending on `regex` (or on `regex-lite`, with `regex::` replaced).
//! Run as `NAME PATTERN ITERATIONS`.

use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let re = regex::Regex::new(&args[1]).unwrap();
    let mut body = String::new();
    while body.len() < 10 * 1024 { body.push_str("{\"status\":\"starting\",\"checks\":[{\"db\":\"up\"},{\"cache\":\"up\"}]} "); }
    body.truncate(10 * 1024 - 40);
    body.push_str("{\"status\":\"ready\"}");
    let n: u32 = args[2].parse().unwrap();
    let t = Instant::now();
    let mut hits = 0;
    for _ in 0..n { let r = regex::Regex::new(&args[1]).unwrap(); if r.is_match(std::hint::black_box(&body)) { hits += 1; } }
    let compile_and_match = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n { if re.is_match(std::hint::black_box(&body)) { hits += 1; } }
    println!("{} compile+match {:?} match {:?} hits {}", env!("CARGO_PKG_NAME"), compile_and_match, t.elapsed() / n, hits);
}
