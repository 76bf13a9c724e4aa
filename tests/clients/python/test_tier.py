"""laurel.tier.v1.TierService as a Python client sees it: a ladder, tiers
qualified from purchases recorded at the member service, manual tiers,
benefits with quotas, paid plans, and the tier on the member card."""

import time

import grpc
import pytest

from laurel.common.v1 import money_pb2
from laurel.member.v1 import member_pb2 as mpb
from laurel.tier.v1 import tier_pb2 as pb
from support import error_info, field_violations, new_request_id

WAIT_S = 15.0


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def eventually(what: str, check):
    """Polls `check` until it returns something truthy (events travel
    between services asynchronously)."""
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except grpc.RpcError as err:
            last = err
        time.sleep(0.1)
    pytest.fail(f"{what}: still {last!r} after {WAIT_S}s")


def ladder(base_benefits=()) -> pb.Ladder:
    return pb.Ladder(
        tiers=[
            pb.Tier(code="member", name="Member", benefits=list(base_benefits)),
            pb.Tier(
                code="silver",
                name="Silver",
                qualify_any=[pb.Threshold(spend_minor=10_000), pb.Threshold(orders=3)],
            ),
            pb.Tier(code="gold", name="Gold", qualify_any=[pb.Threshold(spend_minor=50_000)]),
        ],
        window=pb.QualificationWindow(kind=pb.WINDOW_KIND_ROLLING_MONTHS, months=12),
        currency_code="EUR",
        time_zone="Europe/Paris",
        max_downgrade_levels=1,
        grace_days=30,
        warning_days=14,
    )


def publish(tier, md, the_ladder: pb.Ladder) -> pb.PublishLadderResponse:
    return tier.PublishLadder(
        pb.PublishLadderRequest(request_id=new_request_id(), ladder=the_ladder), metadata=md
    )


@pytest.fixture
def member_id(member, md) -> str:
    created = member.CreateMember(
        mpb.CreateMemberRequest(
            request_id=new_request_id(),
            profile=mpb.Profile(given_name="Ada", family_name="Lovelace", region="GB"),
        ),
        metadata=md,
    ).member
    return created.member_id


def purchase(member, md, member_id: str, amount_minor: int) -> None:
    member.RecordActivity(
        mpb.RecordActivityRequest(
            member_id=member_id,
            activity=mpb.Activity(
                source="pos",
                external_id=new_request_id(),
                purchase=mpb.Purchase(
                    order_id=f"o-{new_request_id()[:8]}",
                    total=money_pb2.Money(currency_code="EUR", amount_minor=amount_minor),
                ),
            ),
        ),
        metadata=md,
    )


def member_tier(tier, md, member_id: str) -> pb.MemberTier:
    return tier.GetMemberTier(pb.GetMemberTierRequest(member_id=member_id), metadata=md).tier


def wait_for_tier(tier, md, member_id: str, code: str) -> pb.MemberTier:
    """The member's tier once it is `code` (a new ladder evaluates members in
    the background; purchases reach the tier service as events)."""
    return eventually(
        f"tier {code}",
        lambda: (t := member_tier(tier, md, member_id)).tier_code == code and t,
    )


def test_a_published_ladder_is_the_one_in_force(tier, md):
    published = publish(tier, md, ladder())
    assert published.ladder.version == 1
    assert published.reevaluation.ladder_version == 1
    got = tier.GetLadder(pb.GetLadderRequest(), metadata=md).ladder
    assert [t.code for t in got.tiers] == ["member", "silver", "gold"]
    assert got.version == 1


