//! The ledger in memory: the accounts, holds and orders a batch touches,
//! loaded and locked by the store, changed here by plain functions, and
//! written back by the store. Every change is a movement of balanced
//! entries; an operation checks everything before it changes anything, so a
//! refused operation leaves the book as it found it.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use laurel_proto::points::v1 as pb;
use uuid::Uuid;

use super::lots::{self, Lot};

/// Largest amount of points one request may move, and the documented bound
/// of every balance: 10^12 points.
pub const MAX_POINTS: i64 = 1_000_000_000_000;

/// Account status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Earns and spends.
    Active = 1,
    /// Folded into another member.
    Merged = 2,
    /// Erased: balance forfeited, no more movements.
    Erased = 3,
}

impl Status {
    /// From the stored code.
    pub fn from_code(code: i16) -> Self {
        match code {
            2 => Self::Merged,
            3 => Self::Erased,
            _ => Self::Active,
        }
    }
}

/// A member account with the lots the batch needs.
#[derive(Clone, Debug)]
pub struct Account {
    /// Programme.
    pub program: String,
    /// Member.
    pub member_id: Uuid,
    /// Status.
    pub status: Status,
    /// Survivor, when merged.
    pub merged_into: Option<Uuid>,
    /// Sum of the account's entries.
    pub balance: i64,
    /// Points left in lots, unheld.
    pub lots_total: i64,
    /// Points held.
    pub held: i64,
    /// Points owed after a clawback.
    pub debt: i64,
    /// Points ever earned.
    pub lifetime_earned: i64,
    /// Card version.
    pub version: i64,
    /// Loaded lots: every pending and due lot, and enough spendable ones.
    pub lots: Vec<Lot>,
    /// Changed by this batch.
    pub changed: bool,
}

impl Account {
    /// A new, empty account.
    pub fn new(program: &str, member_id: Uuid) -> Self {
        Self {
            program: program.to_owned(),
            member_id,
            status: Status::Active,
            merged_into: None,
            balance: 0,
            lots_total: 0,
            held: 0,
            debt: 0,
            lifetime_earned: 0,
            version: 0,
            lots: Vec::new(),
            changed: false,
        }
    }

    /// Points pending (all pending lots are loaded).
    pub fn pending(&self, now: DateTime<Utc>) -> i64 {
        lots::pending(&self.lots, now)
    }

    /// Points the member can spend now (due lots are expired first).
    pub fn available(&self, now: DateTime<Utc>) -> i64 {
        self.lots_total - self.pending(now) - self.debt
    }

    /// The balance as the API shows it (`expiring` is left to GetBalance,
    /// which sees every lot).
    pub fn view(&self, now: DateTime<Utc>) -> pb::Balance {
        pb::Balance {
            member_id: self.member_id.to_string(),
            available: self.available(now),
            pending: self.pending(now),
            held: self.held,
            total: self.balance,
            expiring: Vec::new(),
            lifetime_earned: self.lifetime_earned,
            version: self.version,
            valid_until: None,
        }
    }

    fn check_invariant(&self) -> Result<(), LedgerError> {
        let parts = self
            .lots_total
            .checked_add(self.held)
            .and_then(|p| p.checked_sub(self.debt))
            .ok_or(LedgerError::Overflow)?;
        if parts != self.balance || self.lots_total < 0 || self.held < 0 || self.debt < 0 {
            return Err(LedgerError::Internal(format!(
                "account {} out of balance",
                self.member_id
            )));
        }
        Ok(())
    }
}

/// Hold status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    /// Reserving points.
    Active = 1,
    /// Spent.
    Captured = 2,
    /// Returned by Release.
    Released = 3,
    /// Returned by timing out.
    Expired = 4,
}

impl HoldStatus {
    /// From the stored code.
    pub fn from_code(code: i16) -> Self {
        match code {
            2 => Self::Captured,
            3 => Self::Released,
            4 => Self::Expired,
            _ => Self::Active,
        }
    }

    fn proto(self) -> pb::HoldStatus {
        match self {
            Self::Active => pb::HoldStatus::Active,
            Self::Captured => pb::HoldStatus::Captured,
            Self::Released => pb::HoldStatus::Released,
            Self::Expired => pb::HoldStatus::Expired,
        }
    }
}

/// A hold and the lots it reserved.
#[derive(Clone, Debug)]
pub struct Hold {
    /// Programme.
    pub program: String,
    /// Hold id.
    pub hold_id: Uuid,
    /// Member.
    pub member_id: Uuid,
    /// Points reserved.
    pub points: i64,
    /// Points captured.
    pub captured: i64,
    /// Status.
    pub status: HoldStatus,
    /// Timeout.
    pub expires_at: DateTime<Utc>,
    /// Reference.
    pub reference: String,
    /// Placed at.
    pub created_at: DateTime<Utc>,
    /// Resolved at.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Capture movement.
    pub movement_id: Option<Uuid>,
    /// Reserved points per lot.
    pub lots: Vec<(Uuid, i64)>,
    /// Not yet stored.
    pub new: bool,
    /// Changed by this batch.
    pub changed: bool,
}

