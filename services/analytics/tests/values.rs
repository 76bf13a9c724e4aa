//! Member value over gRPC: a model fitted on a seeded population, each
//! member's probability alive, historical CLV computed by hand, lifecycle
//! stages with one `LifecycleChanged` per change, and the members at risk
//! ranked by value at risk.
//!
//! The population's facts are written straight into the fact tables (as
//! the consumer keeps them; the facts tests cover the events) so a
//! thousand members with histories take a second.

mod common;

use chrono::{Duration, NaiveDate};
use common::{Stack, WAIT, eventually, req, rid, spawn, timestamp};
use laurel_proto::analytics::v1::{self as pb, LifecycleStage};
use laurel_runtime::clock::Clock;
use uuid::Uuid;

/// Writes a member and their purchase days (one order each) as the
/// consumer would have kept them.
async fn seed(stack: &Stack, member: Uuid, enrolled: NaiveDate, days: &[(NaiveDate, i64)]) {
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at) VALUES ('default', $1, $2)",
    )
    .bind(member)
    .bind(enrolled.and_hms_opt(0, 0, 0).unwrap().and_utc())
    .execute(&stack.db)
    .await
    .unwrap();
    if days.is_empty() {
        return;
    }
    for (day, spend) in days {
        sqlx::query(
            "INSERT INTO member_days (program_id, member_id, currency_code, day, orders, spend_minor)
             VALUES ('default', $1, 'EUR', $2, 1, $3)",
        )
        .bind(member)
        .bind(day)
        .bind(spend)
        .execute(&stack.db)
        .await
        .unwrap();
    }
    let first = days.iter().map(|d| d.0).min().unwrap();
    let last = days.iter().map(|d| d.0).max().unwrap();
    let total: i64 = days.iter().map(|d| d.1).sum();
    let first_day_spend: i64 = days.iter().filter(|d| d.0 == first).map(|d| d.1).sum();
    sqlx::query(
        "INSERT INTO member_spend (program_id, member_id, currency_code, first_purchase_at,
            last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor,
            refunded_minor, refunds, first_day_spend_minor)
         VALUES ('default', $1, 'EUR', $2, $3, $4, $5, $6, $6, $7, 0, 0, $8)",
    )
    .bind(member)
    .bind(first.and_hms_opt(12, 0, 0).unwrap().and_utc())
    .bind(last.and_hms_opt(12, 0, 0).unwrap().and_utc())
    .bind(first)
    .bind(last)
    .bind(days.len() as i64)
    .bind(total)
    .bind(first_day_spend)
    .execute(&stack.db)
    .await
    .unwrap();
}

async fn value(stack: &Stack, member: Uuid) -> pb::MemberValue {
    stack
        .analytics
        .clone()
        .get_member_value(req(pb::GetMemberValueRequest {
            member_id: member.to_string(),
            horizon_weeks: 0,
        }))
        .await
        .expect("value")
        .into_inner()
        .value
        .unwrap()
}

