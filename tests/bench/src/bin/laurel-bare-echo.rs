//! laurel-bare-echo: `laurel.common.v1.EchoService` with health and reflection
//! on plain tonic, without any Laurel layer (authentication, programme,
//! metrics, shedding, timeout, tracing). The benchmark measures Laurel's echo
//! against it to price those layers.
//!
//! Usage: `laurel-bare-echo [ADDR]` (default `127.0.0.1:50061`, or
//! `LAUREL_GRPC_ADDR`). Stops on SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;
use laurel_proto::common::v1::echo_service_server::{EchoService, EchoServiceServer};
use laurel_proto::common::v1::{EchoRequest, EchoResponse};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The same no-op as Laurel's echo.
struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let EchoRequest { payload } = request.into_inner();
        Ok(Response::new(EchoResponse { payload }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("LAUREL_GRPC_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:50061".into())
        .parse()
        .context("listen address")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EchoServiceServer<Echo>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(laurel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(laurel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    eprintln!("laurel-bare-echo listening on {}", listener.local_addr()?);
    // Same transport settings as Laurel's server (tcp_nodelay), nothing else.
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
