//! One SQL statement per KPI: the window's periods from `generate_series`,
//! LEFT JOINed to the facts aggregated by period, so every period is
//! present (zero-filled). Money is summed in Postgres' `numeric` (no
//! overflow) and leaves as `float8`, like the KPI values it makes.
//!
//! Definitions (the proto's, made precise):
//! - members are the `members` rows not merged into another; a member
//!   enrolled in the local day of `enrolled_at`; tier is the tier now;
//! - purchases count only in the programme's currency; a purchase's net
//!   amount is its total less what was refunded of it, on the purchase's
//!   day (as the member figures count it); a member purchase is any
//!   purchase that is not a guest's (an erased member's stays one, but
//!   has no member to count as a head or a tier);
//! - points follow `facts::points`: issued = earn + reverse_earn,
//!   redeemed = -(redeem + reverse_redemption), expired = -expire; other
//!   movements (merges) move no KPI;
//! - cumulative KPIs (liability, breakage, the active rate's members
//!   enrolled so far) count every fact before the window in its first
//!   period's running sum.

use chrono::NaiveDate;
use laurel_proto::analytics::v1 as pb;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{filter::Filter, period::Window, period::day_start};
use crate::settings::Settings;

/// How a KPI's value follows from its numerator and denominator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A count or a sum: the value is the numerator, the denominator 1.
    Total,
    /// A ratio: numerator / denominator, 0 when the denominator is 0.
    Ratio,
    /// A percentage point difference (NPS): 100 x numerator / denominator.
    Percent,
}

/// The shape of `kpi`.
pub fn shape(kpi: pb::Kpi) -> Shape {
    use pb::Kpi as K;
    match kpi {
        K::Unspecified
        | K::NewMembers
        | K::PointsIssued
        | K::PointsRedeemed
        | K::PointsExpired
        | K::PointsLiability
        | K::MemberSpend
        | K::MemberOrders => Shape::Total,
        K::ActiveRate
        | K::RepurchaseRate
        | K::MemberSpendPerHead
        | K::GuestSpendPerHead
        | K::RenewalRate
        | K::Satisfaction
        | K::BreakageRate => Shape::Ratio,
        K::Nps => Shape::Percent,
    }
}

/// A KPI's value in one period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// First local day of the period.
    pub start: NaiveDate,
    /// Value.
    pub value: f64,
    /// Numerator behind it.
    pub numerator: f64,
    /// Denominator behind it (1 for totals).
    pub denominator: f64,
}

impl Point {
    /// The point of `shape` from its numerator and denominator.
    pub fn new(shape: Shape, start: NaiveDate, numerator: f64, denominator: f64) -> Self {
        let ratio = |scale: f64| {
            if denominator == 0.0 {
                0.0
            } else {
                scale * numerator / denominator
            }
        };
        let (value, denominator) = match shape {
            Shape::Total => (numerator, 1.0),
            Shape::Ratio => (ratio(1.0), denominator),
            Shape::Percent => (ratio(100.0), denominator),
        };
        Self {
            start,
            value,
            numerator,
            denominator,
        }
    }

    /// As sent over gRPC, the start at local midnight in `tz`.
    pub fn to_pb(&self, tz: chrono_tz::Tz) -> pb::KpiPoint {
        pb::KpiPoint {
            period_start: Some(crate::metrics::ts(day_start(tz, self.start))),
            value: self.value,
            numerator: self.numerator,
            denominator: self.denominator,
        }
    }
}

/// What every statement of one request shares.
struct Scope<'a> {
    program: &'a str,
    settings: &'a Settings,
    window: Window,
    last: NaiveDate,
    end: NaiveDate,
    filter: &'a Filter,
}

type Sql<'a> = QueryBuilder<'a, Postgres>;

impl<'a> Scope<'a> {
    /// `date_trunc` of a timestamp expression to its period's first day.
    fn bucket(&self, timestamp: &str) -> String {
        format!(
            "date_trunc('{}', {timestamp})::date",
            self.window.period.sql_unit()
        )
    }