impl Hold {
    /// The hold as the API shows it.
    pub fn view(&self) -> pb::PointsHold {
        pb::PointsHold {
            hold_id: self.hold_id.to_string(),
            member_id: self.member_id.to_string(),
            points: self.points,
            captured: self.captured,
            status: self.status.proto() as i32,
            expires_at: Some(timestamp(self.expires_at)),
            reference: self.reference.clone(),
            created_at: Some(timestamp(self.created_at)),
            movement_id: self.movement_id.map(|m| m.to_string()).unwrap_or_default(),
        }
    }
}

/// An order that earned.
#[derive(Clone, Debug)]
pub struct OrderEarn {
    /// Programme.
    pub program: String,
    /// Order id.
    pub order_id: String,
    /// Member (the survivor after a merge).
    pub member_id: Uuid,
    /// The earn.
    pub movement_id: Uuid,
    /// Its lot.
    pub lot_id: Option<Uuid>,
    /// Points earned.
    pub points: i64,
    /// Order total.
    pub total_minor: i64,
    /// Currency.
    pub currency: String,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// Points reversed so far.
    pub reversed: i64,
    /// Changed by this batch.
    pub changed: bool,
}

/// A spending movement's use of lots, for reversing a redemption.
#[derive(Clone, Debug)]
pub struct Redemption {
    /// Programme.
    pub program: String,
    /// The movement.
    pub movement_id: Uuid,
    /// Member.
    pub member_id: Uuid,
    /// Points spent (positive).
    pub points: i64,
    /// Points taken per lot.
    pub uses: Vec<(Uuid, i64)>,
    /// Already reversed.
    pub reversed: bool,
}

/// Key of a daily earnings counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DailyKey {
    /// Programme.
    pub program: String,
    /// Member.
    pub member_id: Uuid,
    /// Day (UTC).
    pub day: NaiveDate,
    /// Earn kind code.
    pub kind: i32,
}

/// What a member earned of one kind on one day.
#[derive(Clone, Copy, Debug, Default)]
pub struct Daily {
    /// Points.
    pub points: i64,
    /// Events.
    pub events: i32,
    /// Changed by this batch.
    pub changed: bool,
}

/// One entry to write.
#[derive(Clone, Debug)]
pub struct EntryRow {
    /// Movement.
    pub movement_id: Uuid,
    /// Line within the movement.
    pub line: i16,
    /// Programme.
    pub program: String,
    /// Account code.
    pub account: pb::Account,
    /// Member, for member accounts.
    pub member_id: Option<Uuid>,
    /// Signed points.
    pub points: i64,
    /// Member balance after, for member accounts.
    pub balance_after: Option<i64>,
    /// Movement type.
    pub kind: pb::MovementType,
}

/// A movement to write, with the member balances it left.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Programme.
    pub program: String,
    /// The movement as the API shows it.
    pub movement: pb::Movement,
    /// Recorded at.
    pub recorded_at: DateTime<Utc>,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
}

