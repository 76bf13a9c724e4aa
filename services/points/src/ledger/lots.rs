//! Lots: each earn's points with their own availability and expiry, and the
//! rules for spending and restoring them. Plain functions over slices, so
//! property tests can hold them against a simple model.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Points from one earn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lot {
    /// Lot id.
    pub lot_id: Uuid,
    /// Account holding it.
    pub member_id: Uuid,
    /// The earn that created it.
    pub movement_id: Uuid,
    /// Points earned.
    pub points: i64,
    /// Points left, unheld and unspent.
    pub remaining: i64,
    /// When it was earned.
    pub earned_at: DateTime<Utc>,
    /// Pending until then.
    pub available_from: DateTime<Utc>,
    /// Expires then; never when `None`.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Lot {
    /// Not yet available (the return window is open).
    pub fn is_pending(&self, now: DateTime<Utc>) -> bool {
        self.available_from > now
    }

    /// Past its expiry.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Points that can be spent now.
    pub fn spendable(&self, now: DateTime<Utc>) -> i64 {
        if self.is_pending(now) || self.is_due(now) {
            0
        } else {
            self.remaining
        }
    }
}

/// The order lots are spent in: soonest expiry first (never-expiring
/// last), then oldest, then by id so the order is total.
pub fn spending_order(a: &Lot, b: &Lot) -> std::cmp::Ordering {
    let expiry = |l: &Lot| (l.expires_at.is_none(), l.expires_at);
    expiry(a)
        .cmp(&expiry(b))
        .then(a.earned_at.cmp(&b.earned_at))
        .then(a.lot_id.cmp(&b.lot_id))
}

/// Points spendable now across `lots`.
pub fn spendable(lots: &[Lot], now: DateTime<Utc>) -> i64 {
    lots.iter().map(|l| l.spendable(now)).sum()
}

/// Points still pending across `lots`.
pub fn pending(lots: &[Lot], now: DateTime<Utc>) -> i64 {
    lots.iter()
        .filter(|l| l.is_pending(now))
        .map(|l| l.remaining)
        .sum()
}

/// Takes `amount` spendable points, soonest-expiring first, and says how
/// much came from each lot. Takes nothing and returns `None` when the lots
/// hold less than `amount`.
pub fn take(lots: &mut [Lot], amount: i64, now: DateTime<Utc>) -> Option<Vec<(Uuid, i64)>> {
    if amount < 0 || spendable(lots, now) < amount {
        return None;
    }
    let mut order: Vec<usize> = (0..lots.len()).collect();
    order.sort_by(|a, b| spending_order(&lots[*a], &lots[*b]));
    let mut left = amount;
    let mut taken = Vec::new();
    for i in order {
        if left == 0 {
            break;
        }
        let lot = &mut lots[i];
        let n = lot.spendable(now).min(left);
        if n > 0 {
            lot.remaining -= n;
            left -= n;
            taken.push((lot.lot_id, n));
        }
    }
    Some(taken)
}

/// Takes up to `amount` from one lot (whether pending or available, not
/// due); returns what it took.
pub fn take_from(lot: &mut Lot, amount: i64, now: DateTime<Utc>) -> i64 {
    if lot.is_due(now) {
        return 0;
    }
    let n = lot.remaining.min(amount.max(0));
    lot.remaining -= n;
    n
}

/// Puts points back into the lots they came from. Every lot named must be
/// in `lots`, and a lot never holds more than it was earned with.
pub fn restore(lots: &mut [Lot], uses: &[(Uuid, i64)]) -> Result<(), RestoreError> {
    for (lot_id, n) in uses {
        let lot = lots
            .iter()
            .find(|l| l.lot_id == *lot_id)
            .ok_or(RestoreError::UnknownLot(*lot_id))?;
        if *n < 0 || lot.remaining.checked_add(*n).is_none_or(|r| r > lot.points) {
            return Err(RestoreError::Overfull(*lot_id));
        }
    }
    for (lot_id, n) in uses {
        let lot = lots
            .iter_mut()
            .find(|l| l.lot_id == *lot_id)
            .expect("checked above");
        lot.remaining += n;
    }
    Ok(())
}

/// Why points could not be put back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// The lot is not loaded.
    #[error("lot {0} is not loaded")]
    UnknownLot(Uuid),
    /// The lot would hold more than it was earned with.
    #[error("lot {0} would hold more than it was earned with")]
    Overfull(Uuid),
}

/// Zeroes every due lot; returns what each held.
pub fn expire_due(lots: &mut [Lot], now: DateTime<Utc>) -> Vec<(Uuid, i64)> {
    let mut expired = Vec::new();
    for lot in lots.iter_mut().filter(|l| l.is_due(now) && l.remaining > 0) {
        expired.push((lot.lot_id, lot.remaining));
        lot.remaining = 0;
    }
    expired
}

/// The next expiry dates with their amounts, soonest first, at most `n`.
pub fn next_expiries(lots: &[Lot], now: DateTime<Utc>, n: usize) -> Vec<(DateTime<Utc>, i64)> {
    let mut by_date: Vec<(DateTime<Utc>, i64)> = Vec::new();
    for lot in lots.iter().filter(|l| l.remaining > 0 && !l.is_due(now)) {
        if let Some(at) = lot.expires_at {
            match by_date.iter_mut().find(|(d, _)| *d == at) {
                Some((_, p)) => *p += lot.remaining,
                None => by_date.push((at, lot.remaining)),
            }
        }
    }
    by_date.sort();
    by_date.truncate(n);
    by_date
}
