//! Paid membership: plans, subscriptions, renewals, cancellations, expiry
//! and reminders.
//!
//! A subscription's periods are anchored at its start: period `n` ends `n`
//! calendar months (or years) after `started_at` (UTC), so a subscription
//! started on 31 January ends its periods on 28/29 February, 31 March,
//! 30 April... without drifting. Price, billing period, grace and reminder
//! days are the plan's when subscribing; the benefits and tier floor are the
//! plan's as it stands.
//!
//! Statuses: ACTIVE, then at each period end either renewed (still ACTIVE),
//! IN_GRACE for the plan's grace days (benefits continue; a renewal then is
//! `late`), then EXPIRED. Cancelling at period end makes it CANCELLING until
//! the period end, when it becomes CANCELLED; cancelling now makes it
//! CANCELLED at once. Every subscription that stops publishes exactly one
//! `SubscriptionEnded` (expired or not), so analytics count churn from one
//! event.

mod api;
mod events;
pub mod jobs;
pub(crate) mod validate;

use chrono::{DateTime, Months, Utc};
use laurel_proto::{common::v1::Money, tier::v1 as pb};
use laurel_runtime::{
    context::ProgramId,
    events::outbox::{self, NewEvent},
};
use prost::Name;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::benefits::{LIVE, timestamp};

/// The outbox source of the tier service's events.
pub(crate) const SOURCE: &str = "tier";

/// The tier floors of the member's subscriptions that give benefits now
/// (active, cancelling or in grace).
pub async fn floors(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT DISTINCT p.tier_floor
         FROM subscriptions s
         JOIN plans p ON p.program_id = s.program_id AND p.code = s.plan_code
         WHERE s.program_id = $1 AND s.member_id = $2 AND s.status IN {LIVE}
           AND p.tier_floor <> ''
         ORDER BY 1"
    ))
    .bind(program)
    .bind(member)
    .fetch_all(tx)
    .await
}

/// [`floors`] of many members at once (for a re-evaluation chunk): only
/// members with a floor are in the map.
pub async fn floors_of(
    tx: &mut PgConnection,
    program: &str,
    members: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<String>>, sqlx::Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(&format!(
        "SELECT DISTINCT s.member_id, p.tier_floor
         FROM subscriptions s
         JOIN plans p ON p.program_id = s.program_id AND p.code = s.plan_code
         WHERE s.program_id = $1 AND s.member_id = ANY($2) AND s.status IN {LIVE}
           AND p.tier_floor <> ''
         ORDER BY 1, 2"
    ))
    .bind(program)
    .bind(members)
    .fetch_all(tx)
    .await?;
    let mut map = std::collections::HashMap::<Uuid, Vec<String>>::new();
    for (member, floor) in rows {
        map.entry(member).or_default().push(floor);
    }
    Ok(map)
}

/// Where a subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Paid and running.
    Active,
    /// Cancelled at period end, running until then.
    Cancelling,
    /// Period ended unrenewed, within grace.
    InGrace,
    /// Ended unrenewed.
    Expired,
    /// Cancelled (now, or at a period end that came).
    Cancelled,
}

