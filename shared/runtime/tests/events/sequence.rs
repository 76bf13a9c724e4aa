//! Per-member sequences: numbered without gaps by the outbox, checked by
//! the consumer.

use laurel_runtime::events::ENVELOPE_FIELD;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::common::*;

#[tokio::test]
async fn each_members_events_are_numbered_without_gaps() {
    let env = env().await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    env.write(Some(ada), &created(ada)).await;
    env.write(Some(bob), &created(bob)).await;
    // A change rolled back gives its number back.
    let mut tx = env.db.begin().await.unwrap();
    write_in(&mut tx, Some(ada), &updated(ada)).await;
    tx.rollback().await.unwrap();
    env.write(Some(ada), &updated(ada)).await;
    // Two events in one transaction take consecutive numbers.
    let mut tx = env.db.begin().await.unwrap();
    write_in(&mut tx, Some(ada), &updated(ada)).await;
    write_in(&mut tx, Some(bob), &updated(bob)).await;
    write_in(&mut tx, Some(ada), &updated(ada)).await;
    tx.commit().await.unwrap();
    // An event about no member is unnumbered.
    env.write(None, &created(Uuid::now_v7())).await;

    let rows: Vec<(Option<Uuid>, i64)> =
        sqlx::query_as("SELECT member_id, member_sequence FROM outbox ORDER BY seq")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let numbers = |member: Uuid| -> Vec<i64> {
        rows.iter()
            .filter(|(m, _)| *m == Some(member))
            .map(|(_, n)| *n)
            .collect()
    };
    assert_eq!(numbers(ada), [1, 2, 3, 4]);
    assert_eq!(numbers(bob), [1, 2]);
    assert_eq!(rows.last(), Some(&(None, 0)));
}

#[tokio::test]
async fn concurrent_writers_of_one_member_never_share_or_skip_a_number() {
    let env = env().await;
    let member = Uuid::now_v7();
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let db = env.db.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let mut tx = db.begin().await.unwrap();
                    write_in(&mut tx, Some(member), &updated(member)).await;
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // The outbox order of a member agrees with its numbering.
    let numbers: Vec<i64> = sqlx::query_scalar("SELECT member_sequence FROM outbox ORDER BY seq")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(numbers, (1..=80).collect::<Vec<i64>>());
}

#[tokio::test]
async fn the_handler_is_told_of_gaps_and_stale_events() {
    const GROUP: &str = "ordered";
    let env = env().await;
    let member = Uuid::now_v7();
    env.write(Some(member), &created(member)).await;
    for _ in 0..3 {
        env.write(Some(member), &updated(member)).await;
    }
    let envelopes: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT member_sequence, envelope FROM outbox ORDER BY seq")
            .fetch_all(&env.db)
            .await
            .unwrap();
    // Published out of order, as two replicas racing could apply them.
    let mut redis = env.redis.clone();
    for wanted in [1, 3, 2, 4] {
        let (_, envelope) = envelopes.iter().find(|(n, _)| *n == wanted).unwrap();
        let _: String = redis
            .xadd(env.stream(), "*", &[(ENVELOPE_FIELD, envelope.as_slice())])
            .await
            .unwrap();
    }
    let consumer = env
        .consumer(env.consumer_config(GROUP, "ordered-1"), recorder("ordered"))
        .await;
    eventually(WAIT, "all four are applied", || async {
        env.drained(GROUP).await.then_some(())
    })
    .await;
    let seen: Vec<(i64, String)> =
        sqlx::query_as("SELECT sequence, sequence_check FROM effects ORDER BY n")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let seen: Vec<(i64, &str)> = seen.iter().map(|(n, c)| (*n, c.as_str())).collect();
    assert_eq!(
        seen,
        [
            (1, "InOrder"),
            (3, "Gap { last_applied: 1 }"),
            (2, "Stale { last_applied: 3 }"),
            (4, "InOrder"),
        ]
    );
    let last: i64 = env
        .scalar("SELECT last_sequence FROM consumer_sequences")
        .await;
    assert_eq!(last, 4);
    consumer.stop().await;
}

#[tokio::test]
async fn skipped_events_still_advance_the_sequence() {
    const GROUP: &str = "partial";
    let env = env().await;
    let member = Uuid::now_v7();
    env.write(Some(member), &created(member)).await;
    // The recorder does not route identity links: skipped.
    env.write(
        Some(member),
        &laurel_proto::member::v1::IdentityLinked {
            member_id: member.to_string(),
            ..Default::default()
        },
    )
    .await;
    env.write(Some(member), &updated(member)).await;
    let consumer = env
        .consumer(env.consumer_config(GROUP, "partial-1"), recorder("partial"))
        .await;
    let relay = env.relay();
    eventually(WAIT, "all three are settled", || async {
        (env.all_published().await && env.drained(GROUP).await).then_some(())
    })
    .await;
    let seen: Vec<(i64, String)> =
        sqlx::query_as("SELECT sequence, sequence_check FROM effects ORDER BY n")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(seen, [(1, "InOrder".to_owned()), (3, "InOrder".to_owned())]);
    assert_eq!(env.scalar("SELECT count(*) FROM inbox").await, 2);
    relay.stop().await;
    consumer.stop().await;
}
