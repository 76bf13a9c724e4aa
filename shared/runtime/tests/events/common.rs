//! A fresh schema (runtime migrations only) and Redis prefix per test, a
//! table handlers write their effects to, and small runners.

#![allow(dead_code)]

use std::{borrow::Cow, sync::Arc, time::Duration};

use chrono::Utc;
use laurel_proto::member::v1 as pb;
use laurel_runtime::{
    context::ProgramId,
    events::{
        consumer::{Consumer, ConsumerConfig, EventContext, EventHandler, HandlerError},
        outbox::{self, NewEvent},
        relay::{Relay, RelayConfig},
        router::Router,
        stream_key,
    },
};
use laurel_test_support as support;
use prost::{Message, Name};
use redis::{
    AsyncCommands,
    aio::MultiplexedConnection,
    streams::{StreamInfoGroupsReply, StreamRangeReply},
};
use sqlx::{PgConnection, PgPool, migrate::Migrator};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

pub use support::eventually;

/// How long a condition may take to come true.
pub const WAIT: Duration = Duration::from_secs(20);

/// The source the tests' events come from.
pub const SOURCE: &str = "member";

/// One test's Postgres schema and Redis prefix.
pub struct Env {
    pub url: String,
    pub schema: String,
    pub prefix: String,
    pub db: PgPool,
    pub redis_url: String,
    pub redis: MultiplexedConnection,
}

pub async fn env() -> Env {
    support::init_tracing();
    let url = support::database_url();
    let schema = support::fresh_schema("runtime");
    let empty = Migrator {
        migrations: Cow::Borrowed(&[]),
        ..Migrator::DEFAULT
    };
    laurel_runtime::db::migrate(&url, &schema, &empty)
        .await
        .expect("migrations apply");
    let db = laurel_runtime::db::pool(&url, &schema, 8).unwrap();
    sqlx::query(
        "CREATE TABLE effects (
             n              bigserial PRIMARY KEY,
             consumer       text   NOT NULL,
             event_id       uuid   NOT NULL,
             member_id      uuid,
             sequence       bigint NOT NULL,
             sequence_check text   NOT NULL,
             attempt        int    NOT NULL
         )",
    )
    .execute(&db)
    .await
    .unwrap();
    let redis_url = support::redis_url();
    let redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    Env {
        url,
        schema,
        prefix: support::fresh_prefix(),
        db,
        redis_url,
        redis,
    }
}

impl Env {
    pub fn stream(&self) -> String {
        stream_key(&self.prefix, SOURCE)
    }

    /// A pool of its own, as another replica would have.
    pub fn pool(&self, size: u32) -> PgPool {
        laurel_runtime::db::pool(&self.url, &self.schema, size).unwrap()
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    /// Writes one event about `member` in a transaction of its own.
    pub async fn write<P: Message + Name>(&self, member: Option<Uuid>, payload: &P) -> Uuid {
        let mut tx = self.db.begin().await.unwrap();
        let id = write_in(&mut tx, member, payload).await;
        tx.commit().await.unwrap();
        id
    }

    pub fn relay_config(&self) -> RelayConfig {
        let mut config = RelayConfig::new(&self.prefix, &self.schema);
        config.batch_size = 7;
        config.standby_poll = Duration::from_millis(5);
        config.idle_poll = Duration::from_millis(5);
        config
    }

    pub fn relay(&self) -> Running {
        let relay = Relay::new(self.pool(2), &self.redis_url, self.relay_config()).unwrap();
        Running::spawn(|rx| relay.run(rx))
    }

    pub fn consumer_config(&self, group: &str, name: &str) -> ConsumerConfig {
        let mut config = ConsumerConfig::new(&self.prefix, group, &[SOURCE]);
        config.consumer = name.to_owned();
        config.block = Duration::from_millis(100);
        config.retry_base = Duration::from_millis(10);
        config
    }

    pub async fn consumer(
        &self,
        config: ConsumerConfig,
        handler: Arc<dyn EventHandler>,
    ) -> Running {
        let consumer = Consumer::new(self.pool(4), &self.redis_url, config, handler)
            .await
            .expect("joins the group");
        Running::spawn(|rx| consumer.run(rx))
    }

    /// Whether the outbox is empty of unpublished rows.
    pub async fn all_published(&self) -> bool {
        self.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await
            == 0
    }

    /// Whether `group` was handed every entry of the stream and acked all.
    pub async fn drained(&self, group: &str) -> bool {
        let mut redis = self.redis.clone();
        let last: StreamRangeReply = redis
            .xrevrange_count(self.stream(), "+", "-", 1)
            .await
            .unwrap();
        let Some(last) = last.ids.first() else {
            return false;
        };
        let info: StreamInfoGroupsReply = redis.xinfo_groups(self.stream()).await.unwrap();
        info.groups
            .iter()
            .any(|g| g.name == group && g.pending == 0 && g.last_delivered_id == last.id)
    }

    /// Entries pending in `group`.
    pub async fn pending(&self, group: &str) -> usize {
        let mut redis = self.redis.clone();
        let reply: redis::streams::StreamPendingReply =
            redis.xpending(self.stream(), group).await.unwrap();
        reply.count()
    }

    pub async fn dead_letters(&self, group: &str) -> i64 {
        let mut redis = self.redis.clone();
        redis
            .xlen(laurel_runtime::events::dead_letter_key(&self.prefix, group))
            .await
            .unwrap()
    }
}

/// Writes one event about `member` within `tx`.
pub async fn write_in<P: Message + Name>(
    tx: &mut PgConnection,
    member: Option<Uuid>,
    payload: &P,
) -> Uuid {
    let program = ProgramId::parse("default").unwrap();
    outbox::enqueue(
        tx,
        SOURCE,
        NewEvent {
            program: &program,
            member_id: member,
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            card_version: None,
            payload,
        },
    )
    .await
    .unwrap()
}

pub fn created(member: Uuid) -> pb::MemberCreated {
    pb::MemberCreated {
        member_id: member.to_string(),
        ..Default::default()
    }
}

pub fn updated(member: Uuid) -> pb::MemberUpdated {
    pb::MemberUpdated {
        member_id: member.to_string(),
        ..Default::default()
    }
}

/// Writes the effect of `event` as applied by `consumer`.
pub async fn record(
    tx: &mut PgConnection,
    event: &EventContext,
    consumer: &str,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO effects (consumer, event_id, member_id, sequence, sequence_check, attempt)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(consumer)
    .bind(event.event_id)
    .bind(event.member_id)
    .bind(event.sequence)
    .bind(format!("{:?}", event.sequence_check))
    .bind(event.attempt as i32)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A router recording every `MemberCreated` and `MemberUpdated` as applied
/// by `consumer`.
pub fn recorder(consumer: &str) -> Arc<Router> {
    let (a, b): (Arc<str>, Arc<str>) = (consumer.into(), consumer.into());
    Arc::new(
        Router::new()
            .on(move |tx, event, _: pb::MemberCreated| {
                let name = a.clone();
                Box::pin(async move { record(tx, event, &name).await })
            })
            .on(move |tx, event, _: pb::MemberUpdated| {
                let name = b.clone();
                Box::pin(async move { record(tx, event, &name).await })
            }),
    )
}

/// A background task stopped through a watch channel.
pub struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn spawn<F, Fut>(start: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, rx) = watch::channel(false);
        Self {
            stop,
            task: tokio::spawn(start(rx)),
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops in time")
            .expect("did not panic");
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}
