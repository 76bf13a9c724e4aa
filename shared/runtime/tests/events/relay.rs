//! Relays: any number may run, yet no two publish the same rows.

use std::{collections::HashMap, time::Duration};

use laurel_proto::common::v1::EventEnvelope;
use laurel_runtime::events::{
    ENVELOPE_FIELD, outbox,
    relay::{Batch, Relay},
};
use prost::Message;
use redis::{AsyncCommands, streams::StreamRangeReply};
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use uuid::Uuid;

use crate::common::*;

/// How many times each event id appears in the stream, and each member's
/// sequences in stream order.
async fn published(env: &Env) -> (HashMap<String, usize>, HashMap<String, Vec<i64>>) {
    let mut redis = env.redis.clone();
    let entries: StreamRangeReply = redis.xrange_all(env.stream()).await.unwrap();
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut sequences: HashMap<String, Vec<i64>> = HashMap::new();
    for entry in entries.ids {
        let raw: Vec<u8> = entry.get(ENVELOPE_FIELD).unwrap();
        let envelope = EventEnvelope::decode(raw.as_slice()).unwrap();
        *copies.entry(envelope.event_id).or_default() += 1;
        sequences
            .entry(envelope.member_id)
            .or_default()
            .push(envelope.member_sequence);
    }
    (copies, sequences)
}

/// Checks every outbox event is in the stream exactly once, and each
/// member's events in order 1, 2, 3...
async fn assert_published_once(env: &Env) {
    let written: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM outbox")
        .fetch_all(&env.db)
        .await
        .unwrap();
    let (copies, sequences) = published(env).await;
    assert_eq!(copies.len(), written.len(), "every event is published");
    for id in &written {
        assert_eq!(copies.get(&id.to_string()), Some(&1), "event {id}");
    }
    for (member, seen) in sequences {
        let expected: Vec<i64> = (1..=seen.len() as i64).collect();
        assert_eq!(seen, expected, "member {member} in order");
    }
}

