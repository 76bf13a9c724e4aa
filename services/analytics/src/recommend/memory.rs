//! Members' balances and recent items in memory, so a recommendation for a
//! member not asked about lately reads no database.
//!
//! A view holds, for one programme and level and one build's item numbers,
//! every active member's points balance and distinct items with the day
//! each was last bought (the most recent [`KEPT_ITEMS`], and any more bought
//! within the exclusion window). It is read in one snapshot and kept only
//! while it can be trusted:
//!
//! - The facts consumer announces every change that matters to it (a
//!   purchase, a points movement, a merge, an erasure) on the channel
//!   [`channel`] before its transaction commits. Every replica listens; a
//!   member heard about is answered from the database from then on, until a
//!   view whose snapshot began more than a grace ([`GRACE`] unless
//!   configured) after the announcement replaces this one (the grace covers
//!   a transaction still committing).
//! - A view is used only while the replica has been subscribed since
//!   before its snapshot began: after a lost subscription, messages may
//!   have been missed, so the view is loaded again.
//! - A new build (other item numbers), or, once the view is older than
//!   twice the grace, more announced members than a tenth of it, loads it
//!   again in the background (the cost of a load grows with the view, and
//!   so does the number of changes it waits for); meanwhile the database
//!   answers.
//!
//! Memory: about 8 bytes per distinct item of each member plus 28 per
//! member, per level (a million members with 17 lines each: about 120 MB
//! for SKUs); twice that while a view is being replaced.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use laurel_analytics_models::recommend::MemberPurchase;
use laurel_runtime::{events::handler::HandlerError, subscription};
use uuid::Uuid;

use super::build::Level;
use crate::{
    Analytics,
    copy_rows::{copy_out, sql_literal},
    error::AnalyticsError,
};

/// How long before a view's snapshot an announcement still counts against
/// it by default: longer than a consumer transaction takes from announcing
/// to committing.
pub const GRACE: Duration = Duration::from_secs(60);

/// Distinct items kept per member beyond those within the exclusion window
/// (the model's `max_items_per_member`: serving looks at no more).
pub const KEPT_ITEMS: usize = 50;

/// Days kept in full whatever [`KEPT_ITEMS`] says: the exclusion window
/// (30 days) and a day for time zones.
const WINDOW_DAYS: i32 = 31;

/// A failed load is tried again after this long.
const RETRY: Duration = Duration::from_secs(10);

/// The channel announcing members whose facts changed.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:analytics:member-changes")
}

/// One programme's members at one level, as of a snapshot.
pub struct MemberView {
    model_id: Uuid,
    /// When the snapshot began (before it was read).
    started: Instant,
    /// Active members' ids as integers (compared faster than bytes), sorted.
    members: Vec<u128>,
    balances: Vec<i64>,
    /// Member `i`'s items are `items[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    items: Vec<u32>,
    days: Vec<i32>,
}

impl MemberView {
    /// The member's balance and recent items; `None` when not active then.
    pub fn member(&self, member: &Uuid) -> Option<(i64, Vec<MemberPurchase>)> {
        let i = self.members.binary_search(&member.as_u128()).ok()?;
        let (from, to) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        let purchases = (from..to)
            .map(|k| MemberPurchase {
                day: self.days[k],
                item: self.items[k],
            })
            .collect();
        Some((self.balances[i], purchases))
    }

    /// Members in the view.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is in it.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn bytes(&self) -> usize {
        self.members.len() * 28 + self.items.len() * 8
    }
}

/// What the view says about a member.
pub enum Lookup {
    /// Balance and recent items.
    Found(i64, Vec<MemberPurchase>),
    /// Ask the database (no usable view, or the member changed since).
    Ask,
    /// Ask the database, and load a view: there is none for this build, or
    /// it can no longer be trusted.
    Load,
}

struct Attempt {
    at: Instant,
    running: bool,
    failed: bool,
}

#[derive(Default)]
struct State {
    subscribed_since: Option<Instant>,
    /// When a change of each member was last heard.
    changed: HashMap<Uuid, Instant>,
    /// Announcements heard since `changed` was last pruned.
    heard_since_pruned: usize,
    views: HashMap<Level, HashMap<String, Arc<MemberView>>>,
    attempts: HashMap<(Level, String), Attempt>,
}

