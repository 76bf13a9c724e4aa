//! A consumer of Redis Streams with a consumer group and an inbox table:
//! each event's effect and its inbox row commit in one transaction, so an
//! event redelivered after a crash or republished by the relay has no second
//! effect.
//!
//! Failures are the handler's to classify ([`HandlerError`]): retryable ones
//! are retried with backoff and counted in `event_attempts` (so a reclaimed
//! or redelivered event keeps its count and an event nobody tried is never
//! dead-lettered), terminal ones and events that cannot be decoded go to the
//! dead-letter stream `<prefix>:dlq:<group>` at once, and an unavailable
//! dependency (or Postgres itself) pauses the consumer without spending an
//! attempt. Only a generous cap on raw deliveries catches an entry that
//! kills the process each time it is tried.
//!
//! Entries left pending by a consumer that died are claimed by the others
//! after `claim_idle`; while a consumer works on a batch, it keeps the
//! entries it still holds fresh, so a slow batch is never taken from a live
//! owner. Consumer names are stable (`LAUREL_CONSUMER_NAME`, else
//! `HOSTNAME`), a restarted consumer first resumes its own pending entries,
//! and consumers idle for `consumer_expiry` with nothing pending are removed
//! from the group.
//!
//! Within one replica, the entries of a read are applied in lanes: one lane
//! per member (the envelope's `member_id`), each lane in stream order, up to
//! `lanes` lanes at once, so a burst over many members drains several times
//! faster than one event at a time while each member's events still apply
//! one after the other. An entry without a member (or that cannot be read)
//! is a barrier: everything before it in the read is applied first, then it
//! alone, then what follows. The lanes go in rounds (the first entry of
//! each lane, then the second, ...), and a round's entries, all of distinct
//! members, share one transaction per lane: each event's inbox row,
//! sequence and effect commit together with its neighbours', and all of
//! them are acknowledged after that commit. A burst of a hundred members'
//! events costs a handful of commits instead of a hundred. If any of them
//! fails, the transaction is rolled back and each event is applied on its
//! own, with its own attempts, so a failing event never fails its
//! neighbours; an entry delivered before is always applied on its own.
//!
//! Several replicas share one group and split the work. Entries of one
//! stream reach them in stream order, but two replicas may apply events of
//! one member in either order: the handler is told, through
//! [`SequenceCheck`], whether the event is the member's next one, follows a
//! gap, or is older than one already applied.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;

use chrono::{DateTime, Utc};
use laurel_proto::common::v1::EventEnvelope;
use prost::Message;
use redis::{
    AsyncCommands,
    aio::ConnectionManager,
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
    },
};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

pub use super::handler::{EventContext, EventHandler, Handled, HandlerError};
use super::{ENVELOPE_FIELD, dead_letter_key, sequence::SequenceCheck, stream_key};
use crate::error::{DbErrorKind, db_error_kind};

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Redis key prefix.
    pub prefix: String,
    /// Consumer group: one per consuming service (and purpose).
    pub group: String,
    /// This replica's name within the group; stable across restarts.
    pub consumer: String,
    /// Services whose streams to read, for example `["member"]`.
    pub sources: Vec<String>,
    /// Entries read per call.
    pub batch: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// Failed handler attempts before an event goes to the dead-letter stream.
    pub max_attempts: u32,
    /// Deliveries of one entry after which it is dead-lettered untried: it
    /// most likely kills the consumer. Far above `max_attempts`, since
    /// reclaims and restarts deliver valid entries again too.
    pub max_deliveries: u64,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Idle time after which another consumer's pending entry is claimed.
    pub claim_idle: Duration,
    /// Idle time after which a consumer of the group holding nothing is
    /// removed from it.
    pub consumer_expiry: Duration,
    /// Members whose events are applied at once (each member's in order);
    /// 1 applies one event at a time. Capped at half the pool's
    /// connections, so every lane's transaction leaves a connection for the
    /// reads its handler makes beside it.
    pub lanes: usize,
}

/// Environment variable setting [`ConsumerConfig::lanes`].
pub const LANES_ENV: &str = "LAUREL_CONSUMER_LANES";

/// Lanes when [`LANES_ENV`] is not set.
pub const DEFAULT_LANES: usize = 8;

/// The lanes `raw` (the value of [`LANES_ENV`]) asks for: a positive
/// integer, else [`DEFAULT_LANES`].
pub fn lanes_from(raw: Option<&str>) -> usize {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return DEFAULT_LANES;
    };
    match raw.parse::<usize>() {
        Ok(lanes) if lanes > 0 => lanes,
        _ => {
            tracing::warn!(
                value = raw,
                env = LANES_ENV,
                default = DEFAULT_LANES,
                "not a positive number of lanes, using the default"
            );
            DEFAULT_LANES
        }
    }
}

