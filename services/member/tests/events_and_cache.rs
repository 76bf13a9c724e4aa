//! The event backbone (outbox relay, consumer groups with an inbox, dead
//! letters, reclaiming) and the member card cache, over real gRPC, real
//! Postgres and real Redis.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use common::*;
use futures::future::BoxFuture;
use laurel_proto::{common::v1::EventEnvelope, member::v1 as pb};
use laurel_runtime::events::{
    ENVELOPE_FIELD,
    consumer::{Consumer, ConsumerConfig, EventContext, EventHandler, Handled, HandlerError},
    dead_letter_key,
    relay::{Relay, RelayConfig},
    stream_key,
};
use laurel_test_support::{PrivateRedis, database_url};
use prost::Message;
use redis::{
    AsyncCommands,
    aio::MultiplexedConnection,
    streams::{StreamInfoGroupsReply, StreamRangeReply, StreamReadOptions, StreamReadReply},
};
use sqlx::{PgConnection, PgPool};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- helpers

/// A handler that records every event it applies in `seen_events`, and
/// refuses events of one type, if told to.
struct Recorder {
    refuse: Option<&'static str>,
    refused: AtomicU32,
}

impl Recorder {
    fn new(refuse: Option<&'static str>) -> Arc<Self> {
        Arc::new(Self {
            refuse,
            refused: AtomicU32::new(0),
        })
    }
}

impl EventHandler for Recorder {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a EventContext,
    ) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        let event = &event.envelope;
        Box::pin(async move {
            if self.refuse == Some(event.event_type.as_str()) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(HandlerError::retryable(anyhow::anyhow!(
                    "this handler refuses {}",
                    event.event_type
                )));
            }
            sqlx::query(
                "INSERT INTO seen_events (event_id, member_id, event_type) VALUES ($1, $2, $3)",
            )
            .bind(Uuid::parse_str(&event.event_id).map_err(HandlerError::terminal)?)
            .bind(Uuid::parse_str(&event.member_id).ok())
            .bind(&event.event_type)
            .execute(&mut *tx)
            .await?;
            Ok(Handled::Applied)
        })
    }
}

/// The table the [`Recorder`] writes to; `n` is the order of application.
async fn create_seen_events(db: &PgPool) {
    sqlx::query(
        "CREATE TABLE seen_events (
             n          bigserial PRIMARY KEY,
             event_id   uuid NOT NULL,
             member_id  uuid,
             event_type text NOT NULL
         )",
    )
    .execute(db)
    .await
    .unwrap();
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops in time")
            .expect("did not panic");
    }
}

fn consumer_config(app: &TestApp, group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(&app.prefix, group, &["member"]);
    config.block = Duration::from_millis(100);
    config
}

/// Joins `config.group` (creating it at the start of the stream) and runs a
/// consumer with a pool of its own.
async fn start_consumer(
    app: &TestApp,
    config: ConsumerConfig,
    handler: Arc<dyn EventHandler>,
) -> Running {
    let pool = laurel_runtime::db::pool(&database_url(), &app.schema, 4).unwrap();
    let consumer = Consumer::new(pool, &app.redis_url, config, handler)
        .await
        .expect("joins the group");
    let (stop, rx) = watch::channel(false);
    Running {
        stop,
        task: tokio::spawn(consumer.run(rx)),
    }
}

fn relay(app: &TestApp, pool: PgPool, config: RelayConfig) -> Relay {
    Relay::new(pool, &app.redis_url, config).unwrap()
}

fn start_relay(relay: Relay) -> Running {
    let (stop, rx) = watch::channel(false);
    Running {
        stop,
        task: tokio::spawn(relay.run(rx)),
    }
}

async fn redis_at(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers")
}

fn events_key(app: &TestApp) -> String {
    stream_key(&app.prefix, "member")
}

fn card_key(app: &TestApp, member_id: &str) -> String {
    format!("{}:card:default:{member_id}", app.prefix)
}

