//! Postgres: one pool per service whose `search_path` is the service's own
//! schema, and migrations applied into that schema.

use std::{str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

/// Migrations of the runtime's own tables (outbox, inbox, idempotency keys).
pub static RUNTIME_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Connection options for `url` with `schema` first on the search path.
pub fn options(url: &str, schema: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .options([("search_path", schema)])
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// A pool for `schema`; connections open lazily so the server starts (not
/// ready) while Postgres is away.
pub fn pool(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options(url, schema)?))
}

/// Creates `schema` if needed, then applies the runtime's migrations and the
/// service's own, both recorded in the schema's `_sqlx_migrations`.
pub async fn migrate(url: &str, schema: &str, service: &Migrator) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&options(url, schema)?).await?;
    // Several replicas may start at once: the lock serialises schema creation.
    sqlx::query("SELECT pg_advisory_lock(hashtext('laurel-migrate'))")
        .execute(&mut conn)
        .await?;
    let result = async {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await?;
        for migrator in [&RUNTIME_MIGRATIONS, service] {
            let shared = Migrator {
                migrations: migrator.migrations.clone(),
                ignore_missing: true,
                // The advisory lock above already serialises replicas.
                locking: false,
                ..Migrator::DEFAULT
            };
            shared.run(&mut conn).await?;
        }
        anyhow::Ok(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('laurel-migrate'))")
        .execute(&mut conn)
        .await?;
    result
}

/// Admission to the pool: at most a few requests per connection hold or wait
/// for one, and the rest are refused at once (RESOURCE_EXHAUSTED with
/// RetryInfo) instead of queueing for seconds. A request admitted but not
/// served within the pool's acquire timeout gets UNAVAILABLE with RetryInfo.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    limit: usize,
    admitted: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The marker inside the error of a refused admission.
#[derive(Debug, thiserror::Error)]
#[error("database overloaded")]
pub struct Overloaded;

/// Requests admitted per pool connection by default.
pub const DEFAULT_ADMITTED_PER_CONNECTION: usize = 8;

impl Db {
    /// Admits `per_connection` requests per connection of `pool`.
    pub fn new(pool: PgPool, per_connection: usize) -> Self {
        let limit = pool.options().get_max_connections() as usize * per_connection.max(1);
        Self {
            pool,
            limit,
            admitted: std::sync::Arc::new(tokio::sync::Semaphore::new(limit)),
        }
    }

    /// The pool itself, for work that is not a client's request.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Requests admitted right now (served or waiting for a connection).
    pub fn admitted(&self) -> usize {
        self.limit - self.admitted.available_permits()
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, sqlx::Error> {
        self.admitted.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("laurel_db_refused_total").increment(1);
            sqlx::Error::Io(std::io::Error::other(Overloaded))
        })
    }

    /// A transaction, or a refusal when too many requests wait already.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let permit = self.admit()?;
        Ok(Tx {
            tx: self.pool.begin().await?,
            _permit: permit,
        })
    }

    /// A connection, or a refusal when too many requests wait already.
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        let permit = self.admit()?;
        Ok(Conn {
            conn: self.pool.acquire().await?,
            _permit: permit,
        })
    }
}

/// An admitted transaction; derefs to the connection.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// An admitted pooled connection; derefs to the connection.
pub struct Conn {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
