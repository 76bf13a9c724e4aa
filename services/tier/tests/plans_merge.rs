//! A merge gives the survivor the union of both members' subscriptions and
//! what both used of their quotas.

mod benefits_support;
mod common;

use std::time::Duration;

use laurel_proto::{member::v1 as mpb, tier::v1 as pb};

use benefits_support::*;
use common::{req, rid};

#[tokio::test]
async fn the_survivor_keeps_every_subscription_and_the_uses_of_both() {
    let mut stack = common::spawn().await;
    put_benefit(&stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;
    put_benefit(&stack, benefit("lounge", pb::BenefitKind::ServiceLine)).await;
    seed_ladder(
        &stack,
        ladder_with_gold(vec![grant("ship", 3, pb::QuotaPeriod::Month)], "UTC"),
    )
    .await;
    put_plan(&stack, plan("plus", vec![], 0, 0)).await;
    put_plan(
        &stack,
        plan(
            "club",
            vec![grant("lounge", 0, pb::QuotaPeriod::Unspecified)],
            0,
            0,
        ),
    )
    .await;

    let survivor = stack.member().await;
    let merged = stack.member().await;
    known(&stack, survivor, Some("gold")).await;
    known(&stack, merged, Some("gold")).await;
    let kept = subscribe(&stack, survivor, "plus").await;
    let same_plan = subscribe(&stack, merged, "plus").await;
    let other_plan = subscribe(&stack, merged, "club").await;
    consume(&stack, &rid(), survivor, "ship", 1).await.unwrap();
    consume(&stack, &rid(), merged, "ship", 1).await.unwrap();
    assert!(
        !member_benefits(&stack, survivor)
            .await
            .iter()
            .any(|b| b.benefit.as_ref().unwrap().code == "lounge")
    );

    stack
        .member
        .clone()
        .merge_members(req(mpb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.to_string(),
            merged_member_id: merged.to_string(),
        }))
        .await
        .expect("merged");

    let subs = common::eventually(
        Duration::from_secs(10),
        "subscriptions move to the survivor",
        || async {
            let subs = subscriptions(&stack, survivor).await;
            (subs.len() == 3).then_some(subs)
        },
    )
    .await;
    let mut ids: Vec<_> = subs.iter().map(|s| s.subscription_id.clone()).collect();
    ids.sort();
    let mut expected = vec![
        kept.subscription_id,
        same_plan.subscription_id,
        other_plan.subscription_id,
    ];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(subs.iter().all(|s| s.member_id == survivor.to_string()));

    let benefits = member_benefits(&stack, survivor).await;
    let ship = benefits
        .iter()
        .find(|b| b.benefit.as_ref().unwrap().code == "ship")
        .unwrap();
    assert_eq!(
        (ship.used, ship.remaining),
        (2, 1),
        "both members' uses count"
    );
    assert!(
        benefits
            .iter()
            .any(|b| b.benefit.as_ref().unwrap().code == "lounge")
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE member_id = $1")
        .bind(merged)
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
    stack.stop().await;
}
