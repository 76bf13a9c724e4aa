//! Retention: how long each store of the event backbone keeps what it
//! holds, and the job that prunes it.
//!
//! | store | kept for (default) | environment variable |
//! |---|---|---|
//! | event streams `<prefix>:events:<source>` | 7 days | `LAUREL_RETENTION_STREAM_HOURS` |
//! | dead-letter streams `<prefix>:dlq:<group>` | 14 days | `LAUREL_RETENTION_DEAD_LETTER_HOURS` |
//! | published `outbox` rows | 7 days | `LAUREL_RETENTION_OUTBOX_HOURS` |
//! | `inbox` rows and `event_attempts` | 14 days | `LAUREL_RETENTION_INBOX_HOURS` |
//! | `idempotency_keys` | 24 hours | `LAUREL_RETENTION_IDEMPOTENCY_HOURS` |
//!
//! The job runs every `LAUREL_RETENTION_INTERVAL_SECS` (default 300) on
//! every replica; pruning is idempotent, so replicas need no coordination.
//! Unpublished outbox rows are never pruned. `member_sequences` and
//! `consumer_sequences` hold one row per member, not per event, and are
//! kept: dropping them would restart a member's numbering (breaking the
//! gap-free promise) or make a consumer see false gaps.
//!
//! # Consumers that start after the stream's retention
//!
//! A stream holds only the last `stream` retention of events. A consumer
//! group created later (a new service such as analytics, or one that was
//! down longer than the retention) cannot replay history from it, and must:
//!
//! 1. Record its starting position before it reads any state: create its
//!    group at the stream's current end (`XGROUP CREATE <stream> <group> $`;
//!    [`super::consumer::Consumer::new`] then joins that group as it is,
//!    where on its own it would create the group at the stream's start).
//! 2. Bootstrap from the owner's list RPCs (for the member service:
//!    `ListMembers` per programme, then `ListActivities` per member), writing
//!    its projection as if it had applied every event up to then.
//! 3. Follow the stream from the recorded position. Events published while
//!    it bootstrapped are delivered again on top of what the list RPCs
//!    returned, so effects must be idempotent by content (an upsert keyed by
//!    the activity or member id), not only by event id.
//!
//! The first event it then applies for a member will usually report a
//! [`super::sequence::SequenceCheck::Gap`]: the bootstrap stands for the
//! events before it. A consumer whose pending entries were trimmed (it was
//! down longer than the retention) sees them reported as deleted when it
//! reclaims, and bootstraps the same way.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::sync::watch;

/// How long each store keeps what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Event streams: 7 days by default.
    pub stream: Duration,
    /// Dead-letter streams: 14 days by default, time to look into them.
    pub dead_letter: Duration,
    /// Published outbox rows: 7 days by default.
    pub outbox: Duration,
    /// Inbox rows and attempt counts: 14 days by default; never shorter
    /// than `stream`.
    pub inbox: Duration,
    /// Idempotency keys: 24 hours by default, after which a replay is a new
    /// request.
    pub idempotency: Duration,
    /// Pause between two prunings: 5 minutes by default.
    pub interval: Duration,
    /// Rows deleted per statement, so pruning never holds long locks.
    pub batch: i64,
    /// Event streams to trim (full keys).
    pub streams: Vec<String>,
    /// Dead-letter streams to trim (full keys).
    pub dead_letter_streams: Vec<String>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            stream: 7 * 24 * HOUR,
            dead_letter: 14 * 24 * HOUR,
            outbox: 7 * 24 * HOUR,
            inbox: 14 * 24 * HOUR,
            idempotency: 24 * HOUR,
            interval: Duration::from_secs(300),
            batch: 10_000,
            streams: Vec::new(),
            dead_letter_streams: Vec::new(),
        }
    }
}