async fn scalar(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

async fn pending(redis: &mut MultiplexedConnection, key: &str, group: &str) -> usize {
    let reply: redis::streams::StreamPendingReply = redis.xpending(key, group).await.unwrap();
    reply.count()
}

/// Whether `group` has been handed every entry of `key` and acked them all.
async fn drained(redis: &mut MultiplexedConnection, key: &str, group: &str) -> bool {
    let last: StreamRangeReply = redis.xrevrange_count(key, "+", "-", 1).await.unwrap();
    let Some(last) = last.ids.first() else {
        return false;
    };
    let info: StreamInfoGroupsReply = redis.xinfo_groups(key).await.unwrap();
    info.groups
        .iter()
        .any(|g| g.name == group && g.pending == 0 && g.last_delivered_id == last.id)
}

async fn get(app: &mut TestApp, member_id: &str) -> pb::Member {
    app.client
        .get_member(req(pb::GetMemberRequest {
            member_id: member_id.into(),
        }))
        .await
        .expect("get answers")
        .into_inner()
        .member
        .unwrap()
}

fn rename(member_id: &str, given_name: &str) -> pb::UpdateMemberRequest {
    pb::UpdateMemberRequest {
        request_id: rid(),
        member: Some(pb::Member {
            member_id: member_id.into(),
            profile: Some(pb::Profile {
                given_name: given_name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["profile.given_name".into()],
        }),
    }
}

fn given_name(member: &pb::Member) -> &str {
    &member.profile.as_ref().unwrap().given_name
}

async fn all_published(db: &PgPool) -> bool {
    scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
}

// ------------------------------------------------------------------ events

#[tokio::test]
async fn an_event_is_applied_exactly_once_across_a_relay_restart() {
    const GROUP: &str = "test-consumer";
    let mut app = spawn_with(Options {
        relay: false,
        ..Options::default()
    })
    .await;
    let mut members = Vec::new();
    for _ in 0..20 {
        members.push(create(&mut app).await.member_id);
    }
    // Every fourth member gets three purchases, interleaved with the others'.
    for _ in 0..3 {
        for member in members.iter().step_by(4) {
            let recorded = app
                .client
                .record_activity(req(by_id(member, purchase(&rid(), 500))))
                .await
                .unwrap()
                .into_inner();
            assert!(recorded.created);
        }
    }
    let outbox = scalar(&app.db, "SELECT count(*) FROM outbox").await;
    assert_eq!(outbox, 20 + 5 * 3);

    create_seen_events(&app.db).await;
    let consumer = start_consumer(&app, consumer_config(&app, GROUP), Recorder::new(None)).await;
    let key = events_key(&app);
    let mut redis = redis_at(&app.redis_url).await;

    // A first relay publishes in small batches, then dies.
    let mut config = RelayConfig::new(&app.prefix, &app.schema);
    config.batch_size = 5;
    let first_pool = laurel_runtime::db::pool(&database_url(), &app.schema, 2).unwrap();
    let first = start_relay(relay(&app, first_pool.clone(), config.clone()));
    eventually(WAIT, "the first relay publishes", || async {
        (scalar(
            &app.db,
            "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL",
        )
        .await
            >= 10)
            .then_some(())
    })
    .await;
    first.task.abort();
    let _ = first.task.await;
    // Its Postgres sessions, and with them its leader lock, die with it.
    tokio::time::timeout(Duration::from_secs(10), first_pool.close())
        .await
        .expect("the dead relay's pool closes");
    drop(first_pool);
    eventually(WAIT, "the dead relay's leader lock is gone", || {
        let db = app.db.clone();
        let lock = config.lock_name.clone();
        async move {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
                   AND classid::bigint = (hashtext($1)::bigint >> 32) & 4294967295
                   AND objid::bigint = hashtext($1)::bigint & 4294967295",
            )
            .bind(lock)
            .fetch_one(&db)
            .await
            .unwrap();
            (held == 0).then_some(())
        }
    })
    .await;

    // It had published these but crashed before marking them.
    let reset = sqlx::query(
        "UPDATE outbox SET published_at = NULL WHERE seq IN
           (SELECT seq FROM outbox WHERE published_at IS NOT NULL ORDER BY seq LIMIT 10)",
    )
    .execute(&app.db)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(reset, 10);

    let second = start_relay(relay(&app, app.db.clone(), config));
    eventually(WAIT, "the second relay publishes everything, again", || {
        let db = app.db.clone();
        let mut redis = redis.clone();
        let key = key.clone();
        async move {
            let len: i64 = redis.xlen(&key).await.unwrap();
            (all_published(&db).await && len > outbox).then_some(())
        }
    })
    .await;
    let len: i64 = redis.xlen(&key).await.unwrap();
    assert!(
        len >= outbox + 10,
        "{len} stream entries for {outbox} events"
    );
    eventually(WAIT, "the consumer has read and acked every entry", || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { drained(&mut redis, &key, GROUP).await.then_some(()) }
    })
    .await;

    // Exactly once: one effect per event, duplicates included.
    let seen = scalar(&app.db, "SELECT count(*) FROM seen_events").await;
    let distinct = scalar(&app.db, "SELECT count(DISTINCT event_id) FROM seen_events").await;
    assert_eq!((seen, distinct), (outbox, outbox));
    let unknown = scalar(
        &app.db,
        "SELECT count(*) FROM seen_events s
         WHERE NOT EXISTS (SELECT 1 FROM outbox o
                           WHERE o.event_id = s.event_id AND o.event_type = s.event_type
                             AND o.member_id IS NOT DISTINCT FROM s.member_id)",
    )
    .await;
    assert_eq!(unknown, 0, "seen events that are not outbox events");
    let inbox = scalar(
        &app.db,
        "SELECT count(*) FROM inbox i JOIN outbox o USING (event_id)
         WHERE i.consumer = 'test-consumer'",
    )
    .await;
    let inbox_all = scalar(&app.db, "SELECT count(*) FROM inbox").await;
    assert_eq!((inbox, inbox_all), (outbox, outbox));

    // Each member's events were applied in the order they were written.
    let by_member = |rows: Vec<(Uuid, Option<Uuid>)>| {
        let mut map: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (event, member) in rows {
            map.entry(member.expect("member events"))
                .or_default()
                .push(event);
        }
        map
    };
    let written: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT event_id, member_id FROM outbox ORDER BY seq")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let applied: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT event_id, member_id FROM seen_events ORDER BY n")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let (written, applied) = (by_member(written), by_member(applied));
    assert_eq!(written.values().map(Vec::len).max(), Some(4));
    assert_eq!(applied, written);

    second.stop().await;
    consumer.stop().await;
}

