//! The Laurel member service: members, channel identities, consents, tags,
//! referrals, merges, erasure and the activity log.

pub mod activity_kind;
pub mod codes;
pub mod domain;
pub mod error;
mod grpc;
pub mod members;
pub mod merging;
pub mod money;
pub mod pii;
pub mod repo;
pub mod requests;

use std::{future::Future, net::SocketAddr, sync::Arc};

use laurel_proto::member::v1::member_service_server::MemberServiceServer;
use laurel_runtime::{
    cache::Redis,
    clock::{SharedClock, SystemClock},
    config::{ConfigError, RuntimeConfig, env_opt, env_or},
    db,
    events::relay::{Relay, RelayConfig},
    server::{ServiceRoutes, serve},
};
use sqlx::migrate::Migrator;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    members::Members,
    pii::{Keyring, Pii},
};

/// This service's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Development key, used only with `LAUREL_DEV_MODE=1` and no key configured.
const DEV_PII_KEY: [u8; 32] = *b"laurel-development-key-not-safe!";

/// The member service's configuration. Its `Debug` names key ids, never keys.
#[derive(Clone)]
pub struct Config {
    /// Shared settings.
    pub runtime: RuntimeConfig,
    /// Master keys for personal data (`LAUREL_PII_KEYS` as
    /// `id:base64,id:base64`, the first sealing, or one base64 key in
    /// `LAUREL_PII_KEY`); see [`pii`] for the rotation procedure.
    pub pii_keys: Keyring,
    /// Region for phone numbers without a country code
    /// (`LAUREL_DEFAULT_PHONE_REGION`, ISO 3166 alpha-2).
    pub phone_region: Option<phonenumber::country::Id>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("runtime", &self.runtime)
            .field("pii_keys", &self.pii_keys)
            .field("phone_region", &self.phone_region)
            .finish()
    }
}

/// A yes/no environment switch: `1`, `true`, `yes`, `on` or their opposites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Switch(bool);

impl std::str::FromStr for Switch {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Self(true)),
            "0" | "false" | "no" | "off" => Ok(Self(false)),
            _ => Err("must be 1 or 0"),
        }
    }
}

/// The PII keyring from `LAUREL_PII_KEYS` or `LAUREL_PII_KEY`. Without either
/// the service refuses to start, unless `LAUREL_DEV_MODE=1` allows the
/// development key.
fn pii_keys_from_env() -> Result<Keyring, ConfigError> {
    let refuse = |name: &str, reason: String| ConfigError {
        name: name.into(),
        value: "<redacted>".into(),
        reason,
    };
    match (env_opt("LAUREL_PII_KEYS"), env_opt("LAUREL_PII_KEY")) {
        (Some(_), Some(_)) => Err(refuse(
            "LAUREL_PII_KEYS",
            "set LAUREL_PII_KEYS or LAUREL_PII_KEY, not both".into(),
        )),
        (Some(ring), None) => Keyring::parse(&ring).map_err(|r| refuse("LAUREL_PII_KEYS", r)),
        (None, Some(key)) => pii::decode_key(&key).map(Keyring::single).ok_or_else(|| {
            refuse(
                "LAUREL_PII_KEY",
                "must be base64 of exactly 32 bytes".into(),
            )
        }),
        (None, None) => {
            if env_or("LAUREL_DEV_MODE", Switch(false))?.0 {
                tracing::warn!(
                    "LAUREL_DEV_MODE=1 and no LAUREL_PII_KEYS: personal data is encrypted with the PUBLIC development key; never use this outside development"
                );
                eprintln!(
                    "WARNING: LAUREL_DEV_MODE=1: personal data is encrypted with the public development key"
                );
                Ok(Keyring::single(DEV_PII_KEY))
            } else {
                Err(ConfigError {
                    name: "LAUREL_PII_KEYS".into(),
                    value: String::new(),
                    reason: "unset: set LAUREL_PII_KEYS (or LAUREL_PII_KEY) to the personal-data keys, or LAUREL_DEV_MODE=1 to use the development key".into(),
                })
            }
        }
    }
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let runtime = RuntimeConfig::from_env("member")?;
        let pii_keys = pii_keys_from_env()?;
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
            pii_keys,
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
            pii: Pii::new(&config.pii_keys),
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
        let relay = rt.run_relay.then(|| {
            let mut relay_config = RelayConfig::new(&rt.redis_prefix, &rt.db_schema);
            relay_config.card_field = Some(members::CARD_FIELD);
            let relay = Relay::new(
                self.members.pool.clone(),
                self.members.redis.connection(),
                relay_config,
            );
            tokio::spawn(relay.run(stop_rx))
        });
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
