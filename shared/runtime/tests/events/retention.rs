//! Retention: `prune_once` removes what is older than each store's window
//! and keeps the rest.

use std::time::Duration;

use chrono::{DateTime, Utc};
use laurel_runtime::events::{
    dead_letter_key,
    retention::{self, Pruned, RetentionConfig},
};
use redis::{AsyncCommands, streams::StreamRangeReply};
use uuid::Uuid;

use crate::common::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ago(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(age).unwrap()
}

/// Adds an entry to `key` whose id says it was added at `at`.
async fn add_at(env: &Env, key: &str, at: DateTime<Utc>, label: &str) {
    let mut redis = env.redis.clone();
    let _: String = redis
        .xadd(
            key,
            format!("{}-0", at.timestamp_millis()),
            &[("label", label)],
        )
        .await
        .unwrap();
}

async fn labels(env: &Env, key: &str) -> Vec<String> {
    let mut redis = env.redis.clone();
    let entries: StreamRangeReply = redis.xrange_all(key).await.unwrap();
    entries
        .ids
        .iter()
        .map(|e| e.get::<String>("label").unwrap())
        .collect()
}

#[tokio::test]
async fn prune_once_trims_each_store_by_age() {
    let env = env().await;
    let now = Utc::now();
    let config = RetentionConfig::default()
        .with_stream(env.stream())
        .with_dead_letter_stream(dead_letter_key(&env.prefix, "g"));
    let dlq = dead_letter_key(&env.prefix, "g");

    // Streams: one entry just past the window, one just inside it.
    add_at(&env, &env.stream(), ago(now, 7 * DAY + DAY / 24), "old").await;
    add_at(&env, &env.stream(), ago(now, 7 * DAY - DAY / 24), "kept").await;
    add_at(&env, &dlq, ago(now, 14 * DAY + DAY / 24), "old").await;
    add_at(&env, &dlq, ago(now, 7 * DAY + DAY / 24), "kept").await;

    // Outbox: published long ago, published lately, never published.
    for _ in 0..3 {
        let member = Uuid::now_v7();
        env.write(Some(member), &created(member)).await;
    }
    sqlx::query(
        "UPDATE outbox SET created_at = $1, published_at = CASE
             WHEN seq = (SELECT min(seq) FROM outbox) THEN $1
             WHEN seq = (SELECT max(seq) FROM outbox) THEN NULL
             ELSE $2 END",
    )
    .bind(ago(now, 30 * DAY))
    .bind(ago(now, 6 * DAY))
    .execute(&env.db)
    .await
    .unwrap();

    // Inbox and attempt counts: 15 days and 13 days old.
    for (age, label) in [(15 * DAY, "old"), (13 * DAY, "kept")] {
        sqlx::query(
            "INSERT INTO inbox (consumer, event_id, program_id, stream_id, processed_at)
             VALUES ($1, $2, 'default', '0-1', $3)",
        )
        .bind(label)
        .bind(Uuid::now_v7())
        .bind(ago(now, age))
        .execute(&env.db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO event_attempts (consumer, event_id, attempts, last_error, updated_at)
             VALUES ($1, $2, 1, 'e', $3)",
        )
        .bind(label)
        .bind(Uuid::now_v7())
        .bind(ago(now, age))
        .execute(&env.db)
        .await
        .unwrap();
    }

    // Idempotency keys: 25 hours and 23 hours old.
    for (age, label) in [(DAY + DAY / 24, "old"), (DAY - DAY / 24, "kept")] {
        sqlx::query(
            "INSERT INTO idempotency_keys (program_id, operation, request_id, request_hash, created_at)
             VALUES ('default', 'Op', $1, '\\x00', $2)",
        )
        .bind(label)
        .bind(ago(now, age))
        .execute(&env.db)
        .await
        .unwrap();
    }

    let mut redis =
        laurel_runtime::cache::connection_manager(&env.redis_url, Duration::from_secs(2)).unwrap();
    let pruned = retention::prune_once(&env.db, &mut redis, &config, now)
        .await
        .unwrap();
    assert_eq!(
        pruned,
        Pruned {
            stream_entries: 1,
            dead_letters: 1,
            outbox: 1,
            inbox: 1,
            attempts: 1,
            idempotency_keys: 1,
        }
    );
    assert_eq!(labels(&env, &env.stream()).await, ["kept"]);
    assert_eq!(labels(&env, &dlq).await, ["kept"]);
    assert_eq!(
        env.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        1,
        "unpublished rows are never pruned"
    );
    assert_eq!(env.scalar("SELECT count(*) FROM outbox").await, 2);
    for table in ["inbox", "event_attempts"] {
        let left: Vec<String> = sqlx::query_scalar(&format!("SELECT consumer FROM {table}"))
            .fetch_all(&env.db)
            .await
            .unwrap();
        assert_eq!(left, ["kept"], "{table}");
    }
    let left: Vec<String> = sqlx::query_scalar("SELECT request_id FROM idempotency_keys")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(left, ["kept"]);

    // Pruning again finds nothing more.
    let again = retention::prune_once(&env.db, &mut redis, &config, now)
        .await
        .unwrap();
    assert_eq!(again, Pruned::default());
}

#[tokio::test]
async fn the_pruning_job_runs_until_shutdown() {
    let env = env().await;
    let mut config = RetentionConfig::default().with_stream(env.stream());
    config.interval = Duration::from_millis(50);
    add_at(&env, &env.stream(), ago(Utc::now(), 8 * DAY), "old").await;
    let redis =
        laurel_runtime::cache::connection_manager(&env.redis_url, Duration::from_secs(2)).unwrap();
    let job = Running::spawn(|rx| retention::run(env.db.clone(), redis, config, rx));
    eventually(WAIT, "the job trims the stream", || async {
        let mut redis = env.redis.clone();
        let len: i64 = redis.xlen(env.stream()).await.unwrap();
        (len == 0).then_some(())
    })
    .await;
    job.stop().await;
}

#[tokio::test]
async fn pruning_an_expired_key_leaves_another_callers_live_key_alone() {
    let env = env().await;
    let now = Utc::now();
    let config = RetentionConfig::default();
    // Two callers picked the same request id; only the first one's expired.
    for (caller, age) in [("pos", DAY + DAY / 24), ("crm", DAY / 24)] {
        sqlx::query(
            "INSERT INTO idempotency_keys (program_id, caller, operation, request_id, request_hash, created_at)
             VALUES ('default', $1, 'Op', 'same', '\\x00', $2)",
        )
        .bind(caller)
        .bind(ago(now, age))
        .execute(&env.db)
        .await
        .unwrap();
    }
    let mut redis =
        laurel_runtime::cache::connection_manager(&env.redis_url, Duration::from_secs(2)).unwrap();
    let pruned = retention::prune_once(&env.db, &mut redis, &config, now)
        .await
        .unwrap();
    assert_eq!(pruned.idempotency_keys, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT caller FROM idempotency_keys")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(left, ["crm"]);
}
