//! A re-evaluation stopped half-way by a restart resumes from its cursor on
//! the same schema and counts every member exactly once. Its own test
//! binary: it slows re-evaluations down for the whole process.

mod common;

use std::time::Duration;

use common::{eventually, simple_ladder, spawn, spawn_with};
use laurel_proto::tier::v1 as pb;

const MEMBERS: i64 = 30;

async fn progress(db: &sqlx::PgPool) -> (String, i64, i64, i64) {
    sqlx::query_as(
        "SELECT state, members_total, members_done, members_changed FROM reevaluations
         WHERE ladder_version = 2",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_re_evaluation_resumes_after_a_restart_and_counts_each_member_once() {
    laurel_tier::tiers::jobs::set_reevaluation_pace(2, Duration::from_millis(80));
    let mut first = spawn().await;
    first.publish(simple_ladder()).await;
    let now = laurel_runtime::clock::Clock::now(&first.clock);
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let m = first.member().await;
        first.purchase(m, 15_000, now).await;
        members.push(m);
    }
    for m in &members {
        first.wait_for_tier(*m, "silver").await;
    }
    let mut easier = simple_ladder();
    easier.tiers[2].qualify_any[0].spend_minor = 15_000;
    first.publish(easier).await;
    eventually(
        Duration::from_secs(10),
        "the re-evaluation starts",
        || async { (progress(&first.db).await.2 > 0).then_some(()) },
    )
    .await;
    first.stop().await;
    let (state, total, done, _) = progress(&first.db).await;
    assert_eq!((state.as_str(), total), ("running", MEMBERS));
    assert!(done < MEMBERS, "stopped half-way ({done} done)");

    let second = spawn_with(common::Options {
        tier_schema: Some(first.tier_schema.clone()),
        ..Default::default()
    })
    .await;
    let (state, _, done, changed) = eventually(Duration::from_secs(20), "it finishes", || async {
        let p = progress(&second.db).await;
        (p.0 == "done").then_some(p)
    })
    .await;
    assert_eq!((state.as_str(), done, changed), ("done", MEMBERS, MEMBERS));
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tier_history WHERE reason = 'ladder_changed' AND tier_code = 'gold'",
    )
    .fetch_one(&second.db)
    .await
    .unwrap();
    assert_eq!(history, MEMBERS);
    let distinct: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT member_id) FROM tier_history WHERE reason = 'ladder_changed'",
    )
    .fetch_one(&second.db)
    .await
    .unwrap();
    assert_eq!(distinct, MEMBERS);
    let gold: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM members WHERE tier_code = 'gold' AND ladder_version = 2",
    )
    .fetch_one(&second.db)
    .await
    .unwrap();
    assert_eq!(gold, MEMBERS);
    let _ = pb::ReevaluationState::Done;
}
