//! Consumer groups: effects applied once, slow batches kept by their
//! owner, failures classified by the handler, stable names.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use laurel_proto::{common::v1::EventEnvelope, member::v1 as pb};
use laurel_runtime::events::{
    ENVELOPE_FIELD,
    consumer::{Consumer, EventContext, EventHandler, Handled, HandlerError},
    router::Router,
};
use prost::Message;
use redis::{
    AsyncCommands,
    streams::{StreamInfoConsumersReply, StreamReadOptions, StreamReadReply},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::common::*;

/// Writes `n` creations and has a relay publish them.
async fn publish(env: &Env, n: usize) -> Vec<Uuid> {
    let mut members = Vec::new();
    for _ in 0..n {
        let member = Uuid::now_v7();
        env.write(Some(member), &created(member)).await;
        members.push(member);
    }
    let relay = env.relay();
    eventually(WAIT, "the relay publishes", || async {
        env.all_published().await.then_some(())
    })
    .await;
    relay.stop().await;
    members
}

/// Reads every new entry of the stream as consumer `name`, leaving them
/// pending, as a consumer that dies right after reading would.
async fn take_all(env: &Env, group: &str, name: &str) -> usize {
    let mut redis = env.redis.clone();
    let created: redis::RedisResult<()> = redis.xgroup_create(env.stream(), group, "0").await;
    if let Err(error) = created {
        assert_eq!(error.code(), Some("BUSYGROUP"), "{error}");
    }
    let read: Option<StreamReadReply> = redis
        .xread_options(
            &[env.stream()],
            &[">"],
            &StreamReadOptions::default().group(group, name).count(1000),
        )
        .await
        .unwrap();
    read.map_or(0, |r| r.keys.iter().map(|k| k.ids.len()).sum())
}

async fn consumer_names(env: &Env, group: &str) -> Vec<String> {
    let mut redis = env.redis.clone();
    let info: StreamInfoConsumersReply = redis.xinfo_consumers(env.stream(), group).await.unwrap();
    let mut names: Vec<String> = info.consumers.into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn two_consumers_sharing_a_group_apply_each_effect_once() {
    const GROUP: &str = "shared";
    let env = env().await;
    let first = env
        .consumer(env.consumer_config(GROUP, "one"), recorder("one"))
        .await;
    let second = env
        .consumer(env.consumer_config(GROUP, "two"), recorder("two"))
        .await;
    let relay = env.relay();
    for _ in 0..100 {
        let member = Uuid::now_v7();
        env.write(Some(member), &created(member)).await;
        env.write(Some(member), &updated(member)).await;
    }
    eventually(WAIT, "both consumers drain the stream", || async {
        (env.all_published().await && env.drained(GROUP).await).then_some(())
    })
    .await;
    let effects = env.scalar("SELECT count(*) FROM effects").await;
    let distinct = env
        .scalar("SELECT count(DISTINCT event_id) FROM effects")
        .await;
    assert_eq!((effects, distinct), (200, 200));
    let unknown = env
        .scalar(
            "SELECT count(*) FROM effects e
             WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id)",
        )
        .await;
    assert_eq!(unknown, 0);
    assert_eq!(env.scalar("SELECT count(*) FROM inbox").await, 200);
    assert_eq!(env.dead_letters(GROUP).await, 0);
    relay.stop().await;
    first.stop().await;
    second.stop().await;
}

/// A router that takes `delay` over each creation, recording it as `name`.
fn slow_recorder(name: &'static str, delay: Duration) -> Arc<Router> {
    Arc::new(Router::new().on(move |tx, event, _: pb::MemberCreated| {
        Box::pin(async move {
            // The handler is slow on purpose: the batch outlives claim_idle.
            tokio::time::sleep(delay).await;
            record(tx, event, name).await
        })
    }))
}

#[tokio::test]
async fn a_batch_held_longer_than_claim_idle_is_not_taken_from_its_live_owner() {
    const GROUP: &str = "patient";
    let env = env().await;
    publish(&env, 3).await;
    let claim_idle = Duration::from_millis(900);
    let mut config = env.consumer_config(GROUP, "owner");
    config.claim_idle = claim_idle;
    config.max_attempts = 1;
    let owner = env
        .consumer(config, slow_recorder("owner", claim_idle + claim_idle / 2))
        .await;
    eventually(WAIT, "the owner holds the whole batch", || async {
        (env.pending(GROUP).await == 3).then_some(())
    })
    .await;
    let mut config = env.consumer_config(GROUP, "peer");
    config.claim_idle = claim_idle;
    config.max_attempts = 1;
    let peer = env
        .consumer(config, slow_recorder("peer", Duration::ZERO))
        .await;
    eventually(WAIT, "the owner applies its batch", || async {
        (env.scalar("SELECT count(*) FROM effects").await == 3 && env.pending(GROUP).await == 0)
            .then_some(())
    })
    .await;
    let by_peer = env
        .scalar("SELECT count(*) FROM effects WHERE consumer = 'peer'")
        .await;
    assert_eq!(by_peer, 0, "the peer took entries from a live owner");
    assert_eq!(env.dead_letters(GROUP).await, 0);
    assert_eq!(env.scalar("SELECT count(*) FROM event_attempts").await, 0);
    owner.stop().await;
    peer.stop().await;
}

#[tokio::test]
async fn entries_reclaimed_many_times_are_applied_not_dead_lettered() {
    const GROUP: &str = "reclaimers";
    let env = env().await;
    publish(&env, 4).await;
    // Three consumers in turn take the entries and die: each delivery
    // counts, though no handler ever ran.
    assert_eq!(take_all(&env, GROUP, "dead-1").await, 4);
    let mut redis = env.redis.clone();
    let ids: Vec<String> = {
        let reply: redis::streams::StreamPendingCountReply = redis
            .xpending_count(env.stream(), GROUP, "-", "+", 100)
            .await
            .unwrap();
        reply.ids.into_iter().map(|p| p.id).collect()
    };
    for dead in ["dead-2", "dead-3"] {
        let _: redis::Value = redis
            .xclaim(env.stream(), GROUP, dead, 0, &ids)
            .await
            .unwrap();
    }

    let mut config = env.consumer_config(GROUP, "alive");
    config.claim_idle = Duration::from_millis(200);
    config.max_attempts = 2;
    let alive = env.consumer(config, recorder("alive")).await;
    eventually(WAIT, "the orphans are applied and acked", || async {
        (env.scalar("SELECT count(*) FROM effects").await == 4 && env.pending(GROUP).await == 0)
            .then_some(())
    })
    .await;
    assert_eq!(env.dead_letters(GROUP).await, 0);
    let first_attempts = env
        .scalar("SELECT count(*) FROM effects WHERE attempt = 1")
        .await;
    assert_eq!(first_attempts, 4, "each was applied on its first attempt");
    alive.stop().await;
}

#[tokio::test]
async fn terminal_failures_dead_letter_at_once_and_retryable_ones_after_max_attempts() {
    const GROUP: &str = "strict";
    let env = env().await;
    let member = Uuid::now_v7();
    env.write(Some(member), &created(member)).await;
    env.write(Some(member), &updated(member)).await;
    // Nobody handles identity links: skipped, not failed.
    env.write(
        Some(member),
        &pb::IdentityLinked {
            member_id: member.to_string(),
            ..Default::default()
        },
    )
    .await;
    let terminal = Arc::new(AtomicU32::new(0));
    let retryable = Arc::new(AtomicU32::new(0));
    let (t, r) = (terminal.clone(), retryable.clone());
    let router = Router::new()
        .on(move |_tx, _event, _: pb::MemberCreated| {
            t.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(HandlerError::terminal(anyhow::anyhow!("never valid"))) })
        })
        .on(move |_tx, _event, _: pb::MemberUpdated| {
            r.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(HandlerError::retryable(anyhow::anyhow!("not yet"))) })
        });
    let mut config = env.consumer_config(GROUP, "strict-1");
    config.max_attempts = 3;
    let consumer = env.consumer(config, Arc::new(router)).await;
    let relay = env.relay();
    eventually(WAIT, "every entry is settled", || async {
        (env.all_published().await && env.drained(GROUP).await).then_some(())
    })
    .await;
    assert_eq!(env.dead_letters(GROUP).await, 2);
    assert_eq!(terminal.load(Ordering::SeqCst), 1, "terminal: tried once");
    assert_eq!(
        retryable.load(Ordering::SeqCst),
        3,
        "retryable: max_attempts"
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM event_attempts")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(attempts, 3);
    // Neither failure left an inbox row; the skipped event needs none.
    assert_eq!(env.scalar("SELECT count(*) FROM inbox").await, 0);
    let mut redis = env.redis.clone();
    let dead: redis::streams::StreamRangeReply = redis
        .xrange_all(laurel_runtime::events::dead_letter_key(&env.prefix, GROUP))
        .await
        .unwrap();
    let reasons: Vec<String> = dead
        .ids
        .iter()
        .map(|e| e.get::<String>("reason").unwrap())
        .collect();
    assert!(reasons[0].contains("never valid"), "{reasons:?}");
    assert!(reasons[1].contains("not yet"), "{reasons:?}");
    relay.stop().await;
    consumer.stop().await;
}

