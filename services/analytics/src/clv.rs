//! CLV model fits: BG/NBD (purchase counts) and Gamma-Gamma (spend) fitted
//! by maximum likelihood on the stored purchase days of a calibration
//! period (`laurel_analytics_models::clv`), kept per programme; later
//! scoring uses the newest fit.
//!
//! - Purchases are the programme currency's purchase days (`member_days`:
//!   a day's purchases summed, net of refunds), so repeat purchases count
//!   per distinct day and time is in weeks.
//! - A customer is in the fit when their first purchase day falls in the
//!   calibration period.
//! - Gamma-Gamma is fitted in minor units and reported in major units (γ
//!   divided by the currency's minor-unit factor; p and q do not change).
//!   Customers without repeat spend are skipped; when no fit is possible
//!   the model has BG/NBD only.
//! - When the period covers every purchase (the usual full refit) the
//!   summaries come from `member_spend` alone, one row per member with its
//!   first day's spend kept beside it, read with a binary COPY decoded
//!   here; otherwise from the purchase days. The two fits then run at the
//!   same time, off the async runtime, each evaluating its likelihood on
//!   every core.

use std::time::Instant;

use chrono::NaiveDate;
use futures::TryStreamExt;
use laurel_analytics_models::clv::{
    self, BgNbdFit, BgNbdParams, ClvError, CustomerSummary, GammaGammaFit, GammaGammaParams,
    Purchase,
};
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey, check_request_id},
};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{
    Analytics,
    copy_rows::{CopyRows, sql_literal},
    error::AnalyticsError,
    metrics::ts,
    rfm::epoch_day,
    settings::Settings,
};

/// A stored fit, as scoring uses it.
#[derive(Clone, Debug)]
pub struct Model {
    /// Id.
    pub id: Uuid,
    /// BG/NBD.
    pub bg: BgNbdParams,
    /// Gamma-Gamma in minor units, when fitted.
    pub gg: Option<GammaGammaParams>,
    /// As sent over gRPC.
    pub pb: pb::ClvModel,
}

/// Minor units per major unit of `currency` (100 when unknown).
pub fn minor_factor(currency: &str) -> f64 {
    let exp = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2);
    10f64.powi(i32::from(exp))
}

/// The customers of a calibration period, as a fit takes them.
#[derive(Debug, Default)]
pub struct Population {
    /// Every customer's summary, in no particular order.
    pub summaries: Vec<CustomerSummary>,
    /// The earliest first purchase day among them.
    pub first_day: Option<NaiveDate>,
}

/// Every customer's summary over the calibration period: from the kept
/// spend figures when the period covers every purchase (one row per
/// member), else from the purchase days.
pub async fn summaries(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<Population, AnalyticsError> {
    let last: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT max(last_day) FROM member_spend WHERE program_id = $1 AND currency_code = $2",
    )
    .bind(program)
    .bind(currency)
    .fetch_one(&mut *conn)
    .await?;
    if last.is_some_and(|last| last <= end) {
        let (_, population) = read_spend(conn, program, currency, start, end, Ids::Skip).await?;
        Ok(population)
    } else {
        let (customers, first_day) = read_days(conn, program, currency, start, end).await?;
        Ok(Population {
            summaries: customers.into_iter().map(|(_, s)| s).collect(),
            first_day: first_day.and_then(date_of_epoch_day),
        })
    }
}

/// Summaries from `member_spend` alone, with each member's id: x =
/// purchase days - 1, t_x = last - first, T = end - first, repeat spend =
/// net spend less the first day's. For a period that covers every purchase.
pub async fn summaries_from_spend(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<Vec<(Uuid, CustomerSummary)>, AnalyticsError> {
    let (ids, population) = read_spend(conn, program, currency, start, end, Ids::Keep).await?;
    Ok(ids.into_iter().zip(population.summaries).collect())
}

/// Whether a read of `member_spend` keeps the members' ids (a fit does not
/// need them).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ids {
    Keep,
    Skip,
}

/// One summary from a member's kept figures (days since 1970-01-01).
fn spend_summary(
    first: i32,
    last: i32,
    purchase_days: i64,
    net: i64,
    first_day_spend: i64,
    end: i32,
) -> CustomerSummary {
    let x = u32::try_from(purchase_days.max(1) - 1).unwrap_or(u32::MAX);
    CustomerSummary {
        frequency: x,
        recency_days: u32::try_from(i64::from(last) - i64::from(first)).unwrap_or(0),
        age_days: u32::try_from(i64::from(end) - i64::from(first)).unwrap_or(0),
        // A first day refunded beyond its purchases counts as 0, as in
        // the purchase days.
        repeat_spend_minor: if x == 0 {
            0
        } else {
            net.saturating_sub(first_day_spend.max(0)).max(0)
        },
    }
}

