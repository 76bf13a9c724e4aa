"""Helpers for tests of any service: fresh ids, the error details Laurel
attaches to a failed call (AIP-193), read with grpc_status as clients do,
and polling for what events carry between services."""

from __future__ import annotations

import random
import time
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def new_program() -> str:
    """A programme id no other test uses, so tests cannot see each other's data."""
    return f"py-{uuid.uuid4().hex[:16]}"


def new_request_id() -> str:
    """A fresh idempotency key (AIP-155 request_id)."""
    return str(uuid.uuid4())


def new_phone() -> str:
    """A German mobile number in E.164 that no earlier run is likely to hold."""
    return f"+49151{random.randrange(10**8):08d}"


def new_email() -> str:
    return f"py-{uuid.uuid4().hex}@example.com"


def details(err: grpc.RpcError) -> list:
    """The google.rpc.Status details of a failed call, unpacked."""
    status = rpc_status.from_call(err)
    assert status is not None, f"{err.code()} carries no google.rpc.Status: {err.details()}"
    assert status.code == err.code().value[0], "status code differs from the call's"
    out = []
    for any_detail in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if any_detail.Is(cls.DESCRIPTOR):
                msg = cls()
                any_detail.Unpack(msg)
                out.append(msg)
    return out


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of a failed call."""
    infos = [d for d in details(err) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, f"expected one ErrorInfo, got {infos}"
    return infos[0]


def field_violations(err: grpc.RpcError) -> dict[str, str]:
    """BadRequest field violations of a failed call: field -> description."""
    bad = [d for d in details(err) if isinstance(d, error_details_pb2.BadRequest)]
    assert len(bad) == 1, f"expected one BadRequest, got {bad}"
    return {v.field: v.description for v in bad[0].field_violations}


def rpc_error(call) -> grpc.RpcError:
    """The error a call that must fail raised."""
    try:
        call()
    except grpc.RpcError as err:
        return err
    raise AssertionError("the call succeeded; it should have failed")


def eventually(what: str, check, wait_s: float = 15.0, every_s: float = 0.1):
    """Polls `check` until it returns something truthy and returns that
    (events travel between services asynchronously). A call failing in the
    meantime counts as not yet; the last answer or error is in the failure."""
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        try:
            last = check()
            if last:
                return last
        except grpc.RpcError as err:
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still {last!r} after {wait_s}s")
        time.sleep(every_s)