#[tokio::test]
async fn an_unavailable_dependency_pauses_without_spending_attempts() {
    const GROUP: &str = "waiting";
    let env = env().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let router = Router::new().on(move |tx, event, _: pb::MemberCreated| {
        let call = c.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            if call <= 4 {
                return Err(HandlerError::unavailable(anyhow::anyhow!("points is away")));
            }
            record(tx, event, "waiting").await
        })
    });
    let mut config = env.consumer_config(GROUP, "waiting-1");
    config.max_attempts = 1;
    let consumer = env.consumer(config, Arc::new(router)).await;
    publish(&env, 1).await;
    eventually(
        WAIT,
        "the event is applied once the dependency is back",
        || async { (env.scalar("SELECT count(*) FROM effects").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(env.dead_letters(GROUP).await, 0);
    assert_eq!(
        env.scalar("SELECT attempt::bigint FROM effects").await,
        1,
        "waiting spent no attempt"
    );
    consumer.stop().await;
}

#[tokio::test]
async fn consumer_names_stay_stable_across_restarts() {
    const GROUP: &str = "stable";
    let env = env().await;
    for round in 0..3 {
        let consumer = env
            .consumer(
                env.consumer_config(GROUP, "replica-0"),
                recorder("replica-0"),
            )
            .await;
        publish(&env, 2).await;
        eventually(WAIT, "the round's events are applied", || async {
            (env.scalar("SELECT count(*) FROM effects").await == 2 * (round + 1)).then_some(())
        })
        .await;
        consumer.stop().await;
    }
    assert_eq!(consumer_names(&env, GROUP).await, ["replica-0"]);
}

#[tokio::test]
async fn a_restarted_consumer_resumes_its_own_pending_entries_at_once() {
    const GROUP: &str = "resuming";
    let env = env().await;
    publish(&env, 3).await;
    // The previous life of replica-0 read the entries and died.
    assert_eq!(take_all(&env, GROUP, "replica-0").await, 3);
    let mut config = env.consumer_config(GROUP, "replica-0");
    // Far longer than the test: only resuming can apply them.
    config.claim_idle = Duration::from_secs(3600);
    let consumer = env.consumer(config, recorder("replica-0")).await;
    eventually(WAIT, "the entries are applied and acked", || async {
        (env.scalar("SELECT count(*) FROM effects").await == 3 && env.pending(GROUP).await == 0)
            .then_some(())
    })
    .await;
    consumer.stop().await;
}

#[tokio::test]
async fn idle_consumers_holding_nothing_are_removed_from_the_group() {
    const GROUP: &str = "tidy";
    let env = env().await;
    // A replica from before a restart holds entries; another holds none.
    publish(&env, 2).await;
    assert_eq!(take_all(&env, GROUP, "old-holding").await, 2);
    let _: bool = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(env.stream())
        .arg(GROUP)
        .arg("old-empty")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(
        consumer_names(&env, GROUP).await,
        ["old-empty", "old-holding"]
    );

    let mut config = env.consumer_config(GROUP, "current");
    config.consumer_expiry = Duration::from_millis(100);
    // Long enough that the holder's entries are not reclaimed before the
    // empty consumer is seen gone.
    config.claim_idle = Duration::from_secs(2);
    let consumer = env.consumer(config, recorder("current")).await;
    let names = eventually(WAIT, "the empty consumer is removed", || async {
        let names = consumer_names(&env, GROUP).await;
        (!names.iter().any(|n| n == "old-empty")).then_some(names)
    })
    .await;
    assert_eq!(names, ["current", "old-holding"], "a holder is kept");
    // Its entries reclaimed, the other one goes too; the live one stays.
    eventually(WAIT, "only the live consumer remains", || async {
        (consumer_names(&env, GROUP).await == ["current"]).then_some(())
    })
    .await;
    assert_eq!(env.scalar("SELECT count(*) FROM effects").await, 2);
    consumer.stop().await;
}

/// Records every event after a pause, watching how many handlers run at
/// once and whether two of one member ever overlap.
#[derive(Default)]
struct Overlaps {
    members: Mutex<HashSet<Uuid>>,
    running: AtomicUsize,
    most: AtomicUsize,
    same_member: AtomicUsize,
    not_alone: AtomicUsize,
}

impl EventHandler for Overlaps {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
    ) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            // An event of no member must run alone.
            let member = event.member_id.unwrap_or_default();
            if !self.members.lock().unwrap().insert(member) {
                self.same_member.fetch_add(1, Ordering::SeqCst);
            }
            let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(running, Ordering::SeqCst);
            if event.member_id.is_none() && running > 1 {
                self.not_alone.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
            let recorded = record(tx, event, "lanes").await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.members.lock().unwrap().remove(&member);
            recorded.map(|()| Handled::Applied)
        })
    }
}

