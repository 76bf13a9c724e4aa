//! What the points service does with other services' events, each in the
//! consumer's transaction with the inbox row, so it happens once:
//! a purchase earns and a refund reverses (member.ActivityRecorded), reviews,
//! shares and check-ins earn by the event rules, an enrolment with a referrer
//! earns the referrer's referral, merges move lots and holds to the
//! survivor, erasure forfeits the balance, and TierChanged keeps the tier
//! history that tier multipliers read.

use chrono::{DateTime, Utc};
use laurel_proto::{member::v1 as member, points::v1 as pb, tier::v1 as tier};
use laurel_runtime::events::{
    handler::{EventContext, HandlerError},
    router::Router,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    Points, clock_now,
    error::PointsError,
    ledger::{
        book::LedgerError,
        ops::{Earn, OrderRef, ReverseEarn},
    },
    writer::{Command, Request},
};

/// The consumer's routes.
pub fn router(points: Points) -> Router {
    let (p1, p2, p3, p4, p5) = (
        points.clone(),
        points.clone(),
        points.clone(),
        points.clone(),
        points,
    );
    Router::new()
        .on(move |tx, event, m: member::ActivityRecorded| {
            let p = p1.clone();
            Box::pin(async move { p.on_activity(tx, event, m).await })
        })
        .on(move |tx, event, m: member::MemberCreated| {
            let p = p2.clone();
            Box::pin(async move { p.on_member_created(tx, event, m).await })
        })
        .on(move |tx, event, m: member::MemberMerged| {
            let p = p3.clone();
            Box::pin(async move {
                let (from, to) = (id(&m.merged_member_id)?, id(&m.survivor_member_id)?);
                p.apply_event(
                    tx,
                    Command::Merge {
                        program: event.program_id().to_owned(),
                        from,
                        to,
                    },
                )
                .await
            })
        })
        .on(move |tx, event, m: member::MemberErased| {
            let p = p4.clone();
            Box::pin(async move {
                let member_id = id(&m.member_id)?;
                p.apply_event(
                    tx,
                    Command::Erase {
                        program: event.program_id().to_owned(),
                        member_id,
                    },
                )
                .await
            })
        })
        .on(move |tx, event, m: tier::TierChanged| {
            let p = p5.clone();
            Box::pin(async move { p.on_tier_changed(tx, event, m).await })
        })
}

fn id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|e| HandlerError::terminal(anyhow::anyhow!("bad member id {raw:?}: {e}")))
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .and_then(|at| DateTime::from_timestamp_micros(at.timestamp_micros()))
}

/// An earn an event asks for.
struct EventEarn {
    program: String,
    member_id: Uuid,
    kind: pb::EarnKind,
    order: Option<pb::Order>,
    occurred_at: DateTime<Utc>,
    reason: String,
    reference: String,
}

/// How a refused command or a failure reads to the consumer.
fn outcome(result: Result<(), PointsError>) -> Result<(), HandlerError> {
    match result {
        Ok(()) => Ok(()),
        // Already earned by an Earn call, nothing to reverse, or a member
        // gone: the event has nothing left to do.
        Err(PointsError::Ledger(
            LedgerError::OrderAlreadyEarned
            | LedgerError::OrderNotEarned
            | LedgerError::MemberInactive(_)
            | LedgerError::InsufficientPoints { .. },
        )) => Ok(()),
        Err(PointsError::Invalid(v)) => Err(HandlerError::terminal(anyhow::anyhow!(
            "invalid event: {:?}",
            v.fields()
        ))),
        Err(PointsError::Db(e)) => Err(HandlerError::retryable(e)),
        Err(e) => Err(HandlerError::retryable(anyhow::anyhow!("{e}"))),
    }
}

impl Points {
    /// Applies one command in the consumer's transaction.
    async fn apply_event(
        &self,
        tx: &mut PgConnection,
        command: Command,
    ) -> Result<(), HandlerError> {
        let result = match self
            .direct
            .apply_batch(tx, &[Request { key: None, command }])
            .await
        {
            Ok(mut outcomes) => outcomes.pop().expect("one outcome").map(|_| ()),
            Err(e) => Err(e),
        };
        outcome(result)
    }

