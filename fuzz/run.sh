#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a bounded time each.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS (default 60) each
#   fuzz/run.sh config          only the named targets (config, config_fields, query,
#                               cert_expiry)
#   FUZZ_SECONDS=600 fuzz/run.sh
#
# Installs cargo-fuzz from crates.io when missing. Uses the stable toolchain
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags); FUZZ_TOOLCHAIN=nightly
# uses a nightly instead. Builds with debug assertions (arithmetic overflow
# panics) and no sanitizer: the crate forbids unsafe code, and the
# sanitizer would halve the executions; FUZZ_SANITIZER=address turns it on.
# The targets are pure functions: no network, no files, no processes.
#
# Corpora grow in fuzz/corpus/TARGET (ignored by git), seeded from
# fuzz/seeds/TARGET. A crash is saved in fuzz/artifacts/TARGET/ and the
# script exits 1 after running every target; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none TARGET fuzz/artifacts/TARGET/crash-...
# then add it to tests/it/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
toolchain="${FUZZ_TOOLCHAIN:-stable}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config config_fields query cert_expiry)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if [ "$toolchain" = stable ]; then
    export RUSTC_BOOTSTRAP=1
fi

build=(cargo "+$toolchain" fuzz build --release --debug-assertions --sanitizer "$sanitizer")
run=(cargo "+$toolchain" fuzz run --release --debug-assertions --sanitizer "$sanitizer")

failed=()
for target in "${targets[@]}"; do
    "${build[@]}" "$target"
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    args=(-max_total_time="$seconds" -print_final_stats=1)
    if [ -f "fuzz/$target.dict" ]; then
        args+=(-dict="fuzz/$target.dict")
    fi
    log="fuzz/artifacts/$target.log"
    echo "fuzz: $target for ${seconds}s (log: $log)"
    corpora=("fuzz/corpus/$target")
    if [ -d "fuzz/seeds/$target" ]; then
        corpora+=("fuzz/seeds/$target")
    fi
    if "${run[@]}" "$target" "${corpora[@]}" -- "${args[@]}" >"$log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 || true)
        echo "fuzz: $target ok: ${runs:-see $log}"
    else
        echo "fuzz: $target FAILED: see $log and fuzz/artifacts/$target/" >&2
        grep -E 'panicked|ERROR|Test unit written' "$log" >&2 || true
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