#[tokio::test]
async fn a_poison_event_goes_to_the_dead_letter_stream() {
    const GROUP: &str = "picky";
    const REFUSED: &str = "member.MemberUpdated";
    let mut app = spawn().await;
    create_seen_events(&app.db).await;
    let key = events_key(&app);
    let mut redis = redis_at(&app.redis_url).await;
    let garbage = b"not protobuf".as_slice();
    assert!(EventEnvelope::decode(garbage).is_err());

    let mut config = consumer_config(&app, GROUP);
    config.max_attempts = 2;
    config.retry_base = Duration::from_millis(10);
    let handler = Recorder::new(Some(REFUSED));
    let consumer = start_consumer(&app, config, handler.clone()).await;

    let garbage_id: String = redis
        .xadd(&key, "*", &[(ENVELOPE_FIELD, garbage)])
        .await
        .unwrap();
    let first = create(&mut app).await;
    app.client
        .update_member(req(rename(&first.member_id, "Grace")))
        .await
        .unwrap();
    // Events behind the poison ones still get through.
    let second = create(&mut app).await;

    let dlq = dead_letter_key(&app.prefix, GROUP);
    eventually(
        WAIT,
        "both poison entries are dead-lettered and all acked",
        || {
            let db = app.db.clone();
            let mut redis = redis.clone();
            let (key, dlq) = (key.clone(), dlq.clone());
            async move {
                let dead: i64 = redis.xlen(&dlq).await.unwrap();
                (dead == 2 && all_published(&db).await && drained(&mut redis, &key, GROUP).await)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(pending(&mut redis, &key, GROUP).await, 0);

    // The dead letters name their entry, why, and carry the raw bytes.
    let entries: StreamRangeReply = redis.xrange_all(&key).await.unwrap();
    let refused_id = entries
        .ids
        .iter()
        .find(|e| e.get::<String>("type").as_deref() == Some(REFUSED))
        .expect("the update was published")
        .id
        .clone();
    let refused_event: Uuid =
        sqlx::query_scalar("SELECT event_id FROM outbox WHERE event_type = $1")
            .bind(REFUSED)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let dead: StreamRangeReply = redis.xrange_all(&dlq).await.unwrap();
    let dead: HashMap<String, (String, String, Vec<u8>)> = dead
        .ids
        .iter()
        .map(|e| {
            (
                e.get::<String>("id").unwrap(),
                (
                    e.get::<String>("stream").unwrap(),
                    e.get::<String>("reason").unwrap(),
                    e.get::<Vec<u8>>(ENVELOPE_FIELD).unwrap(),
                ),
            )
        })
        .collect();
    let (stream, reason, raw) = &dead[&garbage_id];
    assert_eq!(
        (stream.as_str(), reason.as_str(), raw.as_slice()),
        (key.as_str(), "undecodable envelope", garbage)
    );
    let (stream, reason, raw) = &dead[&refused_id];
    assert_eq!(stream, &key);
    assert!(reason.contains("refuses"), "reason {reason:?}");
    let envelope = EventEnvelope::decode(raw.as_slice()).unwrap();
    assert_eq!(envelope.event_id, refused_event.to_string());

    // Tried exactly max_attempts times, and no trace of it left applied.
    assert_eq!(handler.refused.load(Ordering::SeqCst), 2);
    let in_inbox = scalar(
        &app.db,
        "SELECT count(*) FROM inbox i JOIN outbox o USING (event_id)
         WHERE o.event_type = 'member.MemberUpdated'",
    )
    .await;
    assert_eq!(in_inbox, 0);
    let mut applied: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT event_type, member_id FROM seen_events ORDER BY n")
            .fetch_all(&app.db)
            .await
            .unwrap();
    applied.sort();
    let mut expected = vec![
        (
            "member.MemberCreated".to_owned(),
            first.member_id.parse().unwrap(),
        ),
        (
            "member.MemberCreated".to_owned(),
            second.member_id.parse().unwrap(),
        ),
    ];
    expected.sort();
    assert_eq!(applied, expected);
    consumer.stop().await;
}

#[tokio::test]
async fn a_dead_consumers_pending_events_are_reclaimed() {
    const GROUP: &str = "reclaimers";
    let mut app = spawn().await;
    create_seen_events(&app.db).await;
    let key = events_key(&app);
    let mut redis = redis_at(&app.redis_url).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(create(&mut app).await.member_id);
    }
    app.client
        .record_activity(req(by_id(&members[0], purchase(&rid(), 700))))
        .await
        .unwrap();
    eventually(WAIT, "the relay publishes the four events", || {
        let db = app.db.clone();
        async move { all_published(&db).await.then_some(()) }
    })
    .await;

    // A consumer takes every entry, then dies before acking any.
    let _: () = redis.xgroup_create(&key, GROUP, "0").await.unwrap();
    let read: Option<StreamReadReply> = redis
        .xread_options(
            &[&key],
            &[">"],
            &StreamReadOptions::default().group(GROUP, "dead").count(100),
        )
        .await
        .unwrap();
    let taken: usize = read.map_or(0, |r| r.keys.iter().map(|k| k.ids.len()).sum());
    assert_eq!(taken, 4);
    assert_eq!(pending(&mut redis, &key, GROUP).await, 4);

    let mut config = consumer_config(&app, GROUP);
    config.claim_idle = Duration::from_millis(200);
    let consumer = start_consumer(&app, config, Recorder::new(None)).await;
    eventually(
        WAIT,
        "the live consumer applies and acks the orphans",
        || {
            let db = app.db.clone();
            let mut redis = redis.clone();
            let key = key.clone();
            async move {
                (scalar(&db, "SELECT count(*) FROM seen_events").await == 4
                    && pending(&mut redis, &key, GROUP).await == 0)
                    .then_some(())
            }
        },
    )
    .await;
    let seen: HashSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM seen_events")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let written: HashSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM outbox")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(seen, written);
    consumer.stop().await;
}

// ------------------------------------------------------------------- cache

#[tokio::test]
async fn a_read_after_an_update_never_returns_the_old_value() {
    // No relay: only the write's own invalidation keeps the card honest.
    let mut app = spawn_with(Options {
        relay: false,
        ..Options::default()
    })
    .await;
    let member = create(&mut app).await;
    let card = card_key(&app, &member.member_id);
    let mut redis = redis_at(&app.redis_url).await;
    for i in 0..20 {
        let before = get(&mut app, &member.member_id).await;
        let cached: bool = redis.hexists(&card, "member").await.unwrap();
        assert!(cached, "round {i}: the read filled the card");
        let name = format!("Name{i}");
        let updated = app
            .client
            .update_member(req(rename(&member.member_id, &name)))
            .await
            .unwrap()
            .into_inner()
            .member
            .unwrap();
        assert_eq!(updated.version, before.version + 1);
        let after = get(&mut app, &member.member_id).await;
        assert_eq!(given_name(&after), name, "round {i}");
        assert_eq!(after.version, updated.version, "round {i}");
    }
}

#[tokio::test]
async fn with_redis_stopped_every_rpc_still_answers_from_postgres() {
    let mut private = PrivateRedis::start().await.expect("redis-server starts");
    let mut app = spawn_with(Options {
        redis_url: Some(private.url()),
        relay: true,
        ..Options::default()
    })
    .await;
    let number = phone();
    let member = app
        .client
        .create_member(req(create_request(&number)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let id = member.member_id.clone();
    eventually(WAIT, "the creation is published", || {
        let db = app.db.clone();
        async move { all_published(&db).await.then_some(()) }
    })
    .await;
    get(&mut app, &id).await;
    let card = card_key(&app, &id);
    let cached: bool = redis_at(&private.url())
        .await
        .hexists(&card, "member")
        .await
        .unwrap();
    assert!(cached, "the read filled the card");

    private.stop().await;
    let quickly = Duration::from_secs(5);
    let mut client = app.client.clone();
    let other = tokio::time::timeout(quickly, client.create_member(req(create_request(&phone()))))
        .await
        .expect("CreateMember answers promptly")
        .expect("CreateMember succeeds")
        .into_inner()
        .member
        .unwrap();
    let got = tokio::time::timeout(quickly, get(&mut app, &id))
        .await
        .expect("GetMember answers promptly");
    assert_eq!(given_name(&got), "Ada");
    let found = tokio::time::timeout(
        quickly,
        client.lookup_member(req(pb::LookupMemberRequest {
            identity: Some(phone_identity(&number)),
        })),
    )
    .await
    .expect("LookupMember answers promptly")
    .expect("LookupMember succeeds")
    .into_inner()
    .member
    .unwrap();
    assert_eq!(found.member_id, id);
    let updated = tokio::time::timeout(quickly, client.update_member(req(rename(&id, "Grace"))))
        .await
        .expect("UpdateMember answers promptly")
        .expect("UpdateMember succeeds")
        .into_inner()
        .member
        .unwrap();
    assert_eq!(given_name(&updated), "Grace");
    let recorded = tokio::time::timeout(
        quickly,
        client.record_activity(req(by_id(&id, purchase(&rid(), 1299)))),
    )
    .await
    .expect("RecordActivity answers promptly")
    .expect("RecordActivity succeeds")
    .into_inner();
    assert!(recorded.created);
    let got = tokio::time::timeout(quickly, get(&mut app, &id))
        .await
        .expect("GetMember answers promptly");
    assert_eq!(given_name(&got), "Grace");
    assert_eq!(got.version, updated.version);
    let got = tokio::time::timeout(quickly, get(&mut app, &other.member_id))
        .await
        .expect("GetMember answers promptly");
    assert_eq!(got.member_id, other.member_id);

    // Redis returns (empty): the new value stays, and the card fills again.
    private.resume().await.expect("redis-server restarts");
    let got = get(&mut app, &id).await;
    assert_eq!(given_name(&got), "Grace");
    let redis = redis_at(&private.url()).await;
    eventually(WAIT, "the card is filled again with the new value", || {
        let mut app_client = app.client.clone();
        let mut redis = redis.clone();
        let (id, card) = (id.clone(), card.clone());
        async move {
            let got = app_client
                .get_member(req(pb::GetMemberRequest { member_id: id }))
                .await
                .ok()?
                .into_inner()
                .member?;
            assert_eq!(given_name(&got), "Grace");
            let cached: bool = redis.hexists(&card, "member").await.ok()?;
            cached.then_some(())
        }
    })
    .await;
    let got = get(&mut app, &id).await;
    assert_eq!(given_name(&got), "Grace");
}

#[tokio::test]
async fn events_written_while_redis_is_down_are_published_when_it_returns() {
    let mut private = PrivateRedis::start().await.expect("redis-server starts");
    let mut app = spawn_with(Options {
        redis_url: Some(private.url()),
        relay: true,
        ..Options::default()
    })
    .await;
    private.stop().await;
    let member = create(&mut app).await;
    app.client
        .record_activity(req(by_id(&member.member_id, purchase(&rid(), 100))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!all_published(&app.db).await, "nothing to publish to");

    private.resume().await.expect("redis-server restarts");
    eventually(WAIT, "the outbox is published", || {
        let db = app.db.clone();
        async move { all_published(&db).await.then_some(()) }
    })
    .await;
    let mut redis = redis_at(&private.url()).await;
    let entries: StreamRangeReply = redis.xrange_all(events_key(&app)).await.unwrap();
    let types: Vec<String> = entries
        .ids
        .iter()
        .map(|e| e.get::<String>("type").unwrap())
        .collect();
    assert_eq!(types, ["member.MemberCreated", "member.ActivityRecorded"]);
}

#[tokio::test]
async fn the_card_is_invalidated_by_the_relay_when_redis_missed_the_write() {
    let mut app = spawn_with(Options {
        relay: false,
        ..Options::default()
    })
    .await;
    let member = create(&mut app).await;
    let id = member.member_id.clone();
    get(&mut app, &id).await;
    let card = card_key(&app, &id);
    let mut redis = redis_at(&app.redis_url).await;
    let snapshot: HashMap<String, Vec<u8>> = redis.hgetall(&card).await.unwrap();
    assert!(snapshot.contains_key("member"), "the read filled the card");

    app.client
        .update_member(req(rename(&id, "Grace")))
        .await
        .unwrap();
    // Pretend Redis never heard of the write: the old card, old version.
    let _: () = redis.del(&card).await.unwrap();
    let fields: Vec<(String, Vec<u8>)> = snapshot.into_iter().collect();
    let _: () = redis.hset_multiple(&card, &fields).await.unwrap();
    assert_eq!(
        given_name(&get(&mut app, &id).await),
        "Ada",
        "the stale card is served (the simulated miss took)"
    );

    let mut config = RelayConfig::new(&app.prefix, &app.schema);
    config.card_field = Some(laurel_runtime::card::CardField::Member.name());
    let relay = start_relay(relay(&app, app.db.clone(), config));
    eventually(WAIT, "the relay drops the stale card", || {
        let mut client = app.client.clone();
        let id = id.clone();
        async move {
            let got = client
                .get_member(req(pb::GetMemberRequest { member_id: id }))
                .await
                .ok()?
                .into_inner()
                .member?;
            (given_name(&got) == "Grace").then_some(())
        }
    })
    .await;
    // The relay marks rows published after Redis took them.
    eventually(WAIT, "the outbox is published", || async {
        all_published(&app.db).await.then_some(())
    })
    .await;
    relay.stop().await;
}

/// A TCP forwarder to `upstream`, listening on `port`, for one test.
async fn forward(port: u16, upstream: (String, u16)) -> JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the outage port is free");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn a_postgres_outage_pauses_the_consumer_instead_of_dead_lettering() {
    const GROUP: &str = "patient";
    let mut app = spawn().await;
    create_seen_events(&app.db).await;
    // The consumer reaches Postgres through a port where nothing listens
    // yet: every transaction fails to start, as in an outage.
    let port = laurel_test_support::free_port();
    let real = laurel_runtime::db::options(&database_url(), &app.schema).unwrap();
    let upstream = (real.get_host().to_owned(), real.get_port());
    let options = real.clone().host("127.0.0.1").port(port);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options);
    let mut config = consumer_config(&app, GROUP);
    config.max_attempts = 2;
    config.retry_base = Duration::from_millis(10);
    let consumer = Consumer::new(pool, &app.redis_url, config, Recorder::new(None))
        .await
        .expect("joins the group");
    let (stop, rx) = watch::channel(false);
    let running = Running {
        stop,
        task: tokio::spawn(consumer.run(rx)),
    };
    let member = create(&mut app).await;
    let key = events_key(&app);
    let mut redis = redis_at(&app.redis_url).await;
    eventually(WAIT, "the consumer has the event in hand", || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { (pending(&mut redis, &key, GROUP).await == 1).then_some(()) }
    })
    .await;
    // Longer than the retries of two attempts would last.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dlq = dead_letter_key(&app.prefix, GROUP);
    let dead: i64 = redis.xlen(&dlq).await.unwrap();
    assert_eq!(dead, 0, "an outage must not dead-letter a valid event");

    let proxy = forward(port, upstream).await;
    eventually(WAIT, "the event is applied once Postgres is back", || {
        let db = app.db.clone();
        async move { (scalar(&db, "SELECT count(*) FROM seen_events").await == 1).then_some(()) }
    })
    .await;
    let seen: Uuid = sqlx::query_scalar("SELECT member_id FROM seen_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(seen.to_string(), member.member_id);
    eventually(WAIT, "the entry is acked", || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { (pending(&mut redis, &key, GROUP).await == 0).then_some(()) }
    })
    .await;
    running.stop().await;
    proxy.abort();
}

#[tokio::test]
async fn recording_an_activity_leaves_the_card_in_place() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    get(&mut app, &member.member_id).await;
    app.client
        .record_activity(req(by_id(&member.member_id, purchase(&rid(), 100))))
        .await
        .unwrap();
    eventually(WAIT, "the relay has published everything", || {
        let db = app.db.clone();
        async move { all_published(&db).await.then_some(()) }
    })
    .await;
    let mut redis = redis_at(&app.redis_url).await;
    let cached: bool = redis
        .hexists(card_key(&app, &member.member_id), "member")
        .await
        .unwrap();
    assert!(
        cached,
        "activities are not on the card: the relay must leave it"
    );
}
