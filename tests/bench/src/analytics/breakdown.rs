//! Where our time goes, approximately: the service's reads run from the
//! bench (the same SQL as `services/analytics/src/{rfm,clv}.rs`, copied:
//! keep them in step), the models it calls timed alone
//! (`laurel_analytics_models`, same release profile), and the RFM write
//! priced by copying the stored chunks of packed scores into a table like
//! `rfm_score_chunks` in one committed transaction (the service sends them
//! from the client, one INSERT per chunk of 65,536 members, so its write
//! also pays the protocol and the packing).
//!
//! Run after the timed calls, on the same data; a figure, not a target.

use std::time::Instant;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use laurel_analytics_models::clv::{
    CustomerSummary, compress_spend, compress_triples, fit_bg_nbd, fit_gamma_gamma,
};
use laurel_analytics_models::rfm::{RfmConfig, RfmInput, score_rfm};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Seconds of each part.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    pub parts: Vec<(&'static str, f64)>,
    /// What the parts counted (rows read, unique triples, ...).
    pub notes: Vec<String>,
}

/// Days since 1970-01-01, as the service counts them.
fn epoch_day(day: NaiveDate) -> i32 {
    (day - NaiveDate::default()).num_days() as i32
}

/// RecomputeRfm's parts: read the active population, score it, write it.
pub async fn rfm(
    pool: &PgPool,
    program: &str,
    currency: &str,
    as_of: NaiveDate,
    active_days: i32,
) -> Result<Parts> {
    let since = as_of - chrono::Duration::days(i64::from(active_days));
    let started = Instant::now();
    let rows = sqlx::query(
        "SELECT member_id, last_day, purchase_days, gross_minor - refunded_minor AS net
             FROM member_spend
             WHERE program_id = $1 AND currency_code = $2 AND last_day > $3 AND last_day <= $4",
    )
    .bind(program)
    .bind(currency)
    .bind(since)
    .bind(as_of)
    .fetch_all(pool)
    .await
    .context("the RFM population read")?;
    let mut inputs = Vec::with_capacity(rows.len());
    for row in &rows {
        let member: Uuid = row.try_get(0)?;
        let last: NaiveDate = row.try_get(1)?;
        let days: i64 = row.try_get(2)?;
        inputs.push(RfmInput {
            member_id: member.as_u128(),
            last_purchase_day: epoch_day(last),
            frequency: u32::try_from(days).unwrap_or(u32::MAX),
            monetary_minor: row.try_get(3)?,
        });
    }
    drop(rows);
    let read = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let table = score_rfm(&inputs, &RfmConfig::default()).context("score")?;
    let score = started.elapsed().as_secs_f64();

    sqlx::query("DROP TABLE IF EXISTS bench_rfm_score_chunks_copy")
        .execute(pool)
        .await?;
    // INCLUDING ALL keeps the chunks' storage (EXTERNAL: out of line,
    // uncompressed).
    sqlx::query("CREATE TABLE bench_rfm_score_chunks_copy (LIKE rfm_score_chunks INCLUDING ALL)")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let written: i64 = sqlx::query_scalar(
        "WITH copied AS (
             INSERT INTO bench_rfm_score_chunks_copy
             SELECT * FROM rfm_score_chunks WHERE program_id = $1 RETURNING members)
         SELECT COALESCE(sum(members), 0)::bigint FROM copied",
    )
    .bind(program)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let write = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_rfm_score_chunks_copy")
        .execute(pool)
        .await?;
    Ok(Parts {
        parts: vec![
            (
                "read the population (member_spend, row by row; the service uses a binary COPY)",
                read,
            ),
            ("score (laurel_analytics_models::rfm)", score),
            (
                "write the scores (INSERT SELECT of the packed chunks + commit)",
                write,
            ),
        ],
        notes: vec![format!(
            "{} members read and scored, {written} members' packed scores copied",
            table.len()
        )],
    })
}

/// FitClvModel's parts: read the summaries (the rows the service reads when
/// the calibration period covers every purchase, though it reads them with
/// a binary COPY), compress, fit each model alone (the service fits both at
/// once, each over every core).
pub async fn clv(pool: &PgPool, program: &str, currency: &str, end: NaiveDate) -> Result<Parts> {
    let started = Instant::now();
    let rows = sqlx::query(
        "SELECT s.member_id, s.first_day, s.last_day, s.purchase_days,
                    s.gross_minor - s.refunded_minor AS net, s.first_day_spend_minor AS first_spend
             FROM member_spend s
             WHERE s.program_id = $1 AND s.currency_code = $2",
    )
    .bind(program)
    .bind(currency)
    .fetch_all(pool)
    .await
    .context("the CLV summaries read")?;
    let end_day = epoch_day(end);
    let mut summaries = Vec::with_capacity(rows.len());
    for row in &rows {
        let _: Uuid = row.try_get(0)?;
        let first = epoch_day(row.try_get(1)?);
        let last = epoch_day(row.try_get(2)?);
        let days: i64 = row.try_get(3)?;
        let net: i64 = row.try_get(4)?;
        let first_spend: i64 = row.try_get(5)?;
        let x = u32::try_from(days.max(1) - 1).unwrap_or(u32::MAX);
        summaries.push(CustomerSummary {
            frequency: x,
            recency_days: u32::try_from(last - first).unwrap_or(0),
            age_days: u32::try_from(end_day - first).unwrap_or(0),
            repeat_spend_minor: if x == 0 {
                0
            } else {
                net.saturating_sub(first_spend.max(0)).max(0)
            },
        });
    }
    drop(rows);
    let read = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let triples = compress_triples(&summaries);
    let spends = compress_spend(&summaries);
    let compress = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let bg = fit_bg_nbd(&triples).context("BG/NBD")?;
    let bg_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let gg = fit_gamma_gamma(&spends).context("Gamma-Gamma")?;
    let gg_s = started.elapsed().as_secs_f64();
    Ok(Parts {
        parts: vec![
            (
                "read the summaries (member_spend, row by row; the service uses a binary COPY)",
                read,
            ),
            ("compress (x, t_x, T) and (x, spend)", compress),
            ("fit BG/NBD", bg_s),
            ("fit Gamma-Gamma", gg_s),
        ],
        notes: vec![format!(
            "{} customers; {} unique (x, t_x, T), BG/NBD {} iterations; {} unique (x, spend), Gamma-Gamma {} iterations",
            summaries.len(),
            triples.len(),
            bg.iterations,
            spends.len(),
            gg.iterations
        )],
    })
}
