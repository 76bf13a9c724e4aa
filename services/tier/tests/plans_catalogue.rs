//! Paid plans: validation against the catalogue and the ladder, listing.

mod benefits_support;
mod common;

use laurel_proto::tier::v1 as pb;
use tonic::Code;

use benefits_support::*;
use common::{fields, req, rid};

async fn put_err(stack: &common::Stack, p: pb::Plan) -> tonic::Status {
    stack
        .tier
        .clone()
        .put_plan(req(pb::PutPlanRequest {
            request_id: rid(),
            plan: Some(p),
        }))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn invalid_plans_are_refused_with_field_violations() {
    let mut stack = common::spawn().await;
    put_benefit(&stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;

    let mut bad = plan(
        "plus",
        vec![grant("ship", 2, pb::QuotaPeriod::Unspecified)],
        91,
        30,
    );
    bad.price.as_mut().unwrap().currency_code = "XYZ".into();
    bad.price.as_mut().unwrap().amount_minor = -5;
    bad.billing_period = 0;
    let status = put_err(&stack, bad).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        [
            "plan.price.currency_code",
            "plan.price.amount_minor",
            "plan.billing_period",
            "plan.benefits[0].period",
            "plan.grace_days",
            "plan.reminder_days"
        ]
    );

    let unknown = plan(
        "plus",
        vec![grant("lounge", 1, pb::QuotaPeriod::Month)],
        0,
        0,
    );
    assert_eq!(
        fields(&put_err(&stack, unknown).await),
        ["plan.benefits[0].benefit_code"]
    );

    seed_ladder(&stack, common::simple_ladder()).await;
    let mut floor = plan("plus", vec![grant("ship", 1, pb::QuotaPeriod::Month)], 0, 0);
    floor.tier_floor = "platinum".into();
    let status = put_err(&stack, floor.clone()).await;
    assert_eq!(fields(&status), ["plan.tier_floor"]);

    floor.tier_floor = "silver".into();
    put_plan(&stack, floor).await;
    let listed = stack
        .tier
        .clone()
        .list_plans(req(pb::ListPlansRequest {}))
        .await
        .unwrap()
        .into_inner()
        .plans;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tier_floor, "silver");
    stack.stop().await;
}

#[tokio::test]
async fn subscribing_needs_an_active_plan_a_known_member_and_a_payment_reference() {
    let mut stack = common::spawn().await;
    let mut closed = plan("closed", vec![], 0, 0);
    closed.active = false;
    put_plan(&stack, closed).await;
    put_plan(&stack, plan("open", vec![], 0, 0)).await;
    let member = seed_member(&stack, None).await;
    let attempt = |member: uuid::Uuid, plan: &str, payment: &str| {
        let mut tier = stack.tier.clone();
        let request = pb::SubscribeRequest {
            request_id: rid(),
            member_id: member.to_string(),
            plan_code: plan.into(),
            payment_reference: payment.into(),
        };
        async move { tier.subscribe(req(request)).await }
    };
    let inactive = attempt(member, "closed", "pay-1").await.unwrap_err();
    assert_eq!(inactive.code(), Code::FailedPrecondition);
    assert_eq!(common::reason(&inactive), "PLAN_INACTIVE");
    let missing = attempt(member, "gone", "pay-1").await.unwrap_err();
    assert_eq!(common::reason(&missing), "PLAN_NOT_FOUND");
    let stranger = attempt(uuid::Uuid::now_v7(), "open", "pay-1")
        .await
        .unwrap_err();
    assert_eq!(common::reason(&stranger), "MEMBER_NOT_FOUND");
    let unpaid = attempt(member, "open", "").await.unwrap_err();
    assert_eq!(fields(&unpaid), ["payment_reference"]);

    attempt(member, "open", "pay-1").await.expect("subscribed");
    let twice = attempt(member, "open", "pay-2").await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert_eq!(common::reason(&twice), "ALREADY_SUBSCRIBED");
    assert_eq!(subscriptions(&stack, member).await.len(), 1);
    stack.stop().await;
}
