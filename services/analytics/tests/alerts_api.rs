//! Alert rules and alerts over gRPC: rules are checked field by field,
//! stored idempotently and listed by id; an ABOVE rule raises one alert
//! for its period, with an `AlertRaised` event on the analytics stream;
//! alerts page newest first.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{Options, Stack, WAIT, eventually, fields, req, rid, spawn, spawn_with};
use laurel_proto::{analytics::v1 as pb, common::v1::EventEnvelope};
use prost::Message;
use uuid::Uuid;

fn rule(id: &str, condition: pb::AlertCondition, threshold: f64) -> pb::AlertRule {
    pb::AlertRule {
        rule_id: id.into(),
        kpi: pb::Kpi::PointsIssued as i32,
        period: pb::Period::Day as i32,
        filter: None,
        condition: condition as i32,
        threshold,
        deviations: 0.0,
        baseline_periods: 0,
        enabled: true,
    }
}

async fn put(
    stack: &Stack,
    request_id: &str,
    rule: pb::AlertRule,
) -> Result<pb::AlertRule, tonic::Status> {
    Ok(stack
        .analytics
        .clone()
        .put_alert_rule(req(pb::PutAlertRuleRequest {
            request_id: request_id.into(),
            rule: Some(rule),
        }))
        .await?
        .into_inner()
        .rule
        .unwrap())
}