impl Status {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Cancelling => "cancelling",
            Self::InGrace => "in_grace",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a stored word (the table's CHECK allows no other).
    pub fn parse(word: &str) -> Self {
        match word {
            "active" => Self::Active,
            "cancelling" => Self::Cancelling,
            "in_grace" => Self::InGrace,
            "expired" => Self::Expired,
            _ => Self::Cancelled,
        }
    }

    /// The proto enum.
    pub fn to_proto(self) -> pb::SubscriptionStatus {
        match self {
            Self::Active => pb::SubscriptionStatus::Active,
            Self::Cancelling => pb::SubscriptionStatus::Cancelling,
            Self::InGrace => pb::SubscriptionStatus::InGrace,
            Self::Expired => pb::SubscriptionStatus::Expired,
            Self::Cancelled => pb::SubscriptionStatus::Cancelled,
        }
    }

    /// Whether it gives the plan's benefits and floor.
    pub fn live(self) -> bool {
        matches!(self, Self::Active | Self::Cancelling | Self::InGrace)
    }
}

/// The end of period `n` (from 1) of a subscription started at `anchor`;
/// `None` past the calendar's end.
pub fn period_end(
    anchor: DateTime<Utc>,
    billing: pb::BillingPeriod,
    n: u32,
) -> Option<DateTime<Utc>> {
    let months = match billing {
        pb::BillingPeriod::Annual => 12u32.checked_mul(n)?,
        _ => n,
    };
    anchor.checked_add_months(Months::new(months))
}

/// Why a renewal or cancellation is refused: the ErrorInfo reason and what
/// to say.
pub type Refusal = (&'static str, &'static str);

const ENDED: Refusal = ("SUBSCRIPTION_ENDED", "the subscription has ended");

/// Whether a subscription can be renewed at `now`, and whether the renewal
/// is late (in the grace period). A period end or grace end the jobs have
/// not reached yet counts as reached.
pub fn renewal(
    status: Status,
    now: DateTime<Utc>,
    period_end: DateTime<Utc>,
    grace_until: Option<DateTime<Utc>>,
    grace_days: i32,
) -> Result<bool, Refusal> {
    let grace_end = grace_until
        .unwrap_or_else(|| period_end + chrono::Duration::days(i64::from(grace_days.max(0))));
    match status {
        Status::Expired | Status::Cancelled => Err(ENDED),
        _ if now < period_end => Ok(false),
        Status::Cancelling => Err(ENDED),
        Status::Active | Status::InGrace if now < grace_end => Ok(true),
        _ => Err(ENDED),
    }
}

/// The status a cancellation in `mode` moves a subscription to. A
/// subscription in grace has no paid period left, so cancelling it at
/// period end takes effect at once.
pub fn cancellation(status: Status, mode: pb::CancelMode) -> Result<Status, Refusal> {
    match (status, mode) {
        (Status::Expired | Status::Cancelled, _) => Err(ENDED),
        (Status::Cancelling, pb::CancelMode::AtPeriodEnd) => Err((
            "SUBSCRIPTION_CANCELLING",
            "the subscription is already cancelled at period end",
        )),
        (Status::Active, pb::CancelMode::AtPeriodEnd) => Ok(Status::Cancelling),
        _ => Ok(Status::Cancelled),
    }
}

/// What a period end does to a live subscription: grace (when the plan
/// gives some), expiry, or a cancellation taking effect. `None` for a
/// subscription a period end does not concern.
pub fn at_period_end(status: Status, grace_days: i32) -> Option<Status> {
    match status {
        Status::Active if grace_days > 0 => Some(Status::InGrace),
        Status::Active => Some(Status::Expired),
        Status::Cancelling => Some(Status::Cancelled),
        _ => None,
    }
}

/// A stored subscription.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct Row {
    pub subscription_id: Uuid,
    pub program_id: String,
    pub member_id: Uuid,
    pub plan_code: String,
    pub status: String,
    pub currency_code: String,
    pub price_minor: i64,
    pub billing_period: i16,
    pub grace_days: i32,
    pub reminder_days: i32,
    pub started_at: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub grace_until: Option<DateTime<Utc>>,
    pub renewals: i32,
    pub payment_reference: Option<String>,
    pub cancel_reason: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    pub reminded_for: Option<DateTime<Utc>>,
}

/// Every column of a [`Row`].
pub(crate) const COLUMNS: &str = "subscription_id, program_id, member_id, plan_code, status,
    currency_code, price_minor, billing_period, grace_days, reminder_days, started_at,
    current_period_start, current_period_end, grace_until, renewals, payment_reference,
    cancel_reason, ended_at, reminded_for";

impl Row {
    pub fn status(&self) -> Status {
        Status::parse(&self.status)
    }

    pub fn billing(&self) -> pb::BillingPeriod {
        pb::BillingPeriod::try_from(i32::from(self.billing_period))
            .unwrap_or(pb::BillingPeriod::Monthly)
    }

    pub fn to_proto(&self) -> pb::Subscription {
        pb::Subscription {
            subscription_id: self.subscription_id.to_string(),
            member_id: self.member_id.to_string(),
            plan_code: self.plan_code.clone(),
            status: self.status().to_proto() as i32,
            price: Some(Money {
                currency_code: self.currency_code.clone(),
                amount_minor: self.price_minor,
            }),
            billing_period: i32::from(self.billing_period),
            started_at: Some(timestamp(self.started_at)),
            current_period_start: Some(timestamp(self.current_period_start)),
            current_period_end: Some(timestamp(self.current_period_end)),
            grace_until: self.grace_until.map(timestamp),
            renewals: self.renewals,
            payment_reference: self.payment_reference.clone().unwrap_or_default(),
            ended_at: self.ended_at.map(timestamp),
        }
    }

    pub fn facts(&self, occurred_at: DateTime<Utc>) -> pb::SubscriptionFacts {
        pb::SubscriptionFacts {
            subscription: Some(self.to_proto()),
            occurred_at: Some(timestamp(occurred_at)),
        }
    }
}

/// Reads a subscription under its row lock.
pub(crate) async fn lock(
    tx: &mut PgConnection,
    program: &str,
    id: Uuid,
) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscriptions
         WHERE program_id = $1 AND subscription_id = $2 FOR UPDATE"
    ))
    .bind(program)
    .bind(id)
    .fetch_optional(tx)
    .await
}

