//! Every member's tier: qualification from the measures, upgrades at once,
//! reviews at period ends, manual assignments, paid-plan floors, history.
//!
//! One path moves a member's tier, [`Tiers::advance`]: it locks the member's
//! row, sums the measures the state needs, runs the pure
//! [`crate::qualification::step::step`] until nothing more is due, and
//! writes the state, the history, `TierChanged` and `TierDowngradeWarning`
//! in the caller's transaction. Events, jobs, `AssignTier` and paid plans
//! all go through it, so concurrent changes of one member serialise on the
//! row lock and none is lost.

mod api;
mod events;
pub mod jobs;
mod members;
pub(crate) mod store;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use laurel_proto::tier::v1 as pb;
use laurel_runtime::{
    context::ProgramId,
    events::outbox::{self, NewEvent, PackedEvent},
};
use sqlx::PgConnection;
use uuid::Uuid;

pub use members::MemberDirectory;

use crate::{
    Tiers,
    error::TierError,
    qualification::{
        Rules,
        step::{Change, Warning, ranges, reason_word, step},
    },
};

/// The stream source of this service's events.
pub const SOURCE: &str = "tier";

/// The member's effective tier code now, if the member has one.
pub async fn current_tier_code<'e>(
    db: impl sqlx::PgExecutor<'e>,
    program: &str,
    member: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let code: Option<Option<String>> = sqlx::query_scalar(
        "SELECT tier_code FROM members
         WHERE program_id = $1 AND member_id = $2 AND status = 'active'",
    )
    .bind(program)
    .bind(member)
    .fetch_optional(db)
    .await?;
    Ok(code.flatten())
}

/// A ladder version with its rules.
#[derive(Debug)]
pub struct Loaded {
    /// As stored.
    pub ladder: pb::Ladder,
    /// As evaluated.
    pub rules: Rules,
}

/// How long a replica trusts its copy of a programme's ladder: another
/// replica's publication shows within it.
const LADDER_TTL: Duration = Duration::from_secs(1);

/// What the tier side keeps in memory: the ladder in force per programme
/// and the members known to exist.
#[derive(Clone)]
pub struct Local {
    /// The ladder and when it was read. An entry older than [`LADDER_TTL`]
    /// is read again by one caller while the others go on with it, so a
    /// busy replica never sends every request to Postgres at once.
    ladders: moka::sync::Cache<String, (Instant, Option<Arc<Loaded>>)>,
    /// Programmes whose ladder one caller is reading again.
    refreshing: Arc<Mutex<HashSet<String>>>,
    /// Made from the configuration on first use.
    directory: Arc<OnceLock<MemberDirectory>>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl Local {
    /// Empty caches.
    pub fn new() -> Self {
        Self {
            ladders: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            refreshing: Arc::default(),
            directory: Arc::default(),
        }
    }

    /// Forgets the programme's ladder (after publishing one).
    pub fn forget_ladder(&self, program: &str) {
        self.ladders.invalidate(program);
    }

    /// The programme's ladder as this replica last read it, while that is
    /// recent or another caller is reading it again.
    pub(crate) fn recent_ladder(&self, program: &str) -> Option<Option<Arc<Loaded>>> {
        let (read_at, cached) = self.ladders.get(program)?;
        let refreshing = || {
            self.refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(program)
        };
        (read_at.elapsed() < LADDER_TTL || refreshing()).then_some(cached)
    }

    /// Whether this caller reads `program`'s ladder again (no other is);
    /// released when the returned guard drops.
    fn claim_refresh(&self, program: &str) -> Option<Refreshing> {
        let mut set = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(program.to_owned()).then(|| Refreshing {
            set: self.refreshing.clone(),
            program: program.to_owned(),
        })
    }
}

/// A claim to read a ladder again; dropping it lets another caller claim.
struct Refreshing {
    set: Arc<Mutex<HashSet<String>>>,
    program: String,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.program);
    }
}

pub(crate) fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// The `TierChanged` event of a change.
pub(crate) fn tier_changed(member: Uuid, change: &Change, ladder_version: i64) -> pb::TierChanged {
    pb::TierChanged {
        member_id: member.to_string(),
        previous_tier: change.previous.clone().unwrap_or_default(),
        tier: change.tier.clone(),
        effective_at: Some(ts(change.effective_at)),
        reason: reason_word(change.reason).to_owned(),
        reason_code: change.reason as i32,
        ladder_version,
        rank: change.rank,
        previous_rank: change.previous_rank,
    }
}

/// The `TierDowngradeWarning` event of a warning.
pub(crate) fn downgrade_warning(member: Uuid, w: &Warning) -> pb::TierDowngradeWarning {
    pb::TierDowngradeWarning {
        member_id: member.to_string(),
        tier: w.tier.clone(),
        downgrade_to: w.downgrade_to.clone(),
        effective_at: Some(ts(w.effective_at)),
        missing: w.missing.clone(),
    }
}

