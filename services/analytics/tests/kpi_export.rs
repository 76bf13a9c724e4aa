//! `ExportReport`: every report's CSV on small fixtures (chunks
//! concatenated give exactly the expected text), a member report of 20,000
//! members arriving in many chunks of about 64 KiB, and validation. An
//! ignored test streams 1,000,000 members and prints time and peak memory.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{Options, Stack, fields, req, spawn, spawn_with};
use laurel_analytics::rfm::packed;
use laurel_proto::analytics::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

const CHUNK: usize = 64 * 1024;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// A stack whose background jobs run once at start, then wait an hour:
/// the scheduled RFM and value scoring would otherwise replace the figures
/// these tests write into `rfm_score_chunks` and `member_values`, or compete
/// with a timed export.
async fn quiet_stack() -> Stack {
    spawn_with(Options {
        job_interval: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    })
    .await
}

/// The report's chunks, or the call's error.
async fn export(
    stack: &Stack,
    request: pb::ExportReportRequest,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut stream = stack
        .analytics
        .clone()
        .export_report(req(request))
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk.csv);
    }
    Ok(chunks)
}

fn text(chunks: &[Vec<u8>]) -> String {
    String::from_utf8(chunks.concat()).expect("UTF-8")
}

async fn member(db: &PgPool, enrolled_at: DateTime<Utc>, tier: &str, status: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at, tier_code, status)
         VALUES ('default', $1, $2, $3, $4)",
    )
    .bind(id)
    .bind(enrolled_at)
    .bind(tier)
    .bind(status)
    .execute(db)
    .await
    .unwrap();
    id
}

async fn purchase(db: &PgPool, who: Uuid, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO purchases (program_id, order_id, activity_id, member_id, guest, currency_code,
            total_minor, occurred_at, day)
         VALUES ('default', $1, $2, $3, false, 'EUR', 1000, $4, $5)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(Uuid::now_v7())
    .bind(who)
    .bind(at)
    .bind(at.date_naive())
    .execute(db)
    .await
    .unwrap();
}

fn range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (
    Option<prost_types::Timestamp>,
    Option<prost_types::Timestamp>,
) {
    (Some(common::timestamp(from)), Some(common::timestamp(to)))
}

