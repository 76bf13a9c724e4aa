//! Stored figures of a member.

use sqlx::PgConnection;
use uuid::Uuid;

/// Forgets every computed figure of a member (merged away or erased).
///
/// The stored RFM run keeps the member's packed record (rewriting a chunk
/// of 65,536 members for one would cost more than every reader passing
/// over members that are no longer `active`, which they do: see
/// `crate::rfm::stored`); the next run leaves them out, as they have no
/// spend left.
pub async fn forget(tx: &mut PgConnection, program: &str, member: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM member_values WHERE program_id = $1 AND member_id = $2")
        .bind(program)
        .bind(member)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
