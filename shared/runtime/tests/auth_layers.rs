//! The runtime layer in front of a real tonic server: API keys bound to
//! programmes and scopes, development mode, and health that is never shed.

use std::time::Duration;

use laurel_proto::common::v1::{
    EchoRequest, echo_service_client::EchoServiceClient, echo_service_server::EchoServiceServer,
};
use laurel_runtime::{
    api_key::{ApiKey, Scope},
    auth::default_scope,
    config::RuntimeConfig,
    layers::RuntimeLayer,
    server::Echo,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

const ECHO: &str = "/laurel.common.v1.EchoService/Echo";
const BRAND_A_READ: &str = "brand-a-read-key-0001";
const BRAND_A_WRITE: &str = "brand-a-write-key-0002";

fn config(api_keys: &str, dev_mode: bool, limit: usize) -> RuntimeConfig {
    RuntimeConfig {
        service: "test",
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        db_schema: "test".into(),
        db_max_connections: 1,
        redis_url: "redis://127.0.0.1:6379/".into(),
        redis_prefix: "test".into(),
        default_program: "default".into(),
        api_keys: ApiKey::parse_list(api_keys).unwrap(),
        dev_mode,
        request_timeout: Duration::from_secs(5),
        max_concurrent_requests: limit,
        shutdown_grace: Duration::from_secs(1),
        run_relay: false,
    }
}

/// Two keys of brand A: one may read, one may write. Echo counts as a
/// write here, so that a scope can be refused.
fn brand_a_keys() -> String {
    format!("reader:{BRAND_A_READ}:brand-a:read, writer:{BRAND_A_WRITE}:brand-a:read|write")
}

async fn serve(layer: RuntimeLayer) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn serve_brand_a() -> EchoServiceClient<Channel> {
    let layer = RuntimeLayer::with_scopes(&config(&brand_a_keys(), false, 64), |path| {
        if path == ECHO {
            Scope::Write
        } else {
            default_scope(path)
        }
    })
    .unwrap();
    EchoServiceClient::new(serve(layer).await)
}

fn echo(key: Option<&str>, program: Option<&str>) -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(EchoRequest {
        payload: b"ping".to_vec(),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    if let Some(program) = program {
        request
            .metadata_mut()
            .insert("x-laurel-program", program.parse().unwrap());
    }
    request
}

fn error_info(status: &Status) -> (String, String) {
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.domain)
}

#[tokio::test]
async fn a_call_without_a_key_is_unauthenticated() {
    let mut client = serve_brand_a().await;
    let error = client.echo(echo(None, Some("brand-a"))).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(
        error_info(&error),
        ("API_KEY_MISSING".into(), "laurel.auth".into())
    );
}

#[tokio::test]
async fn an_unknown_key_is_unauthenticated() {
    let mut client = serve_brand_a().await;
    let error = client
        .echo(echo(Some("not-a-configured-key-at-all"), Some("brand-a")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error_info(&error).0, "API_KEY_UNKNOWN");
}

#[tokio::test]
async fn a_key_of_brand_a_naming_brand_b_is_denied() {
    let mut client = serve_brand_a().await;
    let error = client
        .echo(echo(Some(BRAND_A_WRITE), Some("brand-b")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(
        error_info(&error),
        ("PROGRAM_NOT_ALLOWED".into(), "laurel.auth".into())
    );
    let reply = client
        .echo(echo(Some(BRAND_A_WRITE), Some("brand-a")))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().payload, b"ping");
}

#[tokio::test]
async fn a_read_key_calling_a_write_method_is_denied() {
    let mut client = serve_brand_a().await;
    let error = client
        .echo(echo(Some(BRAND_A_READ), Some("brand-a")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(error_info(&error).0, "SCOPE_MISSING");
}

#[tokio::test]
async fn a_malformed_programme_is_an_invalid_argument_with_error_info() {
    let mut client = serve_brand_a().await;
    let error = client
        .echo(echo(Some(BRAND_A_WRITE), Some("Brand A")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error_info(&error),
        ("PROGRAM_INVALID".into(), "laurel.common".into())
    );
}

#[tokio::test]
async fn by_default_echo_needs_only_the_read_scope() {
    let layer = RuntimeLayer::new(&config(&brand_a_keys(), false, 64)).unwrap();
    let mut client = EchoServiceClient::new(serve(layer).await);
    client
        .echo(echo(Some(BRAND_A_READ), Some("brand-a")))
        .await
        .unwrap();
}

#[tokio::test]
async fn dev_mode_without_keys_lets_every_call_in() {
    let layer = RuntimeLayer::new(&config("", true, 64)).unwrap();
    let mut client = EchoServiceClient::new(serve(layer).await);
    client.echo(echo(None, Some("brand-b"))).await.unwrap();
    client.echo(echo(None, None)).await.unwrap();
}

#[test]
fn without_keys_or_dev_mode_the_layer_is_refused() {
    assert!(RuntimeLayer::new(&config("", false, 64)).is_err());
}

#[tokio::test]
async fn health_is_open_and_never_shed() {
    // A limit of zero sheds every call that can be shed.
    let layer = RuntimeLayer::new(&config(&brand_a_keys(), false, 0)).unwrap();
    let channel = serve(layer).await;
    let error = EchoServiceClient::new(channel.clone())
        .echo(echo(Some(BRAND_A_WRITE), Some("brand-a")))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(error_info(&error).0, "OVERLOADED");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}
