"""What every Laurel server offers beside its own RPCs: echo, health, reflection.

The member service stands in for all of them here; another service's suite
can reuse these checks with its own channel fixture.
"""

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from laurel.common.v1 import echo_pb2

MEMBER_SERVICE = "laurel.member.v1.MemberService"


def test_echo_returns_the_payload(echo, md):
    reply = echo.Echo(echo_pb2.EchoRequest(payload=b"\x00python\xff"), metadata=md)
    assert reply.payload == b"\x00python\xff"


def test_health_is_serving_for_the_server_and_the_service(health):
    for service in ("", MEMBER_SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_health_of_an_unknown_service_is_not_found(health):
    try:
        health.Check(health_pb2.HealthCheckRequest(service="laurel.nope.v1.Nope"))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("an unknown service was reported healthy")


def test_reflection_v1alpha_lists_and_describes_the_services(member_channel):
    db = ProtoReflectionDescriptorDatabase(member_channel)
    services = set(db.get_services())
    assert {
        MEMBER_SERVICE,
        "laurel.common.v1.EchoService",
        "grpc.health.v1.Health",
    } <= services, services

    pool = descriptor_pool.DescriptorPool(db)
    methods = {m.name for m in pool.FindServiceByName(MEMBER_SERVICE).methods}
    assert {"CreateMember", "GetMember", "LookupMember", "UpdateMember"} <= methods
    # The request types resolve through reflection too, imports included.
    request = pool.FindMessageTypeByName("laurel.member.v1.CreateMemberRequest")
    assert "profile" in request.fields_by_name


def test_reflection_v1_lists_the_services(member_channel):
    # grpcio-reflection ships only v1alpha messages; v1 has the same wire
    # format under another package, so they serve for a raw v1 call.
    call = member_channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    replies = list(
        call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    )
    assert len(replies) == 1
    names = {s.name for s in replies[0].list_services_response.service}
    assert MEMBER_SERVICE in names, names
    assert "grpc.reflection.v1.ServerReflection" in names, names