/// Reads `member_spend` with a binary COPY decoded here: one row per
/// member, five fixed-width columns (and the id when kept), no `PgRow`
/// per member. On a million members this is the bulk of a fit's read.
async fn read_spend(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
    ids: Ids,
) -> Result<(Vec<Uuid>, Population), AnalyticsError> {
    // COPY takes no parameters: the values go in as literals (the day as
    // days since 1970-01-01, so that any date chrono has reads back).
    let since = start.map_or(String::new(), |day| {
        format!(" AND first_day >= DATE '1970-01-01' + ({})", epoch_day(day))
    });
    let statement = format!(
        "COPY (SELECT {id}first_day, last_day, purchase_days, gross_minor - refunded_minor,
                      first_day_spend_minor
               FROM member_spend
               WHERE program_id = {program} AND currency_code = {currency}{since})
         TO STDOUT (FORMAT binary)",
        id = if ids == Ids::Keep { "member_id, " } else { "" },
        program = sql_literal(program),
        currency = sql_literal(currency),
    );
    let end = epoch_day(end);
    let mut decoder = SpendDecoder::new(ids);
    let mut stream = conn.copy_out_raw(&statement).await?;
    while let Some(chunk) = stream.try_next().await? {
        decoder.feed(&chunk, end)?;
    }
    drop(stream);
    decoder.finish()
}

/// The day `day` days after 1970-01-01, when chrono has it.
fn date_of_epoch_day(day: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::TimeDelta::days(i64::from(day)))
}

/// Decodes `member_spend` rows of a binary COPY into summaries.
struct SpendDecoder {
    ids: Ids,
    rows: CopyRows,
    members: Vec<Uuid>,
    summaries: Vec<CustomerSummary>,
    first_day: Option<i32>,
}

impl SpendDecoder {
    fn new(ids: Ids) -> Self {
        // first_day, last_day (date: 4); purchase_days, net, first-day
        // spend (bigint: 8); each with its 4-byte length; the count.
        let base = 2 + 2 * (4 + 4) + 3 * (4 + 8);
        let rows = match ids {
            Ids::Keep => CopyRows::new(6, base + 4 + 16),
            Ids::Skip => CopyRows::new(5, base),
        };
        Self {
            ids,
            rows,
            members: Vec::new(),
            summaries: Vec::new(),
            first_day: None,
        }
    }

    fn feed(&mut self, chunk: &[u8], end: i32) -> Result<(), AnalyticsError> {
        let (ids, members, summaries, first_day) = (
            self.ids,
            &mut self.members,
            &mut self.summaries,
            &mut self.first_day,
        );
        self.rows.feed(chunk, &mut |f| {
            if ids == Ids::Keep {
                members.push(Uuid::from_bytes(f.next()?));
            }
            let first = f.day()?;
            let last = f.day()?;
            let (purchase_days, net, first_day_spend) = (f.int8()?, f.int8()?, f.int8()?);
            summaries.push(spend_summary(
                first,
                last,
                purchase_days,
                net,
                first_day_spend,
                end,
            ));
            *first_day = Some(first_day.map_or(first, |day| day.min(first)));
            Ok(())
        })
    }

    fn finish(self) -> Result<(Vec<Uuid>, Population), AnalyticsError> {
        self.rows.finish()?;
        Ok((
            self.members,
            Population {
                summaries: self.summaries,
                first_day: self.first_day.and_then(date_of_epoch_day),
            },
        ))
    }
}

