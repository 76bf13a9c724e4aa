//! GetMemberCard at the member service shows the tier this service keeps:
//! asked over gRPC when the card lacks it, then served from the card, and
//! replaced on the card after an upgrade.

mod common;

use std::time::Duration;

use common::*;
use laurel_proto::member::v1 as mpb;
use laurel_runtime::clock::Clock;

async fn card(
    client: &mut mpb::member_service_client::MemberServiceClient<tonic::transport::Channel>,
    member: uuid::Uuid,
) -> mpb::MemberCard {
    client
        .get_member_card(req(mpb::GetMemberCardRequest {
            member_id: member.to_string(),
        }))
        .await
        .expect("a card")
        .into_inner()
        .card
        .unwrap()
}

#[tokio::test]
async fn the_member_card_shows_the_tier_and_follows_an_upgrade() {
    let mut stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let member = stack.member().await;
    stack.wait_for_tier(member, "member").await;
    let (mut running, mut client) = stack.member_with_links().await;

    let first = card(&mut client, member).await;
    assert_eq!(first.tier_code, "member");
    assert_eq!(first.tier_name, "MEMBER");
    assert!(
        [
            mpb::TierStatus::FromTierService as i32,
            mpb::TierStatus::FromCard as i32
        ]
        .contains(&first.tier_status),
        "{:?}",
        first.tier_status
    );
    let second = card(&mut client, member).await;
    assert_eq!(second.tier_status, mpb::TierStatus::FromCard as i32);
    assert_eq!(second.tier_code, "member");

    // An upgrade replaces the tier on the card.
    stack.purchase(member, 60_000, stack.clock.now()).await;
    stack.wait_for_tier(member, "gold").await;
    let upgraded = eventually(Duration::from_secs(10), "the card shows gold", || {
        let mut client = client.clone();
        async move {
            let c = card(&mut client, member).await;
            (c.tier_code == "gold").then_some(c)
        }
    })
    .await;
    assert_eq!(upgraded.tier_name, "GOLD");
    assert!(upgraded.tier_secured_until.is_some());
    let _ = running.stop().await;
    stack.stop().await;
}
