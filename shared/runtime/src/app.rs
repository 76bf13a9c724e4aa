//! The application builder: the one way to build a Laurel service. It owns
//! start-up (migrations, Postgres pool, Redis, metrics, the gRPC port),
//! readiness, the supervision of background jobs, and the shutdown order.
//!
//! ```text
//! let mut app = App::build(config.runtime, &MIGRATIONS).await?;
//! let cards = app.cards::<pb::Member>(CardField::Member);
//! let service = Members::new(app.pool().clone(), cards, ...);
//! app.grpc(MemberServiceServer::new(service))
//!     .relay(Some(CardField::Member))
//!     .run(shutdown_signal())
//!     .await
//! ```
//!
//! Shutdown order: readiness turns NOT_SERVING, the gRPC server stops taking
//! calls and gives in-flight ones the grace period, then background jobs are
//! told to stop and awaited, then the pool closes. A background job that
//! fails or panics is logged and restarted with backoff; one that keeps
//! failing (more than [`MAX_FAILURES_PER_MINUTE`] times a minute) stops the
//! process with an error, so it never dies silently while the pod stays
//! SERVING.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sqlx::{PgPool, migrate::Migrator};
use tokio::{net::TcpListener, sync::watch};
use tonic::{body::Body, server::NamedService, service::Routes};

use crate::{
    api_key::Scope,
    auth::default_scope,
    cache::Redis,
    card::{CardField, Cards, LocalLimits},
    clock::{SharedClock, SystemClock},
    config::RuntimeConfig,
    db,
    events::{
        consumer::{Consumer, ConsumerConfig},
        dead_letter_key,
        relay::{Relay, RelayConfig},
        retention::RetentionConfig,
        router::Router,
        stream_key,
    },
    idempotency::{self, Idempotency},
    server,
};

/// Failures a minute after which a background job stops the process.
pub const MAX_FAILURES_PER_MINUTE: usize = 5;

type JobFn =
    Arc<dyn Fn(watch::Receiver<bool>) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

struct Job {
    name: String,
    run: JobFn,
}

/// A service being assembled: resources are ready and the port is bound.
pub struct App {
    config: RuntimeConfig,
    pool: PgPool,
    db: db::Db,
    redis: Redis,
    clock: SharedClock,
    listener: TcpListener,
    routes: Routes,
    names: Vec<&'static str>,
    jobs: Vec<Job>,
    retention: RetentionConfig,
    scopes: fn(&str) -> Scope,
}

impl App {
    /// Applies the runtime's and the service's migrations, opens the pool and
    /// Redis, starts the metrics endpoint and binds the gRPC port (port 0
    /// picks a free one).
    pub async fn build(
        config: RuntimeConfig,
        migrations: &'static Migrator,
    ) -> anyhow::Result<Self> {
        db::migrate(&config.database_url, &config.db_schema, migrations).await?;
        let pool = db::pool(
            &config.database_url,
            &config.db_schema,
            config.db_max_connections,
        )?;
        let redis = Redis::new(&config.redis_url, &config.redis_prefix)?;
        if let Some(addr) = config.metrics_addr {
            crate::metrics::install_exporter(addr)?;
        }
        let listener = TcpListener::bind(config.grpc_addr).await?;
        // The service's own stream is trimmed by its owner.
        let retention = RetentionConfig::from_env()?
            .with_stream(stream_key(&config.redis_prefix, config.service));
        Ok(Self {
            retention,
            scopes: default_scope,
            db: db::Db::new(pool.clone(), db::DEFAULT_ADMITTED_PER_CONNECTION),
            config,
            pool,
            redis,
            clock: Arc::new(SystemClock),
            listener,
            routes: Routes::default(),
            names: Vec::new(),
            jobs: Vec::new(),
        })
    }

    /// Uses `clock` instead of the system clock (tests move it).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The shared settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The service's pool (its schema first on the search path).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool behind admission control: what request handlers use.
    pub fn db(&self) -> &db::Db {
        &self.db
    }

    /// Redis with the service's key prefix.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The clock.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The idempotency store; request digests are keyed with `digest_key`.
    /// Keys live for the idempotency retention (24 hours by default).
    pub fn idempotency(&self, digest_key: &[u8]) -> Idempotency {
        let window = chrono::Duration::from_std(self.retention.idempotency)
            .unwrap_or(idempotency::DEFAULT_WINDOW);
        Idempotency::new(window, digest_key, self.clock.clone())
    }

