//! A programme's points settings: defaults, validation, storage, and the
//! expiry date of a new lot.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use laurel_proto::points::v1 as pb;
use laurel_runtime::error::Violations;
use prost::Message;
use sqlx::{PgConnection, PgPool};

use crate::ledger::ops::ReversalPolicy;

/// The settings a programme gets until it sets its own.
pub fn defaults() -> pb::ProgramSettings {
    pb::ProgramSettings {
        currency_code: String::new(),
        validity_days: 365,
        expiry_rounding: pb::ExpiryRounding::None as i32,
        time_zone: "UTC".into(),
        pending_days: 0,
        reminder_days: 30,
        reversal_policy: pb::ReversalPolicy::ClawBackRemaining as i32,
        discount_minor_per_unit: 1,
        points_per_unit: 1,
        min_redeem_points: 1,
        max_order_share_bp: 10_000,
        default_hold_timeout_seconds: 900,
    }
}

/// Checks settings; fields are named under `settings.`.
pub fn validate(s: &pb::ProgramSettings) -> Result<(), Violations> {
    let mut v = Violations::new();
    if !s.currency_code.is_empty() && iso_currency::Currency::from_code(&s.currency_code).is_none()
    {
        v.add(
            "settings.currency_code",
            "an ISO 4217 code such as EUR, or empty for any",
        );
    }
    v.check(
        !(0..=36_500).contains(&s.validity_days),
        "settings.validity_days",
        "0 (never expire) to 36500 days",
    );
    v.check(
        pb::ExpiryRounding::try_from(s.expiry_rounding).is_err(),
        "settings.expiry_rounding",
        "unknown value",
    );
    if !s.time_zone.is_empty() && s.time_zone.parse::<chrono_tz::Tz>().is_err() {
        v.add(
            "settings.time_zone",
            "an IANA time zone such as Europe/Berlin",
        );
    }
    v.check(
        !(0..=365).contains(&s.pending_days),
        "settings.pending_days",
        "0 to 365 days",
    );
    v.check(
        !(0..=365).contains(&s.reminder_days),
        "settings.reminder_days",
        "0 to 365 days",
    );
    v.check(
        pb::ReversalPolicy::try_from(s.reversal_policy).is_err(),
        "settings.reversal_policy",
        "unknown value",
    );
    v.check(
        !(1..=1_000_000_000).contains(&s.discount_minor_per_unit),
        "settings.discount_minor_per_unit",
        "1 to 10^9",
    );
    v.check(
        !(1..=1_000_000_000).contains(&s.points_per_unit),
        "settings.points_per_unit",
        "1 to 10^9",
    );
    v.check(
        !(1..=1_000_000_000_000).contains(&s.min_redeem_points),
        "settings.min_redeem_points",
        "1 to 10^12",
    );
    v.check(
        !(1..=10_000).contains(&s.max_order_share_bp),
        "settings.max_order_share_bp",
        "1 to 10000 basis points",
    );
    v.check(
        !(1..=604_800).contains(&s.default_hold_timeout_seconds),
        "settings.default_hold_timeout_seconds",
        "1 second to 7 days",
    );
    v.finish()
}

/// Settings with their derived values.
#[derive(Clone, Debug)]
pub struct Settings {
    /// As stored.
    pub proto: pb::ProgramSettings,
    /// Time zone for period ends.
    pub tz: chrono_tz::Tz,
}

impl Settings {
    /// From stored (valid) settings.
    pub fn new(proto: pb::ProgramSettings) -> Self {
        let tz = proto.time_zone.parse().unwrap_or(chrono_tz::UTC);
        Self { proto, tz }
    }

