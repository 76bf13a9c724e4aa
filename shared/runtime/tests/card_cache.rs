//! The member card's in-process copy on two "replicas" sharing one Redis:
//! an invalidation on one reaches the other, an old copy never outlives a
//! write, and without a subscription nothing is served from the copy.

use std::{sync::Arc, time::Duration};

use laurel_runtime::{
    cache::Redis,
    card::{CardField, Cards, LocalLimits},
    context::ProgramId,
};
use laurel_test_support::{self as support, PrivateRedis, eventually};
use tokio::sync::watch;
use uuid::Uuid;

struct Replica {
    cards: Cards<String>,
    _stop: watch::Sender<bool>,
}

fn replica(url: &str, prefix: &str) -> Replica {
    let cards = Cards::new(
        Redis::new(url, prefix).unwrap(),
        CardField::Member,
        LocalLimits::default(),
    );
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(cards.clone().listen(stopped));
    Replica { cards, _stop: stop }
}

async fn listening(replica: &Replica) {
    let cards = replica.cards.clone();
    eventually(Duration::from_secs(5), "subscribed", || {
        let cards = cards.clone();
        async move { cards.is_listening().then_some(()) }
    })
    .await;
}

fn program() -> ProgramId {
    ProgramId::parse("default").unwrap()
}

#[tokio::test]
async fn a_write_on_one_replica_drops_the_copy_on_another() {
    support::init_tracing();
    let prefix = support::fresh_prefix();
    let (a, b) = (
        replica(&support::redis_url(), &prefix),
        replica(&support::redis_url(), &prefix),
    );
    listening(&a).await;
    listening(&b).await;
    let member = Uuid::now_v7();
    b.cards.keep(&program(), &member, 1, Arc::new("v1".into()));
    assert_eq!(
        b.cards
            .local(&program(), &member)
            .as_deref()
            .map(String::as_str),
        Some("v1")
    );
    assert!(a.cards.invalidate(&program(), &member, 2).await);
    let cards = b.cards.clone();
    eventually(Duration::from_secs(5), "b dropped its copy", || {
        let cards = cards.clone();
        async move { cards.local(&program(), &member).is_none().then_some(()) }
    })
    .await;
    // A reader on b that read version 1 before the write cannot put it back.
    b.cards.keep(&program(), &member, 1, Arc::new("v1".into()));
    assert!(b.cards.local(&program(), &member).is_none());
    b.cards.keep(&program(), &member, 2, Arc::new("v2".into()));
    assert_eq!(
        b.cards
            .local(&program(), &member)
            .as_deref()
            .map(String::as_str),
        Some("v2")
    );
}

#[tokio::test]
async fn the_shared_card_keeps_its_version_and_refuses_an_older_fill() {
    let prefix = support::fresh_prefix();
    let a = replica(&support::redis_url(), &prefix);
    let member = Uuid::now_v7();
    a.cards.fill(&program(), &member, 3, b"three").await;
    let stored = a.cards.shared(&program(), &member).await.unwrap();
    assert_eq!(
        (stored.value.as_slice(), stored.version),
        (&b"three"[..], 3)
    );
    a.cards.invalidate(&program(), &member, 4).await;
    assert!(a.cards.shared(&program(), &member).await.is_none());
    a.cards.fill(&program(), &member, 3, b"three").await;
    assert!(
        a.cards.shared(&program(), &member).await.is_none(),
        "an older fill lost"
    );
}

#[tokio::test]
async fn without_a_subscription_nothing_is_served_from_the_copy() {
    let mut redis = PrivateRedis::start().await.unwrap();
    let prefix = support::fresh_prefix();
    let a = replica(&redis.url(), &prefix);
    listening(&a).await;
    let member = Uuid::now_v7();
    a.cards.keep(&program(), &member, 1, Arc::new("v1".into()));
    assert!(a.cards.local(&program(), &member).is_some());
    redis.stop().await;
    let cards = a.cards.clone();
    eventually(Duration::from_secs(10), "copy switched off", || {
        let cards = cards.clone();
        async move { cards.local(&program(), &member).is_none().then_some(()) }
    })
    .await;
    redis.resume().await.unwrap();
    listening(&a).await;
    // Whatever was kept before the outage is gone: invalidations were missed.
    assert!(a.cards.local(&program(), &member).is_none());
}

#[tokio::test]
async fn the_subscription_survives_its_heartbeats() {
    let prefix = support::fresh_prefix();
    let a = replica(&support::redis_url(), &prefix);
    listening(&a).await;
    let member = Uuid::now_v7();
    a.cards.keep(&program(), &member, 1, Arc::new("v1".into()));
    // Heartbeats run every second; a failing one would drop the copy.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(a.cards.is_listening());
    assert!(a.cards.local(&program(), &member).is_some());
}

#[tokio::test]
async fn an_invalidation_is_published_on_its_fields_channel_once_per_version() {
    use futures::StreamExt;
    let prefix = support::fresh_prefix();
    let a = replica(&support::redis_url(), &prefix);
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channel = laurel_runtime::card::invalidation_channel(&prefix, "member");
    let other = laurel_runtime::card::invalidation_channel(&prefix, "points");
    pubsub.subscribe(&channel).await.unwrap();
    pubsub.subscribe(&other).await.unwrap();
    let member = Uuid::now_v7();
    assert!(a.cards.invalidate(&program(), &member, 5).await);
    // The relay repeating the writer's invalidation, and an older one.
    assert!(a.cards.invalidate(&program(), &member, 5).await);
    assert!(a.cards.invalidate(&program(), &member, 4).await);
    assert!(a.cards.invalidate(&program(), &member, 6).await);
    let mut messages = pubsub.on_message();
    let mut heard = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(300), messages.next()).await
    {
        heard.push((
            message.get_channel_name().to_owned(),
            message.get_payload::<String>().unwrap(),
        ));
    }
    let key = laurel_runtime::card::card_key(&prefix, "default", &member);
    assert_eq!(
        heard,
        vec![
            (channel.clone(), format!("member 5 {key}")),
            (channel, format!("member 6 {key}")),
        ]
    );
}
