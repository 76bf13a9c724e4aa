//! The benefits catalogue: validation, listing, usage figures, and the most
//! generous grant among tier and plans.

mod benefits_support;
mod common;

use laurel_proto::tier::v1 as pb;
use tonic::Code;

use benefits_support::*;
use common::{fields, req, rid};
use laurel_runtime::clock::Clock;

async fn put_err(stack: &common::Stack, b: pb::Benefit) -> tonic::Status {
    stack
        .tier
        .clone()
        .put_benefit(req(pb::PutBenefitRequest {
            request_id: rid(),
            benefit: Some(b),
        }))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn invalid_benefits_are_refused_with_field_violations() {
    let mut stack = common::spawn().await;
    let mut discount = benefit("ten-off", pb::BenefitKind::PercentDiscount);
    discount.percent_bp = 0;
    let status = put_err(&stack, discount).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["benefit.percent_bp"]);

    let mut multiplier = benefit("double", pb::BenefitKind::PointsMultiplier);
    multiplier.multiplier_bp = 5_000;
    multiplier.code = "Double!".into();
    assert_eq!(
        fields(&put_err(&stack, multiplier).await),
        ["benefit.code", "benefit.multiplier_bp"]
    );

    let unspecified = benefit("thing", pb::BenefitKind::Unspecified);
    assert_eq!(
        fields(&put_err(&stack, unspecified).await),
        ["benefit.kind"]
    );

    let custom = benefit("concierge", pb::BenefitKind::Custom);
    assert_eq!(
        fields(&put_err(&stack, custom).await),
        ["benefit.parameters"]
    );

    let listed = stack
        .tier
        .clone()
        .list_benefits(req(pb::ListBenefitsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.benefits.is_empty(), "nothing was stored");
    stack.stop().await;
}

#[tokio::test]
async fn benefits_are_replaced_by_code_and_listed_in_pages() {
    let mut stack = common::spawn().await;
    for code in ["ship", "lounge", "double"] {
        let kind = if code == "double" {
            pb::BenefitKind::PointsMultiplier
        } else {
            pb::BenefitKind::FreeShipping
        };
        put_benefit(&stack, benefit(code, kind)).await;
    }
    let mut renamed = benefit("ship", pb::BenefitKind::FreeShipping);
    renamed.name = "Free shipping".into();
    put_benefit(&stack, renamed).await;

    let first = stack
        .tier
        .clone()
        .list_benefits(req(pb::ListBenefitsRequest {
            page_size: 2,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = first.benefits.iter().map(|b| b.code.as_str()).collect();
    assert_eq!(codes, ["double", "lounge"]);
    assert!(!first.next_page_token.is_empty());
    let second = stack
        .tier
        .clone()
        .list_benefits(req(pb::ListBenefitsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.benefits.len(), 1);
    assert_eq!(second.benefits[0].name, "Free shipping");
    assert!(second.next_page_token.is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn the_most_generous_grant_of_tier_and_plan_wins() {
    let mut stack = common::spawn().await;
    put_benefit(&stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;
    put_benefit(&stack, benefit("ten-off", pb::BenefitKind::PercentDiscount)).await;
    seed_ladder(
        &stack,
        ladder_with_gold(
            vec![
                grant("ship", 2, pb::QuotaPeriod::Month),
                grant("ten-off", 1, pb::QuotaPeriod::Year),
            ],
            "UTC",
        ),
    )
    .await;
    put_plan(
        &stack,
        plan(
            "plus",
            vec![
                grant("ship", 0, pb::QuotaPeriod::Unspecified),
                grant("ten-off", 1, pb::QuotaPeriod::Quarter),
            ],
            0,
            0,
        ),
    )
    .await;
    let member = seed_member(&stack, Some("gold")).await;
    let before = member_benefits(&stack, member).await;
    assert!(
        before
            .iter()
            .all(|b| b.source == pb::BenefitSource::Tier as i32)
    );

    subscribe(&stack, member, "plus").await;
    let after = member_benefits(&stack, member).await;
    let ship = after
        .iter()
        .find(|b| b.benefit.as_ref().unwrap().code == "ship")
        .unwrap();
    assert!(ship.unlimited);
    assert_eq!(ship.source, pb::BenefitSource::PaidPlan as i32);
    assert_eq!(ship.source_code, "plus");
    let off = after
        .iter()
        .find(|b| b.benefit.as_ref().unwrap().code == "ten-off")
        .unwrap();
    assert_eq!(
        (off.quota, off.period),
        (1, pb::QuotaPeriod::Quarter as i32)
    );
    // Unlimited use needs no quota.
    for _ in 0..5 {
        consume(&stack, &rid(), member, "ship", 10)
            .await
            .expect("unlimited");
    }
    stack.stop().await;
}

#[tokio::test]
async fn usage_figures_count_uses_members_entitlement_and_uptake() {
    let mut stack = common::spawn().await;
    put_benefit(&stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;
    put_benefit(&stack, benefit("lounge", pb::BenefitKind::ServiceLine)).await;
    put_benefit(&stack, benefit("unused", pb::BenefitKind::EarlyAccess)).await;
    seed_ladder(
        &stack,
        ladder_with_gold(vec![grant("ship", 5, pb::QuotaPeriod::Month)], "UTC"),
    )
    .await;
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
    let a = seed_member(&stack, Some("gold")).await;
    let b = seed_member(&stack, Some("gold")).await;
    let _c = seed_member(&stack, Some("gold")).await;
    let d = seed_member(&stack, Some("silver")).await;
    subscribe(&stack, d, "club").await;
    subscribe(&stack, a, "club").await;

    let start = stack.clock.now();
    consume(&stack, &rid(), a, "ship", 2).await.unwrap();
    consume(&stack, &rid(), b, "ship", 1).await.unwrap();
    consume(&stack, &rid(), d, "lounge", 1).await.unwrap();

    let usage = stack
        .tier
        .clone()
        .get_benefit_usage(req(pb::GetBenefitUsageRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .usage;
    let codes: Vec<_> = usage.iter().map(|u| u.benefit_code.as_str()).collect();
    assert_eq!(codes, ["lounge", "ship", "unused"]);
    let figures: Vec<_> = usage
        .iter()
        .map(|u| (u.uses, u.members, u.entitled_members, u.uptake_bp))
        .collect();
    assert_eq!(figures, [(1, 1, 2, 5_000), (3, 2, 3, 6_666), (0, 0, 0, 0)]);

    // A range before the uses counts none.
    let earlier = stack
        .tier
        .clone()
        .get_benefit_usage(req(pb::GetBenefitUsageRequest {
            from: None,
            to: Some(common::timestamp(start - chrono::Duration::seconds(1))),
        }))
        .await
        .unwrap()
        .into_inner()
        .usage;
    assert!(earlier.iter().all(|u| u.uses == 0 && u.members == 0));
    assert_eq!(earlier[1].entitled_members, 3);

    let bad = stack
        .tier
        .clone()
        .get_benefit_usage(req(pb::GetBenefitUsageRequest {
            from: Some(common::timestamp(start)),
            to: Some(common::timestamp(start - chrono::Duration::days(1))),
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["from"]);
    stack.stop().await;
}
