//! RFM scores stored packed (`rfm_score_chunks`): a run over more members
//! than two chunks hold, each member's scores read back from any chunk
//! (the last member of the last chunk, the first of each) equal to the
//! model's, a rerun leaving only its own chunks, members merged away or
//! erased passed over, and the segment of valued members in
//! `ListSegmentValues` and `ListMembersAtRisk`.

mod common;

use chrono::NaiveDate;
use common::{Options, Stack, req, rid, spawn_with};
use laurel_analytics::rfm::{
    packed::{CHUNK_MEMBERS, RECORD},
    segment_pb,
};
use laurel_analytics_models::rfm::{RfmConfig, RfmInput, score_rfm};
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::clock::Clock;
use sqlx::PgPool;
use uuid::Uuid;

/// A stack whose scoring job runs once at start (before any settings) and
/// then waits an hour: the runs here are the ones asked for.
async fn quiet_stack() -> Stack {
    spawn_with(Options {
        job_interval: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    })
    .await
}

/// Seeds `n` members (a `members` row and EUR spend each) with varied
/// last days, purchase days and spend, straight into the tables.
async fn seed(db: &PgPool, today: NaiveDate, n: i64) {
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at, tier_code)
         SELECT 'default', gen_random_uuid(), timestamptz '2025-01-01', ''
         FROM generate_series(1, $1)",
    )
    .bind(n)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO member_spend (program_id, member_id, currency_code, first_purchase_at,
            last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor,
            refunded_minor, refunds)
         SELECT program_id, member_id, 'EUR', enrolled_at, enrolled_at, $1::date - 400,
                $1::date - (i % 300)::int, 1 + i % 9, 1 + i % 7, 1000 + (i * 7919) % 100000, i % 3, 0
         FROM (SELECT program_id, member_id, enrolled_at,
                      row_number() OVER (ORDER BY member_id) AS i
               FROM members) m",
    )
    .bind(today)
    .execute(db)
    .await
    .unwrap();
}

async fn recompute(stack: &Stack) -> pb::RfmRun {
    stack
        .analytics
        .clone()
        .recompute_rfm(req(pb::RecomputeRfmRequest { request_id: rid() }))
        .await
        .expect("recompute")
        .into_inner()
        .run
        .unwrap()
}

async fn member_rfm(stack: &Stack, member: Uuid) -> Result<pb::MemberRfm, tonic::Status> {
    Ok(stack
        .analytics
        .clone()
        .get_member_rfm(req(pb::GetMemberRfmRequest {
            member_id: member.to_string(),
        }))
        .await?
        .into_inner()
        .rfm
        .unwrap())
}

