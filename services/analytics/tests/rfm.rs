//! RFM over gRPC: scores and segments of a small population computed by
//! hand, the grid and segment counts, members outside the active window
//! left out, and recomputation on request replayed by request_id.

mod common;

use chrono::Duration;
use common::{WAIT, eventually, req, rid, spawn};
use laurel_proto::analytics::v1::{self as pb, RfmSegment};
use laurel_runtime::clock::Clock;

#[tokio::test]
async fn a_hand_scored_population_gets_its_scores_segments_and_grid() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let now = stack.clock.now();
    // (purchase days, days ago of each, spend per purchase); the last
    // purchase is the last in the list.
    let plan: [(&str, Vec<i64>, i64); 6] = [
        ("A", vec![100], 1_000),
        ("B", vec![80, 50], 20_000),
        ("C", vec![30, 20, 10], 3_000),
        ("D", vec![40, 30, 20, 5], 4_000),
        ("E", vec![50, 40, 30, 20, 1], 5_000),
        ("old", vec![400], 99_000),
    ];
    let mut ids = Vec::new();
    let mut purchases = 0;
    for (name, days, each) in &plan {
        let m = stack.member().await;
        for d in days {
            stack.purchase(m, *each, now - Duration::days(*d)).await;
            purchases += 1;
        }
        ids.push((*name, m));
    }
    eventually(WAIT, "every purchase arrived", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM purchases")
            .fetch_one(&stack.db)
            .await
            .ok()?;
        (n == purchases).then_some(())
    })
    .await;
    let request_id = rid();
    let recompute = || {
        let mut client = stack.analytics.clone();
        let request_id = request_id.clone();
        async move {
            client
                .recompute_rfm(req(pb::RecomputeRfmRequest { request_id }))
                .await
        }
    };
    let run = recompute()
        .await
        .expect("recompute")
        .into_inner()
        .run
        .unwrap();
    assert_eq!(
        run.members, 5,
        "the member who last bought 400 days ago is not active"
    );
    assert_eq!((run.bins, run.trigger.as_str()), (5, "request"));
    let again = recompute().await.unwrap().into_inner().run.unwrap();
    assert_eq!(again.run_id, run.run_id, "a retry replays the run");

    // Monetary totals: A 1000, C 9000, D 16000, E 25000, B 40000, so
    // M = 1, 2, 3, 4, 5; R and F follow the list order (1..5) except that
    // B's monetary is the highest. FM = (F + M + 1) / 2.
    let expected = [
        ("A", (1, 1, 1), RfmSegment::Lost),          // cell (1,1)
        ("B", (2, 2, 5), RfmSegment::AtRisk),        // cell (2,4)
        ("C", (3, 3, 2), RfmSegment::NeedAttention), // cell (3,3)
        ("D", (4, 4, 3), RfmSegment::Loyal),         // cell (4,4)
        ("E", (5, 5, 4), RfmSegment::Champions),     // cell (5,5)
    ];
    for ((name, m), (ename, (r, f, mo), segment)) in ids.iter().zip(expected) {
        assert_eq!(*name, ename);
        let got = stack
            .analytics
            .clone()
            .get_member_rfm(req(pb::GetMemberRfmRequest {
                member_id: m.to_string(),
            }))
            .await
            .expect("scored")
            .into_inner()
            .rfm
            .unwrap();
        assert_eq!(
            (got.recency, got.frequency, got.monetary, got.segment),
            (r, f, mo, segment as i32),
            "member {name}"
        );
        assert_eq!(got.run_id, run.run_id);
    }
    let (_, b) = ids[1];
    let b_rfm = stack
        .analytics
        .clone()
        .get_member_rfm(req(pb::GetMemberRfmRequest {
            member_id: b.to_string(),
        }))
        .await
        .unwrap()
        .into_inner()
        .rfm
        .unwrap();
    assert_eq!(
        (
            b_rfm.recency_days,
            b_rfm.purchase_days,
            b_rfm.net_spend_minor
        ),
        (50, 2, 40_000)
    );
    let (_, old) = ids[5];
    let missing = stack
        .analytics
        .clone()
        .get_member_rfm(req(pb::GetMemberRfmRequest {
            member_id: old.to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::FailedPrecondition);

    let summary = stack
        .analytics
        .clone()
        .get_rfm_summary(req(pb::GetRfmSummaryRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.run.unwrap().run_id, run.run_id);
    assert_eq!(summary.grid.len(), 25);
    let filled: Vec<(i32, i32, i64)> = summary
        .grid
        .iter()
        .filter(|c| c.members > 0)
        .map(|c| (c.recency, c.frequency_monetary, c.members))
        .collect();
    assert_eq!(
        filled,
        [(1, 1, 1), (2, 4, 1), (3, 3, 1), (4, 4, 1), (5, 5, 1)]
    );
    assert_eq!(summary.segments.len(), 11);
    let count = |s: RfmSegment| {
        summary
            .segments
            .iter()
            .find(|c| c.segment == s as i32)
            .unwrap()
            .members
    };
    assert_eq!(count(RfmSegment::Champions), 1);
    assert_eq!(count(RfmSegment::AtRisk), 1);
    assert_eq!(count(RfmSegment::Hibernating), 0);
}

#[tokio::test]
async fn rfm_needs_settings_and_a_member_id() {
    let stack = spawn().await;
    let e = stack
        .analytics
        .clone()
        .recompute_rfm(req(pb::RecomputeRfmRequest { request_id: rid() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e = stack
        .analytics
        .clone()
        .get_member_rfm(req(pb::GetMemberRfmRequest {
            member_id: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(common::fields(&e), ["member_id"]);
}
