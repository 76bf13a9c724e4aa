//! Writing events into the outbox, inside the caller's transaction.
//!
//! Each event about a member gets the next number of that member's sequence
//! (per programme, member and source) in the same transaction: a rolled back
//! change gives its number back, so the numbers a consumer sees are 1, 2,
//! 3... without gaps. The counter row also serialises a member's writers, so
//! outbox order and sequence order agree for each member.
//!
//! The statement that writes outbox rows also notifies the schema's channel
//! (see [`CHANNEL_SQL`]), delivered when the transaction commits, so an idle
//! relay publishes at once instead of at its next poll. It notifies only
//! when no other row waits to be published: Postgres serialises the commits
//! of notifying transactions, and a relay with rows waiting looks again
//! after its batch anyway.

use chrono::{DateTime, Utc};
use laurel_proto::common::v1::EventEnvelope;
use prost::{Message, Name};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::ProgramId;

/// SQL yielding the channel outbox writes notify for the session's current
/// schema (the first of its `search_path`): a fixed prefix and the md5 of
/// the schema's name, so any name fits Postgres' 63-byte channel names.
pub const CHANNEL_SQL: &str = "SELECT 'laurel_outbox_' || md5(current_schema())";

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
        "WITH written AS (
             INSERT INTO outbox (event_id, program_id, member_id, source, event_type, envelope, card_version, member_sequence)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8))
         SELECT pg_notify('laurel_outbox_' || md5(current_schema()), '')
         WHERE NOT EXISTS (SELECT FROM outbox WHERE published_at IS NULL)",
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

/// An event of a batch, its payload already packed (a batch mixes types).
#[derive(Clone, Debug)]
pub struct PackedEvent {
    /// Programme.
    pub program: String,
    /// Member concerned, if any.
    pub member_id: Option<Uuid>,
    /// Business time of the fact.
    pub occurred_at: DateTime<Utc>,
    /// When Laurel recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Member card version this change produced, if it changed the card.
    pub card_version: Option<i64>,
    /// `<source>.<MessageName>`.
    pub event_type: String,
    /// The packed message.
    pub payload: prost_types::Any,
}

impl PackedEvent {
    /// Packs `event` of `source`.
    pub fn pack<P: Message + Name>(
        source: &str,
        event: NewEvent<'_, P>,
    ) -> Result<Self, sqlx::Error> {
        Ok(Self {
            program: event.program.to_string(),
            member_id: event.member_id,
            occurred_at: event.occurred_at,
            recorded_at: event.recorded_at,
            card_version: event.card_version,
            event_type: event_type::<P>(source),
            payload: prost_types::Any::from_msg(event.payload)
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
        })
    }
}

/// Writes a batch of events of `source` within `tx` in three statements,
/// whatever the batch size: one for the member sequences (each member's
/// events get consecutive numbers in batch order), one for the outbox rows.
/// The current span's trace context travels in every envelope.
pub async fn enqueue_many(
    tx: &mut PgConnection,
    source: &str,
    events: &[PackedEvent],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // How many events each member has in the batch, sorted, so two batches
    // lock sequence rows in the same order (a map: batches can be large).
    let mut counts: std::collections::BTreeMap<(&str, Uuid), i64> = Default::default();
    for event in events {
        if let Some(member) = event.member_id {
            *counts.entry((event.program.as_str(), member)).or_default() += 1;
        }
    }
    let lasts: Vec<(String, Uuid, i64)> = if counts.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "INSERT INTO member_sequences (program_id, member_id, source, last_sequence)
             SELECT p, m, $3, n FROM unnest($1::text[], $2::uuid[], $4::bigint[]) AS b(p, m, n)
             ON CONFLICT (program_id, member_id, source)
             DO UPDATE SET last_sequence = member_sequences.last_sequence + EXCLUDED.last_sequence
             RETURNING program_id, member_id, last_sequence",
        )
        .bind(
            counts
                .iter()
                .map(|((p, _), _)| p.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(counts.keys().map(|(_, m)| *m).collect::<Vec<_>>())
        .bind(source)
        .bind(counts.values().copied().collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?
    };
    // The next number to hand out per member: last - count + 1.
    let mut next: std::collections::HashMap<(String, Uuid), i64> = lasts
        .into_iter()
        .map(|(p, m, last)| {
            let n = counts.get(&(p.as_str(), m)).copied().unwrap_or(1);
            ((p, m), last - n + 1)
        })
        .collect();
    let trace = crate::trace_context::current_as_map();
    let mut ids = Vec::with_capacity(events.len());
    let mut envelopes = Vec::with_capacity(events.len());
    let mut sequences = Vec::with_capacity(events.len());
    for event in events {
        let member_sequence = match event.member_id {
            Some(member) => {
                let slot = next
                    .get_mut(&(event.program.clone(), member))
                    .expect("every member of the batch has a sequence");
                let seq = *slot;
                *slot += 1;
                seq
            }
            None => 0,
        };
        let event_id = Uuid::now_v7();
        envelopes.push(
            EventEnvelope {
                event_id: event_id.to_string(),
                event_type: event.event_type.clone(),
                source: source.to_owned(),
                program_id: event.program.clone(),
                member_id: event.member_id.map(|m| m.to_string()).unwrap_or_default(),
                occurred_at: Some(timestamp(event.occurred_at)),
                recorded_at: Some(timestamp(event.recorded_at)),
                trace_context: trace.clone(),
                payload: Some(event.payload.clone()),
                member_sequence,
            }
            .encode_to_vec(),
        );
        ids.push(event_id);
        sequences.push(member_sequence);
    }
    sqlx::query(
        "WITH written AS (
             INSERT INTO outbox (event_id, program_id, member_id, source, event_type, envelope, card_version, member_sequence)
             SELECT e, p, m, $4, t, b, v, s
             FROM unnest($1::uuid[], $2::text[], $3::uuid[], $5::text[], $6::bytea[], $7::bigint[], $8::bigint[])
                  WITH ORDINALITY AS x(e, p, m, t, b, v, s, ord)
             ORDER BY ord)
         SELECT pg_notify('laurel_outbox_' || md5(current_schema()), '')
         WHERE NOT EXISTS (SELECT FROM outbox WHERE published_at IS NULL)",
    )
    .bind(&ids)
    .bind(events.iter().map(|e| e.program.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.member_id).collect::<Vec<_>>())
    .bind(source)
    .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
    .bind(&envelopes)
    .bind(events.iter().map(|e| e.card_version).collect::<Vec<_>>())
    .bind(&sequences)
    .execute(&mut *tx)
    .await?;
    Ok(ids)
}
