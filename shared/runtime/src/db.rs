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
        .acquire_timeout(Duration::from_secs(3))
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
