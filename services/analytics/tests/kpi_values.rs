//! KPIs over a small hand-computed fixture, inserted straight into the
//! fact tables (as the consumer keeps them): every KPI by month, filters by
//! channel, store and tier, ISO weeks and days in the programme's time
//! zone, quarters and years, and validation with field names.
//!
//! The fixture (UTC, EUR unless said):
//! - members A (Dec 15, gold), B (Jan 10, silver), C (Jan 20, gold),
//!   D (Feb 5, no tier), E (Jan 5, merged away: never counted);
//! - A: Jan 3 100.00 ONLINE s1 and 20.00 IN_STORE s2, Jan 20 50.00 less
//!   10.00 refunded IN_STORE s1; B: Jan 15 30.00 ONLINE s1, Feb 2 40.00
//!   IN_STORE s2; C: Feb 10 99.99 USD (another currency: never counted);
//!   D: Feb 6 60.00 and Feb 7 10.00 ONLINE s1;
//! - guests: Jan 5 25.00 IN_STORE s1, Jan 6 15.00 less 5.00 IN_STORE s2,
//!   Feb 1 40.00 ONLINE s1; an erased member's Jan 25 70.00 IN_STORE s1;
//! - points: A Dec 20 earn 1000; Jan: A earn 500, B earn 300, A redeem
//!   -200, B reverse_earn -50; Feb: A expire -100, B redeem -100, B
//!   reverse_redemption +20, C merge +999 (other: never counted);
//! - NPS feedback: Jan A 10, B 9, C 7, A 3 (and a review, not NPS);
//!   Feb B 0;
//! - renewals: Jan due A, B, C, D and renewed A, B, C; Feb due B.

mod common;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::{Stack, fields, req, spawn};
use laurel_proto::analytics::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn noon(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

async fn member(db: &PgPool, enrolled_at: DateTime<Utc>, tier: &str, status: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at, tier_code, status)
         VALUES ('default', $1, $2, $3, $4)",
    )
    .bind(id)
    .bind(enrolled_at)
    .bind(tier)
    .bind(status)
    .execute(db)
    .await
    .unwrap();
    id
}

