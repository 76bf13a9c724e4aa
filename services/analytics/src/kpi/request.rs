//! Requests for KPIs and cohorts, checked field by field into domain
//! values before anything is read.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::error::Violations;

use super::{
    filter::{self, Filter},
    period::{Period, Window},
};
use crate::error::AnalyticsError;

/// Most periods one KPI request (or cohorts one table) may span.
pub const MAX_PERIODS: i64 = 1_000;

/// A checked `GetKpiRequest`.
#[derive(Clone, Debug, PartialEq)]
pub struct KpiRequest {
    /// The KPI (never UNSPECIFIED).
    pub kpi: pb::Kpi,
    /// Period length.
    pub period: Period,
    /// First instant asked for.
    pub from: DateTime<Utc>,
    /// Instant after the last asked for.
    pub to: DateTime<Utc>,
    /// Filter.
    pub filter: Filter,
    /// Path of the request in its message ("" or "kpi."), for error fields.
    pub prefix: &'static str,
}

/// A checked `GetCohortRetentionRequest`.
#[derive(Clone, Debug, PartialEq)]
pub struct CohortRequest {
    /// Cohort and offset length (month when unset).
    pub period: Period,
    /// First cohort's instant.
    pub from: DateTime<Utc>,
    /// Instant after the last cohort's.
    pub to: DateTime<Utc>,
    /// Filter: channel and store narrow purchases, tier the members.
    pub filter: Filter,
    /// Path of the request in its message.
    pub prefix: &'static str,
}

/// A protobuf time as an instant in whole microseconds, or a violation.
pub fn instant(
    t: Option<&prost_types::Timestamp>,
    field: String,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    let Some(t) = t else {
        v.add(field, "required");
        return None;
    };
    let at = u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .and_then(|at| DateTime::from_timestamp_micros(at.timestamp_micros()));
    if at.is_none() {
        v.add(field, "not a valid time");
    }
    at
}

/// The KPI of a request; `None` (with a violation) when unset or unknown.
pub fn kpi(raw: i32, field: String, v: &mut Violations) -> Option<pb::Kpi> {
    let kpi = pb::Kpi::try_from(raw)
        .ok()
        .filter(|k| *k != pb::Kpi::Unspecified);
    if kpi.is_none() {
        v.add(field, "required: a KPI");
    }
    kpi
}

/// The period of a request; `None` (with a violation) when unset or
/// unknown.
pub fn period(raw: i32, field: String, v: &mut Violations) -> Option<Period> {
    let period = Period::from_pb(raw);
    if period.is_none() {
        v.add(field, "required: DAY, WEEK, MONTH, QUARTER or YEAR");
    }
    period
}

fn range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
    prefix: &str,
    v: &mut Violations,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let from = instant(from, format!("{prefix}from"), v);
    let to = instant(to, format!("{prefix}to"), v);
    let (from, to) = (from?, to?);
    if to <= from {
        v.add(format!("{prefix}to"), "must be after from");
        return None;
    }
    Some((from, to))
}

impl KpiRequest {
    /// Checks `r`, found at `prefix` in its message.
    pub fn check(r: &pb::GetKpiRequest, prefix: &'static str, v: &mut Violations) -> Option<Self> {
        let pb::GetKpiRequest {
            kpi: raw_kpi,
            period: raw_period,
            from,
            to,
            filter: raw_filter,
        } = r;
        let kpi = kpi(*raw_kpi, format!("{prefix}kpi"), v);
        let period = period(*raw_period, format!("{prefix}period"), v);
        let range = range(from.as_ref(), to.as_ref(), prefix, v);
        let narrows = kpi.map_or(
            filter::Narrows {
                purchases: true,
                members: true,
            },
            filter::narrows,
        );
        let filter = filter::check(raw_filter.as_ref(), narrows, &format!("{prefix}filter"), v);
        let (from, to) = range?;
        Some(Self {
            kpi: kpi?,
            period: period?,
            from,
            to,
            filter,
            prefix,
        })
    }

    /// The periods asked for in `tz`, at most [`MAX_PERIODS`].
    pub fn window(&self, tz: Tz) -> Result<Window, AnalyticsError> {
        bounded_window(self.period, tz, self.from, self.to, self.prefix)
    }
}

impl CohortRequest {
    /// Checks `r`, found at `prefix` in its message.
    pub fn check(
        r: &pb::GetCohortRetentionRequest,
        prefix: &'static str,
        v: &mut Violations,
    ) -> Option<Self> {
        let pb::GetCohortRetentionRequest {
            period: raw_period,
            from,
            to,
            filter: raw_filter,
        } = r;
        let period = if *raw_period == pb::Period::Unspecified as i32 {
            Some(Period::Month)
        } else {
            period(*raw_period, format!("{prefix}period"), v)
        };
        let range = range(from.as_ref(), to.as_ref(), prefix, v);
        let narrows = filter::Narrows {
            purchases: true,
            members: true,
        };
        let filter = filter::check(raw_filter.as_ref(), narrows, &format!("{prefix}filter"), v);
        let (from, to) = range?;
        Some(Self {
            period: period?,
            from,
            to,
            filter,
            prefix,
        })
    }

    /// The cohorts asked for in `tz`, at most [`MAX_PERIODS`].
    pub fn window(&self, tz: Tz) -> Result<Window, AnalyticsError> {
        bounded_window(self.period, tz, self.from, self.to, self.prefix)
    }
}

fn bounded_window(
    period: Period,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    prefix: &str,
) -> Result<Window, AnalyticsError> {
    let field = format!("{prefix}to");
    let window = Window::covering(period, tz, from, to)
        .ok_or_else(|| AnalyticsError::field(&field, "must be after from"))?;
    if window.count > MAX_PERIODS || window.end().is_none() {
        return Err(AnalyticsError::field(
            &field,
            format!("at most {MAX_PERIODS} periods: narrow the range or use a longer period"),
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ts(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: 0,
        })
    }

    #[test]
    fn every_missing_or_wrong_field_is_named() {
        let mut v = Violations::new();
        let r = pb::GetKpiRequest {
            from: ts(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()),
            to: ts(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            ..Default::default()
        };
        assert!(KpiRequest::check(&r, "", &mut v).is_none());
        assert_eq!(v.fields(), ["kpi", "period", "to"]);
        let mut v = Violations::new();
        assert!(KpiRequest::check(&pb::GetKpiRequest::default(), "kpi.", &mut v).is_none());
        assert_eq!(v.fields(), ["kpi.kpi", "kpi.period", "kpi.from", "kpi.to"]);
    }

    #[test]
    fn more_than_a_thousand_periods_is_refused_on_to() {
        let r = KpiRequest {
            kpi: pb::Kpi::NewMembers,
            period: Period::Day,
            from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(1_000),
            filter: Filter::default(),
            prefix: "",
        };
        assert_eq!(r.window(chrono_tz::UTC).unwrap().count, 1_000);
        let longer = KpiRequest {
            to: r.to + chrono::Duration::days(1),
            ..r
        };
        let AnalyticsError::Invalid(v) = longer.window(chrono_tz::UTC).unwrap_err() else {
            panic!("a violation");
        };
        assert_eq!(v.fields(), ["to"]);
    }

    #[test]
    fn cohorts_default_to_months() {
        let mut v = Violations::new();
        let r = pb::GetCohortRetentionRequest {
            from: ts(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            to: ts(Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()),
            ..Default::default()
        };
        let c = CohortRequest::check(&r, "", &mut v).unwrap();
        assert_eq!(c.period, Period::Month);
        assert_eq!(c.window(chrono_tz::UTC).unwrap().count, 3);
    }
}
