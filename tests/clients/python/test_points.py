"""laurel.points.v1.PointsService as a Python client sees it, beside the
member service it asks about members and that shows its balances on the
member card."""

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from laurel.common.v1 import money_pb2
from laurel.member.v1 import member_pb2 as mpb
from laurel.points.v1 import points_pb2 as pb
from support import error_info, field_violations, new_email, new_phone, new_request_id

POINTS_SERVICE = "laurel.points.v1.PointsService"


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


@pytest.fixture
def member_id(member, md) -> str:
    """A member of this test's programme, created at the member service."""
    created = member.CreateMember(
        mpb.CreateMemberRequest(
            request_id=new_request_id(),
            profile=mpb.Profile(given_name="Grace", family_name="Hopper", region="US"),
            identities=[
                mpb.Identity(type=mpb.IDENTITY_TYPE_PHONE, value=new_phone()),
                mpb.Identity(type=mpb.IDENTITY_TYPE_EMAIL, value=new_email()),
            ],
        ),
        metadata=md,
    ).member
    return created.member_id


def goodwill(member_id: str, points: int, request_id: str | None = None) -> pb.EarnRequest:
    return pb.EarnRequest(
        request_id=request_id or new_request_id(),
        member_id=member_id,
        kind=pb.EARN_KIND_GOODWILL,
        points=points,
        reason="sorry for the late parcel",
        reference="ticket-42",
    )


def discount(member_id: str, points: int) -> pb.RedeemRequest:
    return pb.RedeemRequest(
        request_id=new_request_id(),
        member_id=member_id,
        order=pb.OrderDiscount(
            order_id=f"o-{new_request_id()[:8]}",
            order_total=money_pb2.Money(currency_code="EUR", amount_minor=100_000),
        ),
        points=points,
    )


def balance(points, md, member_id: str) -> pb.Balance:
    return points.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=md).balance


def test_a_goodwill_earn_is_in_the_balance_and_the_statement(points, md, member_id):
    earned = points.Earn(goodwill(member_id, 1240), metadata=md)
    assert earned.movement.movement_id
    assert earned.movement.type == pb.MOVEMENT_TYPE_EARN
    assert earned.movement.earn_kind == pb.EARN_KIND_GOODWILL
    assert earned.movement.points == 1240
    assert sum(e.points for e in earned.movement.entries) == 0, "entries must balance"
    assert earned.balance.available == 1240

    now = balance(points, md, member_id)
    assert (now.available, now.pending, now.held, now.total) == (1240, 0, 0, 1240)
    assert now.lifetime_earned == 1240

    lines = points.ListEntries(pb.ListEntriesRequest(member_id=member_id), metadata=md).lines
    assert [(line.movement.movement_id, line.balance_after) for line in lines] == [
        (earned.movement.movement_id, 1240)
    ]
    assert lines[0].movement.reference == "ticket-42"


def test_a_redemption_spends_points_for_a_discount(points, md, member_id):
    points.Earn(goodwill(member_id, 500), metadata=md)
    redeemed = points.Redeem(discount(member_id, 120), metadata=md)
    assert redeemed.movement.type == pb.MOVEMENT_TYPE_REDEEM
    assert redeemed.movement.points == -120
    # The default rate: 1 minor unit per point.
    assert (redeemed.discount.currency_code, redeemed.discount.amount_minor) == ("EUR", 120)
    assert balance(points, md, member_id).available == 380


