//! Retention by enrolment cohort: the members enrolled in each period (the
//! cohort), and of them, how many purchased in each period since, from the
//! enrolment period (k = 0) to the current one.
//!
//! Members and purchases count as the KPIs count them (`super::sql`):
//! members not merged away, purchases in the programme's currency; channel
//! and store narrow the purchases, tier the members.

use chrono::NaiveDate;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{
    filter::Filter,
    period::{Window, day_start},
};
use crate::{error::AnalyticsError, settings::Settings};

/// Most cells (cohort x period) one table may hold: about 1.6 MB of
/// response, well inside gRPC's default 4 MB message.
pub const MAX_CELLS: i64 = 100_000;

/// One cohort's row.
#[derive(Clone, Debug, PartialEq)]
pub struct Cohort {
    /// First day of the enrolment period.
    pub start: NaiveDate,
    /// Members enrolled in it.
    pub members: i64,
    /// `active[k]`: members who purchased in the k-th period after it.
    pub active: Vec<i64>,
}

impl Cohort {
    /// `retention[k] = active[k] / members` (0 for an empty cohort).
    pub fn retention(&self) -> Vec<f64> {
        self.active
            .iter()
            .map(|&a| {
                if self.members == 0 {
                    0.0
                } else {
                    a as f64 / self.members as f64
                }
            })
            .collect()
    }
}

/// Periods a cohort starting `start` has seen by the period starting
/// `current` (itself included); none for a cohort in the future.
fn seen(window: &Window, start: NaiveDate, current: NaiveDate) -> i64 {
    (window.period.between(start, current) + 1).max(0)
}

/// Checks the table of `window` up to `current` stays within
/// [`MAX_CELLS`]; `to_field` names the request's `to`.
pub fn check_size(
    window: &Window,
    current: NaiveDate,
    to_field: &str,
) -> Result<(), AnalyticsError> {
    let cells: i64 = window.starts().map(|s| seen(window, s, current)).sum();
    if cells > MAX_CELLS {
        return Err(AnalyticsError::field(
            to_field,
            format!("at most {MAX_CELLS} cohort cells: narrow the range or use a longer period"),
        ));
    }
    Ok(())
}

/// The cohorts of `window`, oldest first, with purchases up to the period
/// starting `current` (the current period, from the service clock).
pub async fn table(
    conn: &mut PgConnection,
    program: &str,
    settings: &Settings,
    window: Window,
    filter: &Filter,
    current: NaiveDate,
) -> Result<Vec<Cohort>, sqlx::Error> {
    let (Some(last), Some(end)) = (window.last(), window.end()) else {
        return Ok(Vec::new());
    };
    let Some(current_end) = window.period.shift(current, 1) else {
        return Ok(Vec::new());
    };
    let unit = window.period.sql_unit();
    let mut q = QueryBuilder::<Postgres>::new(
        "WITH cohorts AS (SELECT s::date AS start FROM generate_series(",
    );
    q.push_bind(window.first)
        .push("::timestamp, ")
        .push_bind(last)
        .push(format_args!(
            "::timestamp, '{}'::interval) s),
             enrolled AS (SELECT m.member_id, date_trunc('{unit}', m.enrolled_at AT TIME ZONE ",
            window.period.sql_step()
        ))
        .push_bind(settings.tz.name())
        .push(")::date AS cohort FROM members m WHERE m.program_id = ")
        .push_bind(program)
        .push(" AND m.status <> 'merged' AND m.enrolled_at >= ")
        .push_bind(day_start(settings.tz, window.first))
        .push(" AND m.enrolled_at < ")
        .push_bind(day_start(settings.tz, end));
    if !filter.tier_code.is_empty() {
        q.push(" AND m.tier_code = ")
            .push_bind(filter.tier_code.as_str());
    }
    q.push(format_args!(
        "), sizes AS (SELECT cohort, count(*) AS n FROM enrolled GROUP BY 1),
         active AS (SELECT e.cohort, date_trunc('{unit}', p.day::timestamp)::date AS period,
                           count(DISTINCT p.member_id) AS n
           FROM enrolled e JOIN purchases p ON p.program_id = "
    ))
    .push_bind(program)
    .push(" AND p.member_id = e.member_id WHERE p.day >= e.cohort AND p.day < ")
    .push_bind(current_end)
    .push(" AND p.currency_code = ")
    .push_bind(settings.currency.as_str());
    if !filter.channel.is_empty() {
        q.push(" AND p.channel = ")
            .push_bind(filter.channel.as_str());
    }
    if !filter.store_id.is_empty() {
        q.push(" AND p.store_id = ")
            .push_bind(filter.store_id.as_str());
    }
    q.push(
        " GROUP BY 1, 2)
         SELECT c.start, COALESCE(s.n, 0), a.period, a.n
         FROM cohorts c
         LEFT JOIN sizes s ON s.cohort = c.start
         LEFT JOIN active a ON a.cohort = c.start
         ORDER BY 1, 3",
    );
    let rows: Vec<(NaiveDate, i64, Option<NaiveDate>, Option<i64>)> =
        q.build_query_as().fetch_all(conn).await?;
    let mut cohorts: Vec<Cohort> = Vec::with_capacity(window.count as usize);
    for (start, members, period, active) in rows {
        if cohorts.last().is_none_or(|c| c.start != start) {
            let periods = usize::try_from(seen(&window, start, current)).unwrap_or(0);
            cohorts.push(Cohort {
                start,
                members,
                active: vec![0; periods],
            });
        }
        let (Some(period), Some(active), Some(cohort)) = (period, active, cohorts.last_mut())
        else {
            continue;
        };
        let k = window.period.between(start, period);
        if let Some(cell) = usize::try_from(k)
            .ok()
            .and_then(|k| cohort.active.get_mut(k))
        {
            *cell = active;
        }
    }
    Ok(cohorts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::period::Period;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn a_cohort_sees_its_periods_up_to_the_current_one() {
        let window = Window {
            period: Period::Month,
            first: d(2026, 1, 1),
            count: 4,
        };
        let current = d(2026, 3, 1);
        let seen: Vec<i64> = window.starts().map(|s| seen(&window, s, current)).collect();
        assert_eq!(seen, [3, 2, 1, 0], "April is in the future");
        assert!(check_size(&window, current, "to").is_ok());
    }

    #[test]
    fn retention_divides_by_the_cohort() {
        let c = Cohort {
            start: d(2026, 1, 1),
            members: 4,
            active: vec![4, 1, 0],
        };
        assert_eq!(c.retention(), [1.0, 0.25, 0.0]);
        let empty = Cohort {
            members: 0,
            active: vec![0],
            ..c
        };
        assert_eq!(empty.retention(), [0.0]);
    }

    #[test]
    fn a_table_too_large_is_refused() {
        let window = Window {
            period: Period::Day,
            first: d(2020, 1, 1),
            count: 1_000,
        };
        let err = check_size(&window, d(2026, 1, 1), "to").unwrap_err();
        assert!(matches!(err, AnalyticsError::Invalid(v) if v.fields() == ["to"]));
    }
}
