"""A gRPC health client from another ecosystem (grpcio-health-checking),
driven by tests/it/grpc_endpoint.rs.

    grpc_health_client.py check ADDR SERVICE...   one line "SERVICE STATUS" each
    grpc_health_client.py watch ADDR SERVICE      one line per status received

STATUS is the ServingStatus name (SERVING, NOT_SERVING, SERVICE_UNKNOWN) or,
for a failed call, the gRPC status code's name (NOT_FOUND).
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def name(status):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def main():
    command, addr, services = sys.argv[1], sys.argv[2], sys.argv[3:]
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        if command == "check":
            for service in services:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                    print(repr(service), name(reply.status), flush=True)
                except grpc.RpcError as e:
                    print(repr(service), e.code().name, flush=True)
        elif command == "watch":
            for reply in stub.Watch(health_pb2.HealthCheckRequest(service=services[0])):
                print(name(reply.status), flush=True)
        else:
            sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