impl State {
    /// Forgets announcements that no view kept, being loaded or loaded
    /// later needs.
    fn prune(&mut self, grace: Duration) {
        let oldest = self
            .views
            .values()
            .flat_map(|v| v.values())
            .map(|v| v.started)
            .chain(self.attempts.values().filter(|a| a.running).map(|a| a.at))
            .chain([Instant::now()])
            .min();
        if let Some(oldest) = oldest {
            self.changed.retain(|_, heard| *heard + grace >= oldest);
        }
        self.heard_since_pruned = 0;
    }
}

/// This replica's views, and the announcements that retire them.
#[derive(Clone)]
pub struct Memory {
    enabled: bool,
    grace: Duration,
    state: Arc<RwLock<State>>,
}

impl Memory {
    /// Views kept when `enabled` (otherwise every lookup asks the
    /// database), an announcement counting against views whose snapshot
    /// began up to `grace` after it.
    pub fn new(enabled: bool, grace: Duration) -> Self {
        Self {
            enabled,
            grace,
            state: Arc::default(),
        }
    }

    /// What the view of `program` at `level`, built on `model_id`, says
    /// about `member`.
    pub fn lookup(&self, program: &str, level: Level, model_id: Uuid, member: &Uuid) -> Lookup {
        if !self.enabled {
            return Lookup::Ask;
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let Some(since) = state.subscribed_since else {
            return Lookup::Ask;
        };
        let view = state.views.get(&level).and_then(|v| v.get(program));
        let usable = view.filter(|v| {
            v.model_id == model_id
                && v.started >= since
                && (v.started.elapsed() < 2 * self.grace || state.changed.len() <= v.len() / 10)
        });
        let Some(view) = usable else {
            return Lookup::Load;
        };
        let changed = state
            .changed
            .get(member)
            .is_some_and(|heard| *heard + self.grace >= view.started);
        if changed {
            return Lookup::Ask;
        }
        match view.member(member) {
            Some((balance, purchases)) => Lookup::Found(balance, purchases),
            None => Lookup::Ask,
        }
    }

    /// Claims the load of a view; false when one runs or one failed lately.
    fn claim(&self, program: &str, level: Level) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.subscribed_since.is_none() {
            return false;
        }
        let key = (level, program.to_owned());
        if let Some(a) = state.attempts.get(&key)
            && (a.running || (a.failed && a.at.elapsed() < RETRY))
        {
            return false;
        }
        state.attempts.insert(
            key,
            Attempt {
                at: Instant::now(),
                running: true,
                failed: false,
            },
        );
        true
    }

    /// Keeps a loaded view, unless the subscription was lost since its
    /// snapshot began; forgets announcements no view needs any more.
    fn install(&self, program: &str, level: Level, view: Option<MemberView>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = state.attempts.get_mut(&(level, program.to_owned())) {
            a.running = false;
            a.failed = view.is_none();
        }
        let Some(view) = view else { return };
        if state.subscribed_since.is_none_or(|s| s > view.started) {
            return;
        }
        state
            .views
            .entry(level)
            .or_default()
            .insert(program.to_owned(), Arc::new(view));
        state.prune(self.grace);
    }
}

impl subscription::Listener for Memory {
    fn subscribed(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.subscribed_since = Some(Instant::now());
    }

    fn heard(&self, payload: &[u8]) {
        let Some(member) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            tracing::warn!("unreadable member change");
            return;
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.changed.insert(member, Instant::now());
        state.heard_since_pruned += 1;
        if state.heard_since_pruned >= 10_000 {
            state.prune(self.grace);
        }
    }

    fn lost(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.subscribed_since = None;
    }
}

/// A member's lines, deduplicated to the latest day per item, most recent
/// first (ties by item), and cut to what serving can use.
fn recent(mut lines: Vec<(u32, i32)>, cutoff: i32) -> Vec<(u32, i32)> {
    lines.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    lines.dedup_by_key(|l| l.0);
    lines.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let within = lines.iter().take_while(|l| l.1 >= cutoff).count();
    lines.truncate(within.max(KEPT_ITEMS));
    lines
}

