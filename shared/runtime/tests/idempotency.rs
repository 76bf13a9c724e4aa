//! The idempotency combinator against a real Postgres: replays, reuse with a
//! different request, caller scoping, expiry on the service's clock, racing
//! copies, and a dropped effect leaving the key free.

use std::{sync::Arc, time::Duration};

use laurel_proto::common::v1::EchoRequest;
use laurel_runtime::{
    clock::ManualClock,
    context::{Caller, ProgramId},
    db::Db,
    idempotency::{Begun, DEFAULT_WINDOW, Idempotency, IdempotencyError, Plain, RequestKey},
};
use laurel_test_support as support;
use sqlx::PgPool;

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

struct Store {
    pool: PgPool,
    db: Db,
    idempotency: Idempotency,
    clock: ManualClock,
    schema: String,
}

impl Drop for Store {
    fn drop(&mut self) {
        support::drop_schema(&self.schema);
    }
}

async fn store() -> Store {
    let schema = support::fresh_schema("idem");
    laurel_runtime::db::migrate(&support::database_url(), &schema, &NO_MIGRATIONS)
        .await
        .expect("migrates");
    let pool = laurel_runtime::db::pool(&support::database_url(), &schema, 8).unwrap();
    sqlx::query("CREATE TABLE effects (id bigserial PRIMARY KEY, note text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let idempotency = Idempotency::new(DEFAULT_WINDOW, b"test-digest-key", Arc::new(clock.clone()));
    Store {
        db: Db::new(pool.clone(), 8),
        pool,
        idempotency,
        clock,
        schema,
    }
}

fn program() -> ProgramId {
    ProgramId::parse("default").unwrap()
}

fn request(payload: &str) -> EchoRequest {
    EchoRequest {
        payload: payload.as_bytes().to_vec(),
    }
}

/// Runs the effect (one row in `effects`) under the key; returns the
/// response, replayed or new.
async fn effect(
    store: &Store,
    caller: &Caller,
    request_id: &str,
    payload: &str,
    pause: Duration,
) -> Result<EchoRequest, IdempotencyError> {
    let program = program();
    let key = RequestKey {
        program: &program,
        caller,
        operation: "Effect",
        request_id,
    };
    let req = request(payload);
    match store.idempotency.begin(&store.db, key, &req, Plain).await? {
        Begun::Replay(response) => Ok(response),
        Begun::Fresh(mut fresh) => {
            let (id,): (i64,) =
                sqlx::query_as("INSERT INTO effects (note) VALUES ($1) RETURNING id")
                    .bind(payload)
                    .fetch_one(fresh.tx())
                    .await?;
            tokio::time::sleep(pause).await;
            let response = request(&format!("{payload}#{id}"));
            fresh.commit(&response, None).await?;
            Ok(response)
        }
    }
}

async fn effects(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_replays_the_first_response_without_a_second_effect() {
    let store = store().await;
    let caller = Caller::ApiKey("pos".into());
    let first = effect(&store, &caller, "r-1", "a", Duration::ZERO)
        .await
        .unwrap();
    let again = effect(&store, &caller, "r-1", "a", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(effects(&store).await, 1);
}

#[tokio::test]
async fn a_reused_request_id_with_another_request_is_refused() {
    let store = store().await;
    let caller = Caller::ApiKey("pos".into());
    effect(&store, &caller, "r-1", "a", Duration::ZERO)
        .await
        .unwrap();
    let reused = effect(&store, &caller, "r-1", "b", Duration::ZERO).await;
    assert!(
        matches!(reused, Err(IdempotencyError::Mismatch)),
        "{reused:?}"
    );
    assert_eq!(effects(&store).await, 1);
}

#[tokio::test]
async fn two_callers_with_the_same_request_id_never_see_each_others_responses() {
    let store = store().await;
    let pos = effect(
        &store,
        &Caller::ApiKey("pos".into()),
        "same",
        "a",
        Duration::ZERO,
    )
    .await
    .unwrap();
    let crm = effect(
        &store,
        &Caller::ApiKey("crm".into()),
        "same",
        "a",
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_ne!(pos, crm);
    assert_eq!(effects(&store).await, 2);
}

#[tokio::test]
async fn a_key_expires_after_the_window_and_a_replay_is_a_new_request() {
    let store = store().await;
    let caller = Caller::Anonymous;
    let first = effect(&store, &caller, "r-1", "a", Duration::ZERO)
        .await
        .unwrap();
    store.clock.advance(chrono::Duration::hours(23));
    assert_eq!(
        effect(&store, &caller, "r-1", "a", Duration::ZERO)
            .await
            .unwrap(),
        first
    );
    store.clock.advance(chrono::Duration::hours(2));
    let later = effect(&store, &caller, "r-1", "b", Duration::ZERO)
        .await
        .unwrap();
    assert_ne!(later, first);
    assert_eq!(effects(&store).await, 2);
}

#[tokio::test]
async fn racing_copies_of_one_request_have_one_effect_and_the_same_answer() {
    let store = Arc::new(store().await);
    let caller = Caller::ApiKey("pos".into());
    let (a, b) = tokio::join!(
        effect(&store, &caller, "race", "a", Duration::from_millis(200)),
        effect(&store, &caller, "race", "a", Duration::from_millis(200)),
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(effects(&store).await, 1);
}

#[tokio::test]
async fn an_effect_that_fails_leaves_the_key_free() {
    let store = store().await;
    let program = program();
    let caller = Caller::Anonymous;
    let key = RequestKey {
        program: &program,
        caller: &caller,
        operation: "Effect",
        request_id: "r-1",
    };
    let begun = store
        .idempotency
        .begin::<EchoRequest, _>(&store.db, key, &request("a"), Plain)
        .await
        .unwrap();
    // The effect fails before commit: the transaction rolls back.
    drop(begun);
    effect(&store, &caller, "r-1", "a", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(effects(&store).await, 1);
}
