//! Bootstrap from the member and points services' exports: an analytics
//! service that heard none of the events (history older than the streams)
//! gets every member's purchases and points from
//! `laurel_analytics::bootstrap::run`, a rerun goes on from its cursors and
//! counts nothing twice, and facts the consumer already kept are not
//! counted again.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Stack, WAIT, eventually, line, req, rid, spawn_with};
use laurel_proto::{common::v1::Money, points::v1 as ppb};
use laurel_runtime::clock::Clock;
use uuid::Uuid;

fn source(stack: &Stack) -> laurel_analytics::bootstrap::Source {
    laurel_analytics::bootstrap::Source {
        member_addr: format!("http://{}", stack.member_addr),
        api_key: None,
        points_addr: stack.points_addr.clone(),
        points_api_key: None,
        program: "default".into(),
    }
}

#[tokio::test]
async fn a_deaf_analytics_service_reads_the_history_once() {
    let stack = spawn_with(common::Options {
        deaf: true,
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    let (a, b) = (stack.member().await, stack.member().await);
    let then = stack.clock.now() - Duration::days(400);
    let oa = stack
        .purchase_with(a, 3_000, then, vec![line("A", "music", 1, 3_000)])
        .await;
    stack.purchase(a, 2_000, then + Duration::days(30)).await;
    stack.refund(a, &oa, 1_000, then + Duration::days(31)).await;
    stack.purchase(b, 5_000, then + Duration::days(2)).await;
    // Nothing arrived by events.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        stack.metrics(a).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    let report = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .expect("bootstrap");
    assert_eq!((report.members, report.activities), (2, 4));
    let ma = stack.metrics(a).await.expect("a after bootstrap");
    assert_eq!(
        (ma.orders, ma.purchase_days, ma.net_spend_minor, ma.refunds),
        (2, 2, 4_000, 1)
    );
    let mb = stack.metrics(b).await.unwrap();
    assert_eq!((mb.orders, mb.net_spend_minor), (1, 5_000));
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM purchase_lines")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(lines, 1);

    // A rerun goes on from the cursor: the new purchase only.
    stack.purchase(b, 1_000, then + Duration::days(60)).await;
    let again = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .unwrap();
    assert_eq!(again.activities, 1);
    let mb = stack.metrics(b).await.unwrap();
    assert_eq!((mb.orders, mb.net_spend_minor), (2, 6_000));
    let ma = stack.metrics(a).await.unwrap();
    assert_eq!(ma.net_spend_minor, 4_000, "nothing counted twice");

    // From scratch (cursor lost): every activity read again, none counted
    // twice.
    sqlx::query("DELETE FROM bootstrap_cursors")
        .execute(&stack.db)
        .await
        .unwrap();
    let full = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .unwrap();
    assert_eq!(full.activities, 5);
    let ma = stack.metrics(a).await.unwrap();
    assert_eq!((ma.orders, ma.net_spend_minor, ma.refunds), (2, 4_000, 1));
}

/// Goodwill points for `member`, as if given at `at`.
async fn earn(stack: &Stack, member: Uuid, points: i64, at: DateTime<Utc>) {
    stack
        .points
        .clone()
        .unwrap()
        .earn(req(ppb::EarnRequest {
            request_id: rid(),
            member_id: member.to_string(),
            kind: ppb::EarnKind::Goodwill as i32,
            points,
            reason: "goodwill".into(),
            occurred_at: Some(common::timestamp(at)),
            ..Default::default()
        }))
        .await
        .expect("earn");
}

/// `points` spent by `member` as a discount on an order.
async fn redeem(stack: &Stack, member: Uuid, points: i64) {
    stack
        .points
        .clone()
        .unwrap()
        .redeem(req(ppb::RedeemRequest {
            request_id: rid(),
            member_id: member.to_string(),
            target: Some(ppb::redeem_request::Target::Order(ppb::OrderDiscount {
                order_id: format!("o-{}", rid()),
                order_total: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 100_000,
                }),
            })),
            points,
            reason: "discount".into(),
        }))
        .await
        .expect("redeem");
}

/// The member's (earned, redeemed, expired) points in analytics.
async fn points_totals(stack: &Stack, member: Uuid) -> (i64, i64, i64) {
    let m = stack.metrics(member).await.expect("metrics");
    (m.points_earned, m.points_redeemed, m.points_expired)
}

async fn points_available(stack: &Stack, member: Uuid) -> i64 {
    sqlx::query_scalar("SELECT points_available FROM members WHERE member_id = $1")
        .bind(member)
        .fetch_one(&stack.db)
        .await
        .unwrap()
}

