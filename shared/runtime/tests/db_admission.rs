//! Admission to the pool: excess requests are refused at once with
//! RESOURCE_EXHAUSTED, a pool timeout is UNAVAILABLE, both with RetryInfo.

use std::time::{Duration, Instant};

use laurel_runtime::{
    db::Db,
    error::{DbErrorKind, db_error_kind, from_db},
};
use laurel_test_support as support;
use sqlx::postgres::PgPoolOptions;
use tonic::Code;
use tonic_types::StatusExt;

fn one_connection_pool() -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&support::database_url())
        .unwrap()
}

#[tokio::test]
async fn requests_beyond_what_the_pool_can_serve_are_refused_at_once() {
    let db = Db::new(one_connection_pool(), 2);
    let _held = db.begin().await.expect("first is admitted and served");
    let waiting = {
        let db = db.clone();
        tokio::spawn(async move { db.begin().await.map(|_| ()) })
    };
    // The second is admitted and waits for the connection.
    support::eventually(Duration::from_secs(5), "second admitted", || {
        let db = db.clone();
        async move { (db.admitted() == 2).then_some(()) }
    })
    .await;
    let started = Instant::now();
    let refused = db.begin().await.err().expect("third is refused");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refused at once"
    );
    assert_eq!(db_error_kind(&refused), DbErrorKind::Overloaded);
    let status = from_db("laurel.test", &refused);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_error_details().retry_info().is_some());

    // The waiting one times out on the pool: UNAVAILABLE with RetryInfo.
    let timed_out = waiting.await.unwrap().expect_err("pool timeout");
    let status = from_db("laurel.test", &timed_out);
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_error_details().retry_info().is_some());
}