    async fn earn_event(&self, tx: &mut PgConnection, e: EventEarn) -> Result<(), HandlerError> {
        let EventEarn {
            program,
            member_id,
            kind,
            order,
            occurred_at,
            reason,
            reference,
        } = e;
        let program = program.as_str();
        let settings = self
            .settings
            .get(self.db.pool(), program)
            .await
            .map_err(HandlerError::retryable)?;
        let priced = self
            .price_earn(
                program,
                Some(member_id),
                kind,
                order.as_ref(),
                0,
                occurred_at,
            )
            .await;
        let (points, applied, max_points_per_day, max_events_per_day, _) = match priced {
            Ok(p) => p,
            Err(e) => return outcome(Err(e)),
        };
        let order_ref = order.as_ref().map(|o| {
            let total = o.total.clone().unwrap_or_default();
            OrderRef {
                order_id: o.order_id.clone(),
                total_minor: total.amount_minor,
                currency: total.currency_code,
            }
        });
        let now = clock_now(&self.clock);
        let pending = kind == pb::EarnKind::Order;
        let command = Command::Earn {
            op: Earn {
                program: program.to_owned(),
                member_id,
                kind,
                points,
                max_points_per_day,
                max_events_per_day,
                order: order_ref,
                reason,
                reference,
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
        };
        self.apply_event(tx, command).await
    }

    async fn on_activity(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::ActivityRecorded,
    ) -> Result<(), HandlerError> {
        let Some(activity) = m.activity else {
            return Err(HandlerError::terminal(anyhow::anyhow!(
                "ActivityRecorded without an activity"
            )));
        };
        // A guest's purchase or refund (RecordActivity with guest set) names
        // no member: nothing earns and no earn of a guest order exists to
        // reverse, so it is done with, not dead-lettered.
        if activity.member_id.is_empty() {
            return Ok(());
        }
        let program = event.program_id().to_owned();
        let member_id = id(&activity.member_id)?;
        let now = clock_now(&self.clock);
        let occurred_at = time(&activity.occurred_at).unwrap_or(now);
        self.members.learn(&program, member_id);
        use member::activity::Detail;
        match activity.detail {
            Some(Detail::Purchase(p)) => {
                let order = pb::Order {
                    order_id: p.order_id.clone(),
                    total: p.total,
                    lines: p
                        .lines
                        .into_iter()
                        .map(|l| pb::OrderLine {
                            sku: l.sku,
                            category: l.category,
                            quantity: l.quantity,
                            unit_price_minor: l.unit_price_minor,
                        })
                        .collect(),
                };
                let reason = format!("purchase {}", p.order_id);
                self.earn_event(
                    tx,
                    EventEarn {
                        program: program.clone(),
                        member_id,
                        kind: pb::EarnKind::Order,
                        order: Some(order),
                        occurred_at,
                        reason,
                        reference: p.order_id,
                    },
                )
                .await
            }
            Some(Detail::Refund(r)) => {
                let settings = self
                    .settings
                    .get(self.db.pool(), &program)
                    .await
                    .map_err(HandlerError::retryable)?;
                let refunded = r
                    .amount
                    .map(|a| (a.amount_minor, a.currency_code.to_ascii_uppercase()));
                self.apply_event(
                    tx,
                    Command::ReverseEarn(ReverseEarn {
                        program,
                        order_id: r.order_id.clone(),
                        refunded,
                        reason: format!("refund of order {}", r.order_id),
                        policy: settings.reversal_policy(),
                    }),
                )
                .await
            }
            Some(Detail::Review(r)) => {
                self.earn_event(
                    tx,
                    EventEarn {
                        program: program.clone(),
                        member_id,
                        kind: pb::EarnKind::Review,
                        order: None,
                        occurred_at,
                        reason: "product review".into(),
                        reference: r.sku,
                    },
                )
                .await
            }
            Some(Detail::Share(s)) => {
                self.earn_event(
                    tx,
                    EventEarn {
                        program: program.clone(),
                        member_id,
                        kind: pb::EarnKind::Share,
                        order: None,
                        occurred_at,
                        reason: "social share".into(),
                        reference: s.platform,
                    },
                )
                .await
            }
            Some(Detail::CheckIn(c)) => {
                self.earn_event(
                    tx,
                    EventEarn {
                        program: program.clone(),
                        member_id,
                        kind: pb::EarnKind::CheckIn,
                        order: None,
                        occurred_at,
                        reason: "check-in".into(),
                        reference: c.location_id,
                    },
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn on_member_created(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::MemberCreated,
    ) -> Result<(), HandlerError> {
        let program = event.program_id().to_owned();
        let member_id = id(&m.member_id)?;
        self.members.learn(&program, member_id);
        if m.referred_by_member_id.is_empty() {
            return Ok(());
        }
        let referrer = id(&m.referred_by_member_id)?;
        let at = event.occurred_at.unwrap_or_else(|| clock_now(&self.clock));
        let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
        self.earn_event(
            tx,
            EventEarn {
                program: program.clone(),
                member_id: referrer,
                kind: pb::EarnKind::Referral,
                order: None,
                occurred_at: at,
                reason: "referral".into(),
                reference: member_id.to_string(),
            },
        )
        .await
    }

    async fn on_tier_changed(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tier::TierChanged,
    ) -> Result<(), HandlerError> {
        let member_id = id(&m.member_id)?;
        let at = time(&m.effective_at)
            .or(event.occurred_at)
            .unwrap_or_else(|| clock_now(&self.clock));
        sqlx::query(
            "INSERT INTO member_tiers (program_id, member_id, effective_at, tier) VALUES ($1, $2, $3, $4)
             ON CONFLICT (program_id, member_id, effective_at) DO UPDATE SET tier = EXCLUDED.tier",
        )
        .bind(event.program_id())
        .bind(member_id)
        .bind(at)
        .bind(m.tier.trim().to_ascii_lowercase())
        .execute(tx)
        .await
        .map_err(HandlerError::retryable)?;
        Ok(())
    }
}
