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

use std::time::Instant;

use chrono::NaiveDate;
use futures::TryStreamExt;
use laurel_analytics_models::clv::{
    self, BgNbdParams, CustomerSummary, GammaGammaParams, Purchase,
};
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey, check_request_id},
};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{Analytics, error::AnalyticsError, metrics::ts, rfm::epoch_day, settings::Settings};

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

/// Every customer's summary over the calibration period, with their id:
/// from the kept spend figures when the period covers every purchase (one
/// row per member), else from the purchase days.
pub async fn summaries(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<Vec<(Uuid, CustomerSummary)>, AnalyticsError> {
    let last: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT max(last_day) FROM member_spend WHERE program_id = $1 AND currency_code = $2",
    )
    .bind(program)
    .bind(currency)
    .fetch_one(&mut *conn)
    .await?;
    if last.is_some_and(|last| last <= end) {
        summaries_from_spend(conn, program, currency, start, end).await
    } else {
        summaries_from_days(conn, program, currency, start, end).await
    }
}

/// Summaries from `member_spend` and each member's first day: x = purchase
/// days - 1, t_x = last - first, T = end - first, repeat spend = net spend
/// less the first day's.
pub async fn summaries_from_spend(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<Vec<(Uuid, CustomerSummary)>, AnalyticsError> {
    let mut rows = sqlx::query(
        "SELECT s.member_id, s.first_day, s.last_day, s.purchase_days,
                s.gross_minor - s.refunded_minor AS net, d.spend_minor AS first_spend
         FROM member_spend s
         JOIN member_days d ON d.program_id = s.program_id AND d.member_id = s.member_id
              AND d.currency_code = s.currency_code AND d.day = s.first_day
         WHERE s.program_id = $1 AND s.currency_code = $2 AND ($3::date IS NULL OR s.first_day >= $3)",
    )
    .bind(program)
    .bind(currency)
    .bind(start)
    .fetch(conn);
    let end_day = epoch_day(end);
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await? {
        let member: Uuid = row.try_get(0)?;
        let first = epoch_day(row.try_get(1)?);
        let last = epoch_day(row.try_get(2)?);
        let days: i64 = row.try_get(3)?;
        let net: i64 = row.try_get(4)?;
        let first_spend: i64 = row.try_get(5)?;
        let x = u32::try_from(days.max(1) - 1).unwrap_or(u32::MAX);
        out.push((
            member,
            CustomerSummary {
                frequency: x,
                recency_days: u32::try_from(last - first).unwrap_or(0),
                age_days: u32::try_from(end_day - first).unwrap_or(0),
                repeat_spend_minor: if x == 0 {
                    0
                } else {
                    net.saturating_sub(first_spend.max(0)).max(0)
                },
            },
        ));
    }
    Ok(out)
}

/// Summaries from the purchase days up to the period's end.
pub async fn summaries_from_days(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    start: Option<NaiveDate>,
    end: NaiveDate,
) -> Result<Vec<(Uuid, CustomerSummary)>, AnalyticsError> {
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
    let mut flush =
        |member: Option<Uuid>, days: &mut Vec<Purchase>| -> Result<(), AnalyticsError> {
            if let (Some(member), Some(first)) = (member, days.first())
                && start_day.is_none_or(|s| first.day >= s)
            {
                let s = clv::summarize_customer(days, end_day)
                    .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("summary: {e}")))?;
                out.push((member, s));
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
    Ok(out)
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
        let mut conn = self.db.acquire().await?;
        let s = self.required_settings(&mut conn, program).await?;
        drop(conn);
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
        let model = self.fit(program, &s, start, end).await?;
        let response = pb::FitClvModelResponse {
            model: Some(model.pb),
        };
        fresh.commit(&response, None).await?;
        Ok(response)
    }

    /// Fits both models on the stored purchase days and keeps the fit.
    pub(crate) async fn fit(
        &self,
        program: &str,
        s: &Settings,
        start: Option<NaiveDate>,
        end: NaiveDate,
    ) -> Result<Model, AnalyticsError> {
        let started = Instant::now();
        let mut conn = self.db.acquire().await?;
        let customers = summaries(&mut conn, program, &s.currency, start, end).await?;
        let just: Vec<CustomerSummary> = customers.iter().map(|(_, s)| *s).collect();
        drop(customers);
        let triples = clv::compress_triples(&just);
        let bg = clv::fit_bg_nbd(&triples).map_err(|e| AnalyticsError::Precondition {
            code: "MODEL_NOT_FITTED",
            message: format!("BG/NBD: {e}"),
        })?;
        let spend = clv::compress_spend(&just);
        let gg = clv::fit_gamma_gamma(&spend).ok();
        let factor = minor_factor(&s.currency);
        let id = Uuid::now_v7();
        let now = self.now();
        let earliest: Option<NaiveDate> = sqlx::query_scalar(
            "SELECT min(day) FROM member_days WHERE program_id = $1 AND currency_code = $2",
        )
        .bind(program)
        .bind(&s.currency)
        .fetch_one(&mut *conn)
        .await?;
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
        .bind(triples.len() as i64)
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
        let model = latest_model(&mut conn, program, s)
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