/// Kills the relays' Postgres sessions; returns how many.
async fn kill_relay_sessions(env: &Env) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) killed",
    )
    .bind(env.relay_config().application_name)
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn two_relays_never_publish_the_same_rows() {
    let env = env().await;
    let members: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for member in &members {
        env.write(Some(*member), &created(*member)).await;
    }
    let (first, second) = (env.relay(), env.relay());
    // More events while both run, so they contend for every batch.
    for _ in 0..5 {
        for member in &members {
            env.write(Some(*member), &updated(*member)).await;
        }
    }
    eventually(WAIT, "everything is published", || async {
        env.all_published().await.then_some(())
    })
    .await;
    assert_published_once(&env).await;
    assert_eq!(env.scalar("SELECT count(*) FROM outbox").await, 120);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_relay_publishes_nothing_while_another_holds_the_fence() {
    let env = env().await;
    let member = Uuid::now_v7();
    env.write(Some(member), &created(member)).await;
    let config = env.relay_config();
    let relay = Relay::new(env.pool(1), &env.redis_url, config.clone()).unwrap();

    // Another relay's batch is in flight: its transaction holds the fence.
    let mut other = env.db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(&config.lock_name)
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(relay.publish_batch().await.unwrap(), Batch::Fenced);
    assert!(!env.all_published().await);
    other.rollback().await.unwrap();

    assert_eq!(relay.publish_batch().await.unwrap(), Batch::Published(1));
    assert_eq!(relay.publish_batch().await.unwrap(), Batch::Empty);
    assert_published_once(&env).await;
}

#[tokio::test]
async fn relays_whose_sessions_are_killed_between_batches_still_publish_each_row_once() {
    let env = env().await;
    let config = env.relay_config();
    let (first, second) = (env.relay(), env.relay());
    let mut killed = 0;
    for round in 0..5 {
        // Hold the fence as a batch would, so the relays are between
        // batches when their sessions die.
        let mut fence = env.db.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(&config.lock_name)
            .execute(&mut *fence)
            .await
            .unwrap();
        for _ in 0..10 {
            let member = Uuid::now_v7();
            env.write(Some(member), &created(member)).await;
            env.write(Some(member), &updated(member)).await;
        }
        killed += eventually(WAIT, "a relay session is there to kill", || async {
            let killed = kill_relay_sessions(&env).await;
            (killed > 0).then_some(killed)
        })
        .await;
        fence.commit().await.unwrap();
        eventually(
            WAIT,
            "the relays publish after losing their sessions",
            || async { env.all_published().await.then_some(()) },
        )
        .await;
        assert!(first.is_running() && second.is_running(), "round {round}");
    }
    assert!(killed >= 5);
    assert_published_once(&env).await;
    assert_eq!(env.scalar("SELECT count(*) FROM outbox").await, 100);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_batch_whose_session_dies_before_commit_is_not_marked_published() {
    let env = env().await;
    let member = Uuid::now_v7();
    env.write(Some(member), &created(member)).await;
    let config = env.relay_config();
    // A relay's batch transaction, killed after it selected its rows.
    let pool = env.pool(1);
    let mut batch = pool.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *batch)
        .await
        .unwrap();
    sqlx::query("SELECT pg_try_advisory_xact_lock(hashtext($1))")
        .bind(&config.lock_name)
        .execute(&mut *batch)
        .await
        .unwrap();
    sqlx::query("SELECT seq FROM outbox WHERE published_at IS NULL FOR UPDATE")
        .execute(&mut *batch)
        .await
        .unwrap();
    let relay = Relay::new(env.pool(1), &env.redis_url, config).unwrap();
    assert_eq!(relay.publish_batch().await.unwrap(), Batch::Fenced);
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(terminated);
    assert!(
        sqlx::query("UPDATE outbox SET published_at = now()")
            .execute(&mut *batch)
            .await
            .is_err(),
        "the dead batch cannot mark its rows"
    );
    drop(batch);
    // The fence died with the session: the next relay takes over at once.
    let published = eventually(WAIT, "the other relay takes the fence", || async {
        match relay.publish_batch().await.unwrap() {
            Batch::Published(n) => Some(n),
            _ => None,
        }
    })
    .await;
    assert_eq!(published, 1);
    assert_published_once(&env).await;
}

/// Whether a notification comes within half a second.
async fn notified(listener: &mut PgListener) -> bool {
    let wait = tokio::time::timeout(Duration::from_millis(500), listener.recv());
    matches!(wait.await, Ok(Ok(_)))
}

/// Whether a relay session is listening for the outbox's notifications.
async fn relay_listens(env: &Env) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_stat_activity
                        WHERE application_name = $1 AND query LIKE 'LISTEN%')",
    )
    .bind(env.relay_config().application_name)
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_idle_relay_publishes_when_an_event_commits_not_at_its_next_poll() {
    let env = env().await;
    let mut config = env.relay_config();
    // Polls far apart: only the notification can wake the relay in time.
    config.idle_poll = Duration::from_secs(60);
    config.listen_poll = Duration::from_secs(60);
    let relay = Relay::new(env.pool(1), &env.redis_url, config).unwrap();
    let running = Running::spawn(|rx| relay.run(rx));
    eventually(WAIT, "the relay listens", || async {
        relay_listens(&env).await.then_some(())
    })
    .await;
    for round in 0..3 {
        let member = Uuid::now_v7();
        env.write(Some(member), &created(member)).await;
        let started = Instant::now();
        eventually(Duration::from_secs(5), "the event is published", || async {
            env.all_published().await.then_some(())
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
    assert_published_once(&env).await;
    running.stop().await;
}

#[tokio::test]
async fn an_outbox_write_notifies_only_when_nothing_else_waits_for_the_relay() {
    let env = env().await;
    let channel: String = sqlx::query_scalar(outbox::CHANNEL_SQL)
        .fetch_one(&env.db)
        .await
        .unwrap();
    let mut listener = PgListener::connect_with(&env.db).await.unwrap();
    listener.listen(&channel).await.unwrap();

    let member = Uuid::now_v7();
    // Not yet: a notification leaves with the commit.
    let mut tx = env.db.begin().await.unwrap();
    write_in(&mut tx, Some(member), &created(member)).await;
    assert!(!notified(&mut listener).await, "nothing before the commit");
    tx.commit().await.unwrap();
    assert!(
        notified(&mut listener).await,
        "the first event wakes the relay"
    );

    // The relay has not published it yet: it will look again anyway.
    env.write(Some(member), &updated(member)).await;
    assert!(!notified(&mut listener).await, "no second wake-up");

    // Published: the next write wakes the relay again, batches too.
    sqlx::query("UPDATE outbox SET published_at = now()")
        .execute(&env.db)
        .await
        .unwrap();
    let mut tx = env.db.begin().await.unwrap();
    let program = laurel_runtime::context::ProgramId::parse("default").unwrap();
    let event = outbox::PackedEvent::pack(
        SOURCE,
        outbox::NewEvent {
            program: &program,
            member_id: Some(member),
            occurred_at: chrono::Utc::now(),
            recorded_at: chrono::Utc::now(),
            card_version: None,
            payload: &updated(member),
        },
    )
    .unwrap();
    outbox::enqueue_many(&mut tx, SOURCE, &[event.clone(), event])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(notified(&mut listener).await, "a batch wakes the relay");
    assert!(!notified(&mut listener).await, "once");
}
