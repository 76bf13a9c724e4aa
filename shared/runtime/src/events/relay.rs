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
//!
//! An idle relay wakes as soon as an event commits: an outbox write that
//! finds nothing else waiting to be published notifies the schema's channel
//! ([`CHANNEL_SQL`]) in its transaction, and the relay listens on it over
//! one more session of its own (a write that finds rows waiting sends
//! nothing: the relay has them still to publish and looks again after that
//! batch). Notifications are only a hint: the relay still polls (every
//! `listen_poll` while listening, every `idle_poll` while the listening
//! session is away), so a lost notification or listener delays an event,
//! never loses it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::aio::ConnectionManager;
use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{ENVELOPE_FIELD, outbox::CHANNEL_SQL, stream_key};

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
    /// Pause when the outbox is empty and nothing listens for its
    /// notifications.
    pub idle_poll: Duration,
    /// Whether to wake on the outbox's notifications.
    pub listen: bool,
    /// Longest pause when the outbox is empty while listening: the fallback
    /// for a notification that never came.
    pub listen_poll: Duration,
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
            listen: true,
            listen_poll: Duration::from_millis(100),
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
    /// The listening session's own pool: a listener holds its connection.
    listen_pool: PgPool,
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
        let single = || {
            PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(options.clone())
        };
        let (pool, listen_pool) = (single(), single());
        let redis = crate::cache::connection_manager(redis_url, REDIS_RESPONSE_TIMEOUT)?;
        Ok(Self {
            pool,
            listen_pool,
            redis,
            config,
        })
    }

    /// Publishes until `shutdown` turns true, waking on the outbox's
    /// notifications when `config.listen` is on.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let listening = Arc::new(AtomicBool::new(false));
        let _listener = self.config.listen.then(|| {
            AbortOnDrop(tokio::spawn(listen(
                self.listen_pool.clone(),
                wake.clone(),
                listening.clone(),
            )))
        });
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            let pause = match self.publish_batch().await {
                Ok(batch) => {
                    backoff = Duration::from_millis(100);
                    match batch {
                        Batch::Published(_) => continue,
                        Batch::Empty => {
                            let pause = if listening.load(Ordering::Acquire) {
                                self.config.listen_poll
                            } else {
                                self.config.idle_poll
                            };
                            tokio::select! {
                                () = wake.notified() => {}
                                () = sleep_or_shutdown(pause, &mut shutdown) => {}
                            }
                            continue;
                        }
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
                    .arg(crate::card::invalidation_channel(
                        &self.config.prefix,
                        field,
                    ))
                    .ignore();
            }
        }
        pipe
    }
}

/// Stops the listening task with the relay, however the relay ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens for the outbox's notifications on a session of `pool`, waking
/// `wake` for each; `listening` tells whether the session is up. Reconnects
/// with backoff, waking the relay once more after each (re)connection, since
/// notifications sent meanwhile are lost.
async fn listen(pool: PgPool, wake: Arc<Notify>, listening: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected: Result<PgListener, sqlx::Error> = async {
            let channel: String = sqlx::query_scalar(CHANNEL_SQL).fetch_one(&pool).await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok(listener)
        }
        .await;
        match connected {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                listening.store(true, Ordering::Release);
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        // The session was lost and is back: what was sent
                        // meanwhile is gone, so look once more.
                        Ok(None) => wake.notify_one(),
                        Err(error) => {
                            tracing::warn!(%error, "outbox listener failed, polling meanwhile");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "listening for outbox notifications failed, polling meanwhile");
            }
        }
        listening.store(false, Ordering::Release);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}
