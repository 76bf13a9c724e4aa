//! The member card: everything a storefront shows about a member, in one
//! Redis hash per member (`<prefix>:card:<program>:<member>`) with one field
//! per owner service, each written only by its owner; and an in-process copy
//! of the owner's field on every replica, invalidated through a Redis
//! pub/sub channel.
//!
//! Versions order the writes: every change of a member produces a higher
//! version, kept with the row in Postgres. A writer bumps the field's
//! version and drops its value after commit (the relay repeats that for
//! every event that changed the card); a reader fills the value only when
//! its copy is not older than the version there, and then checks the
//! version in Postgres again, so a copy read before a write can never
//! outlive the write, even when Redis lost the version field by eviction or
//! fail-over.
//!
//! The invalidation script also publishes `<field> <version> <key>` on
//! `<prefix>:card-invalidations:<field>` when the version moved (a repeat
//! at a version already reached publishes nothing). Every replica keeping
//! copies of a field listens on its channel; while it is not
//! subscribed (Redis away, reconnecting) it serves nothing from its
//! in-process copy, and it drops the whole copy when it subscribes again, so
//! a missed message never leaves an old card behind.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{cache::Redis, context::ProgramId, subscription};

/// How long the Redis card lives without being read or written.
pub const CARD_TTL_SECS: i64 = 24 * 3600;

/// The fields of the card, one per owner service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CardField {
    /// Profile summary, identities, status: the member service.
    Member,
    /// Points balance: the points service.
    Points,
    /// Tier and benefits: the tier service.
    Tier,
}

impl CardField {
    /// The hash field name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Points => "points",
            Self::Tier => "tier",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Member, Self::Points, Self::Tier]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// The Redis key of a member's card.
pub fn card_key(prefix: &str, program: &str, member: &Uuid) -> String {
    format!("{prefix}:card:{program}:{member}")
}

/// The pub/sub channel carrying invalidations of one card field (its
/// `name`): a replica hears only the fields it keeps copies of.
pub fn invalidation_channel(prefix: &str, field: &str) -> String {
    format!("{prefix}:card-invalidations:{field}")
}

/// Lua: fill field ARGV[1] with ARGV[3] read at version ARGV[2], unless a
/// writer has moved the field past it; refresh the TTL (ARGV[4]).
const FILL_IF_CURRENT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1] .. ':v')
if (not v) or tonumber(v) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. ':v', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
";

/// Lua: bump field ARGV[1]'s version to ARGV[2] (never lower it), drop its
/// value, refresh the TTL (ARGV[3]) and, when ARGV[4] names a channel and
/// the version moved, publish the invalidation there. KEYS[1] is the card.
/// A repeat at a version already reached (the relay repeating the writer's
/// invalidation) publishes nothing: every replica subscribed then heard
/// the first one, and one that was not subscribed keeps no copies.
pub const INVALIDATE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1] .. ':v')
local raised = (not v) or tonumber(v) < tonumber(ARGV[2])
if raised then
  redis.call('HSET', KEYS[1], ARGV[1] .. ':v', ARGV[2])
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] and raised then
  redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. KEYS[1])
end
return 1
";

/// Sizes of the in-process copy.
#[derive(Clone, Copy, Debug)]
pub struct LocalLimits {
    /// Cards kept at most.
    pub entries: u64,
    /// Longest a card is kept without being invalidated.
    pub ttl: Duration,
}

impl Default for LocalLimits {
    fn default() -> Self {
        Self {
            entries: 100_000,
            ttl: Duration::from_secs(300),
        }
    }
}

type LocalKey = (ProgramId, Uuid);

/// One owner's view of the card: its field in Redis and the in-process copy.
pub struct Cards<T> {
    redis: Redis,
    field: CardField,
    channel: Arc<str>,
    local: Cache<LocalKey, (i64, Arc<T>)>,
    /// The highest version each member was invalidated at lately: a copy
    /// older than it must not be kept.
    floors: Cache<LocalKey, i64>,
    listening: Arc<AtomicBool>,
    fill: Arc<redis::Script>,
    invalidate: Arc<redis::Script>,
    lookups: Lookups,
}

/// Cache lookup counters, resolved once: a labelled `counter!` per call
/// would hash its labels on the hottest path.
#[derive(Clone)]
struct Lookups {
    local_hit: metrics::Counter,
    local_miss: metrics::Counter,
    redis_hit: metrics::Counter,
    redis_miss: metrics::Counter,
}

