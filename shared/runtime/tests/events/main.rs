//! The event backbone against real Postgres and Redis: fenced relays,
//! consumer groups, the typed router, per-member sequences and retention.

mod common;
mod consumer;
mod relay;
mod retention;
mod sequence;
