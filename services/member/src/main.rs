//! `laurel-member serve` runs the service; `laurel-member migrate` applies
//! migrations and exits (for a Kubernetes Job).

use laurel_member::{Config, MIGRATIONS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = laurel_runtime::telemetry::init("laurel-member")?;
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            std::process::exit(2);
        }
    };
    match std::env::args().nth(1).as_deref().unwrap_or("serve") {
        "serve" => {
            let app = laurel_member::build(config, None).await?;
            app.run(laurel_runtime::server::shutdown_signal()).await
        }
        "migrate" => {
            let rt = &config.runtime;
            laurel_runtime::db::migrate(&rt.database_url, &rt.db_schema, &MIGRATIONS).await?;
            tracing::info!(schema = %rt.db_schema, "migrations applied");
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}: use serve or migrate");
            std::process::exit(2);
        }
    }
}
