//! The event backbone: services write events to their outbox in the same
//! transaction as the change ([`outbox`]); a relay publishes the outbox to
//! Redis Streams in order ([`relay`]); consumers apply each event exactly
//! once through an inbox table ([`consumer`]).

pub mod consumer;
pub mod outbox;
pub mod relay;

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
