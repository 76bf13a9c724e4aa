//! Test support: the real Postgres and Redis the tests run against (from
//! `DATABASE_URL`/`REDIS_URL`, or the local defaults), a fresh schema and
//! Redis key prefix per test, a private Redis server that a test may stop,
//! and an `eventually` helper for asynchronous effects.

use std::{future::Future, net::TcpListener, process::Stdio, sync::Once, time::Duration};

use uuid::Uuid;

/// Postgres for tests.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Redis for tests.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A schema name no other test uses.
pub fn fresh_schema(service: &str) -> String {
    format!("t_{service}_{}", Uuid::now_v7().simple())
}

/// A Redis key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("t:{}", Uuid::now_v7().simple())
}

/// Installs tracing once per test binary; logs only when `TEST_LOG` is set.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(guard) = laurel_runtime::telemetry::init_for_tests("laurel-test") {
            // The test process ends without a flush; keep the provider alive.
            std::mem::forget(guard);
        }
    });
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not true within {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Redis server of the test's own, which the test may stop and start.
pub struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` (or `REDIS_SERVER_BIN`) on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.resume().await?;
        Ok(redis)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned());
        let child = tokio::process::Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let url = self.url();
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("private redis did not start on port {}", self.port)
    }
}
