"""laurel.analytics.v1.AnalyticsService as a Python client sees it: settings,
member metrics from purchases recorded at the member service, RFM, a CLV fit
on a small synthetic population with each member's value, and co-purchase
recommendations with the next best reward from the points service.

Purchases reach the analytics service as events, so every figure is waited
for. scripts/test-python.sh runs the analytics scoring job every 200 ms and
rebuilds recommendations whenever order lines changed, with no cache."""

from __future__ import annotations

import datetime as dt
import math
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from laurel.analytics.v1 import analytics_pb2 as pb
from laurel.common.v1 import money_pb2
from laurel.member.v1 import member_pb2 as mpb
from laurel.points.v1 import points_pb2 as ppb
from support import error_info, eventually, field_violations, new_request_id, rpc_error

DOMAIN = "laurel.analytics"
# Events from the member service to the analytics facts; a population of
# sixty members is a few hundred events for a debug build.
WAIT_S = 60.0
UTC = dt.timezone.utc


def timestamp(at: dt.datetime) -> Timestamp:
    return Timestamp(seconds=int(at.timestamp()))


def date_of(ts: Timestamp) -> dt.date:
    return dt.datetime.fromtimestamp(ts.seconds, UTC).date()


def noon(day: dt.date) -> dt.datetime:
    """Midday UTC of `day`: its date is the same in the UTC programme."""
    return dt.datetime.combine(day, dt.time(12), UTC)


def today() -> dt.date:
    return dt.datetime.now(UTC).date()


def put_settings(analytics, md, **settings) -> pb.Settings:
    fields = {"currency_code": "EUR", "time_zone": "UTC", **settings}
    return analytics.PutSettings(
        pb.PutSettingsRequest(request_id=new_request_id(), settings=pb.Settings(**fields)),
        metadata=md,
    ).settings


def new_member(member, md) -> str:
    return member.CreateMember(
        mpb.CreateMemberRequest(
            request_id=new_request_id(),
            profile=mpb.Profile(given_name="Ada", family_name="Lovelace", region="GB"),
        ),
        metadata=md,
    ).member.member_id


def line(sku: str, price_minor: int, category: str = "music") -> mpb.OrderLine:
    return mpb.OrderLine(sku=sku, category=category, quantity=1, unit_price_minor=price_minor)


def purchase(
    member,
    md,
    member_id: str | None,
    amount_minor: int,
    at: dt.datetime,
    lines=(),
    currency: str = "EUR",
) -> mpb.RecordActivityResponse:
    """Records a purchase at the member service; no member_id is a guest's."""
    order_id = f"o-{new_request_id()}"
    activity = mpb.Activity(
        source="py",
        external_id=order_id,
        occurred_at=timestamp(at),
        purchase=mpb.Purchase(
            order_id=order_id,
            total=money_pb2.Money(currency_code=currency, amount_minor=amount_minor),
            lines=list(lines),
        ),
    )
    if member_id is None:
        request = mpb.RecordActivityRequest(guest=True, activity=activity)
    else:
        request = mpb.RecordActivityRequest(member_id=member_id, activity=activity)
    return member.RecordActivity(request, metadata=md)


def metrics(analytics, md, member_id: str) -> pb.MemberMetrics:
    return analytics.GetMemberMetrics(
        pb.GetMemberMetricsRequest(member_id=member_id), metadata=md
    ).metrics


def wait_for_purchase_days(analytics, md, want: dict[str, int]) -> None:
    """Waits until each member's metrics count the purchase days given."""
    missing = dict(want)

    def arrived():
        for member_id, days in list(missing.items()):
            try:
                if metrics(analytics, md, member_id).purchase_days == days:
                    del missing[member_id]
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return not missing or None

    eventually(f"the purchases of {len(want)} members in analytics", arrived, WAIT_S)


