//! The Laurel member service: members, channel identities, consents, tags,
//! referrals, merges, erasure and the activity log.

pub mod domain;
pub mod error;
mod grpc;
pub mod members;
pub mod pii;
pub mod repo;
pub mod requests;

use std::{future::Future, net::SocketAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use laurel_proto::member::v1::member_service_server::MemberServiceServer;
use laurel_runtime::{
    cache::Redis,
    clock::{SharedClock, SystemClock},
    config::{ConfigError, RuntimeConfig, env_opt},
    db,
    events::relay::{Relay, RelayConfig},
    server::{ServiceRoutes, serve},
};
use sqlx::migrate::Migrator;
use tokio::{net::TcpListener, sync::watch};

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

/// A built member service, bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    config: Config,
    members: Members,
}

impl Application {
    /// Applies migrations, connects, and binds the gRPC port (port 0 picks
    /// a free one).
    pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<Self> {
        let rt = &config.runtime;
        db::migrate(&rt.database_url, &rt.db_schema, &MIGRATIONS).await?;
        let pool = db::pool(&rt.database_url, &rt.db_schema, rt.db_max_connections)?;
        let redis = Redis::new(&rt.redis_url, &rt.redis_prefix)?;
        if let Some(addr) = rt.metrics_addr {
            laurel_runtime::metrics::install_exporter(addr)?;
        }
        let listener = TcpListener::bind(rt.grpc_addr).await?;
        let members = Members {
            pool,
            redis,
            pii: Pii::new(&config.pii_key),
            clock: clock.unwrap_or_else(|| Arc::new(SystemClock)),
            phone_region: config.phone_region,
        };
        Ok(Self {
            listener,
            config,
            members,
        })
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves (and relays the outbox, when configured) until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let rt = &self.config.runtime;
        let (stop_tx, stop_rx) = watch::channel(false);
        let relay = if rt.run_relay {
            let mut relay_config = RelayConfig::new(&rt.redis_prefix, &rt.db_schema);
            relay_config.card_field = Some(members::CARD_FIELD);
            let relay = Relay::new(self.members.pool.clone(), &rt.redis_url, relay_config)?;
            Some(tokio::spawn(relay.run(stop_rx)))
        } else {
            None
        };
        let pool = self.members.pool.clone();
        let routes = ServiceRoutes {
            routes: tonic::service::Routes::new(MemberServiceServer::new(self.members)),
            names: vec!["laurel.member.v1.MemberService"],
        };
        tracing::info!(addr = %self.listener.local_addr()?, "member service listening");
        let result = serve(rt, self.listener, routes, pool, shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        result
    }
}
