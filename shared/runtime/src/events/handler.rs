//! What a consumer hands to its handler (the event and where it stands in
//! its member's sequence) and what the handler answers: applied, skipped,
//! or a failure that says itself whether to retry, dead-letter or wait.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use laurel_proto::common::v1::EventEnvelope;
use sqlx::PgConnection;
use uuid::Uuid;

use super::sequence::SequenceCheck;
use crate::error::{DbErrorKind, db_error_kind};

/// One event being applied, with what the consumer knows about it.
#[derive(Clone, Debug)]
pub struct EventContext {
    /// The envelope as published, payload included.
    pub envelope: EventEnvelope,
    /// The event id.
    pub event_id: Uuid,
    /// The member the event is about, if any.
    pub member_id: Option<Uuid>,
    /// Business time of the fact, if the envelope carries it.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The event's number in its member's sequence (0 for none).
    pub sequence: i64,
    /// How that number relates to what this group applied before.
    pub sequence_check: SequenceCheck,
    /// The stream entry id the event arrived in.
    pub stream_id: String,
    /// Which attempt this is, from 1; failed attempts are counted durably.
    pub attempt: u32,
}

impl EventContext {
    /// The programme the event belongs to.
    pub fn program_id(&self) -> &str {
        &self.envelope.program_id
    }

    /// The event type, `<source>.<MessageName>`.
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }
}

/// How a handler failed, and so what the consumer does next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a referenced row not there yet, a conflict): the
    /// consumer retries with backoff, counting attempts, and dead-letters
    /// the event after the last one.
    #[error("retryable: {0:#}")]
    Retryable(anyhow::Error),
    /// Can never work (invalid content): dead-lettered at once.
    #[error("terminal: {0:#}")]
    Terminal(anyhow::Error),
    /// A dependency is away: the consumer pauses and tries again without
    /// spending an attempt.
    #[error("unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(error.into())
    }

    /// A failure no retry can fix.
    pub fn terminal(error: impl Into<anyhow::Error>) -> Self {
        Self::Terminal(error.into())
    }

    /// A dependency that is away for now.
    pub fn unavailable(error: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(error.into())
    }
}

/// Lets handlers use `?` on queries: a lost or refused connection is
/// `Unavailable`, any other database error `Retryable`. A handler that knows
/// better (a check violation that no retry fixes) says so explicitly.
impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        match db_error_kind(&error) {
            DbErrorKind::Unavailable => Self::Unavailable(error.into()),
            _ => Self::Retryable(error.into()),
        }
    }
}

/// What a handler did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The effect was written in the transaction.
    Applied,
    /// The event is of no interest to this handler.
    Skipped,
}

/// Applies events inside the consumer's transaction; the [`super::router::Router`]
/// is the usual one.
pub trait EventHandler: Send + Sync + 'static {
    /// Whether this handler wants events of `event_type`; events it does not
    /// want get no inbox row and no handler call, only the advance of their
    /// member's sequence, and are acknowledged and counted as skipped.
    fn accepts(&self, event_type: &str) -> bool {
        let _ = event_type;
        true
    }

    /// Applies `event` using `tx`; an error rolls the transaction back.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
    ) -> BoxFuture<'a, Result<Handled, HandlerError>>;
}