    /// The card field this service owns, with its in-process copy; the
    /// invalidation listener runs as a background job.
    pub fn cards<T: Send + Sync + 'static>(&mut self, field: CardField) -> Cards<T> {
        let cards = Cards::new(self.redis.clone(), field, LocalLimits::default());
        let listener = cards.clone();
        self.spawn_job(format!("card-listener-{}", field.name()), move |stop| {
            let cards = listener.clone();
            async move { cards.listen(stop).await }
        });
        cards
    }

    /// Serves a gRPC service; its name joins the health statuses.
    pub fn grpc<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// Relays this service's outbox to its stream (when `LAUREL_RELAY` is
    /// on), invalidating `card_field` at the version each event carries.
    pub fn relay(mut self, card_field: Option<CardField>) -> Self {
        if !self.config.run_relay {
            return self;
        }
        let mut config = RelayConfig::new(&self.config.redis_prefix, &self.config.db_schema);
        config.card_field = card_field.map(CardField::name);
        let pool = self.pool.clone();
        let redis_url = self.config.redis_url.clone();
        self.spawn_job("outbox-relay".to_owned(), move |stop| {
            let relay = Relay::new(pool.clone(), &redis_url, config.clone());
            async move {
                relay?.run(stop).await;
                Ok(())
            }
        });
        self
    }

    /// Consumes the streams of `sources` as consumer group `group`, each
    /// event applied through `router` exactly once; several replicas share
    /// the work.
    pub fn consumer(mut self, group: &str, sources: &[&str], router: Router) -> Self {
        let config = ConsumerConfig::new(&self.config.redis_prefix, group, sources);
        self.retention = std::mem::take(&mut self.retention)
            .with_dead_letter_stream(dead_letter_key(&self.config.redis_prefix, group));
        let router = Arc::new(router);
        let pool = self.pool.clone();
        let redis_url = self.config.redis_url.clone();
        self.spawn_job(format!("consumer-{group}"), move |stop| {
            let (pool, redis_url, config) = (pool.clone(), redis_url.clone(), config.clone());
            let router = router.clone();
            let mut stop = stop;
            async move {
                // Redis away at start-up is an outage to wait out, not a
                // failure of the job (which would end the process).
                let consumer = loop {
                    match Consumer::new(pool.clone(), &redis_url, config.clone(), router.clone())
                        .await
                    {
                        Ok(consumer) => break consumer,
                        Err(error) => {
                            tracing::warn!(%error, "consumer cannot join its group yet");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = stop.changed() => return Ok(()),
                            }
                        }
                    }
                };
                consumer.run(stop).await;
                Ok(())
            }
        });
        self
    }

    /// Says which scope (read, write, admin) each gRPC path needs, where the
    /// default by method name (Get/List/Lookup read; Export/Erase/Merge
    /// admin; the rest write) does not fit.
    pub fn scopes(mut self, scopes: fn(&str) -> Scope) -> Self {
        self.scopes = scopes;
        self
    }

    /// Runs `job` in the background until shutdown, under supervision.
    pub fn job<F, Fut>(mut self, name: &str, job: F) -> Self
    where
        F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_job(name.to_owned(), job);
        self
    }

    fn spawn_job<F, Fut>(&mut self, name: String, job: F)
    where
        F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.jobs.push(Job {
            name,
            run: Arc::new(move |stop| Box::pin(job(stop))),
        });
    }

    /// Serves until `shutdown` completes or a background job fails for
    /// good; returns an error in the second case.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<()>(1);
        let supervisors: Vec<_> = self
            .jobs
            .into_iter()
            .map(|job| {
                tokio::spawn(supervise(
                    job,
                    stop_rx.clone(),
                    failure.clone(),
                    fatal_tx.clone(),
                ))
            })
            .collect();
        drop(fatal_tx);
        tracing::info!(service = self.config.service, addr = %self.listener.local_addr()?, "listening");
        let until = async move {
            tokio::select! {
                _ = shutdown => {}
                Some(()) = fatal_rx.recv() => {}
            }
        };
        let served = server::serve(
            &self.config,
            self.listener,
            server::ServiceRoutes {
                routes: self.routes,
                names: self.names,
                scopes: self.scopes,
            },
            self.pool.clone(),
            until,
        )
        .await;
        let _ = stop_tx.send(true);
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
        self.pool.close().await;
        served?;
        match failure.lock().expect("failure lock").take() {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => Ok(()),
        }
    }
}

async fn supervise(
    job: Job,
    mut stop: watch::Receiver<bool>,
    failure: Arc<Mutex<Option<String>>>,
    fatal: tokio::sync::mpsc::Sender<()>,
) {
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::spawn((job.run)(stop.clone())).await;
        if *stop.borrow() {
            if let Ok(Err(error)) = outcome {
                tracing::warn!(job = %job.name, %error, "background job failed while stopping");
            }
            return;
        }
        let error = match outcome {
            Ok(Ok(())) => "ended before shutdown".to_owned(),
            Ok(Err(error)) => format!("{error:#}"),
            Err(join) if join.is_panic() => "panicked".to_owned(),
            Err(join) => join.to_string(),
        };
        metrics::counter!("laurel_job_failures_total", "job" => job.name.clone()).increment(1);
        tracing::error!(job = %job.name, %error, "background job failed");
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            failures.pop_front();
        }
        if failures.len() > MAX_FAILURES_PER_MINUTE {
            let reason = format!("background job {} keeps failing: {error}", job.name);
            tracing::error!(job = %job.name, "stopping the process");
            failure.lock().expect("failure lock").get_or_insert(reason);
            let _ = fatal.try_send(());
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