async fn alerts(
    stack: &Stack,
    rule_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListAlertsResponse, tonic::Status> {
    Ok(stack
        .analytics
        .clone()
        .list_alerts(req(pb::ListAlertsRequest {
            rule_id: rule_id.into(),
            page_size,
            page_token: page_token.into(),
        }))
        .await?
        .into_inner())
}

#[tokio::test]
async fn rules_are_checked_stored_idempotently_and_listed_by_id() {
    let stack = spawn().await;
    let bad = put(
        &stack,
        &rid(),
        pb::AlertRule {
            rule_id: "no spaces".into(),
            kpi: pb::Kpi::Nps as i32,
            period: 0,
            filter: Some(pb::KpiFilter {
                channel: "ONLINE".into(),
                ..Default::default()
            }),
            condition: 0,
            threshold: f64::INFINITY,
            deviations: -2.0,
            baseline_periods: 2,
            enabled: true,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        fields(&bad),
        [
            "rule.rule_id",
            "rule.period",
            "rule.filter.channel",
            "rule.condition",
            "rule.threshold",
            "rule.deviations",
            "rule.baseline_periods"
        ]
    );
    let request_id = rid();
    let stored = put(
        &stack,
        &request_id,
        rule("b-deviation", pb::AlertCondition::Deviation, 0.0),
    )
    .await
    .unwrap();
    assert_eq!(
        (stored.deviations, stored.baseline_periods),
        (3.0, 28),
        "defaults filled"
    );
    let again = put(
        &stack,
        &request_id,
        rule("b-deviation", pb::AlertCondition::Deviation, 0.0),
    )
    .await
    .unwrap();
    assert_eq!(again, stored);
    let reused = put(
        &stack,
        &request_id,
        rule("b-deviation", pb::AlertCondition::Above, 5.0),
    )
    .await
    .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists);
    put(
        &stack,
        &rid(),
        rule("a-above", pb::AlertCondition::Above, 5.0),
    )
    .await
    .unwrap();
    let mut replaced = rule("b-deviation", pb::AlertCondition::Below, 7.0);
    replaced.enabled = false;
    replaced.filter = Some(pb::KpiFilter {
        tier_code: "gold".into(),
        ..Default::default()
    });
    put(&stack, &rid(), replaced.clone()).await.unwrap();
    let listed = stack
        .analytics
        .clone()
        .list_alert_rules(req(pb::ListAlertRulesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .rules;
    let ids: Vec<&str> = listed.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(ids, ["a-above", "b-deviation"]);
    assert_eq!(
        listed[1],
        pb::AlertRule {
            deviations: 3.0,
            baseline_periods: 28,
            ..replaced
        }
    );
}

/// Inserts a points movement of `points` earned at `at` (UTC settings).
async fn earn(stack: &Stack, points: i64, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO points_movements (program_id, movement_id, member_id, kind, points, occurred_at, day)
         VALUES ('default', $1, NULL, 'earn', $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(points)
    .bind(at)
    .bind(at.date_naive())
    .execute(&stack.db)
    .await
    .unwrap();
}

/// Stream entries as XRANGE returns them: id and field-value pairs.
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// The AlertRaised events on the analytics stream.
async fn raised_events(stack: &Stack) -> Vec<pb::AlertRaised> {
    let client = redis::Client::open(laurel_test_support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Entries = redis::cmd("XRANGE")
        .arg(format!("{}:events:analytics", stack.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    entries
        .iter()
        .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k == "envelope"))
        .map(|(_, v)| EventEnvelope::decode(v.as_slice()).unwrap())
        .filter(|e| e.event_type == "analytics.AlertRaised")
        .map(|e| {
            assert!(e.member_id.is_empty());
            e.payload.unwrap().to_msg().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn an_above_rule_raises_once_per_period_with_an_event() {
    let now = Utc.with_ymd_and_hms(2026, 6, 10, 15, 0, 0).unwrap();
    let stack = spawn_with(Options {
        start: Some(now),
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    put(
        &stack,
        &rid(),
        rule("issued-above-100", pb::AlertCondition::Above, 100.0),
    )
    .await
    .unwrap();
    earn(&stack, 60, now - Duration::hours(2)).await;
    earn(&stack, 70, now - Duration::hours(1)).await;
    let page = eventually(WAIT, "the alert", || async {
        let page = alerts(&stack, "", 0, "").await.ok()?;
        (!page.alerts.is_empty()).then_some(page)
    })
    .await;
    let alert = &page.alerts[0];
    assert_eq!(
        (
            alert.rule_id.as_str(),
            alert.kpi,
            alert.value,
            alert.expected,
            alert.delivery.as_str()
        ),
        (
            "issued-above-100",
            pb::Kpi::PointsIssued as i32,
            130.0,
            100.0,
            "none"
        )
    );
    assert_eq!(
        alert.period_start.unwrap().seconds,
        Utc.with_ymd_and_hms(2026, 6, 10, 0, 0, 0)
            .unwrap()
            .timestamp()
    );
    // More points the same day raise nothing new.
    earn(&stack, 500, now).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(alerts(&stack, "", 0, "").await.unwrap().alerts.len(), 1);
    let events = eventually(WAIT, "the AlertRaised event", || async {
        let events = raised_events(&stack).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].alert.as_ref(), Some(alert));
    assert_eq!(events[0].evaluated_at.unwrap().seconds, now.timestamp());
}

#[tokio::test]
async fn alerts_page_newest_first_and_filter_by_rule() {
    let stack = spawn().await;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut ids = Vec::new();
    for i in 0..5i64 {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO alerts (program_id, alert_id, rule_id, kpi, period_start, value, expected,
                stddev, raised_at, delivery)
             VALUES ('default', $1, $2, 'KPI_NPS', $3, $4, 0, 0, $3, 'none')",
        )
        .bind(id)
        .bind(if i % 2 == 0 { "even" } else { "odd" })
        .bind(base + Duration::days(i))
        .bind(i as f64)
        .execute(&stack.db)
        .await
        .unwrap();
        ids.push(id.to_string());
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = alerts(&stack, "", 2, &token).await.unwrap();
        assert!(page.alerts.len() <= 2);
        seen.extend(page.alerts.iter().map(|a| a.alert_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    let even: Vec<f64> = alerts(&stack, "even", 0, "")
        .await
        .unwrap()
        .alerts
        .iter()
        .map(|a| a.value)
        .collect();
    assert_eq!(even, [4.0, 2.0, 0.0]);
    let bad = alerts(&stack, "not a rule!", -1, "%%%").await.unwrap_err();
    assert_eq!(fields(&bad), ["rule_id", "page_size", "page_token"]);
}
