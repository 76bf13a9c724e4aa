//! Recommendations over gRPC: co-purchase neighbours with the cosines
//! computed by hand, what the member bought recently left out, the
//! most-popular fallback for a member without history, the hit rate
//! reported, and the next best offer among the rewards the member's
//! points afford (from the points service).

mod common;

use chrono::Duration;
use common::{Stack, WAIT, eventually, line, req, rid, spawn_with};
use laurel_proto::{analytics::v1 as pb, points::v1 as ppb};
use laurel_runtime::clock::Clock;
use uuid::Uuid;

async fn recommend(stack: &Stack, member: Uuid, limit: i32) -> pb::GetRecommendationsResponse {
    eventually(WAIT, "recommendations are built", || async {
        stack
            .analytics
            .clone()
            .get_recommendations(req(pb::GetRecommendationsRequest {
                member_id: member.to_string(),
                limit,
                level: pb::RecommendationLevel::Sku as i32,
            }))
            .await
            .ok()
            .map(|r| r.into_inner())
    })
    .await
}

#[tokio::test]
async fn neighbours_recent_purchases_fallback_quality_and_offer() {
    let stack = spawn_with(common::Options {
        points: true,
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    let now = stack.clock.now();
    let long_ago = now - Duration::days(60);
    let items = |skus: &[&str]| skus.iter().map(|s| line(s, "music", 1, 1_000)).collect();
    // Buyers: A {m1, m2, m4, t, u}, B {m1, m2, m3, u}, C {m2, m3, m4}.
    let (m1, m2, m3, m4) = (
        stack.member().await,
        stack.member().await,
        stack.member().await,
        stack.member().await,
    );
    let (t, u, newcomer) = (
        stack.member().await,
        stack.member().await,
        stack.member().await,
    );
    stack
        .purchase_with(m1, 2_000, long_ago, items(&["A", "B"]))
        .await;
    stack
        .purchase_with(m2, 3_000, long_ago, items(&["A", "B", "C"]))
        .await;
    stack
        .purchase_with(m3, 2_000, long_ago, items(&["B", "C"]))
        .await;
    stack
        .purchase_with(m4, 2_000, long_ago, items(&["A", "C"]))
        .await;
    stack.purchase_with(t, 1_000, long_ago, items(&["A"])).await;
    // u bought A long ago and B last week: B is not offered again.
    stack.purchase_with(u, 1_000, long_ago, items(&["A"])).await;
    stack
        .purchase_with(u, 1_000, now - Duration::days(7), items(&["B"]))
        .await;
    eventually(WAIT, "every line arrived", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM purchase_lines")
            .fetch_one(&stack.db)
            .await
            .ok()?;
        (n == 12).then_some(())
    })
    .await;

    // cos(A, B) = |{m1, m2, u}| / sqrt(5 * 4) and cos(A, C) = |{m2, m4}| /
    // sqrt(5 * 3): t (who has A) gets B first, then C.
    // (A build from part of the lines can come first: wait for the one
    // with every line.)
    let got = eventually(WAIT, "the build with every line", || async {
        let r = recommend(&stack, t, 2).await;
        let got: Vec<(&str, f64)> = r.items.iter().map(|i| (i.item.as_str(), i.score)).collect();
        let want = [("B", 3.0 / 20f64.sqrt()), ("C", 2.0 / 15f64.sqrt())];
        (got.len() == 2
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| g.0 == w.0 && (g.1 - w.1).abs() < 1e-9))
        .then_some(r)
    })
    .await;
    assert!(!got.popular_fallback);

    // u: C from both A and B (cos(A, C) + cos(B, C) = 2/sqrt(15) +
    // 2/sqrt(12)), then A again (bought 60 days ago: refills come back,
    // from B at 3/sqrt(20)); B, bought last week, never.
    let u_got = recommend(&stack, u, 3).await;
    let names: Vec<&str> = u_got.items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(names, ["C", "A"], "{u_got:?}");
    assert!((u_got.items[0].score - (2.0 / 15f64.sqrt() + 2.0 / 12f64.sqrt())).abs() < 1e-9);

    let fresh = recommend(&stack, newcomer, 3).await;
    assert!(fresh.popular_fallback);
    let names: Vec<&str> = fresh.items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"], "most distinct buyers first");

    let quality = stack
        .analytics
        .clone()
        .get_recommendation_quality(req(pb::GetRecommendationQualityRequest {
            level: pb::RecommendationLevel::Sku as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quality.members, 1, "only u has two purchase days");
    assert_eq!(quality.top_n, 10);

    // The next best offer: the most valuable reward 600 points afford.
    let points = stack.points.clone().unwrap();
    for (name, price) in [("mug", 100), ("bag", 500), ("bike", 50_000)] {
        points
            .clone()
            .create_reward(req(ppb::CreateRewardRequest {
                request_id: rid(),
                reward: Some(ppb::Reward {
                    name: name.into(),
                    points_price: price,
                    stock: 10,
                    valid_from: Some(common::timestamp(now - Duration::days(1))),
                    active: true,
                    ..Default::default()
                }),
            }))
            .await
            .expect("reward");
    }
    points
        .clone()
        .earn(req(ppb::EarnRequest {
            request_id: rid(),
            member_id: newcomer.to_string(),
            kind: ppb::EarnKind::Goodwill as i32,
            points: 600,
            reason: "welcome".into(),
            ..Default::default()
        }))
        .await
        .expect("earn");
    eventually(WAIT, "the balance reached analytics", || async {
        let b: i64 =
            sqlx::query_scalar("SELECT points_available FROM members WHERE member_id = $1")
                .bind(newcomer)
                .fetch_one(&stack.db)
                .await
                .ok()?;
        (b == 600).then_some(())
    })
    .await;
    let offer = recommend(&stack, newcomer, 4)
        .await
        .next_best_offer
        .unwrap();
    assert_eq!(offer.points_cost, 500);
}

#[tokio::test]
async fn recommendation_requests_are_validated() {
    let stack = common::spawn().await;
    let e = stack
        .analytics
        .clone()
        .get_recommendations(req(pb::GetRecommendationsRequest {
            member_id: String::new(),
            limit: 1000,
            level: 9,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut f = common::fields(&e);
    f.sort();
    assert_eq!(f, ["level", "limit", "member_id"]);
}
