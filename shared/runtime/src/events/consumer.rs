//! A consumer of Redis Streams with a consumer group and an inbox table:
//! each event's effect and its inbox row commit in one transaction, so an
//! event redelivered after a crash or republished by the relay has no second
//! effect. Failed events are retried with backoff; events that keep failing,
//! or cannot be decoded, go to a dead-letter stream. Entries left pending by
//! a consumer that died are claimed by the others after `claim_idle`.
//!
//! Several replicas share one group and split the work. Entries of one
//! stream reach them in stream order, but two replicas may apply events of
//! one member concurrently: handlers must tolerate that (a refund whose
//! order is not yet known fails and is retried).

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use laurel_proto::common::v1::EventEnvelope;
use prost::Message;
use redis::{
    AsyncCommands,
    aio::ConnectionManager,
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
    },
};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::{ENVELOPE_FIELD, dead_letter_key, stream_key};

/// Applies one event inside the consumer's transaction.
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event` using `tx`; an error rolls back and retries.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Redis key prefix.
    pub prefix: String,
    /// Consumer group: one per consuming service (and purpose).
    pub group: String,
    /// This replica's name within the group.
    pub consumer: String,
    /// Services whose streams to read, for example `["member"]`.
    pub sources: Vec<String>,
    /// Entries read per call.
    pub batch: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// Attempts before an event goes to the dead-letter stream.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Idle time after which another consumer's pending entry is claimed.
    pub claim_idle: Duration,
}

impl ConsumerConfig {
    /// Defaults for `group` reading `sources`.
    pub fn new(prefix: &str, group: &str, sources: &[&str]) -> Self {
        Self {
            prefix: prefix.to_owned(),
            group: group.to_owned(),
            consumer: format!("{}-{}", group, Uuid::now_v7()),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            batch: 100,
            block: Duration::from_millis(500),
            max_attempts: 5,
            retry_base: Duration::from_millis(50),
            claim_idle: Duration::from_secs(30),
        }
    }
}

/// A running member of a consumer group.
pub struct Consumer {
    pool: PgPool,
    redis: ConnectionManager,
    config: ConsumerConfig,
    handler: Arc<dyn EventHandler>,
    stopping: Option<watch::Receiver<bool>>,
}

enum Outcome {
    Applied,
    Duplicate,
    DeadLettered,
    /// Shutting down while storage is away: left pending for later.
    Abandoned,
}

/// Whether an error means Postgres is unreachable, as opposed to the event
/// or its handler being at fault.
fn storage_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<sqlx::Error>().is_some_and(|e| {
            crate::error::db_error_kind(e) == crate::error::DbErrorKind::Unavailable
        })
    })
}

impl Consumer {
    /// Joins the group (creating it at the start of each stream, so a new
    /// group replays history) on a connection of its own: blocking reads
    /// must not stall the shared one.
    pub async fn new(
        pool: PgPool,
        redis_url: &str,
        config: ConsumerConfig,
        handler: Arc<dyn EventHandler>,
    ) -> anyhow::Result<Self> {
        let mut redis =
            crate::cache::connection_manager(redis_url, config.block + Duration::from_secs(2))?;
        for source in &config.sources {
            let created: redis::RedisResult<()> = redis
                .xgroup_create_mkstream(stream_key(&config.prefix, source), &config.group, "0")
                .await;
            if let Err(error) = created
                && error.code() != Some("BUSYGROUP")
            {
                return Err(error.into());
            }
        }
        Ok(Self {
            pool,
            redis,
            config,
            handler,
            stopping: None,
        })
    }

    /// Reads and applies events until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.stopping = Some(shutdown.clone());
        let keys: Vec<String> = self
            .config
            .sources
            .iter()
            .map(|s| stream_key(&self.config.prefix, s))
            .collect();
        let mut last_claim = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            if last_claim.elapsed() >= self.config.claim_idle / 2 {
                last_claim = tokio::time::Instant::now();
                for key in &keys {
                    if let Err(error) = self.reclaim(key).await {
                        tracing::warn!(%error, stream = %key, "reclaiming pending entries failed");
                    }
                }
            }
            let options = StreamReadOptions::default()
                .group(&self.config.group, &self.config.consumer)
                .count(self.config.batch)
                .block(self.config.block.as_millis() as usize);
            let ids: Vec<&str> = keys.iter().map(|_| ">").collect();
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                read = self.redis.xread_options(&keys, &ids, &options) => read,
                _ = shutdown.changed() => break,
            };
            match read {
                Ok(Some(reply)) => {
                    for stream in reply.keys {
                        for entry in stream.ids {
                            self.process(&stream.key, &entry).await;
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "reading events failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Claims entries another consumer left pending too long, and applies
    /// them; entries delivered too often go to the dead-letter stream.
    pub async fn reclaim(&mut self, key: &str) -> anyhow::Result<usize> {
        let reply: StreamAutoClaimReply = self
            .redis
            .xautoclaim_options(
                key,
                &self.config.group,
                &self.config.consumer,
                self.config.claim_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(self.config.batch),
            )
            .await?;
        let claimed = reply.claimed.len();
        for entry in &reply.claimed {
            let deliveries = self.deliveries(key, &entry.id).await.unwrap_or(1);
            if deliveries > u64::from(self.config.max_attempts) {
                self.dead_letter(key, entry, "delivered too many times")
                    .await;
            } else {
                self.process(key, entry).await;
            }
        }
        Ok(claimed)
    }

    async fn deliveries(&mut self, key: &str, id: &str) -> redis::RedisResult<u64> {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(key)
            .arg(&self.config.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.redis)
            .await?;
        Ok(rows.first().map_or(1, |r| r.3))
    }

    async fn process(&mut self, key: &str, entry: &StreamId) {
        let envelope = entry
            .get::<Vec<u8>>(ENVELOPE_FIELD)
            .and_then(|bytes| EventEnvelope::decode(bytes.as_slice()).ok());
        let Some(envelope) = envelope else {
            self.dead_letter(key, entry, "undecodable envelope").await;
            return;
        };
        let Ok(event_id) = Uuid::parse_str(&envelope.event_id) else {
            self.dead_letter(key, entry, "invalid event id").await;
            return;
        };
        let span = tracing::info_span!("event", event_type = %envelope.event_type, %event_id, group = %self.config.group);
        crate::trace_context::set_parent_from_map(&span, &envelope.trace_context);
        let outcome = self
            .apply_with_retries(key, entry, event_id, &envelope)
            .instrument(span)
            .await;
        if let Outcome::Applied | Outcome::Duplicate = outcome {
            self.ack(key, &entry.id).await;
        }
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Abandoned => "abandoned",
        };
        metrics::counter!("laurel_events_consumed_total", "group" => self.config.group.clone(), "outcome" => label).increment(1);
    }

    async fn apply_with_retries(
        &mut self,
        key: &str,
        entry: &StreamId,
        event_id: Uuid,
        envelope: &EventEnvelope,
    ) -> Outcome {
        let mut attempt = 0;
        let mut delay = self.config.retry_base;
        let mut pause = self.config.retry_base;
        loop {
            match self.apply_once(event_id, &entry.id, envelope).await {
                Ok(true) => return Outcome::Applied,
                Ok(false) => return Outcome::Duplicate,
                // Postgres being away is no fault of the event: wait for it
                // without spending attempts, so an outage dead-letters nothing.
                Err(error) if storage_unavailable(&error) => {
                    if self.stopping.as_ref().is_some_and(|s| *s.borrow()) {
                        return Outcome::Abandoned;
                    }
                    tracing::warn!(%error, "storage unavailable, pausing");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    attempt += 1;
                    if attempt >= self.config.max_attempts {
                        tracing::error!(%error, attempt, "event failed for good");
                        self.dead_letter(key, entry, &error.to_string()).await;
                        return Outcome::DeadLettered;
                    }
                    tracing::warn!(%error, attempt, "event failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    /// Applies the event unless the inbox has it; true when applied now.
    async fn apply_once(
        &self,
        event_id: Uuid,
        stream_id: &str,
        envelope: &EventEnvelope,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, program_id, stream_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.group)
        .bind(event_id)
        .bind(&envelope.program_id)
        .bind(stream_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if fresh {
            self.handler.handle(&mut tx, envelope).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    async fn ack(&mut self, key: &str, id: &str) {
        let acked: redis::RedisResult<i64> = self.redis.xack(key, &self.config.group, &[id]).await;
        if let Err(error) = acked {
            // The entry stays pending and is reclaimed later; the inbox
            // keeps that harmless.
            tracing::warn!(%error, "ack failed");
        }
    }

    async fn dead_letter(&mut self, key: &str, entry: &StreamId, reason: &str) {
        let raw = entry.get::<Vec<u8>>(ENVELOPE_FIELD).unwrap_or_default();
        let added: redis::RedisResult<String> = self
            .redis
            .xadd(
                dead_letter_key(&self.config.prefix, &self.config.group),
                "*",
                &[
                    ("stream", key.as_bytes()),
                    ("id", entry.id.as_bytes()),
                    ("reason", reason.as_bytes()),
                    (ENVELOPE_FIELD, raw.as_slice()),
                ],
            )
            .await;
        match added {
            Ok(_) => {
                tracing::error!(stream = key, id = %entry.id, reason, "event dead-lettered");
                self.ack(key, &entry.id).await;
            }
            Err(error) => tracing::warn!(%error, "dead-lettering failed; entry stays pending"),
        }
    }
}