#[tokio::test]
async fn one_members_events_apply_in_order_while_several_members_proceed_at_once() {
    const GROUP: &str = "lanes";
    const MEMBERS: usize = 6;
    const EACH: usize = 8;
    let env = env().await;
    let members: Vec<Uuid> = (0..MEMBERS).map(|_| Uuid::now_v7()).collect();
    // Interleaved unevenly, so that no fixed split of the read by position
    // keeps a member's events together.
    let mut written = [0; MEMBERS];
    let mut turn = 0usize;
    while written.iter().any(|&n| n < EACH) {
        turn += 1;
        let m = (turn * 7 + turn / 3) % MEMBERS;
        if written[m] == EACH {
            continue;
        }
        let member = members[m];
        if written[m] == 0 {
            env.write(Some(member), &created(member)).await;
        } else {
            env.write(Some(member), &updated(member)).await;
        }
        written[m] += 1;
    }
    let relay = env.relay();
    eventually(WAIT, "the relay publishes", || async {
        env.all_published().await.then_some(())
    })
    .await;
    relay.stop().await;

    let handler = Arc::new(Overlaps::default());
    let mut config = env.consumer_config(GROUP, "laned");
    config.lanes = 4;
    // Two connections per lane: all four lanes are allowed.
    let consumer = Consumer::new(env.pool(8), &env.redis_url, config, handler.clone())
        .await
        .expect("joins the group");
    let consumer = Running::spawn(|rx| consumer.run(rx));
    eventually(WAIT, "the consumer drains the stream", || async {
        env.drained(GROUP).await.then_some(())
    })
    .await;
    consumer.stop().await;

    let rows: Vec<(Uuid, i64, String)> =
        sqlx::query_as("SELECT member_id, sequence, sequence_check FROM effects ORDER BY n")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), MEMBERS * EACH);
    let mut applied: HashMap<Uuid, Vec<(i64, String)>> = HashMap::new();
    for (member, sequence, check) in rows {
        applied.entry(member).or_default().push((sequence, check));
    }
    for member in &members {
        let expected: Vec<(i64, String)> = (1..=EACH as i64)
            .map(|s| (s, "InOrder".to_owned()))
            .collect();
        assert_eq!(applied[member], expected, "member {member} out of order");
    }
    assert_eq!(handler.same_member.load(Ordering::SeqCst), 0);
    let most = handler.most.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "members applied at once: {most}, expected several and at most the lanes"
    );
}

