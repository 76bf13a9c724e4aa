//! The shared server stack as the member service serves it: health,
//! reflection, echo, authentication and trace context.

mod common;

use common::*;
use laurel_proto::{common::v1 as common_pb, member::v1 as pb};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn health_reports_serving_once_postgres_answers() {
    let app = spawn().await;
    let mut health = HealthClient::new(app.channel.clone());
    eventually(
        std::time::Duration::from_secs(5),
        "member service serving",
        || {
            let mut health = health.clone();
            async move {
                let r = health
                    .check(HealthCheckRequest {
                        service: "laurel.member.v1.MemberService".into(),
                    })
                    .await
                    .ok()?;
                (r.into_inner().status == ServingStatus::Serving as i32).then_some(())
            }
        },
    )
    .await;
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn reflection_lists_the_member_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for name in [
        "laurel.member.v1.MemberService",
        "laurel.common.v1.EchoService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn echo_returns_its_payload() {
    let app = spawn().await;
    let mut echo = common_pb::echo_service_client::EchoServiceClient::new(app.channel.clone());
    let reply = echo
        .echo(req(common_pb::EchoRequest {
            payload: b"ping".to_vec(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.payload, b"ping");
}

#[tokio::test]
async fn with_api_keys_configured_only_known_callers_get_in() {
    let key = "0123456789abcdef0123";
    let mut app = spawn_with(Options {
        api_keys: vec![("pos".into(), key.into())],
        relay: true,
        ..Options::default()
    })
    .await;
    let missing = app
        .client
        .get_member(req(pb::GetMemberRequest { member_id: rid() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let mut wrong = req(pb::GetMemberRequest { member_id: rid() });
    wrong
        .metadata_mut()
        .insert("x-api-key", "not-the-key-at-all".parse().unwrap());
    assert_eq!(
        app.client.get_member(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut right = req(create_request(&phone()));
    right
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    app.client.create_member(right).await.unwrap();
    // Probes need no key.
    let mut health = HealthClient::new(app.channel.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_callers_trace_travels_inside_the_event() {
    let app = spawn().await;
    let mut client = app.client.clone();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = req(create_request(&phone()));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    client.create_member(request).await.unwrap();
    let envelope: Vec<u8> = sqlx::query_scalar("SELECT envelope FROM outbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let envelope =
        <common_pb::EventEnvelope as prost::Message>::decode(envelope.as_slice()).unwrap();
    let traceparent = envelope
        .trace_context
        .get("traceparent")
        .cloned()
        .unwrap_or_default();
    assert!(
        traceparent.contains(trace_id),
        "traceparent {traceparent:?}"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_the_server_stop() {
    let mut app = spawn().await;
    create(&mut app).await;
    tokio::time::timeout(std::time::Duration::from_secs(10), app.stop())
        .await
        .expect("stops within the grace period");
}
