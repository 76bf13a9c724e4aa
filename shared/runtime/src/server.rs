//! gRPC server assembly shared by every service: health (NOT_SERVING while
//! Postgres is unreachable), reflection (v1 and v1alpha), the echo baseline,
//! request spans and metrics, load shedding, authentication and programme
//! context, request timeouts, and graceful shutdown.

use std::{future::Future, time::Duration};

use laurel_proto::common::v1::{
    EchoRequest, EchoResponse,
    echo_service_server::{EchoService, EchoServiceServer},
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::{net::TcpListener, sync::watch};
use tonic::{Request, Response, Status, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{api_key::Scope, config::RuntimeConfig, layers::RuntimeLayer};

/// The no-op RPC the benchmark compares every path with.
#[derive(Debug, Default)]
pub struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let EchoRequest { payload } = request.into_inner();
        Ok(Response::new(EchoResponse { payload }))
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

/// The service-specific parts handed to [`serve`].
pub struct ServiceRoutes {
    /// The service's gRPC services.
    pub routes: Routes,
    /// Their full names, for health status.
    pub names: Vec<&'static str>,
    /// The scope each gRPC path needs (`auth::default_scope` by method name).
    pub scopes: fn(&str) -> Scope,
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Follows Postgres on a connection of its own, so a pool exhausted by
/// load never turns a busy pod NOT_SERVING; the pool only feeds gauges.
async fn watch_readiness(
    reporter: HealthReporter,
    names: Vec<&'static str>,
    config: RuntimeConfig,
    pool: PgPool,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    let mut conn: Option<PgConnection> = None;
    while !*stop.borrow() {
        let ping = tokio::time::timeout(Duration::from_secs(2), async {
            if conn.is_none() {
                let options = crate::db::options(&config.database_url, &config.db_schema)?;
                conn = Some(PgConnection::connect_with(&options).await?);
            }
            let c = conn.as_mut().expect("connected above");
            sqlx::query("SELECT 1").execute(c).await.map(|_| ())
        })
        .await;
        let status = match ping {
            Ok(Ok(())) => ServingStatus::Serving,
            _ => {
                conn = None;
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            tracing::info!(?status, "readiness changed");
            set_all(&reporter, &names, status).await;
            last = Some(status);
        }
        metrics::gauge!("laurel_db_pool_connections").set(pool.size() as f64);
        metrics::gauge!("laurel_db_pool_idle_connections").set(pool.num_idle() as f64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Serves `service` on `listener` until `shutdown` completes, then stops
/// taking calls, marks itself NOT_SERVING and gives in-flight calls up to
/// the configured grace period.
pub async fn serve(
    config: &RuntimeConfig,
    listener: TcpListener,
    service: ServiceRoutes,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, &service.names, ServingStatus::NotServing).await;
    // Liveness only says the process answers; readiness ("" and the service
    // names) follows Postgres.
    reporter
        .set_service_status("liveness", ServingStatus::Serving)
        .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = tokio::spawn(watch_readiness(
        reporter.clone(),
        service.names.clone(),
        config.clone(),
        pool,
        stop_rx,
    ));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(laurel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(laurel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let routes = service
        .routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(EchoServiceServer::new(Echo));

    let layers = RuntimeLayer::with_scopes(config, service.scopes)?;

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = config.shutdown_grace;
    let health_reporter = reporter.clone();
    let names = service.names.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        set_all(&health_reporter, &names, ServingStatus::NotServing).await;
        let _ = drain_tx.send(());
    });
    let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
    // The builder's tcp_nodelay applies only to listeners it binds itself:
    // the accepted sockets of our own listener get it here, or every answer
    // waits out Nagle and the client's delayed ACK (about 40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = signal_rx.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        _ = drain_rx => {
            let _ = signal_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("grace period over, dropping remaining calls");
                    Ok(())
                }
            }
        }
    };
    let _ = readiness.await;
    result.map_err(Into::into)
}
