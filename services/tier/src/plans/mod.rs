//! Paid membership: plans, subscriptions, renewals, cancellations, expiry
//! and reminders.

mod api;
mod events;
pub mod jobs;

use sqlx::PgConnection;
use uuid::Uuid;

/// The tier floors of the member's subscriptions that give benefits now
/// (active, cancelling or in grace).
pub async fn floors(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    let _ = (tx, program, member);
    Ok(Vec::new())
}
