//! The use cases behind the RPCs: check the request, answer a replay from
//! its stored response at lookup speed, turn the request into a ledger
//! command, and queue it for the group commit.

use chrono::{DateTime, Utc};
use laurel_proto::{common::v1::Money, points::v1 as pb};
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{BatchKey, RequestKey},
};
use uuid::Uuid;

use crate::{
    Points, clock_now,
    error::PointsError,
    ledger::ops::{Earn, LotTerms, OrderRef, PlaceHold, ReverseEarn, Spend},
    requests::{self as check, MAX_ID, MAX_TEXT},
    rules,
    writer::{Command, Reply, Request},
};

/// Longest hold.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl Points {
    fn key(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        request_id: &str,
        request: &impl prost::Message,
    ) -> BatchKey {
        self.idempotency
            .batch_key(RequestKey::new(ctx, operation, request_id), request)
    }

    /// Queues `command` under `key` and waits for its commit.
    pub(crate) async fn submit(
        &self,
        key: Option<BatchKey>,
        command: Command,
    ) -> Result<Reply, PointsError> {
        self.writer
            .submit(Request { key, command })
            .await
            .map_err(|e| PointsError::Internal(e.into()))?
    }

    /// Runs a keyed mutation: a replay of an answer this replica gave is
    /// served from memory; anything else is built and queued, and the batch
    /// replays what another replica (or an earlier process) stored.
    async fn mutate<F>(&self, key: BatchKey, build: F) -> Result<Reply, PointsError>
    where
        F: std::future::Future<Output = Result<Command, PointsError>>,
    {
        let cache_key = reply_key(&key);
        if let Some(reply) = self.replies.get(&cache_key) {
            return Ok(reply);
        }
        let command = build.await?;
        let reply = self.submit(Some(key), command).await?;
        self.replies.insert(cache_key, reply.clone());
        Ok(reply)
    }

    /// The member's tier when `at` happened, from TierChanged events.
    async fn tier_at(
        &self,
        program: &str,
        member: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, PointsError> {
        let mut conn = self.db.acquire().await?;
        Ok(sqlx::query_scalar(
            "SELECT tier FROM member_tiers WHERE program_id = $1 AND member_id = $2 AND effective_at <= $3
             ORDER BY effective_at DESC LIMIT 1",
        )
        .bind(program)
        .bind(member)
        .bind(at)
        .fetch_optional(&mut *conn)
        .await?
        .filter(|t: &String| !t.is_empty()))
    }

    /// What an earn request is worth by the rules in force when it happened.
    pub(crate) async fn price_earn(
        &self,
        program: &str,
        member: Option<Uuid>,
        kind: pb::EarnKind,
        order: Option<&pb::Order>,
        explicit: i64,
        at: DateTime<Utc>,
    ) -> Result<(i64, Vec<pb::AppliedRule>, Option<i64>, Option<i32>, i64), PointsError> {
        match kind {
            pb::EarnKind::CampaignBonus | pb::EarnKind::Goodwill => Ok((
                explicit,
                vec![pb::AppliedRule {
                    rule: "fixed".into(),
                    points: explicit,
                    detail: "points given in the request".into(),
                }],
                None,
                None,
                0,
            )),
            _ => {
                let Some(rules) = self.rules.in_force(self.db.pool(), program, at).await? else {
                    return Ok((0, vec![no_rules()], None, None, 0));
                };
                let version = rules.version();
                if kind == pb::EarnKind::Order {
                    let tier = match member {
                        Some(m) => self.tier_at(program, m, at).await?,
                        None => None,
                    };
                    let earned =
                        rules::earn_for_order(&rules, order.expect("checked"), tier.as_deref(), at)
                            .map_err(|e| match e {
                                rules::RuleError::InvalidOrder { field, reason } => {
                                    PointsError::field(&field, reason)
                                }
                                rules::RuleError::Overflow => {
                                    PointsError::field("order", "the order's points are too large")
                                }
                            })?;
                    Ok((
                        earned.points,
                        earned.applied,
                        earned.daily_cap,
                        None,
                        version,
                    ))
                } else {
                    match rules::earn_for_event(&rules, kind) {
                        Some(e) => Ok((
                            e.points,
                            vec![pb::AppliedRule {
                                rule: format!(
                                    "event:{}",
                                    kind.as_str_name()
                                        .trim_start_matches("EARN_KIND_")
                                        .to_ascii_lowercase()
                                ),
                                points: e.points,
                                detail: String::new(),
                            }],
                            None,
                            e.max_per_day.map(|m| m as i32),
                            version,
                        )),
                        None => Ok((0, vec![no_rules()], None, None, version)),
                    }
                }
            }
        }
    }

    /// Earn.
    pub async fn earn(
        &self,
        ctx: &RequestContext,
        req: &pb::EarnRequest,
    ) -> Result<pb::EarnResponse, PointsError> {
        let settings = self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?;
        let now = clock_now(&self.clock);
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let member = check::member_id(&req.member_id, "member_id", &mut v);
        let kind = pb::EarnKind::try_from(req.kind).unwrap_or(pb::EarnKind::Unspecified);
        let mut order = None;
        match kind {
            pb::EarnKind::Unspecified => v.add(
                "kind",
                "required: order, review, share, check_in, referral, campaign_bonus or goodwill",
            ),
            pb::EarnKind::Order => {
                order = check::order(req.order.as_ref(), &settings.proto.currency_code, &mut v);
                v.check(
                    req.points != 0,
                    "points",
                    "must be empty for order earns: the rules decide",
                );
            }
            pb::EarnKind::CampaignBonus | pb::EarnKind::Goodwill => {
                check::points(req.points, "points", &mut v)
            }
            _ => v.check(
                req.points != 0,
                "points",
                "must be empty for event earns: the rules decide",
            ),
        }
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        check::text(&req.reference, "reference", MAX_ID, &mut v);
        let occurred_at = check::time(req.occurred_at.as_ref(), "occurred_at", now, &mut v);
        v.check(
            occurred_at > now + chrono::Duration::days(1),
            "occurred_at",
            "must not be in the future",
        );
        v.finish()?;
        let key = self.key(ctx, "Earn", &req.request_id, req);
        let reply = self
            .mutate(key, async {
                self.members.ensure(ctx.program.as_str(), member).await?;
                let (points, applied, max_points_per_day, max_events_per_day, _) = self
                    .price_earn(
                        ctx.program.as_str(),
                        Some(member),
                        kind,
                        req.order.as_ref(),
                        req.points,
                        occurred_at,
                    )
                    .await?;
                let pending = kind == pb::EarnKind::Order;
                Ok(Command::Earn {
                    op: Earn {
                        program: ctx.program.to_string(),
                        member_id: member,
                        kind,
                        points,
                        max_points_per_day,
                        max_events_per_day,
                        order: order.map(|(order_id, total_minor, currency)| OrderRef {
                            order_id,
                            total_minor,
                            currency,
                        }),
                        reason: req.reason.clone(),
                        reference: req.reference.clone(),
                        occurred_at,
                        day: settings.day(occurred_at),
                        available_from: if pending {
                            settings.available_from(occurred_at)
                        } else {
                            occurred_at.min(now)
                        },
                        expires_at: settings.expires_at(occurred_at),
                    },
                    applied,
                })
            })
            .await?;
        match reply {
            Reply::Earn(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// PreviewEarn.
    pub async fn preview_earn(
        &self,
        ctx: &RequestContext,
        req: &pb::PreviewEarnRequest,
    ) -> Result<pb::PreviewEarnResponse, PointsError> {
        let settings = self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?;
        let now = clock_now(&self.clock);
        let mut v = Violations::new();
        let member = if req.member_id.is_empty() {
            None
        } else {
            Some(check::member_id(&req.member_id, "member_id", &mut v))
        };
        let kind = match pb::EarnKind::try_from(req.kind) {
            Ok(pb::EarnKind::Unspecified) | Err(_) => pb::EarnKind::Order,
            Ok(k) => k,
        };
        if kind == pb::EarnKind::Order {
            check::order(req.order.as_ref(), &settings.proto.currency_code, &mut v);
        } else if matches!(kind, pb::EarnKind::CampaignBonus | pb::EarnKind::Goodwill) {
            v.add(
                "kind",
                "campaign bonuses and goodwill earn the points given; nothing to preview",
            );
        }
        let at = check::time(req.occurred_at.as_ref(), "occurred_at", now, &mut v);
        v.finish()?;
        let (points, applied, _, _, version) = self
            .price_earn(
                ctx.program.as_str(),
                member,
                kind,
                req.order.as_ref(),
                0,
                at,
            )
            .await?;
        Ok(pb::PreviewEarnResponse {
            points,
            applied_rules: applied,
            rules_version: version,
        })
    }

    /// Redeem against an order (rewards: see the catalogue).
    pub async fn redeem(
        &self,
        ctx: &RequestContext,
        req: &pb::RedeemRequest,
    ) -> Result<pb::RedeemResponse, PointsError> {
        if let Some(pb::redeem_request::Target::Reward(_)) = &req.target {
            return self.redeem_reward(ctx, req).await;
        }
        let settings = self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?;
        let s = &settings.proto;
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let member = check::member_id(&req.member_id, "member_id", &mut v);
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        let Some(pb::redeem_request::Target::Order(order)) = &req.target else {
            v.add("target", "required: order or reward");
            return Err(v.into());
        };
        let order_id = order.order_id.trim();
        v.check(
            order_id.is_empty() || order_id.len() > MAX_ID,
            "order.order_id",
            "required, at most 128 characters",
        );
        let total = check::money(
            order.order_total.as_ref(),
            "order.order_total",
            &s.currency_code,
            false,
            &mut v,
        );
        check::points(req.points, "points", &mut v);
        let mut discount = 0;
        if v.is_empty() && req.points < s.min_redeem_points {
            v.add(
                "points",
                format!("at least {} points per redemption", s.min_redeem_points),
            );
        }
        if let Some((total_minor, _)) = &total
            && v.is_empty()
        {
            discount = settings.discount(req.points).unwrap_or(i64::MAX);
            let cap = (i128::from(*total_minor) * i128::from(s.max_order_share_bp) / 10_000) as i64;
            if discount > cap {
                v.add(
                    "points",
                    format!(
                        "the discount may pay at most {} of {} minor units ({} bp of the order)",
                        cap, total_minor, s.max_order_share_bp
                    ),
                );
            }
            if discount == 0 {
                v.add("points", "too few points to buy any discount");
            }
        }
        v.finish()?;
        let currency = total.map(|t| t.1).unwrap_or_default();
        let key = self.key(ctx, "Redeem", &req.request_id, req);
        let reply = self
            .mutate(key, async {
                self.members.ensure(ctx.program.as_str(), member).await?;
                Ok(Command::Spend {
                    op: Spend {
                        program: ctx.program.to_string(),
                        member_id: member,
                        points: req.points,
                        reason: if req.reason.is_empty() {
                            format!("discount on order {order_id}")
                        } else {
                            req.reason.clone()
                        },
                        reference: order_id.to_owned(),
                        order_id: order_id.to_owned(),
                    },
                    discount: Some(Money {
                        currency_code: currency.clone(),
                        amount_minor: discount,
                    }),
                })
            })
            .await?;
        match reply {
            Reply::Redeem(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Hold.
    pub async fn hold(
        &self,
        ctx: &RequestContext,
        req: &pb::HoldRequest,
    ) -> Result<pb::HoldResponse, PointsError> {
        let settings = self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?;
        let now = clock_now(&self.clock);
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let member = check::member_id(&req.member_id, "member_id", &mut v);
        check::points(req.points, "points", &mut v);
        check::text(&req.reference, "reference", MAX_ID, &mut v);
        let timeout = match &req.timeout {
            None => settings.hold_timeout(),
            Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
                v.add("timeout", "must be positive");
                settings.hold_timeout()
            }
            Some(d) => std::time::Duration::new(d.seconds as u64, d.nanos as u32),
        };
        v.check(timeout > MAX_HOLD, "timeout", "at most 7 days");
        v.finish()?;
        let expires_at =
            now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::minutes(15));
        let key = self.key(ctx, "Hold", &req.request_id, req);
        let reply = self
            .mutate(key, async {
                self.members.ensure(ctx.program.as_str(), member).await?;
                Ok(Command::Hold(PlaceHold {
                    program: ctx.program.to_string(),
                    member_id: member,
                    points: req.points,
                    expires_at,
                    reference: req.reference.clone(),
                }))
            })
            .await?;
        match reply {
            Reply::Hold(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Capture.
    pub async fn capture(
        &self,
        ctx: &RequestContext,
        req: &pb::CaptureRequest,
    ) -> Result<pb::CaptureResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let hold_id = check::uuid(&req.hold_id, "hold_id", "hold", &mut v);
        if req.points != 0 {
            check::points(req.points, "points", &mut v);
        }
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        check::text(&req.order_id, "order_id", MAX_ID, &mut v);
        v.finish()?;
        let key = self.key(ctx, "Capture", &req.request_id, req);
        let command = Command::Capture {
            program: ctx.program.to_string(),
            hold_id,
            points: req.points,
            reason: if req.reason.is_empty() {
                "points spent at checkout".into()
            } else {
                req.reason.clone()
            },
            order_id: req.order_id.clone(),
        };
        match self.mutate(key, async { Ok(command) }).await? {
            Reply::Capture(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Release.
    pub async fn release(
        &self,
        ctx: &RequestContext,
        req: &pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let hold_id = check::uuid(&req.hold_id, "hold_id", "hold", &mut v);
        v.finish()?;
        let key = self.key(ctx, "Release", &req.request_id, req);
        let command = Command::Release {
            program: ctx.program.to_string(),
            hold_id,
        };
        match self.mutate(key, async { Ok(command) }).await? {
            Reply::Release(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Reverse.
    pub async fn reverse(
        &self,
        ctx: &RequestContext,
        req: &pb::ReverseRequest,
    ) -> Result<pb::ReverseResponse, PointsError> {
        let settings = self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?;
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        let command = match &req.target {
            Some(pb::reverse_request::Target::OrderRefund(r)) => {
                let order_id = r.order_id.trim();
                v.check(
                    order_id.is_empty() || order_id.len() > MAX_ID,
                    "order_refund.order_id",
                    "required, at most 128 characters",
                );
                let refunded = match &r.refunded {
                    None => None,
                    Some(m) => check::money(Some(m), "order_refund.refunded", "", false, &mut v),
                };
                Command::ReverseEarn(ReverseEarn {
                    program: ctx.program.to_string(),
                    order_id: order_id.to_owned(),
                    refunded,
                    reason: if req.reason.is_empty() {
                        format!("refund of order {order_id}")
                    } else {
                        req.reason.clone()
                    },
                    policy: settings.reversal_policy(),
                })
            }
            Some(pb::reverse_request::Target::RedemptionMovementId(id)) => {
                let movement_id = check::uuid(id, "redemption_movement_id", "movement", &mut v);
                // A reward's points come back with its stock, by cancelling it.
                let reward: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM reward_redemptions WHERE program_id = $1 AND movement_id = $2",
                )
                .bind(ctx.program.as_str())
                .bind(movement_id)
                .fetch_optional(self.db.pool())
                .await?;
                if reward.is_some() {
                    v.add(
                        "redemption_movement_id",
                        "a reward redemption: cancel it with UpdateFulfilment, which also returns the stock",
                    );
                }
                Command::ReverseRedemption {
                    program: ctx.program.to_string(),
                    movement_id,
                    reason: if req.reason.is_empty() {
                        "redemption reversed".into()
                    } else {
                        req.reason.clone()
                    },
                }
            }
            None => {
                v.add("target", "required: order_refund or redemption_movement_id");
                return Err(v.into());
            }
        };
        v.finish()?;
        let key = self.key(ctx, "Reverse", &req.request_id, req);
        match self.mutate(key, async { Ok(command) }).await? {
            Reply::Reverse(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Adjust.
    pub async fn adjust(
        &self,
        ctx: &RequestContext,
        req: &pb::AdjustRequest,
    ) -> Result<pb::AdjustResponse, PointsError> {
        let settings = self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?;
        let now = clock_now(&self.clock);
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let member = check::member_id(&req.member_id, "member_id", &mut v);
        if req.points == 0 {
            v.add("points", "must not be 0");
        } else {
            check::points(
                req.points.checked_abs().unwrap_or(i64::MAX),
                "points",
                &mut v,
            );
        }
        v.check(
            req.reason.trim().is_empty(),
            "reason",
            "required: why the points change",
        );
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        check::text(&req.operator, "operator", MAX_ID, &mut v);
        v.finish()?;
        let key = self.key(ctx, "Adjust", &req.request_id, req);
        let reply = self
            .mutate(key, async {
                self.members.ensure(ctx.program.as_str(), member).await?;
                Ok(Command::Adjust {
                    program: ctx.program.to_string(),
                    member_id: member,
                    points: req.points,
                    reason: req.reason.clone(),
                    operator: if req.operator.is_empty() {
                        ctx.caller.name().to_owned()
                    } else {
                        req.operator.clone()
                    },
                    terms: LotTerms {
                        available_from: now,
                        expires_at: settings.expires_at(now),
                    },
                })
            })
            .await?;
        match reply {
            Reply::Adjust(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Transfer.
    pub async fn transfer(
        &self,
        ctx: &RequestContext,
        req: &pb::TransferRequest,
    ) -> Result<pb::TransferResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let from = check::member_id(&req.from_member_id, "from_member_id", &mut v);
        let to = check::member_id(&req.to_member_id, "to_member_id", &mut v);
        v.check(
            !from.is_nil() && from == to,
            "to_member_id",
            "must differ from from_member_id",
        );
        check::points(req.points, "points", &mut v);
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        v.finish()?;
        let key = self.key(ctx, "Transfer", &req.request_id, req);
        let reply = self
            .mutate(key, async {
                self.members.ensure(ctx.program.as_str(), from).await?;
                self.members.ensure(ctx.program.as_str(), to).await?;
                Ok(Command::Transfer {
                    program: ctx.program.to_string(),
                    from,
                    to,
                    points: req.points,
                    reason: if req.reason.is_empty() {
                        "transfer".into()
                    } else {
                        req.reason.clone()
                    },
                })
            })
            .await?;
        match reply {
            Reply::Transfer(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
}

/// Answers this replica gave, by (programme, caller, operation, request_id,
/// request digest). A stored answer never changes, so a copy is always
/// right; it lives ten minutes (the database keeps it 24 hours).
pub(crate) type ReplyCache =
    moka::sync::Cache<(String, String, &'static str, String, Vec<u8>), Reply>;

/// The reply cache with its bounds.
pub(crate) fn reply_cache() -> ReplyCache {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(std::time::Duration::from_secs(600))
        .build()
}

fn reply_key(key: &BatchKey) -> (String, String, &'static str, String, Vec<u8>) {
    (
        key.program.clone(),
        key.caller.clone(),
        key.operation,
        key.request_id.clone(),
        key.digest.clone(),
    )
}

fn no_rules() -> pb::AppliedRule {
    pb::AppliedRule {
        rule: "none".into(),
        points: 0,
        detail: "no earn rule applies".into(),
    }
}

fn unexpected() -> PointsError {
    PointsError::Internal(anyhow::anyhow!(
        "the ledger answered with another operation's reply"
    ))
}