/// Summaries from the purchase days up to the period's end.
pub async fn summaries_from_days(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<Vec<(Uuid, CustomerSummary)>, AnalyticsError> {
    Ok(read_days(conn, program, currency, start, end).await?.0)
}

/// Summaries from the purchase days, with the earliest first purchase day
/// among them (days since 1970-01-01).
async fn read_days(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<(Vec<(Uuid, CustomerSummary)>, Option<i32>), AnalyticsError> {
    let mut rows = sqlx::query(
        "SELECT member_id, day, spend_minor FROM member_days
         WHERE program_id = $1 AND currency_code = $2 AND day <= $3
         ORDER BY member_id, day",
    )
    .bind(program)
    .bind(currency)
    .bind(end)
    .fetch(conn);
    let mut out = Vec::new();
    let mut current: Option<Uuid> = None;
    let mut days: Vec<Purchase> = Vec::new();
    let end_day = epoch_day(end);
    let start_day = start.map(epoch_day);
    let mut earliest: Option<i32> = None;
    let mut flush =
        |member: Option<Uuid>, days: &mut Vec<Purchase>| -> Result<(), AnalyticsError> {
            if let (Some(member), Some(first)) = (member, days.first())
                && start_day.is_none_or(|s| first.day >= s)
            {
                let s = clv::summarize_customer(days, end_day)
                    .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("summary: {e}")))?;
                out.push((member, s));
                earliest = Some(earliest.map_or(first.day, |e| e.min(first.day)));
            }
            days.clear();
            Ok(())
        };
    while let Some(row) = rows.try_next().await? {
        let member: Uuid = row.get(0);
        let day: NaiveDate = row.get(1);
        let spend: i64 = row.get(2);
        if current != Some(member) {
            flush(current, &mut days)?;
            current = Some(member);
        }
        days.push(Purchase {
            day: epoch_day(day),
            // A day refunded beyond its purchases counts as 0.
            amount_minor: spend.max(0),
        });
    }
    flush(current, &mut days)?;
    Ok((out, earliest))
}

/// Both fits of one population.
struct Fits {
    bg: Result<BgNbdFit, ClvError>,
    /// Unique (x, t_x, T) rows BG/NBD was fitted on.
    likelihood_terms: usize,
    gg: Result<GammaGammaFit, ClvError>,
}

/// Fits BG/NBD and Gamma-Gamma at the same time, each on its own thread
/// from compression to optimum (they are independent given the
/// summaries); each fit's likelihood is itself evaluated on every core.
fn fit_both(summaries: &[CustomerSummary]) -> Fits {
    std::thread::scope(|scope| {
        let gg = scope.spawn(|| clv::fit_gamma_gamma(&clv::compress_spend(summaries)));
        let triples = clv::compress_triples(summaries);
        let bg = clv::fit_bg_nbd(&triples);
        Fits {
            bg,
            likelihood_terms: triples.len(),
            gg: gg
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    })
}

fn date_of(t: &Option<prost_types::Timestamp>, s: &Settings) -> Option<NaiveDate> {
    let t = t.as_ref()?;
    let at = chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)?;
    Some(s.day(at))
}

