//! Group commit: concurrent requests share transactions; each is answered
//! only after its batch commits; a request that fails gets its own error
//! and its neighbours commit; a batch that fails as a whole is retried one
//! request at a time, so only the culprit fails.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use laurel_runtime::group_commit::{BatchApply, BatchOutcome, GroupCommit, GroupConfig};
use laurel_test_support as support;
use sqlx::{Connection, PgConnection, PgPool};

/// What a test request does.
#[derive(Clone, Copy, Debug)]
enum Ask {
    /// Insert the value.
    Insert(i64),
    /// Insert, then fail (inside a savepoint: leaves nothing).
    Refuse(i64),
    /// Break the whole transaction.
    Poison,
}

struct Inserter {
    batches: Arc<Mutex<Vec<usize>>>,
}

impl BatchApply for Inserter {
    type Request = Ask;
    type Response = i64;
    type Error = String;

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        requests: &'a [Ask],
    ) -> BoxFuture<'a, BatchOutcome<Self>> {
        async move {
            self.batches.lock().unwrap().push(requests.len());
            let mut out = Vec::new();
            for ask in requests {
                match ask {
                    Ask::Insert(v) => {
                        sqlx::query("INSERT INTO gc_values (v) VALUES ($1)")
                            .bind(v)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| e.to_string())?;
                        out.push(Ok(*v));
                    }
                    Ask::Refuse(v) => {
                        let mut sp = tx.begin().await.map_err(|e| e.to_string())?;
                        sqlx::query("INSERT INTO gc_values (v) VALUES ($1)")
                            .bind(v)
                            .execute(&mut *sp)
                            .await
                            .map_err(|e| e.to_string())?;
                        sp.rollback().await.map_err(|e| e.to_string())?;
                        out.push(Err(format!("refused {v}")));
                    }
                    Ask::Poison => {
                        sqlx::query("SELECT 1/0")
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| e.to_string())?;
                        out.push(Ok(0));
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn storage_error(&self, error: sqlx::Error) -> String {
        error.to_string()
    }
}

async fn setup() -> (PgPool, String) {
    let schema = support::fresh_schema("gc");
    let admin = PgPool::connect(&support::database_url()).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let pool = laurel_runtime::db::pool(&support::database_url(), &schema, 4).unwrap();
    sqlx::query("CREATE TABLE gc_values (v bigint PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    (pool, schema)
}

async fn stored(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT v FROM gc_values ORDER BY v")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_requests_share_commits_and_fail_alone() {
    let (pool, schema) = setup().await;
    let batches = Arc::new(Mutex::new(Vec::new()));
    let config = GroupConfig {
        max_batch: 64,
        max_wait: Duration::from_millis(2),
        writers: 1,
        queue: 1024,
    };
    let group = GroupCommit::start(
        pool.clone(),
        Inserter {
            batches: batches.clone(),
        },
        config,
    );
    let calls = (0..200i64).map(|i| {
        let group = group.clone();
        async move {
            let ask = match i {
                i if i % 50 == 7 => Ask::Poison,
                i if i % 10 == 3 => Ask::Refuse(i),
                i => Ask::Insert(i),
            };
            (i, group.submit(ask).await.expect("writers run"))
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut want = Vec::new();
    for (i, answer) in answers {
        match i {
            i if i % 50 == 7 => assert!(answer.is_err(), "the poison fails"),
            i if i % 10 == 3 => assert_eq!(answer, Err(format!("refused {i}"))),
            i => {
                assert_eq!(answer, Ok(i), "neighbours of failures commit");
                want.push(i);
            }
        }
    }
    // Every acknowledged insert is there, and nothing else.
    assert_eq!(stored(&pool).await, want);
    let sizes = batches.lock().unwrap().clone();
    assert!(
        sizes.iter().any(|n| *n > 1),
        "requests shared transactions: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|n| *n <= 64),
        "batches are bounded: {sizes:?}"
    );
    support::drop_schema(&schema);
}

#[tokio::test]
async fn a_lone_request_is_not_delayed_and_answers_after_commit() {
    let (pool, schema) = setup().await;
    let batches = Arc::new(Mutex::new(Vec::new()));
    let group = GroupCommit::start(pool.clone(), Inserter { batches }, GroupConfig::default());
    assert_eq!(group.submit(Ask::Insert(1)).await.unwrap(), Ok(1));
    // Answered means committed: another connection sees it at once.
    assert_eq!(stored(&pool).await, vec![1]);
    support::drop_schema(&schema);
}
