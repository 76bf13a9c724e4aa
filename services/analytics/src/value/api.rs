//! `GetMemberValue` (live from the facts), `ListSegmentValues` and
//! `ListMembersAtRisk` (from the latest scoring).

use futures::TryStreamExt;
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{context::RequestContext, error::Violations};
use sqlx::Row;
use uuid::Uuid;

use super::{assess::Assessment, score::components};
use crate::{Analytics, error::AnalyticsError, metrics::member_id};

fn churn_pb(c: [f64; 6], score: i32) -> pb::ChurnRisk {
    pb::ChurnRisk {
        score,
        falling_alive: c[0],
        overdue: c[1],
        falling_frequency: c[2],
        refunds: c[3],
        negative_feedback: c[4],
        complaints: c[5],
    }
}

fn value_pb(
    member: Uuid,
    a: &Assessment,
    horizon_weeks: u32,
    model: Option<Uuid>,
    segment: Option<i16>,
) -> pb::MemberValue {
    pb::MemberValue {
        member_id: member.to_string(),
        historical_clv_minor: a.historical_clv,
        probability_alive: a.alive.unwrap_or(-1.0),
        expected_purchases: a.expected_purchases,
        predictive_clv_minor: a.predictive_clv,
        horizon_weeks: horizon_weeks as i32,
        stage: i32::from(super::assess::stage_pb(a.stage)),
        churn: Some(churn_pb(components(a), i32::from(a.churn.score))),
        value_at_risk_minor: a.value_at_risk,
        model_id: model.map(|m| m.to_string()).unwrap_or_default(),
        segment: i32::from(segment.unwrap_or(0)),
    }
}

impl Analytics {
    /// `GetMemberValue`.
    pub(crate) async fn get_member_value(
        &self,
        ctx: &RequestContext,
        request: &pb::GetMemberValueRequest,
    ) -> Result<pb::GetMemberValueResponse, AnalyticsError> {
        let mut v = Violations::new();
        let member = member_id(&request.member_id, &mut v);
        let horizon = match request.horizon_weeks {
            0 => super::assess::DEFAULT_HORIZON_WEEKS,
            h @ 1..=520 => h as u32,
            _ => {
                v.add("horizon_weeks", "from 1 to 520 (0 for 52)");
                0
            }
        };
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let (f, a, model) = self
            .member_value(&mut conn, ctx.program.as_str(), member, horizon)
            .await?;
        Ok(pb::GetMemberValueResponse {
            value: Some(value_pb(
                member,
                &a,
                horizon,
                model.map(|m| m.id),
                f.segment,
            )),
        })
    }

    /// `ListSegmentValues`.
    pub(crate) async fn list_segment_values(
        &self,
        ctx: &RequestContext,
        _request: &pb::ListSegmentValuesRequest,
    ) -> Result<pb::ListSegmentValuesResponse, AnalyticsError> {
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let Some(scores) = self.rfm_scores(&mut conn, program).await? else {
            return Ok(pb::ListSegmentValuesResponse::default());
        };
        // Members and historical CLV per segment proto value, over the
        // members both scored in the run and valued (merged-away and
        // erased members have no value).
        let mut members = [0i64; 12];
        let mut totals = [0i128; 12];
        let mut values = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT member_id, historical_clv_minor FROM member_values WHERE program_id = $1",
        )
        .bind(program)
        .fetch(&mut *conn);
        while let Some((member, clv)) = values.try_next().await? {
            if let Some(s) = scores.get(member) {
                let slot = usize::from(s.segment).min(11);
                members[slot] += 1;
                totals[slot] += i128::from(clv);
            }
        }
        let mut segments = Vec::new();
        for (segment, (&members, &total)) in (0i32..).zip(members.iter().zip(&totals)) {
            if members == 0 {
                continue;
            }
            let total = i64::try_from(total).map_err(|_| {
                AnalyticsError::Internal(anyhow::anyhow!(
                    "segment {segment}: historical CLV total out of range"
                ))
            })?;
            segments.push(pb::SegmentValue {
                segment,
                members,
                average_clv_minor: total / members,
                total_clv_minor: total,
            });
        }
        Ok(pb::ListSegmentValuesResponse { segments })
    }

    /// `ListMembersAtRisk`.
    pub(crate) async fn list_members_at_risk(
        &self,
        ctx: &RequestContext,
        request: &pb::ListMembersAtRiskRequest,
    ) -> Result<pb::ListMembersAtRiskResponse, AnalyticsError> {
        let mut v = Violations::new();
        let limit = match request.limit {
            0 => 50,
            l @ 1..=1000 => l,
            _ => {
                v.add("limit", "from 1 to 1000 (0 for 50)");
                0
            }
        };
        let min_score = match request.min_score {
            0 => 50,
            s @ 1..=100 => s,
            _ => {
                v.add("min_score", "from 1 to 100 (0 for 50)");
                0
            }
        };
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let rows = sqlx::query(
            "SELECT v.member_id, v.stage, v.probability_alive, v.expected_purchases,
                    v.predictive_clv_minor, v.historical_clv_minor, v.churn_score,
                    v.churn_components, v.value_at_risk_minor, v.model_id
             FROM member_values v
             WHERE v.program_id = $1 AND v.churn_score >= $2
             ORDER BY v.value_at_risk_minor DESC, v.member_id LIMIT $3",
        )
        .bind(ctx.program.as_str())
        .bind(min_score as i16)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        let scores = if rows.is_empty() {
            None
        } else {
            self.rfm_scores(&mut conn, ctx.program.as_str()).await?
        };
        Ok(pb::ListMembersAtRiskResponse {
            members: rows
                .into_iter()
                .map(|r| {
                    let member: Uuid = r.get("member_id");
                    let segment = scores
                        .as_ref()
                        .and_then(|s| s.get(member))
                        .map_or(0, |s| i32::from(s.segment));
                    let c: Vec<f64> = r.get("churn_components");
                    let mut arr = [0.0; 6];
                    for (slot, x) in arr.iter_mut().zip(c) {
                        *slot = x;
                    }
                    pb::MemberValue {
                        member_id: member.to_string(),
                        historical_clv_minor: r.get("historical_clv_minor"),
                        probability_alive: r.get("probability_alive"),
                        expected_purchases: r.get("expected_purchases"),
                        predictive_clv_minor: r.get("predictive_clv_minor"),
                        horizon_weeks: super::assess::DEFAULT_HORIZON_WEEKS as i32,
                        stage: i32::from(r.get::<i16, _>("stage")),
                        churn: Some(churn_pb(arr, i32::from(r.get::<i16, _>("churn_score")))),
                        value_at_risk_minor: r.get("value_at_risk_minor"),
                        model_id: r
                            .get::<Option<Uuid>, _>("model_id")
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        segment,
                    }
                })
                .collect(),
        })
    }
}
