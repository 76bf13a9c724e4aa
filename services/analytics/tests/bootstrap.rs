//! Bootstrap from the member service's exports: an analytics service that
//! heard none of the events (history older than the streams) gets every
//! member's purchases from `laurel_analytics::bootstrap::run`, a rerun
//! goes on from its cursor and counts nothing twice, and activities the
//! consumer already kept are not counted again.

mod common;

use chrono::Duration;
use common::{Stack, line, spawn_with};
use laurel_runtime::clock::Clock;

fn source(stack: &Stack) -> laurel_analytics::bootstrap::Source {
    laurel_analytics::bootstrap::Source {
        member_addr: format!("http://{}", stack.member_addr),
        api_key: None,
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
