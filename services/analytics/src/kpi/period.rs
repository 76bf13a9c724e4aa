//! KPI periods: days, ISO weeks from Monday, calendar months, quarters and
//! years of local dates in the programme's time zone.
//!
//! Facts carry their local `day` already (see `facts`), so a period is a
//! range of local dates; its start as an instant is local midnight (or the
//! first instant of the day where midnight does not exist).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use laurel_proto::analytics::v1 as pb;

/// A period length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// A local day.
    Day,
    /// An ISO week, Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
    /// A calendar quarter (January, April, July, October).
    Quarter,
    /// A calendar year.
    Year,
}

impl Period {
    /// The period of a request; `None` for UNSPECIFIED or unknown values.
    pub fn from_pb(raw: i32) -> Option<Self> {
        match pb::Period::try_from(raw).ok()? {
            pb::Period::Unspecified => None,
            pb::Period::Day => Some(Self::Day),
            pb::Period::Week => Some(Self::Week),
            pb::Period::Month => Some(Self::Month),
            pb::Period::Quarter => Some(Self::Quarter),
            pb::Period::Year => Some(Self::Year),
        }
    }

    /// As sent over gRPC.
    pub fn to_pb(self) -> pb::Period {
        match self {
            Self::Day => pb::Period::Day,
            Self::Week => pb::Period::Week,
            Self::Month => pb::Period::Month,
            Self::Quarter => pb::Period::Quarter,
            Self::Year => pb::Period::Year,
        }
    }

    /// Postgres' `date_trunc` unit that gives the same starts as
    /// [`Period::start_of`] (its weeks start on Monday too).
    pub fn sql_unit(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    /// The period's length as a Postgres interval literal.
    pub fn sql_step(self) -> &'static str {
        match self {
            Self::Day => "1 day",
            Self::Week => "7 days",
            Self::Month => "1 month",
            Self::Quarter => "3 months",
            Self::Year => "1 year",
        }
    }

    fn months(self) -> Option<u32> {
        match self {
            Self::Day | Self::Week => None,
            Self::Month => Some(1),
            Self::Quarter => Some(3),
            Self::Year => Some(12),
        }
    }

    /// The start of the period holding `day`.
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        let first_of = |month: u32| {
            NaiveDate::from_ymd_opt(day.year(), month, 1).expect("day 1 of a month exists")
        };
        match self {
            Self::Day => day,
            Self::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            Self::Month => first_of(day.month()),
            Self::Quarter => first_of((day.month0() / 3) * 3 + 1),
            Self::Year => first_of(1),
        }
    }

    /// The start `n` periods after (or before, when negative) the period
    /// start `start`; `None` past the calendar's range.
    pub fn shift(self, start: NaiveDate, n: i64) -> Option<NaiveDate> {
        let magnitude = n.unsigned_abs();
        match self.months() {
            None => {
                let days = magnitude.checked_mul(if self == Self::Week { 7 } else { 1 })?;
                if n >= 0 {
                    start.checked_add_days(Days::new(days))
                } else {
                    start.checked_sub_days(Days::new(days))
                }
            }
            Some(per) => {
                let months = Months::new(u32::try_from(magnitude).ok()?.checked_mul(per)?);
                if n >= 0 {
                    start.checked_add_months(months)
                } else {
                    start.checked_sub_months(months)
                }
            }
        }
    }

    /// How many periods the start `to` lies after the start `from`
    /// (negative when before).
    pub fn between(self, from: NaiveDate, to: NaiveDate) -> i64 {
        match self.months() {
            None => {
                let days = (to - from).num_days();
                if self == Self::Week { days / 7 } else { days }
            }
            Some(per) => {
                let month_index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
                (month_index(to) - month_index(from)) / i64::from(per)
            }
        }
    }
}

/// The first instant of local day `day` in `tz`: midnight, or when a
/// daylight-saving jump skips midnight, the first local time that exists
/// (every real zone's gaps are whole quarter hours).
pub fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..=96)
        .find_map(|quarter| {
            tz.from_local_datetime(&(midnight + chrono::Duration::minutes(15 * quarter)))
                .earliest()
        })
        .map_or_else(|| midnight.and_utc(), |at| at.with_timezone(&Utc))
}

