//! Qualification rules as plain functions: the ladder as rules, the
//! qualification window and review periods in the ladder's time zone, the
//! tier a member's measures qualify for, what is still missing, and the
//! outcome of a review. No storage, no clock: everything takes `now`.
//!
//! Days are local days in the ladder's time zone; ranges of days are
//! half-open `[start, end)`.
//!
//! - Rolling N months: on day D the window is the N months ending with D,
//!   `[D - N months + 1 day, D + 1)`, so a purchase leaves the window on the
//!   day N months after it. A tier reached on day R is reviewed at the end
//!   of the period `[R, R + N months)`, over exactly that period.
//! - Calendar year: the window and the period are the calendar year.
//! - Anniversary: the window and the period are the membership year, from
//!   the enrolment day's anniversary.

pub mod step;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use laurel_proto::tier::v1 as pb;

/// How the qualification window runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `n` months (1..=36).
    Rolling(u32),
    /// The calendar year.
    CalendarYear,
    /// The membership year from the enrolment anniversary.
    Anniversary,
}

/// Qualifying totals over a range of days.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Spend in the ladder's currency, minor units.
    pub spend: i64,
    /// Orders not fully refunded.
    pub orders: i64,
    /// Points earned less reversals.
    pub points: i64,
}

/// One way to qualify: every positive measure must be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Way {
    /// Spend needed (0: not required).
    pub spend: i64,
    /// Orders needed.
    pub orders: i64,
    /// Points needed.
    pub points: i64,
}

impl Way {
    /// Whether `t` meets this way.
    pub fn met_by(&self, t: &Totals) -> bool {
        t.spend >= self.spend && t.orders >= self.orders && t.points >= self.points
    }

    /// What `t` still lacks for this way.
    pub fn missing(&self, t: &Totals) -> pb::Missing {
        pb::Missing {
            spend_minor: self.spend.saturating_sub(t.spend).max(0),
            orders: self.orders.saturating_sub(t.orders).max(0),
            points: self.points.saturating_sub(t.points).max(0),
        }
    }

    /// Whether meeting `self` always meets `other` (every requirement of
    /// `other` is at most this one's).
    pub fn implies(&self, other: &Way) -> bool {
        other.spend <= self.spend && other.orders <= self.orders && other.points <= self.points
    }
}

/// One rung of the ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierRule {
    /// Code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Ways to qualify (none for the base tier).
    pub ways: Vec<Way>,
    /// Benefit codes the tier gives.
    pub benefits: Vec<String>,
}

/// A validated ladder version, ready to evaluate members against.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Ladder version.
    pub version: i64,
    /// Tiers from the base tier (rank 0) upward.
    pub tiers: Vec<TierRule>,
    /// Window.
    pub window: Window,
    /// Currency of qualifying spend.
    pub currency: String,
    /// Time zone of days.
    pub tz: Tz,
    /// Most levels one review takes away (at least 1).
    pub max_downgrade_levels: usize,
    /// Days between a review and the downgrade it decides.
    pub grace_days: u32,
    /// Days before a downgrade that the member is warned.
    pub warning_days: u32,
}

impl Rules {
    /// Rules from a stored (validated) ladder.
    pub fn from_ladder(ladder: &pb::Ladder) -> Self {
        let window = ladder.window.unwrap_or_default();
        let window = match pb::WindowKind::try_from(window.kind) {
            Ok(pb::WindowKind::CalendarYear) => Window::CalendarYear,
            Ok(pb::WindowKind::Anniversary) => Window::Anniversary,
            _ => Window::Rolling(window.months.clamp(1, 36) as u32),
        };
        Self {
            version: ladder.version,
            tiers: ladder
                .tiers
                .iter()
                .map(|t| TierRule {
                    code: t.code.clone(),
                    name: t.name.clone(),
                    ways: t
                        .qualify_any
                        .iter()
                        .map(|w| Way {
                            spend: w.spend_minor,
                            orders: w.orders,
                            points: w.points,
                        })
                        .collect(),
                    benefits: t.benefits.iter().map(|b| b.benefit_code.clone()).collect(),
                })
                .collect(),
            window,
            currency: ladder.currency_code.clone(),
            tz: ladder.time_zone.parse().unwrap_or(chrono_tz::UTC),
            max_downgrade_levels: ladder.max_downgrade_levels.max(1) as usize,
            grace_days: ladder.grace_days.max(0) as u32,
            warning_days: ladder.warning_days.max(0) as u32,
        }
    }

