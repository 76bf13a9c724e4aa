//! Use cases of the plan and subscription RPCs.

use laurel_proto::tier::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey},
};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{COLUMNS, Row, Status, lock, period_end, publish, save, validate};
use crate::{
    Tiers,
    benefits::{
        LIVE, catalogue,
        validate::{self as check, MAX_REFERENCE},
    },
    error::TierError,
};

impl Tiers {
    /// `PutPlan`.
    pub(crate) async fn put_plan(
        &self,
        ctx: &RequestContext,
        request: &pb::PutPlanRequest,
    ) -> Result<pb::PutPlanResponse, TierError> {
        let mut v = Violations::new();
        laurel_runtime::idempotency::check_request_id(&request.request_id, &mut v);
        match &request.plan {
            Some(p) => validate::plan(p, &mut v),
            None => v.add("plan", "required"),
        }
        v.finish()?;
        let plan = request.plan.clone().expect("checked");
        let key = RequestKey::new(ctx, "PutPlan", &request.request_id);
        match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let program = ctx.program.as_str();
                check_references(fresh.tx(), program, &plan).await?;
                sqlx::query(
                    "INSERT INTO plans (program_id, code, plan, active, tier_floor, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (program_id, code) DO UPDATE
                       SET plan = EXCLUDED.plan, active = EXCLUDED.active,
                           tier_floor = EXCLUDED.tier_floor, updated_at = EXCLUDED.updated_at",
                )
                .bind(program)
                .bind(&plan.code)
                .bind(plan.encode_to_vec())
                .bind(plan.active)
                .bind(&plan.tier_floor)
                .bind(self.now())
                .execute(fresh.tx())
                .await?;
                catalogue::bump(fresh.tx(), program).await?;
                let response = pb::PutPlanResponse { plan: Some(plan) };
                fresh.commit(&response, None).await?;
                Ok(response)
            }
        }
    }

    /// `ListPlans`.
    pub(crate) async fn list_plans(
        &self,
        ctx: &RequestContext,
        _request: &pb::ListPlansRequest,
    ) -> Result<pb::ListPlansResponse, TierError> {
        let mut conn = self.db.acquire().await?;
        let catalogue = catalogue::current(
            &mut conn,
            &self.config.runtime.db_schema,
            ctx.program.as_str(),
        )
        .await?;
        Ok(pb::ListPlansResponse {
            plans: catalogue.plans.values().cloned().collect(),
        })
    }

    /// `Subscribe`.
    pub(crate) async fn subscribe(
        &self,
        ctx: &RequestContext,
        request: &pb::SubscribeRequest,
    ) -> Result<pb::SubscribeResponse, TierError> {
        let mut v = Violations::new();
        laurel_runtime::idempotency::check_request_id(&request.request_id, &mut v);
        let member = check::uuid(&request.member_id, "member_id", "member", &mut v);
        check::code(&request.plan_code, "plan_code", &mut v);
        validate::payment_reference(&request.payment_reference, &mut v);
        v.finish()?;
        let key = RequestKey::new(ctx, "Subscribe", &request.request_id);
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
        // The member's row lock serialises subscriptions of one member, so
        // two concurrent requests cannot both start the same plan.
        let known: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM members WHERE program_id = $1 AND member_id = $2 AND status = 'active'
             FOR UPDATE",
        )
        .bind(program)
        .bind(member)
        .fetch_optional(fresh.tx())
        .await?;
        if known.is_none() {
            return Err(TierError::MemberNotFound);
        }
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT plan FROM plans WHERE program_id = $1 AND code = $2")
                .bind(program)
                .bind(&request.plan_code)
                .fetch_optional(fresh.tx())
                .await?;
        let plan = pb::Plan::decode(stored.ok_or(TierError::PlanNotFound)?.as_slice())
            .map_err(|e| TierError::Internal(e.into()))?;
        if !plan.active {
            return Err(TierError::precondition(
                "PLAN_INACTIVE",
                format!("plan {} takes no new subscriptions", plan.code),
            ));
        }
        let live: Option<Uuid> = sqlx::query_scalar(&format!(
            "SELECT subscription_id FROM subscriptions
             WHERE program_id = $1 AND member_id = $2 AND plan_code = $3 AND status IN {LIVE}
             LIMIT 1"
        ))
        .bind(program)
        .bind(member)
        .bind(&plan.code)
        .fetch_optional(fresh.tx())
        .await?;
        if let Some(id) = live {
            return Err(TierError::precondition(
                "ALREADY_SUBSCRIBED",
                format!(
                    "the member already has subscription {id} to plan {}",
                    plan.code
                ),
            ));
        }
        let billing =
            pb::BillingPeriod::try_from(plan.billing_period).unwrap_or(pb::BillingPeriod::Monthly);
        let price = plan.price.clone().unwrap_or_default();
        let row = Row {
            subscription_id: Uuid::now_v7(),
            program_id: program.to_owned(),
            member_id: member,
            plan_code: plan.code.clone(),
            status: Status::Active.as_str().to_owned(),
            currency_code: price.currency_code,
            price_minor: price.amount_minor,
            billing_period: billing as i16,
            grace_days: plan.grace_days,
            reminder_days: plan.reminder_days,
            started_at: now,
            current_period_start: now,
            current_period_end: period_end(now, billing, 1).ok_or_else(|| {
                TierError::Internal(anyhow::anyhow!("a period past the calendar's end"))
            })?,
            grace_until: None,
            renewals: 0,
            payment_reference: Some(request.payment_reference.clone()),
            cancel_reason: None,
            ended_at: None,
            reminded_for: None,
        };
        sqlx::query(&format!(
            "INSERT INTO subscriptions ({COLUMNS}, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .bind(row.subscription_id)
        .bind(&row.program_id)
        .bind(row.member_id)
        .bind(&row.plan_code)
        .bind(&row.status)
        .bind(&row.currency_code)
        .bind(row.price_minor)
        .bind(row.billing_period)
        .bind(row.grace_days)
        .bind(row.reminder_days)
        .bind(row.started_at)
        .bind(row.current_period_start)
        .bind(row.current_period_end)
        .bind(row.grace_until)
        .bind(row.renewals)
        .bind(&row.payment_reference)
        .bind(&row.cancel_reason)
        .bind(row.ended_at)
        .bind(row.reminded_for)
        .bind(now)
        .execute(fresh.tx())
        .await?;
        publish(
            fresh.tx(),
            &row,
            now,
            now,
            &pb::SubscriptionStarted {
                facts: Some(row.facts(now)),
            },
        )
        .await?;
        let card = self
            .refresh_tier(fresh.tx(), program, member, pb::TierChangeReason::PaidPlan)
            .await?;
        let response = pb::SubscribeResponse {
            subscription: Some(row.to_proto()),
        };
        fresh.commit(&response, Some(member)).await?;
        if let Some(version) = card {
            self.cards.invalidate(&ctx.program, &member, version).await;
        }
        Ok(response)
    }

    /// `Renew`.
    pub(crate) async fn renew(
        &self,
        ctx: &RequestContext,
        request: &pb::RenewRequest,
    ) -> Result<pb::RenewResponse, TierError> {
        let mut v = Violations::new();
        laurel_runtime::idempotency::check_request_id(&request.request_id, &mut v);
        let id = check::uuid(
            &request.subscription_id,
            "subscription_id",
            "subscription",
            &mut v,
        );
        validate::payment_reference(&request.payment_reference, &mut v);
        v.finish()?;
        let key = RequestKey::new(ctx, "Renew", &request.request_id);
        let mut fresh = match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(fresh) => fresh,
        };
        let now = self.now();
        let mut row = lock(fresh.tx(), ctx.program.as_str(), id)
            .await?
            .ok_or(TierError::SubscriptionNotFound)?;
        let late = super::renewal(
            row.status(),
            now,
            row.current_period_end,
            row.grace_until,
            row.grace_days,
        )
        .map_err(|(code, message)| TierError::precondition(code, message))?;
        let renewals = row.renewals.checked_add(1).ok_or_else(|| {
            TierError::precondition("TOO_MANY_RENEWALS", "the subscription cannot renew again")
        })?;
        let end =
            period_end(row.started_at, row.billing(), renewals as u32 + 1).ok_or_else(|| {
                TierError::Internal(anyhow::anyhow!("a period past the calendar's end"))
            })?;
        // A renewal of a subscription cancelled at period end takes the
        // cancellation back: the member paid for another period.
        row.status = Status::Active.as_str().to_owned();
        row.current_period_start = row.current_period_end;
        row.current_period_end = end;
        row.grace_until = None;
        row.renewals = renewals;
        row.payment_reference = Some(request.payment_reference.clone());
        row.cancel_reason = None;
        save(fresh.tx(), &row, now).await?;
        publish(
            fresh.tx(),
            &row,
            now,
            now,
            &pb::SubscriptionRenewed {
                facts: Some(row.facts(now)),
                late,
            },
        )
        .await?;
        let response = pb::RenewResponse {
            subscription: Some(row.to_proto()),
        };
        fresh.commit(&response, Some(row.member_id)).await?;
        Ok(response)
    }

    /// `Cancel`.
    pub(crate) async fn cancel(
        &self,
        ctx: &RequestContext,
        request: &pb::CancelRequest,
    ) -> Result<pb::CancelResponse, TierError> {
        let mut v = Violations::new();
        laurel_runtime::idempotency::check_request_id(&request.request_id, &mut v);
        let id = check::uuid(
            &request.subscription_id,
            "subscription_id",
            "subscription",
            &mut v,
        );
        let mode = pb::CancelMode::try_from(request.mode).unwrap_or_default();
        v.check(
            mode == pb::CancelMode::Unspecified,
            "mode",
            "required: at period end or now",
        );
        check::text(&request.reason, "reason", MAX_REFERENCE, &mut v);
        v.finish()?;
        let key = RequestKey::new(ctx, "Cancel", &request.request_id);
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
        let mut row = lock(fresh.tx(), program, id)
            .await?
            .ok_or(TierError::SubscriptionNotFound)?;
        let next = super::cancellation(row.status(), mode)
            .map_err(|(code, message)| TierError::precondition(code, message))?;
        row.status = next.as_str().to_owned();
        row.cancel_reason = (!request.reason.is_empty()).then(|| request.reason.clone());
        let ended = next == Status::Cancelled;
        if ended {
            row.ended_at = Some(now);
        }
        save(fresh.tx(), &row, now).await?;
        publish(
            fresh.tx(),
            &row,
            now,
            now,
            &pb::SubscriptionCancelled {
                facts: Some(row.facts(now)),
                mode: mode as i32,
                reason: request.reason.clone(),
            },
        )
        .await?;
        let mut card = None;
        if ended {
            publish(
                fresh.tx(),
                &row,
                now,
                now,
                &pb::SubscriptionEnded {
                    facts: Some(row.facts(now)),
                    expired: false,
                },
            )
            .await?;
            card = self
                .refresh_tier(
                    fresh.tx(),
                    program,
                    row.member_id,
                    pb::TierChangeReason::PaidPlan,
                )
                .await?;
        }
        let response = pb::CancelResponse {
            subscription: Some(row.to_proto()),
        };
        fresh.commit(&response, Some(row.member_id)).await?;
        if let Some(version) = card {
            self.cards
                .invalidate(&ctx.program, &row.member_id, version)
                .await;
        }
        Ok(response)
    }

    /// `ListSubscriptions`.
    pub(crate) async fn list_subscriptions(
        &self,
        ctx: &RequestContext,
        request: &pb::ListSubscriptionsRequest,
    ) -> Result<pb::ListSubscriptionsResponse, TierError> {
        let mut v = Violations::new();
        let member = check::uuid(&request.member_id, "member_id", "member", &mut v);
        v.finish()?;
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE program_id = $1 AND member_id = $2
             ORDER BY started_at DESC, subscription_id DESC"
        ))
        .bind(program)
        .bind(member)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            let known: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM members WHERE program_id = $1 AND member_id = $2 AND status = 'active'",
            )
            .bind(program)
            .bind(member)
            .fetch_optional(&mut *conn)
            .await?;
            if known.is_none() {
                return Err(TierError::MemberNotFound);
            }
        }
        Ok(pb::ListSubscriptionsResponse {
            subscriptions: rows.iter().map(Row::to_proto).collect(),
        })
    }
}

/// A plan's benefits must be in the catalogue and its tier floor a tier of
/// the ladder in force (any code is taken while there is no ladder).
async fn check_references(
    tx: &mut PgConnection,
    program: &str,
    plan: &pb::Plan,
) -> Result<(), TierError> {
    let mut v = Violations::new();
    let codes: Vec<String> = plan
        .benefits
        .iter()
        .map(|g| g.benefit_code.clone())
        .collect();
    let unknown = crate::benefits::unknown_codes(tx, program, &codes).await?;
    for (i, g) in plan.benefits.iter().enumerate() {
        v.check(
            unknown.contains(&g.benefit_code),
            format!("plan.benefits[{i}].benefit_code"),
            format!("no benefit {} in the catalogue", g.benefit_code),
        );
    }
    if !plan.tier_floor.is_empty()
        && let Some(ladder) = crate::ladder::in_force(&mut *tx, program).await?
        && !ladder.tiers.iter().any(|t| t.code == plan.tier_floor)
    {
        v.add(
            "plan.tier_floor",
            format!(
                "no tier {} in the ladder in force (version {})",
                plan.tier_floor, ladder.version
            ),
        );
    }
    v.finish()?;
    Ok(())
}
