//! Every version of a programme's earn rules, kept in memory for a few
//! seconds, so earning an order needs no query for its rules.
//!
//! A publish on this replica calls [`RulesCache::invalidate`] and is seen at
//! once; a publish on another replica is seen when the copy here expires
//! (the TTL, 5 seconds by default). Until then, an order whose time falls
//! after the new version's `effective_from` may still be earned by the
//! previous version: publish versions ahead of their effective time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use sqlx::PgPool;

use super::{model::RuleSet, store};

/// A programme's versions, ordered by `effective_from` then version.
type Versions = Arc<[Arc<RuleSet>]>;

/// The programmes' earn rules in memory, loaded on first use.
#[derive(Debug)]
pub struct RulesCache {
    versions: Cache<String, Versions>,
    /// Bumped by every invalidation, so a load that raced with one is not
    /// kept.
    generation: AtomicU64,
}

impl Default for RulesCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_TTL)
    }
}

impl RulesCache {
    /// How long a replica keeps a programme's versions by default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            versions: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// The version in force at `at` (see [`store::in_force`]), from memory
    /// when the programme's versions are there.
    pub async fn in_force(
        &self,
        pool: &PgPool,
        program: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Arc<RuleSet>>, sqlx::Error> {
        let versions = match self.versions.get(program) {
            Some(versions) => versions,
            None => self.load(pool, program).await?,
        };
        Ok(pick_in_force(&versions, at))
    }

    /// Forgets the programme's versions: call it after publishing one.
    pub fn invalidate(&self, program: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.versions.invalidate(program);
    }

    async fn load(&self, pool: &PgPool, program: &str) -> Result<Versions, sqlx::Error> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut conn = pool.acquire().await?;
        let versions: Versions = store::all_in_force_order(&mut conn, program)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        // An invalidation during the load may mean a publish this load did
        // not see: serve what was read, but do not keep it.
        if self.generation.load(Ordering::SeqCst) == generation {
            self.versions.insert(program.to_owned(), versions.clone());
        }
        Ok(versions)
    }
}

/// The last version whose `effective_from` is at or before `at`.
fn pick_in_force(versions: &[Arc<RuleSet>], at: DateTime<Utc>) -> Option<Arc<RuleSet>> {
    let after = versions.partition_point(|rules| rules.effective_from() <= at);
    after.checked_sub(1).map(|i| versions[i].clone())
}
