//! A paid plan's tier floor lifts the member's tier while the subscription
//! gives benefits, and the member falls back to the earned tier when it
//! ends; both changes are in the history.

mod benefits_support;
mod common;

use benefits_support::*;
use common::*;
use laurel_proto::tier::v1 as pb;

#[tokio::test]
async fn a_plan_floor_lifts_the_tier_until_the_subscription_ends() {
    let mut stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let member = stack.member().await;
    stack.wait_for_tier(member, "member").await;
    let mut floored = plan("plus", vec![], 0, 0);
    floored.tier_floor = "silver".into();
    put_plan(&stack, floored).await;

    let sub = subscribe(&stack, member, "plus").await;
    let lifted = stack.tier_of(member).await;
    assert_eq!(lifted.tier_code, "silver");
    assert_eq!(lifted.source, pb::TierSource::PaidPlan as i32);
    assert_eq!(lifted.earned_tier_code, "member");

    stack
        .tier
        .clone()
        .cancel(req(pb::CancelRequest {
            request_id: rid(),
            subscription_id: sub.subscription_id,
            mode: pb::CancelMode::Now as i32,
            reason: "moving abroad".into(),
        }))
        .await
        .expect("cancelled");
    let back = stack.tier_of(member).await;
    assert_eq!(back.tier_code, "member");
    assert_eq!(back.source, pb::TierSource::Earned as i32);

    let history = stack
        .tier
        .clone()
        .list_tier_history(req(pb::ListTierHistoryRequest {
            member_id: member.to_string(),
            ..Default::default()
        }))
        .await
        .expect("history")
        .into_inner()
        .entries;
    let reasons: Vec<(String, i32)> = history
        .iter()
        .map(|e| (e.tier_code.clone(), e.reason))
        .collect();
    assert_eq!(
        reasons[..2],
        [
            ("member".to_owned(), pb::TierChangeReason::PaidPlan as i32),
            ("silver".to_owned(), pb::TierChangeReason::PaidPlan as i32),
        ]
    );
    stack.stop().await;
}
