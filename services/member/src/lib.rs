//! The Laurel member service: members, channel identities, consents, tags,
//! referrals, merges, erasure and the activity log.

pub mod domain;
pub mod error;
mod grpc;
pub mod members;
pub mod pii;
pub mod repo;
pub mod requests;

use base64::{Engine, engine::general_purpose::STANDARD};
use laurel_proto::member::v1::member_service_server::MemberServiceServer;
use laurel_runtime::{
    app::App,
    card::CardField,
    clock::SharedClock,
    config::{ConfigError, RuntimeConfig, env_opt},
};
use sqlx::migrate::Migrator;

use crate::{members::Members, pii::Pii};

/// This service's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Development key used when `LAUREL_PII_KEY` is unset; never for production.
const DEV_PII_KEY: [u8; 32] = *b"laurel-development-key-not-safe!";

/// The member service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shared settings.
    pub runtime: RuntimeConfig,
    /// Master key for personal data (`LAUREL_PII_KEY`, base64 of 32 bytes).
    pub pii_key: [u8; 32],
    /// Region for phone numbers without a country code
    /// (`LAUREL_DEFAULT_PHONE_REGION`, ISO 3166 alpha-2).
    pub phone_region: Option<phonenumber::country::Id>,
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let runtime = RuntimeConfig::from_env("member")?;
        let pii_key = match env_opt("LAUREL_PII_KEY") {
            None => {
                tracing::warn!("LAUREL_PII_KEY is unset: using the development key");
                DEV_PII_KEY
            }
            Some(raw) => STANDARD
                .decode(raw.trim())
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| ConfigError {
                    name: "LAUREL_PII_KEY".into(),
                    value: "<redacted>".into(),
                    reason: "must be base64 of exactly 32 bytes".into(),
                })?,
        };
        let phone_region = match env_opt("LAUREL_DEFAULT_PHONE_REGION") {
            None => None,
            Some(raw) => {
                Some(
                    raw.trim()
                        .to_ascii_uppercase()
                        .parse()
                        .map_err(|_| ConfigError {
                            name: "LAUREL_DEFAULT_PHONE_REGION".into(),
                            value: raw.clone(),
                            reason: "must be an ISO 3166 alpha-2 country code".into(),
                        })?,
                )
            }
        };
        Ok(Self {
            runtime,
            pii_key,
            phone_region,
        })
    }
}

/// Builds the member service on the shared runtime: bound to its port,
/// ready to `run`.
pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<App> {
    let mut app = App::build(config.runtime.clone(), &MIGRATIONS).await?;
    if let Some(clock) = clock {
        app = app.with_clock(clock);
    }
    let members = Members {
        pool: app.pool().clone(),
        redis: app.redis().clone(),
        pii: Pii::new(&config.pii_key),
        clock: app.clock(),
        phone_region: config.phone_region,
    };
    Ok(app
        .grpc(MemberServiceServer::new(members))
        .relay(Some(CardField::Member)))
}
