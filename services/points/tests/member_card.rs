//! GetMemberCard against the real points service: the balance is asked of
//! points when the card lacks it (points then fills its own field), served
//! from the card next, replaced after a movement, and missing (with the
//! card still answering) when points is down.

mod common;

use std::time::Duration;

use common::{eventually, req, spawn};
use laurel_proto::member::v1 as mpb;

async fn card(
    client: &laurel_proto::member::v1::member_service_client::MemberServiceClient<
        tonic::transport::Channel,
    >,
    member: uuid::Uuid,
) -> mpb::MemberCard {
    let mut request = req(mpb::GetMemberCardRequest {
        member_id: member.to_string(),
    });
    request.set_timeout(Duration::from_secs(2));
    client
        .clone()
        .get_member_card(request)
        .await
        .expect("card")
        .into_inner()
        .card
        .unwrap()
}

#[tokio::test]
async fn the_card_shows_the_points_balance_and_survives_points_going_away() {
    let mut stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 1_240).await;
    let (_running, member) = stack.member_with_points().await;
    let first = card(&member, m).await;
    assert_eq!(first.points.as_ref().unwrap().available, 1_240);
    assert_eq!(
        first.points_status,
        mpb::PointsStatus::FromPointsService as i32
    );
    eventually(
        Duration::from_secs(10),
        "points filled its card field",
        || async {
            let c = card(&member, m).await;
            (c.points_status == mpb::PointsStatus::FromCard as i32).then_some(())
        },
    )
    .await;
    stack.give(m, 10).await;
    eventually(
        Duration::from_secs(10),
        "the card follows the movement",
        || async {
            let c = card(&member, m).await;
            (c.points.as_ref().map(|p| p.available) == Some(1_250)).then_some(())
        },
    )
    .await;
    let other = stack.member().await;
    stack.stop().await;
    let down = card(&member, other).await;
    assert!(down.points.is_none());
    assert_eq!(down.points_status, mpb::PointsStatus::Unavailable as i32);
}
