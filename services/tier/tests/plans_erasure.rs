//! Erasing a member ends their live subscriptions and removes payment
//! references, cancellation reasons and what benefits were used for.

mod benefits_support;
mod common;

use std::time::Duration;

use laurel_proto::{member::v1 as mpb, tier::v1 as pb};

use benefits_support::*;
use common::{req, rid};

#[tokio::test]
async fn erasure_ends_live_subscriptions_and_removes_what_is_personal() {
    let mut stack = common::spawn().await;
    put_benefit(&stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;
    put_plan(
        &stack,
        plan(
            "plus",
            vec![grant("ship", 0, pb::QuotaPeriod::Unspecified)],
            0,
            0,
        ),
    )
    .await;
    put_plan(&stack, plan("club", vec![], 0, 0)).await;
    let member = stack.member().await;
    known(&stack, member, None).await;
    let live = subscribe(&stack, member, "plus").await;
    let gone = subscribe(&stack, member, "club").await;
    stack
        .tier
        .clone()
        .cancel(req(pb::CancelRequest {
            request_id: rid(),
            subscription_id: gone.subscription_id.clone(),
            mode: pb::CancelMode::Now as i32,
            reason: "moving abroad".into(),
        }))
        .await
        .unwrap();
    consume(&stack, &rid(), member, "ship", 1).await.unwrap();

    stack
        .member
        .clone()
        .erase_member(req(mpb::EraseMemberRequest {
            request_id: rid(),
            member_id: member.to_string(),
        }))
        .await
        .expect("erased");

    let ended =
        wait_events::<pb::SubscriptionEnded, _>(&stack, "the live subscription ends", 2, |_| true)
            .await;
    let last = sub_of(&ended[1].facts);
    assert_eq!(last.subscription_id, live.subscription_id);
    assert!(last.payment_reference.is_empty());
    assert!(!ended[1].expired);
    let personal: (i64, i64, i64) =
        common::eventually(Duration::from_secs(5), "personal data removed", || async {
            let row: (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM subscriptions WHERE payment_reference IS NOT NULL),
                    (SELECT count(*) FROM subscriptions WHERE cancel_reason IS NOT NULL),
                    (SELECT count(*) FROM benefit_uses WHERE reference IS NOT NULL)",
            )
            .fetch_one(&stack.db)
            .await
            .unwrap();
            Some(row)
        })
        .await;
    assert_eq!(personal, (0, 0, 0));
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM subscriptions ORDER BY status")
            .fetch_all(&stack.db)
            .await
            .unwrap();
    assert_eq!(statuses, ["cancelled", "cancelled"]);
    stack.stop().await;
}
