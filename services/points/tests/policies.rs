//! Programme settings at work: expiry with period ends, reminders, the
//! expiry job exactly once on two replicas, pending points, the three
//! reversal policies, redemption rate and shares, the statement.

mod common;

use std::time::Duration;

use common::{Options, Stack, eventually, fields, reason, req, rid, spawn, spawn_with};
use laurel_proto::{common::v1::Money, points::v1 as pb};
use laurel_runtime::clock::Clock;
use tonic::Code;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

async fn settings(stack: &Stack, change: impl FnOnce(&mut pb::ProgramSettings)) {
    let mut points = stack.points.clone();
    let mut s = points
        .get_program_settings(req(pb::GetProgramSettingsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    change(&mut s);
    points
        .update_program_settings(req(pb::UpdateProgramSettingsRequest {
            request_id: rid(),
            settings: Some(s),
        }))
        .await
        .expect("settings update");
}

async fn rules(stack: &Stack) {
    let at = stack.clock.now() - chrono::Duration::days(1);
    stack
        .points
        .clone()
        .publish_earn_rules(req(pb::PublishEarnRulesRequest {
            request_id: rid(),
            rules: Some(pb::EarnRules {
                effective_from: Some(prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: 0,
                }),
                base_points: 1,
                base_amount_minor: 100,
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
}

/// Rules in force since `days_ago`: a point per euro, at most
/// `max_points_per_day` order points a day (0: no cap), and 20 points a
/// review, two reviews a day.
async fn review_rules(stack: &Stack, days_ago: i64, max_points_per_day: i64) {
    let from = stack.clock.now() - chrono::Duration::days(days_ago);
    stack
        .points
        .clone()
        .publish_earn_rules(req(pb::PublishEarnRulesRequest {
            request_id: rid(),
            rules: Some(pb::EarnRules {
                effective_from: Some(prost_types::Timestamp {
                    seconds: from.timestamp(),
                    nanos: 0,
                }),
                base_points: 1,
                base_amount_minor: 100,
                max_points_per_day,
                event_rules: vec![pb::EventRule {
                    kind: pb::EarnKind::Review as i32,
                    points: 20,
                    max_per_day: 2,
                }],
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
}

async fn earn_order(stack: &Stack, member: Uuid, order_id: &str, total: i64) -> pb::EarnResponse {
    stack
        .points
        .clone()
        .earn(req(pb::EarnRequest {
            request_id: rid(),
            member_id: member.to_string(),
            kind: pb::EarnKind::Order as i32,
            order: Some(pb::Order {
                order_id: order_id.into(),
                total: eur(total),
                lines: vec![],
            }),
            ..Default::default()
        }))
        .await
        .expect("order earns")
        .into_inner()
}

async fn refund(stack: &Stack, order_id: &str, amount: i64) -> pb::ReverseResponse {
    stack
        .points
        .clone()
        .reverse(req(pb::ReverseRequest {
            request_id: rid(),
            target: Some(pb::reverse_request::Target::OrderRefund(pb::OrderRefund {
                order_id: order_id.into(),
                refunded: eur(amount),
            })),
            reason: String::new(),
        }))
        .await
        .expect("reverse")
        .into_inner()
}

async fn redeem(
    stack: &Stack,
    member: Uuid,
    points: i64,
    total: i64,
) -> Result<pb::RedeemResponse, tonic::Status> {
    stack
        .points
        .clone()
        .redeem(req(pb::RedeemRequest {
            request_id: rid(),
            member_id: member.to_string(),
            target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
                order_id: rid(),
                order_total: eur(total),
            })),
            points,
            reason: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn points_expire_at_the_period_end_once_with_two_replicas_and_a_reminder_first() {
    let stack = spawn().await;
    let second = spawn_with(Options {
        points_schema: Some(stack.points_schema.clone()),
        join: Some((stack.prefix.clone(), stack.member_addr)),
        ..Default::default()
    })
    .await;
    second.clock.set(stack.clock.now());
    settings(&stack, |s| {
        s.validity_days = 30;
        s.expiry_rounding = pb::ExpiryRounding::EndOfMonth as i32;
        s.reminder_days = 10;
    })
    .await;
    let m = stack.member().await;
    let earned = stack.give(m, 80).await;
    let expires = earned.expires_at.unwrap();
    let expires = chrono::DateTime::from_timestamp(expires.seconds, 0).unwrap();
    let validity_end = stack.clock.now() + chrono::Duration::days(30);
    assert!(
        expires > validity_end && expires - validity_end <= chrono::Duration::days(31),
        "moved to the end of the month"
    );
    assert_eq!(
        chrono::Datelike::day(&expires),
        1,
        "the first instant after the month ends"
    );
    let balance = stack.balance(m).await;
    assert_eq!(balance.expiring.len(), 1);
    assert_eq!(balance.expiring[0].points, 80);
    // Ten days before: one reminder.
    for clock in [&stack.clock, &second.clock] {
        clock.set(expires - chrono::Duration::days(9));
    }
    eventually(WAIT, "a reminder is sent", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE event_type = 'points.PointsExpiring'",
        )
        .fetch_one(&stack.db)
        .await
        .unwrap();
        (n >= 1).then_some(n)
    })
    .await;
    for clock in [&stack.clock, &second.clock] {
        clock.set(expires + chrono::Duration::seconds(1));
    }
    eventually(WAIT, "the points expire", || async {
        (stack.balance(m).await.total == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expiries: i64 = sqlx::query_scalar("SELECT count(*) FROM movements WHERE type = 8")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(expiries, 1, "expired exactly once by two replicas");
    let reminders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'points.PointsExpiring'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(reminders, 1, "one reminder");
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn pending_points_wait_for_the_return_window_and_refunds_follow_the_policy() {
    let stack = spawn().await;
    rules(&stack).await;
    settings(&stack, |s| {
        s.pending_days = 14;
        s.reversal_policy = pb::ReversalPolicy::CancelPendingOnly as i32;
        s.currency_code = "EUR".into();
    })
    .await;
    let m = stack.member().await;
    let earned = earn_order(&stack, m, "P-1", 10_000).await;
    let b = earned.balance.unwrap();
    assert_eq!((b.available, b.pending), (0, 100));
    assert_eq!(
        reason(&redeem(&stack, m, 1, 1_000).await.unwrap_err()),
        "INSUFFICIENT_POINTS"
    );
    // A refund inside the window cancels pending points.
    let r = refund(&stack, "P-1", 5_000).await;
    assert_eq!(r.points_not_reversed, 0);
    assert_eq!(stack.balance(m).await.pending, 50);
    stack.clock.advance(chrono::Duration::days(15));
    let b = stack.balance(m).await;
    assert_eq!(
        (b.available, b.pending),
        (50, 0),
        "available after the window"
    );
    // After the window the policy cancels nothing more.
    let r = refund(&stack, "P-1", 5_000).await;
    assert_eq!(r.points_not_reversed, 50);
    assert_eq!(stack.balance(m).await.available, 50);
    // Currency of a refund must be the order's.
    let wrong = stack
        .points
        .clone()
        .reverse(req(pb::ReverseRequest {
            request_id: rid(),
            target: Some(pb::reverse_request::Target::OrderRefund(pb::OrderRefund {
                order_id: "P-1".into(),
                refunded: Some(Money {
                    currency_code: "USD".into(),
                    amount_minor: 1,
                }),
            })),
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn clawbacks_stop_at_zero_or_go_negative_by_policy() {
    let stack = spawn().await;
    rules(&stack).await;
    let m = stack.member().await;
    earn_order(&stack, m, "C-1", 10_000).await;
    redeem(&stack, m, 80, 100_000).await.unwrap();
    // Default policy: claw back what is left.
    let r = refund(&stack, "C-1", 10_000).await;
    assert_eq!(
        (r.points_not_reversed, r.balance.unwrap().available),
        (80, 0)
    );
    settings(&stack, |s| {
        s.reversal_policy = pb::ReversalPolicy::AllowNegative as i32
    })
    .await;
    let n = stack.member().await;
    earn_order(&stack, n, "C-2", 10_000).await;
    redeem(&stack, n, 80, 100_000).await.unwrap();
    let r = refund(&stack, "C-2", 10_000).await;
    assert_eq!(
        (r.points_not_reversed, r.balance.unwrap().available),
        (0, -80)
    );
    // Later earns repay the debt first.
    let after = stack.give(n, 100).await;
    assert_eq!(after.balance.unwrap().available, 20);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn discounts_follow_the_rate_minimum_and_share_and_the_statement_pages() {
    let stack = spawn().await;
    settings(&stack, |s| {
        s.discount_minor_per_unit = 1;
        s.points_per_unit = 10;
        s.min_redeem_points = 50;
        s.max_order_share_bp = 5_000;
        s.currency_code = "EUR".into();
    })
    .await;
    let m = stack.member().await;
    stack.give(m, 10_000).await;
    let ok = redeem(&stack, m, 500, 1_000).await.unwrap();
    assert_eq!(ok.discount.unwrap().amount_minor, 50);
    let small = redeem(&stack, m, 10, 1_000).await.unwrap_err();
    assert_eq!(
        (small.code(), fields(&small)),
        (Code::InvalidArgument, vec!["points".to_owned()])
    );
    let share = redeem(&stack, m, 6_000, 1_000).await.unwrap_err();
    assert_eq!(fields(&share), ["points"]);
    let zero = redeem(&stack, m, 0, 1_000).await.unwrap_err();
    assert_eq!(fields(&zero), ["points"]);
    let usd = stack
        .points
        .clone()
        .redeem(req(pb::RedeemRequest {
            request_id: rid(),
            member_id: m.to_string(),
            target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
                order_id: "x".into(),
                order_total: Some(Money {
                    currency_code: "USD".into(),
                    amount_minor: 1_000,
                }),
            })),
            points: 100,
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&usd), ["order.order_total.currency_code"]);
    assert_eq!(
        stack.balance(m).await.available,
        9_500,
        "refusals changed nothing"
    );
    for _ in 0..3 {
        redeem(&stack, m, 100, 1_000).await.unwrap();
    }
    let mut points = stack.points.clone();
    let page = points
        .list_entries(req(pb::ListEntriesRequest {
            member_id: m.to_string(),
            page_size: 3,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.lines.len(), 3);
    assert_eq!(
        page.lines[0].balance_after, 9_200,
        "newest first with the balance after"
    );
    let rest = points
        .list_entries(req(pb::ListEntriesRequest {
            member_id: m.to_string(),
            page_size: 3,
            page_token: page.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.lines.len(), 2);
    assert!(rest.next_page_token.is_empty());
    let earns = points
        .list_entries(req(pb::ListEntriesRequest {
            member_id: m.to_string(),
            types: vec![pb::MovementType::Earn as i32],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(earns.lines.len(), 1);
    assert_eq!(earns.lines[0].movement.as_ref().unwrap().points, 10_000);
}

#[tokio::test]
async fn daily_caps_and_event_limits_hold_per_member_and_day() {
    let stack = spawn().await;
    review_rules(&stack, 1, 150).await;
    let m = stack.member().await;
    earn_order(&stack, m, "D-1", 10_000).await;
    let capped = earn_order(&stack, m, "D-2", 10_000).await;
    assert_eq!(capped.movement.unwrap().points, 50);
    assert!(capped.applied_rules.iter().any(|r| r.rule == "cap:day"));
    for _ in 0..3 {
        stack
            .points
            .clone()
            .earn(req(pb::EarnRequest {
                request_id: rid(),
                member_id: m.to_string(),
                kind: pb::EarnKind::Review as i32,
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    assert_eq!(
        stack.balance(m).await.available,
        150 + 40,
        "two reviews a day earn"
    );
    let preview = stack
        .points
        .clone()
        .preview_earn(req(pb::PreviewEarnRequest {
            member_id: m.to_string(),
            kind: pb::EarnKind::Order as i32,
            order: Some(pb::Order {
                order_id: "D-3".into(),
                total: eur(12_345),
                lines: vec![],
            }),
            occurred_at: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((preview.points, preview.rules_version), (123, 1));
    assert_eq!(
        stack.balance(m).await.available,
        190,
        "a preview earns nothing"
    );
}

#[tokio::test]
async fn daily_limits_count_in_the_programmes_local_days() {
    let stack = spawn().await;
    // Auckland is 13 hours ahead in November: local midnight is 11:00 UTC,
    // so one UTC day holds the end of one local day and the start of the
    // next.
    settings(&stack, |s| s.time_zone = "Pacific/Auckland".into()).await;
    review_rules(&stack, 3, 0).await;
    let m = stack.member().await;
    let utc_day = (stack.clock.now() - chrono::Duration::days(2)).date_naive();
    let at = |hour: u32, minute: u32| {
        let t = utc_day.and_hms_opt(hour, minute, 0).unwrap().and_utc();
        Some(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        })
    };
    let review = |occurred_at| {
        let mut points = stack.points.clone();
        async move {
            points
                .earn(req(pb::EarnRequest {
                    request_id: rid(),
                    member_id: m.to_string(),
                    kind: pb::EarnKind::Review as i32,
                    occurred_at,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // 09:00 and 10:00 UTC are 22:00 and 23:00 of one local day; 12:00 and
    // 13:00 UTC are 01:00 and 02:00 of the next: two a day each, all four
    // earn, though in UTC they are four on one day.
    for (hour, minute) in [(9, 0), (10, 0), (12, 0), (13, 0)] {
        let earned = review(at(hour, minute)).await;
        assert_eq!(
            earned.movement.map(|mv| mv.points),
            Some(20),
            "the review at {hour}:{minute:02} UTC"
        );
    }
    // A third on the first local day (10:30 UTC, 23:30 there) is over the
    // limit.
    let third = review(at(10, 30)).await;
    assert!(
        third.applied_rules.iter().any(|r| r.rule == "limit:day"),
        "{third:?}"
    );
    assert_eq!(stack.balance(m).await.available, 80);
}

#[tokio::test]
async fn liability_periods_are_the_programmes_calendar_days() {
    let stack = spawn().await;
    settings(&stack, |s| s.time_zone = "Pacific/Auckland".into()).await;
    let m = stack.member().await;
    // 10:30 UTC is 23:30 in Auckland (UTC+13); 11:30 UTC is 00:30 the
    // next local day, the same UTC day.
    let utc_day = stack.clock.now().date_naive();
    let at = |hour: u32, minute: u32| utc_day.and_hms_opt(hour, minute, 0).unwrap().and_utc();
    for (when, points) in [(at(10, 30), 10), (at(11, 30), 20)] {
        stack.clock.set(when);
        stack.give(m, points).await;
    }
    let report = stack
        .points
        .clone()
        .get_liability(req(pb::GetLiabilityRequest {
            period: pb::Period::Day as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let days: Vec<(i64, i64, i64)> = report
        .periods
        .iter()
        .map(|p| (p.start.unwrap().seconds, p.issued, p.outstanding))
        .collect();
    let local_midnight = at(11, 0);
    assert_eq!(
        days,
        [
            (
                (local_midnight - chrono::Duration::days(1)).timestamp(),
                10,
                10
            ),
            (local_midnight.timestamp(), 20, 30),
        ],
        "{report:?}"
    );
    assert_eq!(
        (report.issued, report.outstanding, report.ledger_sum),
        (30, 30, 0)
    );
}

#[tokio::test]
async fn an_imported_order_earns_by_the_rules_in_force_when_it_happened() {
    let stack = spawn().await;
    let now = stack.clock.now();
    for (days_ago, base_points) in [(30, 1), (5, 3)] {
        let at = now - chrono::Duration::days(days_ago);
        stack
            .points
            .clone()
            .publish_earn_rules(req(pb::PublishEarnRulesRequest {
                request_id: rid(),
                rules: Some(pb::EarnRules {
                    effective_from: Some(prost_types::Timestamp {
                        seconds: at.timestamp(),
                        nanos: 0,
                    }),
                    base_points,
                    base_amount_minor: 100,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
    }
    let m = stack.member().await;
    let old = now - chrono::Duration::days(10);
    let imported = stack
        .points
        .clone()
        .earn(req(pb::EarnRequest {
            request_id: rid(),
            member_id: m.to_string(),
            kind: pb::EarnKind::Order as i32,
            order: Some(pb::Order {
                order_id: "I-1".into(),
                total: eur(1_000),
                lines: vec![],
            }),
            occurred_at: Some(prost_types::Timestamp {
                seconds: old.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        imported.movement.unwrap().points,
        10,
        "version 1 was in force ten days ago"
    );
    let today = earn_order(&stack, m, "I-2", 1_000).await;
    assert_eq!(
        today.movement.unwrap().points,
        30,
        "version 2 is in force now"
    );
}
