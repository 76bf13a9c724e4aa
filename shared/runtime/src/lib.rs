//! The runtime every Laurel service is built on: configuration, telemetry,
//! gRPC server assembly, request context, errors, Postgres, Redis,
//! idempotency and the event backbone (outbox, relay, consumer with inbox).

pub mod api_key;
pub mod app;
pub mod auth;
pub mod cache;
pub mod card;
pub mod clock;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod events;
pub mod group_commit;
pub mod idempotency;
pub mod layers;
pub mod methods;
pub mod metrics;
pub mod pagination;
pub mod secret;
pub mod server;
pub mod shed;
pub mod subscription;
pub mod telemetry;
pub mod trace_context;
