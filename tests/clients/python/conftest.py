"""Fixtures for the Python client suite: generated stubs, channels, metadata.

The suite talks to real running Laurel services. Each service's address comes
from `LAUREL_<SERVICE>_ADDR` (host:port), for example `LAUREL_MEMBER_ADDR`;
`scripts/test-python.sh` starts the services and sets them. When a service's
address is missing its tests fail rather than skip, so a broken setup cannot
pass as green.

Stubs are generated from `proto/` with grpcio-tools when the suite starts,
into a temporary directory put first on `sys.path`, so tests import them as
`from laurel.member.v1 import member_pb2`.

Each service has a session-wide channel fixture (`member_channel`,
`points_channel`, `tier_channel`, `analytics_channel`) and a stub fixture
(`member`, `points`, `tier`, `analytics`). To add a service (say campaign):
add a `campaign_channel` fixture with `_channel("campaign")` and a
`campaign` stub fixture beside the others below, start it in
scripts/test-python.sh, then write `test_campaign.py` with its calls.
Metadata (`md`, `md_for`) and the fresh programme per test (`program`) work
for every service.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import grpc
import pytest
from grpc_tools import protoc

from support import new_program

REPO = pathlib.Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO / "proto"
CONNECT_TIMEOUT_S = 15.0
# Every call gets a deadline so a hung server fails the test instead of the run.
CALL_TIMEOUT_S = 10.0


def generate_stubs(proto_root: pathlib.Path, out_dir: pathlib.Path) -> list[str]:
    """Generates *_pb2.py and *_pb2_grpc.py for every .proto under proto_root."""
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {proto_root}")
    # google/protobuf/*.proto ship inside grpcio-tools.
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_root}")
    return protos


def _install_stubs() -> None:
    out = pathlib.Path(tempfile.mkdtemp(prefix="laurel-py-stubs-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    generate_stubs(PROTO_ROOT, out)
    sys.path.insert(0, str(out))


# Before the test modules are collected, so they can import the stubs at the top.
_install_stubs()

from grpc_health.v1 import health_pb2_grpc  # noqa: E402
from laurel.analytics.v1 import analytics_pb2_grpc  # noqa: E402
from laurel.common.v1 import echo_pb2_grpc  # noqa: E402
from laurel.member.v1 import member_pb2_grpc  # noqa: E402
from laurel.points.v1 import points_pb2_grpc  # noqa: E402
from laurel.tier.v1 import tier_pb2_grpc  # noqa: E402


def service_addr(service: str) -> str:
    """The host:port of a running service, from LAUREL_<SERVICE>_ADDR."""
    var = f"LAUREL_{service.upper()}_ADDR"
    addr = os.environ.get(var, "").strip()
    if not addr:
        pytest.fail(f"{var} is not set: run the suite with scripts/test-python.sh", pytrace=False)
    # Accept a URL too, as the Rust tools take one.
    for scheme in ("http://", "grpc://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme):]
    return addr.rstrip("/")


def _channel(service: str):
    addr = service_addr(service)
    channel = grpc.insecure_channel(addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        channel.close()
        pytest.fail(f"{service} at {addr} did not accept a connection", pytrace=False)
    return channel


class _Method:
    """A stub's method with a default deadline; `with_call` also returns
    the call, for its response headers."""

    def __init__(self, method):
        self._method = method

    def __call__(self, request, **kwargs):
        kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        return self._method(request, **kwargs)

    def with_call(self, request, **kwargs):
        kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        return self._method.with_call(request, **kwargs)


class Stub:
    """A generated stub whose unary calls get a default deadline."""

    def __init__(self, stub):
        self._stub = stub

    def __getattr__(self, name):
        return _Method(getattr(self._stub, name))


@pytest.fixture(scope="session")
def member_channel():
    channel = _channel("member")
    yield channel
    channel.close()


@pytest.fixture
def member(member_channel):
    """laurel.member.v1.MemberService."""
    return Stub(member_pb2_grpc.MemberServiceStub(member_channel))


@pytest.fixture(scope="session")
def points_channel():
    channel = _channel("points")
    yield channel
    channel.close()


@pytest.fixture
def points(points_channel):
    """laurel.points.v1.PointsService."""
    return Stub(points_pb2_grpc.PointsServiceStub(points_channel))


@pytest.fixture
def points_health(points_channel):
    """grpc.health.v1.Health of the points service."""
    return Stub(health_pb2_grpc.HealthStub(points_channel))


@pytest.fixture(scope="session")
def tier_channel():
    channel = _channel("tier")
    yield channel
    channel.close()


@pytest.fixture
def tier(tier_channel):
    """laurel.tier.v1.TierService."""
    return Stub(tier_pb2_grpc.TierServiceStub(tier_channel))


@pytest.fixture(scope="session")
def analytics_channel():
    channel = _channel("analytics")
    yield channel
    channel.close()


@pytest.fixture
def analytics(analytics_channel):
    """laurel.analytics.v1.AnalyticsService."""
    return Stub(analytics_pb2_grpc.AnalyticsServiceStub(analytics_channel))


@pytest.fixture
def echo(member_channel):
    """laurel.common.v1.EchoService as the member service serves it."""
    return Stub(echo_pb2_grpc.EchoServiceStub(member_channel))


@pytest.fixture
def health(member_channel):
    """grpc.health.v1.Health of the member service."""
    return Stub(health_pb2_grpc.HealthStub(member_channel))


@pytest.fixture
def program() -> str:
    return new_program()


@pytest.fixture
def md_for():
    """Builds call metadata for a programme: x-laurel-program, plus x-api-key
    when LAUREL_API_KEY is set."""
    api_key = os.environ.get("LAUREL_API_KEY", "")

    def build(program: str) -> tuple[tuple[str, str], ...]:
        md = [("x-laurel-program", program)]
        if api_key:
            md.append(("x-api-key", api_key))
        return tuple(md)

    return build


@pytest.fixture
def md(md_for, program):
    """Call metadata for this test's own programme."""
    return md_for(program)
