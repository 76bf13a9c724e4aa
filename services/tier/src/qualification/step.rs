//! A member's tier state and how it moves: one [`step`] at `now` applies
//! what is due (a manual assignment ending, a pending downgrade, a period
//! review), upgrades when the measures qualify higher, decides a downgrade
//! warning, and derives the effective tier (manual, else the higher of the
//! earned tier and the paid-plan floors). [`view`] is what `GetMemberTier`
//! answers. Both are pure: the caller loads the state and the sums over
//! the [`Ranges`] the state needs.

use chrono::{DateTime, Days, NaiveDate, Utc};
use laurel_proto::tier::v1 as pb;

use super::{Rules, Totals};

/// Why a member has the effective tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The measures earned it.
    Earned,
    /// An operator assigned it.
    Manual,
    /// A paid plan's floor.
    PaidPlan,
}

impl Source {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earned => "earned",
            Self::Manual => "manual",
            Self::PaidPlan => "paid_plan",
        }
    }

    /// From the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "earned" => Some(Self::Earned),
            "manual" => Some(Self::Manual),
            "paid_plan" => Some(Self::PaidPlan),
            _ => None,
        }
    }

    fn proto(self) -> pb::TierSource {
        match self {
            Self::Earned => pb::TierSource::Earned,
            Self::Manual => pb::TierSource::Manual,
            Self::PaidPlan => pb::TierSource::PaidPlan,
        }
    }
}

/// A manual assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manual {
    /// Tier assigned.
    pub tier: String,
    /// When it ends.
    pub until: DateTime<Utc>,
    /// The operator's reason.
    pub note: Option<String>,
}

/// A member's tier state as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    /// Enrolment.
    pub enrolled_at: DateTime<Utc>,
    /// Tier the measures earned (kept until review); `None` before the
    /// first evaluation.
    pub earned: Option<String>,
    /// Since when.
    pub earned_since: Option<DateTime<Utc>>,
    /// Effective tier.
    pub tier: Option<String>,
    /// Why.
    pub source: Option<Source>,
    /// Since when.
    pub tier_since: Option<DateTime<Utc>>,
    /// Manual assignment in force.
    pub manual: Option<Manual>,
    /// Period the earned tier is reviewed at the end of (day starts).
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Downgrade waiting out its grace: tier and when.
    pub pending: Option<(String, DateTime<Utc>)>,
    /// Due time of the downgrade last checked for a warning.
    pub warned_for: Option<DateTime<Utc>>,
    /// Ladder version evaluated against.
    pub ladder_version: Option<i64>,
}

impl MemberState {
    /// A member enrolled at `at`, never evaluated.
    pub fn enrolled(at: DateTime<Utc>) -> Self {
        Self {
            enrolled_at: at,
            earned: None,
            earned_since: None,
            tier: None,
            source: None,
            tier_since: None,
            manual: None,
            period: None,
            pending: None,
            warned_for: None,
            ladder_version: None,
        }
    }

    /// Equal apart from the ladder version (nothing worth writing).
    pub fn same_but_version(&self, other: &Self) -> bool {
        Self {
            ladder_version: None,
            ..self.clone()
        } == Self {
            ladder_version: None,
            ..other.clone()
        }
    }
}

/// Ranges of days whose totals a step or view needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranges {
    /// The window on the current day.
    pub current: (NaiveDate, NaiveDate),
    /// The window of the period under review (empty when none).
    pub review: (NaiveDate, NaiveDate),
    /// The reviewed period extended through the grace days, while a
    /// downgrade is pending (empty otherwise).
    pub catchup: (NaiveDate, NaiveDate),
}

/// Totals over the [`Ranges`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    /// Current window.
    pub current: Totals,
    /// Reviewed period.
    pub review: Totals,
    /// Reviewed period and grace.
    pub catchup: Totals,
}

