//! Versions of the earn rules in a real Postgres: numbering, the version in
//! force at a time, paging, concurrent publishers, and the cache.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use laurel_points::rules::{RuleSet, RulesCache, store, validate};
use laurel_proto::points::v1 as pb;
use sqlx::{Connection, PgPool, migrate::Migrator};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A pool on a fresh schema with the migrations applied; the schema is
/// dropped with it.
struct TestDb {
    pool: PgPool,
    schema: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        laurel_test_support::drop_schema(&self.schema);
    }
}

async fn test_db() -> TestDb {
    let url = laurel_test_support::database_url();
    let schema = laurel_test_support::fresh_schema("points");
    laurel_runtime::db::migrate(&url, &schema, &MIGRATIONS)
        .await
        .expect("migrates");
    let pool = laurel_runtime::db::pool(&url, &schema, 16).expect("pool");
    TestDb { pool, schema }
}

fn day(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, 0, 0, 0).unwrap()
}

/// Rules effective from `from`, earning `base_points` per euro, so each
/// version is recognisable.
fn rules(from: DateTime<Utc>, base_points: i64) -> RuleSet {
    validate(&pb::EarnRules {
        effective_from: Some(prost_types::Timestamp {
            seconds: from.timestamp(),
            nanos: 0,
        }),
        base_points,
        base_amount_minor: 100,
        category_multipliers: vec![pb::Multiplier {
            key: "Shoes".into(),
            multiplier_bp: 20_000,
        }],
        ..Default::default()
    })
    .expect("valid")
}

async fn publish(db: &TestDb, program: &str, rules: &RuleSet) -> pb::EarnRules {
    let mut conn = db.pool.acquire().await.unwrap();
    store::publish(&mut conn, program, rules, Utc::now())
        .await
        .expect("publishes")
}

async fn version_in_force(db: &TestDb, program: &str, at: DateTime<Utc>) -> Option<i64> {
    let mut conn = db.pool.acquire().await.unwrap();
    store::in_force(&mut conn, program, at)
        .await
        .expect("reads")
        .map(|rules| rules.version())
}

async fn listed(db: &TestDb, before: Option<i64>, limit: i64) -> Vec<i64> {
    let mut conn = db.pool.acquire().await.unwrap();
    store::list(&mut conn, "p", before, limit)
        .await
        .expect("lists")
        .iter()
        .map(|rules| rules.version)
        .collect()
}

#[tokio::test]
async fn versions_count_from_one_per_programme() {
    let db = test_db().await;
    let first = publish(&db, "p", &rules(day(1), 1)).await;
    let second = publish(&db, "p", &rules(day(2), 2)).await;
    let other = publish(&db, "q", &rules(day(1), 3)).await;
    assert_eq!((first.version, second.version, other.version), (1, 2, 1));
    assert!(first.published_at.is_some());
    assert_eq!(first.effective_from.unwrap().seconds, day(1).timestamp());
    assert_eq!(first.category_multipliers[0].key, "shoes");
}

#[tokio::test]
async fn the_rules_in_force_come_back_as_they_were_published() {
    let db = test_db().await;
    let published = publish(&db, "p", &rules(day(1), 7)).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let in_force = store::in_force(&mut conn, "p", day(3))
        .await
        .unwrap()
        .expect("a version");
    assert_eq!(in_force.version(), 1);
    assert!(in_force.published_at().is_some());
    assert_eq!(in_force.to_proto(), published);
}

#[tokio::test]
async fn the_version_in_force_has_the_latest_effective_from_at_or_before_the_time() {
    let db = test_db().await;
    publish(&db, "p", &rules(day(1), 1)).await; // v1
    publish(&db, "p", &rules(day(10), 2)).await; // v2
    publish(&db, "p", &rules(day(5), 3)).await; // v3, published later, effective earlier
    let before_first = day(1) - chrono::Duration::microseconds(1);
    assert_eq!(version_in_force(&db, "p", before_first).await, None);
    assert_eq!(version_in_force(&db, "p", day(1)).await, Some(1));
    assert_eq!(version_in_force(&db, "p", day(4)).await, Some(1));
    assert_eq!(version_in_force(&db, "p", day(5)).await, Some(3));
    assert_eq!(version_in_force(&db, "p", day(9)).await, Some(3));
    assert_eq!(version_in_force(&db, "p", day(10)).await, Some(2));
    assert_eq!(version_in_force(&db, "p", day(30)).await, Some(2));
    assert_eq!(version_in_force(&db, "q", day(30)).await, None);
}

