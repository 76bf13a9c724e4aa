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

impl<'a> RequestKey<'a> {
    /// The key of `operation` with `request_id`, for the caller and
    /// programme of `ctx`.
    pub fn new(
        ctx: &'a crate::context::RequestContext,
        operation: &'static str,
        request_id: &'a str,
    ) -> Self {
        Self {
            program: &ctx.program,
            caller: &ctx.caller,
            operation,
            request_id,
        }
    }
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

/// One key of a batch, with the digest of its request
/// ([`Idempotency::digest`]).
#[derive(Clone, Debug)]
pub struct BatchKey {
    /// Programme of the request.
    pub program: String,
    /// The authenticated caller's name.
    pub caller: String,
    /// The RPC.
    pub operation: &'static str,
    /// The client-chosen id.
    pub request_id: String,
    /// Keyed digest of the request.
    pub digest: Vec<u8>,
}

/// What claiming one key of a batch found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Claimed for this request: apply it, then store its response (or
    /// forget the key if it fails).
    Fresh,
    /// Answered before: the stored response.
    Replay(Vec<u8>),
    /// Used before with a different request.
    Mismatch,
}

/// A response to store with its key.
#[derive(Clone, Debug)]
pub struct BatchResponse<'a> {
    /// The key, as claimed.
    pub key: &'a BatchKey,
    /// Encoded response.
    pub response: Vec<u8>,
    /// Member it concerns, erased with them.
    pub subject: Option<uuid::Uuid>,
}

impl Idempotency {
    /// Claims every key of a batch in one statement (keys must be distinct).
    /// Keys are inserted in a fixed order, so two batches never deadlock on
    /// each other's keys; a key another transaction holds is waited for.
    pub async fn claim_many(
        &self,
        conn: &mut PgConnection,
        keys: &[BatchKey],
    ) -> Result<Vec<Claim>, sqlx::Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let column = |f: fn(&BatchKey) -> String| keys.iter().map(f).collect::<Vec<_>>();
        let programs = column(|k| k.program.clone());
        let callers = column(|k| k.caller.clone());
        let operations = column(|k| k.operation.to_owned());
        let request_ids = column(|k| k.request_id.clone());
        let digests: Vec<Vec<u8>> = keys.iter().map(|k| k.digest.clone()).collect();
        let claimed: Vec<i32> = sqlx::query_scalar(
            "WITH batch AS (
               SELECT ord::int, program_id, caller, operation, request_id, request_hash
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
                    WITH ORDINALITY AS b(program_id, caller, operation, request_id, request_hash, ord)
             ), claimed AS (
               INSERT INTO idempotency_keys (program_id, caller, operation, request_id, request_hash, created_at)
               SELECT program_id, caller, operation, request_id, request_hash, $6 FROM batch
               ORDER BY program_id, caller, operation, request_id
               ON CONFLICT (program_id, caller, operation, request_id) DO UPDATE
                 SET request_hash = EXCLUDED.request_hash, response = NULL, subject = NULL,
                     created_at = EXCLUDED.created_at
                 WHERE idempotency_keys.created_at <= $7
               RETURNING program_id, caller, operation, request_id
             )
             SELECT batch.ord FROM batch JOIN claimed USING (program_id, caller, operation, request_id)",
        )
        .bind(&programs)
        .bind(&callers)
        .bind(&operations)
        .bind(&request_ids)
        .bind(&digests)
        .bind(now)
        .bind(now - self.window)
        .fetch_all(&mut *conn)
        .await?;
        let mut claims = vec![Claim::Fresh; keys.len()];
        let mut fresh = vec![false; keys.len()];
        for ord in claimed {
            fresh[(ord - 1) as usize] = true;
        }
        let taken: Vec<usize> = (0..keys.len()).filter(|i| !fresh[*i]).collect();
        if taken.is_empty() {
            return Ok(claims);
        }
        let pick =
            |f: fn(&BatchKey) -> String| taken.iter().map(|i| f(&keys[*i])).collect::<Vec<_>>();
        let rows: Vec<(i32, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT b.ord::int, k.request_hash, k.response
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                  WITH ORDINALITY AS b(program_id, caller, operation, request_id, ord)
             JOIN idempotency_keys k USING (program_id, caller, operation, request_id)",
        )
        .bind(pick(|k| k.program.clone()))
        .bind(pick(|k| k.caller.clone()))
        .bind(pick(|k| k.operation.to_owned()))
        .bind(pick(|k| k.request_id.clone()))
        .fetch_all(&mut *conn)
        .await?;
        for (ord, hash, response) in rows {
            let i = taken[(ord - 1) as usize];
            claims[i] = match response {
                Some(response) if hash == keys[i].digest => Claim::Replay(response),
                _ => Claim::Mismatch,
            };
        }
        Ok(claims)
    }

    /// Stores the responses of the applied requests of a batch.
    pub async fn store_many(
        &self,
        conn: &mut PgConnection,
        responses: &[BatchResponse<'_>],
    ) -> Result<(), sqlx::Error> {
        if responses.is_empty() {
            return Ok(());
        }
        let column =
            |f: fn(&BatchResponse<'_>) -> String| responses.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "UPDATE idempotency_keys k SET response = b.response, subject = b.subject
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::uuid[])
                  AS b(program_id, caller, operation, request_id, response, subject)
             WHERE k.program_id = b.program_id AND k.caller = b.caller
               AND k.operation = b.operation AND k.request_id = b.request_id",
        )
        .bind(column(|r| r.key.program.clone()))
        .bind(column(|r| r.key.caller.clone()))
        .bind(column(|r| r.key.operation.to_owned()))
        .bind(column(|r| r.key.request_id.clone()))
        .bind(
            responses
                .iter()
                .map(|r| r.response.clone())
                .collect::<Vec<_>>(),
        )
        .bind(responses.iter().map(|r| r.subject).collect::<Vec<_>>())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Gives back the keys of requests that failed, so a retry is a new
    /// request (as a rolled back transaction does for a single request).
    pub async fn forget_many(
        &self,
        conn: &mut PgConnection,
        keys: &[&BatchKey],
    ) -> Result<(), sqlx::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&BatchKey) -> String| keys.iter().map(|k| f(k)).collect::<Vec<_>>();
        sqlx::query(
            "DELETE FROM idempotency_keys k
             USING unnest($1::text[], $2::text[], $3::text[], $4::text[])
                   AS b(program_id, caller, operation, request_id)
             WHERE k.program_id = b.program_id AND k.caller = b.caller
               AND k.operation = b.operation AND k.request_id = b.request_id",
        )
        .bind(column(|k| k.program.clone()))
        .bind(column(|k| k.caller.clone()))
        .bind(column(|k| k.operation.to_owned()))
        .bind(column(|k| k.request_id.clone()))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The key of a batch for `request`.
    pub fn batch_key(&self, key: RequestKey<'_>, request: &impl prost::Message) -> BatchKey {
        BatchKey {
            program: key.program.as_str().to_owned(),
            caller: key.caller.name().to_owned(),
            operation: key.operation,
            request_id: key.request_id.to_owned(),
            digest: self.digest(request),
        }
    }
}