    /// The rank of a tier code, if the ladder has it.
    pub fn rank(&self, code: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.code == code)
    }

    /// The code of a rank.
    pub fn code(&self, rank: usize) -> &str {
        &self.tiers[rank.min(self.tiers.len() - 1)].code
    }

    /// The highest tier the totals qualify for (0, the base tier, at least).
    pub fn qualifying_rank(&self, t: &Totals) -> usize {
        self.tiers
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, tier)| tier.ways.iter().any(|w| w.met_by(t)))
            .map(|(rank, _)| rank)
            .max()
            .unwrap_or(0)
    }

    /// What the totals still lack for `rank`, one entry per way to qualify.
    pub fn missing(&self, rank: usize, t: &Totals) -> Vec<pb::Missing> {
        self.tiers
            .get(rank)
            .map(|tier| tier.ways.iter().map(|w| w.missing(t)).collect())
            .unwrap_or_default()
    }

    /// The tier a review of a member holding `held` gives when the reviewed
    /// measures qualify for `qualified`: kept when they reach it, otherwise
    /// down by at most `max_downgrade_levels`.
    pub fn review_target(&self, held: usize, qualified: usize) -> usize {
        if qualified >= held {
            held
        } else {
            qualified.max(held.saturating_sub(self.max_downgrade_levels))
        }
    }

    /// Benefit codes of tier `from` that tier `to` does not give.
    pub fn benefits_lost(&self, from: usize, to: usize) -> Vec<String> {
        let (Some(from), Some(to)) = (self.tiers.get(from), self.tiers.get(to)) else {
            return Vec::new();
        };
        from.benefits
            .iter()
            .filter(|b| !to.benefits.contains(b))
            .cloned()
            .collect()
    }

    /// The local day of an instant.
    /// Whether any way to qualify asks for points: only then can a points
    /// movement change a tier.
    pub fn counts_points(&self) -> bool {
        self.tiers
            .iter()
            .flat_map(|t| &t.ways)
            .any(|w| w.points > 0)
    }

    pub fn day(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// The instant a local day starts.
    pub fn start_of(&self, day: NaiveDate) -> DateTime<Utc> {
        start_of(self.tz, day)
    }

    /// The window on day `today` for a member enrolled on `enrolled`.
    pub fn window_on(&self, today: NaiveDate, enrolled: NaiveDate) -> (NaiveDate, NaiveDate) {
        match self.window {
            Window::Rolling(n) => (sub_months(today, n) + Days::new(1), today + Days::new(1)),
            Window::CalendarYear => year_of(today),
            Window::Anniversary => membership_year(today, enrolled),
        }
    }

    /// The period a tier reached on `day` is reviewed at the end of.
    pub fn period_from(&self, day: NaiveDate, enrolled: NaiveDate) -> (NaiveDate, NaiveDate) {
        match self.window {
            Window::Rolling(n) => (day, add_months(day, n)),
            Window::CalendarYear => year_of(day),
            Window::Anniversary => membership_year(day, enrolled),
        }
    }

    /// The window a review at the end of a period ending on `end` sums.
    pub fn review_window(&self, end: NaiveDate, enrolled: NaiveDate) -> (NaiveDate, NaiveDate) {
        let last = end.pred_opt().unwrap_or(end);
        let (start, _) = self.window_on(last, enrolled);
        (start, end)
    }
}