/// Earns 40 points for `member` 400 days ago (past their 365-day validity)
/// and waits for the expiry job to expire them.
async fn earn_and_expire(stack: &Stack, member: Uuid) {
    earn(stack, member, 40, stack.clock.now() - Duration::days(400)).await;
    eventually(WAIT, "the old points expired", || async {
        let lines = stack
            .points
            .clone()
            .unwrap()
            .list_entries(req(ppb::ListEntriesRequest {
                member_id: member.to_string(),
                types: vec![ppb::MovementType::Expire as i32],
                ..Default::default()
            }))
            .await
            .ok()?
            .into_inner()
            .lines;
        (!lines.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn points_moved_while_deaf_are_counted_once_after_bootstrap() {
    let stack = spawn_with(common::Options {
        points: true,
        deaf: true,
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    let (a, b) = (stack.member().await, stack.member().await);
    let now = stack.clock.now();
    // a: earned 40 + 500, redeemed 120, expired 40; b: earned 300,
    // redeemed 50. Six movements.
    earn_and_expire(&stack, a).await;
    earn(&stack, a, 500, now - Duration::days(10)).await;
    earn(&stack, b, 300, now - Duration::days(5)).await;
    redeem(&stack, a, 120).await;
    redeem(&stack, b, 50).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        stack.metrics(a).await.unwrap_err().code(),
        tonic::Code::NotFound,
        "nothing arrived by events"
    );

    let report = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .expect("bootstrap");
    assert_eq!((report.members, report.movements), (2, 6));
    assert_eq!(points_totals(&stack, a).await, (540, 120, 40));
    assert_eq!(points_totals(&stack, b).await, (300, 50, 0));
    // The balance after each member's newest movement (nothing pending or
    // held here, so the account's total is what is available).
    assert_eq!(points_available(&stack, a).await, 380);
    assert_eq!(points_available(&stack, b).await, 250);
    let kept: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, sum(points)::bigint FROM points_movements GROUP BY kind ORDER BY kind",
    )
    .fetch_all(&stack.db)
    .await
    .unwrap();
    assert_eq!(
        kept,
        [
            ("earn".to_owned(), 840),
            ("expire".to_owned(), -40),
            ("redeem".to_owned(), -170)
        ]
    );

    // A rerun goes on from the movements' cursor: the new earn only.
    earn(&stack, b, 25, stack.clock.now()).await;
    let again = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .unwrap();
    assert_eq!(again.movements, 1);
    assert_eq!(points_totals(&stack, b).await, (325, 50, 0));
    assert_eq!(points_available(&stack, b).await, 275);
    assert_eq!(points_totals(&stack, a).await, (540, 120, 40));

    // From scratch (cursors lost): every movement read again, none counted
    // twice.
    sqlx::query("DELETE FROM bootstrap_cursors")
        .execute(&stack.db)
        .await
        .unwrap();
    let full = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .unwrap();
    assert_eq!(full.movements, 7);
    assert_eq!(points_totals(&stack, a).await, (540, 120, 40));
    assert_eq!(points_totals(&stack, b).await, (325, 50, 0));
    assert_eq!(
        points_available(&stack, b).await,
        275,
        "the newest movement's balance"
    );
}

#[tokio::test]
async fn movements_heard_live_are_not_counted_again_by_bootstrap() {
    let stack = spawn_with(common::Options {
        points: true,
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    let a = stack.member().await;
    earn(&stack, a, 600, stack.clock.now()).await;
    redeem(&stack, a, 150).await;
    stack
        .metrics_until(a, "the movements arrived live", |m| {
            (m.points_earned, m.points_redeemed) == (600, 150)
        })
        .await;
    assert_eq!(points_available(&stack, a).await, 450);

    let report = laurel_analytics::bootstrap::run(&stack.db, &source(&stack))
        .await
        .expect("bootstrap");
    assert_eq!(report.movements, 2);
    assert_eq!(points_totals(&stack, a).await, (600, 150, 0));
    // Movements kept live change nothing again, the balance included.
    assert_eq!(points_available(&stack, a).await, 450);
}

#[tokio::test]
async fn without_a_points_service_the_bootstrap_skips_movements() {
    let stack = spawn_with(common::Options {
        points: true,
        deaf: true,
        ..Default::default()
    })
    .await;
    let a = stack.member().await;
    earn(&stack, a, 10, stack.clock.now()).await;
    let mut members_only = source(&stack);
    members_only.points_addr = None;
    let report = laurel_analytics::bootstrap::run(&stack.db, &members_only)
        .await
        .expect("bootstrap");
    assert_eq!((report.members, report.movements), (1, 0));
    let cursors: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bootstrap_cursors WHERE source = 'movements'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!(cursors, 0);
}
