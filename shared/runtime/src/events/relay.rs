//! The outbox relay: publishes unpublished outbox rows to Redis Streams in
//! outbox order, then marks them published.
//!
//! One replica at a time is the relay (a Postgres advisory lock held on a
//! dedicated connection), so a member's events keep their order. A crash
//! between publishing and marking publishes those rows again on restart:
//! delivery is at-least-once and consumers deduplicate by event id.

use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use super::{ENVELOPE_FIELD, stream_key};

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Redis key prefix.
    pub prefix: String,
    /// Name of the leader lock; one relay per name runs at a time.
    pub lock_name: String,
    /// Rows published per round.
    pub batch_size: i64,
    /// Pause when the outbox is empty.
    pub idle_poll: Duration,
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
            batch_size: 500,
            idle_poll: Duration::from_millis(20),
            card_field: None,
        }
    }
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
    /// A relay for the outbox reachable through `pool`.
    pub fn new(pool: PgPool, redis: ConnectionManager, config: RelayConfig) -> Self {
        Self {
            pool,
            redis,
            config,
        }
    }

    /// Runs until `shutdown` turns true: waits to become leader, then
    /// publishes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            let leader = match self.acquire_leadership().await {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "relay cannot reach postgres");
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                    continue;
                }
            };
            tracing::info!(lock = %self.config.lock_name, "outbox relay is leader");
            let mut leader = leader;
            while !*shutdown.borrow() {
                match self.publish_batch().await {
                    Ok(0) => {
                        backoff = Duration::from_millis(100);
                        sleep_or_shutdown(self.config.idle_poll, &mut shutdown).await;
                    }
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(error) => {
                        metrics::counter!("laurel_relay_errors_total").increment(1);
                        tracing::warn!(%error, "relay round failed, retrying");
                        sleep_or_shutdown(backoff, &mut shutdown).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        if leader.ping().await.is_err() {
                            tracing::warn!("relay lost its lock connection");
                            break;
                        }
                    }
                }
            }
            let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                .bind(&self.config.lock_name)
                .execute(&mut leader)
                .await;
        }
    }

    /// The lock lives on a connection taken out of the pool, so a relay that
    /// is dropped mid-way closes it and frees the lock instead of handing a
    /// locked connection back to the pool.
    async fn acquire_leadership(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&self.config.lock_name)
            .fetch_one(&mut conn)
            .await?;
        Ok(locked.then_some(conn))
    }

    /// Publishes up to one batch; returns how many rows it published.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, program_id, member_id, source, event_type, envelope, card_version FROM outbox
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.config.batch_size)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (_, program, member, source, event_type, envelope, card_version) in &rows {
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
                    .arg(format!(
                        "{}:card:{}:{}",
                        self.config.prefix, program, member
                    ))
                    .arg(field)
                    .arg(version)
                    .arg(crate::card::CARD_TTL_SECS)
                    .ignore();
            }
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&self.pool)
            .await?;
        metrics::counter!("laurel_relay_published_total").increment(rows.len() as u64);
        Ok(rows.len())
    }
}

async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}
