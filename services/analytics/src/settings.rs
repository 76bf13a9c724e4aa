//! A programme's analytics settings: its currency, time zone and model
//! parameters, with defaults, validation and a short-lived local copy
//! (the consumer needs the time zone for every fact).
//!
//! Changing the time zone moves every stored fact to its day in the new
//! zone and rebuilds the per-member figures from the facts.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey, check_request_id},
};
use sqlx::PgConnection;

use crate::{Analytics, error::AnalyticsError, facts::spend};

/// How long a replica trusts its copy of a programme's settings.
const TTL: Duration = Duration::from_secs(2);

/// Settings as evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// ISO 4217 code.
    pub currency: String,
    /// Time zone of days.
    pub tz: Tz,
    /// RFM levels.
    pub rfm_bins: u8,
    /// Days of RFM's active population.
    pub active_days: i32,
    /// Expected lifespan, years (historical CLV).
    pub lifespan_years: f64,
    /// Rhythm of a member with one purchase day, days.
    pub default_rhythm_days: i32,
    /// Annual discount rate, basis points.
    pub annual_discount_bp: i32,
}

impl Settings {
    /// The local day of `at`.
    pub fn day(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// Local midnight of `day` in the settings' zone (the first instant
    /// of the day where daylight saving skips midnight), as UTC.
    pub fn tz_midnight(&self, day: NaiveDate) -> DateTime<Utc> {
        crate::kpi::period::day_start(self.tz, day)
    }

    /// As sent over gRPC.
    pub fn to_pb(&self) -> pb::Settings {
        pb::Settings {
            currency_code: self.currency.clone(),
            time_zone: self.tz.name().to_owned(),
            rfm_bins: i32::from(self.rfm_bins),
            active_days: self.active_days,
            expected_lifespan_years: self.lifespan_years,
            default_rhythm_days: self.default_rhythm_days,
            annual_discount_bp: self.annual_discount_bp,
        }
    }
}

/// The day of `at` under `settings`, UTC before any.
pub fn day_of(settings: Option<&Settings>, at: DateTime<Utc>) -> NaiveDate {
    settings.map_or(at.date_naive(), |s| s.day(at))
}

/// Validates `s`, filling defaults for unset numbers.
pub fn validate(s: &pb::Settings, v: &mut Violations) -> Option<Settings> {
    let currency = s.currency_code.trim().to_ascii_uppercase();
    if iso_currency::Currency::from_code(&currency).is_none() {
        v.add(
            "settings.currency_code",
            "required: an ISO 4217 code, for example EUR",
        );
    }
    let zone = if s.time_zone.trim().is_empty() {
        "UTC"
    } else {
        s.time_zone.trim()
    };
    let tz = zone.parse::<Tz>().ok();
    if tz.is_none() {
        v.add(
            "settings.time_zone",
            "an IANA time zone, for example Europe/Paris",
        );
    }
    let or = |x: i32, default: i32| if x == 0 { default } else { x };
    let bins = or(s.rfm_bins, 5);
    if !(2..=10).contains(&bins) {
        v.add("settings.rfm_bins", "from 2 to 10");
    }
    let active_days = or(s.active_days, 365);
    if !(1..=3650).contains(&active_days) {
        v.add("settings.active_days", "from 1 to 3650");
    }
    let lifespan = if s.expected_lifespan_years == 0.0 {
        3.0
    } else {
        s.expected_lifespan_years
    };
    if !(lifespan > 0.0 && lifespan <= 50.0) {
        v.add(
            "settings.expected_lifespan_years",
            "more than 0, at most 50",
        );
    }
    let rhythm = or(s.default_rhythm_days, 90);
    if !(1..=3650).contains(&rhythm) {
        v.add("settings.default_rhythm_days", "from 1 to 3650");
    }
    let discount = if s.annual_discount_bp == 0 {
        1000
    } else {
        s.annual_discount_bp
    };
    if !(0..=10_000).contains(&discount) {
        v.add("settings.annual_discount_bp", "from 0 to 10000");
    }
    Some(Settings {
        currency,
        tz: tz?,
        rfm_bins: u8::try_from(bins).ok().filter(|b| (2..=10).contains(b))?,
        active_days,
        lifespan_years: lifespan,
        default_rhythm_days: rhythm,
        annual_discount_bp: discount,
    })
}

type Row = (String, String, i32, i32, f64, i32, i32);

fn from_row(r: Row) -> Option<Settings> {
    Some(Settings {
        currency: r.0,
        tz: r.1.parse().ok()?,
        rfm_bins: u8::try_from(r.2).ok()?,
        active_days: r.3,
        lifespan_years: r.4,
        default_rhythm_days: r.5,
        annual_discount_bp: r.6,
    })
}

/// The stored settings of `program`.
pub async fn read(conn: &mut PgConnection, program: &str) -> Result<Option<Settings>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT currency_code, time_zone, rfm_bins, active_days, expected_lifespan_years,
                default_rhythm_days, annual_discount_bp
         FROM settings WHERE program_id = $1",
    )
    .bind(program)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(from_row))
}

