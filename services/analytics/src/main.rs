//! `laurel-analytics serve` runs the service; `laurel-analytics migrate`
//! applies migrations and exits (for a Kubernetes Job).

use laurel_analytics::{Config, MIGRATIONS};

fn refuse(error: impl std::fmt::Display) -> ! {
    eprintln!("configuration error: {error}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = laurel_runtime::telemetry::init("laurel-analytics")?;
    match std::env::args().nth(1).as_deref().unwrap_or("serve") {
        "serve" => {
            let config = Config::from_env().unwrap_or_else(|e| refuse(e));
            let app = laurel_analytics::build(config, None).await?;
            app.run(laurel_runtime::server::shutdown_signal()).await
        }
        "migrate" => {
            let (url, schema) = laurel_runtime::config::database_from_env("analytics")
                .unwrap_or_else(|e| refuse(e));
            laurel_runtime::db::migrate(&url, &schema, &MIGRATIONS).await?;
            tracing::info!(%schema, "migrations applied");
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}: use serve or migrate");
            std::process::exit(2);
        }
    }
}