/// Adds an envelope to the stream as a producer without member sequences
/// would: nothing but the consumer's lanes keeps a member's events apart.
async fn add_unsequenced(env: &Env, member: Option<Uuid>) -> Uuid {
    let event_id = Uuid::now_v7();
    let envelope = EventEnvelope {
        event_id: event_id.to_string(),
        event_type: "member.MemberCreated".into(),
        source: SOURCE.into(),
        program_id: "default".into(),
        member_id: member.map(|m| m.to_string()).unwrap_or_default(),
        member_sequence: 0,
        ..Default::default()
    };
    let mut redis = env.redis.clone();
    let _: String = redis
        .xadd(
            env.stream(),
            "*",
            &[(ENVELOPE_FIELD, envelope.encode_to_vec())],
        )
        .await
        .unwrap();
    event_id
}

#[tokio::test]
async fn lanes_alone_keep_each_members_events_in_order_and_a_memberless_event_apart() {
    const GROUP: &str = "unsequenced";
    let env = env().await;
    let members: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut written: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut stream_order = Vec::new();
    for turn in 0..40usize {
        if turn == 20 {
            stream_order.push(add_unsequenced(&env, None).await);
        }
        // Consecutive entries often share a member.
        let member = members[(turn / 2 + turn % 3) % members.len()];
        let id = add_unsequenced(&env, Some(member)).await;
        written.entry(member).or_default().push(id);
        stream_order.push(id);
    }
    let barrier = stream_order[20];

    let handler = Arc::new(Overlaps::default());
    let mut config = env.consumer_config(GROUP, "laned");
    config.lanes = 4;
    let consumer = Consumer::new(env.pool(8), &env.redis_url, config, handler.clone())
        .await
        .expect("joins the group");
    let consumer = Running::spawn(|rx| consumer.run(rx));
    eventually(WAIT, "the consumer drains the stream", || async {
        env.drained(GROUP).await.then_some(())
    })
    .await;
    consumer.stop().await;

    let rows: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT event_id, member_id FROM effects ORDER BY n")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), stream_order.len());
    let mut applied: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (event_id, member) in &rows {
        if let Some(member) = member {
            applied.entry(*member).or_default().push(*event_id);
        }
    }
    assert_eq!(applied, written, "a member's events applied out of order");
    assert_eq!(handler.same_member.load(Ordering::SeqCst), 0);
    let at = rows.iter().position(|(id, _)| *id == barrier).unwrap();
    let before: HashSet<Uuid> = stream_order[..20].iter().copied().collect();
    let applied_before: HashSet<Uuid> = rows[..at].iter().map(|(id, _)| *id).collect();
    assert_eq!(
        applied_before, before,
        "the memberless event waits for exactly the entries before it"
    );
    assert_eq!(handler.not_alone.load(Ordering::SeqCst), 0);
    assert!(handler.most.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_read_of_many_members_shares_transactions_and_a_failing_event_spares_its_neighbours() {
    const GROUP: &str = "together";
    const MEMBERS: usize = 30;
    let env = env().await;
    sqlx::query("CREATE TABLE applied_in (event_id uuid PRIMARY KEY, txid bigint NOT NULL)")
        .execute(&env.db)
        .await
        .unwrap();
    // Published before the consumer starts: one read holds them all.
    let members = publish(&env, MEMBERS).await;
    let poisoned = members[7];
    let tried = Arc::new(AtomicUsize::new(0));
    let t = tried.clone();
    let router = Router::new().on(move |tx, event, _: pb::MemberCreated| {
        t.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if event.member_id == Some(poisoned) {
                return Err(HandlerError::terminal(anyhow::anyhow!("poisoned")));
            }
            record(tx, event, "together").await?;
            sqlx::query("INSERT INTO applied_in (event_id, txid) VALUES ($1, txid_current())")
                .bind(event.event_id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    });
    let mut config = env.consumer_config(GROUP, "together-1");
    config.lanes = 3;
    // Two connections per lane: all three lanes are allowed.
    let consumer = Consumer::new(env.pool(6), &env.redis_url, config, Arc::new(router))
        .await
        .expect("joins the group");
    let consumer = Running::spawn(|rx| consumer.run(rx));
    eventually(WAIT, "the consumer drains the stream", || async {
        env.drained(GROUP).await.then_some(())
    })
    .await;
    consumer.stop().await;

    // Each event applied once, the poisoned one dead-lettered alone.
    assert_eq!(env.dead_letters(GROUP).await, 1);
    assert_eq!(
        env.scalar("SELECT count(DISTINCT event_id) FROM effects")
            .await,
        MEMBERS as i64 - 1
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM effects").await,
        MEMBERS as i64 - 1
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM inbox").await,
        MEMBERS as i64 - 1
    );
    // Three transactions of ten; the one holding the poisoned event was
    // rolled back, and its nine neighbours were applied one by one.
    let mut sizes: Vec<i64> = sqlx::query_scalar("SELECT count(*) FROM applied_in GROUP BY txid")
        .fetch_all(&env.db)
        .await
        .unwrap();
    sizes.sort_unstable();
    let mut expected = vec![1; 9];
    expected.extend([10, 10]);
    assert_eq!(sizes, expected);
    // Two chunks ran once; the poisoned chunk stopped at its eighth event
    // (seven neighbours tried before it), then all ten went alone.
    assert_eq!(tried.load(Ordering::SeqCst), 20 + 8 + 10);
}