#[tokio::test]
async fn of_two_versions_effective_at_once_the_later_one_is_in_force() {
    let db = test_db().await;
    publish(&db, "p", &rules(day(1), 1)).await;
    publish(&db, "p", &rules(day(1), 2)).await;
    assert_eq!(version_in_force(&db, "p", day(2)).await, Some(2));
}

#[tokio::test]
async fn versions_are_listed_newest_first_a_page_at_a_time() {
    let db = test_db().await;
    for n in 1..=5 {
        publish(&db, "p", &rules(day(n), 1)).await;
    }
    publish(&db, "q", &rules(day(1), 1)).await;
    assert_eq!(listed(&db, None, 2).await, [5, 4]);
    assert_eq!(listed(&db, Some(4), 2).await, [3, 2]);
    assert_eq!(listed(&db, Some(2), 2).await, [1]);
    assert_eq!(listed(&db, Some(1), 2).await, Vec::<i64>::new());
    assert_eq!(listed(&db, None, 0).await, Vec::<i64>::new());
}

#[tokio::test]
async fn concurrent_publishers_get_distinct_versions_without_gaps() {
    let db = test_db().await;
    let pool = db.pool.clone();
    let publishers: Vec<_> = (0..12)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                store::publish(&mut conn, "p", &rules(day(1), n), Utc::now())
                    .await
                    .expect("publishes")
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for publisher in publishers {
        versions.push(publisher.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=12).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_publish_rolled_back_with_the_callers_transaction_leaves_no_version() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let published = store::publish(&mut tx, "p", &rules(day(1), 1), Utc::now())
        .await
        .unwrap();
    assert_eq!(published.version, 1);
    tx.rollback().await.unwrap();
    assert_eq!(listed(&db, None, 10).await, Vec::<i64>::new());
    assert_eq!(publish(&db, "p", &rules(day(1), 1)).await.version, 1);
}

#[tokio::test]
async fn stored_rules_that_no_longer_decode_are_an_error_not_a_default() {
    let db = test_db().await;
    publish(&db, "p", &rules(day(1), 1)).await;
    sqlx::query("UPDATE earn_rules SET rules = '\\xff'::bytea")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let error = store::in_force(&mut conn, "p", day(2))
        .await
        .expect_err("garbage refused");
    assert!(matches!(error, sqlx::Error::Decode(_)), "{error:?}");
}

async fn cached_version(cache: &RulesCache, db: &TestDb, at: DateTime<Utc>) -> Option<i64> {
    cache
        .in_force(&db.pool, "p", at)
        .await
        .expect("reads")
        .map(|rules: Arc<RuleSet>| rules.version())
}

#[tokio::test]
async fn the_cache_serves_from_memory_until_invalidated() {
    let db = test_db().await;
    let cache = RulesCache::new(Duration::from_secs(600));
    assert_eq!(cached_version(&cache, &db, day(5)).await, None);
    publish(&db, "p", &rules(day(1), 1)).await;
    // Another replica published: this one still serves what it loaded.
    assert_eq!(cached_version(&cache, &db, day(5)).await, None);
    cache.invalidate("p");
    assert_eq!(cached_version(&cache, &db, day(5)).await, Some(1));
    publish(&db, "p", &rules(day(3), 2)).await;
    cache.invalidate("p");
    assert_eq!(cached_version(&cache, &db, day(2)).await, Some(1));
    assert_eq!(cached_version(&cache, &db, day(3)).await, Some(2));
    // Served from memory: the table can go and the answers stay.
    sqlx::query("DELETE FROM earn_rules")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(cached_version(&cache, &db, day(30)).await, Some(2));
    assert_eq!(
        cached_version(&cache, &db, day(1) - chrono::Duration::seconds(1)).await,
        None
    );
}

#[tokio::test]
async fn the_cache_sees_another_replicas_publish_once_its_copy_expires() {
    let db = test_db().await;
    let cache = RulesCache::new(Duration::from_millis(300));
    publish(&db, "p", &rules(day(1), 1)).await;
    assert_eq!(cached_version(&cache, &db, day(5)).await, Some(1));
    publish(&db, "p", &rules(day(2), 2)).await;
    laurel_test_support::eventually(Duration::from_secs(5), "the new version is seen", || {
        let (cache, db) = (&cache, &db);
        async move { (cached_version(cache, db, day(5)).await == Some(2)).then_some(()) }
    })
    .await;
}
