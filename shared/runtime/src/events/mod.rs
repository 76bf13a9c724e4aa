//! The event backbone: services write events to their outbox in the same
//! transaction as the change, numbered per member ([`outbox`]); a relay
//! publishes the outbox to Redis Streams in order, one fenced batch at a
//! time, woken by the outbox writes' notifications ([`relay`]); consumers apply each event exactly once through an
//! inbox table ([`consumer`]), dispatching to typed handlers ([`router`]);
//! a pruning job keeps every store to its retention ([`retention`]).

pub mod consumer;
pub mod handler;
pub mod outbox;
pub mod relay;
pub mod retention;
pub mod router;
pub mod sequence;

/// The stream a service publishes to: `<prefix>:events:<source>`.
pub fn stream_key(prefix: &str, source: &str) -> String {
    format!("{prefix}:events:{source}")
}

/// The dead-letter stream of a consumer group: `<prefix>:dlq:<group>`.
pub fn dead_letter_key(prefix: &str, group: &str) -> String {
    format!("{prefix}:dlq:{group}")
}

/// Field of a stream entry holding the encoded `EventEnvelope`.
pub const ENVELOPE_FIELD: &str = "envelope";