def test_redeeming_more_than_the_balance_is_failed_precondition(points, md, member_id):
    points.Earn(goodwill(member_id, 100), metadata=md)

    err = rpc_error(lambda: points.Redeem(discount(member_id, 101), metadata=md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err)
    assert (info.reason, info.domain) == ("INSUFFICIENT_POINTS", "laurel.points")
    assert balance(points, md, member_id).available == 100, "a refused redemption changed the balance"


def test_a_retried_earn_returns_the_first_answer_and_earns_once(points, md, member_id):
    request = goodwill(member_id, 300)
    first = points.Earn(request, metadata=md)
    again = points.Earn(request, metadata=md)
    assert again.movement.movement_id == first.movement.movement_id
    assert again.balance.available == first.balance.available == 300
    assert balance(points, md, member_id).available == 300


def test_a_reused_request_id_with_another_request_is_already_exists(points, md, member_id):
    request_id = new_request_id()
    points.Earn(goodwill(member_id, 10, request_id), metadata=md)

    err = rpc_error(lambda: points.Earn(goodwill(member_id, 11, request_id), metadata=md))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(err).reason == "REQUEST_ID_REUSED"
    assert balance(points, md, member_id).available == 10


@pytest.mark.parametrize("amount", [0, -5, 10**12 + 1])
def test_points_out_of_bounds_are_a_field_violation(points, md, member_id, amount):
    err = rpc_error(lambda: points.Earn(goodwill(member_id, amount), metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert set(violations) == {"points"}, violations
    assert violations["points"]
    assert error_info(err).domain == "laurel.points"
    assert balance(points, md, member_id).total == 0, "a refused earn changed the balance"


def test_a_hold_reserves_points_and_a_capture_spends_part_of_it(points, md, member_id):
    points.Earn(goodwill(member_id, 500), metadata=md)

    held = points.Hold(
        pb.HoldRequest(
            request_id=new_request_id(), member_id=member_id, points=200, reference="checkout-1"
        ),
        metadata=md,
    )
    assert held.hold.status == pb.HOLD_STATUS_ACTIVE
    assert (held.balance.available, held.balance.held, held.balance.total) == (300, 200, 500)

    captured = points.Capture(
        pb.CaptureRequest(
            request_id=new_request_id(), hold_id=held.hold.hold_id, points=150, order_id="o-1"
        ),
        metadata=md,
    )
    assert captured.hold.status == pb.HOLD_STATUS_CAPTURED
    assert captured.hold.captured == 150
    assert captured.movement.type == pb.MOVEMENT_TYPE_CAPTURE
    assert captured.movement.points == -150
    now = balance(points, md, member_id)
    assert (now.available, now.held, now.total) == (350, 0, 350)


def test_a_released_hold_gives_the_points_back(points, md, member_id):
    points.Earn(goodwill(member_id, 80), metadata=md)
    held = points.Hold(
        pb.HoldRequest(request_id=new_request_id(), member_id=member_id, points=80), metadata=md
    )
    assert balance(points, md, member_id).available == 0

    released = points.Release(
        pb.ReleaseRequest(request_id=new_request_id(), hold_id=held.hold.hold_id), metadata=md
    )
    assert released.hold.status == pb.HOLD_STATUS_RELEASED
    assert (released.balance.available, released.balance.held) == (80, 0)


def test_an_unknown_member_is_not_found(points, md):
    # The points service asks the member service about a member it never saw.
    err = rpc_error(lambda: points.Earn(goodwill(new_request_id(), 10), metadata=md))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err).reason == "MEMBER_NOT_FOUND"


def test_the_member_card_shows_the_points_balance(member, points, md, member_id):
    points.Earn(goodwill(member_id, 1240), metadata=md)

    card = member.GetMemberCard(mpb.GetMemberCardRequest(member_id=member_id), metadata=md).card
    assert card.member.member_id == member_id
    assert card.member.given_name == "Grace"
    assert card.points_status in (
        mpb.POINTS_STATUS_FROM_CARD,
        mpb.POINTS_STATUS_FROM_POINTS_SERVICE,
    ), mpb.PointsStatus.Name(card.points_status)
    assert card.points.member_id == member_id
    assert (card.points.available, card.points.total) == (1240, 1240)


def test_the_points_service_is_healthy_and_reflects_its_api(points_health, points_channel):
    for service in ("", POINTS_SERVICE):
        reply = points_health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

    db = ProtoReflectionDescriptorDatabase(points_channel)
    assert POINTS_SERVICE in set(db.get_services())


def test_export_movements_streams_the_programme_in_batches_and_resumes(points, md, member_id):
    made = [
        points.Earn(goodwill(member_id, n), metadata=md).movement for n in (100, 50, 25)
    ]
    batches = list(points.ExportMovements(pb.ExportMovementsRequest(batch_size=2), metadata=md))
    assert [len(b.movements) for b in batches] == [2, 1]
    exported = [m for b in batches for m in b.movements]
    assert [m.movement_id for m in exported] == [m.movement_id for m in made]
    assert [m.points for m in exported] == [100, 50, 25]
    assert batches[0].last_movement_id == exported[1].movement_id
    rest = list(
        points.ExportMovements(
            pb.ExportMovementsRequest(after_movement_id=batches[0].last_movement_id),
            metadata=md,
        )
    )
    assert [m.movement_id for b in rest for m in b.movements] == [made[2].movement_id]
    err = rpc_error(
        lambda: list(points.ExportMovements(pb.ExportMovementsRequest(batch_size=5001), metadata=md))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == ["batch_size"]
