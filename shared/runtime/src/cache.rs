//! Redis: one shared connection manager with short timeouts, and a breaker
//! that skips Redis for a moment after a failure, so a dead Redis makes
//! calls slower for an instant, never failing. The member card built on it
//! is in [`crate::card`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::aio::ConnectionManager;

/// Shared Redis access for one service.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    url: Arc<str>,
    prefix: Arc<str>,
    down_until_ms: Arc<AtomicU64>,
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
}
