//! A points-farming scenario: daily points issuance steady for eight days
//! raises nothing; a day issuing five times as much breaches the 3-sigma
//! band of the previous seven days and raises exactly one alert, which
//! stays one as more points come in and the next normal day passes.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{Options, Stack, WAIT, eventually, req, rid, spawn_with};
use laurel_proto::analytics::v1 as pb;
use uuid::Uuid;

async fn earn(stack: &Stack, points: i64, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO points_movements (program_id, movement_id, member_id, kind, points, occurred_at, day)
         VALUES ('default', $1, $2, 'earn', $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(points)
    .bind(at)
    .bind(at.date_naive())
    .execute(&stack.db)
    .await
    .unwrap();
}

async fn alerts(stack: &Stack) -> Vec<pb::Alert> {
    stack
        .analytics
        .clone()
        .list_alerts(req(pb::ListAlertsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .alerts
}

/// Lets the 100 ms evaluation job run several times.
async fn a_few_runs() {
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
}

#[tokio::test]
async fn a_day_three_sigma_above_a_steady_week_raises_one_alert() {
    let today = Utc.with_ymd_and_hms(2026, 5, 20, 0, 0, 0).unwrap();
    let stack = spawn_with(Options {
        start: Some(today + Duration::hours(9)),
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    // Eight steady days before today, each issued by two members (all in
    // place before the rule, so no evaluation sees half a day).
    let steady = [1_000, 1_060, 940, 1_030, 970, 1_000, 1_050, 950];
    for (i, total) in steady.iter().enumerate() {
        let day = today - Duration::days(8 - i as i64);
        earn(&stack, total / 2, day + Duration::hours(10)).await;
        earn(&stack, total - total / 2, day + Duration::hours(16)).await;
    }
    earn(&stack, 300, today + Duration::hours(8)).await;
    stack
        .analytics
        .clone()
        .put_alert_rule(req(pb::PutAlertRuleRequest {
            request_id: rid(),
            rule: Some(pb::AlertRule {
                rule_id: "points-farming".into(),
                kpi: pb::Kpi::PointsIssued as i32,
                period: pb::Period::Day as i32,
                condition: pb::AlertCondition::Deviation as i32,
                deviations: 3.0,
                baseline_periods: 7,
                enabled: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    a_few_runs().await;
    assert!(
        alerts(&stack).await.is_empty(),
        "a steady week raises nothing"
    );
    // Today: a farming spike.
    earn(&stack, 4_700, today + Duration::hours(9)).await;
    let raised = eventually(WAIT, "the farming alert", || async {
        let a = alerts(&stack).await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(raised.len(), 1);
    let alert = &raised[0];
    assert_eq!(alert.period_start.unwrap().seconds, today.timestamp());
    assert_eq!(alert.value, 5_000.0);
    // The previous seven days: mean 1000, deviations 60, -60, 30, -30, 0,
    // 50, -50: population variance 14,000 / 7 = 2,000.
    assert!(
        (alert.expected - 1_000.0).abs() < 1e-9,
        "{}",
        alert.expected
    );
    assert!(
        (alert.stddev - 2_000f64.sqrt()).abs() < 1e-9,
        "{}",
        alert.stddev
    );
    earn(&stack, 3_000, today + Duration::hours(10)).await;
    a_few_runs().await;
    assert_eq!(alerts(&stack).await.len(), 1, "one alert per period");
    // The next day is a normal one: today, now complete, raised already.
    stack.advance(Duration::days(1));
    earn(&stack, 1_000, today + Duration::hours(33)).await;
    a_few_runs().await;
    assert_eq!(alerts(&stack).await.len(), 1);
}
