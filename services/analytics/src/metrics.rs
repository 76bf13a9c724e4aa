//! `GetMemberMetrics`: a member's figures as the facts keep them.

use chrono::{DateTime, Utc};
use laurel_proto::{analytics::v1 as pb, common::v1::Money};
use laurel_runtime::{context::RequestContext, error::Violations};
use uuid::Uuid;

use crate::{Analytics, error::AnalyticsError};

/// A member id from a request, or a field violation.
pub(crate) fn member_id(raw: &str, v: &mut Violations) -> Uuid {
    match Uuid::parse_str(raw.trim()) {
        Ok(id) if !id.is_nil() => id,
        _ => {
            v.add("member_id", "required: a member id (UUID)");
            Uuid::nil()
        }
    }
}

pub(crate) fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

type MemberRow = (
    DateTime<Utc>,
    String,
    String,
    i64,
    i64,
    i64,
    i32,
    Option<DateTime<Utc>>,
    i64,
    i64,
    i64,
    i64,
);

type SpendRow = (
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
    i64,
    i64,
    i64,
    i64,
);

impl Analytics {
    /// `GetMemberMetrics`.
    pub(crate) async fn get_member_metrics(
        &self,
        ctx: &RequestContext,
        request: &pb::GetMemberMetricsRequest,
    ) -> Result<pb::GetMemberMetricsResponse, AnalyticsError> {
        let mut v = Violations::new();
        let member = member_id(&request.member_id, &mut v);
        v.finish()?;
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let row: Option<MemberRow> = sqlx::query_as(
            "SELECT enrolled_at, tier_code, plan_status, points_earned, points_redeemed,
                    points_expired, latest_nps, latest_feedback_at, negative_feedback, complaints,
                    campaign_exposures, campaign_conversions
             FROM members WHERE program_id = $1 AND member_id = $2 AND status = 'active'",
        )
        .bind(program)
        .bind(member)
        .fetch_optional(&mut *conn)
        .await?;
        let row = row.ok_or(AnalyticsError::MemberNotFound)?;
        let settings = self.settings(&mut conn, program).await?;
        let spends: Vec<SpendRow> = sqlx::query_as(
            "SELECT currency_code, first_purchase_at, last_purchase_at, orders, purchase_days,
                    gross_minor, refunded_minor, refunds
             FROM member_spend WHERE program_id = $1 AND member_id = $2 ORDER BY currency_code",
        )
        .bind(program)
        .bind(member)
        .fetch_all(&mut *conn)
        .await?;
        let home = settings.map(|s| s.currency);
        let mut metrics = pb::MemberMetrics {
            member_id: member.to_string(),
            enrolled_at: Some(ts(row.0)),
            tier_code: row.1,
            plan_status: row.2,
            points_earned: row.3,
            points_redeemed: row.4,
            points_expired: row.5,
            latest_nps: row.6,
            latest_feedback_at: row.7.map(ts),
            negative_feedback: row.8,
            complaints: row.9,
            campaign_exposures: row.10,
            campaign_conversions: row.11,
            ..Default::default()
        };
        for s in spends {
            let gross = s.5;
            let net = gross.checked_sub(s.6).ok_or_else(|| {
                AnalyticsError::Internal(anyhow::anyhow!("net spend out of range"))
            })?;
            // Without settings, the only currency is the member's; with
            // several and no settings, none is chosen.
            if home.as_deref() == Some(s.0.as_str()) {
                metrics.first_purchase_at = Some(ts(s.1));
                metrics.last_purchase_at = Some(ts(s.2));
                metrics.orders = s.3;
                metrics.purchase_days = s.4;
                metrics.gross_spend_minor = gross;
                metrics.net_spend_minor = net;
                metrics.average_order_minor = if s.3 > 0 { gross / s.3 } else { 0 };
                metrics.refunded_minor = s.6;
                metrics.refunds = s.7;
            } else {
                metrics.other_currency_spend.push(Money {
                    currency_code: s.0,
                    amount_minor: net,
                });
            }
        }
        Ok(pb::GetMemberMetricsResponse {
            metrics: Some(metrics),
        })
    }
}
