//! The period a per-member limit counts over: a calendar day, month,
//! quarter or year in the programme's time zone, or the reward's whole
//! validity window.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use laurel_proto::points::v1 as pb;

/// The period of a reward's per-member limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitPeriod {
    /// The whole validity window (`PERIOD_UNSPECIFIED`): every unit the
    /// member ever redeemed of the reward counts.
    Window,
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
    /// A calendar quarter: January, April, July and October start one.
    Quarter,
    /// A calendar year.
    Year,
}

impl LimitPeriod {
    /// The period of a proto enum number; `None` for a number not in it.
    pub fn from_proto(value: i32) -> Option<Self> {
        Some(match pb::Period::try_from(value).ok()? {
            pb::Period::Unspecified => Self::Window,
            pb::Period::Day => Self::Day,
            pb::Period::Month => Self::Month,
            pb::Period::Quarter => Self::Quarter,
            pb::Period::Year => Self::Year,
        })
    }

    /// The proto enum.
    pub fn to_proto(self) -> pb::Period {
        match self {
            Self::Window => pb::Period::Unspecified,
            Self::Day => pb::Period::Day,
            Self::Month => pb::Period::Month,
            Self::Quarter => pb::Period::Quarter,
            Self::Year => pb::Period::Year,
        }
    }

    /// The stored number (the proto's).
    pub fn code(self) -> i16 {
        self.to_proto() as i16
    }

    /// The period of a stored number; an unknown one (the table's CHECK
    /// forbids it) counts over the whole window, the strictest reading.
    pub fn from_code(code: i16) -> Self {
        Self::from_proto(i32::from(code)).unwrap_or(Self::Window)
    }

    /// The period containing `at` in time zone `tz`, as `[start, end)`;
    /// `None` for the whole validity window (no time bound).
    pub fn bounds(self, at: DateTime<Utc>, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let day = at.with_timezone(&tz).date_naive();
        let (start, end) = match self {
            Self::Window => return None,
            Self::Day => (day, day.succ_opt()?),
            Self::Month => months_from(day.year(), day.month(), 1)?,
            Self::Quarter => months_from(day.year(), (day.month() - 1) / 3 * 3 + 1, 3)?,
            Self::Year => months_from(day.year(), 1, 12)?,
        };
        Some((midnight(start, tz)?, midnight(end, tz)?))
    }
}

/// `[first day of month, first day `months` later)`.
fn months_from(year: i32, month: u32, months: u32) -> Option<(NaiveDate, NaiveDate)> {
    let start = NaiveDate::from_ymd_opt(year, month, 1)?;
    Some((start, start.checked_add_months(Months::new(months))?))
}

/// When `day` starts in `tz`: its midnight, or the first moment after it
/// when a clock change skips midnight.
fn midnight(day: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let midnight = day.and_hms_opt(0, 0, 0)?;
    (0..=2)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use chrono_tz::UTC;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn a_day_runs_from_midnight_to_midnight_utc() {
        assert_eq!(
            LimitPeriod::Day.bounds(at(2026, 12, 31, 23), UTC),
            Some((at(2026, 12, 31, 0), at(2027, 1, 1, 0)))
        );
    }

    #[test]
    fn periods_follow_the_programmes_time_zone() {
        let auckland: Tz = "Pacific/Auckland".parse().unwrap();
        // 12:00 UTC on 22 November is 01:00 on the 23rd in Auckland (UTC+13).
        assert_eq!(
            LimitPeriod::Day.bounds(at(2026, 11, 22, 12), auckland),
            Some((at(2026, 11, 22, 11), at(2026, 11, 23, 11)))
        );
        assert_eq!(
            LimitPeriod::Month.bounds(at(2026, 11, 30, 12), auckland),
            Some((at(2026, 11, 30, 11), at(2026, 12, 31, 11)))
        );
    }

    #[test]
    fn a_day_that_a_clock_change_starts_late_begins_when_it_exists() {
        // Havana skips midnight when summer time begins (8 March 2026).
        let havana: Tz = "America/Havana".parse().unwrap();
        let (start, end) = LimitPeriod::Day.bounds(at(2026, 3, 8, 12), havana).unwrap();
        assert_eq!(start, at(2026, 3, 8, 5));
        assert_eq!(end, at(2026, 3, 9, 4));
    }

    #[test]
    fn a_month_ends_where_the_next_begins() {
        assert_eq!(
            LimitPeriod::Month.bounds(at(2028, 2, 29, 12), UTC),
            Some((at(2028, 2, 1, 0), at(2028, 3, 1, 0)))
        );
        assert_eq!(
            LimitPeriod::Month.bounds(at(2026, 12, 1, 0), UTC),
            Some((at(2026, 12, 1, 0), at(2027, 1, 1, 0)))
        );
    }

    #[test]
    fn quarters_start_in_january_april_july_and_october() {
        assert_eq!(
            LimitPeriod::Quarter.bounds(at(2026, 3, 31, 23), UTC),
            Some((at(2026, 1, 1, 0), at(2026, 4, 1, 0)))
        );
        assert_eq!(
            LimitPeriod::Quarter.bounds(at(2026, 5, 15, 0), UTC),
            Some((at(2026, 4, 1, 0), at(2026, 7, 1, 0)))
        );
        assert_eq!(
            LimitPeriod::Quarter.bounds(at(2026, 11, 2, 0), UTC),
            Some((at(2026, 10, 1, 0), at(2027, 1, 1, 0)))
        );
    }

    #[test]
    fn a_year_is_the_calendar_year() {
        assert_eq!(
            LimitPeriod::Year.bounds(at(2026, 7, 4, 9), UTC),
            Some((at(2026, 1, 1, 0), at(2027, 1, 1, 0)))
        );
    }

    #[test]
    fn the_whole_window_has_no_bounds() {
        assert_eq!(LimitPeriod::Window.bounds(at(2026, 7, 4, 9), UTC), None);
    }

    #[test]
    fn every_period_contains_its_instant() {
        for period in [
            LimitPeriod::Day,
            LimitPeriod::Month,
            LimitPeriod::Quarter,
            LimitPeriod::Year,
        ] {
            for t in [at(2026, 1, 1, 0), at(2026, 6, 30, 23), at(2027, 12, 31, 23)] {
                let (start, end) = period.bounds(t, UTC).unwrap();
                assert!(start <= t && t < end, "{period:?} at {t}");
            }
        }
    }

    #[test]
    fn stored_codes_round_trip_and_unknown_numbers_are_refused() {
        for p in [
            LimitPeriod::Window,
            LimitPeriod::Day,
            LimitPeriod::Month,
            LimitPeriod::Quarter,
            LimitPeriod::Year,
        ] {
            assert_eq!(LimitPeriod::from_code(p.code()), p);
            assert_eq!(LimitPeriod::from_proto(p.to_proto() as i32), Some(p));
        }
        assert_eq!(LimitPeriod::from_proto(99), None);
    }
}
