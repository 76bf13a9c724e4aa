//! The tier service starts beside member (and points) and answers.

mod common;

#[tokio::test]
async fn the_tier_service_starts_and_refuses_an_unknown_member_tier() {
    let mut stack = common::spawn_with(common::Options {
        points: true,
        ..Default::default()
    })
    .await;
    let status = stack
        .tier
        .clone()
        .get_member_tier(common::req(laurel_proto::tier::v1::GetMemberTierRequest {
            member_id: "not-a-uuid".into(),
        }))
        .await
        .expect_err("refused");
    assert_ne!(status.code(), tonic::Code::Ok);
    stack.stop().await;
}