impl Analytics {
    /// `FitClvModel`.
    pub(crate) async fn fit_clv_model(
        &self,
        ctx: &RequestContext,
        request: &pb::FitClvModelRequest,
    ) -> Result<pb::FitClvModelResponse, AnalyticsError> {
        let mut v = Violations::new();
        check_request_id(&request.request_id, &mut v);
        if request.calibration_end.is_none() {
            v.add(
                "calibration_end",
                "required: the last day of the calibration period",
            );
        }
        v.finish()?;
        let program = ctx.program.as_str();
        let s = self.required_settings_of(program).await?;
        let end = date_of(&request.calibration_end, &s)
            .ok_or_else(|| AnalyticsError::field("calibration_end", "not a valid time"))?;
        let start =
            match &request.calibration_start {
                Some(_) => Some(date_of(&request.calibration_start, &s).ok_or_else(|| {
                    AnalyticsError::field("calibration_start", "not a valid time")
                })?),
                None => None,
            };
        if start.is_some_and(|start| start > end) {
            return Err(AnalyticsError::field(
                "calibration_start",
                "after calibration_end",
            ));
        }
        let key = RequestKey::new(ctx, "FitClvModel", &request.request_id);
        let fresh = match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(fresh) => fresh,
        };
        // The fit is stored in the key's transaction: a retry after a
        // crash finds either both or neither.
        let mut fresh = fresh;
        let model = self.fit(fresh.tx(), program, &s, start, end).await?;
        let response = pb::FitClvModelResponse {
            model: Some(model.pb),
        };
        fresh.commit(&response, None).await?;
        Ok(response)
    }

    /// Fits both models on the stored purchase days and keeps the fit, both
    /// over `conn` (the caller commits).
    pub(crate) async fn fit(
        &self,
        conn: &mut PgConnection,
        program: &str,
        s: &Settings,
        start: Option<NaiveDate>,
        end: NaiveDate,
    ) -> Result<Model, AnalyticsError> {
        let started = Instant::now();
        let Population {
            summaries: customers,
            first_day: earliest,
        } = summaries(conn, program, &s.currency, start, end).await?;
        let read = started.elapsed();
        let fits = tokio::task::spawn_blocking(move || fit_both(&customers))
            .await
            .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("CLV fit: {e}")))?;
        tracing::debug!(
            read_ms = read.as_millis() as u64,
            fit_ms = (started.elapsed() - read).as_millis() as u64,
            "CLV summaries read and models fitted"
        );
        let Fits {
            bg,
            likelihood_terms,
            gg,
        } = fits;
        let bg = bg.map_err(|e| AnalyticsError::Precondition {
            code: "MODEL_NOT_FITTED",
            message: format!("BG/NBD: {e}"),
        })?;
        let gg = gg.ok();
        let factor = minor_factor(&s.currency);
        let id = Uuid::now_v7();
        let now = self.now();
        let calibration_start = start.or(earliest).unwrap_or(end);
        let duration_ms = started.elapsed().as_millis() as i64;
        let gg_major = gg
            .as_ref()
            .map(|g| (g.params.p, g.params.q, g.params.gamma / factor));
        sqlx::query(
            "INSERT INTO clv_models (program_id, model_id, calibration_start, calibration_end,
                customers, likelihood_terms, spend_customers, r, alpha, a, b, bg_log_likelihood,
                p, q, gamma, gg_log_likelihood, duration_ms, fitted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(program)
        .bind(id)
        .bind(calibration_start)
        .bind(end)
        .bind(bg.customers as i64)
        .bind(likelihood_terms as i64)
        .bind(gg.as_ref().map_or(0, |g| g.customers as i64))
        .bind(bg.params.r)
        .bind(bg.params.alpha)
        .bind(bg.params.a)
        .bind(bg.params.b)
        .bind(bg.log_likelihood)
        .bind(gg_major.map(|g| g.0))
        .bind(gg_major.map(|g| g.1))
        .bind(gg_major.map(|g| g.2))
        .bind(gg.as_ref().map(|g| g.log_likelihood))
        .bind(duration_ms)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let model = latest_model(conn, program, s)
            .await?
            .ok_or_else(|| AnalyticsError::Internal(anyhow::anyhow!("the fit was not stored")))?;
        Ok(model)
    }

    /// `GetClvModel`.
    pub(crate) async fn get_clv_model(
        &self,
        ctx: &RequestContext,
        _request: &pb::GetClvModelRequest,
    ) -> Result<pb::GetClvModelResponse, AnalyticsError> {
        let mut conn = self.db.acquire().await?;
        let program = ctx.program.as_str();
        let s = self.required_settings(&mut conn, program).await?;
        let model = latest_model(&mut conn, program, &s)
            .await?
            .ok_or_else(|| AnalyticsError::not_computed("NO_MODEL", "no CLV model fitted yet"))?;
        Ok(pb::GetClvModelResponse {
            model: Some(model.pb),
        })
    }
}

