//! `request_id` idempotency for mutating RPCs, stored in the service's own
//! schema in the same transaction as the effect.
//!
//! ```text
//! let mut tx = pool.begin().await?;
//! match idempotency::claim(&mut tx, &program, "CreateMember", &req.request_id, &req).await? {
//!     Claim::Replay(response) => return decode(response),
//!     Claim::New(key) => { /* the effect, in tx */ key.complete(&mut tx, &bytes, Some(member_id)).await?; }
//! }
//! tx.commit().await?;
//! ```
//!
//! A concurrent request with the same key waits on the key's row until the
//! first commits, then replays its result.

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::{context::ProgramId, error::Violations};

/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Checks a `request_id` field.
pub fn check_request_id(request_id: &str, violations: &mut Violations) {
    if request_id.trim().is_empty() {
        violations.add("request_id", "required: a client-chosen idempotency key");
    } else if request_id.len() > MAX_REQUEST_ID_LEN {
        violations.add("request_id", "at most 128 characters");
    }
}

/// Outcome of claiming a key.
#[derive(Debug)]
pub enum Claim {
    /// First time: do the effect, then [`Key::complete`].
    New(Key),
    /// Seen before with the same request: the stored response.
    Replay(Vec<u8>),
}

/// Why a key could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key was used with a different request.
    #[error("request_id was used with a different request")]
    Mismatch,
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A claimed key awaiting its response.
#[derive(Debug)]
#[must_use = "complete the key in the same transaction as the effect"]
pub struct Key {
    program: ProgramId,
    operation: &'static str,
    request_id: String,
}

/// The digest of a request, compared on replays.
pub fn request_hash(request: &impl prost::Message) -> Vec<u8> {
    Sha256::digest(request.encode_to_vec()).to_vec()
}

/// Claims `request_id` for `operation` within `tx`.
pub async fn claim(
    tx: &mut PgConnection,
    program: &ProgramId,
    operation: &'static str,
    request_id: &str,
    request: &impl prost::Message,
) -> Result<Claim, IdempotencyError> {
    let hash = request_hash(request);
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (program_id, operation, request_id, request_hash)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(program.as_str())
    .bind(operation)
    .bind(request_id)
    .bind(&hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New(Key {
            program: program.clone(),
            operation,
            request_id: request_id.to_owned(),
        }));
    }
    let (stored_hash, response): (Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT request_hash, response FROM idempotency_keys
         WHERE program_id = $1 AND operation = $2 AND request_id = $3",
    )
    .bind(program.as_str())
    .bind(operation)
    .bind(request_id)
    .fetch_one(&mut *tx)
    .await?;
    match response {
        Some(response) if stored_hash == hash => Ok(Claim::Replay(response)),
        _ => Err(IdempotencyError::Mismatch),
    }
}

impl Key {
    /// Stores the response bytes (a service encrypts them when they hold
    /// personal data) and the member they concern, so erasing the member can
    /// delete them; call in the effect's transaction before commit.
    pub async fn complete(
        self,
        tx: &mut PgConnection,
        response: &[u8],
        subject: Option<uuid::Uuid>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE idempotency_keys SET response = $4, subject = $5
             WHERE program_id = $1 AND operation = $2 AND request_id = $3",
        )
        .bind(self.program.as_str())
        .bind(self.operation)
        .bind(&self.request_id)
        .bind(response)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