#[tokio::test]
async fn kpi_and_cohort_reports_are_their_tables_as_csv() {
    let stack = spawn_with(Options {
        start: Some(at(2026, 2, 15, 12)),
        ..Default::default()
    })
    .await;
    stack.settings("Europe/Paris").await;
    let db = &stack.db;
    let x = member(db, at(2026, 1, 10, 12), "", "active").await;
    let y = member(db, at(2026, 1, 20, 12), "", "active").await;
    member(db, at(2026, 2, 3, 12), "", "active").await;
    purchase(db, x, at(2026, 1, 11, 12)).await;
    purchase(db, x, at(2026, 2, 1, 12)).await;
    purchase(db, y, at(2026, 2, 2, 12)).await;
    let paris = |m| {
        chrono_tz::Europe::Paris
            .with_ymd_and_hms(2026, m, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let (from, to) = range(paris(1), paris(3));
    let kpi = export(
        &stack,
        pb::ExportReportRequest {
            report: pb::Report::Kpi as i32,
            kpi: Some(pb::GetKpiRequest {
                kpi: pb::Kpi::RepurchaseRate as i32,
                period: pb::Period::Month as i32,
                from,
                to,
                filter: None,
            }),
            cohorts: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        text(&kpi),
        "period_start,value,numerator,denominator\r\n\
         2026-01-01T00:00:00+01:00,0,0,1\r\n\
         2026-02-01T00:00:00+01:00,0,0,2\r\n"
    );
    let cohorts = export(
        &stack,
        pb::ExportReportRequest {
            report: pb::Report::Cohorts as i32,
            kpi: None,
            cohorts: Some(pb::GetCohortRetentionRequest {
                period: pb::Period::Month as i32,
                from,
                to,
                filter: None,
            }),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        text(&cohorts),
        "cohort_start,members,period,active,retention\r\n\
         2026-01-01T00:00:00+01:00,2,0,1,0.5\r\n\
         2026-01-01T00:00:00+01:00,2,1,2,1\r\n\
         2026-02-01T00:00:00+01:00,1,0,0,0\r\n"
    );
}

/// Adds an RFM run with `bins` levels, whatever columns the table has
/// (`jsonb_populate_record` ignores keys it has no column for).
async fn rfm_run(db: &PgPool, bins: i32) -> Uuid {
    let run = Uuid::now_v7();
    let row = serde_json::json!({
        "program_id": "default", "run_id": run, "as_of": "2026-03-01", "members": 2,
        "bins": bins, "currency_code": "EUR", "trigger": "request", "duration_ms": 1,
        "grid": vec![0; 25], "segments": vec![0; 11], "created_at": "2026-03-01T00:00:00Z",
    });
    sqlx::query("INSERT INTO rfm_runs SELECT * FROM jsonb_populate_record(NULL::rfm_runs, $1)")
        .bind(row)
        .execute(db)
        .await
        .unwrap();
    run
}

/// Stores a run's scores, (member, recency, FM, segment) each, packed as
/// the service stores them.
async fn rfm_scores(db: &PgPool, run: Uuid, scores: &[(Uuid, u8, u8, pb::RfmSegment)]) {
    let mut scores: Vec<packed::Score> = scores
        .iter()
        .map(|&(who, recency, fm, segment)| packed::Score {
            member: who.as_u128(),
            recency,
            frequency: fm,
            monetary: fm,
            fm,
            segment: segment as u8,
            recency_days: 10,
            purchase_days: 2,
            net_spend_minor: 8500,
        })
        .collect();
    for c in packed::encode(&mut scores, packed::CHUNK_MEMBERS).unwrap() {
        sqlx::query(
            "INSERT INTO rfm_score_chunks (program_id, run_id, chunk, first_member, members, data)
             VALUES ('default', $1, $2, $3, $4, $5)",
        )
        .bind(run)
        .bind(c.index)
        .bind(c.first_member)
        .bind(c.members)
        .bind(c.data)
        .execute(db)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn member_and_rfm_grid_reports_join_what_was_computed() {
    let stack = quiet_stack().await;
    stack.settings("UTC").await;
    let db = &stack.db;
    let grid = pb::ExportReportRequest {
        report: pb::Report::RfmGrid as i32,
        ..Default::default()
    };
    let none = export(&stack, grid.clone()).await.unwrap_err();
    assert_eq!(
        none.code(),
        tonic::Code::FailedPrecondition,
        "no RFM run yet"
    );
    let m1 = member(db, at(2026, 1, 10, 10), "gold, plus", "active").await;
    let m2 = member(db, at(2026, 1, 11, 10), "", "active").await;
    member(db, at(2026, 1, 12, 10), "", "erased").await;
    member(db, at(2026, 1, 13, 10), "gold", "merged").await;
    sqlx::query(
        "UPDATE members SET points_earned = 700, points_redeemed = 200 WHERE member_id = $1",
    )
    .bind(m1)
    .execute(db)
    .await
    .unwrap();
    for (currency, gross, refunded) in [("EUR", 10_000i64, 1_500i64), ("USD", 99_999, 0)] {
        sqlx::query(
            "INSERT INTO member_spend (program_id, member_id, currency_code, first_purchase_at,
                last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor,
                refunded_minor, refunds)
             VALUES ('default', $1, $2, now(), now(), current_date, current_date, 3, 2, $3, $4, 1)",
        )
        .bind(m1)
        .bind(currency)
        .bind(gross)
        .bind(refunded)
        .execute(db)
        .await
        .unwrap();
    }
    let run = rfm_run(db, 2).await;
    rfm_scores(
        db,
        run,
        &[
            (m1, 2, 2, pb::RfmSegment::Champions),
            (m2, 1, 2, pb::RfmSegment::Promising),
        ],
    )
    .await;
    sqlx::query(
        "INSERT INTO member_values (program_id, member_id, stage, rhythm_days, recency_days,
            probability_alive, expected_purchases, predictive_clv_minor, historical_clv_minor,
            churn_score, churn_components, value_at_risk_minor, scored_at)
         VALUES ('default', $1, $2, 30, 10, 0.9, 1.5, 5000, 123456, 12, '{0,0,0,0,0}', 600, now())",
    )
    .bind(m1)
    .bind(pb::LifecycleStage::Active as i16)
    .execute(db)
    .await
    .unwrap();
    let members = export(
        &stack,
        pb::ExportReportRequest {
            report: pb::Report::Members as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        text(&members),
        format!(
            "member_id,enrolled_at,tier_code,orders,purchase_days,net_spend_minor,points_earned,\
             points_redeemed,rfm_segment,lifecycle_stage,historical_clv_minor,churn_score\r\n\
             {m1},2026-01-10T10:00:00Z,\"gold, plus\",3,2,8500,700,200,CHAMPIONS,ACTIVE,123456,12\r\n\
             {m2},2026-01-11T10:00:00Z,,0,0,0,0,0,PROMISING,,,\r\n"
        )
    );
    assert_eq!(
        text(&export(&stack, grid).await.unwrap()),
        "recency,frequency_monetary,members\r\n1,1,0\r\n1,2,1\r\n2,1,0\r\n2,2,1\r\n"
    );
}

/// Seeds `n` active members with spend figures straight into the tables.
async fn seed_members(db: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at, tier_code, points_earned)
         SELECT 'default', gen_random_uuid(), timestamptz '2025-01-01' + i * interval '1 minute',
                CASE WHEN i % 3 = 0 THEN 'gold' ELSE '' END, i
         FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO member_spend (program_id, member_id, currency_code, first_purchase_at,
            last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor,
            refunded_minor, refunds)
         SELECT program_id, member_id, 'EUR', enrolled_at, enrolled_at, current_date, current_date,
                3, 2, 12345, 45, 1
         FROM members",
    )
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_large_member_report_arrives_in_many_chunks() {
    let stack = quiet_stack().await;
    stack.settings("UTC").await;
    seed_members(&stack.db, 20_000).await;
    let chunks = export(
        &stack,
        pb::ExportReportRequest {
            report: pb::Report::Members as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    let (last, full) = chunks.split_last().unwrap();
    for chunk in full {
        assert!(
            (CHUNK..CHUNK + 1024).contains(&chunk.len()),
            "a chunk of {} bytes",
            chunk.len()
        );
        assert!(chunk.ends_with(b"\r\n"), "chunks end on a record");
    }
    assert!(!last.is_empty() && last.len() < CHUNK + 1024);
    let text = text(&chunks);
    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 20_001);
    assert!(lines[0].starts_with("member_id,enrolled_at,"));
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "by member id, each once"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.split(',').count() == 12 && l.contains(",3,2,12300,"))
    );
}

#[tokio::test]
async fn bad_export_requests_fail_before_streaming() {
    let stack = spawn().await;
    let no_settings = export(
        &stack,
        pb::ExportReportRequest {
            report: pb::Report::Members as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(no_settings.code(), tonic::Code::FailedPrecondition);
    stack.settings("UTC").await;
    let invalid = |request: pb::ExportReportRequest| {
        let stack = &stack;
        async move {
            let e = export(stack, request).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            fields(&e)
        }
    };
    assert_eq!(
        invalid(pb::ExportReportRequest::default()).await,
        ["report"]
    );
    let kpi = |kpi| pb::ExportReportRequest {
        report: pb::Report::Kpi as i32,
        kpi,
        cohorts: None,
    };
    assert_eq!(invalid(kpi(None)).await, ["kpi"]);
    let (from, to) = range(at(2026, 1, 2, 0), at(2026, 1, 1, 0));
    assert_eq!(
        invalid(kpi(Some(pb::GetKpiRequest {
            kpi: pb::Kpi::Nps as i32,
            period: 0,
            from,
            to,
            filter: Some(pb::KpiFilter {
                tier_code: "gold".into(),
                channel: "ONLINE".into(),
                ..Default::default()
            }),
        })))
        .await,
        ["kpi.period", "kpi.to", "kpi.filter.channel"]
    );
    let (from, to) = range(at(2020, 1, 1, 0), at(2026, 1, 1, 0));
    let cohorts = pb::ExportReportRequest {
        report: pb::Report::Cohorts as i32,
        kpi: None,
        cohorts: Some(pb::GetCohortRetentionRequest {
            period: pb::Period::Day as i32,
            from,
            to,
            filter: None,
        }),
    };
    assert_eq!(
        invalid(cohorts).await,
        ["cohorts.to"],
        "more than 1,000 cohorts"
    );
}

/// Peak resident memory of this process, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `cargo test -p laurel-analytics --release --test kpi_export -- --ignored --nocapture`
#[tokio::test]
#[ignore = "seeds a million members: a measurement, not a check"]
async fn a_million_member_report_streams_in_flat_memory() {
    let stack = quiet_stack().await;
    stack.settings("UTC").await;
    seed_members(&stack.db, 1_000_000).await;
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let mut stream = stack
        .analytics
        .clone()
        .export_report(req(pb::ExportReportRequest {
            report: pb::Report::Members as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let (mut bytes, mut chunks, mut lines) = (0usize, 0usize, 0usize);
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes += chunk.csv.len();
        chunks += 1;
        lines += chunk.csv.iter().filter(|&&b| b == b'\n').count();
    }
    let elapsed = started.elapsed();
    assert_eq!(lines, 1_000_001);
    println!(
        "1,000,000 members: {bytes} bytes in {chunks} chunks in {elapsed:?}; \
         peak RSS {before} KiB before, {} KiB after",
        peak_rss_kib()
    );
}
