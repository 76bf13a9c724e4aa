//! The application builder's supervision of background jobs, over a real
//! service (echo, health) on real Postgres and Redis.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use laurel_proto::common::v1::{EchoRequest, echo_service_client::EchoServiceClient};
use laurel_runtime::app::{App, MAX_FAILURES_PER_MINUTE};
use laurel_test_support as support;

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

async fn app() -> App {
    App::build(support::runtime_config("apptest"), &NO_MIGRATIONS)
        .await
        .expect("app builds")
}

#[tokio::test]
async fn a_job_that_keeps_failing_stops_the_process_with_an_error() {
    let app = app()
        .await
        .job("doomed", |_stop| async { anyhow::bail!("cannot work") });
    let mut running = support::start(app).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), running.exited())
        .await
        .expect("the process stops by itself");
    let error = ended.expect_err("it ends with an error");
    assert!(error.to_string().contains("doomed"), "{error}");
}

#[tokio::test]
async fn a_panicking_job_is_restarted_and_the_service_keeps_serving() {
    let starts = Arc::new(AtomicUsize::new(0));
    let counter = starts.clone();
    let app = app().await.job("flaky", move |mut stop| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                panic!("flaky job panics on start {n}");
            }
            let _ = stop.changed().await;
            Ok(())
        }
    });
    let mut running = support::start(app).await;
    support::eventually(Duration::from_secs(10), "the job restarted twice", || {
        let starts = starts.clone();
        async move { (starts.load(Ordering::SeqCst) >= 3).then_some(()) }
    })
    .await;
    let mut echo = EchoServiceClient::new(running.channel.clone());
    echo.echo(EchoRequest {
        payload: b"hi".to_vec(),
    })
    .await
    .expect("still serving");
    const { assert!(MAX_FAILURES_PER_MINUTE >= 2) };
    running.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn jobs_are_told_to_stop_after_the_server_drains() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let seen = stopped.clone();
    let app = app().await.job("patient", move |mut stop| {
        let seen = seen.clone();
        async move {
            let _ = stop.changed().await;
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let mut running = support::start(app).await;
    running.stop().await.expect("a clean stop");
    assert_eq!(stopped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_service_can_say_which_scope_each_method_needs() {
    use laurel_runtime::api_key::{ApiKey, Programmes, Scope, Scopes};
    const KEY: &str = "reader-key-0123456789";
    let reader = || {
        let mut config = support::runtime_config("apptest");
        config.dev_mode = false;
        config.api_keys =
            vec![ApiKey::new("reader", KEY, Programmes::Any, Scopes::of(&[Scope::Read])).unwrap()];
        config
    };
    let call = |channel: tonic::transport::Channel| async move {
        let mut request = tonic::Request::new(EchoRequest {
            payload: b"hi".to_vec(),
        });
        request
            .metadata_mut()
            .insert("x-api-key", KEY.parse().unwrap());
        EchoServiceClient::new(channel).echo(request).await
    };
    // By default Echo needs read, which the key has.
    let default = App::build(reader(), &NO_MIGRATIONS).await.unwrap();
    let running = support::start(default).await;
    call(running.channel.clone()).await.expect("read suffices");
    // A service that says Echo writes refuses the read-only key.
    let strict = App::build(reader(), &NO_MIGRATIONS)
        .await
        .unwrap()
        .scopes(|_| Scope::Write);
    let running = support::start(strict).await;
    let status = call(running.channel.clone())
        .await
        .expect_err("write needed");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_consumer_waits_out_redis_being_away_at_start_up() {
    use laurel_runtime::events::router::Router;
    use redis::AsyncCommands;
    let mut redis = support::PrivateRedis::start().await.unwrap();
    redis.stop().await;
    let mut config = support::runtime_config("apptest");
    config.redis_url = redis.url();
    let prefix = config.redis_prefix.clone();
    let app = App::build(config, &NO_MIGRATIONS).await.unwrap().consumer(
        "waiting",
        &["member"],
        Router::new(),
    );
    let mut running = support::start(app).await;
    // Longer than it takes a failing job to exhaust its restarts.
    let exited = tokio::time::timeout(Duration::from_secs(8), running.exited()).await;
    assert!(exited.is_err(), "the process stopped: {exited:?}");
    redis.resume().await.unwrap();
    let url = redis.url();
    support::eventually(Duration::from_secs(10), "the group exists", || {
        let (url, prefix) = (url.clone(), prefix.clone());
        async move {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let groups: redis::streams::StreamInfoGroupsReply = conn
                .xinfo_groups(format!("{prefix}:events:member"))
                .await
                .ok()?;
            groups
                .groups
                .iter()
                .any(|g| g.name == "waiting")
                .then_some(())
        }
    })
    .await;
}