/// Environment variable naming this replica within its consumer groups.
pub const CONSUMER_NAME_ENV: &str = "LAUREL_CONSUMER_NAME";

/// The consumer name: `explicit` (from `LAUREL_CONSUMER_NAME`), else the
/// host name (the pod name on Kubernetes), else a new unique name.
pub fn consumer_name(explicit: Option<String>, hostname: Option<String>, group: &str) -> String {
    explicit
        .into_iter()
        .chain(hostname)
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| format!("{group}-{}", Uuid::now_v7()))
}

impl ConsumerConfig {
    /// Defaults for `group` reading `sources`; the consumer name comes from
    /// `LAUREL_CONSUMER_NAME` or `HOSTNAME`.
    pub fn new(prefix: &str, group: &str, sources: &[&str]) -> Self {
        Self {
            prefix: prefix.to_owned(),
            group: group.to_owned(),
            consumer: consumer_name(
                std::env::var(CONSUMER_NAME_ENV).ok(),
                std::env::var("HOSTNAME").ok(),
                group,
            ),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            batch: 100,
            block: Duration::from_millis(500),
            max_attempts: 5,
            max_deliveries: 100,
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_secs(30),
            claim_idle: Duration::from_secs(30),
            consumer_expiry: Duration::from_secs(3600),
            lanes: lanes_from(std::env::var(LANES_ENV).ok().as_deref()),
        }
    }
}

/// Lua: reset the idle time of the entries in ARGV[3..] that `ARGV[2]`
/// still owns in group ARGV[1] of stream KEYS[1], without counting a
/// delivery; entries a peer took meanwhile stay the peer's.
const KEEP_FRESH: &str = r"
local owned = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    owned[#owned + 1] = ARGV[i]
  end
end
local n = #owned
if n > 0 then
  owned[n + 1] = 'JUSTID'
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(owned))
end
return n
";

/// Lua: remove the consumers of group ARGV[1] on stream KEYS[1], other than
/// ARGV[2], that hold nothing and were idle at least ARGV[3] ms. Checked and
/// removed in one step, so a consumer that just read entries keeps them.
const REMOVE_IDLE_CONSUMERS: &str = r"
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
";

/// A running member of a consumer group.
pub struct Consumer {
    pool: PgPool,
    redis: ConnectionManager,
    config: ConsumerConfig,
    handler: Arc<dyn EventHandler>,
    stopping: watch::Receiver<bool>,
    keep_fresh: redis::Script,
    remove_idle: redis::Script,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    Skipped,
    Duplicate,
    DeadLettered,
    /// Shutting down mid-way: left pending for later.
    Abandoned,
}

/// Why one attempt failed, as the consumer acts on it.
enum Failure {
    Retryable(String),
    Terminal(String),
    Unavailable(String),
}

impl From<HandlerError> for Failure {
    fn from(error: HandlerError) -> Self {
        match error {
            HandlerError::Retryable(e) => Self::Retryable(format!("{e:#}")),
            HandlerError::Terminal(e) => Self::Terminal(format!("{e:#}")),
            HandlerError::Unavailable(e) => Self::Unavailable(format!("{e:#}")),
        }
    }
}

/// The runtime's own storage errors: Postgres being away pauses, anything
/// else (a conflict, a deadlock) is retried as an attempt.
impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        match db_error_kind(&error) {
            DbErrorKind::Unavailable => Self::Unavailable(error.to_string()),
            _ => Self::Retryable(error.to_string()),
        }
    }
}

fn timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// The delay before retrying after `attempts` failures.
fn retry_delay(base: Duration, max: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(max)
}

impl Consumer {
    /// Joins the group (creating it at the start of each stream, so a new
    /// group replays what the stream still holds) on a Redis connection of
    /// its own: blocking reads must not stall the shared one.
    pub async fn new(
        pool: PgPool,
        redis_url: &str,
        config: ConsumerConfig,
        handler: Arc<dyn EventHandler>,
    ) -> anyhow::Result<Self> {
        let mut config = config;
        let most = (pool.options().get_max_connections() as usize / 2).max(1);
        if config.lanes > most {
            tracing::warn!(lanes = config.lanes, most, group = %config.group, "fewer consumer lanes than asked: each needs two of the pool's connections");
        }
        config.lanes = config.lanes.clamp(1, most);
        let mut redis =
            crate::cache::connection_manager(redis_url, config.block + Duration::from_secs(2))?;
        for source in &config.sources {
            let created: redis::RedisResult<()> = redis
                .xgroup_create_mkstream(stream_key(&config.prefix, source), &config.group, "0")
                .await;
            if let Err(error) = created
                && error.code() != Some("BUSYGROUP")
            {
                return Err(error.into());
            }
        }
        Ok(Self {
            pool,
            redis,
            config,
            handler,
            stopping: watch::channel(false).1,
            keep_fresh: redis::Script::new(KEEP_FRESH),
            remove_idle: redis::Script::new(REMOVE_IDLE_CONSUMERS),
        })
    }

