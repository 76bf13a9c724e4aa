//! Quota periods: calendar months, quarters and years in the ladder's time
//! zone, as `[start, end)` instants.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use laurel_proto::tier::v1 as pb;

/// The quota period containing `at` in `tz`, as `[start, end)`. An
/// unspecified period counts as a month (see [`super::entitle`]).
pub fn bounds(
    period: pb::QuotaPeriod,
    at: DateTime<Utc>,
    tz: Tz,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = at.with_timezone(&tz).date_naive();
    let (first_month, months) = match period {
        pb::QuotaPeriod::Unspecified | pb::QuotaPeriod::Month => (day.month(), 1),
        pb::QuotaPeriod::Quarter => ((day.month() - 1) / 3 * 3 + 1, 3),
        pb::QuotaPeriod::Year => (1, 12),
    };
    let start =
        NaiveDate::from_ymd_opt(day.year(), first_month, 1).expect("the first of a month exists");
    let end = start
        .checked_add_months(Months::new(months))
        .unwrap_or(NaiveDate::MAX);
    (local_midnight(start, tz), local_midnight(end, tz))
}

/// The first instant of `day` in `tz` (a day whose midnight falls in a
/// daylight-saving gap starts at the first hour that exists).
fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    (0..24)
        .find_map(|hour| {
            tz.from_local_datetime(&day.and_hms_opt(hour, 0, 0)?)
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

/// The ladder's time zone, UTC when there is no ladder or it names none
/// that exists.
pub fn time_zone(ladder: Option<&pb::Ladder>) -> Tz {
    ladder
        .and_then(|l| l.time_zone.parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn a_month_in_utc_runs_from_the_first_to_the_first() {
        assert_eq!(
            bounds(pb::QuotaPeriod::Month, at(2028, 2, 29, 12), Tz::UTC),
            (at(2028, 2, 1, 0), at(2028, 3, 1, 0))
        );
        assert_eq!(
            bounds(pb::QuotaPeriod::Month, at(2026, 12, 31, 23), Tz::UTC),
            (at(2026, 12, 1, 0), at(2027, 1, 1, 0))
        );
    }

    #[test]
    fn quarters_and_years_are_calendar_ones() {
        assert_eq!(
            bounds(pb::QuotaPeriod::Quarter, at(2026, 5, 15, 0), Tz::UTC),
            (at(2026, 4, 1, 0), at(2026, 7, 1, 0))
        );
        assert_eq!(
            bounds(pb::QuotaPeriod::Year, at(2026, 7, 4, 9), Tz::UTC),
            (at(2026, 1, 1, 0), at(2027, 1, 1, 0))
        );
    }

    #[test]
    fn periods_follow_the_ladder_time_zone() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // 23:30 UTC on 31 January is already 1 February in Paris.
        let t = Utc.with_ymd_and_hms(2026, 1, 31, 23, 30, 0).unwrap();
        let (start, end) = bounds(pb::QuotaPeriod::Month, t, paris);
        assert_eq!(start, at(2026, 1, 31, 23));
        assert_eq!(end, at(2026, 2, 28, 23));
    }

    #[test]
    fn every_period_contains_its_instant() {
        let zones: [Tz; 3] = [
            Tz::UTC,
            "Pacific/Auckland".parse().unwrap(),
            "America/Santiago".parse().unwrap(),
        ];
        for tz in zones {
            for period in [
                pb::QuotaPeriod::Month,
                pb::QuotaPeriod::Quarter,
                pb::QuotaPeriod::Year,
            ] {
                for t in [
                    at(2026, 1, 1, 0),
                    at(2026, 4, 5, 3),
                    at(2026, 9, 6, 4),
                    at(2027, 12, 31, 23),
                ] {
                    let (start, end) = bounds(period, t, tz);
                    assert!(start <= t && t < end, "{period:?} at {t} in {tz}");
                }
            }
        }
    }

    #[test]
    fn an_unknown_zone_is_utc() {
        let ladder = pb::Ladder {
            time_zone: "Mars/Olympus".into(),
            ..Default::default()
        };
        assert_eq!(time_zone(Some(&ladder)), Tz::UTC);
        assert_eq!(time_zone(None), Tz::UTC);
    }
}
