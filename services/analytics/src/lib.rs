//! The Laurel analytics service: its own fact tables fed by every other
//! service's events, per-member metrics, RFM, customer lifetime value,
//! lifecycle stages and churn early warning, recommendations, KPIs and
//! alerts.
//!
//! The models are plain functions in `laurel-analytics-models`; this crate
//! loads the facts, calls them and stores what they return.

pub mod alerts;
pub mod bootstrap;
pub mod clv;
mod copy_rows;
pub mod error;
pub mod facts;
mod grpc;
pub mod kpi;
pub mod metrics;
pub mod recommend;
pub mod rfm;
pub mod settings;
pub mod value;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use laurel_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use laurel_runtime::{
    api_key::Scope,
    app::App,
    auth::default_scope,
    cache::Redis,
    clock::SharedClock,
    config::{ConfigError, RuntimeConfig, env_opt, env_or},
    db::Db,
    idempotency::Idempotency,
    subscription,
};
use sqlx::migrate::Migrator;

/// This service's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The stream source of this service's events.
pub const SOURCE: &str = "analytics";

/// The analytics service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shared settings.
    pub runtime: RuntimeConfig,
    /// How often the background jobs look for work
    /// (`LAUREL_ANALYTICS_JOB_INTERVAL_MS`, default 1000).
    pub job_interval: Duration,
    /// Least time between two recommendation builds
    /// (`LAUREL_ANALYTICS_RECOMMEND_INTERVAL_S`, default 3600).
    pub recommend_interval: Duration,
    /// How long a replica serves a recommendation build and a member's
    /// answer again (`LAUREL_ANALYTICS_RECOMMEND_CACHE_MS`, default 30000).
    pub recommend_cache: Duration,
    /// Whether a replica keeps members' balances and recent items in memory
    /// for recommendations (`LAUREL_ANALYTICS_RECOMMEND_MEMORY`, `on` by
    /// default; `off` reads them from Postgres for every answer).
    pub recommend_memory: bool,
    /// How long before a view of members is read an announced change still
    /// keeps that member out of it (`LAUREL_ANALYTICS_RECOMMEND_GRACE_MS`,
    /// default 60000; see `recommend::memory`).
    pub recommend_grace: Duration,
    /// The points service, for the rewards of the next best offer
    /// (`LAUREL_POINTS_ADDR`; `off` or unset: no offer).
    pub points_addr: Option<String>,
    /// API key for calls to the points service (`LAUREL_POINTS_API_KEY`).
    pub points_api_key: Option<String>,
    /// Where alerts are delivered (`LAUREL_ANALYTICS_WEBHOOK_URL` and
    /// `LAUREL_ANALYTICS_WEBHOOK_SECRET`); none keeps them in `ListAlerts`.
    pub webhook: Option<alerts::webhook::Webhook>,
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let runtime = RuntimeConfig::from_env("analytics")?;
        Ok(Self {
            job_interval: Duration::from_millis(env_or(
                "LAUREL_ANALYTICS_JOB_INTERVAL_MS",
                1000u64,
            )?),
            recommend_interval: Duration::from_secs(env_or(
                "LAUREL_ANALYTICS_RECOMMEND_INTERVAL_S",
                3600u64,
            )?),
            recommend_cache: Duration::from_millis(env_or(
                "LAUREL_ANALYTICS_RECOMMEND_CACHE_MS",
                30_000u64,
            )?),
            recommend_memory: env_or("LAUREL_ANALYTICS_RECOMMEND_MEMORY", "on".to_owned())?
                != "off",
            recommend_grace: Duration::from_millis(env_or(
                "LAUREL_ANALYTICS_RECOMMEND_GRACE_MS",
                60_000u64,
            )?),
            points_addr: env_opt("LAUREL_POINTS_ADDR").filter(|a| a != "off"),
            points_api_key: env_opt("LAUREL_POINTS_API_KEY"),
            webhook: alerts::webhook::Webhook::from_env(runtime.dev_mode)?,
            runtime,
        })
    }
}

