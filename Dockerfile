# syntax=docker/dockerfile:1
#
# healthproxy's image: one static binary on an empty base (scratch), run as
# the non-root numeric user 65532. Nothing else is in it: no shell, no libc,
# no CA bundle (HTTPS checks verify only against a `ca_file` you mount).
#
#   docker build -t healthproxy .
#
# builds the binary in the `build` stage. To package a static binary built
# on the host instead (for the image's architecture), build the target
# `prebuilt` with a context that holds only that binary, named healthproxy:
#
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
#       --no-default-features --target x86_64-unknown-linux-gnu --target-dir target/static
#   mkdir -p target/image
#   cp target/static/x86_64-unknown-linux-gnu/release/healthproxy target/image/
#   podman build --format docker --target prebuilt -f Dockerfile -t healthproxy target/image
#
# The OCI image format has no HEALTHCHECK: podman and buildah keep it only
# with `--format docker`. Kubernetes ignores it either way (the pod's probes
# apply); Docker and podman use it.

ARG RUST_VERSION=1.95

# --- The binary: glibc linked statically (crt-static). Static glibc cannot
# load NSS modules, but its built-in `files` and `dns` lookups read the
# /etc/hosts and /etc/resolv.conf the kubelet mounts (docs/deploying.md);
# checks normally target 127.0.0.1, which needs no lookup.
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# The sidecar's image has no optional feature. The admission webhook's
# (deploy/webhook) is built with --build-arg FEATURES=webhook.
ARG FEATURES=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# The context has no .git (.dockerignore): the revision that --version and
# healthproxy_build_info show is this argument, `unknown` when not given:
#   docker build --build-arg REVISION="$(git rev-parse --short=12 HEAD)" .
ARG REVISION=unknown
RUN target="$(uname -m)-unknown-linux-gnu" \
    && HEALTHPROXY_GIT_REVISION="${REVISION}" RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --no-default-features --features "$FEATURES" --target "$target" --bin healthproxy \
    && install -D -m 0555 "target/$target/release/healthproxy" /out/healthproxy \
    && if ldd /out/healthproxy | grep -q '=>'; then echo "healthproxy is not static" >&2; exit 1; fi \
    && /out/healthproxy --version

# --- What every variant of the image shares: everything but the binary.
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="healthproxy" \
      org.opencontainers.image.description="Kubernetes sidecar: runs an app's health checks with the kubelet's semantics and serves /livez, /readyz and /startupz" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/deploying.md"
USER 65532:65532
EXPOSE 9775
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD ["/healthproxy", "probe", "http://127.0.0.1:9775/healthz"]
ENTRYPOINT ["/healthproxy"]
CMD ["run", "--config", "/etc/healthproxy/config.toml"]

# --- A binary built on the host (see the top of this file).
FROM runtime AS prebuilt
COPY --chmod=0555 healthproxy /healthproxy

# --- The default: the binary from the `build` stage.
FROM runtime AS image
COPY --from=build /out/healthproxy /healthproxy