/// The ranges `state` needs at `now`.
pub fn ranges(rules: &Rules, state: &MemberState, now: DateTime<Utc>) -> Ranges {
    let today = rules.day(now);
    let enrolled = rules.day(state.enrolled_at);
    let current = rules.window_on(today, enrolled);
    let empty = (current.0, current.0);
    let review = state
        .period
        .map(|(_, end)| rules.review_window(rules.day(end), enrolled))
        .unwrap_or(empty);
    let catchup = match (state.pending.as_ref(), state.period) {
        (Some(_), Some((start, end))) => {
            (rules.day(start), (today + Days::new(1)).max(rules.day(end)))
        }
        _ => empty,
    };
    Ranges {
        current,
        review,
        catchup,
    }
}

/// A change of the effective tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Tier before.
    pub previous: Option<String>,
    /// Its rank, -1 for none.
    pub previous_rank: i32,
    /// Tier after.
    pub tier: String,
    /// Its rank.
    pub rank: i32,
    /// Why.
    pub reason: pb::TierChangeReason,
    /// When it took effect.
    pub effective_at: DateTime<Utc>,
    /// Operator's note.
    pub note: Option<String>,
}

/// A downgrade warning to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Tier now.
    pub tier: String,
    /// Tier after the downgrade.
    pub downgrade_to: String,
    /// When the downgrade takes effect.
    pub effective_at: DateTime<Utc>,
    /// What is missing to keep the tier.
    pub missing: Vec<pb::Missing>,
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The state after it.
    pub state: MemberState,
    /// The effective tier's change, if any.
    pub change: Option<Change>,
    /// A warning to send, if any.
    pub warning: Option<Warning>,
    /// Whether a period, pending downgrade or manual assignment moved on:
    /// another step may find more due (a clock far ahead).
    pub moved: bool,
}

/// The lower-case word of a reason, as TierChanged carries it.
pub fn reason_word(reason: pb::TierChangeReason) -> &'static str {
    use pb::TierChangeReason as R;
    match reason {
        R::Qualified => "qualified",
        R::Downgraded => "downgraded",
        R::Manual => "manual",
        R::ManualEnded => "manual_ended",
        R::PaidPlan => "paid_plan",
        R::Merge => "merge",
        R::LadderChanged => "ladder_changed",
        R::Unspecified => "unspecified",
    }
}

fn period_at(
    rules: &Rules,
    rank: usize,
    day: NaiveDate,
    enrolled: NaiveDate,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    (rank > 0).then(|| {
        let (s, e) = rules.period_from(day, enrolled);
        (rules.start_of(s), rules.start_of(e))
    })
}