/// Writes the mutable state of `row` back.
pub(crate) async fn save(
    tx: &mut PgConnection,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE subscriptions
         SET member_id = $2, status = $3, current_period_start = $4, current_period_end = $5,
             grace_until = $6, renewals = $7, payment_reference = $8, cancel_reason = $9,
             ended_at = $10, reminded_for = $11, updated_at = $12
         WHERE subscription_id = $1",
    )
    .bind(row.subscription_id)
    .bind(row.member_id)
    .bind(&row.status)
    .bind(row.current_period_start)
    .bind(row.current_period_end)
    .bind(row.grace_until)
    .bind(row.renewals)
    .bind(&row.payment_reference)
    .bind(&row.cancel_reason)
    .bind(row.ended_at)
    .bind(row.reminded_for)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Writes a subscription event about `row`'s member.
pub(crate) async fn publish<P: prost::Message + Name>(
    tx: &mut PgConnection,
    row: &Row,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    payload: &P,
) -> Result<(), sqlx::Error> {
    let program = ProgramId::parse(&row.program_id).map_err(|e| sqlx::Error::Decode(e.into()))?;
    outbox::enqueue(
        tx,
        SOURCE,
        NewEvent {
            program: &program,
            member_id: Some(row.member_id),
            occurred_at,
            recorded_at,
            card_version: None,
            payload,
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    #[test]
    fn periods_are_calendar_months_or_years_from_the_start() {
        let start = at(2026, 1, 31);
        assert_eq!(
            period_end(start, pb::BillingPeriod::Monthly, 1),
            Some(at(2026, 2, 28))
        );
        assert_eq!(
            period_end(start, pb::BillingPeriod::Monthly, 2),
            Some(at(2026, 3, 31))
        );
        assert_eq!(
            period_end(at(2028, 2, 29), pb::BillingPeriod::Annual, 1),
            Some(at(2029, 2, 28))
        );
        assert_eq!(
            period_end(start, pb::BillingPeriod::Annual, 2),
            Some(at(2028, 1, 31))
        );
    }

    #[test]
    fn renewals_are_on_time_before_the_period_end_and_late_in_grace() {
        let end = at(2026, 2, 1);
        let before = at(2026, 1, 20);
        let after = at(2026, 2, 3);
        assert_eq!(renewal(Status::Active, before, end, None, 0), Ok(false));
        assert_eq!(renewal(Status::Cancelling, before, end, None, 0), Ok(false));
        assert_eq!(
            renewal(Status::InGrace, after, end, Some(at(2026, 2, 8)), 7),
            Ok(true)
        );
        // The grace job has not run yet: still in grace by the clock.
        assert_eq!(renewal(Status::Active, after, end, None, 7), Ok(true));
        assert!(renewal(Status::Active, after, end, None, 0).is_err());
        assert!(
            renewal(
                Status::InGrace,
                at(2026, 2, 9),
                end,
                Some(at(2026, 2, 8)),
                7
            )
            .is_err()
        );
        assert!(renewal(Status::Cancelling, after, end, None, 7).is_err());
        assert!(renewal(Status::Expired, before, end, None, 7).is_err());
        assert!(renewal(Status::Cancelled, before, end, None, 7).is_err());
    }

    #[test]
    fn cancellations_move_live_subscriptions_only() {
        use pb::CancelMode::{AtPeriodEnd, Now};
        assert_eq!(
            cancellation(Status::Active, AtPeriodEnd),
            Ok(Status::Cancelling)
        );
        assert_eq!(cancellation(Status::Active, Now), Ok(Status::Cancelled));
        assert_eq!(cancellation(Status::Cancelling, Now), Ok(Status::Cancelled));
        assert_eq!(
            cancellation(Status::InGrace, AtPeriodEnd),
            Ok(Status::Cancelled)
        );
        assert_eq!(
            cancellation(Status::Cancelling, AtPeriodEnd).unwrap_err().0,
            "SUBSCRIPTION_CANCELLING"
        );
        assert_eq!(
            cancellation(Status::Expired, Now).unwrap_err().0,
            "SUBSCRIPTION_ENDED"
        );
    }

    #[test]
    fn a_period_end_starts_grace_expires_or_ends_a_cancellation() {
        assert_eq!(at_period_end(Status::Active, 3), Some(Status::InGrace));
        assert_eq!(at_period_end(Status::Active, 0), Some(Status::Expired));
        assert_eq!(
            at_period_end(Status::Cancelling, 3),
            Some(Status::Cancelled)
        );
        assert_eq!(at_period_end(Status::InGrace, 3), None);
    }

    #[test]
    fn statuses_round_trip_and_live_ones_give_benefits() {
        for s in [
            Status::Active,
            Status::Cancelling,
            Status::InGrace,
            Status::Expired,
            Status::Cancelled,
        ] {
            assert_eq!(Status::parse(s.as_str()), s);
            assert_eq!(s.live(), LIVE.contains(&format!("'{}'", s.as_str())));
        }
    }
}