def test_an_invalid_ladder_is_refused_with_the_fields_named(tier, md):
    bad = ladder()
    # Silver's second way (3 orders) would also qualify for gold's rung if
    # gold asked less: make gold's threshold lower than silver's spend.
    bad.tiers[2].qualify_any[0].spend_minor = 5_000
    bad.currency_code = "EURO"
    err = rpc_error(lambda: publish(tier, md, bad))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert "ladder.currency_code" in violations, violations
    assert any(f.startswith("ladder.tiers[2]") for f in violations), violations
    assert error_info(err).domain == "laurel.tier"
    err = rpc_error(lambda: tier.GetLadder(pb.GetLadderRequest(), metadata=md))
    assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def test_purchases_upgrade_the_member_and_the_card_shows_the_tier(member, tier, md, member_id):
    publish(tier, md, ladder())
    base = wait_for_tier(tier, md, member_id, "member")
    assert base.next_tier_code == "silver"

    purchase(member, md, member_id, 12_000)
    upgraded = wait_for_tier(tier, md, member_id, "silver")
    assert upgraded.source == pb.TIER_SOURCE_EARNED
    assert upgraded.measures.spend_minor == 12_000
    assert upgraded.next_tier_code == "gold"
    assert [m.spend_minor for m in upgraded.missing] == [38_000]

    card = member.GetMemberCard(mpb.GetMemberCardRequest(member_id=member_id), metadata=md).card
    assert card.tier_code == "silver"
    assert card.tier_name == "Silver"
    assert card.tier_status in (mpb.TIER_STATUS_FROM_CARD, mpb.TIER_STATUS_FROM_TIER_SERVICE)

    history = tier.ListTierHistory(
        pb.ListTierHistoryRequest(member_id=member_id), metadata=md
    ).entries
    assert history[0].tier_code == "silver"
    assert history[0].reason == pb.TIER_CHANGE_REASON_QUALIFIED


