//! Metric labels stay bounded: every path no service registered is counted
//! under `method="unknown"`. Its own test binary, since it installs the
//! process-wide metrics recorder.

use std::{str::FromStr, time::Duration};

use laurel_proto::common::v1::{
    EchoRequest, EchoResponse, echo_service_client::EchoServiceClient,
    echo_service_server::EchoServiceServer,
};
use laurel_runtime::{config::RuntimeConfig, layers::RuntimeLayer, server::Echo};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, transport::Channel};

fn dev_config() -> RuntimeConfig {
    RuntimeConfig {
        service: "metrics-test",
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        db_schema: "test".into(),
        db_max_connections: 1,
        redis_url: "redis://127.0.0.1:6379/".into(),
        redis_prefix: "test".into(),
        default_program: "default".into(),
        api_keys: Vec::new(),
        dev_mode: true,
        request_timeout: Duration::from_secs(5),
        max_concurrent_requests: 64,
        shutdown_grace: Duration::from_secs(1),
        run_relay: false,
    }
}

async fn call_path(channel: &Channel, path: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
    grpc.unary(
        tonic::Request::new(EchoRequest::default()),
        http::uri::PathAndQuery::from_str(path).unwrap(),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn random_paths_share_one_unknown_series() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let layer = RuntimeLayer::new(&dev_config()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    for path in ["/x.Y/Random123", "/x.Y/Random456", "/a.B/C"] {
        assert_eq!(call_path(&channel, path).await.code(), Code::Unimplemented);
    }
    let mut echo = EchoServiceClient::new(channel.clone());
    echo.echo(EchoRequest::default()).await.unwrap();

    let text = handle.render();
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("laurel_grpc_requests_total{"))
        .collect();
    assert!(
        !text.contains("Random") && !text.contains("/a.B/C"),
        "a raw path became a label:\n{text}"
    );
    let unknown: Vec<&str> = requests
        .iter()
        .copied()
        .filter(|l| l.contains(r#"method="unknown""#))
        .collect();
    assert_eq!(
        unknown,
        [
            r#"laurel_grpc_requests_total{service="metrics-test",method="unknown",code="UNIMPLEMENTED"} 3"#
        ],
        "{text}"
    );
    assert!(
        requests.contains(
            &r#"laurel_grpc_requests_total{service="metrics-test",method="/laurel.common.v1.EchoService/Echo",code="OK"} 1"#
        ),
        "{text}"
    );
}