impl RetentionConfig {
    /// The defaults, overridden by `LAUREL_RETENTION_*` variables.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults, overridden by the variables `lookup` finds.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut config = Self::default();
        let hours = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            match lookup(name) {
                None => Ok(default),
                Some(raw) => {
                    let hours: u64 = raw
                        .trim()
                        .parse()
                        .map_err(|_| anyhow::anyhow!("{name} must be a whole number of hours"))?;
                    anyhow::ensure!(hours > 0, "{name} must be at least 1 hour");
                    Ok(Duration::from_secs(hours.saturating_mul(3600)))
                }
            }
        };
        config.stream = hours("LAUREL_RETENTION_STREAM_HOURS", config.stream)?;
        config.dead_letter = hours("LAUREL_RETENTION_DEAD_LETTER_HOURS", config.dead_letter)?;
        config.outbox = hours("LAUREL_RETENTION_OUTBOX_HOURS", config.outbox)?;
        config.inbox = hours("LAUREL_RETENTION_INBOX_HOURS", config.inbox)?;
        config.idempotency = hours("LAUREL_RETENTION_IDEMPOTENCY_HOURS", config.idempotency)?;
        if let Some(raw) = lookup("LAUREL_RETENTION_INTERVAL_SECS") {
            let secs: u64 = raw.trim().parse().map_err(|_| {
                anyhow::anyhow!("LAUREL_RETENTION_INTERVAL_SECS must be a whole number of seconds")
            })?;
            config.interval = Duration::from_secs(secs.max(1));
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks that the windows fit together.
    pub fn validate(&self) -> anyhow::Result<()> {
        // An event can be delivered again for as long as its stream holds
        // it (a reclaim, a restarted consumer resuming its pending entries);
        // the inbox row is what makes that redelivery harmless, so it must
        // outlive the stream entry or the effect would happen twice.
        anyhow::ensure!(
            self.inbox >= self.stream,
            "inbox retention ({:?}) must not be shorter than stream retention ({:?})",
            self.inbox,
            self.stream
        );
        Ok(())
    }

    /// Also trims the event stream `key`.
    pub fn with_stream(mut self, key: String) -> Self {
        self.streams.push(key);
        self
    }

    /// Also trims the dead-letter stream `key`.
    pub fn with_dead_letter_stream(mut self, key: String) -> Self {
        self.dead_letter_streams.push(key);
        self
    }
}

/// What one pruning removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Event stream entries.
    pub stream_entries: u64,
    /// Dead-letter stream entries.
    pub dead_letters: u64,
    /// Published outbox rows.
    pub outbox: u64,
    /// Inbox rows.
    pub inbox: u64,
    /// Attempt counts of events long settled.
    pub attempts: u64,
    /// Idempotency keys.
    pub idempotency_keys: u64,
}

/// The instant `age` before `now`.
fn cutoff(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

/// Removes every stream entry older than `before`; returns how many.
async fn trim_stream(
    redis: &mut ConnectionManager,
    key: &str,
    before: DateTime<Utc>,
) -> redis::RedisResult<u64> {
    // Stream ids start with their creation time in milliseconds.
    let min_id = format!("{}-0", before.timestamp_millis().max(0));
    redis::cmd("XTRIM")
        .arg(key)
        .arg("MINID")
        .arg("=")
        .arg(min_id)
        .query_async(redis)
        .await
}

/// Deletes the rows of one store that `sql` selects, in batches.
async fn delete_in_batches(
    pool: &PgPool,
    sql: &str,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(sql)
            .bind(before)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
    }
}

