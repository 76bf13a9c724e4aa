//! Thin gRPC handlers: read the request context, call the use case, wrap
//! the answer.

use std::{future::Future, pin::Pin};

use futures::Stream;
use laurel_proto::analytics::v1::{self as pb, analytics_service_server::AnalyticsService};
use laurel_runtime::context::request_context;
use tonic::{Request, Response, Status};

use crate::Analytics;

type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send + 'a>>;

/// A use case `self.$name(&ctx, request)` behind a unary method (written
/// out as `async_trait` would, since the attribute does not see into macros).
macro_rules! unary {
    ($method:ident, $req:ty, $resp:ty, $name:ident) => {
        fn $method<'a, 'b>(&'a self, request: Request<$req>) -> Answer<'b, $resp>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async move {
                let ctx = request_context(&request)?;
                Ok(Response::new(self.$name(&ctx, request.get_ref()).await?))
            })
        }
    };
}

type CsvStream = Pin<Box<dyn Stream<Item = Result<pb::ExportReportResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AnalyticsService for Analytics {
    unary!(
        put_settings,
        pb::PutSettingsRequest,
        pb::PutSettingsResponse,
        put_settings
    );

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.get_settings(&ctx).await?))
    }

    unary!(
        get_member_metrics,
        pb::GetMemberMetricsRequest,
        pb::GetMemberMetricsResponse,
        get_member_metrics
    );
    unary!(
        recompute_rfm,
        pb::RecomputeRfmRequest,
        pb::RecomputeRfmResponse,
        recompute_rfm
    );
    unary!(
        get_rfm_summary,
        pb::GetRfmSummaryRequest,
        pb::GetRfmSummaryResponse,
        get_rfm_summary
    );
    unary!(
        get_member_rfm,
        pb::GetMemberRfmRequest,
        pb::GetMemberRfmResponse,
        get_member_rfm
    );
    unary!(
        fit_clv_model,
        pb::FitClvModelRequest,
        pb::FitClvModelResponse,
        fit_clv_model
    );
    unary!(
        get_clv_model,
        pb::GetClvModelRequest,
        pb::GetClvModelResponse,
        get_clv_model
    );
    unary!(
        get_member_value,
        pb::GetMemberValueRequest,
        pb::GetMemberValueResponse,
        get_member_value
    );
    unary!(
        list_segment_values,
        pb::ListSegmentValuesRequest,
        pb::ListSegmentValuesResponse,
        list_segment_values
    );
    unary!(
        list_members_at_risk,
        pb::ListMembersAtRiskRequest,
        pb::ListMembersAtRiskResponse,
        list_members_at_risk
    );
    async fn get_recommendations(
        &self,
        request: Request<pb::GetRecommendationsRequest>,
    ) -> Result<Response<pb::GetRecommendationsResponse>, Status> {
        let ctx = request_context(&request)?;
        let (answer, from) = self.get_recommendations(&ctx, request.get_ref()).await?;
        let mut response = Response::new(answer);
        response.metadata_mut().insert(
            "laurel-answer-from",
            tonic::metadata::MetadataValue::from_static(from.name()),
        );
        Ok(response)
    }
    unary!(
        get_recommendation_quality,
        pb::GetRecommendationQualityRequest,
        pb::GetRecommendationQualityResponse,
        get_recommendation_quality
    );
    unary!(get_kpi, pb::GetKpiRequest, pb::GetKpiResponse, get_kpi);
    unary!(
        get_cohort_retention,
        pb::GetCohortRetentionRequest,
        pb::GetCohortRetentionResponse,
        get_cohort_retention
    );

    type ExportReportStream = CsvStream;

    async fn export_report(
        &self,
        request: Request<pb::ExportReportRequest>,
    ) -> Result<Response<Self::ExportReportStream>, Status> {
        let ctx = request_context(&request)?;
        let chunks = self.export_report(&ctx, request.get_ref()).await?;
        Ok(Response::new(Box::pin(chunks)))
    }

    unary!(
        put_alert_rule,
        pb::PutAlertRuleRequest,
        pb::PutAlertRuleResponse,
        put_alert_rule
    );
    unary!(
        list_alert_rules,
        pb::ListAlertRulesRequest,
        pb::ListAlertRulesResponse,
        list_alert_rules
    );
    unary!(
        list_alerts,
        pb::ListAlertsRequest,
        pb::ListAlertsResponse,
        list_alerts
    );
}
