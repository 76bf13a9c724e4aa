//! The ledger's operations, each a plain function over the [`Book`]: it
//! checks everything first and changes the book only when it succeeds.

use chrono::{DateTime, NaiveDate, Utc};
use laurel_proto::points::v1 as pb;
use uuid::Uuid;

use super::{
    book::{
        Account, Book, DailyKey, Hold, HoldStatus, LedgerError, NewMovement, OrderEarn, Status,
    },
    lots::{self, Lot},
};

/// Whether refunds may push a balance below zero, and how far they reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversalPolicy {
    /// Take back everything; the balance may go negative.
    AllowNegative,
    /// Take back what the member has left, never below zero.
    ClawBackRemaining,
    /// Cancel only the order's points still pending.
    CancelPendingOnly,
}

/// An order that earns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRef {
    /// Order id.
    pub order_id: String,
    /// Total in minor units.
    pub total_minor: i64,
    /// Currency.
    pub currency: String,
}

/// Credit points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earn {
    /// Programme.
    pub program: String,
    /// Member.
    pub member_id: Uuid,
    /// Why.
    pub kind: pb::EarnKind,
    /// Points by the rules, before daily limits.
    pub points: i64,
    /// Most order points per member and day.
    pub max_points_per_day: Option<i64>,
    /// Most events of this kind per member and day.
    pub max_events_per_day: Option<i32>,
    /// The order, for order earns.
    pub order: Option<OrderRef>,
    /// Statement text.
    pub reason: String,
    /// Reference.
    pub reference: String,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// The programme's local day of `occurred_at`, which daily caps and
    /// limits count in.
    pub day: NaiveDate,
    /// Pending until.
    pub available_from: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What an earn did.
#[derive(Clone, Debug)]
pub struct Earned {
    /// The movement, unless nothing was earned.
    pub movement: Option<pb::Movement>,
    /// A daily limit that cut the points.
    pub limited: Option<pb::AppliedRule>,
}

/// Spend points (a discount or a reward).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// Programme.
    pub program: String,
    /// Member.
    pub member_id: Uuid,
    /// Points.
    pub points: i64,
    /// Statement text.
    pub reason: String,
    /// Reference.
    pub reference: String,
    /// Order.
    pub order_id: String,
}

/// Reserve points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceHold {
    /// Programme.
    pub program: String,
    /// Member.
    pub member_id: Uuid,
    /// Points.
    pub points: i64,
    /// Timeout.
    pub expires_at: DateTime<Utc>,
    /// Reference.
    pub reference: String,
}

/// Reverse an order's earn after a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseEarn {
    /// Programme.
    pub program: String,
    /// Order.
    pub order_id: String,
    /// Refunded amount and currency; the rest of the order when `None`.
    pub refunded: Option<(i64, String)>,
    /// Statement text.
    pub reason: String,
    /// Programme policy.
    pub policy: ReversalPolicy,
}

/// What a reversal did.
#[derive(Clone, Debug)]
pub struct Reversed {
    /// The movement, unless nothing was taken.
    pub movement: Option<pb::Movement>,
    /// Points the policy let go.
    pub not_reversed: i64,
    /// The member.
    pub member_id: Uuid,
}

/// A new lot's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LotTerms {
    /// Pending until.
    pub available_from: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

fn in_bounds(points: i64) -> Result<i64, LedgerError> {
    if (1..=super::book::MAX_POINTS).contains(&points) {
        Ok(points)
    } else {
        Err(LedgerError::Overflow)
    }
}

fn checked(v: Option<i64>) -> Result<i64, LedgerError> {
    v.ok_or(LedgerError::Overflow)
}

impl Book {
    fn new_lot(
        &mut self,
        program: &str,
        member: Uuid,
        movement: Uuid,
        points: i64,
        remaining: i64,
        terms: LotTerms,
    ) -> Uuid {
        let lot = Lot {
            lot_id: Uuid::now_v7(),
            member_id: member,
            movement_id: movement,
            points,
            remaining,
            earned_at: self.now,
            available_from: terms.available_from,
            expires_at: terms.expires_at,
        };
        let id = lot.lot_id;
        self.account_mut(program, member).lots.push(lot.clone());
        self.new_lots.push((program.to_owned(), lot));
        id
    }