/// Packs the events of one member's changes and warnings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_events(
    program: &ProgramId,
    member: Uuid,
    changes: &[Change],
    warnings: &[Warning],
    ladder_version: i64,
    card_version: i64,
    now: DateTime<Utc>,
    out: &mut Vec<PackedEvent>,
) -> Result<(), sqlx::Error> {
    for change in changes
        .iter()
        .filter(|c| c.previous.as_ref() != Some(&c.tier))
    {
        out.push(PackedEvent::pack(
            SOURCE,
            NewEvent {
                program,
                member_id: Some(member),
                occurred_at: change.effective_at,
                recorded_at: now,
                card_version: Some(card_version),
                payload: &tier_changed(member, change, ladder_version),
            },
        )?);
    }
    for warning in warnings {
        out.push(PackedEvent::pack(
            SOURCE,
            NewEvent {
                program,
                member_id: Some(member),
                occurred_at: now,
                recorded_at: now,
                card_version: None,
                payload: &downgrade_warning(member, warning),
            },
        )?);
    }
    Ok(())
}

fn program_id(program: &str) -> Result<ProgramId, TierError> {
    ProgramId::parse(program).map_err(|e| TierError::Internal(anyhow::anyhow!("{e}")))
}

impl Default for Local {
    fn default() -> Self {
        Self::new()
    }
}

impl Tiers {
    /// The member service's directory, connected lazily on first use.
    pub(crate) fn directory(&self) -> Result<&MemberDirectory, TierError> {
        if let Some(d) = self.local.directory.get() {
            return Ok(d);
        }
        let made =
            MemberDirectory::new(&self.config.member_addr, self.config.member_api_key.clone())?;
        Ok(self.local.directory.get_or_init(|| made))
    }

    /// The ladder in force for `program`, from memory unless older than
    /// `at_least` (a member evaluated against a newer version must never be
    /// evaluated against an older one).
    pub(crate) async fn ladder(
        &self,
        conn: &mut PgConnection,
        program: &str,
        at_least: Option<i64>,
    ) -> Result<Option<Arc<Loaded>>, sqlx::Error> {
        let mut _claim = None;
        if let Some((read_at, cached)) = self.local.ladders.get(program) {
            let recent_enough = match (&cached, at_least) {
                (_, None) => true,
                (Some(l), Some(v)) => l.rules.version >= v,
                (None, Some(_)) => false,
            };
            if recent_enough {
                if read_at.elapsed() < LADDER_TTL {
                    return Ok(cached);
                }
                _claim = self.local.claim_refresh(program);
                if _claim.is_none() {
                    return Ok(cached);
                }
            }
        }
        let loaded = crate::ladder::in_force(&mut *conn, program)
            .await?
            .map(|ladder| {
                Arc::new(Loaded {
                    rules: Rules::from_ladder(&ladder),
                    ladder,
                })
            });
        self.local
            .ladders
            .insert(program.to_owned(), (Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    /// Moves a member's tier on to now inside `tx` (see the module
    /// documentation), `cause` naming why when it is not the measures.
    /// `measures_changed` raises the card version even when the tier state
    /// stays (the card shows the measures). Returns the new card version
    /// when anything changed, for the caller to invalidate the card.
    pub(crate) async fn advance(
        &self,
        tx: &mut PgConnection,
        program: &str,
        member: Uuid,
        cause: pb::TierChangeReason,
        measures_changed: bool,
    ) -> Result<Option<i64>, TierError> {
        let Some(row) = store::lock(tx, program, member).await? else {
            return Ok(None);
        };
        if row.status != "active" {
            return Ok(None);
        }
        let now = self.now();
        let Some(ladder) = self.ladder(tx, program, row.state.ladder_version).await? else {
            return Ok(if measures_changed {
                Some(store::bump(tx, program, member).await?)
            } else {
                None
            });
        };
        let rules = &ladder.rules;
        let floors = crate::plans::floors(tx, program, member).await?;
        let mut state = row.state.clone();
        let (mut changes, mut warnings) = (Vec::new(), Vec::new());
        let mut cause = cause;
        // A clock far ahead can have several periods due: one step each.
        for _ in 0..32 {
            let r = ranges(rules, &state, now);
            let sums = store::sums(tx, program, &rules.currency, &[(member, r)])
                .await?
                .remove(&member)
                .unwrap_or_default();
            let outcome = step(rules, &state, &sums, &floors, now, cause);
            changes.extend(outcome.change);
            warnings.extend(outcome.warning);
            state = outcome.state;
            cause = pb::TierChangeReason::Qualified;
            if !outcome.moved {
                break;
            }
        }
        if state == row.state && !measures_changed && changes.is_empty() {
            return Ok(None);
        }
        let version = row.version + 1;
        store::save_many(tx, program, &[(member, &state, version)], now).await?;
        let recorded: Vec<(Uuid, &Change)> = changes.iter().map(|c| (member, c)).collect();
        store::record_many(tx, program, &recorded, rules.version).await?;
        let mut events = Vec::new();
        pack_events(
            &program_id(program)?,
            member,
            &changes,
            &warnings,
            rules.version,
            version,
            now,
            &mut events,
        )?;
        outbox::enqueue_many(tx, SOURCE, &events).await?;
        Ok(Some(version))
    }

    /// Recomputes the member's effective tier (manual, else the higher of
    /// the earned tier and the floors of paid plans, see
    /// [`crate::plans::floors`]) inside `tx`, recording a change with
    /// `reason` in the history and as `TierChanged`. Returns the new card
    /// version when the tier state changed, for the caller to invalidate the
    /// card after commit.
    pub async fn refresh_tier(
        &self,
        tx: &mut PgConnection,
        program: &str,
        member: Uuid,
        reason: pb::TierChangeReason,
    ) -> Result<Option<i64>, TierError> {
        self.advance(tx, program, member, reason, false).await
    }
}
