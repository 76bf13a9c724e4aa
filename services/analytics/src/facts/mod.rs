//! The facts: every other service's events kept in this service's schema,
//! each in the consumer's transaction with the inbox row, so a redelivered
//! event counts once.
//!
//! - member: enrolments, purchases (members' and guests'), refunds,
//!   feedback, reviews and complaints, merges and erasure;
//! - points: every movement (earned, redeemed, expired);
//! - tier: tier changes and paid-membership events.
//!
//! A member's spend figures ([`spend`]) move with each purchase and refund
//! and can be rebuilt from the facts alone; the two always agree.

pub mod activities;
mod members;
mod points;
pub mod spend;
mod tiers;

use chrono::{DateTime, Utc};
use laurel_proto::{member::v1 as member, points::v1 as ppb, tier::v1 as tpb};
use laurel_runtime::events::{handler::HandlerError, router::Router};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Analytics;

/// A member id from an event; a malformed one is the producer's fault.
pub(crate) fn id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|e| HandlerError::terminal(anyhow::anyhow!("bad member id {raw:?}: {e}")))
}

/// A member id that may be empty (guests).
pub(crate) fn optional_id(raw: &str) -> Result<Option<Uuid>, HandlerError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        id(raw).map(Some)
    }
}

/// A protobuf time in whole microseconds (what Postgres stores).
pub fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .and_then(|at| DateTime::from_timestamp_micros(at.timestamp_micros()))
}

/// Adds the member if never seen, enrolled at `at` until its enrolment
/// says otherwise.
pub(crate) async fn ensure_member(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at) VALUES ($1, $2, $3)
         ON CONFLICT (program_id, member_id) DO NOTHING",
    )
    .bind(program)
    .bind(member)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

macro_rules! route {
    ($router:expr, $a:expr, $ty:ty, $method:ident) => {{
        let a = $a.clone();
        $router.on(move |tx, event, m: $ty| {
            let a = a.clone();
            Box::pin(async move { a.$method(tx, event, m).await })
        })
    }};
}

/// The consumer's routes.
pub fn router(a: Analytics) -> Router {
    let r = Router::new();
    let r = route!(r, a, member::MemberCreated, on_member_created);
    let r = route!(r, a, member::ActivityRecorded, on_activity);
    let r = route!(r, a, member::MemberMerged, on_member_merged);
    let r = route!(r, a, member::MemberErased, on_member_erased);
    let r = route!(r, a, ppb::PointsMoved, on_points_moved);
    let r = route!(r, a, tpb::TierChanged, on_tier_changed);
    let r = route!(r, a, tpb::SubscriptionStarted, on_subscription_started);
    let r = route!(r, a, tpb::SubscriptionRenewed, on_subscription_renewed);
    let r = route!(r, a, tpb::SubscriptionRenewalDue, on_subscription_due);
    let r = route!(r, a, tpb::SubscriptionCancelled, on_subscription_cancelled);
    route!(r, a, tpb::SubscriptionEnded, on_subscription_ended)
}
