"""laurel.member.v1.MemberService as a Python client sees it."""

import grpc
import pytest

from laurel.common.v1 import money_pb2
from laurel.member.v1 import member_pb2 as pb
from support import (
    error_info,
    field_violations,
    new_email,
    new_phone,
    new_program,
    new_request_id,
)


def phone(value: str) -> pb.Identity:
    return pb.Identity(type=pb.IDENTITY_TYPE_PHONE, value=value)


def create_request(phone_number: str, request_id: str | None = None) -> pb.CreateMemberRequest:
    return pb.CreateMemberRequest(
        request_id=request_id or new_request_id(),
        profile=pb.Profile(given_name="Ada", family_name="Lovelace", region="DE"),
        identities=[
            phone(phone_number),
            pb.Identity(type=pb.IDENTITY_TYPE_EMAIL, value=new_email()),
        ],
        tags=["python"],
    )


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def test_create_then_get_and_lookup_return_the_member(member, md, program):
    number = new_phone()
    created = member.CreateMember(create_request(number), metadata=md).member
    assert created.member_id
    assert created.program_id == program
    assert created.status == pb.MEMBER_STATUS_ACTIVE
    assert created.profile.given_name == "Ada"
    assert list(created.tags) == ["python"]
    assert created.version >= 1

    got = member.GetMember(pb.GetMemberRequest(member_id=created.member_id), metadata=md).member
    assert got.member_id == created.member_id
    assert got.profile.family_name == "Lovelace"
    assert got.version == created.version

    found = member.LookupMember(pb.LookupMemberRequest(identity=phone(number)), metadata=md).member
    assert found.member_id == created.member_id
    assert number in [i.value for i in found.identities if i.type == pb.IDENTITY_TYPE_PHONE]


def test_a_retry_with_the_same_request_id_returns_the_same_member(member, md):
    request = create_request(new_phone())
    first = member.CreateMember(request, metadata=md).member
    again = member.CreateMember(request, metadata=md).member
    assert again.member_id == first.member_id
    assert again.version == first.version
    assert again.enrolled_at == first.enrolled_at


def test_a_reused_request_id_with_another_request_is_already_exists(member, md):
    request_id = new_request_id()
    member.CreateMember(create_request(new_phone(), request_id), metadata=md)

    err = rpc_error(
        lambda: member.CreateMember(create_request(new_phone(), request_id), metadata=md)
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(err)
    assert info.reason == "REQUEST_ID_REUSED"
    assert info.domain == "laurel.member"


def test_a_bad_request_names_each_bad_field(member, md):
    request = pb.CreateMemberRequest(
        request_id="",
        profile=pb.Profile(birth_date="31.12.1990"),
        identities=[pb.Identity(type=pb.IDENTITY_TYPE_EMAIL, value="not-an-email")],
    )
    err = rpc_error(lambda: member.CreateMember(request, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert set(violations) == {
        "request_id",
        "profile.birth_date",
        "identities[0].value",
    }, violations
    assert all(violations.values()), f"a violation without a description: {violations}"
    assert error_info(err).domain == "laurel.member"


def test_a_member_is_invisible_to_another_programme(member, md, md_for):
    number = new_phone()
    created = member.CreateMember(create_request(number), metadata=md).member
    other = md_for(new_program())

    err = rpc_error(
        lambda: member.GetMember(pb.GetMemberRequest(member_id=created.member_id), metadata=other)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err).reason == "MEMBER_NOT_FOUND"

    err = rpc_error(
        lambda: member.LookupMember(pb.LookupMemberRequest(identity=phone(number)), metadata=other)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND

    listed = member.ListMembers(pb.ListMembersRequest(page_size=500), metadata=other).members
    assert created.member_id not in [m.member_id for m in listed]


def test_a_bad_programme_header_is_a_field_violation(member, md_for):
    err = rpc_error(
        lambda: member.GetMember(
            pb.GetMemberRequest(member_id=new_request_id()), metadata=md_for("Not A Programme")
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-laurel-program" in field_violations(err)


def purchase(order_id: str, amount_minor: int) -> pb.Activity:
    return pb.Activity(
        source="py",
        external_id=order_id,
        purchase=pb.Purchase(
            order_id=order_id,
            total=money_pb2.Money(currency_code="EUR", amount_minor=amount_minor),
        ),
    )


def test_export_activities_streams_the_programme_in_batches_and_resumes(member, md):
    ada = member.CreateMember(create_request(new_phone()), metadata=md).member
    bob = member.CreateMember(create_request(new_phone()), metadata=md).member
    recorded = []
    for who in (ada, bob, ada):
        recorded.append(
            member.RecordActivity(
                pb.RecordActivityRequest(
                    member_id=who.member_id, activity=purchase(new_request_id(), 1000)
                ),
                metadata=md,
            ).activity
        )
    recorded.append(
        member.RecordActivity(
            pb.RecordActivityRequest(guest=True, activity=purchase(new_request_id(), 2000)),
            metadata=md,
        ).activity
    )

    batches = list(member.ExportActivities(pb.ExportActivitiesRequest(batch_size=3), metadata=md))
    assert [len(b.activities) for b in batches] == [3, 1]
    exported = [a for b in batches for a in b.activities]
    assert [a.activity_id for a in exported] == [a.activity_id for a in recorded]
    assert exported == recorded
    assert exported[-1].member_id == ""
    assert batches[0].last_activity_id == exported[2].activity_id

    rest = list(
        member.ExportActivities(
            pb.ExportActivitiesRequest(after_activity_id=batches[0].last_activity_id),
            metadata=md,
        )
    )
    assert [a.activity_id for b in rest for a in b.activities] == [recorded[3].activity_id]

    err = rpc_error(
        lambda: list(
            member.ExportActivities(pb.ExportActivitiesRequest(batch_size=5001), metadata=md)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == ["batch_size"]


def test_a_guest_purchase_is_recorded_once_without_a_member(member, md):
    request = pb.RecordActivityRequest(guest=True, activity=purchase(new_request_id(), 4999))
    first = member.RecordActivity(request, metadata=md)
    assert first.created
    assert first.activity.member_id == ""
    assert first.activity.type == pb.ACTIVITY_TYPE_PURCHASE
    again = member.RecordActivity(request, metadata=md)
    assert not again.created
    assert again.activity == first.activity

    someone = member.CreateMember(create_request(new_phone()), metadata=md).member
    named = pb.RecordActivityRequest(
        guest=True, member_id=someone.member_id, activity=purchase(new_request_id(), 100)
    )
    err = rpc_error(lambda: member.RecordActivity(named, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == ["member_id"]

    listed = member.ListActivities(
        pb.ListActivitiesRequest(member_id=someone.member_id), metadata=md
    ).activities
    assert list(listed) == []