/// A purchase: `who` is the member (None with `guest` for guests, None
/// without for an erased member's).
#[allow(clippy::too_many_arguments)]
async fn purchase(
    db: &PgPool,
    who: Option<Uuid>,
    guest: bool,
    on: NaiveDate,
    currency: &str,
    total: i64,
    refunded: i64,
    channel: &str,
    store: &str,
) {
    sqlx::query(
        "INSERT INTO purchases (program_id, order_id, activity_id, member_id, guest, currency_code,
            total_minor, refunded_minor, occurred_at, day, channel, store_id)
         VALUES ('default', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(Uuid::now_v7())
    .bind(who)
    .bind(guest)
    .bind(currency)
    .bind(total)
    .bind(refunded)
    .bind(noon(on))
    .bind(on)
    .bind(channel)
    .bind(store)
    .execute(db)
    .await
    .unwrap();
}

async fn points(db: &PgPool, who: Uuid, on: NaiveDate, kind: &str, points: i64) {
    sqlx::query(
        "INSERT INTO points_movements (program_id, movement_id, member_id, kind, points, occurred_at, day)
         VALUES ('default', $1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(who)
    .bind(kind)
    .bind(points)
    .bind(noon(on))
    .bind(on)
    .execute(db)
    .await
    .unwrap();
}

async fn feedback(db: &PgPool, who: Uuid, on: NaiveDate, kind: &str, score: i32) {
    sqlx::query(
        "INSERT INTO feedback (program_id, activity_id, member_id, kind, score, occurred_at, day)
         VALUES ('default', $1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(who)
    .bind(kind)
    .bind(score)
    .bind(noon(on))
    .bind(on)
    .execute(db)
    .await
    .unwrap();
}

async fn subscription(db: &PgPool, who: Uuid, on: NaiveDate, kind: &str) {
    sqlx::query(
        "INSERT INTO subscription_events (program_id, event_id, subscription_id, member_id, kind,
            occurred_at, day)
         VALUES ('default', $1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(format!("sub-{who}"))
    .bind(who)
    .bind(kind)
    .bind(noon(on))
    .bind(on)
    .execute(db)
    .await
    .unwrap();
}

/// Tiers of the fixture's members.
struct Fixture;

async fn fixture(stack: &Stack) -> Fixture {
    stack.settings("UTC").await;
    let db = &stack.db;
    let a = member(db, utc(2025, 12, 15), "gold", "active").await;
    let b = member(db, utc(2026, 1, 10), "silver", "active").await;
    let c = member(db, utc(2026, 1, 20), "gold", "active").await;
    let d = member(db, utc(2026, 2, 5), "", "active").await;
    member(db, utc(2026, 1, 5), "gold", "merged").await;
    purchase(
        db,
        Some(a),
        false,
        day(2026, 1, 3),
        "EUR",
        10_000,
        0,
        "ONLINE",
        "s1",
    )
    .await;
    purchase(
        db,
        Some(a),
        false,
        day(2026, 1, 3),
        "EUR",
        2_000,
        0,
        "IN_STORE",
        "s2",
    )
    .await;
    purchase(
        db,
        Some(a),
        false,
        day(2026, 1, 20),
        "EUR",
        5_000,
        1_000,
        "IN_STORE",
        "s1",
    )
    .await;
    purchase(
        db,
        Some(b),
        false,
        day(2026, 1, 15),
        "EUR",
        3_000,
        0,
        "ONLINE",
        "s1",
    )
    .await;
    purchase(
        db,
        Some(b),
        false,
        day(2026, 2, 2),
        "EUR",
        4_000,
        0,
        "IN_STORE",
        "s2",
    )
    .await;
    purchase(
        db,
        Some(c),
        false,
        day(2026, 2, 10),
        "USD",
        9_999,
        0,
        "ONLINE",
        "s1",
    )
    .await;
    purchase(
        db,
        Some(d),
        false,
        day(2026, 2, 6),
        "EUR",
        6_000,
        0,
        "ONLINE",
        "s1",
    )
    .await;
    purchase(
        db,
        Some(d),
        false,
        day(2026, 2, 7),
        "EUR",
        1_000,
        0,
        "ONLINE",
        "s1",
    )
    .await;
    purchase(
        db,
        None,
        true,
        day(2026, 1, 5),
        "EUR",
        2_500,
        0,
        "IN_STORE",
        "s1",
    )
    .await;
    purchase(
        db,
        None,
        true,
        day(2026, 1, 6),
        "EUR",
        1_500,
        500,
        "IN_STORE",
        "s2",
    )
    .await;
    purchase(
        db,
        None,
        true,
        day(2026, 2, 1),
        "EUR",
        4_000,
        0,
        "ONLINE",
        "s1",
    )
    .await;
    purchase(
        db,
        None,
        false,
        day(2026, 1, 25),
        "EUR",
        7_000,
        0,
        "IN_STORE",
        "s1",
    )
    .await;
    points(db, a, day(2025, 12, 20), "earn", 1_000).await;
    points(db, a, day(2026, 1, 5), "earn", 500).await;
    points(db, b, day(2026, 1, 10), "earn", 300).await;
    points(db, a, day(2026, 1, 15), "redeem", -200).await;
    points(db, b, day(2026, 1, 20), "reverse_earn", -50).await;
    points(db, a, day(2026, 2, 1), "expire", -100).await;
    points(db, b, day(2026, 2, 3), "redeem", -100).await;
    points(db, b, day(2026, 2, 4), "reverse_redemption", 20).await;
    points(db, c, day(2026, 2, 5), "other", 999).await;
    for (who, score) in [(a, 10), (b, 9), (c, 7), (a, 3)] {
        feedback(db, who, day(2026, 1, 12), "nps", score).await;
    }
    feedback(db, b, day(2026, 1, 13), "review", 5).await;
    feedback(db, b, day(2026, 2, 12), "nps", 0).await;
    for who in [a, b, c, d] {
        subscription(db, who, day(2026, 1, 28), "due").await;
    }
    for who in [a, b, c] {
        subscription(db, who, day(2026, 1, 29), "renewed").await;
    }
    subscription(db, b, day(2026, 2, 28), "due").await;
    Fixture
}

fn filter(channel: &str, store: &str, tier: &str) -> Option<pb::KpiFilter> {
    Some(pb::KpiFilter {
        channel: channel.into(),
        store_id: store.into(),
        tier_code: tier.into(),
    })
}

async fn get_kpi(
    stack: &Stack,
    kpi: pb::Kpi,
    period: pb::Period,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filter: Option<pb::KpiFilter>,
) -> Result<Vec<pb::KpiPoint>, tonic::Status> {
    Ok(stack
        .analytics
        .clone()
        .get_kpi(req(pb::GetKpiRequest {
            kpi: kpi as i32,
            period: period as i32,
            from: Some(common::timestamp(from)),
            to: Some(common::timestamp(to)),
            filter,
        }))
        .await?
        .into_inner()
        .points)
}

/// Jan, Feb and Mar 2026 by month: (value, numerator, denominator) each.
async fn months(stack: &Stack, kpi: pb::Kpi, f: Option<pb::KpiFilter>) -> Vec<(f64, f64, f64)> {
    let points = get_kpi(
        stack,
        kpi,
        pb::Period::Month,
        utc(2026, 1, 1),
        utc(2026, 4, 1),
        f,
    )
    .await
    .expect("kpi");
    let starts: Vec<i64> = points
        .iter()
        .map(|p| p.period_start.unwrap().seconds)
        .collect();
    assert_eq!(
        starts,
        [utc(2026, 1, 1), utc(2026, 2, 1), utc(2026, 3, 1)].map(|t| t.timestamp()),
        "{kpi:?}: every month present"
    );
    points
        .iter()
        .map(|p| (p.value, p.numerator, p.denominator))
        .collect()
}

fn values(points: &[(f64, f64, f64)]) -> Vec<f64> {
    points.iter().map(|p| p.0).collect()
}

#[tokio::test]
async fn member_kpis_by_month_match_the_hand_computed_figures() {
    let stack = spawn().await;
    fixture(&stack).await;
    use pb::Kpi as K;
    // B and C in January (E merged away), D in February.
    assert_eq!(
        months(&stack, K::NewMembers, None).await,
        [(2.0, 2.0, 1.0), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)]
    );
    // January: A and B bought, of A, B and C enrolled; February: B and D
    // (C's purchase is in USD), of four.
    assert_eq!(
        months(&stack, K::ActiveRate, None).await,
        [(2.0 / 3.0, 2.0, 3.0), (0.5, 2.0, 4.0), (0.0, 0.0, 4.0)]
    );
    // A bought on two days of January, B on one; D on two of February.
    assert_eq!(
        months(&stack, K::RepurchaseRate, None).await,
        [(0.5, 1.0, 2.0), (0.5, 1.0, 2.0), (0.0, 0.0, 0.0)]
    );
    // January: A 100 + 20 + (50 - 10) = 160, B 30: 190 / 2.
    assert_eq!(
        months(&stack, K::MemberSpendPerHead, None).await,
        [
            (9_500.0, 19_000.0, 2.0),
            (5_500.0, 11_000.0, 2.0),
            (0.0, 0.0, 0.0)
        ]
    );
    // Guests: (25 + 15 - 5) / 2 orders; 40 / 1.
    assert_eq!(
        months(&stack, K::GuestSpendPerHead, None).await,
        [
            (1_750.0, 3_500.0, 2.0),
            (4_000.0, 4_000.0, 1.0),
            (0.0, 0.0, 0.0)
        ]
    );
    // The erased member's 70 still counts as member spend and an order.
    assert_eq!(
        values(&months(&stack, K::MemberSpend, None).await),
        [26_000.0, 11_000.0, 0.0]
    );
    assert_eq!(
        values(&months(&stack, K::MemberOrders, None).await),
        [5.0, 3.0, 0.0]
    );
}

#[tokio::test]
async fn points_feedback_and_renewal_kpis_match_the_hand_computed_figures() {
    let stack = spawn().await;
    fixture(&stack).await;
    use pb::Kpi as K;
    assert_eq!(
        values(&months(&stack, K::PointsIssued, None).await),
        [750.0, 0.0, 0.0]
    );
    assert_eq!(
        values(&months(&stack, K::PointsRedeemed, None).await),
        [200.0, 80.0, 0.0]
    );
    assert_eq!(
        values(&months(&stack, K::PointsExpired, None).await),
        [0.0, 100.0, 0.0]
    );
    // December's 1000 carried in: 1000 + 750 - 200; then - 100 - 80.
    assert_eq!(
        values(&months(&stack, K::PointsLiability, None).await),
        [1_550.0, 1_370.0, 1_370.0]
    );
    assert_eq!(
        months(&stack, K::BreakageRate, None).await,
        [
            (0.0, 0.0, 200.0),
            (100.0 / 380.0, 100.0, 380.0),
            (100.0 / 380.0, 100.0, 380.0)
        ]
    );
    // January: promoters 10 and 9, detractor 3, passive 7.
    assert_eq!(
        months(&stack, K::Nps, None).await,
        [(25.0, 1.0, 4.0), (-100.0, -1.0, 1.0), (0.0, 0.0, 0.0)]
    );
    assert_eq!(
        months(&stack, K::Satisfaction, None).await,
        [(7.25, 29.0, 4.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)]
    );
    assert_eq!(
        months(&stack, K::RenewalRate, None).await,
        [(0.75, 3.0, 4.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)]
    );
}

#[tokio::test]
async fn channel_store_and_tier_filters_narrow_purchases_and_members() {
    let stack = spawn().await;
    fixture(&stack).await;
    use pb::Kpi as K;
    // Online: A and B in January, only D in February.
    assert_eq!(
        values(&months(&stack, K::ActiveRate, filter("ONLINE", "", "")).await),
        [2.0 / 3.0, 0.25, 0.0]
    );
    // Store s1: A on two days of January, B on one; D twice in February.
    assert_eq!(
        values(&months(&stack, K::RepurchaseRate, filter("", "s1", "")).await),
        [0.5, 1.0, 0.0]
    );
    // Gold: A alone spends in EUR; the erased member has no tier.
    assert_eq!(
        months(&stack, K::MemberSpendPerHead, filter("", "", "gold")).await,
        [(16_000.0, 16_000.0, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    );
    assert_eq!(
        values(&months(&stack, K::MemberSpend, filter("", "", "gold")).await),
        [16_000.0, 0.0, 0.0]
    );
    assert_eq!(
        values(&months(&stack, K::NewMembers, filter("", "", "gold")).await),
        [1.0, 0.0, 0.0]
    );
    // Silver: B's own points only.
    assert_eq!(
        values(&months(&stack, K::PointsLiability, filter("", "", "silver")).await),
        [250.0, 170.0, 170.0]
    );
    // Gold feedback: 10, 7 and 3.
    assert_eq!(
        months(&stack, K::Nps, filter("", "", "gold")).await[0],
        (0.0, 0.0, 3.0)
    );
    assert_eq!(
        values(&months(&stack, K::RenewalRate, filter("", "", "gold")).await),
        [1.0, 0.0, 0.0]
    );
    // Guests online and in store s2.
    assert_eq!(
        values(&months(&stack, K::GuestSpendPerHead, filter("IN_STORE", "s2", "")).await),
        [1_000.0, 0.0, 0.0]
    );
}

#[tokio::test]
async fn weeks_and_days_are_local_and_quarters_and_years_calendar() {
    let stack = spawn().await;
    stack.settings("Europe/Paris").await;
    let db = &stack.db;
    // Sunday March 1st 23:30 in Paris; Monday March 2nd 00:30 in Paris;
    // Sunday March 8th.
    member(
        db,
        Utc.with_ymd_and_hms(2026, 3, 1, 22, 30, 0).unwrap(),
        "",
        "active",
    )
    .await;
    member(
        db,
        Utc.with_ymd_and_hms(2026, 3, 1, 23, 30, 0).unwrap(),
        "",
        "active",
    )
    .await;
    member(
        db,
        Utc.with_ymd_and_hms(2026, 3, 8, 12, 0, 0).unwrap(),
        "",
        "active",
    )
    .await;
    member(
        db,
        Utc.with_ymd_and_hms(2025, 12, 31, 12, 0, 0).unwrap(),
        "",
        "active",
    )
    .await;
    let paris_midnight = |y, m, d| {
        chrono_tz::Europe::Paris
            .with_ymd_and_hms(y, m, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let weeks = get_kpi(
        &stack,
        pb::Kpi::NewMembers,
        pb::Period::Week,
        paris_midnight(2026, 2, 23),
        paris_midnight(2026, 3, 9),
        None,
    )
    .await
    .unwrap();
    let got: Vec<(i64, f64)> = weeks
        .iter()
        .map(|p| (p.period_start.unwrap().seconds, p.value))
        .collect();
    assert_eq!(
        got,
        [
            (paris_midnight(2026, 2, 23).timestamp(), 1.0),
            (paris_midnight(2026, 3, 2).timestamp(), 2.0)
        ]
    );
    // `from` mid-week still starts at its Monday; days run to the day of
    // the last instant before `to`.
    let days = get_kpi(
        &stack,
        pb::Kpi::NewMembers,
        pb::Period::Day,
        paris_midnight(2026, 3, 1) + chrono::Duration::hours(5),
        paris_midnight(2026, 3, 3),
        None,
    )
    .await
    .unwrap();
    assert_eq!(days.iter().map(|p| p.value).collect::<Vec<_>>(), [1.0, 1.0]);
    let quarters = get_kpi(
        &stack,
        pb::Kpi::NewMembers,
        pb::Period::Quarter,
        utc(2025, 11, 1),
        paris_midnight(2026, 7, 1),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        quarters.iter().map(|p| p.value).collect::<Vec<_>>(),
        [1.0, 3.0, 0.0]
    );
    assert_eq!(
        quarters[1].period_start.unwrap().seconds,
        paris_midnight(2026, 1, 1).timestamp()
    );
    let years = get_kpi(
        &stack,
        pb::Kpi::NewMembers,
        pb::Period::Year,
        utc(2025, 6, 1),
        utc(2026, 6, 1),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        years.iter().map(|p| p.value).collect::<Vec<_>>(),
        [1.0, 3.0]
    );
}

#[tokio::test]
async fn bad_requests_name_their_fields_and_settings_come_first() {
    let stack = spawn().await;
    let no_settings = get_kpi(
        &stack,
        pb::Kpi::Nps,
        pb::Period::Day,
        utc(2026, 1, 1),
        utc(2026, 1, 2),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(no_settings.code(), tonic::Code::FailedPrecondition);
    stack.settings("UTC").await;
    let invalid = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        fields(&status)
    };
    let e = stack
        .analytics
        .clone()
        .get_kpi(req(pb::GetKpiRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(invalid(e), ["kpi", "period", "from", "to"]);
    let e = get_kpi(
        &stack,
        pb::Kpi::Nps,
        pb::Period::Day,
        utc(2026, 1, 2),
        utc(2026, 1, 2),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(invalid(e), ["to"]);
    let e = get_kpi(
        &stack,
        pb::Kpi::Nps,
        pb::Period::Day,
        utc(2026, 1, 1),
        utc(2026, 1, 2),
        filter("", "s1", ""),
    )
    .await
    .unwrap_err();
    assert_eq!(invalid(e), ["filter.store_id"]);
    let e = get_kpi(
        &stack,
        pb::Kpi::GuestSpendPerHead,
        pb::Period::Day,
        utc(2026, 1, 1),
        utc(2026, 1, 2),
        filter("FAX", "", "gold"),
    )
    .await
    .unwrap_err();
    assert_eq!(invalid(e), ["filter.channel", "filter.tier_code"]);
    // 1,000 days pass; 1,001 do not.
    let from = utc(2026, 1, 1);
    let thousand = get_kpi(
        &stack,
        pb::Kpi::Nps,
        pb::Period::Day,
        from,
        from + chrono::Duration::days(1_000),
        None,
    )
    .await
    .unwrap();
    assert_eq!(thousand.len(), 1_000);
    let e = get_kpi(
        &stack,
        pb::Kpi::Nps,
        pb::Period::Day,
        from,
        from + chrono::Duration::days(1_001),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(invalid(e), ["to"]);
}