    /// The programme's local day of `at` (in its time zone): the day daily
    /// caps and limits count in.
    pub fn day(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// The refund policy.
    pub fn reversal_policy(&self) -> ReversalPolicy {
        match pb::ReversalPolicy::try_from(self.proto.reversal_policy) {
            Ok(pb::ReversalPolicy::AllowNegative) => ReversalPolicy::AllowNegative,
            Ok(pb::ReversalPolicy::CancelPendingOnly) => ReversalPolicy::CancelPendingOnly,
            _ => ReversalPolicy::ClawBackRemaining,
        }
    }

    /// When an order's points become available.
    pub fn available_from(&self, earned_at: DateTime<Utc>) -> DateTime<Utc> {
        earned_at + chrono::Duration::days(i64::from(self.proto.pending_days))
    }

    /// When points earned at `earned_at` expire.
    pub fn expires_at(&self, earned_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        expires_at(
            earned_at,
            self.proto.validity_days,
            pb::ExpiryRounding::try_from(self.proto.expiry_rounding)
                .unwrap_or(pb::ExpiryRounding::None),
            self.tz,
        )
    }

    /// The discount `points` buy, in minor units (rounded down).
    pub fn discount(&self, points: i64) -> Option<i64> {
        let d = i128::from(points) * i128::from(self.proto.discount_minor_per_unit)
            / i128::from(self.proto.points_per_unit);
        i64::try_from(d).ok()
    }

    /// Default hold timeout.
    pub fn hold_timeout(&self) -> Duration {
        Duration::from_secs(self.proto.default_hold_timeout_seconds.max(1) as u64)
    }
}

/// The expiry of a lot: `validity_days` after earning, moved to the end of
/// its month, quarter or year (in `tz`) when the programme says so; the
/// returned instant is the first moment after that end, when the points are
/// gone. `None` when points never expire (`validity_days` 0).
pub fn expires_at(
    earned_at: DateTime<Utc>,
    validity_days: i32,
    rounding: pb::ExpiryRounding,
    tz: chrono_tz::Tz,
) -> Option<DateTime<Utc>> {
    if validity_days <= 0 {
        return None;
    }
    let end = earned_at + chrono::Duration::days(i64::from(validity_days));
    let local = end.with_timezone(&tz).date_naive();
    let (year, month) = (local.year(), local.month());
    let next_start = |y: i32, m: u32| -> Option<NaiveDate> {
        if m > 12 {
            NaiveDate::from_ymd_opt(y + 1, m - 12, 1)
        } else {
            NaiveDate::from_ymd_opt(y, m, 1)
        }
    };
    let boundary = match rounding {
        pb::ExpiryRounding::EndOfMonth => next_start(year, month + 1),
        pb::ExpiryRounding::EndOfQuarter => next_start(year, (month - 1) / 3 * 3 + 4),
        pb::ExpiryRounding::EndOfYear => NaiveDate::from_ymd_opt(year + 1, 1, 1),
        _ => return Some(end),
    }?;
    let midnight = boundary.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Settings per programme, read through a short-lived in-process cache.
#[derive(Clone)]
pub struct SettingsStore {
    cache: moka::sync::Cache<String, Arc<Settings>>,
}

impl std::fmt::Debug for SettingsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsStore").finish_non_exhaustive()
    }
}

impl Default for SettingsStore {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }
}

impl SettingsStore {
    /// The programme's settings (defaults until set). Other replicas see a
    /// change within five seconds.
    pub async fn get(&self, pool: &PgPool, program: &str) -> Result<Arc<Settings>, sqlx::Error> {
        if let Some(s) = self.cache.get(program) {
            return Ok(s);
        }
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT settings FROM program_settings WHERE program_id = $1")
                .bind(program)
                .fetch_optional(pool)
                .await?;
        let proto = stored
            .and_then(|b| pb::ProgramSettings::decode(b.as_slice()).ok())
            .unwrap_or_else(defaults);
        let settings = Arc::new(Settings::new(proto));
        self.cache.insert(program.to_owned(), settings.clone());
        Ok(settings)
    }

    /// Stores new settings.
    pub async fn put(
        &self,
        conn: &mut PgConnection,
        program: &str,
        settings: &pb::ProgramSettings,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO program_settings (program_id, settings, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (program_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at",
        )
        .bind(program)
        .bind(settings.encode_to_vec())
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Drops this replica's copy after a change has committed.
    pub fn forget(&self, program: &str) {
        self.cache.invalidate(program);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_period_and_period_ends() {
        let earned = at("2026-03-10T15:00:00Z");
        assert_eq!(
            expires_at(earned, 30, pb::ExpiryRounding::None, chrono_tz::UTC),
            Some(at("2026-04-09T15:00:00Z"))
        );
        assert_eq!(
            expires_at(earned, 30, pb::ExpiryRounding::EndOfMonth, chrono_tz::UTC),
            Some(at("2026-05-01T00:00:00Z"))
        );
        assert_eq!(
            expires_at(earned, 30, pb::ExpiryRounding::EndOfQuarter, chrono_tz::UTC),
            Some(at("2026-07-01T00:00:00Z"))
        );
        assert_eq!(
            expires_at(earned, 365, pb::ExpiryRounding::EndOfYear, chrono_tz::UTC),
            Some(at("2028-01-01T00:00:00Z"))
        );
        assert_eq!(
            expires_at(
                at("2026-11-20T00:00:00Z"),
                30,
                pb::ExpiryRounding::EndOfQuarter,
                chrono_tz::UTC
            ),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            expires_at(earned, 0, pb::ExpiryRounding::EndOfYear, chrono_tz::UTC),
            None
        );
    }

    #[test]
    fn period_ends_in_the_programme_time_zone() {
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        // 2026-12-31T20:00Z is already 2027-01-01 in Shanghai.
        let got = expires_at(
            at("2026-12-30T20:00:00Z"),
            1,
            pb::ExpiryRounding::EndOfYear,
            tz,
        );
        assert_eq!(got, Some(at("2027-12-31T16:00:00Z")));
    }
}