/// Moves `state` on to `now`: see the module documentation. `floors` are
/// the tier codes of the member's paid plans; `cause` names changes that
/// are not the measures' doing (a manual assignment, a merge, a paid plan,
/// a new ladder).
pub fn step(
    rules: &Rules,
    state: &MemberState,
    sums: &Sums,
    floors: &[String],
    now: DateTime<Utc>,
    cause: pb::TierChangeReason,
) -> Outcome {
    use pb::TierChangeReason as R;
    let mut s = state.clone();
    let today = rules.day(now);
    let enrolled = rules.day(s.enrolled_at);
    let q_now = rules.qualifying_rank(&sums.current);
    let mut moved = false;
    let mut downgraded_at = None;

    // A new ladder: tiers it no longer has are re-earned from the measures.
    if s.ladder_version != Some(rules.version) {
        if s.earned.as_deref().is_some_and(|e| rules.rank(e).is_none()) {
            s.earned = Some(rules.code(q_now).to_owned());
            s.earned_since = Some(now);
            s.period = period_at(rules, q_now, today, enrolled);
            s.pending = None;
            s.warned_for = None;
        }
        if s.pending
            .as_ref()
            .is_some_and(|(p, _)| rules.rank(p).is_none())
        {
            s.pending = None;
        }
        if s.manual
            .as_ref()
            .is_some_and(|m| rules.rank(&m.tier).is_none())
        {
            s.manual = None;
        }
        s.ladder_version = Some(rules.version);
    }
    let mut manual_ended = None;
    if let Some(m) = &s.manual
        && m.until <= now
    {
        manual_ended = Some(m.until);
        s.manual = None;
        moved = true;
    }
    let held = |s: &MemberState| s.earned.as_deref().and_then(|e| rules.rank(e)).unwrap_or(0);

    if let Some((pending, at)) = s.pending.clone() {
        let keep = held(&s);
        let end = s.period.map(|p| p.1).unwrap_or(at);
        if rules.qualifying_rank(&sums.catchup) >= keep || q_now >= keep {
            // Qualified again during grace: the tier runs another period.
            s.pending = None;
            s.warned_for = None;
            s.period = period_at(rules, keep, rules.day(end), enrolled);
            moved = true;
        } else if at <= now {
            let rank = rules.rank(&pending).unwrap_or(0);
            s.earned = Some(pending);
            s.earned_since = Some(at);
            s.pending = None;
            s.warned_for = None;
            s.period = period_at(rules, rank, rules.day(end), enrolled);
            downgraded_at = Some(at);
            moved = true;
        }
    } else if let Some((_, end)) = s.period
        && end <= now
        && held(&s) > 0
    {
        let keep = held(&s);
        let target = rules.review_target(keep, rules.qualifying_rank(&sums.review));
        moved = true;
        if target == keep {
            s.period = period_at(rules, keep, rules.day(end), enrolled);
            s.warned_for = None;
        } else if rules.grace_days == 0 {
            s.earned = Some(rules.code(target).to_owned());
            s.earned_since = Some(end);
            s.period = period_at(rules, target, rules.day(end), enrolled);
            s.warned_for = None;
            downgraded_at = Some(end);
        } else {
            let at = end + chrono::Duration::days(i64::from(rules.grace_days));
            s.pending = Some((rules.code(target).to_owned(), at));
        }
    }

    // Upgrades happen at once.
    if s.earned.is_none() || q_now > held(&s) {
        s.earned = Some(rules.code(q_now).to_owned());
        s.earned_since = Some(now);
        s.period = period_at(rules, q_now, today, enrolled);
        s.pending = None;
        s.warned_for = None;
    }

    // A warning `warning_days` before a downgrade takes effect, once.
    let mut warning = None;
    let keep = held(&s);
    if rules.warning_days > 0 && keep > 0 {
        let due = match (&s.pending, s.period) {
            (Some((p, at)), _) => Some((*at, rules.rank(p).unwrap_or(0), sums.catchup)),
            (None, Some((_, end))) => {
                let at = end + chrono::Duration::days(i64::from(rules.grace_days));
                let target = rules.review_target(keep, rules.qualifying_rank(&sums.review));
                Some((at, target, sums.review))
            }
            _ => None,
        };
        if let Some((at, target, totals)) = due {
            let from = at - chrono::Duration::days(i64::from(rules.warning_days));
            if now >= from && now < at && s.warned_for != Some(at) {
                s.warned_for = Some(at);
                if target < keep {
                    warning = Some(Warning {
                        tier: rules.code(keep).to_owned(),
                        downgrade_to: rules.code(target).to_owned(),
                        effective_at: at,
                        missing: rules.missing(keep, &totals),
                    });
                }
            }
        }
    }

    // The effective tier.
    let earned_rank = held(&s);
    let floor = floors.iter().filter_map(|f| rules.rank(f)).max();
    let (rank, source) = match &s.manual {
        Some(m) => (rules.rank(&m.tier).unwrap_or(0), Source::Manual),
        None => match floor {
            Some(f) if f > earned_rank => (f, Source::PaidPlan),
            _ => (earned_rank, Source::Earned),
        },
    };
    let code = rules.code(rank).to_owned();
    let previous_rank = s
        .tier
        .as_deref()
        .and_then(|t| rules.rank(t))
        .map_or(-1, |r| r as i32);
    let tier_changed = s.tier.as_deref() != Some(code.as_str());
    let mut change = None;
    if tier_changed || (cause == R::Manual && source == Source::Manual) {
        let old_source = s.source;
        let (reason, effective_at) = if old_source == Some(Source::Manual)
            && source != Source::Manual
            && manual_ended.is_some()
        {
            (R::ManualEnded, manual_ended.unwrap_or(now))
        } else if matches!(cause, R::Manual | R::Merge | R::PaidPlan | R::LadderChanged) {
            (cause, now)
        } else if source == Source::PaidPlan || old_source == Some(Source::PaidPlan) {
            (R::PaidPlan, now)
        } else if (rank as i32) < previous_rank {
            (R::Downgraded, downgraded_at.unwrap_or(now))
        } else {
            (R::Qualified, now)
        };
        change = Some(Change {
            previous: s.tier.clone(),
            previous_rank,
            tier: code.clone(),
            rank: rank as i32,
            reason,
            effective_at,
            note: match (reason, &s.manual) {
                (R::Manual, Some(m)) => m.note.clone(),
                _ => None,
            },
        });
        if tier_changed {
            s.tier_since = Some(effective_at);
        }
        s.tier = Some(code);
    }
    s.source = Some(source);
    Outcome {
        state: s,
        change,
        warning,
        moved,
    }
}

fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// What `GetMemberTier` answers for `state` at `now`.
pub fn view(
    rules: &Rules,
    member_id: &str,
    state: &MemberState,
    sums: &Sums,
    now: DateTime<Utc>,
) -> pb::MemberTier {
    let today = rules.day(now);
    let enrolled = rules.day(state.enrolled_at);
    let (start, end) = rules.window_on(today, enrolled);
    let mut valid_until = rules.start_of(today + Days::new(1));
    let mut tighten = |t: Option<DateTime<Utc>>| {
        if let Some(t) = t
            && t > now
            && t < valid_until
        {
            valid_until = t;
        }
    };
    tighten(state.period.map(|p| p.1));
    tighten(state.pending.as_ref().map(|p| p.1));
    tighten(state.manual.as_ref().map(|m| m.until));
    let measures = pb::Measures {
        spend_minor: sums.current.spend,
        orders: sums.current.orders,
        points: sums.current.points,
        window_start: Some(ts(rules.start_of(start))),
        window_end: Some(ts(rules.start_of(end))),
    };
    let mut answer = pb::MemberTier {
        member_id: member_id.to_owned(),
        measures: Some(measures),
        ladder_version: rules.version,
        valid_until: Some(ts(valid_until)),
        ..Default::default()
    };
    let Some(code) = state.tier.as_deref() else {
        return answer;
    };
    let rank = rules.rank(code).unwrap_or(0);
    let held = state
        .earned
        .as_deref()
        .and_then(|e| rules.rank(e))
        .unwrap_or(0);
    let source = state.source.unwrap_or(Source::Earned);
    answer.tier_code = code.to_owned();
    answer.tier_name = rules.tiers[rank].name.clone();
    answer.source = source.proto() as i32;
    answer.earned_tier_code = state.earned.clone().unwrap_or_default();
    answer.since = state.tier_since.map(ts);
    answer.secured_until = match (source, &state.manual, &state.pending, state.period) {
        (Source::Manual, Some(m), _, _) => Some(ts(m.until)),
        (Source::Earned, _, Some((_, at)), _) => Some(ts(*at)),
        (Source::Earned, _, None, Some((_, end))) if held > 0 => {
            Some(ts(end + chrono::Duration::days(i64::from(rules.grace_days))))
        }
        _ => None,
    };
    if rank + 1 < rules.tiers.len() {
        answer.next_tier_code = rules.tiers[rank + 1].code.clone();
        answer.missing = rules.missing(rank + 1, &sums.current);
    }
    // If the period ended today, the review would sum today's window.
    let earned_after = match &state.pending {
        Some((p, _)) => rules.rank(p).unwrap_or(0),
        None => rules.review_target(held, rules.qualifying_rank(&sums.current)),
    };
    let after = match source {
        Source::Earned => earned_after,
        Source::Manual | Source::PaidPlan => rank.max(earned_after),
    };
    answer.tier_if_period_ended_today = rules.code(after).to_owned();
    answer.benefits_lost_if_period_ended_today = rules.benefits_lost(rank, after);
    if let Some((p, at)) = &state.pending {
        answer.pending_downgrade_tier_code = p.clone();
        answer.pending_downgrade_at = Some(ts(*at));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qualification::{
        Window,
        tests::{d, rules},
    };
    use pb::TierChangeReason as R;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn spend(spend: i64) -> Totals {
        Totals {
            spend,
            ..Default::default()
        }
    }

    fn sums(current: i64, review: i64, catchup: i64) -> Sums {
        Sums {
            current: spend(current),
            review: spend(review),
            catchup: spend(catchup),
        }
    }

    fn run(r: &Rules, s: &MemberState, sums: Sums, now: &str) -> Outcome {
        step(r, s, &sums, &[], at(now), R::Qualified)
    }

    #[test]
    fn a_first_evaluation_gives_the_base_tier_and_qualifying_upgrades_at_once() {
        let r = rules(Window::Rolling(12));
        let s = MemberState::enrolled(at("2026-01-01T10:00:00Z"));
        let o = run(&r, &s, sums(0, 0, 0), "2026-01-02T10:00:00Z");
        assert_eq!(o.state.tier.as_deref(), Some("member"));
        assert_eq!(o.change.unwrap().previous_rank, -1);
        assert_eq!(o.state.period, None);
        let o = run(&r, &o.state, sums(60_000, 0, 0), "2026-03-10T10:00:00Z");
        let change = o.change.unwrap();
        assert_eq!(
            (change.tier.as_str(), change.reason),
            ("gold", R::Qualified)
        );
        assert_eq!(
            o.state.period,
            Some((r.start_of(d("2026-03-10")), r.start_of(d("2027-03-10"))))
        );
    }

    fn gold(r: &Rules) -> MemberState {
        let s = MemberState::enrolled(at("2025-01-01T10:00:00Z"));
        run(r, &s, sums(60_000, 0, 0), "2026-03-10T10:00:00Z").state
    }

    #[test]
    fn a_review_downgrades_one_level_at_the_period_end() {
        let r = rules(Window::Rolling(12));
        let s = gold(&r);
        // Before the period ends nothing happens, even with nothing spent.
        let o = run(&r, &s, sums(0, 0, 0), "2027-03-09T12:00:00Z");
        assert!(o.change.is_none() && !o.moved);
        let o = run(&r, &s, sums(0, 0, 0), "2027-03-10T00:00:00Z");
        let change = o.change.unwrap();
        assert_eq!(
            (change.tier.as_str(), change.reason),
            ("silver", R::Downgraded)
        );
        assert_eq!(change.effective_at, r.start_of(d("2027-03-10")));
        // Kept when the period's measures reach it.
        let o = run(&r, &s, sums(0, 55_000, 0), "2027-03-10T00:00:00Z");
        assert!(o.change.is_none());
        assert_eq!(o.state.period.unwrap().1, r.start_of(d("2028-03-10")));
    }

    #[test]
    fn grace_delays_a_downgrade_and_qualifying_again_cancels_it() {
        let mut r = rules(Window::Rolling(12));
        r.grace_days = 30;
        r.warning_days = 7;
        let s = gold(&r);
        let o = run(&r, &s, sums(0, 0, 0), "2027-03-10T01:00:00Z");
        assert!(o.change.is_none());
        let due = r.start_of(d("2027-03-10")) + chrono::Duration::days(30);
        assert_eq!(o.state.pending, Some(("silver".into(), due)));
        // A warning a week ahead, once.
        let w = run(&r, &o.state, sums(0, 0, 10_000), "2027-04-03T00:00:00Z");
        let warning = w.warning.unwrap();
        assert_eq!(warning.downgrade_to, "silver");
        assert_eq!(warning.missing[0].spend_minor, 40_000);
        assert!(
            run(&r, &w.state, sums(0, 0, 10_000), "2027-04-04T00:00:00Z")
                .warning
                .is_none()
        );
        // Applied at its time.
        let done = run(&r, &w.state, sums(0, 0, 10_000), "2027-04-09T00:00:00Z");
        assert_eq!(done.change.unwrap().reason, R::Downgraded);
        // Or cancelled by qualifying again during grace.
        let kept = run(&r, &o.state, sums(0, 0, 50_000), "2027-03-20T00:00:00Z");
        assert!(kept.change.is_none() && kept.state.pending.is_none());
        assert_eq!(kept.state.period.unwrap().1, r.start_of(d("2028-03-10")));
    }

    #[test]
    fn a_manual_tier_holds_until_its_end_then_falls_back() {
        let r = rules(Window::Rolling(12));
        let mut s = gold(&r);
        s.manual = Some(Manual {
            tier: "platinum".into(),
            until: at("2026-06-01T00:00:00Z"),
            note: Some("vip".into()),
        });
        let o = step(
            &r,
            &s,
            &sums(0, 0, 0),
            &[],
            at("2026-04-01T00:00:00Z"),
            R::Manual,
        );
        let c = o.change.unwrap();
        assert_eq!(
            (c.tier.as_str(), c.reason, c.note.as_deref()),
            ("platinum", R::Manual, Some("vip"))
        );
        let o = run(&r, &o.state, sums(60_000, 0, 0), "2026-06-01T00:00:01Z");
        let c = o.change.unwrap();
        assert_eq!((c.tier.as_str(), c.reason), ("gold", R::ManualEnded));
        assert_eq!(c.effective_at, at("2026-06-01T00:00:00Z"));
    }

    #[test]
    fn a_paid_plan_floor_lifts_the_effective_tier() {
        let r = rules(Window::Rolling(12));
        let s = MemberState::enrolled(at("2026-01-01T10:00:00Z"));
        let o = step(
            &r,
            &s,
            &sums(0, 0, 0),
            &["gold".into()],
            at("2026-01-02T00:00:00Z"),
            R::PaidPlan,
        );
        assert_eq!(o.state.tier.as_deref(), Some("gold"));
        assert_eq!(o.state.source, Some(Source::PaidPlan));
        assert_eq!(o.state.earned.as_deref(), Some("member"));
        let o = run(&r, &o.state, sums(0, 0, 0), "2026-01-03T00:00:00Z");
        assert_eq!(o.change.unwrap().reason, R::PaidPlan);
    }

    #[test]
    fn the_view_shows_progress_and_what_ending_today_would_do() {
        let r = rules(Window::Rolling(12));
        let s = gold(&r);
        let v = view(&r, "m", &s, &sums(20_000, 0, 0), at("2026-05-01T10:00:00Z"));
        assert_eq!(v.tier_code, "gold");
        assert_eq!(v.next_tier_code, "platinum");
        assert_eq!(v.missing[0].spend_minor, 80_000);
        assert_eq!(v.tier_if_period_ended_today, "silver");
        assert_eq!(
            v.benefits_lost_if_period_ended_today,
            vec!["lounge".to_string()]
        );
        assert_eq!(v.secured_until, Some(ts(r.start_of(d("2027-03-10")))));
        assert_eq!(v.valid_until, Some(ts(r.start_of(d("2026-05-02")))));
    }

    proptest! {
        /// Whatever happens, the effective tier is never below the earned
        /// tier without a manual assignment, a step never downgrades by
        /// more than the configured levels, and never before the period
        /// ends.
        #[test]
        fn steps_respect_the_ladder(
            levels in 1usize..4,
            grace in 0u32..40,
            moves in proptest::collection::vec((0i64..120_000, 0i64..120_000, 0i64..400), 1..20),
        ) {
            let mut r = rules(Window::Rolling(3));
            r.max_downgrade_levels = levels;
            r.grace_days = grace;
            let mut now = at("2026-01-01T00:00:00Z");
            let mut s = MemberState::enrolled(now);
            for (current, review, days) in moves {
                now += chrono::Duration::days(days);
                let before = s.clone();
                let o = run(&r, &s, sums(current, review, review), &now.to_rfc3339());
                let old = before.tier.as_deref().and_then(|t| r.rank(t));
                let new = r.rank(o.state.tier.as_deref().unwrap()).unwrap();
                if let Some(old) = old && new < old {
                    prop_assert!(old - new <= levels);
                    let end = before.pending.as_ref().map(|p| p.1)
                        .or(before.period.map(|p| p.1)).unwrap();
                    prop_assert!(end <= now);
                }
                prop_assert!(new >= r.qualifying_rank(&spend(current)));
                s = o.state;
            }
        }
    }
}
