//! Money rules: the bounds amounts must keep, checked sums, and how much of
//! an order a refund may take back.

/// Largest amount of money the service accepts, in minor units: 10^15, that
/// is 10 trillion in a currency with two decimals. No retail order comes
/// near it, and 9,000 amounts of this size still sum within `i64`, so a
/// checked sum fails only on data that broke the bound some other way.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// Largest quantity on one order line.
pub const MAX_LINE_QUANTITY: i64 = 1_000_000;

/// Sums amounts; `None` when the sum does not fit in `i64`.
pub fn checked_sum(amounts: impl IntoIterator<Item = i64>) -> Option<i64> {
    amounts
        .into_iter()
        .try_fold(0i64, |sum, amount| sum.checked_add(amount))
}

/// Why a refund was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundRefused {
    /// Earlier refunds plus this one would exceed the order total (or could
    /// not even be added up).
    ExceedsOrder,
}

/// Whether a refund of `amount` fits in what is left of an order of
/// `order_total` after `earlier_refunds`.
pub fn check_refund(
    order_total: i64,
    earlier_refunds: &[i64],
    amount: i64,
) -> Result<(), RefundRefused> {
    let refunded = checked_sum(earlier_refunds.iter().copied().chain([amount]));
    match refunded {
        Some(total) if total <= order_total => Ok(()),
        _ => Err(RefundRefused::ExceedsOrder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refunds_may_reach_but_not_pass_the_order_total() {
        assert_eq!(check_refund(1000, &[600], 400), Ok(()));
        assert_eq!(
            check_refund(1000, &[600], 401),
            Err(RefundRefused::ExceedsOrder)
        );
        assert_eq!(check_refund(1000, &[], 1000), Ok(()));
    }

    #[test]
    fn a_refund_that_would_wrap_the_sum_is_refused() {
        // The reported defect: 6.00 refunded of 10.00, then a refund that
        // wrapped `refunded + amount` to a small number.
        let wrapping = 9_223_372_036_854_775_307;
        assert_eq!(
            check_refund(1000, &[600], wrapping),
            Err(RefundRefused::ExceedsOrder)
        );
        assert_eq!(
            check_refund(i64::MAX, &[i64::MAX], 1),
            Err(RefundRefused::ExceedsOrder)
        );
    }

    #[test]
    fn sums_report_overflow() {
        assert_eq!(checked_sum([1, 2, 3]), Some(6));
        assert_eq!(checked_sum([i64::MAX, 1]), None);
        assert_eq!(checked_sum([]), Some(0));
    }

    #[test]
    fn many_maximal_amounts_still_sum() {
        assert!(checked_sum(std::iter::repeat_n(MAX_AMOUNT_MINOR, 9_000)).is_some());
    }
}