def test_an_operator_assigns_a_tier_until_a_date(tier, md, member_id):
    publish(tier, md, ladder())
    wait_for_tier(tier, md, member_id, "member")
    until = int(time.time()) + 30 * 86400
    request = pb.AssignTierRequest(
        request_id=new_request_id(),
        member_id=member_id,
        tier_code="gold",
        reason="celebrity",
    )
    request.until.seconds = until
    assigned = tier.AssignTier(request, metadata=md).tier
    assert (assigned.tier_code, assigned.source) == ("gold", pb.TIER_SOURCE_MANUAL)
    assert assigned.secured_until.seconds == until
    assert assigned.earned_tier_code == "member"
    again = tier.AssignTier(request, metadata=md).tier
    assert again == assigned

    request.tier_code = "platinum"
    request.request_id = new_request_id()
    err = rpc_error(lambda: tier.AssignTier(request, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tier_code" in field_violations(err)


def test_a_benefit_quota_refuses_beyond_its_limit(tier, md, member_id):
    tier.PutBenefit(
        pb.PutBenefitRequest(
            request_id=new_request_id(),
            benefit=pb.Benefit(
                code="free-shipping",
                name="Free shipping",
                kind=pb.BENEFIT_KIND_FREE_SHIPPING,
                active=True,
            ),
        ),
        metadata=md,
    )
    grant = pb.BenefitGrant(benefit_code="free-shipping", quota=1, period=pb.QUOTA_PERIOD_MONTH)
    publish(tier, md, ladder([grant]))
    wait_for_tier(tier, md, member_id, "member")

    consume = pb.ConsumeBenefitRequest(
        request_id=new_request_id(), member_id=member_id, benefit_code="free-shipping"
    )
    used = tier.ConsumeBenefit(consume, metadata=md)
    assert (used.benefit.used, used.benefit.remaining) == (1, 0)
    assert tier.ConsumeBenefit(consume, metadata=md) == used, "a retry consumed again"

    consume.request_id = new_request_id()
    err = rpc_error(lambda: tier.ConsumeBenefit(consume, metadata=md))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(err).reason == "QUOTA_EXHAUSTED"

    listed = tier.ListMemberBenefits(
        pb.ListMemberBenefitsRequest(member_id=member_id), metadata=md
    ).benefits
    assert [(b.benefit.code, b.used, b.remaining) for b in listed] == [("free-shipping", 1, 0)]


def test_a_paid_plan_subscription_starts_and_cancels(tier, md, member_id):
    publish(tier, md, ladder())
    wait_for_tier(tier, md, member_id, "member")
    tier.PutPlan(
        pb.PutPlanRequest(
            request_id=new_request_id(),
            plan=pb.Plan(
                code="plus",
                name="Plus",
                price=money_pb2.Money(currency_code="EUR", amount_minor=999),
                billing_period=pb.BILLING_PERIOD_MONTHLY,
                tier_floor="silver",
                grace_days=7,
                reminder_days=3,
                active=True,
            ),
        ),
        metadata=md,
    )
    subscribed = tier.Subscribe(
        pb.SubscribeRequest(
            request_id=new_request_id(),
            member_id=member_id,
            plan_code="plus",
            payment_reference="pay-1",
        ),
        metadata=md,
    ).subscription
    assert subscribed.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    assert subscribed.price.amount_minor == 999
    floor = member_tier(tier, md, member_id)
    assert (floor.tier_code, floor.source) == ("silver", pb.TIER_SOURCE_PAID_PLAN)

    cancelled = tier.Cancel(
        pb.CancelRequest(
            request_id=new_request_id(),
            subscription_id=subscribed.subscription_id,
            mode=pb.CANCEL_MODE_NOW,
            reason="too expensive",
        ),
        metadata=md,
    ).subscription
    assert cancelled.status == pb.SUBSCRIPTION_STATUS_CANCELLED
    assert member_tier(tier, md, member_id).tier_code == "member"

    err = rpc_error(
        lambda: tier.Subscribe(
            pb.SubscribeRequest(
                request_id=new_request_id(), member_id=member_id, plan_code="nope",
                payment_reference="pay-2",
            ),
            metadata=md,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err).reason == "PLAN_NOT_FOUND"


def test_catalogue_listings_renewal_and_usage(tier, md, member_id):
    published = publish(tier, md, ladder())
    done = eventually(
        "the re-evaluation finishes",
        lambda: (
            r := tier.GetReevaluation(
                pb.GetReevaluationRequest(
                    reevaluation_id=published.reevaluation.reevaluation_id
                ),
                metadata=md,
            ).reevaluation
        ).state
        == pb.REEVALUATION_STATE_DONE
        and r,
    )
    assert done.ladder_version == 1
    wait_for_tier(tier, md, member_id, "member")
    tier.PutBenefit(
        pb.PutBenefitRequest(
            request_id=new_request_id(),
            benefit=pb.Benefit(
                code="lounge", name="Lounge", kind=pb.BENEFIT_KIND_SERVICE_LINE, active=True
            ),
        ),
        metadata=md,
    )
    listed = tier.ListBenefits(pb.ListBenefitsRequest(), metadata=md).benefits
    assert [b.code for b in listed] == ["lounge"]
    tier.PutPlan(
        pb.PutPlanRequest(
            request_id=new_request_id(),
            plan=pb.Plan(
                code="club",
                name="Club",
                price=money_pb2.Money(currency_code="EUR", amount_minor=4_900),
                billing_period=pb.BILLING_PERIOD_ANNUAL,
                benefits=[pb.BenefitGrant(benefit_code="lounge")],
                active=True,
            ),
        ),
        metadata=md,
    )
    assert [p.code for p in tier.ListPlans(pb.ListPlansRequest(), metadata=md).plans] == ["club"]
    sub = tier.Subscribe(
        pb.SubscribeRequest(
            request_id=new_request_id(),
            member_id=member_id,
            plan_code="club",
            payment_reference="pay-a",
        ),
        metadata=md,
    ).subscription
    renewed = tier.Renew(
        pb.RenewRequest(
            request_id=new_request_id(),
            subscription_id=sub.subscription_id,
            payment_reference="pay-b",
        ),
        metadata=md,
    ).subscription
    assert renewed.renewals == 1
    assert renewed.current_period_end.seconds > sub.current_period_end.seconds
    assert renewed.payment_reference == "pay-b"
    subs = tier.ListSubscriptions(
        pb.ListSubscriptionsRequest(member_id=member_id), metadata=md
    ).subscriptions
    assert [s.subscription_id for s in subs] == [sub.subscription_id]

    tier.ConsumeBenefit(
        pb.ConsumeBenefitRequest(
            request_id=new_request_id(), member_id=member_id, benefit_code="lounge"
        ),
        metadata=md,
    )
    usage = tier.GetBenefitUsage(pb.GetBenefitUsageRequest(), metadata=md).usage
    lounge = [u for u in usage if u.benefit_code == "lounge"]
    assert len(lounge) == 1
    assert (lounge[0].uses, lounge[0].members, lounge[0].entitled_members) == (1, 1, 1)
