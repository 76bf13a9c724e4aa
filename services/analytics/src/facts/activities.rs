//! Purchases (members' and guests'), refunds, feedback, reviews and
//! complaints from `member.ActivityRecorded`.
//!
//! - A purchase is kept once per order id, with its lines, channel and
//!   store, on its local day; a member's purchase moves the member's spend
//!   figures in its currency (other currencies are kept apart).
//! - A refund is applied to the purchase it names, at most what is left of
//!   it and only in its currency; a refund of an unknown order is kept but
//!   moves no figure.
//! - Feedback is an NPS score (0-6 is negative); a review rated 1 or 2 is
//!   negative feedback; a custom activity named "complaint" is a complaint.

use chrono::{DateTime, Utc};
use laurel_proto::member::v1::{self as member, activity::Detail};
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ensure_member, optional_id, spend, time};
use crate::{
    Analytics,
    settings::{Settings, day_of},
};

/// The name of a custom activity that is a complaint.
pub const COMPLAINT: &str = "complaint";

/// A channel's name without the enum prefix ("" when unset).
fn channel_name(channel: i32) -> String {
    match member::SalesChannel::try_from(channel) {
        Ok(member::SalesChannel::Unspecified) | Err(_) => String::new(),
        Ok(c) => c
            .as_str_name()
            .trim_start_matches("SALES_CHANNEL_")
            .to_owned(),
    }
}

impl Analytics {
    pub(crate) async fn on_activity(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::ActivityRecorded,
    ) -> Result<(), HandlerError> {
        let Some(activity) = m.activity else {
            return Err(HandlerError::terminal(anyhow::anyhow!(
                "ActivityRecorded without an activity"
            )));
        };
        let program = event.program_id();
        let settings = self.settings(tx, program).await?;
        let fallback = event.occurred_at.unwrap_or_else(|| self.now());
        let member = optional_id(&activity.member_id)?;
        apply(tx, program, activity, settings.as_ref(), fallback).await?;
        match member {
            Some(member) => self.announce_change(member).await,
            None => Ok(()),
        }
    }
}

