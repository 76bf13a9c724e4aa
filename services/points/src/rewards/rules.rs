//! The catalogue's business rules as plain functions: when a reward can be
//! redeemed, what a redemption costs, how far a member's limit goes, and
//! which fulfilment changes are allowed.

use chrono::{DateTime, Utc};

use super::model::{Fulfilment, Terms};
use crate::ledger::book::MAX_POINTS;

/// Why `quantity` units of a reward with `terms` cannot be redeemed at
/// `now`, or `None` when they can. The first reason that applies, in the
/// order a member can do least about: inactive, not yet valid, expired,
/// out of stock, not enough stock.
pub fn unavailable(terms: &Terms, quantity: i64, now: DateTime<Utc>) -> Option<&'static str> {
    if !terms.active {
        Some("the reward is inactive")
    } else if terms.valid_from.is_some_and(|from| now < from) {
        Some("the reward is not yet valid")
    } else if terms.valid_until.is_some_and(|until| now >= until) {
        Some("the reward has expired")
    } else if terms.stock == 0 {
        Some("the reward is out of stock")
    } else if terms.stock < quantity {
        Some("not enough stock left for this quantity")
    } else {
        None
    }
}

/// Points for `quantity` units at `price` each; `None` beyond what one
/// movement may carry (10^12 points).
pub fn price_of(price: i64, quantity: i64) -> Option<i64> {
    price
        .checked_mul(quantity)
        .filter(|p| (1..=MAX_POINTS).contains(p))
}

/// Whether a member who already redeemed `taken` units in the limit's
/// period may redeem `quantity` more under a limit of `limit` (0: none).
pub fn within_limit(limit: i64, taken: i64, quantity: i64) -> bool {
    limit == 0
        || taken
            .checked_add(quantity)
            .is_some_and(|total| total <= limit)
}

/// Whether a redemption may go from `from` to `to`: only a pending one
/// changes, to fulfilled or cancelled; otherwise why not.
pub fn transition(from: Fulfilment, to: Fulfilment) -> Result<(), &'static str> {
    match (from, to) {
        (Fulfilment::Pending, Fulfilment::Fulfilled | Fulfilment::Cancelled) => Ok(()),
        (Fulfilment::Pending, Fulfilment::Pending) => Err("the redemption is pending already"),
        (Fulfilment::Fulfilled, _) => Err("the redemption was fulfilled already"),
        (Fulfilment::Cancelled, _) => Err("the redemption was cancelled already"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::rewards::period::LimitPeriod;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 10, 12, 0, 0).unwrap()
    }

    fn terms() -> Terms {
        Terms {
            name: "mug".into(),
            description: String::new(),
            points_price: 500,
            stock: 3,
            per_member_limit: 0,
            limit_period: LimitPeriod::Window,
            valid_from: Some(now() - Duration::days(1)),
            valid_until: Some(now() + Duration::days(1)),
            active: true,
        }
    }

    #[test]
    fn an_active_reward_in_its_window_with_stock_is_available() {
        assert_eq!(unavailable(&terms(), 3, now()), None);
        let open = Terms {
            valid_from: None,
            valid_until: None,
            ..terms()
        };
        assert_eq!(unavailable(&open, 1, now()), None);
    }

    #[test]
    fn each_reason_is_named() {
        assert_eq!(
            unavailable(
                &Terms {
                    active: false,
                    ..terms()
                },
                1,
                now()
            ),
            Some("the reward is inactive")
        );
        assert_eq!(
            unavailable(
                &Terms {
                    valid_from: Some(now() + Duration::seconds(1)),
                    ..terms()
                },
                1,
                now()
            ),
            Some("the reward is not yet valid")
        );
        assert_eq!(
            unavailable(
                &Terms {
                    stock: 0,
                    ..terms()
                },
                1,
                now()
            ),
            Some("the reward is out of stock")
        );
        assert_eq!(
            unavailable(&terms(), 4, now()),
            Some("not enough stock left for this quantity")
        );
    }

    #[test]
    fn the_window_includes_its_start_and_excludes_its_end() {
        let t = terms();
        assert_eq!(unavailable(&t, 1, t.valid_from.unwrap()), None);
        assert_eq!(
            unavailable(&t, 1, t.valid_until.unwrap()),
            Some("the reward has expired")
        );
    }

    #[test]
    fn the_price_is_checked() {
        assert_eq!(price_of(500, 3), Some(1_500));
        assert_eq!(price_of(MAX_POINTS, 1), Some(MAX_POINTS));
        assert_eq!(price_of(MAX_POINTS, 2), None);
        assert_eq!(price_of(i64::MAX, 2), None);
    }

    #[test]
    fn a_limit_counts_units_already_taken() {
        assert!(within_limit(0, 1_000_000, 1_000));
        assert!(within_limit(3, 2, 1));
        assert!(!within_limit(3, 2, 2));
        assert!(!within_limit(3, 0, 4));
        assert!(!within_limit(3, i64::MAX, 1));
    }

    #[test]
    fn only_a_pending_redemption_changes() {
        assert_eq!(
            transition(Fulfilment::Pending, Fulfilment::Fulfilled),
            Ok(())
        );
        assert_eq!(
            transition(Fulfilment::Pending, Fulfilment::Cancelled),
            Ok(())
        );
        assert!(transition(Fulfilment::Fulfilled, Fulfilment::Cancelled).is_err());
        assert!(transition(Fulfilment::Cancelled, Fulfilment::Fulfilled).is_err());
        assert!(transition(Fulfilment::Cancelled, Fulfilment::Cancelled).is_err());
    }
}
