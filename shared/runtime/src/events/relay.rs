//! The outbox relay: publishes unpublished outbox rows to Redis Streams in
//! outbox order, then marks them published.
//!
//! Any number of replicas run a relay; each batch is fenced by the
//! transaction that marks its rows. That transaction takes a transaction
//! level advisory lock (`pg_try_advisory_xact_lock`), selects the oldest
//! unpublished rows `FOR UPDATE`, publishes them, marks them and commits.
//! The lock lives exactly as long as the transaction: there is no session
//! lock on an idle connection that can die unnoticed while its owner keeps
//! publishing. A relay whose connection dies mid-batch cannot mark its rows
//! (its transaction is gone), so the next batch republishes them: delivery
//! is at-least-once and consumers deduplicate by event id. A batch goes to
//! Redis as one `MULTI`/`EXEC`, so it lands whole or not at all and never
//! interleaves with another batch.
//!
//! The relay talks to Redis over a connection of its own, with a response
//! timeout long enough for a full batch: a slow pipeline must neither be
//! cut short and republished whole, nor stall the cache's reads behind it.

use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::sync::watch;
use uuid::Uuid;

use super::{ENVELOPE_FIELD, stream_key};

/// Response timeout of the relay's own Redis connection.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Redis key prefix.
    pub prefix: String,
    /// Name of the fence lock; one batch per name is published at a time.
    pub lock_name: String,
    /// `application_name` of the relay's Postgres sessions, so operators
    /// (and tests) can find them in `pg_stat_activity`.
    pub application_name: String,
    /// Rows published per batch.
    pub batch_size: i64,
    /// Pause when the outbox is empty.
    pub idle_poll: Duration,
    /// Pause when another relay is publishing a batch.
    pub standby_poll: Duration,
    /// Member card field this service owns, invalidated at the version an
    /// event carries: the invalidation of last resort when Redis was away at
    /// write time.
    pub card_field: Option<&'static str>,
}

impl RelayConfig {
    /// Defaults for a service schema.
    pub fn new(prefix: &str, schema: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            lock_name: format!("laurel-relay:{schema}"),
            application_name: application_name(schema),
            batch_size: 500,
            idle_poll: Duration::from_millis(20),
            standby_poll: Duration::from_millis(200),
            card_field: None,
        }
    }
}

/// The `application_name` relay sessions of `schema` carry by default.
pub fn application_name(schema: &str) -> String {
    // Postgres keeps the first 63 bytes of an application name.
    let mut name = format!("laurel-relay:{schema}");
    name.truncate(63);
    name
}

/// What one call of [`Relay::publish_batch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Published and marked this many rows.
    Published(usize),
    /// Nothing was waiting.
    Empty,
    /// Another relay holds the fence right now.
    Fenced,
}

/// Publishes one service's outbox.
pub struct Relay {
    pool: PgPool,
    redis: ConnectionManager,
    config: RelayConfig,
}

type Row = (
    i64,
    String,
    Option<Uuid>,
    String,
    String,
    Vec<u8>,
    Option<i64>,
);

impl Relay {
    /// A relay for the outbox `pool` reaches, with sessions of its own
    /// (named `config.application_name`) and a Redis connection of its own.
    pub fn new(pool: PgPool, redis_url: &str, config: RelayConfig) -> anyhow::Result<Self> {
        let options = (*pool.connect_options())
            .clone()
            .application_name(&config.application_name);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        let redis = crate::cache::connection_manager(redis_url, REDIS_RESPONSE_TIMEOUT)?;
        Ok(Self {
            pool,
            redis,
            config,
        })
    }

    /// Publishes until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            let pause = match self.publish_batch().await {
                Ok(batch) => {
                    backoff = Duration::from_millis(100);
                    match batch {
                        Batch::Published(_) => continue,
                        Batch::Empty => self.config.idle_poll,
                        Batch::Fenced => self.config.standby_poll,
                    }
                }
                Err(error) => {
                    metrics::counter!("laurel_relay_errors_total").increment(1);
                    tracing::warn!(%error, "relay batch failed, retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pause
                }
            };
            sleep_or_shutdown(pause, &mut shutdown).await;
        }
    }

    /// Publishes up to one batch inside the transaction that fences it.
    pub async fn publish_batch(&self) -> anyhow::Result<Batch> {
        let mut tx = self.pool.begin().await?;
        let (fenced,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock(hashtext($1))")
            .bind(&self.config.lock_name)
            .fetch_one(&mut *tx)
            .await?;
        if !fenced {
            return Ok(Batch::Fenced);
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, program_id, member_id, source, event_type, envelope, card_version FROM outbox
             WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Batch::Empty);
        }
        let mut redis = self.redis.clone();
        self.pipeline(&rows).query_async::<()>(&mut redis).await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("laurel_relay_published_total").increment(rows.len() as u64);
        Ok(Batch::Published(rows.len()))
    }

    fn pipeline(&self, rows: &[Row]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (_, program, member, source, event_type, envelope, card_version) in rows {
            pipe.cmd("XADD")
                .arg(stream_key(&self.config.prefix, source))
                .arg("*")
                .arg(ENVELOPE_FIELD)
                .arg(envelope.as_slice())
                .arg("type")
                .arg(event_type)
                .ignore();
            if let (Some(field), Some(member), Some(version)) =
                (self.config.card_field, member, card_version)
            {
                pipe.cmd("EVAL")
                    .arg(crate::card::INVALIDATE)
                    .arg(1)
                    .arg(crate::card::card_key(&self.config.prefix, program, member))
                    .arg(field)
                    .arg(version)
                    .arg(crate::card::CARD_TTL_SECS)
                    // Replicas drop their in-process copies too.
                    .arg(crate::card::invalidation_channel(&self.config.prefix))
                    .ignore();
            }
        }
        pipe
    }
}

async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}
