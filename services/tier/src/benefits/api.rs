//! Use cases of the benefits RPCs.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use laurel_proto::tier::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey},
    pagination,
};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{LIVE, catalogue, entitle, member_benefit, member_state, period, validate};
use crate::{Tiers, error::TierError};

/// Page size when none is asked for, and the largest.
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

impl Tiers {
    fn schema(&self) -> &str {
        &self.config.runtime.db_schema
    }

    /// The member's benefits by code and the time zone of their periods.
    async fn entitlements_of(
        &self,
        conn: &mut PgConnection,
        program: &str,
        member: Uuid,
    ) -> Result<(BTreeMap<String, entitle::Entitlement>, chrono_tz::Tz), TierError> {
        let state = member_state(conn, program, member)
            .await?
            .ok_or(TierError::MemberNotFound)?;
        let catalogue = catalogue::catalogue(conn, self.schema(), program, state.revision).await?;
        let ladder = catalogue::ladder(conn, self.schema(), program, state.ladder_version).await?;
        let ladder = ladder.as_deref();
        Ok((
            entitle::entitlements(&catalogue, ladder, state.tier.as_deref(), &state.plans),
            period::time_zone(ladder),
        ))
    }

    /// `PutBenefit`.
    pub(crate) async fn put_benefit(
        &self,
        ctx: &RequestContext,
        request: &pb::PutBenefitRequest,
    ) -> Result<pb::PutBenefitResponse, TierError> {
        let mut v = Violations::new();
        laurel_runtime::idempotency::check_request_id(&request.request_id, &mut v);
        match &request.benefit {
            Some(b) => validate::benefit(b, &mut v),
            None => v.add("benefit", "required"),
        }
        v.finish()?;
        let benefit = request.benefit.clone().expect("checked");
        let key = RequestKey::new(ctx, "PutBenefit", &request.request_id);
        match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let program = ctx.program.as_str();
                sqlx::query(
                    "INSERT INTO benefits (program_id, code, benefit, active, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (program_id, code) DO UPDATE
                       SET benefit = EXCLUDED.benefit, active = EXCLUDED.active,
                           updated_at = EXCLUDED.updated_at",
                )
                .bind(program)
                .bind(&benefit.code)
                .bind(benefit.encode_to_vec())
                .bind(benefit.active)
                .bind(self.now())
                .execute(fresh.tx())
                .await?;
                catalogue::bump(fresh.tx(), program).await?;
                let response = pb::PutBenefitResponse {
                    benefit: Some(benefit),
                };
                fresh.commit(&response, None).await?;
                Ok(response)
            }
        }
    }

    /// `ListBenefits`.
    pub(crate) async fn list_benefits(
        &self,
        ctx: &RequestContext,
        request: &pb::ListBenefitsRequest,
    ) -> Result<pb::ListBenefitsResponse, TierError> {
        let mut v = Violations::new();
        let (size, after) = pagination::page(
            request.page_size,
            &request.page_token,
            |p| Some(p.to_owned()),
            &mut v,
        );
        v.finish()?;
        let limit = if request.page_size == 0 {
            DEFAULT_PAGE
        } else {
            size.min(MAX_PAGE)
        };
        let mut conn = self.db.acquire().await?;
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT benefit FROM benefits
             WHERE program_id = $1 AND ($2::text IS NULL OR code > $2)
             ORDER BY code LIMIT $3",
        )
        .bind(ctx.program.as_str())
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let mut benefits = rows
            .iter()
            .map(|b| pb::Benefit::decode(b.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TierError::Internal(e.into()))?;
        let next_page_token = if benefits.len() as i64 > limit {
            benefits.truncate(limit as usize);
            pagination::encode_token(&benefits.last().expect("a full page").code)
        } else {
            String::new()
        };
        Ok(pb::ListBenefitsResponse {
            benefits,
            next_page_token,
        })
    }

    /// `ListMemberBenefits`: active benefits only (inactive ones cannot be
    /// used).
    pub(crate) async fn list_member_benefits(
        &self,
        ctx: &RequestContext,
        request: &pb::ListMemberBenefitsRequest,
    ) -> Result<pb::ListMemberBenefitsResponse, TierError> {
        let mut v = Violations::new();
        let member = validate::uuid(&request.member_id, "member_id", "member", &mut v);
        v.finish()?;
        let program = ctx.program.as_str();
        let now = self.now();
        let mut conn = self.db.acquire().await?;
        let (entitled, tz) = self.entitlements_of(&mut conn, program, member).await?;
        let entitled: Vec<_> = entitled
            .into_values()
            .filter(|e| e.benefit.active)
            .map(|e| {
                let bounds = (!e.unlimited()).then(|| period::bounds(e.period, now, tz));
                (e, bounds)
            })
            .collect();
        let limited: Vec<_> = entitled
            .iter()
            .filter_map(|(e, b)| b.map(|(start, _)| (e, start)))
            .collect();
        let used: Vec<(String, i16, DateTime<Utc>, i64)> = if limited.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT c.benefit_code, c.period, c.period_start, c.used
                 FROM benefit_counters c
                 JOIN unnest($3::text[], $4::smallint[], $5::timestamptz[]) AS k(code, period, start)
                   ON c.benefit_code = k.code AND c.period = k.period AND c.period_start = k.start
                 WHERE c.program_id = $1 AND c.member_id = $2",
            )
            .bind(program)
            .bind(member)
            .bind(limited.iter().map(|(e, _)| e.benefit.code.clone()).collect::<Vec<_>>())
            .bind(limited.iter().map(|(e, _)| e.period as i16).collect::<Vec<_>>())
            .bind(limited.iter().map(|(_, s)| *s).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?
        };
        let benefits = entitled
            .iter()
            .map(|(e, bounds)| {
                let used = bounds
                    .and_then(|(start, _)| {
                        used.iter()
                            .find(|(c, p, s, _)| {
                                *c == e.benefit.code && *p == e.period as i16 && *s == start
                            })
                            .map(|u| u.3)
                    })
                    .unwrap_or(0);
                member_benefit(e, used, bounds.map(|b| b.1))
            })
            .collect();
        Ok(pb::ListMemberBenefitsResponse { benefits })
    }

    /// `ConsumeBenefit`.
    pub(crate) async fn consume_benefit(
        &self,
        ctx: &RequestContext,
        request: &pb::ConsumeBenefitRequest,
    ) -> Result<pb::ConsumeBenefitResponse, TierError> {
        let mut v = Violations::new();
        let (member, quantity) = validate::consume(request, &mut v);
        v.finish()?;
        let key = RequestKey::new(ctx, "ConsumeBenefit", &request.request_id);
        let mut fresh = match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(fresh) => fresh,
        };
        let program = ctx.program.as_str();
        let now = self.now();
        let (mut entitled, tz) = self.entitlements_of(fresh.tx(), program, member).await?;
        let Some(e) = entitled.remove(&request.benefit_code) else {
            let catalogue = catalogue::current(fresh.tx(), self.schema(), program).await?;
            return Err(if catalogue.benefits.contains_key(&request.benefit_code) {
                TierError::BenefitNotGranted
            } else {
                TierError::BenefitNotFound
            });
        };
        if !e.benefit.active {
            return Err(TierError::precondition(
                "BENEFIT_INACTIVE",
                format!("benefit {} is inactive", e.benefit.code),
            ));
        }
        let consumption_id = Uuid::now_v7();
        let source = match e.source {
            pb::BenefitSource::PaidPlan => "paid_plan",
            _ => "tier",
        };
        let reference = (!request.reference.is_empty()).then_some(request.reference.as_str());
        let (used, period_end) = if e.unlimited() {
            sqlx::query(
                "INSERT INTO benefit_uses (consumption_id, program_id, member_id, benefit_code,
                                           quantity, reference, source, source_code, used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(consumption_id)
            .bind(program)
            .bind(member)
            .bind(&e.benefit.code)
            .bind(quantity)
            .bind(reference)
            .bind(source)
            .bind(&e.source_code)
            .bind(now)
            .execute(fresh.tx())
            .await?;
            (0, None)
        } else {
            let (start, end) = period::bounds(e.period, now, tz);
            let used: Option<i64> = sqlx::query_scalar(
                "WITH c AS (
                   INSERT INTO benefit_counters (program_id, member_id, benefit_code, period, period_start, used)
                   SELECT $1, $2, $3, $4, $5, $6 WHERE $6 <= $7
                   ON CONFLICT (program_id, member_id, benefit_code, period, period_start)
                   DO UPDATE SET used = benefit_counters.used + EXCLUDED.used
                     WHERE benefit_counters.used + EXCLUDED.used <= $7
                   RETURNING used
                 ), u AS (
                   INSERT INTO benefit_uses (consumption_id, program_id, member_id, benefit_code,
                                             quantity, reference, source, source_code, used_at)
                   SELECT $8, $1, $2, $3, $6::integer, $9, $10, $11, $12 FROM c
                   RETURNING 1
                 )
                 SELECT used FROM c",
            )
            .bind(program)
            .bind(member)
            .bind(&e.benefit.code)
            .bind(e.period as i16)
            .bind(start)
            .bind(i64::from(quantity))
            .bind(i64::from(e.quota))
            .bind(consumption_id)
            .bind(reference)
            .bind(source)
            .bind(&e.source_code)
            .bind(now)
            .fetch_optional(fresh.tx())
            .await?;
            let Some(used) = used else {
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT used FROM benefit_counters
                     WHERE program_id = $1 AND member_id = $2 AND benefit_code = $3
                       AND period = $4 AND period_start = $5",
                )
                .bind(program)
                .bind(member)
                .bind(&e.benefit.code)
                .bind(e.period as i16)
                .bind(start)
                .fetch_optional(fresh.tx())
                .await?;
                return Err(TierError::QuotaExhausted {
                    remaining: (i64::from(e.quota) - used.unwrap_or(0)).max(0),
                });
            };
            (used, Some(end))
        };
        let response = pb::ConsumeBenefitResponse {
            benefit: Some(member_benefit(&e, used, period_end)),
            consumption_id: consumption_id.to_string(),
        };
        fresh.commit(&response, Some(member)).await?;
        Ok(response)
    }

    /// `GetBenefitUsage`: every catalogue benefit, by code.
    pub(crate) async fn get_benefit_usage(
        &self,
        ctx: &RequestContext,
        request: &pb::GetBenefitUsageRequest,
    ) -> Result<pb::GetBenefitUsageResponse, TierError> {
        let mut v = Violations::new();
        let now = self.now();
        // By default up to now included: a use recorded this microsecond
        // counts.
        let to = time(
            request.to.as_ref(),
            "to",
            now + Duration::microseconds(1),
            &mut v,
        );
        let from = time(
            request.from.as_ref(),
            "from",
            to - Duration::days(30),
            &mut v,
        );
        v.check(from >= to, "from", "must be before to");
        v.finish()?;
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let catalogue = catalogue::current(&mut conn, self.schema(), program).await?;
        let ladder = crate::ladder::in_force(&mut *conn, program).await?;
        let mut tier_grants: (Vec<String>, Vec<String>) = Default::default();
        for tier in ladder.iter().flat_map(|l| &l.tiers) {
            for g in &tier.benefits {
                tier_grants.0.push(g.benefit_code.clone());
                tier_grants.1.push(tier.code.clone());
            }
        }
        let mut plan_grants: (Vec<String>, Vec<String>) = Default::default();
        for plan in catalogue.plans.values() {
            for g in &plan.benefits {
                plan_grants.0.push(g.benefit_code.clone());
                plan_grants.1.push(plan.code.clone());
            }
        }
        let entitled: Vec<(String, i64)> = sqlx::query_as(&format!(
            "WITH tg AS (SELECT * FROM unnest($2::text[], $3::text[]) AS t(benefit, tier)),
                  pg AS (SELECT * FROM unnest($4::text[], $5::text[]) AS p(benefit, plan)),
                  e AS (
                    SELECT tg.benefit, m.member_id FROM members m JOIN tg ON m.tier_code = tg.tier
                    WHERE m.program_id = $1 AND m.status = 'active'
                    UNION
                    SELECT pg.benefit, s.member_id FROM subscriptions s JOIN pg ON s.plan_code = pg.plan
                    WHERE s.program_id = $1 AND s.status IN {LIVE}
                  )
             SELECT benefit, count(*) FROM e GROUP BY benefit"
        ))
        .bind(program)
        .bind(&tier_grants.0)
        .bind(&tier_grants.1)
        .bind(&plan_grants.0)
        .bind(&plan_grants.1)
        .fetch_all(&mut *conn)
        .await?;
        let used: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT benefit_code, sum(quantity)::bigint, count(DISTINCT member_id)
             FROM benefit_uses
             WHERE program_id = $1 AND used_at >= $2 AND used_at < $3
             GROUP BY benefit_code",
        )
        .bind(program)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        let usage = catalogue
            .benefits
            .keys()
            .map(|code| {
                let (uses, members) = used
                    .iter()
                    .find(|u| &u.0 == code)
                    .map(|u| (u.1, u.2))
                    .unwrap_or_default();
                let entitled_members = entitled
                    .iter()
                    .find(|e| &e.0 == code)
                    .map(|e| e.1)
                    .unwrap_or_default();
                pb::BenefitUsage {
                    benefit_code: code.clone(),
                    uses,
                    members,
                    entitled_members,
                    uptake_bp: uptake_bp(members, entitled_members),
                }
            })
            .collect();
        Ok(pb::GetBenefitUsageResponse { usage })
    }
}

/// Members who used a benefit per entitled member, in basis points (0 when
/// nobody is entitled; above 10000 when members used it and lost it since).
pub fn uptake_bp(members: i64, entitled: i64) -> i64 {
    if entitled <= 0 {
        return 0;
    }
    members.saturating_mul(10_000) / entitled
}

/// A timestamp field, or `default` when absent.
pub(crate) fn time(
    t: Option<&prost_types::Timestamp>,
    field: &str,
    default: DateTime<Utc>,
    v: &mut Violations,
) -> DateTime<Utc> {
    match t {
        None => default,
        Some(t) => match DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32) {
            Some(at) => DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at),
            None => {
                v.add(field, "not a valid time");
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptake_is_a_share_in_basis_points() {
        assert_eq!(uptake_bp(1, 4), 2_500);
        assert_eq!(uptake_bp(0, 4), 0);
        assert_eq!(uptake_bp(3, 0), 0);
        assert_eq!(uptake_bp(2, 3), 6_666);
    }
}
