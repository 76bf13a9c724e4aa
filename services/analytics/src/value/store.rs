//! Stored figures of a member.

use sqlx::PgConnection;
use uuid::Uuid;

/// Forgets every computed figure of a member (merged away or erased).
pub async fn forget(tx: &mut PgConnection, program: &str, member: Uuid) -> Result<(), sqlx::Error> {
    for table in ["rfm_scores", "member_values"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE program_id = $1 AND member_id = $2"
        ))
        .bind(program)
        .bind(member)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
