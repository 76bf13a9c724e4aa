//! `laurel-analytics serve` runs the service; `laurel-analytics migrate`
//! applies migrations and exits (for a Kubernetes Job); `laurel-analytics
//! bootstrap` reads the history older than the streams from the member
//! service's exports (`LAUREL_MEMBER_ADDR`, `LAUREL_MEMBER_API_KEY` with
//! the admin scope, `LAUREL_BOOTSTRAP_PROGRAM`, default `default`) and the
//! points service's (`LAUREL_POINTS_ADDR`, `LAUREL_POINTS_API_KEY` with the
//! admin scope; unset or `off` skips the points movements).

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
        "bootstrap" => {
            let (url, schema) = laurel_runtime::config::database_from_env("analytics")
                .unwrap_or_else(|e| refuse(e));
            let db = laurel_runtime::db::pool(&url, &schema, 4)?;
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let source = laurel_analytics::bootstrap::Source {
                member_addr: env("LAUREL_MEMBER_ADDR")
                    .unwrap_or_else(|| "http://127.0.0.1:50051".into()),
                api_key: env("LAUREL_MEMBER_API_KEY"),
                points_addr: env("LAUREL_POINTS_ADDR").filter(|a| a != "off"),
                points_api_key: env("LAUREL_POINTS_API_KEY"),
                program: env("LAUREL_BOOTSTRAP_PROGRAM").unwrap_or_else(|| "default".into()),
            };
            let report = laurel_analytics::bootstrap::run(&db, &source).await?;
            tracing::info!(?report, "bootstrap done");
            println!(
                "bootstrap: {} members, {} activities, {} points movements read",
                report.members, report.activities, report.movements
            );
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}: use serve, migrate or bootstrap");
            std::process::exit(2);
        }
    }
}
