//! `GetKpi` and `GetCohortRetention`.

use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{context::RequestContext, error::Violations};

use super::{
    cohort,
    period::day_start,
    request::{CohortRequest, KpiRequest},
    sql,
};
use crate::{Analytics, error::AnalyticsError, metrics::ts, settings::Settings};

impl Analytics {
    /// `GetKpi`.
    pub(crate) async fn get_kpi(
        &self,
        ctx: &RequestContext,
        request: &pb::GetKpiRequest,
    ) -> Result<pb::GetKpiResponse, AnalyticsError> {
        let mut v = Violations::new();
        let checked = KpiRequest::check(request, "", &mut v);
        v.finish()?;
        let r = checked.ok_or_else(|| AnalyticsError::field("kpi", "invalid"))?;
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let settings = self.required_settings(&mut conn, program).await?;
        let window = r.window(settings.tz)?;
        let points = sql::series(&mut conn, program, &settings, r.kpi, window, &r.filter).await?;
        Ok(pb::GetKpiResponse {
            points: points.iter().map(|p| p.to_pb(settings.tz)).collect(),
        })
    }

    /// `GetCohortRetention`.
    pub(crate) async fn get_cohort_retention(
        &self,
        ctx: &RequestContext,
        request: &pb::GetCohortRetentionRequest,
    ) -> Result<pb::GetCohortRetentionResponse, AnalyticsError> {
        let mut v = Violations::new();
        let checked = CohortRequest::check(request, "", &mut v);
        v.finish()?;
        let r = checked.ok_or_else(|| AnalyticsError::field("period", "invalid"))?;
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let settings = self.required_settings(&mut conn, program).await?;
        let cohorts = self.cohorts(&mut conn, program, &settings, &r).await?;
        Ok(pb::GetCohortRetentionResponse {
            cohorts: cohorts
                .iter()
                .map(|c| pb::CohortRow {
                    cohort_start: Some(ts(day_start(settings.tz, c.start))),
                    members: c.members,
                    retention: c.retention(),
                    active: c.active.clone(),
                })
                .collect(),
        })
    }

    /// The cohort table of `r` up to the current period by the service
    /// clock.
    pub(crate) async fn cohorts(
        &self,
        conn: &mut sqlx::PgConnection,
        program: &str,
        settings: &Settings,
        r: &CohortRequest,
    ) -> Result<Vec<cohort::Cohort>, AnalyticsError> {
        let window = r.window(settings.tz)?;
        let current = r.period.start_of(settings.day(self.now()));
        cohort::check_size(&window, current, &format!("{}to", r.prefix))?;
        Ok(cohort::table(conn, program, settings, window, &r.filter, current).await?)
    }
}