async fn lifecycle_events(stack: &Stack, member: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE member_id = $1 AND event_type = 'analytics.LifecycleChanged'",
    )
    .bind(member)
    .fetch_one(&stack.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn values_stages_and_members_at_risk_follow_the_facts() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let today = stack.clock.now().date_naive();
    let d = |ago: i64| today - Duration::days(ago);
    // A population for the fit: member i buys every (7 + i % 20) days for
    // a while, some stopping early.
    for i in 0..600i64 {
        let every = 7 + i % 20;
        let stop = if i % 3 == 0 { 200 } else { 0 };
        let days: Vec<(NaiveDate, i64)> = (0..)
            .map(|k| 360 - k * every)
            .take_while(|ago| *ago > stop)
            .take(1 + (i % 9) as usize)
            .map(|ago| (d(ago), 1_000 + 10 * i))
            .collect();
        seed(&stack, Uuid::now_v7(), d(400), &days).await;
    }
    let (prospect, newbie, regular, lapsed) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    seed(&stack, prospect, d(10), &[]).await;
    seed(&stack, newbie, d(10), &[(d(5), 5_000)]).await;
    // Every 10 days, last 5 days ago: 36 purchases of 1,000 within the
    // 365-day window.
    let regular_days: Vec<_> = (0..36).map(|k| (d(5 + 10 * k), 1_000)).collect();
    seed(&stack, regular, d(400), &regular_days).await;
    // The same rhythm, big spender, gone for 45 days (4.5 rhythms).
    let lapsed_days: Vec<_> = (0..30).map(|k| (d(45 + 10 * k), 20_000)).collect();
    seed(&stack, lapsed, d(400), &lapsed_days).await;

    let end = stack.clock.now() - Duration::days(1);
    let model = stack
        .analytics
        .clone()
        .fit_clv_model(req(pb::FitClvModelRequest {
            request_id: rid(),
            calibration_start: None,
            calibration_end: Some(timestamp(end)),
        }))
        .await
        .expect("fit")
        .into_inner()
        .model
        .unwrap();
    assert!(
        model.gamma_gamma.is_some(),
        "repeat buyers with varied spend"
    );

    let p = value(&stack, prospect).await;
    assert_eq!(p.stage, LifecycleStage::Prospect as i32);
    let n = value(&stack, newbie).await;
    assert_eq!(n.stage, LifecycleStage::New as i32);
    assert!(
        (n.probability_alive - 1.0).abs() < 1e-12,
        "BG/NBD: no repeat, alive"
    );
    let r = value(&stack, regular).await;
    assert_eq!(r.stage, LifecycleStage::Active as i32);
    assert_eq!(r.model_id, model.model_id);
    // Historical CLV: window spend / window years x 3 years.
    let expected = (36_000.0 / (365.0 / 365.25) * 3.0_f64).round() as i64;
    assert_eq!(r.historical_clv_minor, expected);
    let l = value(&stack, lapsed).await;
    // 4.5 rhythms overdue is dormant by recency; the worse of that and
    // the probability alive decides (below 0.1 is churned).
    let by_alive = if l.probability_alive < 0.1 {
        LifecycleStage::Churned
    } else {
        LifecycleStage::Dormant
    };
    assert_eq!(l.stage, by_alive as i32, "p alive {}", l.probability_alive);
    assert!(l.probability_alive < r.probability_alive);
    let (lc, rc) = (l.churn.unwrap(), r.churn.unwrap());
    assert!(lc.score > rc.score, "lapsed {lc:?} vs regular {rc:?}");
    assert!(lc.overdue > 0.0 && rc.overdue == 0.0);
    assert!(l.predictive_clv_minor > 0 && l.value_at_risk_minor > 0);
    assert_eq!(
        l.value_at_risk_minor,
        l.predictive_clv_minor * i64::from(lc.score as u8) / 100
    );

    // The scoring job (every 100 ms here) stores the figures and says
    // each member's first stage once.
    eventually(WAIT, "the members are scored", || async {
        (lifecycle_events(&stack, lapsed).await == 1).then_some(())
    })
    .await;
    let at_risk = stack
        .analytics
        .clone()
        .list_members_at_risk(req(pb::ListMembersAtRiskRequest {
            limit: 5,
            min_score: 30,
        }))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(
        at_risk.first().map(|m| m.member_id.clone()),
        Some(lapsed.to_string())
    );
    assert!(
        at_risk
            .windows(2)
            .all(|w| w[0].value_at_risk_minor >= w[1].value_at_risk_minor)
    );

    // The lapsed member buys again: active, one more LifecycleChanged.
    sqlx::query(
        "UPDATE member_spend SET last_day = $2, purchase_days = purchase_days + 1,
            orders = orders + 1, gross_minor = gross_minor + 20000 WHERE member_id = $1",
    )
    .bind(lapsed)
    .bind(today)
    .execute(&stack.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO member_days (program_id, member_id, currency_code, day, orders, spend_minor)
         VALUES ('default', $1, 'EUR', $2, 1, 20000)",
    )
    .bind(lapsed)
    .bind(today)
    .execute(&stack.db)
    .await
    .unwrap();
    // A new fit makes the scoring due again.
    stack
        .analytics
        .clone()
        .fit_clv_model(req(pb::FitClvModelRequest {
            request_id: rid(),
            calibration_start: None,
            calibration_end: Some(timestamp(end)),
        }))
        .await
        .unwrap();
    eventually(WAIT, "the return is a second stage change", || async {
        (lifecycle_events(&stack, lapsed).await == 2).then_some(())
    })
    .await;
    assert_eq!(
        lifecycle_events(&stack, regular).await,
        1,
        "no change, no event"
    );
    assert_eq!(
        value(&stack, lapsed).await.stage,
        LifecycleStage::Active as i32
    );
}

#[tokio::test]
async fn value_requests_are_validated() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let e = stack
        .analytics
        .clone()
        .get_member_value(req(pb::GetMemberValueRequest {
            member_id: "x".into(),
            horizon_weeks: 999,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut f = common::fields(&e);
    f.sort();
    assert_eq!(f, ["horizon_weeks", "member_id"]);
    let e = stack
        .analytics
        .clone()
        .list_members_at_risk(req(pb::ListMembersAtRiskRequest {
            limit: 5000,
            min_score: 101,
        }))
        .await
        .unwrap_err();
    let mut f = common::fields(&e);
    f.sort();
    assert_eq!(f, ["limit", "min_score"]);
    let unknown = stack
        .analytics
        .clone()
        .get_member_value(req(pb::GetMemberValueRequest {
            member_id: Uuid::now_v7().to_string(),
            horizon_weeks: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn summaries_from_the_spend_rows_equal_those_from_the_purchase_days() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let today = stack.clock.now().date_naive();
    let d = |ago: i64| today - Duration::days(ago);
    for i in 0..50i64 {
        let days: Vec<(NaiveDate, i64)> = (0..1 + i % 6)
            .map(|k| (d(300 - k * (5 + i % 7)), 500 * (1 + (i + k) % 4)))
            .collect();
        seed(&stack, Uuid::now_v7(), d(400), &days).await;
    }
    // Five who bought first later, for a calibration start.
    for i in 0..5i64 {
        let days = [(d(100 + i), 900), (d(40), 300 * i)];
        seed(
            &stack,
            Uuid::now_v7(),
            d(400),
            &days[..1 + (i % 2) as usize],
        )
        .await;
    }
    let mut conn = stack.db.acquire().await.unwrap();
    let sorted = |mut v: Vec<(Uuid, laurel_analytics_models::clv::CustomerSummary)>| {
        v.sort_by_key(|x| x.0);
        v
    };
    let from_spend =
        laurel_analytics::clv::summaries_from_spend(&mut conn, "default", "EUR", None, today)
            .await
            .unwrap();
    let from_days =
        laurel_analytics::clv::summaries_from_days(&mut conn, "default", "EUR", None, today)
            .await
            .unwrap();
    assert_eq!(from_spend.len(), 55);
    assert_eq!(sorted(from_spend), sorted(from_days));
    // A calibration start leaves out those who bought first before it.
    let start = Some(d(200));
    let from_spend =
        laurel_analytics::clv::summaries_from_spend(&mut conn, "default", "EUR", start, today)
            .await
            .unwrap();
    let from_days =
        laurel_analytics::clv::summaries_from_days(&mut conn, "default", "EUR", start, today)
            .await
            .unwrap();
    assert_eq!(from_spend.len(), 5);
    assert_eq!(sorted(from_spend), sorted(from_days));
}