def test_settings_are_stored_with_defaults_and_bad_fields_are_named(analytics, md):
    err = rpc_error(lambda: analytics.GetSettings(pb.GetSettingsRequest(), metadata=md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error_info(err).reason, error_info(err).domain) == ("NO_SETTINGS", DOMAIN)

    request = pb.PutSettingsRequest(
        request_id=new_request_id(),
        settings=pb.Settings(currency_code="eur", time_zone="Europe/Paris", rfm_bins=4),
    )
    stored = analytics.PutSettings(request, metadata=md).settings
    assert stored == pb.Settings(
        currency_code="EUR",
        time_zone="Europe/Paris",
        rfm_bins=4,
        active_days=365,
        expected_lifespan_years=3.0,
        default_rhythm_days=90,
        annual_discount_bp=1000,
    )
    assert analytics.GetSettings(pb.GetSettingsRequest(), metadata=md).settings == stored
    assert analytics.PutSettings(request, metadata=md).settings == stored, "a retry differs"

    request.settings.rfm_bins = 5
    err = rpc_error(lambda: analytics.PutSettings(request, metadata=md))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(err).reason == "REQUEST_ID_REUSED"

    bad = pb.PutSettingsRequest(
        request_id="",
        settings=pb.Settings(
            currency_code="EURO",
            time_zone="Mars/Olympus_Mons",
            rfm_bins=11,
            active_days=-1,
            expected_lifespan_years=60.0,
            default_rhythm_days=4000,
            annual_discount_bp=20_000,
        ),
    )
    err = rpc_error(lambda: analytics.PutSettings(bad, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert set(violations) == {
        "request_id",
        "settings.currency_code",
        "settings.time_zone",
        "settings.rfm_bins",
        "settings.active_days",
        "settings.expected_lifespan_years",
        "settings.default_rhythm_days",
        "settings.annual_discount_bp",
    }, violations
    assert all(violations.values()), f"a violation without a description: {violations}"
    assert error_info(err).domain == DOMAIN
    assert analytics.GetSettings(pb.GetSettingsRequest(), metadata=md).settings == stored


def test_purchases_and_a_refund_reach_the_member_metrics(member, analytics, md):
    put_settings(analytics, md)
    ada = new_member(member, md)
    day = today()
    # A guest's purchase: accepted without a member, counted for nobody.
    guest = purchase(member, md, None, 4_999, noon(day - dt.timedelta(days=3)))
    assert guest.created
    assert guest.activity.member_id == ""
    first = purchase(
        member, md, ada, 12_000, noon(day - dt.timedelta(days=3)), [line("SKU-1", 12_000)]
    )
    second = purchase(member, md, ada, 3_000, noon(day - dt.timedelta(days=1)))
    purchase(member, md, ada, 500, noon(day - dt.timedelta(days=1)), currency="USD")
    member.RecordActivity(
        mpb.RecordActivityRequest(
            member_id=ada,
            activity=mpb.Activity(
                source="py",
                external_id=f"r-{new_request_id()}",
                refund=mpb.Refund(
                    order_id=first.activity.purchase.order_id,
                    amount=money_pb2.Money(currency_code="EUR", amount_minor=1_000),
                ),
            ),
        ),
        metadata=md,
    )

    got = eventually(
        "the purchases and the refund in the metrics",
        lambda: (m := metrics(analytics, md, ada)).refunds == 1 and m.orders == 2 and m,
        WAIT_S,
    )
    assert got.member_id == ada
    assert (got.orders, got.purchase_days) == (2, 2)
    assert (got.gross_spend_minor, got.refunded_minor, got.net_spend_minor) == (
        15_000,
        1_000,
        14_000,
    )
    assert got.average_order_minor == 7_500
    assert got.first_purchase_at == first.activity.occurred_at
    assert got.last_purchase_at == second.activity.occurred_at
    assert list(got.other_currency_spend) == [
        money_pb2.Money(currency_code="USD", amount_minor=500)
    ]
    assert got.latest_nps == -1
    assert got.plan_status == "none"

    err = rpc_error(lambda: metrics(analytics, md, new_request_id()))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err).reason == "MEMBER_NOT_FOUND"
    err = rpc_error(lambda: metrics(analytics, md, "not-an-id"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == ["member_id"]


# The 5x5 (R, FM) grid's segments, R = 5 first, FM = 1 to 5 left to right,
# as laurel_analytics_models::rfm::Segment documents them.
S = pb.RfmSegment
NEW, PROMISING, CHAMPIONS, LOYAL = (
    S.RFM_SEGMENT_NEW,
    S.RFM_SEGMENT_PROMISING,
    S.RFM_SEGMENT_CHAMPIONS,
    S.RFM_SEGMENT_LOYAL,
)
POTENTIAL, ATTENTION, SLEEP = (
    S.RFM_SEGMENT_POTENTIAL_LOYALIST,
    S.RFM_SEGMENT_NEED_ATTENTION,
    S.RFM_SEGMENT_ABOUT_TO_SLEEP,
)
AT_RISK, CANT_LOSE, HIBERNATING, LOST = (
    S.RFM_SEGMENT_AT_RISK,
    S.RFM_SEGMENT_CANT_LOSE_THEM,
    S.RFM_SEGMENT_HIBERNATING,
    S.RFM_SEGMENT_LOST,
)
SEGMENT_GRID = {
    5: [NEW, POTENTIAL, POTENTIAL, CHAMPIONS, CHAMPIONS],
    4: [PROMISING, POTENTIAL, POTENTIAL, LOYAL, LOYAL],
    3: [SLEEP, SLEEP, ATTENTION, LOYAL, LOYAL],
    2: [HIBERNATING, HIBERNATING, AT_RISK, AT_RISK, CANT_LOSE],
    1: [LOST, LOST, AT_RISK, AT_RISK, CANT_LOSE],
}


def test_rfm_scores_the_active_members_into_the_grid(member, analytics, md):
    put_settings(analytics, md)
    day = today()
    # name: (days since the last purchase, purchase days a week apart, net
    # spend). Five members, all values distinct: with five bins each scores
    # its rank, 1 to 5 (min-rank quintiles), and FM = ceil((F + M) / 2).
    plan = {
        "new": (1, 1, 1_000),  # R5 F1 M1: FM 1
        "loyal": (5, 5, 50_000),  # R4 F5 M5: FM 5
        "attention": (20, 3, 30_000),  # R3 F3 M3: FM 3
        "hibernating": (60, 2, 20_000),  # R2 F2 M2: FM 2
        "at_risk": (200, 4, 40_000),  # R1 F4 M4: FM 4
    }
    want = {
        "new": (5, 1, 1, NEW),
        "loyal": (4, 5, 5, LOYAL),
        "attention": (3, 3, 3, ATTENTION),
        "hibernating": (2, 2, 2, HIBERNATING),
        "at_risk": (1, 4, 4, AT_RISK),
    }
    ids = {name: new_member(member, md) for name in plan}
    last_day = {}
    for name, (ago, days, spend) in plan.items():
        last_day[name] = day - dt.timedelta(days=ago)
        for k in range(days):
            at = noon(last_day[name] - dt.timedelta(days=7 * k))
            purchase(member, md, ids[name], spend // days, at)
    # Bought only before the active window (365 days): not scored.
    gone = new_member(member, md)
    purchase(member, md, gone, 9_000, noon(day - dt.timedelta(days=400)))
    wait_for_purchase_days(
        analytics, md, {ids[n]: p[1] for n, p in plan.items()} | {gone: 1}
    )
    # The daily scheduled run happens as soon as the programme has a
    # purchase; wait for it so that the run asked for below is the latest.
    eventually(
        "the scheduled RFM run",
        lambda: analytics.GetRfmSummary(pb.GetRfmSummaryRequest(), metadata=md).run.run_id,
        WAIT_S,
    )

    run = analytics.RecomputeRfm(
        pb.RecomputeRfmRequest(request_id=new_request_id()), metadata=md
    ).run
    assert (run.members, run.bins, run.currency_code, run.trigger) == (5, 5, "EUR", "request")
    as_of = date_of(run.as_of)

    summary = analytics.GetRfmSummary(pb.GetRfmSummaryRequest(), metadata=md)
    assert summary.run.run_id == run.run_id
    assert len(summary.grid) == 25
    cells = {(c.recency, c.frequency_monetary): c for c in summary.grid}
    assert set(cells) == {(r, fm) for r in range(1, 6) for fm in range(1, 6)}
    occupied = {(r, (f + m + 1) // 2) for r, f, m, _ in want.values()}
    for (r, fm), cell in cells.items():
        assert cell.segment == SEGMENT_GRID[r][fm - 1], (r, fm)
        assert cell.members == (1 if (r, fm) in occupied else 0), (r, fm)
    counts = {s.segment: s.members for s in summary.segments}
    assert len(counts) == 11 and S.RFM_SEGMENT_UNSPECIFIED not in counts
    assert {s: n for s, n in counts.items() if n} == {w[3]: 1 for w in want.values()}

    for name, member_id in ids.items():
        got = analytics.GetMemberRfm(pb.GetMemberRfmRequest(member_id=member_id), metadata=md).rfm
        r, f, m, segment = want[name]
        assert (got.recency, got.frequency, got.monetary, got.segment) == (r, f, m, segment), name
        assert got.run_id == run.run_id
        assert got.recency_days == (as_of - last_day[name]).days
        assert (got.purchase_days, got.net_spend_minor) == plan[name][1:], name

    err = rpc_error(
        lambda: analytics.GetMemberRfm(pb.GetMemberRfmRequest(member_id=gone), metadata=md)
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err).reason == "MEMBER_NOT_SCORED"


def test_a_clv_fit_needs_repeat_purchases(member, analytics, md):
    put_settings(analytics, md)
    day = today()
    buyers = [new_member(member, md) for _ in range(3)]
    for k, member_id in enumerate(buyers):
        purchase(member, md, member_id, 2_000 + k, noon(day - dt.timedelta(days=10 + k)))
    wait_for_purchase_days(analytics, md, {b: 1 for b in buyers})

    fit = pb.FitClvModelRequest(request_id=new_request_id())
    err = rpc_error(lambda: analytics.FitClvModel(fit, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == ["calibration_end"]

    fit.calibration_end.CopyFrom(timestamp(noon(day)))
    err = rpc_error(lambda: analytics.FitClvModel(fit, metadata=md))
    # Nobody bought twice: BG/NBD's dropout cannot be estimated.
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error_info(err).reason, error_info(err).domain) == ("MODEL_NOT_FITTED", DOMAIN)
    err = rpc_error(lambda: analytics.GetClvModel(pb.GetClvModelRequest(), metadata=md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err).reason == "NO_MODEL"


def population_plan(i: int) -> tuple[list[int], list[int]]:
    """Member i's purchases: days ago and amounts. Every (7 + 2 (i mod 20))
    days, 1 + (i mod 6) times, the first 330 - 3 (i mod 10) days ago, each
    amount a little above the last: one in six buys once."""
    every = 7 + 2 * (i % 20)
    first = 330 - 3 * (i % 10)
    count = 1 + i % 6
    days_ago = [first - k * every for k in range(count)]
    amounts = [1_000 + 50 * i + 100 * k for k in range(count)]
    return days_ago, amounts


def test_clv_fit_on_a_population_then_member_values(member, analytics, md):
    put_settings(analytics, md)
    day = today()
    n = 60
    plans = [population_plan(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda _: new_member(member, md), range(n)))

        def buy(i: int) -> None:
            for ago, amount in zip(*plans[i]):
                purchase(member, md, ids[i], amount, noon(day - dt.timedelta(days=ago)))

        list(pool.map(buy, range(n)))
    wait_for_purchase_days(analytics, md, {ids[i]: len(plans[i][0]) for i in range(n)})

    fit = pb.FitClvModelRequest(request_id=new_request_id())
    fit.calibration_end.CopyFrom(timestamp(noon(day)))
    model = analytics.FitClvModel(fit, metadata=md).model
    repeaters = sum(1 for days, _ in plans if len(days) > 1)
    assert model.customers == n
    assert model.spend_customers == repeaters == 50
    assert 0 < model.likelihood_terms <= n
    assert date_of(model.calibration_end) == day
    assert date_of(model.calibration_start) == day - dt.timedelta(days=330)
    bg = model.bg_nbd
    assert all(math.isfinite(x) and x > 0 for x in (bg.r, bg.alpha, bg.a, bg.b)), bg
    assert bg.log_likelihood < 0
    gg = model.gamma_gamma
    assert model.HasField("gamma_gamma")
    assert all(math.isfinite(x) and x > 0 for x in (gg.p, gg.q, gg.gamma)), gg
    assert analytics.GetClvModel(pb.GetClvModelRequest(), metadata=md).model == model
    assert analytics.FitClvModel(fit, metadata=md).model == model, "a retry fitted again"

    def value(member_id: str, horizon_weeks: int = 0) -> pb.MemberValue:
        return analytics.GetMemberValue(
            pb.GetMemberValueRequest(member_id=member_id, horizon_weeks=horizon_weeks),
            metadata=md,
        ).value

    # Member 5 bought six times, every 17 days, the last 245 days ago.
    regular = value(ids[5])
    assert plans[5][0] == [315, 298, 281, 264, 247, 230]
    assert regular.model_id == model.model_id
    assert regular.horizon_weeks == 52
    assert 0 < regular.probability_alive <= 1
    assert regular.expected_purchases > 0
    assert regular.predictive_clv_minor > 0
    # Historical CLV: the spend of the active window (365 days) per year
    # (365.25 days) x the expected lifespan (3 years).
    spend = sum(plans[5][1])
    assert regular.historical_clv_minor == round(spend / (365 / 365.25) * 3)
    churn = regular.churn
    assert 0 <= churn.score <= 100
    assert regular.value_at_risk_minor == regular.predictive_clv_minor * churn.score // 100
    longer = value(ids[5], horizon_weeks=104)
    assert longer.horizon_weeks == 104
    assert longer.expected_purchases > regular.expected_purchases

    # Member 0 bought once, 330 days ago: BG/NBD without a repeat purchase
    # says alive; against a 90-day rhythm the member is long overdue.
    once = value(ids[0])
    assert abs(once.probability_alive - 1.0) < 1e-12
    assert once.stage in (
        pb.LIFECYCLE_STAGE_AT_RISK,
        pb.LIFECYCLE_STAGE_DORMANT,
        pb.LIFECYCLE_STAGE_CHURNED,
    )
    assert once.churn.overdue > 0

    err = rpc_error(lambda: value("x", horizon_weeks=999))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err)) == {"member_id", "horizon_weeks"}

    # The scoring job stores every member's value again after the fit (a
    # scoring before it has no model's figures).
    def scored_with_the_fit():
        listed = analytics.ListMembersAtRisk(
            pb.ListMembersAtRiskRequest(limit=1000, min_score=1), metadata=md
        ).members
        return all(m.model_id == model.model_id for m in listed) and listed

    at_risk = eventually("members at risk scored with the fit", scored_with_the_fit, WAIT_S)
    assert {m.member_id for m in at_risk} <= set(ids)
    assert all(m.churn.score >= 1 for m in at_risk)
    risks = [m.value_at_risk_minor for m in at_risk]
    assert risks == sorted(risks, reverse=True)
    top = analytics.ListMembersAtRisk(
        pb.ListMembersAtRiskRequest(limit=2, min_score=1), metadata=md
    ).members
    assert [m.member_id for m in top] == [m.member_id for m in at_risk[:2]]


def test_recommendations_from_co_purchases_and_the_next_best_offer(
    member, points, analytics, md
):
    put_settings(analytics, md)
    day = today()
    m1, m2, m3, m4, t, u, newcomer = (new_member(member, md) for _ in range(7))
    err = rpc_error(
        lambda: analytics.GetRecommendations(
            pb.GetRecommendationsRequest(member_id=t), metadata=md
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err).reason == "NO_RECOMMENDATIONS"

    long_ago = noon(day - dt.timedelta(days=60))
    # Buyers: A {m1, m2, m4, t, u}, B {m1, m2, m3, u}, C {m2, m3, m4}.
    for who, skus in [
        (m1, "AB"),
        (m2, "ABC"),
        (m3, "BC"),
        (m4, "AC"),
        (t, "A"),
        (u, "A"),
    ]:
        purchase(member, md, who, 1_000 * len(skus), long_ago, [line(s, 1_000) for s in skus])
    # u bought B last week: B is not recommended to u again.
    purchase(member, md, u, 1_000, noon(day - dt.timedelta(days=7)), [line("B", 1_000)])

    def recommend(member_id: str, limit: int) -> pb.GetRecommendationsResponse:
        return analytics.GetRecommendations(
            pb.GetRecommendationsRequest(
                member_id=member_id, limit=limit, level=pb.RECOMMENDATION_LEVEL_SKU
            ),
            metadata=md,
        )

    # Item-to-item cosine over buyers: cos(A, B) = |{m1, m2, u}| / sqrt(5 x 4),
    # cos(A, C) = |{m2, m4}| / sqrt(5 x 3). A build from part of the lines
    # can come first: wait for the one with every line.
    want = [("B", 3 / math.sqrt(20)), ("C", 2 / math.sqrt(15))]

    def built_from_every_line():
        got = recommend(t, 2)
        pairs = [(i.item, i.score) for i in got.items]
        same = len(pairs) == 2 and all(
            g[0] == w[0] and abs(g[1] - w[1]) < 1e-9 for g, w in zip(pairs, want)
        )
        return same and got

    got = eventually("recommendations from every order line", built_from_every_line, WAIT_S)
    assert not got.popular_fallback
    assert not got.HasField("next_best_offer"), "no points, no offer"

    # u: C from both A and B, then A (bought 60 days ago) from B; never B.
    for_u = recommend(u, 3)
    assert [i.item for i in for_u.items] == ["C", "A"]
    assert abs(for_u.items[0].score - (2 / math.sqrt(15) + 2 / math.sqrt(12))) < 1e-9
    assert abs(for_u.items[1].score - 3 / math.sqrt(20)) < 1e-9

    fresh = recommend(newcomer, 3)
    assert fresh.popular_fallback
    assert [i.item for i in fresh.items] == ["A", "B", "C"], "most distinct buyers first"

    quality = analytics.GetRecommendationQuality(
        pb.GetRecommendationQualityRequest(level=pb.RECOMMENDATION_LEVEL_SKU), metadata=md
    )
    assert quality.members == 1, "only u has a purchase day before the last"
    assert quality.top_n == 10
    assert 0 <= quality.popular_hit_rate <= 1 and 0 <= quality.hit_rate <= 1
    assert quality.built_at.seconds > 0

    # Asked about again, a member is answered from the members the replica
    # keeps in memory once it has loaded them; a header says where from.
    def answered_from() -> str:
        _, call = analytics.GetRecommendations.with_call(
            pb.GetRecommendationsRequest(member_id=m4, limit=2), metadata=md
        )
        return dict(call.initial_metadata()).get("laurel-answer-from", "")

    assert answered_from() in ("memory", "database")
    eventually("an answer from memory", lambda: answered_from() == "memory", WAIT_S)

    # The next best offer: the most valuable reward the member's points
    # afford, from the points service's catalogue.
    rewards = {}
    for name, price in [("mug", 100), ("bag", 500), ("bike", 50_000)]:
        rewards[name] = points.CreateReward(
            ppb.CreateRewardRequest(
                request_id=new_request_id(),
                reward=ppb.Reward(
                    name=name,
                    points_price=price,
                    stock=10,
                    valid_from=timestamp(noon(day - dt.timedelta(days=1))),
                    active=True,
                ),
            ),
            metadata=md,
        ).reward
    points.Earn(
        ppb.EarnRequest(
            request_id=new_request_id(),
            member_id=newcomer,
            kind=ppb.EARN_KIND_GOODWILL,
            points=600,
            reason="welcome",
        ),
        metadata=md,
    )
    offered = eventually(
        "the balance reaches analytics",
        lambda: (r := recommend(newcomer, 4)).HasField("next_best_offer") and r.next_best_offer,
        WAIT_S,
    )
    assert (offered.reward_id, offered.points_cost) == (rewards["bag"].reward_id, 500)
    assert offered.reason

    err = rpc_error(
        lambda: analytics.GetRecommendations(
            pb.GetRecommendationsRequest(member_id="", limit=1000, level=9), metadata=md
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err)) == {"member_id", "limit", "level"}


def test_calls_before_any_settings_are_no_settings(analytics, md):
    fit = pb.FitClvModelRequest(request_id=new_request_id())
    fit.calibration_end.CopyFrom(timestamp(noon(today())))
    calls = {
        "RecomputeRfm": lambda: analytics.RecomputeRfm(
            pb.RecomputeRfmRequest(request_id=new_request_id()), metadata=md
        ),
        "GetRfmSummary": lambda: analytics.GetRfmSummary(pb.GetRfmSummaryRequest(), metadata=md),
        "FitClvModel": lambda: analytics.FitClvModel(fit, metadata=md),
        "GetMemberValue": lambda: analytics.GetMemberValue(
            pb.GetMemberValueRequest(member_id=new_request_id()), metadata=md
        ),
    }
    for name, call in calls.items():
        err = rpc_error(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, name
        assert (error_info(err).reason, error_info(err).domain) == ("NO_SETTINGS", DOMAIN), name


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), UTC)


def test_kpis_cohorts_csv_export_and_an_alert(member, analytics, md):
    put_settings(analytics, md)
    # Just now (not noon: it may be ahead), so every purchase is today's
    # and counts in the current period the alert watches.
    at = dt.datetime.now(UTC) - dt.timedelta(seconds=30)
    day = at.date()
    ada, bob = new_member(member, md), new_member(member, md)
    purchase(member, md, ada, 2_000, at)
    purchase(member, md, ada, 1_000, at)
    purchase(member, md, bob, 3_000, at)
    purchase(member, md, None, 4_000, at)
    wait_for_purchase_days(analytics, md, {ada: 1, bob: 1})

    window = dict(
        period=pb.PERIOD_DAY,
        **{"from": timestamp(day_start(day))},
        to=timestamp(day_start(day + dt.timedelta(days=1))),
    )
    spend = analytics.GetKpi(pb.GetKpiRequest(kpi=pb.KPI_MEMBER_SPEND, **window), metadata=md)
    assert [(p.value, p.numerator) for p in spend.points] == [(6_000, 6_000)]
    per_head = analytics.GetKpi(
        pb.GetKpiRequest(kpi=pb.KPI_MEMBER_SPEND_PER_HEAD, **window), metadata=md
    ).points[0]
    assert (per_head.numerator, per_head.denominator, per_head.value) == (6_000, 2, 3_000)
    guest = analytics.GetKpi(
        pb.GetKpiRequest(kpi=pb.KPI_GUEST_SPEND_PER_HEAD, **window), metadata=md
    ).points[0]
    assert guest.value == 4_000
    err = rpc_error(
        lambda: analytics.GetKpi(
            pb.GetKpiRequest(kpi=pb.KPI_NPS, filter=pb.KpiFilter(store_id="s-1"), **window),
            metadata=md,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.store_id" in field_violations(err)

    cohorts = analytics.GetCohortRetention(
        pb.GetCohortRetentionRequest(
            period=pb.PERIOD_DAY,
            **{"from": timestamp(day_start(day))},
            to=timestamp(day_start(day + dt.timedelta(days=1))),
        ),
        metadata=md,
    ).cohorts
    assert [(c.members, list(c.active)) for c in cohorts] == [(2, [2])]

    csv = b"".join(
        chunk.csv
        for chunk in analytics.ExportReport(
            pb.ExportReportRequest(
                report=pb.REPORT_KPI, kpi=pb.GetKpiRequest(kpi=pb.KPI_MEMBER_ORDERS, **window)
            ),
            metadata=md,
        )
    ).decode()
    rows = csv.strip().split("\r\n")
    assert rows[0] == "period_start,value,numerator,denominator"
    assert len(rows) == 2 and rows[1].split(",")[1] == "3"

    rule = pb.AlertRule(
        rule_id="orders-today",
        kpi=pb.KPI_MEMBER_ORDERS,
        period=pb.PERIOD_DAY,
        condition=pb.ALERT_CONDITION_ABOVE,
        threshold=2,
        enabled=True,
    )
    analytics.PutAlertRule(
        pb.PutAlertRuleRequest(request_id=new_request_id(), rule=rule), metadata=md
    )
    rules = analytics.ListAlertRules(pb.ListAlertRulesRequest(), metadata=md).rules
    assert [r.rule_id for r in rules] == ["orders-today"]
    alerts = eventually(
        "the alert is raised",
        lambda: list(
            analytics.ListAlerts(pb.ListAlertsRequest(rule_id="orders-today"), metadata=md).alerts
        )
        or None,
        WAIT_S,
    )
    assert len(alerts) == 1
    assert (alerts[0].value, alerts[0].expected, alerts[0].delivery) == (3, 2, "none")
