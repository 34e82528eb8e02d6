#!/usr/bin/env bash
# Runs healthproxy on config.example.toml in front of the demo app
# (examples/demo-app.rs). Needs only a Rust toolchain (and curl to try it).
#
#   ./demo.sh            build, start the demo app, run the sidecar on :9775
#
# Ctrl-C stops both: the sidecar drains (readiness fails, drain.min 5s), then
# exits once the app has stopped listening on 8080.
set -euo pipefail

cd "$(dirname "$0")"

target="${CARGO_TARGET_DIR:-target}"
app_http="127.0.0.1:8080"
app_grpc="127.0.0.1:8081"
heartbeat="/tmp/healthproxy-demo/heartbeat"

cargo build --bin healthproxy --example demo-app

answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

if answers "$app_http"; then
    echo "demo.sh: something already listens on $app_http; stop it first" >&2
    exit 1
fi

app_pid=""
cleanup() {
    if [[ -n "$app_pid" ]] && kill -0 "$app_pid" 2>/dev/null; then
        kill "$app_pid" 2>/dev/null || true
        wait "$app_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$target/debug/examples/demo-app" --http "$app_http" --grpc "$app_grpc" --heartbeat "$heartbeat" &
app_pid=$!

# Wait for the app's HTTP port, for at most 10 seconds.
deadline=$((SECONDS + 10))
until answers "$app_http"; do
    if ! kill -0 "$app_pid" 2>/dev/null; then
        echo "demo.sh: the demo app exited; is $app_http or $app_grpc already in use?" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "demo.sh: the demo app does not answer on $app_http after 10s" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<EOF

healthproxy is starting on :9775 in front of the demo app on $app_http.
In another terminal, try:

  curl localhost:9775/readyz?verbose          # every check of the readiness probe
  curl localhost:9775/livez?verbose
  curl localhost:9775/startupz?verbose
  curl 'localhost:9775/readyz?format=json'
  curl -X POST localhost:8080/fail            # the app starts failing: watch the checks fail
  curl localhost:8080/recover                 # ... and recover
  curl -X POST localhost:9775/drain           # start a drain: /readyz answers 503 from now on

Ctrl-C stops both.

EOF

"$target/debug/healthproxy" run --config config.example.toml