/// Packs members (sorted) and their lines into a view.
fn pack(
    model_id: Uuid,
    started: Instant,
    members: Vec<(Uuid, i64)>,
    lines: Vec<Vec<(u32, i32)>>,
    cutoff: i32,
) -> MemberView {
    let mut view = MemberView {
        model_id,
        started,
        offsets: Vec::with_capacity(members.len() + 1),
        members: Vec::with_capacity(members.len()),
        balances: Vec::with_capacity(members.len()),
        items: Vec::new(),
        days: Vec::new(),
    };
    view.offsets.push(0);
    for ((member, balance), lines) in members.into_iter().zip(lines) {
        for (item, day) in recent(lines, cutoff) {
            view.items.push(item);
            view.days.push(day);
        }
        view.members.push(member.as_u128());
        view.balances.push(balance);
        view.offsets
            .push(u32::try_from(view.items.len()).unwrap_or(u32::MAX));
    }
    view
}

impl Analytics {
    /// Announces that `member`'s facts changed, before the handler's
    /// transaction commits (see the module notes). Redis away: retried.
    pub(crate) async fn announce_change(&self, member: Uuid) -> Result<(), HandlerError> {
        if self.redis.is_skipped() {
            return Ok(());
        }
        let mut conn = self.redis.connection();
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&*self.member_changes)
            .arg(member.to_string())
            .query_async(&mut conn)
            .await;
        published
            .map(drop)
            .map_err(|e| HandlerError::Unavailable(anyhow::anyhow!("announcing a change: {e}")))
    }

    /// Loads the view of `program` at `level` over the build's `items` in
    /// the background, unless a load runs or failed lately.
    pub(crate) fn load_view(&self, program: &str, level: Level, model_id: Uuid, items: &[String]) {
        let memory = &self.recommendations.memory;
        if !memory.claim(program, level) {
            return;
        }
        let (this, program, items) = (self.clone(), program.to_owned(), items.to_vec());
        tokio::spawn(async move {
            let started = Instant::now();
            let loaded = this
                .read_view(&program, level, model_id, &items, started)
                .await;
            let view = match loaded {
                Ok(view) => {
                    tracing::info!(
                        %program,
                        level = level.name(),
                        members = view.len(),
                        megabytes = view.bytes() / 1_000_000,
                        seconds = started.elapsed().as_secs_f64(),
                        "recommendation view loaded"
                    );
                    Some(view)
                }
                Err(error) => {
                    tracing::warn!(%error, %program, "recommendation view not loaded");
                    None
                }
            };
            this.recommendations.memory.install(&program, level, view);
        });
    }

    async fn read_view(
        &self,
        program: &str,
        level: Level,
        model_id: Uuid,
        items: &[String],
        started: Instant,
    ) -> Result<MemberView, AnalyticsError> {
        let mut tx = self.db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let literal = sql_literal(program);
        let mut members: Vec<(Uuid, i64)> = Vec::new();
        let statement = format!(
            "COPY (SELECT member_id, points_available FROM members
                   WHERE program_id = {literal} AND status = 'active') TO STDOUT (FORMAT binary)"
        );
        copy_out(&mut tx, &statement, 2, 2 + 20 + 12, |f| {
            members.push((Uuid::from_bytes(f.next()?), f.int8()?));
            Ok(())
        })
        .await?;
        members.sort_unstable_by_key(|m| m.0.as_u128());
        let index: HashMap<Uuid, u32> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.0, i as u32))
            .collect();
        // The build's item numbers, joined in Postgres so the rows stay
        // fixed-width.
        sqlx::query(
            "CREATE TEMP TABLE recommend_items (name text PRIMARY KEY, item int4 NOT NULL)
             ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        let numbers: Vec<i32> = (0..items.len() as i32).collect();
        sqlx::query("INSERT INTO recommend_items SELECT * FROM unnest($1::text[], $2::int4[])")
            .bind(items)
            .bind(&numbers)
            .execute(&mut *tx)
            .await?;
        let column = level.name();
        let statement = format!(
            "COPY (SELECT l.member_id, l.day, i.item FROM purchase_lines l
                   JOIN recommend_items i ON i.name = l.{column}
                   WHERE l.program_id = {literal} AND l.member_id IS NOT NULL)
             TO STDOUT (FORMAT binary)"
        );
        let mut lines: Vec<Vec<(u32, i32)>> = vec![Vec::new(); members.len()];
        copy_out(&mut tx, &statement, 3, 2 + 20 + 8 + 8, |f| {
            let member = Uuid::from_bytes(f.next()?);
            let day = f.day()?;
            let item = f.int4()?;
            if let Some(&i) = index.get(&member) {
                lines[i as usize].push((item as u32, day));
            }
            Ok(())
        })
        .await?;
        tx.commit().await?;
        drop(index);
        let cutoff = crate::rfm::epoch_day(self.now().date_naive()) - WINDOW_DAYS;
        tokio::task::spawn_blocking(move || pack(model_id, started, members, lines, cutoff))
            .await
            .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("packing a view: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_latest_day_per_item_most_recent_first() {
        let lines = vec![(3, 10), (1, 12), (3, 14), (2, 12), (1, 5)];
        assert_eq!(recent(lines, 0), vec![(3, 14), (1, 12), (2, 12)]);
    }

    #[test]
    fn recent_cuts_to_the_kept_items_but_keeps_the_whole_window() {
        let old: Vec<(u32, i32)> = (0..80).map(|i| (i, 100 + i as i32)).collect();
        let kept = recent(old.clone(), 1_000);
        assert_eq!(kept.len(), KEPT_ITEMS);
        assert_eq!(kept[0], (79, 179));
        let kept = recent(old, 120);
        assert_eq!(kept.len(), 60, "every item from day 120 on is kept");
    }

    #[test]
    fn pack_lays_members_out_in_order_with_their_items() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let view = pack(
            Uuid::nil(),
            Instant::now(),
            vec![(a, 5), (b, 7)],
            vec![vec![(4, 9), (4, 11)], vec![]],
            0,
        );
        let (balance, purchases) = view.member(&a).expect("a");
        assert_eq!(balance, 5);
        assert_eq!(purchases.len(), 1);
        assert_eq!((purchases[0].item, purchases[0].day), (4, 11));
        assert_eq!(view.member(&b).map(|m| (m.0, m.1.len())), Some((7, 0)));
        assert!(view.member(&Uuid::from_u128(3)).is_none());
    }

    fn subscribed(memory: &Memory) {
        subscription::Listener::subscribed(memory);
    }

    fn view_of(memory: &Memory, member: Uuid) {
        assert!(memory.claim("p", Level::Sku));
        memory.install(
            "p",
            Level::Sku,
            Some(pack(
                Uuid::nil(),
                Instant::now(),
                vec![(member, 1)],
                vec![vec![(0, 1)]],
                0,
            )),
        );
    }

    #[test]
    fn a_member_announced_is_asked_about_and_a_lost_subscription_retires_the_view() {
        let memory = Memory::new(true, GRACE);
        let m = Uuid::from_u128(9);
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Ask
        ));
        subscribed(&memory);
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Load
        ));
        view_of(&memory, m);
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Found(1, _)
        ));
        assert!(
            matches!(
                memory.lookup("p", Level::Sku, Uuid::from_u128(1), &m),
                Lookup::Load
            ),
            "another build's numbers"
        );
        subscription::Listener::heard(&memory, m.to_string().as_bytes());
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Ask
        ));
        subscription::Listener::lost(&memory);
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Ask
        ));
        std::thread::sleep(Duration::from_millis(2));
        subscribed(&memory);
        assert!(
            matches!(
                memory.lookup("p", Level::Sku, Uuid::nil(), &m),
                Lookup::Load
            ),
            "a view older than the subscription"
        );
    }

    #[test]
    fn announced_members_past_a_tenth_of_the_view_reload_it_after_twice_the_grace() {
        let memory = Memory::new(true, Duration::from_millis(5));
        let m = Uuid::from_u128(9);
        subscribed(&memory);
        view_of(&memory, m);
        subscription::Listener::heard(&memory, m.to_string().as_bytes());
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Ask
        ));
        std::thread::sleep(Duration::from_millis(12));
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Load
        ));
    }

    #[test]
    fn a_view_whose_snapshot_began_before_the_subscription_is_not_kept() {
        let memory = Memory::new(true, GRACE);
        let m = Uuid::from_u128(9);
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        subscribed(&memory);
        assert!(memory.claim("p", Level::Sku));
        memory.install(
            "p",
            Level::Sku,
            Some(pack(Uuid::nil(), before, vec![(m, 1)], vec![vec![]], 0)),
        );
        assert!(matches!(
            memory.lookup("p", Level::Sku, Uuid::nil(), &m),
            Lookup::Load
        ));
    }
}
