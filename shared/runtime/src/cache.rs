//! Redis: one shared connection manager with short timeouts, and a breaker
//! that skips Redis for a moment after a failure, so a dead Redis makes
//! calls slower for an instant, never failing.
//!
//! The member card is one Redis hash per member (`<prefix>:card:<program>:<member>`)
//! holding a field per owner service (`member`, `tier`, `points`), each with a
//! version field `<field>:v`. Writers bump the version and delete the value;
//! readers fill the value only when their copy is not older than the version
//! there, so a slow reader cannot put back what a writer just replaced.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{AsyncCommands, aio::ConnectionManager};

use crate::context::ProgramId;

pub use crate::card::{CARD_TTL_SECS, INVALIDATE};

const FILL_IF_CURRENT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1] .. ':v')
if (not v) or tonumber(v) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. ':v', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
";

/// Shared Redis access for one service.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    url: Arc<str>,
    prefix: Arc<str>,
    down_until_ms: Arc<AtomicU64>,
    fill: Arc<redis::Script>,
    invalidate: Arc<redis::Script>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection manager that connects lazily, gives up fast and retries
/// little: callers fall back to Postgres instead of waiting.
pub fn connection_manager(
    url: &str,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
}

impl Redis {
    /// Redis at `url`; every key starts with `prefix`.
    pub fn new(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            conn: connection_manager(url, Duration::from_millis(300))?,
            url: url.into(),
            prefix: prefix.into(),
            down_until_ms: Arc::new(AtomicU64::new(0)),
            fill: Arc::new(redis::Script::new(FILL_IF_CURRENT)),
            invalidate: Arc::new(redis::Script::new(INVALIDATE)),
        })
    }

    /// The URL, for connections of their own (pub/sub, streams).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The card key of a member.
    pub fn card_key(&self, program: &ProgramId, member_id: &str) -> String {
        format!("{}:card:{}:{}", self.prefix, program, member_id)
    }

    /// A clone of the shared connection.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether the breaker currently skips Redis.
    pub fn is_skipped(&self) -> bool {
        now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn record<T>(&self, result: redis::RedisResult<T>, op: &'static str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                metrics::counter!("laurel_redis_errors_total", "op" => op).increment(1);
                tracing::warn!(%error, op, "redis unavailable, falling back");
                self.down_until_ms.store(now_ms() + 1000, Ordering::Relaxed);
                None
            }
        }
    }

    /// Reads an owner's field of a card; `None` on a miss or when Redis is away.
    pub async fn card_get(&self, key: &str, field: &str) -> Option<Vec<u8>> {
        if self.is_skipped() {
            return None;
        }
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<Option<Vec<u8>>> = conn.hget(key, field).await;
        let hit = self.record(result, "card_get").flatten();
        metrics::counter!("laurel_cache_lookups_total", "field" => field.to_owned(), "result" => if hit.is_some() { "hit" } else { "miss" }).increment(1);
        hit
    }

    /// Fills an owner's field with `value` read at `version`, unless a writer
    /// has since moved the field past it.
    pub async fn card_fill(&self, key: &str, field: &str, version: i64, value: &[u8]) {
        if self.is_skipped() {
            return;
        }
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> = self
            .fill
            .key(key)
            .arg(field)
            .arg(version)
            .arg(value)
            .arg(CARD_TTL_SECS)
            .invoke_async(&mut conn)
            .await;
        self.record(result, "card_fill");
    }

    /// Drops an owner's field after a write that produced `version`.
    /// Returns false when Redis could not be told; the relay tells it later.
    pub async fn card_invalidate(&self, key: &str, field: &str, version: i64) -> bool {
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> = self
            .invalidate
            .key(key)
            .arg(field)
            .arg(version)
            .arg(CARD_TTL_SECS)
            .invoke_async(&mut conn)
            .await;
        self.record(result, "card_invalidate").is_some()
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}
