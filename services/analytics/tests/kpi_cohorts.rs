//! Retention by monthly enrolment cohort on a hand-computed fixture, with
//! the clock in March 2026: each cohort runs to March, purchases after
//! March, in other currencies or of members outside the cohorts do not
//! count, and channel and tier filters narrow purchases and members.
//!
//! - January cohort: M1 (gold) buys Jan 5 ONLINE, Feb 7 IN_STORE, Mar 10
//!   ONLINE; M2 (silver) Jan 20 IN_STORE and Apr 2 (after now); M3 (gold)
//!   Feb 1 ONLINE and Mar 3 in USD; M4 merged away;
//! - February cohort: M5 (gold) Feb 2 and Feb 25 ONLINE; M6 Mar 5
//!   IN_STORE;
//! - March cohort: M7, no purchase;
//! - M0, enrolled in December, buys in January.

mod common;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::{Options, Stack, fields, req, spawn_with};
use laurel_proto::analytics::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 9, 0, 0).unwrap()
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

async fn purchase(db: &PgPool, who: Uuid, at: DateTime<Utc>, currency: &str, channel: &str) {
    sqlx::query(
        "INSERT INTO purchases (program_id, order_id, activity_id, member_id, guest, currency_code,
            total_minor, occurred_at, day, channel, store_id)
         VALUES ('default', $1, $2, $3, false, $4, 1000, $5, $6, $7, 's1')",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(Uuid::now_v7())
    .bind(who)
    .bind(currency)
    .bind(at)
    .bind(at.date_naive())
    .bind(channel)
    .execute(db)
    .await
    .unwrap();
}

async fn fixture() -> Stack {
    let stack = spawn_with(Options {
        start: Some(utc(2026, 3, 15)),
        ..Default::default()
    })
    .await;
    stack.settings("UTC").await;
    let db = &stack.db;
    let m0 = member(db, utc(2025, 12, 5), "gold", "active").await;
    let m1 = member(db, utc(2026, 1, 3), "gold", "active").await;
    let m2 = member(db, utc(2026, 1, 10), "silver", "active").await;
    let m3 = member(db, utc(2026, 1, 28), "gold", "active").await;
    let m4 = member(db, utc(2026, 1, 15), "gold", "merged").await;
    let m5 = member(db, utc(2026, 2, 2), "gold", "active").await;
    let m6 = member(db, utc(2026, 2, 20), "", "active").await;
    member(db, utc(2026, 3, 1), "", "active").await;
    for (who, at, currency, channel) in [
        (m0, utc(2026, 1, 10), "EUR", "ONLINE"),
        (m1, utc(2026, 1, 5), "EUR", "ONLINE"),
        (m1, utc(2026, 2, 7), "EUR", "IN_STORE"),
        (m1, utc(2026, 3, 10), "EUR", "ONLINE"),
        (m2, utc(2026, 1, 20), "EUR", "IN_STORE"),
        (m2, utc(2026, 4, 2), "EUR", "IN_STORE"),
        (m3, utc(2026, 2, 1), "EUR", "ONLINE"),
        (m3, utc(2026, 3, 3), "USD", "ONLINE"),
        (m4, utc(2026, 1, 16), "EUR", "ONLINE"),
        (m5, utc(2026, 2, 2), "EUR", "ONLINE"),
        (m5, utc(2026, 2, 25), "EUR", "ONLINE"),
        (m6, utc(2026, 3, 5), "EUR", "IN_STORE"),
    ] {
        purchase(db, who, at, currency, channel).await;
    }
    stack
}

type Row = (NaiveDate, i64, Vec<i64>, Vec<f64>);

async fn cohorts(stack: &Stack, filter: Option<pb::KpiFilter>) -> Result<Vec<Row>, tonic::Status> {
    let response = stack
        .analytics
        .clone()
        .get_cohort_retention(req(pb::GetCohortRetentionRequest {
            period: pb::Period::Unspecified as i32,
            from: Some(common::timestamp(
                Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            )),
            to: Some(common::timestamp(
                Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
            )),
            filter,
        }))
        .await?
        .into_inner();
    Ok(response
        .cohorts
        .into_iter()
        .map(|c| {
            let start = DateTime::from_timestamp(c.cohort_start.unwrap().seconds, 0).unwrap();
            (start.date_naive(), c.members, c.active, c.retention)
        })
        .collect())
}

fn d(m: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, 1).unwrap()
}

#[tokio::test]
async fn monthly_cohorts_run_to_the_current_month() {
    let stack = fixture().await;
    assert_eq!(
        cohorts(&stack, None).await.unwrap(),
        [
            (
                d(1),
                3,
                vec![2, 2, 1],
                vec![2.0 / 3.0, 2.0 / 3.0, 1.0 / 3.0]
            ),
            (d(2), 2, vec![1, 1], vec![0.5, 0.5]),
            (d(3), 1, vec![0], vec![0.0]),
        ]
    );
}

#[tokio::test]
async fn channel_filters_purchases_and_tier_filters_members() {
    let stack = fixture().await;
    let online = Some(pb::KpiFilter {
        channel: "ONLINE".into(),
        ..Default::default()
    });
    let rows = cohorts(&stack, online).await.unwrap();
    let active: Vec<(i64, Vec<i64>)> = rows.iter().map(|r| (r.1, r.2.clone())).collect();
    assert_eq!(active, [(3, vec![1, 1, 1]), (2, vec![1, 0]), (1, vec![0])]);
    let gold = Some(pb::KpiFilter {
        tier_code: "gold".into(),
        ..Default::default()
    });
    let rows = cohorts(&stack, gold).await.unwrap();
    let active: Vec<(i64, Vec<i64>)> = rows.iter().map(|r| (r.1, r.2.clone())).collect();
    assert_eq!(active, [(2, vec![1, 2, 1]), (1, vec![1, 0]), (0, vec![0])]);
    assert_eq!(rows[2].3, [0.0], "an empty cohort retains nothing");
}

#[tokio::test]
async fn a_bad_cohort_request_names_its_fields() {
    let stack = fixture().await;
    let e = stack
        .analytics
        .clone()
        .get_cohort_retention(req(pb::GetCohortRetentionRequest {
            period: 42,
            filter: Some(pb::KpiFilter {
                channel: "PIGEON".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(fields(&e), ["period", "from", "to", "filter.channel"]);
}