/// Keeps one activity (from an event or an export), once.
pub async fn apply(
    tx: &mut PgConnection,
    program: &str,
    activity: member::Activity,
    settings: Option<&Settings>,
    fallback_at: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let member = optional_id(&activity.member_id)?;
    let activity_id = Uuid::parse_str(&activity.activity_id)
        .map_err(|e| HandlerError::terminal(anyhow::anyhow!("bad activity id: {e}")))?;
    let at = time(&activity.occurred_at).unwrap_or(fallback_at);
    let day = day_of(settings, at);
    if let Some(member) = member {
        ensure_member(tx, program, member, at).await?;
    }
    let fact = Fact {
        program,
        activity_id,
        member,
        at,
        day,
    };
    match activity.detail {
        Some(Detail::Purchase(p)) => purchase(tx, &fact, p).await?,
        Some(Detail::Refund(r)) => refund(tx, &fact, r).await?,
        Some(Detail::Feedback(f)) => {
            let negative = f.nps_score <= 6;
            feedback(tx, &fact, "nps", f.nps_score, negative).await?;
        }
        Some(Detail::Review(r)) => {
            feedback(tx, &fact, "review", r.rating, r.rating <= 2).await?;
        }
        Some(Detail::Custom(c)) if c.name.eq_ignore_ascii_case(COMPLAINT) => {
            feedback(tx, &fact, COMPLAINT, 0, false).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Where and when an activity happened.
struct Fact<'a> {
    program: &'a str,
    activity_id: Uuid,
    member: Option<Uuid>,
    at: DateTime<Utc>,
    day: chrono::NaiveDate,
}

async fn purchase(
    tx: &mut PgConnection,
    f: &Fact<'_>,
    p: member::Purchase,
) -> Result<(), sqlx::Error> {
    let Some(total) = p.total.filter(|t| t.amount_minor >= 0) else {
        return Ok(());
    };
    let currency = total.currency_code.trim().to_ascii_uppercase();
    let new: Option<i32> = sqlx::query_scalar(
        "INSERT INTO purchases (program_id, order_id, activity_id, member_id, guest, currency_code,
            total_minor, occurred_at, day, channel, store_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (program_id, order_id) DO NOTHING RETURNING 1",
    )
    .bind(f.program)
    .bind(&p.order_id)
    .bind(f.activity_id)
    .bind(f.member)
    .bind(f.member.is_none())
    .bind(&currency)
    .bind(total.amount_minor)
    .bind(f.at)
    .bind(f.day)
    .bind(channel_name(p.channel))
    .bind(&p.store_id)
    .fetch_optional(&mut *tx)
    .await?;
    if new.is_none() {
        return Ok(());
    }
    if !p.lines.is_empty() {
        let n = p.lines.len();
        let mut lines = Vec::with_capacity(n);
        let mut skus = Vec::with_capacity(n);
        let mut categories = Vec::with_capacity(n);
        let mut quantities = Vec::with_capacity(n);
        let mut prices = Vec::with_capacity(n);
        for (i, l) in p.lines.iter().enumerate() {
            lines.push(i as i32);
            skus.push(l.sku.as_str());
            categories.push(l.category.as_str());
            quantities.push(l.quantity);
            prices.push(l.unit_price_minor);
        }
        sqlx::query(
            "INSERT INTO purchase_lines (program_id, order_id, line, member_id, day, sku, category,
                quantity, unit_price_minor)
             SELECT $1, $2, l, $3, $4, s, c, q, u
             FROM unnest($5::int[], $6::text[], $7::text[], $8::bigint[], $9::bigint[]) AS t(l, s, c, q, u)",
        )
        .bind(f.program)
        .bind(&p.order_id)
        .bind(f.member)
        .bind(f.day)
        .bind(&lines)
        .bind(&skus)
        .bind(&categories)
        .bind(&quantities)
        .bind(&prices)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(member) = f.member {
        spend::add_purchase(
            tx,
            f.program,
            &spend::Purchase {
                member,
                currency: &currency,
                total: total.amount_minor,
                at: f.at,
                day: f.day,
            },
        )
        .await?;
    }
    Ok(())
}

async fn refund(tx: &mut PgConnection, f: &Fact<'_>, r: member::Refund) -> Result<(), sqlx::Error> {
    let Some(amount) = r.amount.filter(|a| a.amount_minor > 0) else {
        return Ok(());
    };
    let currency = amount.currency_code.trim().to_ascii_uppercase();
    // The purchase it refunds, locked, in the refund's currency.
    let purchase: Option<(Option<Uuid>, chrono::NaiveDate, i64)> = sqlx::query_as(
        "SELECT member_id, day, total_minor - refunded_minor FROM purchases
         WHERE program_id = $1 AND order_id = $2 AND currency_code = $3 FOR UPDATE",
    )
    .bind(f.program)
    .bind(&r.order_id)
    .bind(&currency)
    .fetch_optional(&mut *tx)
    .await?;
    let applied = purchase
        .as_ref()
        .map_or(0, |p| amount.amount_minor.min(p.2.max(0)));
    let new: Option<i32> = sqlx::query_scalar(
        "INSERT INTO refunds (program_id, activity_id, order_id, member_id, currency_code,
            amount_minor, applied, occurred_at, day)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (program_id, activity_id) DO NOTHING RETURNING 1",
    )
    .bind(f.program)
    .bind(f.activity_id)
    .bind(&r.order_id)
    .bind(f.member)
    .bind(&currency)
    .bind(if purchase.is_some() {
        applied
    } else {
        amount.amount_minor
    })
    .bind(purchase.is_some())
    .bind(f.at)
    .bind(f.day)
    .fetch_optional(&mut *tx)
    .await?;
    let (Some(_), Some((owner, day, _))) = (new, purchase) else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE purchases SET refunded_minor = refunded_minor + $3
         WHERE program_id = $1 AND order_id = $2",
    )
    .bind(f.program)
    .bind(&r.order_id)
    .bind(applied)
    .execute(&mut *tx)
    .await?;
    if let Some(owner) = owner {
        spend::add_refund(tx, f.program, owner, &currency, day, applied).await?;
    }
    Ok(())
}

async fn feedback(
    tx: &mut PgConnection,
    f: &Fact<'_>,
    kind: &str,
    score: i32,
    negative: bool,
) -> Result<(), sqlx::Error> {
    let new: Option<i32> = sqlx::query_scalar(
        "INSERT INTO feedback (program_id, activity_id, member_id, kind, score, occurred_at, day)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (program_id, activity_id) DO NOTHING RETURNING 1",
    )
    .bind(f.program)
    .bind(f.activity_id)
    .bind(f.member)
    .bind(kind)
    .bind(score)
    .bind(f.at)
    .bind(f.day)
    .fetch_optional(&mut *tx)
    .await?;
    let (Some(_), Some(member)) = (new, f.member) else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE members SET
           negative_feedback = negative_feedback + $3::int,
           complaints = complaints + ($4 = 'complaint')::int,
           latest_nps = CASE WHEN $4 = 'nps' AND (latest_feedback_at IS NULL OR latest_feedback_at <= $5)
                             THEN $6 ELSE latest_nps END,
           latest_feedback_at = CASE WHEN $4 = 'nps' THEN GREATEST(latest_feedback_at, $5)
                                     ELSE latest_feedback_at END
         WHERE program_id = $1 AND member_id = $2",
    )
    .bind(f.program)
    .bind(member)
    .bind(i32::from(negative))
    .bind(kind)
    .bind(f.at)
    .bind(score)
    .execute(tx)
    .await?;
    Ok(())
}