/// Consecutive periods: the first start and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Period length.
    pub period: Period,
    /// Start of the first period.
    pub first: NaiveDate,
    /// Number of periods (at least 1).
    pub count: i64,
}

impl Window {
    /// The periods holding the local days of `[from, to)` in `tz`: from the
    /// one holding `from`'s day to the one holding the day of the last
    /// instant before `to`. `None` when `to` is not after `from`.
    pub fn covering(
        period: Period,
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<Self> {
        if to <= from {
            return None;
        }
        let first_day = from.with_timezone(&tz).date_naive();
        let last_day = (to - chrono::Duration::microseconds(1))
            .with_timezone(&tz)
            .date_naive();
        let first = period.start_of(first_day);
        let count = period.between(first, period.start_of(last_day)) + 1;
        Some(Self {
            period,
            first,
            count,
        })
    }

    /// Start of the last period.
    pub fn last(&self) -> Option<NaiveDate> {
        self.period.shift(self.first, self.count - 1)
    }

    /// The day after the last period (exclusive end).
    pub fn end(&self) -> Option<NaiveDate> {
        self.period.shift(self.first, self.count)
    }

    /// Every period start, oldest first.
    pub fn starts(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        (0..self.count).map_while(|k| self.period.shift(self.first, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn periods_start_where_the_calendar_says() {
        // 2026-03-19 is a Thursday.
        let day = d(2026, 3, 19);
        assert_eq!(Period::Day.start_of(day), day);
        assert_eq!(Period::Week.start_of(day), d(2026, 3, 16));
        assert_eq!(
            Period::Week.start_of(d(2026, 3, 22)),
            d(2026, 3, 16),
            "Sunday ends the ISO week"
        );
        assert_eq!(Period::Month.start_of(day), d(2026, 3, 1));
        assert_eq!(Period::Quarter.start_of(day), d(2026, 1, 1));
        assert_eq!(Period::Quarter.start_of(d(2026, 12, 31)), d(2026, 10, 1));
        assert_eq!(Period::Year.start_of(day), d(2026, 1, 1));
    }

    #[test]
    fn shifting_and_counting_agree() {
        for period in [
            Period::Day,
            Period::Week,
            Period::Month,
            Period::Quarter,
            Period::Year,
        ] {
            let start = period.start_of(d(2025, 11, 20));
            for n in [-30, -1, 0, 1, 7, 40] {
                let other = period.shift(start, n).unwrap();
                assert_eq!(period.start_of(other), other, "{period:?} {n}");
                assert_eq!(period.between(start, other), n, "{period:?} {n}");
            }
        }
        assert_eq!(
            Period::Quarter.shift(d(2026, 10, 1), 1),
            Some(d(2027, 1, 1))
        );
        assert_eq!(Period::Day.shift(NaiveDate::MAX, 1), None);
    }

    #[test]
    fn a_window_covers_the_local_days_of_the_range() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // 2026-01-31T23:30Z is February 1st in Paris; `to` at Paris midnight
        // of March 1st excludes March.
        let from = Utc.with_ymd_and_hms(2026, 1, 31, 23, 30, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 2, 28, 23, 0, 0).unwrap();
        let w = Window::covering(Period::Month, paris, from, to).unwrap();
        assert_eq!((w.first, w.count), (d(2026, 2, 1), 1));
        let w = Window::covering(Period::Day, paris, from, to).unwrap();
        assert_eq!(
            (w.first, w.count, w.end()),
            (d(2026, 2, 1), 28, Some(d(2026, 3, 1)))
        );
        assert_eq!(Window::covering(Period::Day, paris, to, from), None);
        assert_eq!(Window::covering(Period::Day, paris, to, to), None);
    }

    #[test]
    fn a_day_starts_at_local_midnight_or_after_a_skipped_one() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(
            day_start(paris, d(2026, 7, 1)),
            Utc.with_ymd_and_hms(2026, 6, 30, 22, 0, 0).unwrap()
        );
        // Santiago skipped midnight on 2022-09-11 (00:00 became 01:00).
        let santiago: Tz = "America/Santiago".parse().unwrap();
        assert_eq!(
            day_start(santiago, d(2022, 9, 11)),
            Utc.with_ymd_and_hms(2022, 9, 11, 4, 0, 0).unwrap()
        );
    }
}
