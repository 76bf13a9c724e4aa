//! Test support: the real Postgres and Redis the tests run against (from
//! `DATABASE_URL`/`REDIS_URL`, or the local defaults), a fresh schema and
//! Redis key prefix per test, a harness that runs any service built on
//! [`laurel_runtime::app::App`] and drops its schema afterwards, a private
//! Redis server that a test may stop, and an `eventually` helper for
//! asynchronous effects; [`grpc`] has what tests say to a service and read
//! from its answers.

pub mod grpc;

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    process::Stdio,
    sync::Once,
    time::Duration,
};

use laurel_runtime::{app::App, config::RuntimeConfig};
use tokio::sync::oneshot;
use tonic::transport::Channel;
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

/// The production settings of `service` with what a test must not share: a
/// fresh schema and Redis prefix, a free port, no metrics port, and short
/// timeouts.
pub fn runtime_config(service: &'static str) -> RuntimeConfig {
    RuntimeConfig {
        service,
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_addr: None,
        database_url: database_url(),
        db_schema: fresh_schema(service),
        db_max_connections: 8,
        redis_url: redis_url(),
        redis_prefix: fresh_prefix(),
        default_program: "default".into(),
        api_keys: Vec::new(),
        // Tests that need keys set them; the rest run as development.
        dev_mode: true,
        request_timeout: Duration::from_secs(10),
        max_concurrent_requests: 256,
        shutdown_grace: Duration::from_secs(5),
        run_relay: true,
    }
}

/// A service running inside a test, with a gRPC channel to it. Dropping it
/// stops the service and drops its schema.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A connected channel.
    pub channel: Channel,
    /// Its Postgres schema.
    pub schema: String,
    /// Its Redis key prefix.
    pub prefix: String,
    keep_schema: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Runs a built service until the test stops or drops it.
pub async fn start(app: App) -> Running {
    init_tracing();
    let addr = app.local_addr();
    let schema = app.config().db_schema.clone();
    let prefix = app.config().redis_prefix.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects to the service");
    Running {
        addr,
        channel,
        schema,
        prefix,
        keep_schema: false,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Running {
    /// Leaves the schema behind on drop (another instance shares it).
    pub fn keep_schema(&mut self) {
        self.keep_schema = true;
    }

    /// Stops the service gracefully and returns how its run ended.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Waits for the service to end by itself (a failing job stops it).
    pub async fn exited(&mut self) -> anyhow::Result<()> {
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if !self.keep_schema {
            drop_schema(&self.schema);
        }
    }
}

/// Drops a test schema, on a thread of its own so it works from `Drop`
/// inside any runtime.
pub fn drop_schema(schema: &str) {
    let schema = schema.to_owned();
    let done = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use sqlx::Connection;
            let Ok(options) = laurel_runtime::db::options(&database_url(), "public") else {
                return;
            };
            if let Ok(mut conn) = sqlx::PgConnection::connect_with(&options).await {
                let _ = sqlx::query("SET lock_timeout = '5s'")
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
        });
    });
    let _ = done.join();
}
