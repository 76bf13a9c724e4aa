//! The tier ladder: versions, validation, the version in force.

mod api;
pub mod validate;

use laurel_proto::tier::v1 as pb;
use prost::Message;

/// The ladder in force for `program` (its highest version), if any.
pub async fn in_force<'e>(
    db: impl sqlx::PgExecutor<'e>,
    program: &str,
) -> Result<Option<pb::Ladder>, sqlx::Error> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT ladder FROM ladders WHERE program_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(program)
    .fetch_optional(db)
    .await?;
    stored
        .map(|bytes| pb::Ladder::decode(bytes.as_slice()))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
