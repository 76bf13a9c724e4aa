//! Writing events into the outbox, inside the caller's transaction.
//!
//! Each event about a member gets the next number of that member's sequence
//! (per programme, member and source) in the same transaction: a rolled back
//! change gives its number back, so the numbers a consumer sees are 1, 2,
//! 3... without gaps. The counter row also serialises a member's writers, so
//! outbox order and sequence order agree for each member.

use chrono::{DateTime, Utc};
use laurel_proto::common::v1::EventEnvelope;
use prost::{Message, Name};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::ProgramId;

/// A domain event about to be written.
#[derive(Debug)]
pub struct NewEvent<'a, P> {
    /// Programme.
    pub program: &'a ProgramId,
    /// Member concerned, if any; events of one member are published in order.
    pub member_id: Option<Uuid>,
    /// Business time of the fact.
    pub occurred_at: DateTime<Utc>,
    /// When Laurel recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The member card version this change produced, when it changed the
    /// card; the relay invalidates the card at that version.
    pub card_version: Option<i64>,
    /// The event message.
    pub payload: &'a P,
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// The event type of a payload: `<source>.<MessageName>`, for example
/// `member.ActivityRecorded`.
pub fn event_type<P: Name>(source: &str) -> String {
    format!("{source}.{}", P::NAME)
}

/// Writes `event` to the outbox of `source` within `tx`; returns its id.
/// The current span's trace context travels inside the envelope.
pub async fn enqueue<P: Message + Name>(
    tx: &mut PgConnection,
    source: &str,
    event: NewEvent<'_, P>,
) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::now_v7();
    let event_type = event_type::<P>(source);
    let member_sequence = match event.member_id {
        Some(member) => next_member_sequence(tx, event.program, member, source).await?,
        None => 0,
    };
    let envelope = EventEnvelope {
        event_id: event_id.to_string(),
        event_type: event_type.clone(),
        source: source.to_owned(),
        program_id: event.program.to_string(),
        member_id: event.member_id.map(|m| m.to_string()).unwrap_or_default(),
        occurred_at: Some(timestamp(event.occurred_at)),
        recorded_at: Some(timestamp(event.recorded_at)),
        trace_context: crate::trace_context::current_as_map(),
        payload: Some(
            prost_types::Any::from_msg(event.payload)
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
        ),
        member_sequence,
    };
    sqlx::query(
        "INSERT INTO outbox (event_id, program_id, member_id, source, event_type, envelope, card_version, member_sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(event_id)
    .bind(event.program.as_str())
    .bind(event.member_id)
    .bind(source)
    .bind(&event_type)
    .bind(envelope.encode_to_vec())
    .bind(event.card_version)
    .bind(member_sequence)
    .execute(&mut *tx)
    .await?;
    Ok(event_id)
}

/// Hands out the next number of a member's event sequence within `tx`.
async fn next_member_sequence(
    tx: &mut PgConnection,
    program: &ProgramId,
    member: Uuid,
    source: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO member_sequences (program_id, member_id, source, last_sequence)
         VALUES ($1, $2, $3, 1)
         ON CONFLICT (program_id, member_id, source)
         DO UPDATE SET last_sequence = member_sequences.last_sequence + 1
         RETURNING last_sequence",
    )
    .bind(program.as_str())
    .bind(member)
    .bind(source)
    .fetch_one(&mut *tx)
    .await
}