    /// Credits points into a new lot, repaying any debt first.
    fn credit(
        &mut self,
        program: &str,
        member: Uuid,
        points: i64,
        earned: bool,
    ) -> Result<(i64, i64), LedgerError> {
        let account = self.account_mut(program, member);
        let repaid = account.debt.min(points);
        let new_balance = checked(account.balance.checked_add(points))?;
        let new_lots = checked(account.lots_total.checked_add(points - repaid))?;
        let lifetime = if earned {
            checked(account.lifetime_earned.checked_add(points))?
        } else {
            account.lifetime_earned
        };
        if new_balance > super::book::MAX_POINTS * 1000 {
            return Err(LedgerError::Overflow);
        }
        account.balance = new_balance;
        account.lots_total = new_lots;
        account.debt -= repaid;
        account.lifetime_earned = lifetime;
        account.changed = true;
        Ok((points - repaid, repaid))
    }

    /// Earn: credits a new lot (after daily limits), once per order.
    pub fn earn(&mut self, op: &Earn) -> Result<Earned, LedgerError> {
        let member = self.active(&op.program, op.member_id)?.member_id;
        if let Some(order) = &op.order
            && self
                .orders
                .contains_key(&(op.program.clone(), order.order_id.clone()))
        {
            return Err(LedgerError::OrderAlreadyEarned);
        }
        let day = DailyKey {
            program: op.program.clone(),
            member_id: member,
            day: op.day,
            kind: op.kind as i32,
        };
        let today = self.daily.get(&day).copied().unwrap_or_default();
        let mut points = op.points.max(0);
        let mut limited = None;
        if let Some(max) = op.max_events_per_day
            && today.events >= max
        {
            limited = Some(pb::AppliedRule {
                rule: "limit:day".into(),
                points: -points,
                detail: format!("at most {max} a day"),
            });
            points = 0;
        }
        if let Some(cap) = op.max_points_per_day {
            let (allowed, cut) = crate::rules::apply_daily_cap(points, today.points, cap);
            points = allowed;
            limited = cut.or(limited);
        }
        if points > 0 {
            in_bounds(points)?;
        }
        self.expire_due(&op.program, member, "expired")?;
        let mut movement = None;
        let mut lot_id = None;
        let mut movement_id = Uuid::nil();
        if points > 0 {
            let (into_lot, repaid) = self.credit(&op.program, member, points, true)?;
            movement_id = self.record(NewMovement {
                kind: pb::MovementType::Earn,
                program: &op.program,
                member_id: member,
                points,
                earn_kind: op.kind,
                reason: op.reason.clone(),
                reference: op.reference.clone(),
                order_id: op
                    .order
                    .as_ref()
                    .map(|o| o.order_id.clone())
                    .unwrap_or_default(),
                related: None,
                counterparty: None,
                occurred_at: op.occurred_at,
                entries: vec![
                    (pb::Account::Member, Some(member), points),
                    (pb::Account::Issued, None, -points),
                ],
            })?;
            let terms = LotTerms {
                available_from: op.available_from,
                expires_at: op.expires_at,
            };
            let id = self.new_lot(&op.program, member, movement_id, points, into_lot, terms);
            if repaid > 0 {
                self.lot_uses.push((movement_id, id, repaid));
            }
            lot_id = Some(id);
            movement = self.recorded.last().map(|r| r.movement.clone());
        }
        self.count_daily(day, points)?;
        if let Some(order) = &op.order {
            self.orders.insert(
                (op.program.clone(), order.order_id.clone()),
                OrderEarn {
                    program: op.program.clone(),
                    order_id: order.order_id.clone(),
                    member_id: member,
                    movement_id,
                    lot_id,
                    points,
                    total_minor: order.total_minor,
                    currency: order.currency.clone(),
                    refunded_minor: 0,
                    reversed: 0,
                    changed: true,
                },
            );
        }
        Ok(Earned { movement, limited })
    }