/// This replica's short-lived copies of programmes' settings.
#[derive(Clone)]
pub struct Local {
    cache: moka::sync::Cache<String, Option<Settings>>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TTL)
                .build(),
        }
    }
}

impl Analytics {
    /// The programme's settings, from memory when read within [`TTL`].
    pub(crate) async fn settings(
        &self,
        conn: &mut PgConnection,
        program: &str,
    ) -> Result<Option<Settings>, sqlx::Error> {
        if let Some(s) = self.local_settings.cache.get(program) {
            return Ok(s);
        }
        let s = read(conn, program).await?;
        self.local_settings
            .cache
            .insert(program.to_owned(), s.clone());
        Ok(s)
    }

    /// The programme's settings, or NO_SETTINGS, taking a connection only
    /// when they are not in memory.
    pub(crate) async fn required_settings_of(
        &self,
        program: &str,
    ) -> Result<Settings, AnalyticsError> {
        if let Some(s) = self.local_settings.cache.get(program) {
            return s.ok_or(AnalyticsError::NoSettings);
        }
        let mut conn = self.db.acquire().await?;
        self.required_settings(&mut conn, program).await
    }

    /// The programme's settings, or NO_SETTINGS.
    pub(crate) async fn required_settings(
        &self,
        conn: &mut PgConnection,
        program: &str,
    ) -> Result<Settings, AnalyticsError> {
        self.settings(conn, program)
            .await?
            .ok_or(AnalyticsError::NoSettings)
    }

    /// `PutSettings`.
    pub(crate) async fn put_settings(
        &self,
        ctx: &RequestContext,
        request: &pb::PutSettingsRequest,
    ) -> Result<pb::PutSettingsResponse, AnalyticsError> {
        let mut v = Violations::new();
        check_request_id(&request.request_id, &mut v);
        let settings = match &request.settings {
            Some(s) => validate(s, &mut v),
            None => {
                v.add("settings", "required");
                None
            }
        };
        v.finish()?;
        let settings = settings.ok_or_else(|| AnalyticsError::field("settings", "invalid"))?;
        let key = RequestKey::new(ctx, "PutSettings", &request.request_id);
        match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let program = ctx.program.as_str();
                let before = read(fresh.tx(), program).await?;
                sqlx::query(
                    "INSERT INTO settings (program_id, currency_code, time_zone, rfm_bins, active_days,
                        expected_lifespan_years, default_rhythm_days, annual_discount_bp, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (program_id) DO UPDATE SET
                       currency_code = EXCLUDED.currency_code, time_zone = EXCLUDED.time_zone,
                       rfm_bins = EXCLUDED.rfm_bins, active_days = EXCLUDED.active_days,
                       expected_lifespan_years = EXCLUDED.expected_lifespan_years,
                       default_rhythm_days = EXCLUDED.default_rhythm_days,
                       annual_discount_bp = EXCLUDED.annual_discount_bp,
                       updated_at = EXCLUDED.updated_at",
                )
                .bind(program)
                .bind(&settings.currency)
                .bind(settings.tz.name())
                .bind(i32::from(settings.rfm_bins))
                .bind(settings.active_days)
                .bind(settings.lifespan_years)
                .bind(settings.default_rhythm_days)
                .bind(settings.annual_discount_bp)
                .bind(self.now())
                .execute(fresh.tx())
                .await?;
                let old_zone = before.map_or(chrono_tz::UTC, |b| b.tz);
                if old_zone != settings.tz {
                    spend::move_days(fresh.tx(), program, settings.tz).await?;
                }
                let response = pb::PutSettingsResponse {
                    settings: Some(settings.to_pb()),
                };
                fresh.commit(&response, None).await?;
                self.local_settings.cache.invalidate(program);
                Ok(response)
            }
        }
    }

    /// `GetSettings`.
    pub(crate) async fn get_settings(
        &self,
        ctx: &RequestContext,
    ) -> Result<pb::GetSettingsResponse, AnalyticsError> {
        let mut conn = self.db.acquire().await?;
        let s = read(&mut conn, ctx.program.as_str())
            .await?
            .ok_or(AnalyticsError::NoSettings)?;
        Ok(pb::GetSettingsResponse {
            settings: Some(s.to_pb()),
        })
    }
}
