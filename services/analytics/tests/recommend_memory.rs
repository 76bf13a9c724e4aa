//! Recommendations from the members a replica keeps in memory: once loaded
//! they answer as Postgres did, a change made behind the service's back is
//! not seen (the answer really comes from memory), and a change the facts
//! consumer announces is seen by the next call: a merged member is gone
//! and the survivor answers with the merged member's items.

mod common;

use chrono::Duration;
use common::{Stack, WAIT, eventually, line, req, rid, spawn};
use laurel_proto::{analytics::v1 as pb, member::v1 as mpb};
use laurel_runtime::clock::Clock;
use uuid::Uuid;

/// The answer and where the service says it came from.
async fn ask(
    stack: &Stack,
    member: Uuid,
    limit: i32,
) -> Result<(Vec<(String, f64)>, String), tonic::Status> {
    let response = stack
        .analytics
        .clone()
        .get_recommendations(req(pb::GetRecommendationsRequest {
            member_id: member.to_string(),
            limit,
            level: pb::RecommendationLevel::Sku as i32,
        }))
        .await?;
    let from = response
        .metadata()
        .get("laurel-answer-from")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let items = response
        .into_inner()
        .items
        .into_iter()
        .map(|i| (i.item, i.score))
        .collect();
    Ok((items, from))
}

fn names(items: &[(String, f64)]) -> Vec<&str> {
    items.iter().map(|i| i.0.as_str()).collect()
}

#[tokio::test]
async fn members_in_memory_answer_as_postgres_did_and_announced_changes_are_seen_at_once() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let long_ago = stack.clock.now() - Duration::days(60);
    let items = |skus: &[&str]| skus.iter().map(|s| line(s, "music", 1, 1_000)).collect();
    let (m1, m2, m3, m4, t) = (
        stack.member().await,
        stack.member().await,
        stack.member().await,
        stack.member().await,
        stack.member().await,
    );
    for (member, skus) in [
        (m1, &["A", "B"][..]),
        (m2, &["A", "B", "C"]),
        (m3, &["B", "C"]),
        (m4, &["A", "C"]),
        (t, &["A"]),
    ] {
        stack
            .purchase_with(member, 2_000, long_ago, items(skus))
            .await;
    }
    // Buyers: A {m1, m2, m4, t}, B {m1, m2, m3}, C {m2, m3, m4}, so
    // cos(A, B) = cos(A, C) = 2/sqrt(12) and cos(B, C) = 2/3.
    let ab = 2.0 / 12f64.sqrt();
    let bc = 2.0 / 3.0;
    // t (who has A) gets B and C at cos(A, .), from the build with all ten
    // lines (an earlier build from part of them can come first).
    let want_t = |got: &[(String, f64)]| {
        let mut n = names(got);
        n.sort_unstable();
        n == ["B", "C"] && got.iter().all(|g| (g.1 - ab).abs() < 1e-9)
    };
    eventually(WAIT, "the build with every line", || async {
        let (got, _) = ask(&stack, t, 2).await.ok()?;
        want_t(&got).then_some(())
    })
    .await;

    // The calls load the members into memory; from then on t and m1 are
    // answered from there, with the same figures.
    let from_memory = eventually(WAIT, "t answered from memory", || async {
        let (got, from) = ask(&stack, t, 2).await.ok()?;
        (from == "memory").then_some(got)
    })
    .await;
    assert!(want_t(&from_memory), "{from_memory:?}");
    // m1 {A, B}, both long ago, so neither left out: C from A and B, then
    // A (from B) and B (from A).
    let (got, from) = ask(&stack, m1, 3).await.unwrap();
    assert_eq!(from, "memory");
    assert_eq!(names(&got)[0], "C", "{got:?}");
    assert!((got[0].1 - (ab + bc)).abs() < 1e-9, "{got:?}");
    let mut rest = names(&got)[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, ["A", "B"]);

    // Behind the service's back (no event, nothing announced), m1 bought
    // B today: Postgres would leave B out, memory still offers it.
    sqlx::query("UPDATE purchase_lines SET day = current_date WHERE member_id = $1 AND sku = 'B'")
        .bind(m1)
        .execute(&stack.db)
        .await
        .unwrap();
    let (got, from) = ask(&stack, m1, 3).await.unwrap();
    assert_eq!(from, "memory");
    assert!(names(&got).contains(&"B"), "{got:?}");

    // m3 {B, C} merges into t {A}: the consumer announces both, so the
    // next calls go to Postgres: m3 is gone and t has A, B and C (all
    // bought long ago), each now a neighbour of the others.
    stack
        .member
        .clone()
        .merge_members(req(mpb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: t.to_string(),
            merged_member_id: m3.to_string(),
        }))
        .await
        .expect("merge");
    eventually(WAIT, "the merge reached analytics", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM members WHERE member_id = $1")
            .bind(m3)
            .fetch_one(&stack.db)
            .await
            .ok()?;
        (status == "merged").then_some(())
    })
    .await;
    let gone = ask(&stack, m3, 3).await.expect_err("m3 was merged");
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    let (got, from) = ask(&stack, t, 3).await.unwrap();
    assert_eq!(from, "database", "t was announced");
    let mut n = names(&got);
    n.sort_unstable();
    assert_eq!(
        n,
        ["A", "B", "C"],
        "t's answer moved with m3's items: {got:?}"
    );
    // The same line count, so the same build: the others still come from
    // memory.
    let (_, from) = ask(&stack, m2, 3).await.unwrap();
    assert_eq!(from, "memory");
}