    /// Takes `points` spendable points from an active account, after
    /// expiring its due lots; returns the lots used.
    fn take(
        &mut self,
        program: &str,
        member: Uuid,
        points: i64,
    ) -> Result<Vec<(Uuid, i64)>, LedgerError> {
        in_bounds(points)?;
        self.expire_due(program, member, "expired")?;
        let now = self.now;
        let account = self.account_mut(program, member);
        let available = account.available(now);
        if available < points {
            return Err(LedgerError::InsufficientPoints {
                available: available.max(0),
                requested: points,
            });
        }
        let uses = lots::take(&mut account.lots, points, now).ok_or_else(|| {
            LedgerError::Internal(format!(
                "lots of {member} do not cover its available points"
            ))
        })?;
        account.lots_total -= points;
        account.changed = true;
        Ok(uses)
    }

    /// Redeem: spends points, soonest-expiring lots first.
    pub fn spend(&mut self, op: &Spend) -> Result<pb::Movement, LedgerError> {
        let member = self.active(&op.program, op.member_id)?.member_id;
        let uses = self.take(&op.program, member, op.points)?;
        self.account_mut(&op.program, member).balance -= op.points;
        let movement_id = self.record(NewMovement {
            kind: pb::MovementType::Redeem,
            program: &op.program,
            member_id: member,
            points: -op.points,
            earn_kind: pb::EarnKind::Unspecified,
            reason: op.reason.clone(),
            reference: op.reference.clone(),
            order_id: op.order_id.clone(),
            related: None,
            counterparty: None,
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(member), -op.points),
                (pb::Account::Redeemed, None, op.points),
            ],
        })?;
        self.lot_uses
            .extend(uses.iter().map(|(l, n)| (movement_id, *l, *n)));
        self.remember_redemption(&op.program, movement_id, member, op.points, uses);
        Ok(self.recorded.last().expect("recorded").movement.clone())
    }

    fn remember_redemption(
        &mut self,
        program: &str,
        movement_id: Uuid,
        member: Uuid,
        points: i64,
        uses: Vec<(Uuid, i64)>,
    ) {
        self.redemptions.insert(
            movement_id,
            super::book::Redemption {
                program: program.to_owned(),
                movement_id,
                member_id: member,
                points,
                uses,
                reversed: false,
            },
        );
    }

    /// Hold: reserves points from the lots, soonest-expiring first.
    pub fn place_hold(&mut self, op: &PlaceHold) -> Result<pb::PointsHold, LedgerError> {
        let member = self.active(&op.program, op.member_id)?.member_id;
        let uses = self.take(&op.program, member, op.points)?;
        let account = self.account_mut(&op.program, member);
        account.held += op.points;
        let hold = Hold {
            program: op.program.clone(),
            hold_id: Uuid::now_v7(),
            member_id: member,
            points: op.points,
            captured: 0,
            status: HoldStatus::Active,
            expires_at: op.expires_at,
            reference: op.reference.clone(),
            created_at: self.now,
            resolved_at: None,
            movement_id: None,
            lots: uses,
            new: true,
            changed: true,
        };
        let id = hold.hold_id;
        self.holds.insert(id, hold);
        self.hold_changed(id);
        Ok(self.holds[&id].view())
    }

    fn active_hold(&self, hold_id: Uuid) -> Result<&Hold, LedgerError> {
        let hold = self.holds.get(&hold_id).ok_or(LedgerError::HoldNotFound)?;
        match hold.status {
            HoldStatus::Active => Ok(hold),
            HoldStatus::Captured => Err(LedgerError::HoldNotActive("captured")),
            HoldStatus::Released => Err(LedgerError::HoldNotActive("released")),
            HoldStatus::Expired => Err(LedgerError::HoldNotActive("expired")),
        }
    }

    /// Puts `uses` back into the account's lots.
    fn restore(
        &mut self,
        program: &str,
        member: Uuid,
        uses: &[(Uuid, i64)],
    ) -> Result<i64, LedgerError> {
        let total: i64 = uses.iter().map(|(_, n)| n).sum();
        let account = self.account_mut(program, member);
        lots::restore(&mut account.lots, uses).map_err(|e| LedgerError::Internal(e.to_string()))?;
        account.lots_total = checked(account.lots_total.checked_add(total))?;
        account.changed = true;
        Ok(total)
    }

    /// Capture: spends all or part of a hold; the rest goes back to its lots.
    pub fn capture(
        &mut self,
        hold_id: Uuid,
        points: i64,
        reason: &str,
        order_id: &str,
    ) -> Result<(pb::PointsHold, pb::Movement), LedgerError> {
        let hold = self.active_hold(hold_id)?.clone();
        if hold.expires_at <= self.now {
            return Err(LedgerError::HoldExpired);
        }
        let amount = if points == 0 { hold.points } else { points };
        if amount > hold.points {
            return Err(LedgerError::CaptureExceedsHold {
                held: hold.points,
                requested: amount,
            });
        }
        in_bounds(amount)?;
        let (program, member) = (hold.program.clone(), hold.member_id);
        // The hold's lots are in spending order: capture the first ones.
        let mut left = amount;
        let (mut captured, mut rest) = (Vec::new(), Vec::new());
        for (lot, n) in &hold.lots {
            let c = (*n).min(left);
            left -= c;
            if c > 0 {
                captured.push((*lot, c));
            }
            if n - c > 0 {
                rest.push((*lot, n - c));
            }
        }
        self.restore(&program, member, &rest)?;
        let account = self.account_mut(&program, member);
        account.held -= hold.points;
        account.balance -= amount;
        let movement_id = self.record(NewMovement {
            kind: pb::MovementType::Capture,
            program: &program,
            member_id: member,
            points: -amount,
            earn_kind: pb::EarnKind::Unspecified,
            reason: reason.to_owned(),
            reference: hold.reference.clone(),
            order_id: order_id.to_owned(),
            related: None,
            counterparty: None,
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(member), -amount),
                (pb::Account::Redeemed, None, amount),
            ],
        })?;
        self.lot_uses
            .extend(captured.iter().map(|(l, n)| (movement_id, *l, *n)));
        self.remember_redemption(&program, movement_id, member, amount, captured);
        let movement = self.recorded.last().expect("recorded").movement.clone();
        let now = self.now;
        let h = self.holds.get_mut(&hold_id).expect("loaded");
        h.status = HoldStatus::Captured;
        h.captured = amount;
        h.resolved_at = Some(now);
        h.movement_id = Some(movement_id);
        h.changed = true;
        self.hold_changed(hold_id);
        self.expire_due(&program, member, "expired")?;
        Ok((self.holds[&hold_id].view(), movement))
    }

    /// Release (or time out): returns a hold's points to their lots.
    pub fn release(
        &mut self,
        hold_id: Uuid,
        timed_out: bool,
    ) -> Result<pb::PointsHold, LedgerError> {
        let hold = self.active_hold(hold_id)?.clone();
        if timed_out && hold.expires_at > self.now {
            return Err(LedgerError::HoldNotActive("not yet due"));
        }
        self.restore(&hold.program, hold.member_id, &hold.lots)?;
        self.account_mut(&hold.program, hold.member_id).held -= hold.points;
        let now = self.now;
        let h = self.holds.get_mut(&hold_id).expect("loaded");
        h.status = if timed_out {
            HoldStatus::Expired
        } else {
            HoldStatus::Released
        };
        h.resolved_at = Some(now);
        h.changed = true;
        self.hold_changed(hold_id);
        self.expire_due(&hold.program, hold.member_id, "expired")?;
        Ok(self.holds[&hold_id].view())
    }

    /// Reverse an order's earn in proportion to what was refunded.
    pub fn reverse_earn(&mut self, op: &ReverseEarn) -> Result<Reversed, LedgerError> {
        let key = (op.program.clone(), op.order_id.clone());
        let order = self
            .orders
            .get(&key)
            .ok_or(LedgerError::OrderNotEarned)?
            .clone();
        let (amount, currency) = op.refunded.clone().unwrap_or((
            order.total_minor - order.refunded_minor,
            order.currency.clone(),
        ));
        if currency != order.currency {
            return Err(LedgerError::CurrencyMismatch);
        }
        let refunded = checked(order.refunded_minor.checked_add(amount))?;
        if amount < 0 || refunded > order.total_minor {
            return Err(LedgerError::RefundExceedsOrder);
        }
        let target = if order.total_minor == 0 {
            order.points
        } else {
            (i128::from(order.points) * i128::from(refunded) / i128::from(order.total_minor)) as i64
        };
        let due = (target - order.reversed).max(0);
        let member = self.resolve(&op.program, order.member_id);
        let account = self.account_mut(&op.program, member);
        if account.status != Status::Active {
            return Err(LedgerError::MemberInactive(
                if account.status == Status::Erased {
                    "erased"
                } else {
                    "merged"
                },
            ));
        }
        self.expire_due(&op.program, member, "expired")?;
        let now = self.now;
        let account = self.account_mut(&op.program, member);
        // Plan on a copy, then apply.
        let mut lots = account.lots.clone();
        let mut uses: Vec<(Uuid, i64)> = Vec::new();
        let mut taken = 0;
        if let Some(lot) = order
            .lot_id
            .and_then(|id| lots.iter_mut().find(|l| l.lot_id == id))
        {
            let from_lot = match op.policy {
                ReversalPolicy::CancelPendingOnly if !lot.is_pending(now) => 0,
                _ => lots::take_from(lot, due, now),
            };
            if from_lot > 0 {
                uses.push((lot.lot_id, from_lot));
                taken += from_lot;
            }
        }
        if op.policy != ReversalPolicy::CancelPendingOnly && taken < due {
            let pending_now = lots::pending(&lots, now);
            let spendable_now = (account.lots_total - taken - pending_now - account.debt).max(0);
            let more = (due - taken).min(spendable_now);
            if more > 0 {
                let more_uses = lots::take(&mut lots, more, now).ok_or_else(|| {
                    LedgerError::Internal("lots do not cover the available points".into())
                })?;
                uses.extend(more_uses);
                taken += more;
            }
        }
        let debt = if op.policy == ReversalPolicy::AllowNegative {
            due - taken
        } else {
            0
        };
        let reversed = taken + debt;
        account.lots = lots;
        account.lots_total -= taken;
        account.debt += debt;
        account.balance -= reversed;
        account.changed = true;
        let mut movement = None;
        if reversed > 0 {
            let movement_id = self.record(NewMovement {
                kind: pb::MovementType::ReverseEarn,
                program: &op.program,
                member_id: member,
                points: -reversed,
                earn_kind: pb::EarnKind::Order,
                reason: op.reason.clone(),
                reference: op.order_id.clone(),
                order_id: op.order_id.clone(),
                related: Some(order.movement_id).filter(|m| !m.is_nil()),
                counterparty: None,
                occurred_at: now,
                entries: vec![
                    (pb::Account::Member, Some(member), -reversed),
                    (pb::Account::Issued, None, reversed),
                ],
            })?;
            self.lot_uses
                .extend(uses.iter().map(|(l, n)| (movement_id, *l, *n)));
            movement = Some(self.recorded.last().expect("recorded").movement.clone());
        }
        let o = self.orders.get_mut(&key).expect("loaded");
        o.refunded_minor = refunded;
        o.reversed = target.max(o.reversed);
        o.changed = true;
        Ok(Reversed {
            movement,
            not_reversed: due - reversed,
            member_id: member,
        })
    }

    /// Undo a redemption or capture: its points go back into the lots they
    /// came from, with their original expiry (due ones expire at once).
    pub fn reverse_redemption(
        &mut self,
        program: &str,
        movement_id: Uuid,
        reason: &str,
    ) -> Result<pb::Movement, LedgerError> {
        let r = self
            .redemptions
            .get(&movement_id)
            .filter(|r| r.program == program)
            .ok_or(LedgerError::RedemptionNotFound)?
            .clone();
        if r.reversed {
            return Err(LedgerError::AlreadyReversed);
        }
        let member = self.active(program, r.member_id)?.member_id;
        let restored = self.restore(program, member, &r.uses)?;
        if restored != r.points {
            return Err(LedgerError::Internal(
                "redemption uses do not add up".into(),
            ));
        }
        let account = self.account_mut(program, member);
        account.balance = checked(account.balance.checked_add(r.points))?;
        let id = self.record(NewMovement {
            kind: pb::MovementType::ReverseRedemption,
            program,
            member_id: member,
            points: r.points,
            earn_kind: pb::EarnKind::Unspecified,
            reason: reason.to_owned(),
            reference: String::new(),
            order_id: String::new(),
            related: Some(movement_id),
            counterparty: None,
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(member), r.points),
                (pb::Account::Redeemed, None, -r.points),
            ],
        })?;
        self.lot_uses
            .extend(r.uses.iter().map(|(l, n)| (id, *l, -n)));
        self.redemptions
            .get_mut(&movement_id)
            .expect("loaded")
            .reversed = true;
        let movement = self.recorded.last().expect("recorded").movement.clone();
        self.expire_due(program, member, "expired")?;
        Ok(movement)
    }

    /// Adjust: an operator's credit (a new lot) or debit (spendable points).
    pub fn adjust(
        &mut self,
        program: &str,
        member: Uuid,
        points: i64,
        reason: &str,
        operator: &str,
        terms: LotTerms,
    ) -> Result<pb::Movement, LedgerError> {
        let member = self.active(program, member)?.member_id;
        in_bounds(points.checked_abs().ok_or(LedgerError::Overflow)?)?;
        let mut uses = Vec::new();
        let mut credited = (0, 0);
        if points > 0 {
            credited = self.credit(program, member, points, false)?;
        } else {
            uses = self.take(program, member, -points)?;
            self.account_mut(program, member).balance += points;
        }
        let id = self.record(NewMovement {
            kind: pb::MovementType::Adjust,
            program,
            member_id: member,
            points,
            earn_kind: pb::EarnKind::Unspecified,
            reason: reason.to_owned(),
            reference: operator.to_owned(),
            order_id: String::new(),
            related: None,
            counterparty: None,
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(member), points),
                (pb::Account::Adjusted, None, -points),
            ],
        })?;
        if points > 0 {
            // A credit goes into a lot of its own, after any debt.
            let (into_lot, repaid) = credited;
            let lot = self.new_lot(program, member, id, points, into_lot, terms);
            if repaid > 0 {
                self.lot_uses.push((id, lot, repaid));
            }
        } else {
            self.lot_uses.extend(uses.iter().map(|(l, n)| (id, *l, *n)));
        }
        Ok(self.recorded.last().expect("recorded").movement.clone())
    }

    /// Transfer between two active members (merged and erased are refused).
    pub fn transfer(
        &mut self,
        program: &str,
        from: Uuid,
        to: Uuid,
        points: i64,
        reason: &str,
    ) -> Result<pb::Movement, LedgerError> {
        if from == to {
            return Err(LedgerError::SameMember);
        }
        for member in [from, to] {
            match self.account_mut(program, member).status {
                Status::Active => {}
                Status::Merged => return Err(LedgerError::MemberInactive("merged")),
                Status::Erased => return Err(LedgerError::MemberInactive("erased")),
            }
        }
        let uses = self.take(program, from, points)?;
        self.account_mut(program, from).balance -= points;
        let (into_lots, _) = self.credit(program, to, points, false)?;
        let id = self.record(NewMovement {
            kind: pb::MovementType::Transfer,
            program,
            member_id: from,
            points: -points,
            earn_kind: pb::EarnKind::Unspecified,
            reason: reason.to_owned(),
            reference: String::new(),
            order_id: String::new(),
            related: None,
            counterparty: Some(to),
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(from), -points),
                (pb::Account::Transferred, None, points),
                (pb::Account::Transferred, None, -points),
                (pb::Account::Member, Some(to), points),
            ],
        })?;
        self.lot_uses.extend(uses.iter().map(|(l, n)| (id, *l, *n)));
        // The receiver's points keep the expiry of the lots they came from.
        let mut left_for_debt = points - into_lots;
        for (lot_id, n) in &uses {
            let source = self.accounts[&(program.to_owned(), from)]
                .lots
                .iter()
                .find(|l| l.lot_id == *lot_id)
                .cloned()
                .expect("used lots are loaded");
            let repay = left_for_debt.min(*n);
            left_for_debt -= repay;
            let terms = LotTerms {
                available_from: self.now,
                expires_at: source.expires_at,
            };
            let new = self.new_lot(program, to, id, *n, n - repay, terms);
            if repay > 0 {
                self.lot_uses.push((id, new, repay));
            }
        }
        Ok(self.recorded.last().expect("recorded").movement.clone())
    }

    /// Merge: the merged member's lots, holds, debt and balance move to the
    /// survivor; the merged account stays, marked merged.
    pub fn merge(
        &mut self,
        program: &str,
        from: Uuid,
        to: Uuid,
    ) -> Result<Option<pb::Movement>, LedgerError> {
        if from == to {
            return Err(LedgerError::SameMember);
        }
        let source = self.account_mut(program, from);
        if source.status == Status::Merged {
            return Ok(None);
        }
        let moved: Account = source.clone();
        source.status = Status::Merged;
        source.merged_into = Some(to);
        source.lots.clear();
        source.balance = 0;
        source.lots_total = 0;
        source.held = 0;
        source.debt = 0;
        source.changed = true;
        let target = self.account_mut(program, to);
        target.balance = checked(target.balance.checked_add(moved.balance))?;
        target.lots_total = checked(target.lots_total.checked_add(moved.lots_total))?;
        target.held = checked(target.held.checked_add(moved.held))?;
        target.debt = checked(target.debt.checked_add(moved.debt))?;
        target.lifetime_earned =
            checked(target.lifetime_earned.checked_add(moved.lifetime_earned))?;
        target.changed = true;
        for mut lot in moved.lots {
            lot.member_id = to;
            target.lots.push(lot);
        }
        for hold in self
            .holds
            .values_mut()
            .filter(|h| h.program == program && h.member_id == from)
        {
            hold.member_id = to;
            hold.changed = true;
        }
        for order in self
            .orders
            .values_mut()
            .filter(|o| o.program == program && o.member_id == from)
        {
            order.member_id = to;
            order.changed = true;
        }
        if moved.balance == 0 {
            self.account_mut(program, from).version += 1;
            return Ok(None);
        }
        self.record(NewMovement {
            kind: pb::MovementType::Merge,
            program,
            member_id: from,
            points: -moved.balance,
            earn_kind: pb::EarnKind::Unspecified,
            reason: "member merged".into(),
            reference: String::new(),
            order_id: String::new(),
            related: None,
            counterparty: Some(to),
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(from), -moved.balance),
                (pb::Account::Transferred, None, moved.balance),
                (pb::Account::Transferred, None, -moved.balance),
                (pb::Account::Member, Some(to), moved.balance),
            ],
        })?;
        Ok(self.recorded.last().map(|r| r.movement.clone()))
    }

    /// Erase: open holds return, and the balance is forfeited (to the
    /// expired account; a debt is written off against adjustments), so the
    /// ledger stays balanced; the account takes no more movements.
    pub fn erase(
        &mut self,
        program: &str,
        member: Uuid,
    ) -> Result<Option<pb::Movement>, LedgerError> {
        if self.account_mut(program, member).status == Status::Erased {
            return Ok(None);
        }
        let open: Vec<Uuid> = self
            .holds
            .values()
            .filter(|h| {
                h.program == program && h.member_id == member && h.status == HoldStatus::Active
            })
            .map(|h| h.hold_id)
            .collect();
        for hold in open {
            self.release(hold, false)?;
        }
        let account = self.account_mut(program, member);
        let forfeited = account.balance;
        let uses: Vec<(Uuid, i64)> = account
            .lots
            .iter_mut()
            .filter(|l| l.remaining > 0)
            .map(|l| {
                let n = l.remaining;
                l.remaining = 0;
                (l.lot_id, n)
            })
            .collect();
        account.lots_total = 0;
        account.debt = 0;
        account.balance = 0;
        account.status = Status::Erased;
        account.changed = true;
        if forfeited == 0 {
            account.version += 1;
            return Ok(None);
        }
        let counter = if forfeited > 0 {
            pb::Account::Expired
        } else {
            pb::Account::Adjusted
        };
        let id = self.record(NewMovement {
            kind: pb::MovementType::Expire,
            program,
            member_id: member,
            points: -forfeited,
            earn_kind: pb::EarnKind::Unspecified,
            reason: "member erased".into(),
            reference: String::new(),
            order_id: String::new(),
            related: None,
            counterparty: None,
            occurred_at: self.now,
            entries: vec![
                (pb::Account::Member, Some(member), -forfeited),
                (counter, None, forfeited),
            ],
        })?;
        self.lot_uses.extend(uses.iter().map(|(l, n)| (id, *l, *n)));
        Ok(self.recorded.last().map(|r| r.movement.clone()))
    }
}