    /// The CTE of the window's periods, opening the statement.
    fn periods(&self) -> Sql<'a> {
        let mut q = Sql::new("WITH periods AS (SELECT s::date AS start FROM generate_series(");
        q.push_bind(self.window.first)
            .push("::timestamp, ")
            .push_bind(self.last)
            .push(format_args!(
                "::timestamp, '{}'::interval) s)",
                self.window.period.sql_step()
            ));
        q
    }

    /// `alias`'s facts of the programme on days inside the window.
    fn days(&self, q: &mut Sql<'a>, alias: &str) {
        q.push(format_args!(" {alias}.program_id = "))
            .push_bind(self.program)
            .push(format_args!(" AND {alias}.day >= "))
            .push_bind(self.window.first)
            .push(format_args!(" AND {alias}.day < "))
            .push_bind(self.end);
    }

    /// Purchases in the programme's currency, channel and store.
    fn purchase_filter(&self, q: &mut Sql<'a>) {
        q.push(" AND p.currency_code = ")
            .push_bind(self.settings.currency.as_str());
        if !self.filter.channel.is_empty() {
            q.push(" AND p.channel = ")
                .push_bind(self.filter.channel.as_str());
        }
        if !self.filter.store_id.is_empty() {
            q.push(" AND p.store_id = ")
                .push_bind(self.filter.store_id.as_str());
        }
    }

    /// Joins `alias`'s member as `m` when a tier filters.
    fn tier_join(&self, q: &mut Sql<'a>, alias: &str) {
        if !self.filter.tier_code.is_empty() {
            q.push(format_args!(
                " JOIN members m ON m.program_id = {alias}.program_id AND m.member_id = {alias}.member_id AND m.tier_code = "
            ))
            .push_bind(self.filter.tier_code.as_str());
        }
    }

    /// `AND m.tier_code = ...` when a tier filters (`m` already joined).
    fn tier_condition(&self, q: &mut Sql<'a>) {
        if !self.filter.tier_code.is_empty() {
            q.push(" AND m.tier_code = ")
                .push_bind(self.filter.tier_code.as_str());
        }
    }

    /// The local time of `m.enrolled_at`.
    fn enrolled_local(&self, q: &mut Sql<'a>) {
        q.push("(m.enrolled_at AT TIME ZONE ")
            .push_bind(self.settings.tz.name())
            .push(")");
    }

    /// The closing SELECT over an `agg (start, num, den)` CTE.
    fn select_agg(q: &mut Sql<'a>) {
        q.push(
            " SELECT periods.start, COALESCE(a.num, 0)::float8, COALESCE(a.den, 0)::float8
              FROM periods LEFT JOIN agg a ON a.start = periods.start ORDER BY periods.start",
        );
    }

    /// An `agg` CTE over purchases `p` with `aggregates` (num, den) and
    /// `only` (extra conditions).
    fn purchases_agg(&self, aggregates: &str, only: &str) -> Sql<'a> {
        let mut q = self.periods();
        q.push(format_args!(
            ", agg AS (SELECT {} AS start, {aggregates} FROM purchases p",
            self.bucket("p.day::timestamp")
        ));
        self.tier_join(&mut q, "p");
        q.push(" WHERE");
        self.days(&mut q, "p");
        self.purchase_filter(&mut q);
        q.push(format_args!(" {only} GROUP BY 1)"));
        Self::select_agg(&mut q);
        q
    }

    /// An `agg` CTE over `table` aliased `x` with `aggregates` and `only`.
    fn facts_agg(&self, table: &str, aggregates: &str, only: &str) -> Sql<'a> {
        let mut q = self.periods();
        q.push(format_args!(
            ", agg AS (SELECT {} AS start, {aggregates} FROM {table} x",
            self.bucket("x.day::timestamp")
        ));
        self.tier_join(&mut q, "x");
        q.push(" WHERE");
        self.days(&mut q, "x");
        q.push(format_args!(" {only} GROUP BY 1)"));
        Self::select_agg(&mut q);
        q
    }

    /// Every movement that moves a points KPI up to the window's end,
    /// summed by period (those before the window in its first) with
    /// `aggregates` (outstanding, redeemed, expired), then accumulated into
    /// `running (start, outstanding, redeemed, expired)`. It reads the
    /// programme's whole history: liability has no shorter definition.
    fn cumulative_points(&self, aggregates: &str) -> Sql<'a> {
        let mut q = self.periods();
        q.push(format_args!(
            ", moved AS (SELECT GREATEST({}, ",
            self.bucket("x.day::timestamp")
        ))
        .push_bind(self.window.first)
        .push(format_args!(
            ") AS start, {aggregates} FROM points_movements x"
        ));
        self.tier_join(&mut q, "x");
        q.push(" WHERE x.program_id = ")
            .push_bind(self.program)
            .push(" AND x.day < ")
            .push_bind(self.end)
            .push(
                " AND x.kind IN ('earn', 'reverse_earn', 'redeem', 'reverse_redemption', 'expire')
                 GROUP BY 1),
                 running AS (SELECT periods.start,
                   sum(COALESCE(moved.outstanding, 0)) OVER w AS outstanding,
                   sum(COALESCE(moved.redeemed, 0)) OVER w AS redeemed,
                   sum(COALESCE(moved.expired, 0)) OVER w AS expired
                   FROM periods LEFT JOIN moved ON moved.start = periods.start
                   WINDOW w AS (ORDER BY periods.start))",
            );
        q
    }

    fn new_members(&self) -> Sql<'a> {
        let mut q = self.periods();
        q.push(", agg AS (SELECT date_trunc(")
            .push(format_args!("'{}', ", self.window.period.sql_unit()));
        self.enrolled_local(&mut q);
        q.push(")::date AS start, count(*) AS num, 1 AS den FROM members m WHERE m.program_id = ")
            .push_bind(self.program)
            .push(" AND m.status <> 'merged' AND m.enrolled_at >= ")
            .push_bind(day_start(self.settings.tz, self.window.first))
            .push(" AND m.enrolled_at < ")
            .push_bind(day_start(self.settings.tz, self.end));
        self.tier_condition(&mut q);
        q.push(" GROUP BY 1)");
        Self::select_agg(&mut q);
        q
    }

    /// Members who bought in the period (enrolled by its end) over members
    /// enrolled by its end.
    fn active_rate(&self) -> Sql<'a> {
        let unit = self.window.period.sql_unit();
        let step = self.window.period.sql_step();
        let mut q = self.periods();
        q.push(format_args!(
            ", active AS (SELECT {} AS start, count(DISTINCT p.member_id) AS n
               FROM purchases p JOIN members m ON m.program_id = p.program_id AND m.member_id = p.member_id
               WHERE",
            self.bucket("p.day::timestamp")
        ));
        self.days(&mut q, "p");
        self.purchase_filter(&mut q);
        self.tier_condition(&mut q);
        q.push(" AND m.status <> 'merged' AND ");
        self.enrolled_local(&mut q);
        q.push(format_args!(
            "::date < (date_trunc('{unit}', p.day::timestamp) + '{step}'::interval)::date GROUP BY 1),
             enrolled AS (SELECT GREATEST(date_trunc('{unit}', "
        ));
        self.enrolled_local(&mut q);
        q.push(")::date, ")
            .push_bind(self.window.first)
            .push(") AS start, count(*) AS n FROM members m WHERE m.program_id = ")
            .push_bind(self.program)
            .push(" AND m.status <> 'merged' AND m.enrolled_at < ")
            .push_bind(day_start(self.settings.tz, self.end));
        self.tier_condition(&mut q);
        q.push(
            " GROUP BY 1)
             SELECT periods.start, COALESCE(active.n, 0)::float8,
                    (sum(COALESCE(enrolled.n, 0)) OVER (ORDER BY periods.start))::float8
             FROM periods
             LEFT JOIN active ON active.start = periods.start
             LEFT JOIN enrolled ON enrolled.start = periods.start
             ORDER BY periods.start",
        );
        q
    }

    /// Of the members who bought in the period, those who bought on two or
    /// more distinct days of it.
    fn repurchase_rate(&self) -> Sql<'a> {
        let mut q = self.periods();
        q.push(format_args!(
            ", buyers AS (SELECT {} AS start, p.member_id, count(DISTINCT p.day) AS days
               FROM purchases p",
            self.bucket("p.day::timestamp")
        ));
        self.tier_join(&mut q, "p");
        q.push(" WHERE");
        self.days(&mut q, "p");
        self.purchase_filter(&mut q);
        q.push(
            " AND p.member_id IS NOT NULL GROUP BY 1, 2),
             agg AS (SELECT start, count(*) FILTER (WHERE days >= 2) AS num, count(*) AS den
                     FROM buyers GROUP BY 1)",
        );
        Self::select_agg(&mut q);
        q
    }

    fn statement(&self, kpi: pb::Kpi) -> Sql<'a> {
        use pb::Kpi as K;
        const NET: &str = "sum(p.total_minor - p.refunded_minor)";
        const MOVED: &str =
            "-sum(x.points) FILTER (WHERE x.kind IN ('redeem', 'reverse_redemption')) AS redeemed,
             -sum(x.points) FILTER (WHERE x.kind = 'expire') AS expired,
             sum(x.points) AS outstanding";
        match kpi {
            K::Unspecified | K::NewMembers => self.new_members(),
            K::ActiveRate => self.active_rate(),
            K::RepurchaseRate => self.repurchase_rate(),
            K::MemberSpendPerHead => self.purchases_agg(
                &format!("{NET} AS num, count(DISTINCT p.member_id) AS den"),
                "AND p.member_id IS NOT NULL",
            ),
            K::GuestSpendPerHead => {
                self.purchases_agg(&format!("{NET} AS num, count(*) AS den"), "AND p.guest")
            }
            K::MemberSpend => self.purchases_agg(&format!("{NET} AS num, 1 AS den"), "AND NOT p.guest"),
            K::MemberOrders => self.purchases_agg("count(*) AS num, 1 AS den", "AND NOT p.guest"),
            K::RenewalRate => self.facts_agg(
                "subscription_events",
                "count(*) FILTER (WHERE x.kind = 'renewed') AS num,
                 count(*) FILTER (WHERE x.kind = 'due') AS den",
                "AND x.kind IN ('renewed', 'due')",
            ),
            K::Nps => self.facts_agg(
                "feedback",
                "count(*) FILTER (WHERE x.score >= 9) - count(*) FILTER (WHERE x.score <= 6) AS num,
                 count(*) AS den",
                "AND x.kind = 'nps'",
            ),
            K::Satisfaction => self.facts_agg(
                "feedback",
                "sum(x.score) AS num, count(*) AS den",
                "AND x.kind = 'nps'",
            ),
            K::PointsIssued => self.facts_agg(
                "points_movements",
                "sum(x.points) AS num, 1 AS den",
                "AND x.kind IN ('earn', 'reverse_earn')",
            ),
            K::PointsRedeemed => self.facts_agg(
                "points_movements",
                "-sum(x.points) AS num, 1 AS den",
                "AND x.kind IN ('redeem', 'reverse_redemption')",
            ),
            K::PointsExpired => self.facts_agg(
                "points_movements",
                "-sum(x.points) AS num, 1 AS den",
                "AND x.kind = 'expire'",
            ),
            K::PointsLiability => {
                let mut q = self.cumulative_points(MOVED);
                q.push(
                    " SELECT start, outstanding::float8, 1::float8 FROM running ORDER BY start",
                );
                q
            }
            K::BreakageRate => {
                let mut q = self.cumulative_points(MOVED);
                q.push(
                    " SELECT start, expired::float8, (redeemed + expired)::float8
                      FROM running ORDER BY start",
                );
                q
            }
        }
    }
}