/// The instant a local day starts in `tz` (the first instant of the day
/// when midnight falls in a daylight-saving gap).
pub fn start_of(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

fn add_months(day: NaiveDate, n: u32) -> NaiveDate {
    day.checked_add_months(Months::new(n)).unwrap_or(day)
}

fn sub_months(day: NaiveDate, n: u32) -> NaiveDate {
    day.checked_sub_months(Months::new(n)).unwrap_or(day)
}

fn year_of(day: NaiveDate) -> (NaiveDate, NaiveDate) {
    let start = NaiveDate::from_ymd_opt(day.year(), 1, 1).expect("1 January exists");
    (start, add_months(start, 12))
}

/// The membership year containing `day` for a member enrolled on
/// `enrolled` (anniversaries of 29 February fall on 28 February).
fn membership_year(day: NaiveDate, enrolled: NaiveDate) -> (NaiveDate, NaiveDate) {
    if day < enrolled {
        return (enrolled, add_months(enrolled, 12));
    }
    let mut years = (day.year() - enrolled.year()).max(0) as u32;
    let mut start = add_months(enrolled, 12 * years);
    if start > day {
        years = years.saturating_sub(1);
        start = add_months(enrolled, 12 * years);
    }
    (start, add_months(enrolled, 12 * (years + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    pub(crate) fn rules(window: Window) -> Rules {
        let way = |spend, orders| Way {
            spend,
            orders,
            points: 0,
        };
        let tier = |code: &str, ways: Vec<Way>, benefits: &[&str]| TierRule {
            code: code.into(),
            name: code.into(),
            ways,
            benefits: benefits.iter().map(|b| b.to_string()).collect(),
        };
        Rules {
            version: 1,
            tiers: vec![
                tier("member", vec![], &["newsletter"]),
                tier(
                    "silver",
                    vec![way(10_000, 0), way(0, 3)],
                    &["newsletter", "shipping"],
                ),
                tier(
                    "gold",
                    vec![way(50_000, 0)],
                    &["newsletter", "shipping", "lounge"],
                ),
                tier("platinum", vec![way(100_000, 10)], &["lounge", "concierge"]),
            ],
            window,
            currency: "EUR".into(),
            tz: chrono_tz::Europe::Paris,
            max_downgrade_levels: 1,
            grace_days: 0,
            warning_days: 0,
        }
    }

    #[test]
    fn the_highest_tier_any_way_reaches_is_the_qualifying_one() {
        let r = rules(Window::Rolling(12));
        let t = |spend, orders| Totals {
            spend,
            orders,
            points: 0,
        };
        assert_eq!(r.qualifying_rank(&t(0, 0)), 0);
        assert_eq!(r.qualifying_rank(&t(9_999, 2)), 0);
        assert_eq!(r.qualifying_rank(&t(0, 3)), 1);
        assert_eq!(r.qualifying_rank(&t(50_000, 0)), 2);
        assert_eq!(r.qualifying_rank(&t(100_000, 9)), 2);
        assert_eq!(r.qualifying_rank(&t(100_000, 10)), 3);
    }

    #[test]
    fn missing_lists_each_way() {
        let r = rules(Window::Rolling(12));
        let m = r.missing(
            1,
            &Totals {
                spend: 2_500,
                orders: 1,
                points: 0,
            },
        );
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].spend_minor, m[0].orders), (7_500, 0));
        assert_eq!((m[1].spend_minor, m[1].orders), (0, 2));
    }

    #[test]
    fn a_review_takes_away_at_most_the_configured_levels() {
        let mut r = rules(Window::CalendarYear);
        assert_eq!(r.review_target(3, 0), 2);
        assert_eq!(r.review_target(3, 3), 3);
        assert_eq!(r.review_target(2, 3), 2);
        r.max_downgrade_levels = 2;
        assert_eq!(r.review_target(3, 0), 1);
        assert_eq!(r.review_target(3, 2), 2);
    }

    #[test]
    fn benefits_lost_are_those_the_lower_tier_lacks() {
        let r = rules(Window::CalendarYear);
        assert_eq!(r.benefits_lost(2, 1), vec!["lounge".to_string()]);
        assert!(r.benefits_lost(1, 2).is_empty());
    }

    #[test]
    fn a_rolling_window_drops_a_day_on_its_anniversary() {
        let r = rules(Window::Rolling(12));
        let e = d("2020-01-01");
        assert_eq!(
            r.window_on(d("2026-03-10"), e),
            (d("2025-03-11"), d("2026-03-11"))
        );
        // Month ends clamp.
        assert_eq!(
            r.window_on(d("2026-02-28"), e),
            (d("2025-03-01"), d("2026-03-01"))
        );
        assert_eq!(
            r.period_from(d("2026-03-10"), e),
            (d("2026-03-10"), d("2027-03-10"))
        );
        assert_eq!(
            r.review_window(d("2027-03-10"), e),
            (d("2026-03-10"), d("2027-03-10"))
        );
    }

    #[test]
    fn calendar_and_membership_years() {
        let cal = rules(Window::CalendarYear);
        let e = d("2024-02-29");
        assert_eq!(
            cal.window_on(d("2026-07-14"), e),
            (d("2026-01-01"), d("2027-01-01"))
        );
        assert_eq!(
            cal.review_window(d("2027-01-01"), e),
            (d("2026-01-01"), d("2027-01-01"))
        );
        let ann = rules(Window::Anniversary);
        assert_eq!(
            ann.window_on(d("2026-02-27"), e),
            (d("2025-02-28"), d("2026-02-28"))
        );
        assert_eq!(
            ann.window_on(d("2026-02-28"), e),
            (d("2026-02-28"), d("2027-02-28"))
        );
        assert_eq!(
            ann.window_on(d("2024-03-01"), e),
            (d("2024-02-29"), d("2025-02-28"))
        );
    }

    #[test]
    fn days_start_at_local_midnight() {
        let r = rules(Window::CalendarYear);
        let start = r.start_of(d("2026-07-14"));
        assert_eq!(start.to_rfc3339(), "2026-07-13T22:00:00+00:00");
        assert_eq!(r.day(start), d("2026-07-14"));
        assert_eq!(r.day(start - chrono::Duration::seconds(1)), d("2026-07-13"));
    }
}
