//! `request_id` idempotency for mutating RPCs: one combinator around the
//! effect's transaction that claims the key, and stores the response when
//! the effect commits.
//!
//! ```text
//! match idempotency.begin(&db, key, &request, codec).await? {
//!     Begun::Replay(response) => return Ok(response),
//!     Begun::Fresh(mut fresh) => {
//!         let response = effect(fresh.tx()).await?;   // in the key's transaction
//!         fresh.commit(&response, subject).await?;    // stores it, then commits
//!     }
//! }
//! ```
//!
//! The effect can only commit through [`Fresh::commit`], which stores the
//! response in the same transaction: a forgotten key is a rolled-back effect.
//! Keys are scoped to (programme, caller, operation, request_id), so two
//! callers that pick the same id never see each other's responses. A key is
//! remembered for a window (24 hours by default, as Stripe does); a replay
//! after that is a new request. A concurrent request with the same key waits
//! on the key's row until the first commits, then replays its result.

use std::{marker::PhantomData, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgConnection;

use crate::{
    clock::SharedClock,
    context::{Caller, ProgramId},
    db::{Db, Tx},
    error::Violations,
};

/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// How long a key is remembered by default.
pub const DEFAULT_WINDOW: Duration = Duration::hours(24);

/// Checks a `request_id` field.
pub fn check_request_id(request_id: &str, violations: &mut Violations) {
    if request_id.trim().is_empty() {
        violations.add("request_id", "required: a client-chosen idempotency key");
    } else if request_id.len() > MAX_REQUEST_ID_LEN {
        violations.add("request_id", "at most 128 characters");
    }
}

/// Why a key could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key was used with a different request.
    #[error("request_id was used with a different request")]
    Mismatch,
    /// The stored response could not be read back.
    #[error("stored response is unreadable")]
    Unreadable,
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How a service stores its responses: plain protobuf, or sealed when they
/// hold personal data.
pub trait ResponseCodec<R>: Send + Sync {
    /// The bytes to store for `response`.
    fn encode(&self, program: &ProgramId, response: &R) -> Vec<u8>;
    /// The response back from stored bytes; `None` when unreadable.
    fn decode(&self, program: &ProgramId, stored: &[u8]) -> Option<R>;
}

/// Stores responses as plain protobuf.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl<R: prost::Message + Default> ResponseCodec<R> for Plain {
    fn encode(&self, _: &ProgramId, response: &R) -> Vec<u8> {
        response.encode_to_vec()
    }
    fn decode(&self, _: &ProgramId, stored: &[u8]) -> Option<R> {
        R::decode(stored).ok()
    }
}

/// Who asks for what: the scope of one idempotency key.
#[derive(Clone, Copy, Debug)]
pub struct RequestKey<'a> {
    /// Programme of the request.
    pub program: &'a ProgramId,
    /// The authenticated caller.
    pub caller: &'a Caller,
    /// The RPC, for example `CreateMember`.
    pub operation: &'static str,
    /// The client-chosen id.
    pub request_id: &'a str,
}

/// The idempotency store of one service.
#[derive(Clone)]
pub struct Idempotency {
    window: Duration,
    digest_key: Arc<[u8]>,
    clock: SharedClock,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The outcome of [`Idempotency::begin`].
pub enum Begun<R, C> {
    /// Seen before with the same request: the stored response.
    Replay(R),
    /// First time (or the key expired): run the effect, then commit.
    Fresh(Fresh<R, C>),
}

/// A claimed key and the transaction its effect runs in.
#[must_use = "the effect commits only through Fresh::commit"]
pub struct Fresh<R, C> {
    tx: Tx,
    program: ProgramId,
    caller: String,
    operation: &'static str,
    request_id: String,
    codec: C,
    response: PhantomData<fn() -> R>,
}

impl Idempotency {
    /// A store remembering keys for `window`; request digests are keyed
    /// HMACs under `digest_key`, so a stored digest of a request holding
    /// personal data cannot be reversed by guessing.
    pub fn new(window: Duration, digest_key: &[u8], clock: SharedClock) -> Self {
        Self {
            window,
            digest_key: digest_key.into(),
            clock,
        }
    }

    /// The keyed digest of a request, compared on replays.
    pub fn digest(&self, request: &impl prost::Message) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.digest_key).expect("hmac takes any key");
        mac.update(&request.encode_to_vec());
        mac.finalize().into_bytes().to_vec()
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Opens the effect's transaction and claims the key in it.
    pub async fn begin<R, C: ResponseCodec<R>>(
        &self,
        db: &Db,
        key: RequestKey<'_>,
        request: &impl prost::Message,
        codec: C,
    ) -> Result<Begun<R, C>, IdempotencyError> {
        let mut tx = db.begin().await?;
        let hash = self.digest(request);
        let now = self.now();
        let caller = key.caller.name();
        // A new key, or an expired one taken over, returns a row; a live key
        // returns none (after waiting for an in-flight holder to commit).
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (program_id, caller, operation, request_id, request_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (program_id, caller, operation, request_id) DO UPDATE
               SET request_hash = EXCLUDED.request_hash, response = NULL, subject = NULL,
                   created_at = EXCLUDED.created_at
               WHERE idempotency_keys.created_at <= $7
             RETURNING 1",
        )
        .bind(key.program.as_str())
        .bind(caller)
        .bind(key.operation)
        .bind(key.request_id)
        .bind(&hash)
        .bind(now)
        .bind(now - self.window)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if claimed {
            return Ok(Begun::Fresh(Fresh {
                tx,
                program: key.program.clone(),
                caller: caller.to_owned(),
                operation: key.operation,
                request_id: key.request_id.to_owned(),
                codec,
                response: PhantomData,
            }));
        }
        let (stored_hash, response): (Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys
             WHERE program_id = $1 AND caller = $2 AND operation = $3 AND request_id = $4",
        )
        .bind(key.program.as_str())
        .bind(caller)
        .bind(key.operation)
        .bind(key.request_id)
        .fetch_one(&mut *tx)
        .await?;
        match response {
            Some(response) if stored_hash == hash => codec
                .decode(key.program, &response)
                .map(Begun::Replay)
                .ok_or(IdempotencyError::Unreadable),
            _ => Err(IdempotencyError::Mismatch),
        }
    }
}

impl<R, C: ResponseCodec<R>> Fresh<R, C> {
    /// The transaction the effect runs in.
    pub fn tx(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Stores `response` (and the member it concerns, so erasing the member
    /// deletes it) with the key, and commits the effect.
    pub async fn commit(
        mut self,
        response: &R,
        subject: Option<uuid::Uuid>,
    ) -> Result<(), sqlx::Error> {
        let stored = self.codec.encode(&self.program, response);
        sqlx::query(
            "UPDATE idempotency_keys SET response = $5, subject = $6
             WHERE program_id = $1 AND caller = $2 AND operation = $3 AND request_id = $4",
        )
        .bind(self.program.as_str())
        .bind(&self.caller)
        .bind(self.operation)
        .bind(&self.request_id)
        .bind(stored)
        .bind(subject)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await
    }
}