/// The newest fit of `program`.
pub async fn latest_model(
    conn: &mut PgConnection,
    program: &str,
    s: &Settings,
) -> Result<Option<Model>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT model_id, calibration_start, calibration_end, customers, likelihood_terms,
                spend_customers, r, alpha, a, b, bg_log_likelihood, p, q, gamma,
                gg_log_likelihood, duration_ms, fitted_at
         FROM clv_models WHERE program_id = $1 ORDER BY fitted_at DESC, model_id DESC LIMIT 1",
    )
    .bind(program)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    let id: Uuid = row.get("model_id");
    let bg = BgNbdParams {
        r: row.get("r"),
        alpha: row.get("alpha"),
        a: row.get("a"),
        b: row.get("b"),
    };
    let gg: Option<(f64, f64, f64, f64)> = match (
        row.get::<Option<f64>, _>("p"),
        row.get::<Option<f64>, _>("q"),
        row.get::<Option<f64>, _>("gamma"),
        row.get::<Option<f64>, _>("gg_log_likelihood"),
    ) {
        (Some(p), Some(q), Some(g), Some(ll)) => Some((p, q, g, ll)),
        _ => None,
    };
    let factor = minor_factor(&s.currency);
    let start: NaiveDate = row.get("calibration_start");
    let end: NaiveDate = row.get("calibration_end");
    let pb = pb::ClvModel {
        model_id: id.to_string(),
        calibration_start: Some(ts(s.tz_midnight(start))),
        calibration_end: Some(ts(s.tz_midnight(end))),
        customers: row.get("customers"),
        likelihood_terms: row.get("likelihood_terms"),
        spend_customers: row.get("spend_customers"),
        bg_nbd: Some(pb::BgNbd {
            r: bg.r,
            alpha: bg.alpha,
            a: bg.a,
            b: bg.b,
            log_likelihood: row.get("bg_log_likelihood"),
        }),
        gamma_gamma: gg.map(|(p, q, gamma, ll)| pb::GammaGamma {
            p,
            q,
            gamma,
            log_likelihood: ll,
        }),
        duration_ms: row.get("duration_ms"),
        fitted_at: Some(ts(row.get("fitted_at"))),
    };
    Ok(Some(Model {
        id,
        bg,
        gg: gg.map(|(p, q, gamma, _)| GammaGammaParams {
            p,
            q,
            gamma: gamma * factor,
        }),
        pb,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy_rows::{COPY_SIGNATURE, PG_EPOCH_DAY};

    /// A binary COPY of `rows` (id, first, last, days, net, first-day
    /// spend; days since 1970-01-01), as Postgres sends it.
    fn copy_bytes(rows: &[(Uuid, i32, i32, i64, i64, i64)], ids: Ids) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        // A header extension of 3 bytes, which readers skip.
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"abc");
        for &(id, first, last, days, net, first_spend) in rows {
            let fields: i16 = if ids == Ids::Keep { 6 } else { 5 };
            out.extend_from_slice(&fields.to_be_bytes());
            if ids == Ids::Keep {
                out.extend_from_slice(&16u32.to_be_bytes());
                out.extend_from_slice(id.as_bytes());
            }
            for day in [first, last] {
                out.extend_from_slice(&4u32.to_be_bytes());
                out.extend_from_slice(&(day - PG_EPOCH_DAY).to_be_bytes());
            }
            for value in [days, net, first_spend] {
                out.extend_from_slice(&8u32.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn binary_copy_rows_decode_whatever_the_chunks() {
        let end = 20_000;
        let rows = [
            (Uuid::from_u128(1), 19_000, 19_300, 4, 10_000, 2_500),
            (Uuid::from_u128(2), 19_990, 19_990, 1, 700, 700),
            // A first day refunded beyond its purchases counts as 0.
            (Uuid::from_u128(3), 18_000, 19_999, 3, 5_000, -200),
        ];
        let expected = [
            spend_summary(19_000, 19_300, 4, 10_000, 2_500, end),
            spend_summary(19_990, 19_990, 1, 700, 700, end),
            spend_summary(18_000, 19_999, 3, 5_000, -200, end),
        ];
        assert_eq!(
            expected[0],
            CustomerSummary {
                frequency: 3,
                recency_days: 300,
                age_days: 1_000,
                repeat_spend_minor: 7_500,
            }
        );
        assert_eq!(expected[1].repeat_spend_minor, 0);
        assert_eq!(expected[2].repeat_spend_minor, 5_000);
        for ids in [Ids::Keep, Ids::Skip] {
            let bytes = copy_bytes(&rows, ids);
            for chunk in [1, 2, 7, 19, 30, bytes.len()] {
                let mut decoder = SpendDecoder::new(ids);
                for piece in bytes.chunks(chunk) {
                    decoder.feed(piece, end).unwrap();
                }
                let (members, population) = decoder.finish().unwrap();
                assert_eq!(population.summaries, expected, "chunks of {chunk}");
                assert_eq!(
                    population.first_day,
                    NaiveDate::from_ymd_opt(2019, 4, 14),
                    "day 18,000"
                );
                if ids == Ids::Keep {
                    assert_eq!(members, rows.map(|r| r.0));
                } else {
                    assert!(members.is_empty());
                }
            }
        }
    }

    #[test]
    fn a_cut_or_foreign_copy_is_an_error() {
        let rows = [(Uuid::from_u128(1), 19_000, 19_300, 4, 10_000, 2_500)];
        let bytes = copy_bytes(&rows, Ids::Keep);
        let mut cut = SpendDecoder::new(Ids::Keep);
        cut.feed(&bytes[..bytes.len() - 5], 20_000).unwrap();
        assert!(cut.finish().is_err());
        // Five fields where six are expected.
        let mut other = SpendDecoder::new(Ids::Keep);
        assert!(other.feed(&copy_bytes(&rows, Ids::Skip), 20_000).is_err());
        let mut text = SpendDecoder::new(Ids::Skip);
        assert!(
            text.feed(b"2026-01-05\t2026-02-01\t3\t100\t50\n", 20_000)
                .is_err()
        );
    }
}