impl Lookups {
    fn new() -> Self {
        let counter = |tier: &'static str, result: &'static str| metrics::counter!("laurel_cache_lookups_total", "tier" => tier, "result" => result);
        Self {
            local_hit: counter("local", "hit"),
            local_miss: counter("local", "miss"),
            redis_hit: counter("redis", "hit"),
            redis_miss: counter("redis", "miss"),
        }
    }
}

impl<T> Clone for Cards<T> {
    fn clone(&self) -> Self {
        Self {
            redis: self.redis.clone(),
            field: self.field,
            channel: self.channel.clone(),
            local: self.local.clone(),
            floors: self.floors.clone(),
            listening: self.listening.clone(),
            fill: self.fill.clone(),
            invalidate: self.invalidate.clone(),
            lookups: self.lookups.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Cards<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cards")
            .field("field", &self.field)
            .field("local_entries", &self.local.entry_count())
            .finish_non_exhaustive()
    }
}

/// A card field read from Redis: the stored bytes and their version.
#[derive(Debug)]
pub struct Stored {
    /// The owner's bytes (sealed when they hold personal data).
    pub value: Vec<u8>,
    /// The version they were read at.
    pub version: i64,
}

impl<T: Send + Sync + 'static> Cards<T> {
    /// The card field `field` over `redis`, with an in-process copy.
    pub fn new(redis: Redis, field: CardField, limits: LocalLimits) -> Self {
        Self {
            channel: invalidation_channel(redis.prefix(), field.name()).into(),
            redis,
            field,
            local: Cache::builder()
                .max_capacity(limits.entries)
                .time_to_live(limits.ttl)
                .build(),
            floors: Cache::builder()
                .max_capacity(limits.entries)
                .time_to_live(limits.ttl)
                .build(),
            listening: Arc::new(AtomicBool::new(false)),
            fill: Arc::new(redis::Script::new(FILL_IF_CURRENT)),
            invalidate: Arc::new(redis::Script::new(INVALIDATE)),
            lookups: Lookups::new(),
        }
    }

    /// The Redis key of a member's card.
    pub fn key(&self, program: &ProgramId, member: &Uuid) -> String {
        card_key(self.redis.prefix(), program.as_str(), member)
    }

    /// The in-process copy, while invalidations are being heard.
    pub fn local(&self, program: &ProgramId, member: &Uuid) -> Option<Arc<T>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let hit = self
            .local
            .get(&(program.clone(), *member))
            .map(|(_, value)| value);
        match hit {
            Some(_) => self.lookups.local_hit.increment(1),
            None => self.lookups.local_miss.increment(1),
        }
        hit
    }

    /// Keeps `value`, read at `version`, in the in-process copy unless an
    /// invalidation at a higher version was heard.
    pub fn keep(&self, program: &ProgramId, member: &Uuid, version: i64, value: Arc<T>) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let key = (program.clone(), *member);
        if self.floors.get(&key).is_some_and(|floor| floor > version) {
            return;
        }
        self.local.insert(key.clone(), (version, value));
        // An invalidation that raced with the insert wins.
        if self.floors.get(&key).is_some_and(|floor| floor > version) {
            self.local.invalidate(&key);
        }
    }

    /// The owner's field from Redis; `None` on a miss or when Redis is away.
    pub async fn shared(&self, program: &ProgramId, member: &Uuid) -> Option<Stored> {
        if self.redis.is_skipped() {
            return None;
        }
        let key = self.key(program, member);
        let name = self.field.name();
        let mut conn = self.redis.connection();
        let result: redis::RedisResult<(Option<Vec<u8>>, Option<i64>)> = redis::cmd("HMGET")
            .arg(&key)
            .arg(name)
            .arg(format!("{name}:v"))
            .query_async(&mut conn)
            .await;
        let hit = match self.redis.record(result, "card_get") {
            Some((Some(value), Some(version))) => Some(Stored { value, version }),
            _ => None,
        };
        match hit {
            Some(_) => self.lookups.redis_hit.increment(1),
            None => self.lookups.redis_miss.increment(1),
        }
        hit
    }

    /// Fills the owner's field in Redis with `value` read at `version`,
    /// unless a writer has since moved it past that version. Returns
    /// whether Redis answered (keep a copy in memory only then, so the
    /// shared card fills again after an outage).
    pub async fn fill(
        &self,
        program: &ProgramId,
        member: &Uuid,
        version: i64,
        value: &[u8],
    ) -> bool {
        if self.redis.is_skipped() {
            return false;
        }
        let mut conn = self.redis.connection();
        let result: redis::RedisResult<i64> = self
            .fill
            .key(self.key(program, member))
            .arg(self.field.name())
            .arg(version)
            .arg(value)
            .arg(CARD_TTL_SECS)
            .invoke_async(&mut conn)
            .await;
        self.redis.record(result, "card_fill").is_some()
    }

    /// Tells Redis and every replica that a write produced `version`: drops
    /// the field and the in-process copies older than it. Returns false when
    /// Redis could not be told (the relay tells it later).
    pub async fn invalidate(&self, program: &ProgramId, member: &Uuid, version: i64) -> bool {
        self.forget(program, member, version);
        let mut conn = self.redis.connection();
        let result: redis::RedisResult<i64> = self
            .invalidate
            .key(self.key(program, member))
            .arg(self.field.name())
            .arg(version)
            .arg(CARD_TTL_SECS)
            .arg(&*self.channel)
            .invoke_async(&mut conn)
            .await;
        self.redis.record(result, "card_invalidate").is_some()
    }

    fn forget(&self, program: &ProgramId, member: &Uuid, version: i64) {
        let key = (program.clone(), *member);
        let floor = self.floors.get(&key).map_or(version, |f| f.max(version));
        self.floors.insert(key.clone(), floor);
        if self.local.get(&key).is_some_and(|(v, _)| v < floor) {
            self.local.invalidate(&key);
        }
    }

    fn heard_invalidation(&self, message: &[u8]) {
        let Some((field, version, program, member)) = parse_invalidation(message) else {
            tracing::warn!("unreadable card invalidation");
            return;
        };
        if field == self.field {
            self.forget(&program, &member, version);
        }
    }

    /// Whether the in-process copy is in use (invalidations are heard).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Listens for invalidations until `shutdown`, resubscribing after any
    /// failure; the in-process copy is used only while subscribed.
    pub async fn listen(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let channel = self.channel.clone();
        subscription::listen(self.redis.url(), &channel, &self, shutdown).await
    }
}