/// `kpi` in every period of `window`, oldest first, with `filter` (checked
/// against the KPI already).
pub async fn series(
    conn: &mut PgConnection,
    program: &str,
    settings: &Settings,
    kpi: pb::Kpi,
    window: Window,
    filter: &Filter,
) -> Result<Vec<Point>, sqlx::Error> {
    let (Some(last), Some(end)) = (window.last(), window.end()) else {
        return Ok(Vec::new());
    };
    let scope = Scope {
        program,
        settings,
        window,
        last,
        end,
        filter,
    };
    let mut statement = scope.statement(kpi);
    let rows: Vec<(NaiveDate, f64, f64)> = statement.build_query_as().fetch_all(conn).await?;
    let shape = shape(kpi);
    Ok(rows
        .into_iter()
        .map(|(start, num, den)| Point::new(shape, start, num, den))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_shape_and_an_empty_denominator_gives_zero() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let total = Point::new(Shape::Total, day, 7.0, 0.0);
        assert_eq!((total.value, total.denominator), (7.0, 1.0));
        assert_eq!(Point::new(Shape::Ratio, day, 1.0, 4.0).value, 0.25);
        assert_eq!(Point::new(Shape::Ratio, day, 0.0, 0.0).value, 0.0);
        // 3 promoters, 1 detractor of 5 answers: (3 - 1) / 5 = 40.
        assert_eq!(Point::new(Shape::Percent, day, 2.0, 5.0).value, 40.0);
    }
}