    /// The name this consumer reads under.
    pub fn name(&self) -> &str {
        &self.config.consumer
    }

    /// Reads and applies events until `shutdown` turns true: first the
    /// entries this consumer held when it last stopped, then new ones,
    /// reclaiming dead peers' entries every `claim_idle / 2`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.stopping = shutdown.clone();
        let keys: Vec<String> = self
            .config
            .sources
            .iter()
            .map(|s| stream_key(&self.config.prefix, s))
            .collect();
        for key in &keys {
            if let Err(error) = self.resume_own(key).await {
                tracing::warn!(%error, stream = %key, "resuming own pending entries failed");
            }
        }
        let mut last_maintenance: Option<tokio::time::Instant> = None;
        while !*shutdown.borrow() {
            if last_maintenance.is_none_or(|at| at.elapsed() >= self.config.claim_idle / 2) {
                last_maintenance = Some(tokio::time::Instant::now());
                for key in &keys {
                    if let Err(error) = self.reclaim(key).await {
                        tracing::warn!(%error, stream = %key, "reclaiming pending entries failed");
                    }
                    if let Err(error) = self.remove_idle_consumers(key).await {
                        tracing::warn!(%error, stream = %key, "removing idle consumers failed");
                    }
                }
            }
            let options = StreamReadOptions::default()
                .group(&self.config.group, &self.config.consumer)
                .count(self.config.batch)
                .block(self.config.block.as_millis() as usize);
            let ids: Vec<&str> = keys.iter().map(|_| ">").collect();
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                read = self.redis.xread_options(&keys, &ids, &options) => read,
                _ = shutdown.changed() => break,
            };
            match read {
                Ok(Some(reply)) => {
                    for stream in reply.keys {
                        let fresh = vec![1; stream.ids.len()];
                        self.process_batch(&stream.key, &stream.ids, &fresh).await;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "reading events failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Applies the entries this consumer name still holds from before a
    /// restart, oldest first.
    async fn resume_own(&mut self, key: &str) -> anyhow::Result<usize> {
        let mut after = "0-0".to_owned();
        let mut resumed = 0;
        while !*self.stopping.borrow() {
            let options = StreamReadOptions::default()
                .group(&self.config.group, &self.config.consumer)
                .count(self.config.batch);
            let reply: Option<StreamReadReply> = self
                .redis
                .xread_options(&[key], &[&after], &options)
                .await?;
            let entries: Vec<StreamId> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            let Some(last) = entries.last() else { break };
            after = last.id.clone();
            let deliveries = self.deliveries(key, &entries).await?;
            resumed += entries.len();
            self.process_batch(key, &entries, &deliveries).await;
        }
        Ok(resumed)
    }

    /// Claims entries other consumers left pending longer than `claim_idle`
    /// (following the cursor to the end) and applies them; returns how many.
    pub async fn reclaim(&mut self, key: &str) -> anyhow::Result<usize> {
        let mut cursor = "0-0".to_owned();
        let mut claimed = 0;
        loop {
            let reply: StreamAutoClaimReply = self
                .redis
                .xautoclaim_options(
                    key,
                    &self.config.group,
                    &self.config.consumer,
                    self.config.claim_idle.as_millis() as u64,
                    &cursor,
                    StreamAutoClaimOptions::default().count(self.config.batch),
                )
                .await?;
            if !reply.deleted_ids.is_empty() {
                tracing::warn!(
                    count = reply.deleted_ids.len(),
                    stream = key,
                    "pending entries were trimmed before anyone applied them"
                );
            }
            if !reply.claimed.is_empty() {
                claimed += reply.claimed.len();
                let deliveries = self.deliveries(key, &reply.claimed).await?;
                self.process_batch(key, &reply.claimed, &deliveries).await;
            }
            cursor = reply.next_stream_id;
            if cursor == "0-0" || *self.stopping.borrow() {
                return Ok(claimed);
            }
        }
    }

    /// Removes consumers of the group that hold nothing and were idle
    /// longer than `consumer_expiry`; returns how many.
    pub async fn remove_idle_consumers(&mut self, key: &str) -> anyhow::Result<usize> {
        let removed: usize = self
            .remove_idle
            .key(key)
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg(self.config.consumer_expiry.as_millis() as u64)
            .invoke_async(&mut self.redis)
            .await?;
        if removed > 0 {
            tracing::info!(removed, stream = key, group = %self.config.group, "removed idle consumers");
        }
        Ok(removed)
    }

    /// How often each of `entries` (held by this consumer) was delivered.
    async fn deliveries(&mut self, key: &str, entries: &[StreamId]) -> anyhow::Result<Vec<u64>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let reply: redis::streams::StreamPendingCountReply = self
            .redis
            .xpending_consumer_count(
                key,
                &self.config.group,
                &first.id,
                &last.id,
                entries.len(),
                &self.config.consumer,
            )
            .await?;
        let counts: HashMap<String, u64> = reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        Ok(entries
            .iter()
            .map(|e| counts.get(&e.id).copied().unwrap_or(1))
            .collect())
    }

    /// Applies a batch, each member's entries in order and up to `lanes`
    /// members at once, while keeping its unfinished entries fresh, so that
    /// no peer reclaims them from a live owner.
    async fn process_batch(&self, key: &str, entries: &[StreamId], deliveries: &[u64]) {
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let beat = keep_fresh(
            self.redis.clone(),
            self.keep_fresh.clone(),
            key.to_owned(),
            self.config.group.clone(),
            self.config.consumer.clone(),
            ids,
            self.config.claim_idle / 3,
        );
        let envelopes: Vec<Option<EventEnvelope>> = entries
            .iter()
            .map(|entry| {
                entry
                    .get::<Vec<u8>>(ENVELOPE_FIELD)
                    .and_then(|bytes| EventEnvelope::decode(bytes.as_slice()).ok())
            })
            .collect();
        let lanes: Vec<Option<(&str, Uuid)>> = envelopes
            .iter()
            .map(|envelope| {
                let envelope = envelope.as_ref()?;
                let member = Uuid::parse_str(&envelope.member_id).ok()?;
                Some((envelope.program_id.as_str(), member))
            })
            .collect();
        let steps = plan(&lanes);
        let apply = |i: usize| {
            let envelope = envelopes[i].clone();
            self.process(key, &entries[i], envelope, deliveries[i])
        };
        let apply_together = |chunk: Vec<usize>| {
            let fresh: Option<Vec<EventContext>> = (chunk.len() > 1)
                .then(|| {
                    chunk
                        .iter()
                        .map(|&i| {
                            let envelope = envelopes[i].as_ref()?;
                            (deliveries[i] <= 1).then_some(())?;
                            context(&entries[i], envelope.clone())
                        })
                        .collect()
                })
                .flatten();
            let ids: Vec<&str> = chunk.iter().map(|&i| entries[i].id.as_str()).collect();
            async move {
                if let Some(events) = fresh
                    && self.process_together(key, &ids, events).await
                {
                    return;
                }
                for i in chunk {
                    apply(i).await;
                }
            }
        };
        let work = async {
            for step in steps {
                if *self.stopping.borrow() {
                    break;
                }
                match step {
                    Step::Alone(i) => apply(i).await,
                    Step::Lanes(lanes) => {
                        tracing::debug!(lanes = lanes.len(), "applying a read in lanes");
                        for round in rounds(&lanes) {
                            if *self.stopping.borrow() {
                                break;
                            }
                            let per_transaction = round.len().div_ceil(self.config.lanes);
                            futures::stream::iter(
                                round.chunks(per_transaction).map(<[usize]>::to_vec),
                            )
                            .for_each_concurrent(self.config.lanes, apply_together)
                            .await;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = beat => {}
        }
    }

    /// Applies fresh events of distinct members in one transaction and
    /// acknowledges them together after its commit; false (with nothing
    /// committed) when any of them failed, so that each is then applied on
    /// its own and a failing event does not fail its neighbours.
    async fn process_together(
        &self,
        key: &str,
        ids: &[&str],
        mut events: Vec<EventContext>,
    ) -> bool {
        let outcomes = match self.apply_all(&mut events).await {
            Ok(outcomes) => outcomes,
            Err(failure) => {
                let reason = match failure {
                    Failure::Retryable(r) | Failure::Terminal(r) | Failure::Unavailable(r) => r,
                };
                tracing::debug!(%reason, events = events.len(), "a shared transaction failed; applying its events one by one");
                return false;
            }
        };
        self.ack_all(key, ids).await;
        for outcome in outcomes {
            self.count(outcome);
        }
        true
    }

    /// `events` in order in one transaction: all committed, or none.
    async fn apply_all(&self, events: &mut [EventContext]) -> Result<Vec<Outcome>, Failure> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events.iter_mut() {
            let accepted = self.handler.accepts(&event.envelope.event_type);
            let span = self.span(event);
            let outcome = self
                .apply_in(&mut tx, event, accepted, false)
                .instrument(span)
                .await?;
            outcomes.push(outcome);
        }
        tx.commit().await?;
        self.count_transaction(events.len());
        Ok(outcomes)
    }

    fn span(&self, event: &EventContext) -> tracing::Span {
        let span = tracing::info_span!("event", event_type = %event.envelope.event_type, event_id = %event.event_id, group = %self.config.group);
        crate::trace_context::set_parent_from_map(&span, &event.envelope.trace_context);
        span
    }

    async fn process(
        &self,
        key: &str,
        entry: &StreamId,
        envelope: Option<EventEnvelope>,
        deliveries: u64,
    ) {
        let outcome = self.outcome(key, entry, envelope, deliveries).await;
        if let Outcome::Applied | Outcome::Skipped | Outcome::Duplicate = outcome {
            self.ack(key, &entry.id).await;
        }
        self.count(outcome);
    }

    fn count(&self, outcome: Outcome) {
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Skipped => "skipped",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Abandoned => "abandoned",
        };
        metrics::counter!("laurel_events_consumed_total", "group" => self.config.group.clone(), "outcome" => label).increment(1);
    }

    async fn outcome(
        &self,
        key: &str,
        entry: &StreamId,
        envelope: Option<EventEnvelope>,
        deliveries: u64,
    ) -> Outcome {
        let Some(envelope) = envelope else {
            return self.dead_letter(key, entry, "undecodable envelope").await;
        };
        let Some(event) = context(entry, envelope) else {
            return self.dead_letter(key, entry, "invalid event id").await;
        };
        if deliveries > self.config.max_deliveries {
            let reason = format!("delivered {deliveries} times without being acknowledged");
            return self.dead_letter(key, entry, &reason).await;
        }
        let span = self.span(&event);
        self.apply_with_retries(key, entry, event, deliveries > 1)
            .instrument(span)
            .await
    }

    async fn apply_with_retries(
        &self,
        key: &str,
        entry: &StreamId,
        mut event: EventContext,
        redelivered: bool,
    ) -> Outcome {
        let accepted = self.handler.accepts(&event.envelope.event_type);
        let mut pause = self.config.retry_base;
        let mut attempts: Option<u32> = (!redelivered).then_some(0);
        loop {
            let failed = match attempts {
                // A redelivered event may have failed before: read its count.
                // Not knowing the count is no fault of the event: wait.
                None => match self.stored_attempts(event.event_id).await {
                    Ok(stored) => {
                        attempts = Some(stored);
                        Ok(())
                    }
                    Err(error) => Err(Failure::Unavailable(error.to_string())),
                },
                Some(done) if done >= self.config.max_attempts => {
                    let reason = format!("failed {done} attempts");
                    return self.dead_letter(key, entry, &reason).await;
                }
                Some(done) => {
                    event.attempt = done + 1;
                    match self.apply_once(&mut event, accepted, done > 0).await {
                        Ok(outcome) => return outcome,
                        Err(failure) => Err(failure),
                    }
                }
            };
            let Err(failure) = failed else { continue };
            match failure {
                Failure::Terminal(reason) => {
                    tracing::error!(%reason, "event failed for good");
                    return self.dead_letter(key, entry, &reason).await;
                }
                // A dependency being away is no fault of the event: wait for
                // it without spending attempts, so an outage dead-letters
                // nothing.
                Failure::Unavailable(reason) => {
                    tracing::warn!(%reason, "dependency unavailable, pausing");
                    if !self.sleep(pause).await {
                        return Outcome::Abandoned;
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Failure::Retryable(reason) => {
                    let done = match self.record_attempt(event.event_id, &reason).await {
                        Ok(done) => done,
                        Err(error) => {
                            // Not counted: try again once storage answers.
                            tracing::warn!(%error, "recording a failed attempt failed");
                            if !self.sleep(pause).await {
                                return Outcome::Abandoned;
                            }
                            continue;
                        }
                    };
                    attempts = Some(done);
                    if done >= self.config.max_attempts {
                        tracing::error!(%reason, attempts = done, "event failed for good");
                        return self.dead_letter(key, entry, &reason).await;
                    }
                    tracing::warn!(%reason, attempts = done, "event failed, retrying");
                    let delay = retry_delay(self.config.retry_base, self.config.retry_max, done);
                    if !self.sleep(delay).await {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
    }

    /// Sleeps unless shutting down; false when the consumer should stop.
    async fn sleep(&self, duration: Duration) -> bool {
        let mut stopping = self.stopping.clone();
        if *stopping.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = stopping.changed() => false,
        }
    }

    /// One transaction: the inbox row (unless the handler skips the type),
    /// the member's sequence, the effect.
    async fn apply_once(
        &self,
        event: &mut EventContext,
        accepted: bool,
        failed_before: bool,
    ) -> Result<Outcome, Failure> {
        if !accepted && tracked(event).is_none() {
            // Nothing to apply and no sequence to advance.
            return Ok(Outcome::Skipped);
        }
        let mut tx = self.pool.begin().await?;
        let outcome = self
            .apply_in(&mut tx, event, accepted, failed_before)
            .await?;
        tx.commit().await?;
        self.count_transaction(1);
        Ok(outcome)
    }

    fn count_transaction(&self, events: usize) {
        metrics::counter!("laurel_event_transactions_total", "group" => self.config.group.clone())
            .increment(1);
        tracing::trace!(events, "events committed together");
    }

    /// The event's inbox row (unless the handler skips the type), its
    /// member's sequence and its effect, in `tx`; commits nothing.
    async fn apply_in(
        &self,
        tx: &mut PgConnection,
        event: &mut EventContext,
        accepted: bool,
        failed_before: bool,
    ) -> Result<Outcome, Failure> {
        let tracked = tracked(event);
        match (accepted, tracked) {
            (true, Some(member)) => {
                let (fresh, last) = self.receive_in_sequence(tx, event, member).await?;
                if !fresh {
                    return Ok(Outcome::Duplicate);
                }
                event.sequence_check = SequenceCheck::of(last, event.sequence);
            }
            (true, None) => {
                if !self.receive(tx, event).await? {
                    return Ok(Outcome::Duplicate);
                }
            }
            (false, Some(member)) => {
                let last = self.advance_sequence(&mut *tx, event, member).await?;
                event.sequence_check = SequenceCheck::of(last, event.sequence);
            }
            (false, None) => {}
        }
        let handled = if accepted {
            self.handler.handle(&mut *tx, event).await?
        } else {
            Handled::Skipped
        };
        if failed_before {
            sqlx::query("DELETE FROM event_attempts WHERE consumer = $1 AND event_id = $2")
                .bind(&self.config.group)
                .bind(event.event_id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(match handled {
            Handled::Applied => Outcome::Applied,
            Handled::Skipped => Outcome::Skipped,
        })
    }

    /// The event's inbox row; false when it was there already (the event
    /// was applied before).
    async fn receive(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
    ) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, program_id, stream_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.group)
        .bind(event.event_id)
        .bind(&event.envelope.program_id)
        .bind(&event.stream_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// [`Self::receive`] and [`Self::advance_sequence`] in one statement.
    async fn receive_in_sequence(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        member: Uuid,
    ) -> Result<(bool, i64), sqlx::Error> {
        sqlx::query_as(
            "WITH fresh AS (
               INSERT INTO inbox (consumer, event_id, program_id, stream_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1
             ), sequence AS (
               INSERT INTO consumer_sequences (consumer, program_id, member_id, source, last_sequence)
               VALUES ($1, $3, $5, $6, $7)
               ON CONFLICT (consumer, program_id, member_id, source)
               DO UPDATE SET previous_sequence = consumer_sequences.last_sequence,
                 last_sequence = GREATEST(consumer_sequences.last_sequence, EXCLUDED.last_sequence),
                 updated_at = now()
               RETURNING previous_sequence
             )
             SELECT EXISTS (SELECT 1 FROM fresh), (SELECT previous_sequence FROM sequence)",
        )
        .bind(&self.config.group)
        .bind(event.event_id)
        .bind(&event.envelope.program_id)
        .bind(&event.stream_id)
        .bind(member)
        .bind(&event.envelope.source)
        .bind(event.sequence)
        .fetch_one(&mut *tx)
        .await
    }

    /// Advances the member's sequence to this event's (never back) and
    /// returns the highest one applied before it, with the row locked until
    /// the transaction ends: the member's events apply one at a time across
    /// replicas, and a rollback takes the advance back with the effect.
    async fn advance_sequence(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        member: Uuid,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO consumer_sequences (consumer, program_id, member_id, source, last_sequence)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (consumer, program_id, member_id, source)
             DO UPDATE SET previous_sequence = consumer_sequences.last_sequence,
               last_sequence = GREATEST(consumer_sequences.last_sequence, EXCLUDED.last_sequence),
               updated_at = now()
             RETURNING previous_sequence",
        )
        .bind(&self.config.group)
        .bind(&event.envelope.program_id)
        .bind(member)
        .bind(&event.envelope.source)
        .bind(event.sequence)
        .fetch_one(&mut *tx)
        .await
    }

    async fn stored_attempts(&self, event_id: Uuid) -> Result<u32, sqlx::Error> {
        let attempts: Option<i32> = sqlx::query_scalar(
            "SELECT attempts FROM event_attempts WHERE consumer = $1 AND event_id = $2",
        )
        .bind(&self.config.group)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(attempts.map_or(0, |a| a.max(0) as u32))
    }

    /// Counts a failed attempt durably; returns the attempts so far.
    async fn record_attempt(&self, event_id: Uuid, reason: &str) -> Result<u32, sqlx::Error> {
        let attempts: i32 = sqlx::query_scalar(
            "INSERT INTO event_attempts (consumer, event_id, attempts, last_error)
             VALUES ($1, $2, 1, $3)
             ON CONFLICT (consumer, event_id)
             DO UPDATE SET attempts = event_attempts.attempts + 1, last_error = $3, updated_at = now()
             RETURNING attempts",
        )
        .bind(&self.config.group)
        .bind(event_id)
        .bind(reason)
        .fetch_one(&self.pool)
        .await?;
        Ok(attempts.max(0) as u32)
    }

    async fn ack(&self, key: &str, id: &str) {
        self.ack_all(key, &[id]).await;
    }

    async fn ack_all(&self, key: &str, ids: &[&str]) {
        let mut redis = self.redis.clone();
        let acked: redis::RedisResult<i64> = redis.xack(key, &self.config.group, ids).await;
        if let Err(error) = acked {
            // The entry stays pending and is reclaimed later; the inbox
            // keeps that harmless.
            tracing::warn!(%error, "ack failed");
        }
    }

    async fn dead_letter(&self, key: &str, entry: &StreamId, reason: &str) -> Outcome {
        let raw = entry.get::<Vec<u8>>(ENVELOPE_FIELD).unwrap_or_default();
        let mut redis = self.redis.clone();
        let added: redis::RedisResult<String> = redis
            .xadd(
                dead_letter_key(&self.config.prefix, &self.config.group),
                "*",
                &[
                    ("stream", key.as_bytes()),
                    ("id", entry.id.as_bytes()),
                    ("reason", reason.as_bytes()),
                    (ENVELOPE_FIELD, raw.as_slice()),
                ],
            )
            .await;
        match added {
            Ok(_) => {
                tracing::error!(stream = key, id = %entry.id, reason, "event dead-lettered");
                self.ack(key, &entry.id).await;
                Outcome::DeadLettered
            }
            Err(error) => {
                tracing::warn!(%error, "dead-lettering failed; entry stays pending");
                Outcome::Abandoned
            }
        }
    }
}

/// One step of applying a read, in order.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Entries (by index) grouped by member: each lane in stream order, the
    /// lanes at once.
    Lanes(Vec<Vec<usize>>),
    /// An entry of no member, applied by itself after everything before it.
    Alone(usize),
}

/// Splits a read into steps from each entry's lane (`None`: no member): the
/// entries of one lane keep their order, lanes appear in the order of their
/// first entry, and a `None` separates what comes before it from what
/// follows.
fn plan<K: Eq + std::hash::Hash>(keys: &[Option<K>]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    let mut lane_of: HashMap<&K, usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        match key {
            Some(key) => match lane_of.get(key) {
                Some(&lane) => lanes[lane].push(i),
                None => {
                    lane_of.insert(key, lanes.len());
                    lanes.push(vec![i]);
                }
            },
            None => {
                if !lanes.is_empty() {
                    steps.push(Step::Lanes(std::mem::take(&mut lanes)));
                    lane_of.clear();
                }
                steps.push(Step::Alone(i));
            }
        }
    }
    if !lanes.is_empty() {
        steps.push(Step::Lanes(lanes));
    }
    steps
}

/// The lanes' entries taken a round at a time: the first entry of every
/// lane, then the second of every lane that has one, and so on. A round
/// holds each member at most once, so its entries can share a transaction
/// without a handler's reads beside it missing an earlier event's effect.
fn rounds(lanes: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let deepest = lanes.iter().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .map(|r| {
            lanes
                .iter()
                .filter_map(|lane| lane.get(r).copied())
                .collect()
        })
        .collect()
}

/// The member whose sequence an event advances, if it has one.
fn tracked(event: &EventContext) -> Option<Uuid> {
    event.member_id.filter(|_| event.sequence > 0)
}

/// What the handler is told of an entry on its first attempt; `None` for
/// an invalid event id.
fn context(entry: &StreamId, envelope: EventEnvelope) -> Option<EventContext> {
    Some(EventContext {
        event_id: Uuid::parse_str(&envelope.event_id).ok()?,
        member_id: Uuid::parse_str(&envelope.member_id).ok(),
        occurred_at: envelope.occurred_at.as_ref().and_then(timestamp),
        sequence: envelope.member_sequence,
        sequence_check: SequenceCheck::Unsequenced,
        stream_id: entry.id.clone(),
        attempt: 1,
        envelope,
    })
}

/// Keeps `ids` that `consumer` still holds fresh every `every`, until
/// dropped.
async fn keep_fresh(
    mut redis: ConnectionManager,
    script: redis::Script,
    key: String,
    group: String,
    consumer: String,
    ids: Vec<String>,
    every: Duration,
) {
    let every = every.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let mut call = script.key(&key);
        call.arg(&group).arg(&consumer);
        for id in &ids {
            call.arg(id);
        }
        let kept: redis::RedisResult<usize> = call.invoke_async(&mut redis).await;
        match kept {
            Ok(0) => return std::future::pending().await,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "keeping pending entries fresh failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{DEFAULT_LANES, Step, consumer_name, lanes_from, plan, retry_delay, rounds};

    #[test]
    fn the_consumer_name_prefers_the_explicit_name_then_the_host() {
        let name = |e: Option<&str>, h: Option<&str>| {
            consumer_name(e.map(str::to_owned), h.map(str::to_owned), "g")
        };
        assert_eq!(name(Some("replica-1"), Some("pod-a")), "replica-1");
        assert_eq!(name(None, Some("pod-a")), "pod-a");
        assert_eq!(name(Some(" "), Some("pod-a")), "pod-a");
        let generated = name(None, None);
        assert!(generated.starts_with("g-"), "{generated}");
        assert_ne!(generated, name(None, None));
    }

    #[test]
    fn the_retry_delay_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_millis(50), Duration::from_secs(1));
        assert_eq!(retry_delay(base, max, 1), Duration::from_millis(50));
        assert_eq!(retry_delay(base, max, 2), Duration::from_millis(100));
        assert_eq!(retry_delay(base, max, 3), Duration::from_millis(200));
        assert_eq!(retry_delay(base, max, 10), max);
        assert_eq!(retry_delay(base, max, u32::MAX), max);
    }

    #[test]
    fn each_member_gets_one_lane_in_stream_order() {
        let steps = plan(&[
            Some('a'),
            Some('b'),
            Some('a'),
            Some('c'),
            Some('b'),
            Some('a'),
        ]);
        assert_eq!(
            steps,
            vec![Step::Lanes(vec![vec![0, 2, 5], vec![1, 4], vec![3]])]
        );
    }

    #[test]
    fn an_entry_without_a_member_waits_for_what_precedes_it_and_goes_alone() {
        let steps = plan(&[Some('a'), Some('b'), None, Some('a'), None, None, Some('b')]);
        assert_eq!(
            steps,
            vec![
                Step::Lanes(vec![vec![0], vec![1]]),
                Step::Alone(2),
                Step::Lanes(vec![vec![3]]),
                Step::Alone(4),
                Step::Alone(5),
                Step::Lanes(vec![vec![6]]),
            ]
        );
        assert!(plan::<char>(&[]).is_empty());
    }

    #[test]
    fn a_round_takes_each_lane_once_in_order() {
        let lanes = vec![vec![0, 2, 5], vec![1, 4], vec![3]];
        assert_eq!(rounds(&lanes), vec![vec![0, 1, 3], vec![2, 4], vec![5]]);
        assert!(rounds(&[]).is_empty());
    }

    #[test]
    fn the_lanes_come_from_a_positive_number_else_the_default() {
        assert_eq!(lanes_from(None), DEFAULT_LANES);
        assert_eq!(lanes_from(Some("3")), 3);
        assert_eq!(lanes_from(Some(" 16 ")), 16);
        assert_eq!(lanes_from(Some("0")), DEFAULT_LANES);
        assert_eq!(lanes_from(Some("many")), DEFAULT_LANES);
        assert_eq!(lanes_from(Some("")), DEFAULT_LANES);
    }
}