/// The service's state, shared by the handlers, the consumer and the jobs.
#[derive(Clone)]
pub struct Analytics {
    pub(crate) db: Db,
    pub(crate) redis: Redis,
    /// Where changes of members' facts are announced.
    pub(crate) member_changes: Arc<str>,
    pub(crate) idempotency: Idempotency,
    pub(crate) clock: SharedClock,
    pub(crate) config: Config,
    pub(crate) local_settings: settings::Local,
    pub(crate) recommendations: recommend::Models,
    pub(crate) rewards: recommend::Rewards,
    pub(crate) rfm_runs: rfm::stored::Runs,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics").finish_non_exhaustive()
    }
}

impl Analytics {
    /// The clock's time, in whole microseconds (what Postgres stores).
    pub fn now(&self) -> DateTime<Utc> {
        let now = self.clock.now();
        DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
    }
}

/// Digest key of stored requests: analytics requests hold no secrets, so a
/// fixed key only keeps digests comparable.
const REQUEST_DIGEST_KEY: &[u8] = b"laurel-analytics-request-digest";

/// Operators' calls need the admin scope; reports are read by BI tools.
fn scopes(path: &str) -> Scope {
    match path.rsplit('/').next().unwrap_or_default() {
        "PutSettings" | "RecomputeRfm" | "FitClvModel" | "PutAlertRule" => Scope::Admin,
        "ExportReport" => Scope::Read,
        _ => default_scope(path),
    }
}

/// Builds the analytics service on the shared runtime: bound to its port,
/// ready to `run`.
pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<App> {
    let mut app = App::build(config.runtime.clone(), &MIGRATIONS).await?;
    if let Some(clock) = clock {
        app = app.with_clock(clock);
    }
    let analytics = Analytics {
        db: app.db().clone(),
        redis: app.redis().clone(),
        member_changes: recommend::memory::channel(app.redis().prefix()).into(),
        idempotency: app.idempotency(REQUEST_DIGEST_KEY),
        clock: app.clock(),
        config: config.clone(),
        local_settings: settings::Local::default(),
        recommendations: recommend::Models::new(
            config.recommend_cache,
            recommend::memory::Memory::new(
                config.recommend_memory && !app.redis().is_skipped(),
                config.recommend_grace,
            ),
        ),
        rewards: recommend::Rewards::new(
            config.points_addr.as_deref(),
            config.points_api_key.clone(),
            config.recommend_cache,
        )?,
        rfm_runs: rfm::stored::Runs::default(),
    };
    let app = alerts::schedule(app, analytics.clone());
    let app = if config.recommend_memory && !app.redis().is_skipped() {
        let (url, channel) = (
            app.redis().url().to_owned(),
            analytics.member_changes.clone(),
        );
        let memory = analytics.recommendations.memory.clone();
        app.job("member-changes", move |stop| {
            let (url, channel, memory) = (url.clone(), channel.clone(), memory.clone());
            async move { subscription::listen(&url, &channel, &memory, stop).await }
        })
    } else {
        app
    };
    let app = app
        .grpc(AnalyticsServiceServer::new(analytics.clone()))
        .scopes(scopes)
        .relay(None)
        .consumer(
            "analytics",
            &["member", "points", "tier"],
            facts::router(analytics.clone()),
        );
    Ok(value::jobs::schedule(app, analytics, config.job_interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_calls_need_admin_and_reports_read() {
        let path = |m: &str| format!("/laurel.analytics.v1.AnalyticsService/{m}");
        assert_eq!(scopes(&path("PutSettings")), Scope::Admin);
        assert_eq!(scopes(&path("FitClvModel")), Scope::Admin);
        assert_eq!(scopes(&path("ExportReport")), Scope::Read);
        assert_eq!(scopes(&path("GetMemberMetrics")), Scope::Read);
        assert_eq!(scopes(&path("ListMembersAtRisk")), Scope::Read);
    }
}
