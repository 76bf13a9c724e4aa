"""Waits until a gRPC server answers health SERVING.

Usage: python wait_serving.py HOST:PORT PID TIMEOUT_SECONDS

Exits 0 once grpc.health.v1 Check("") says SERVING, 1 if the process PID
exits first or TIMEOUT_SECONDS pass. Used by scripts/test-python.sh.
"""

import os
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    addr, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with grpc.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not alive(pid):
                print(f"wait_serving: process {pid} exited", file=sys.stderr)
                return 1
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return 0
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            # Between polls only; the condition itself is what ends the wait.
            time.sleep(0.1)
    print(f"wait_serving: {addr} not SERVING after {timeout:.0f}s ({last})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
