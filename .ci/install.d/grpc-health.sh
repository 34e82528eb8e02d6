#!/usr/bin/env bash
# What tests/it/grpc_endpoint.rs needs: a gRPC health client from another
# ecosystem, Python's grpcio-health-checking (with grpcio), installed only
# when missing.
set -euo pipefail

if ! python3 -c "import grpc, grpc_health.v1.health_pb2_grpc" >/dev/null 2>&1; then
    echo "grpc-health: installing grpcio-health-checking"
    python3 -m pip install --quiet --disable-pip-version-check grpcio-health-checking
fi
python3 -c "import grpc, grpc_health.v1.health_pb2_grpc" \
    || { echo "grpc-health: grpcio-health-checking is still missing" >&2; exit 1; }