impl<T: Send + Sync + 'static> subscription::Listener for Cards<T> {
    fn subscribed(&self) {
        // Anything missed while not subscribed is gone: start empty.
        self.local.invalidate_all();
        self.listening.store(true, Ordering::Release);
    }

    fn heard(&self, payload: &[u8]) {
        self.heard_invalidation(payload);
    }

    fn lost(&self) {
        self.listening.store(false, Ordering::Release);
        self.local.invalidate_all();
    }
}

/// Another owner's field of the card, for a service that only reads it (the
/// member card reads the points field): Redis and the in-process copy, but
/// neither `fill` nor `invalidate`, so a reader can never write a field it
/// does not own.
pub struct CardReader<T>(Cards<T>);

impl<T> Clone for CardReader<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::fmt::Debug for CardReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CardReader").field(&self.0).finish()
    }
}

impl<T: Send + Sync + 'static> CardReader<T> {
    /// Reads `cards`' field, giving up the right to write it.
    pub fn new(cards: Cards<T>) -> Self {
        Self(cards)
    }

    /// The field read.
    pub fn field(&self) -> CardField {
        self.0.field
    }

    /// See [`Cards::local`].
    pub fn local(&self, program: &ProgramId, member: &Uuid) -> Option<Arc<T>> {
        self.0.local(program, member)
    }

    /// See [`Cards::keep`]: the copy is this process's, not the owner's.
    pub fn keep(&self, program: &ProgramId, member: &Uuid, version: i64, value: Arc<T>) {
        self.0.keep(program, member, version, value);
    }

    /// See [`Cards::shared`].
    pub async fn shared(&self, program: &ProgramId, member: &Uuid) -> Option<Stored> {
        self.0.shared(program, member).await
    }
}

/// Reads `<field> <version> <prefix>:card:<program>:<member>`.
fn parse_invalidation(message: &[u8]) -> Option<(CardField, i64, ProgramId, Uuid)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.splitn(3, ' ');
    let field = CardField::from_name(parts.next()?)?;
    let version = parts.next()?.parse().ok()?;
    let key = parts.next()?;
    // Programme ids hold no ':', so the last two segments are unambiguous.
    let mut segments = key.rsplitn(3, ':');
    let member = Uuid::parse_str(segments.next()?).ok()?;
    let program = ProgramId::parse(segments.next()?).ok()?;
    Some((field, version, program, member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_messages_round_trip_through_the_key() {
        let program = ProgramId::parse("brand-a").unwrap();
        let member = Uuid::now_v7();
        let key = card_key("t:pre:fix", program.as_str(), &member);
        let message = format!("member 7 {key}");
        let parsed = parse_invalidation(message.as_bytes()).unwrap();
        assert_eq!(parsed, (CardField::Member, 7, program, member));
        assert!(parse_invalidation(b"member x key").is_none());
    }
}