/// A movement about to be recorded.
#[derive(Clone, Debug)]
pub struct NewMovement<'a> {
    /// Type.
    pub kind: pb::MovementType,
    /// Programme.
    pub program: &'a str,
    /// Member whose statement shows it first.
    pub member_id: Uuid,
    /// Points as that member sees them.
    pub points: i64,
    /// Earn kind, for earns.
    pub earn_kind: pb::EarnKind,
    /// Statement text.
    pub reason: String,
    /// Reference.
    pub reference: String,
    /// Order.
    pub order_id: String,
    /// Reversed or reversing movement.
    pub related: Option<Uuid>,
    /// Other member.
    pub counterparty: Option<Uuid>,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// Balanced entries: (account, member, points).
    pub entries: Vec<(pb::Account, Option<Uuid>, i64)>,
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// Not enough spendable points.
    #[error("not enough points: {available} available, {requested} requested")]
    InsufficientPoints {
        /// Spendable now.
        available: i64,
        /// Asked for.
        requested: i64,
    },
    /// The member is merged or erased.
    #[error("member account is {0}")]
    MemberInactive(&'static str),
    /// No such hold.
    #[error("hold not found")]
    HoldNotFound,
    /// The hold was captured, released or expired before.
    #[error("hold is {0}")]
    HoldNotActive(&'static str),
    /// The hold timed out.
    #[error("hold expired")]
    HoldExpired,
    /// Capture of more than held.
    #[error("capture of {requested} exceeds the hold of {held}")]
    CaptureExceedsHold {
        /// Held.
        held: i64,
        /// Asked for.
        requested: i64,
    },
    /// The order never earned.
    #[error("order has no earn to reverse")]
    OrderNotEarned,
    /// The order earned before.
    #[error("order earned before")]
    OrderAlreadyEarned,
    /// A refund beyond the order.
    #[error("refunds would exceed the order total")]
    RefundExceedsOrder,
    /// Refund in another currency.
    #[error("refund currency differs from the order's")]
    CurrencyMismatch,
    /// No such redemption.
    #[error("redemption not found")]
    RedemptionNotFound,
    /// Reversed before.
    #[error("redemption was reversed before")]
    AlreadyReversed,
    /// A transfer to oneself.
    #[error("cannot transfer to the same member")]
    SameMember,
    /// A bound would be exceeded.
    #[error("amount out of bounds")]
    Overflow,
    /// A broken invariant: a bug, never the caller's fault.
    #[error("ledger invariant: {0}")]
    Internal(String),
}

/// Everything a batch loaded and changed.
#[derive(Debug)]
pub struct Book {
    /// The time of the batch (the service clock).
    pub now: DateTime<Utc>,
    /// Accounts by (programme, member).
    pub accounts: HashMap<(String, Uuid), Account>,
    /// Holds by id.
    pub holds: HashMap<Uuid, Hold>,
    /// Orders by (programme, order id).
    pub orders: HashMap<(String, String), OrderEarn>,
    /// Spending movements by id.
    pub redemptions: HashMap<Uuid, Redemption>,
    /// Daily earnings.
    pub daily: HashMap<DailyKey, Daily>,
    /// Movements recorded, in order.
    pub recorded: Vec<Recorded>,
    /// Their entries.
    pub entries: Vec<EntryRow>,
    /// Lots created.
    pub new_lots: Vec<(String, Lot)>,
    /// Lot uses: (movement, lot, points).
    pub lot_uses: Vec<(Uuid, Uuid, i64)>,
    /// Events: (programme, member, card version, payload).
    pub events: Vec<BookEvent>,
}

/// An event the batch publishes.
#[derive(Clone, Debug)]
pub enum BookEvent {
    /// A movement.
    Moved {
        /// Programme.
        program: String,
        /// Member.
        member_id: Uuid,
        /// Business time.
        occurred_at: DateTime<Utc>,
        /// Card version after.
        version: i64,
        /// Payload.
        event: pb::PointsMoved,
    },
    /// A hold changed.
    Hold {
        /// Programme.
        program: String,
        /// Member.
        member_id: Uuid,
        /// Card version after.
        version: i64,
        /// Payload.
        event: pb::HoldChanged,
    },
}

/// Converts a time to a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn add(a: i64, b: i64) -> Result<i64, LedgerError> {
    a.checked_add(b)
        .filter(|v| v.abs() <= MAX_POINTS * 1000)
        .ok_or(LedgerError::Overflow)
}

impl Book {
    /// An empty book at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            accounts: HashMap::new(),
            holds: HashMap::new(),
            orders: HashMap::new(),
            redemptions: HashMap::new(),
            daily: HashMap::new(),
            recorded: Vec::new(),
            entries: Vec::new(),
            new_lots: Vec::new(),
            lot_uses: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The account of `member`, following merges to the survivor.
    pub fn resolve(&self, program: &str, member: Uuid) -> Uuid {
        let mut id = member;
        for _ in 0..16 {
            match self.accounts.get(&(program.to_owned(), id)) {
                Some(a) if a.status == Status::Merged => match a.merged_into {
                    Some(next) => id = next,
                    None => break,
                },
                _ => break,
            }
        }
        id
    }

    /// The account, created empty in memory when it does not exist yet.
    pub fn account_mut(&mut self, program: &str, member: Uuid) -> &mut Account {
        self.accounts
            .entry((program.to_owned(), member))
            .or_insert_with(|| Account::new(program, member))
    }

    /// The active account of `member` (after merges), or why not.
    pub fn active(&mut self, program: &str, member: Uuid) -> Result<&mut Account, LedgerError> {
        let id = self.resolve(program, member);
        let account = self.account_mut(program, id);
        match account.status {
            Status::Active => Ok(account),
            Status::Merged => Err(LedgerError::MemberInactive("merged")),
            Status::Erased => Err(LedgerError::MemberInactive("erased")),
        }
    }