/// The stored chunk rows: (run, chunk, first member, members, bytes).
async fn chunks(db: &PgPool) -> Vec<(Uuid, i32, Uuid, i32, i32)> {
    sqlx::query_as(
        "SELECT run_id, chunk, first_member, members, octet_length(data)
         FROM rfm_score_chunks ORDER BY run_id, chunk",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// The RFM grid report as (recency, FM, members).
async fn grid_report(stack: &Stack) -> Vec<(i32, i32, i64)> {
    let mut stream = stack
        .analytics
        .clone()
        .export_report(req(pb::ExportReportRequest {
            report: pb::Report::RfmGrid as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        text.extend(chunk.csv);
    }
    String::from_utf8(text)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// The model's scores of the seeded population as of `today`, by member.
async fn expected(db: &PgPool, today: NaiveDate) -> laurel_analytics_models::rfm::RfmTable {
    let rows: Vec<(Uuid, NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT member_id, last_day, purchase_days, gross_minor - refunded_minor
         FROM member_spend WHERE last_day > $1::date - 365",
    )
    .bind(today)
    .fetch_all(db)
    .await
    .unwrap();
    let inputs: Vec<RfmInput> = rows
        .iter()
        .map(|&(m, last, days, net)| RfmInput {
            member_id: m.as_u128(),
            last_purchase_day: (last - NaiveDate::default()).num_days() as i32,
            frequency: days as u32,
            monetary_minor: net,
        })
        .collect();
    score_rfm(&inputs, &RfmConfig::default()).unwrap()
}

#[tokio::test]
async fn a_run_over_three_chunks_reads_back_and_a_rerun_leaves_only_its_own() {
    let stack = quiet_stack().await;
    stack.settings("UTC").await;
    let db = &stack.db;
    let today = stack.clock.now().date_naive();
    let n = 2 * CHUNK_MEMBERS as i64 + 1_000;
    seed(db, today, n).await;

    let run = recompute(&stack).await;
    assert_eq!(run.members, n);
    let stored = chunks(db).await;
    let run_id: Uuid = run.run_id.parse().unwrap();
    let full = CHUNK_MEMBERS as i32;
    assert_eq!(
        stored
            .iter()
            .map(|&(r, c, _, m, bytes)| (r, c, m, bytes))
            .collect::<Vec<_>>(),
        [
            (run_id, 0, full, full * RECORD as i32),
            (run_id, 1, full, full * RECORD as i32),
            (run_id, 2, 1_000, 1_000 * RECORD as i32),
        ],
        "three chunks of the run, the last one partial"
    );

    // Chunk k starts with the (k * 65,536 + 1)-th smallest member id.
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT member_id FROM members ORDER BY member_id")
        .fetch_all(db)
        .await
        .unwrap();
    for &(_, c, first, _, _) in &stored {
        assert_eq!(first, ids[c as usize * CHUNK_MEMBERS], "chunk {c}");
    }

    // Members from every chunk, the last member of the last chunk among
    // them, read back as the model scores them.
    let model = expected(db, today).await;
    let last = *ids.last().unwrap();
    let spend: (NaiveDate, i64, i64) = sqlx::query_as(
        "SELECT last_day, purchase_days, gross_minor - refunded_minor FROM member_spend
         WHERE member_id = $1",
    )
    .bind(last)
    .fetch_one(db)
    .await
    .unwrap();
    let sample = [
        ids[0],
        ids[CHUNK_MEMBERS - 1],
        ids[CHUNK_MEMBERS],
        ids[2 * CHUNK_MEMBERS],
        ids[ids.len() - 2],
        last,
    ];
    for member in sample {
        let got = member_rfm(&stack, member).await.expect("scored");
        let want = model.get(member.as_u128()).unwrap();
        assert_eq!(
            (got.recency, got.frequency, got.monetary, got.segment),
            (
                i32::from(want.score.recency),
                i32::from(want.score.frequency),
                i32::from(want.score.monetary),
                segment_pb(want.segment) as i32
            ),
            "{member}"
        );
        assert_eq!(got.run_id, run.run_id);
    }
    let got = member_rfm(&stack, last).await.unwrap();
    assert_eq!(
        (got.recency_days, got.purchase_days, got.net_spend_minor),
        ((today - spend.0).num_days(), spend.1, spend.2),
        "the last member of the last chunk"
    );
    let nobody = member_rfm(&stack, Uuid::max()).await.unwrap_err();
    assert_eq!(nobody.code(), tonic::Code::FailedPrecondition);

    // The grid report counts the stored run: the summary's grid.
    let summary = stack
        .analytics
        .clone()
        .get_rfm_summary(req(pb::GetRfmSummaryRequest {}))
        .await
        .unwrap()
        .into_inner();
    let from_summary: Vec<(i32, i32, i64)> = summary
        .grid
        .iter()
        .map(|c| (c.recency, c.frequency_monetary, c.members))
        .collect();
    let report = grid_report(&stack).await;
    assert_eq!(report, from_summary);
    assert_eq!(report.iter().map(|c| c.2).sum::<i64>(), n);

    // A rerun over fewer members: two chunks of its own, nothing of the
    // previous run left.
    let smaller = CHUNK_MEMBERS + 10;
    sqlx::query("DELETE FROM member_spend WHERE member_id > $1")
        .bind(ids[smaller - 1])
        .execute(db)
        .await
        .unwrap();
    let rerun = recompute(&stack).await;
    assert_ne!(rerun.run_id, run.run_id);
    assert_eq!(rerun.members, smaller as i64);
    let rerun_id: Uuid = rerun.run_id.parse().unwrap();
    let stored = chunks(db).await;
    assert_eq!(
        stored
            .iter()
            .map(|&(r, c, f, m, _)| (r, c, f, m))
            .collect::<Vec<_>>(),
        [
            (rerun_id, 0, ids[0], full),
            (rerun_id, 1, ids[CHUNK_MEMBERS], 10)
        ]
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM rfm_score_chunks")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(total, 2, "no chunk of the previous run is left");
    let gone = member_rfm(&stack, last).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::FailedPrecondition);
    let kept = member_rfm(&stack, ids[smaller - 1]).await.unwrap();
    assert_eq!(kept.run_id, rerun.run_id);
    let model = expected(db, today).await;
    let want = model.get(ids[smaller - 1].as_u128()).unwrap();
    assert_eq!(
        (kept.recency, kept.frequency, kept.monetary),
        (
            i32::from(want.score.recency),
            i32::from(want.score.frequency),
            i32::from(want.score.monetary)
        )
    );
    assert_eq!(
        grid_report(&stack).await.iter().map(|c| c.2).sum::<i64>(),
        smaller as i64
    );
}

#[tokio::test]
async fn members_merged_away_or_erased_after_the_run_are_passed_over() {
    let stack = quiet_stack().await;
    stack.settings("UTC").await;
    let db = &stack.db;
    let today = stack.clock.now().date_naive();
    seed(db, today, 50).await;
    let run = recompute(&stack).await;
    assert_eq!(run.members, 50);
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT member_id FROM members ORDER BY member_id")
        .fetch_all(db)
        .await
        .unwrap();
    let before = grid_report(&stack).await;
    for (member, status) in [(ids[3], "merged"), (ids[49], "erased")] {
        member_rfm(&stack, member).await.expect("scored");
        sqlx::query("UPDATE members SET status = $2 WHERE member_id = $1")
            .bind(member)
            .bind(status)
            .execute(db)
            .await
            .unwrap();
        let e = member_rfm(&stack, member).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{status}");
    }
    member_rfm(&stack, ids[4]).await.expect("the others stay");
    let after = grid_report(&stack).await;
    assert_eq!(after.iter().map(|c| c.2).sum::<i64>(), 48);
    let lost: i64 = before.iter().zip(&after).map(|(b, a)| b.2 - a.2).sum();
    assert_eq!(lost, 2);
    assert!(before.iter().zip(&after).all(|(b, a)| b.2 >= a.2));
}

#[tokio::test]
async fn segment_values_and_members_at_risk_carry_the_stored_segments() {
    let stack = quiet_stack().await;
    stack.settings("UTC").await;
    let db = &stack.db;
    let today = stack.clock.now().date_naive();
    seed(db, today, 40).await;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT member_id FROM members ORDER BY member_id")
        .fetch_all(db)
        .await
        .unwrap();
    // Values for 30 of them (one valued member, the last, is never
    // scored: no spend) with CLV 1000 + k and risk 100 - k.
    for (k, &member) in ids.iter().take(30).enumerate() {
        sqlx::query(
            "INSERT INTO member_values (program_id, member_id, stage, rhythm_days, recency_days,
                probability_alive, expected_purchases, predictive_clv_minor,
                historical_clv_minor, churn_score, churn_components, value_at_risk_minor,
                scored_at)
             VALUES ('default', $1, 4, 30, 10, 0.5, 1, 900, $2, 60, '{0,0,0,0,0,0}', $3, now())",
        )
        .bind(member)
        .bind(1_000 + k as i64)
        .bind(100 - k as i64)
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM member_spend WHERE member_id = $1")
        .bind(ids[29])
        .execute(db)
        .await
        .unwrap();
    recompute(&stack).await;

    let mut want: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    let mut segment_of = std::collections::HashMap::new();
    for (k, &member) in ids.iter().take(29).enumerate() {
        let segment = member_rfm(&stack, member).await.unwrap().segment;
        segment_of.insert(member.to_string(), segment);
        let e = want.entry(segment).or_default();
        e.0 += 1;
        e.1 += 1_000 + k as i64;
    }
    let got = stack
        .analytics
        .clone()
        .list_segment_values(req(pb::ListSegmentValuesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .segments;
    assert_eq!(
        got.iter()
            .map(|s| (s.segment, s.members, s.total_clv_minor, s.average_clv_minor))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|(&s, &(n, total))| (s, n, total, total / n))
            .collect::<Vec<_>>()
    );

    let at_risk = stack
        .analytics
        .clone()
        .list_members_at_risk(req(pb::ListMembersAtRiskRequest {
            limit: 1000,
            min_score: 50,
        }))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(at_risk.len(), 30);
    for m in &at_risk {
        assert_eq!(
            m.segment,
            segment_of.get(&m.member_id).copied().unwrap_or(0),
            "{}",
            m.member_id
        );
    }
    assert_eq!(at_risk[0].member_id, ids[0].to_string());
    assert_eq!(at_risk[29].segment, 0, "never scored");
}
