#!/usr/bin/env python3
"""An independent server-reflection client for Baton's gRPC APIs: none of
Baton's own code, and no .proto files either.

It speaks grpc.reflection.v1alpha only (grpcio-reflection's descriptor
database), as grpcurl before 1.9, older Postman, Evans and grpcui do, so it
shows that such tools work against Baton unaided:

    .tools/venv/bin/python tests/python/baton_reflection_client.py \\
        --address 127.0.0.1:50052 --expect-service baton.query.v1.CareStateQuery

It lists the services, resolves every method of each service (Baton's and health checking) from the
descriptors the server sends, and resolves google.rpc.BadRequest (the error
details of INVALID_ARGUMENT) with its field violations. It prints one JSON
line per finding on stdout and exits non-zero, naming what is missing, when
the server does not answer as reflection promises.
"""

from __future__ import annotations

import argparse
import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="HOST:PORT of a gRPC API")
    parser.add_argument(
        "--expect-service",
        action="append",
        default=[],
        help="a service the server must list (repeatable)",
    )
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.address)
    try:
        grpc.channel_ready_future(channel).result(timeout=15)
    except grpc.FutureTimeoutError:
        print(f"error: no gRPC server at {args.address}", file=sys.stderr)
        return 1
    database = ProtoReflectionDescriptorDatabase(channel)
    try:
        services = sorted(database.get_services())
    except grpc.RpcError as err:
        print(
            f"error: grpc.reflection.v1alpha ListServices failed: {err.code().name}: {err.details()}",
            file=sys.stderr,
        )
        return 1
    print(json.dumps({"services": services}))
    missing = [s for s in args.expect_service if s not in services]
    if missing:
        print(f"error: services not listed: {missing}", file=sys.stderr)
        return 1

    pool = DescriptorPool(database)
    for name in services:
        # The reflection services describe themselves from descriptors of
        # their own; every other service listed must resolve from what the
        # server sends: Baton's APIs and grpc.health.v1.Health.
        if name.startswith("grpc.reflection."):
            continue
        try:
            service = pool.FindServiceByName(name)
        except KeyError as err:
            print(f"error: service {name} does not resolve: {err}", file=sys.stderr)
            return 1
        methods = [
            {
                "method": method.name,
                "input": method.input_type.full_name,
                "output": method.output_type.full_name,
            }
            for method in service.methods
        ]
        print(json.dumps({"service": name, "methods": methods}))

    try:
        bad_request = pool.FindMessageTypeByName("google.rpc.BadRequest")
    except KeyError as err:
        print(f"error: google.rpc.BadRequest does not resolve: {err}", file=sys.stderr)
        return 1
    violation = bad_request.fields_by_name["field_violations"].message_type
    print(
        json.dumps(
            {
                "resolved": bad_request.full_name,
                "fields": [f.name for f in bad_request.fields],
                "violation": violation.full_name,
                "violation_fields": [f.name for f in violation.fields],
            }
        )
    )
    status = pool.FindMessageTypeByName("google.rpc.Status")
    print(json.dumps({"resolved": status.full_name, "fields": [f.name for f in status.fields]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