    /// Expires the due lots of an account as one movement, if any are due.
    pub fn expire_due(
        &mut self,
        program: &str,
        member: Uuid,
        reason: &str,
    ) -> Result<Option<pb::Movement>, LedgerError> {
        let now = self.now;
        let account = self.account_mut(program, member);
        let expired = lots::expire_due(&mut account.lots, now);
        let total: i64 = expired.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return Ok(None);
        }
        account.lots_total -= total;
        account.balance -= total;
        account.changed = true;
        let movement_id = self.record(NewMovement {
            kind: pb::MovementType::Expire,
            program,
            member_id: member,
            points: -total,
            earn_kind: pb::EarnKind::Unspecified,
            reason: reason.to_owned(),
            reference: String::new(),
            order_id: String::new(),
            related: None,
            counterparty: None,
            occurred_at: now,
            entries: vec![
                (pb::Account::Member, Some(member), -total),
                (pb::Account::Expired, None, total),
            ],
        })?;
        for (lot, n) in expired {
            self.lot_uses.push((movement_id, lot, n));
        }
        Ok(Some(
            self.recorded
                .last()
                .expect("just recorded")
                .movement
                .clone(),
        ))
    }

    /// Records a movement whose account changes the caller has applied:
    /// checks the entries balance and the accounts agree with their parts,
    /// writes the entries with the balances after, bumps card versions and
    /// queues the events. Returns the movement id.
    pub fn record(&mut self, m: NewMovement<'_>) -> Result<Uuid, LedgerError> {
        let sum = m
            .entries
            .iter()
            .try_fold(0i64, |s, (_, _, p)| s.checked_add(*p))
            .ok_or(LedgerError::Overflow)?;
        if sum != 0 {
            return Err(LedgerError::Internal("entries do not balance".into()));
        }
        let movement_id = Uuid::now_v7();
        let now = self.now;
        let mut entries = Vec::with_capacity(m.entries.len());
        for (line, (account, member, points)) in m.entries.iter().enumerate() {
            let balance_after = match member {
                Some(member) => {
                    let a = self.account_mut(m.program, *member);
                    a.check_invariant()?;
                    Some(a.balance)
                }
                None => None,
            };
            self.entries.push(EntryRow {
                movement_id,
                line: line as i16,
                program: m.program.to_owned(),
                account: *account,
                member_id: *member,
                points: *points,
                balance_after,
                kind: m.kind,
            });
            entries.push(pb::Entry {
                account: *account as i32,
                member_id: member.map(|x| x.to_string()).unwrap_or_default(),
                points: *points,
            });
        }
        let movement = pb::Movement {
            movement_id: movement_id.to_string(),
            r#type: m.kind as i32,
            member_id: m.member_id.to_string(),
            points: m.points,
            reason: m.reason.clone(),
            reference: m.reference.clone(),
            order_id: m.order_id.clone(),
            occurred_at: Some(timestamp(m.occurred_at)),
            recorded_at: Some(timestamp(now)),
            entries,
            related_movement_id: m.related.map(|x| x.to_string()).unwrap_or_default(),
            earn_kind: m.earn_kind as i32,
            counterparty_member_id: m.counterparty.map(|x| x.to_string()).unwrap_or_default(),
        };
        // One event per member account the movement touched.
        let mut members: Vec<Uuid> = m
            .entries
            .iter()
            .filter_map(|(_, member, _)| *member)
            .collect();
        members.dedup();
        for member in members {
            let account = self.account_mut(m.program, member);
            account.version += 1;
            account.changed = true;
            let version = account.version;
            let balance = account.view(now);
            self.events.push(BookEvent::Moved {
                program: m.program.to_owned(),
                member_id: member,
                occurred_at: m.occurred_at,
                version,
                event: pb::PointsMoved {
                    movement: Some(movement.clone()),
                    balance: Some(balance),
                },
            });
        }
        self.recorded.push(Recorded {
            program: m.program.to_owned(),
            movement,
            recorded_at: now,
            occurred_at: m.occurred_at,
        });
        Ok(movement_id)
    }

    /// Queues a HoldChanged event for `hold_id` and bumps the card version.
    pub fn hold_changed(&mut self, hold_id: Uuid) {
        let now = self.now;
        let hold = self.holds.get(&hold_id).expect("hold loaded").clone();
        let account = self.account_mut(&hold.program, hold.member_id);
        account.version += 1;
        account.changed = true;
        let version = account.version;
        let balance = account.view(now);
        self.events.push(BookEvent::Hold {
            program: hold.program.clone(),
            member_id: hold.member_id,
            version,
            event: pb::HoldChanged {
                hold: Some(hold.view()),
                balance: Some(balance),
            },
        });
    }

    /// Adds to a daily counter.
    pub fn count_daily(&mut self, key: DailyKey, points: i64) -> Result<(), LedgerError> {
        let d = self.daily.entry(key).or_default();
        d.points = add(d.points, points)?;
        d.events += 1;
        d.changed = true;
        Ok(())
    }
}