/// Prunes every store once, as of `now`.
pub async fn prune_once(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    config: &RetentionConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<Pruned> {
    let mut pruned = Pruned::default();
    for key in &config.streams {
        pruned.stream_entries += trim_stream(redis, key, cutoff(now, config.stream)).await?;
    }
    for key in &config.dead_letter_streams {
        pruned.dead_letters += trim_stream(redis, key, cutoff(now, config.dead_letter)).await?;
    }
    pruned.outbox = delete_in_batches(
        pool,
        "DELETE FROM outbox WHERE seq IN (
             SELECT seq FROM outbox WHERE published_at < $1 LIMIT $2)",
        cutoff(now, config.outbox),
        config.batch,
    )
    .await?;
    pruned.inbox = delete_in_batches(
        pool,
        "DELETE FROM inbox WHERE (consumer, event_id) IN (
             SELECT consumer, event_id FROM inbox WHERE processed_at < $1 LIMIT $2)",
        cutoff(now, config.inbox),
        config.batch,
    )
    .await?;
    pruned.attempts = delete_in_batches(
        pool,
        "DELETE FROM event_attempts WHERE (consumer, event_id) IN (
             SELECT consumer, event_id FROM event_attempts WHERE updated_at < $1 LIMIT $2)",
        cutoff(now, config.inbox),
        config.batch,
    )
    .await?;
    pruned.idempotency_keys = delete_in_batches(
        pool,
        "DELETE FROM idempotency_keys WHERE (program_id, caller, operation, request_id) IN (
             SELECT program_id, caller, operation, request_id FROM idempotency_keys
             WHERE created_at < $1 LIMIT $2)",
        cutoff(now, config.idempotency),
        config.batch,
    )
    .await?;
    Ok(pruned)
}

/// Prunes every `config.interval` until `shutdown` turns true; a failed
/// round is logged and tried again next time.
pub async fn run(
    pool: PgPool,
    mut redis: ConnectionManager,
    config: RetentionConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        match prune_once(&pool, &mut redis, &config, Utc::now()).await {
            Ok(pruned) => {
                tracing::debug!(?pruned, "pruned event backbone stores");
                for (store, count) in [
                    ("stream", pruned.stream_entries),
                    ("dead_letter", pruned.dead_letters),
                    ("outbox", pruned.outbox),
                    ("inbox", pruned.inbox),
                    ("event_attempts", pruned.attempts),
                    ("idempotency_keys", pruned.idempotency_keys),
                ] {
                    metrics::counter!("laurel_pruned_total", "store" => store).increment(count);
                }
            }
            Err(error) => tracing::warn!(%error, "pruning failed, trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::{HOUR, RetentionConfig};

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<RetentionConfig> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RetentionConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = from(&[]).unwrap();
        assert_eq!(config.stream, 7 * 24 * HOUR);
        assert_eq!(config.dead_letter, 14 * 24 * HOUR);
        assert_eq!(config.outbox, 7 * 24 * HOUR);
        assert_eq!(config.inbox, 14 * 24 * HOUR);
        assert_eq!(config.idempotency, 24 * HOUR);
        assert_eq!(config.interval, Duration::from_secs(300));
    }

    #[test]
    fn variables_override_the_defaults_in_hours() {
        let config = from(&[
            ("LAUREL_RETENTION_STREAM_HOURS", "48"),
            ("LAUREL_RETENTION_IDEMPOTENCY_HOURS", "2"),
            ("LAUREL_RETENTION_INTERVAL_SECS", "60"),
        ])
        .unwrap();
        assert_eq!(config.stream, 48 * HOUR);
        assert_eq!(config.idempotency, 2 * HOUR);
        assert_eq!(config.interval, Duration::from_secs(60));
    }

    #[test]
    fn an_inbox_shorter_than_the_stream_is_refused() {
        let error = from(&[
            ("LAUREL_RETENTION_STREAM_HOURS", "200"),
            ("LAUREL_RETENTION_INBOX_HOURS", "100"),
        ])
        .unwrap_err();
        assert!(error.to_string().contains("inbox retention"), "{error}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        assert!(from(&[("LAUREL_RETENTION_OUTBOX_HOURS", "a week")]).is_err());
        assert!(from(&[("LAUREL_RETENTION_OUTBOX_HOURS", "0")]).is_err());
    }
}
