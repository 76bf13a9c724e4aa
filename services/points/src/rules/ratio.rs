//! Exact fractions of points, so an order is rounded once and only once.
//! Every operation is checked: `None` means the numbers do not fit.

use super::model::RoundingRule;

/// `num / den`, with `den > 0` and the fraction in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ratio {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    // Callers pass values above i128::MIN, so abs cannot overflow.
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Ratio {
    /// Zero.
    pub(super) const ZERO: Ratio = Ratio { num: 0, den: 1 };

    /// `num / den`; `None` when `den` is not positive.
    pub(super) fn new(num: i128, den: i128) -> Option<Self> {
        if den <= 0 || num == i128::MIN {
            return None;
        }
        let g = gcd(num, den);
        Some(Self {
            num: num / g,
            den: den / g,
        })
    }

    /// `self + other`.
    pub(super) fn checked_add(self, other: Self) -> Option<Self> {
        let g = gcd(self.den, other.den);
        let (a, b) = (self.den / g, other.den / g);
        let num = self
            .num
            .checked_mul(b)?
            .checked_add(other.num.checked_mul(a)?)?;
        Self::new(num, self.den.checked_mul(b)?)
    }

    /// `self - other`.
    pub(super) fn checked_sub(self, other: Self) -> Option<Self> {
        self.checked_add(Self {
            num: other.num.checked_neg()?,
            den: other.den,
        })
    }

    /// `self * num / den`, with `den > 0`.
    pub(super) fn checked_scale(self, num: i128, den: i128) -> Option<Self> {
        let other = Self::new(num, den)?;
        // Cross-reduce first so intermediate products stay small.
        // Both denominators are positive, so neither gcd is 0.
        let g1 = gcd(self.num, other.den);
        let g2 = gcd(other.num, self.den);
        Self::new(
            (self.num / g1).checked_mul(other.num / g2)?,
            (self.den / g2).checked_mul(other.den / g1)?,
        )
    }

    /// Rounded toward zero.
    pub(super) fn trunc(self) -> i128 {
        self.num / self.den
    }

    /// Rounded by `rule`.
    pub(super) fn round(self, rule: RoundingRule) -> i128 {
        let whole = self.num / self.den;
        let rest = (self.num % self.den).abs();
        let away = whole + self.num.signum();
        match rule {
            _ if rest == 0 => whole,
            RoundingRule::Down => whole,
            RoundingRule::Up => away,
            // rest >= den / 2, without overflowing den.
            RoundingRule::HalfUp if rest >= self.den - rest => away,
            RoundingRule::HalfUp => whole,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(num: i128, den: i128) -> Ratio {
        Ratio::new(num, den).unwrap()
    }

    #[test]
    fn fractions_are_kept_in_lowest_terms() {
        assert_eq!(r(10, 4), r(5, 2));
        assert_eq!(r(0, 7), Ratio::ZERO);
        assert_eq!(r(1, 3).checked_add(r(1, 6)), Some(r(1, 2)));
        assert_eq!(r(1, 3).checked_sub(r(1, 2)), Some(r(-1, 6)));
        assert_eq!(r(3, 4).checked_scale(20_000, 10_000), Some(r(3, 2)));
    }

    #[test]
    fn a_zero_or_negative_denominator_is_refused() {
        assert_eq!(Ratio::new(1, 0), None);
        assert_eq!(Ratio::new(1, -2), None);
    }

    #[test]
    fn rounding_follows_the_rule_on_both_sides_of_zero() {
        let cases = [
            // (num, den, down, half up, up)
            (5, 2, 2, 3, 3),
            (7, 3, 2, 2, 3),
            (8, 3, 2, 3, 3),
            (-5, 2, -2, -3, -3),
            (-7, 3, -2, -2, -3),
            (6, 3, 2, 2, 2),
            (1, 1_000_000, 0, 0, 1),
        ];
        for (num, den, down, half_up, up) in cases {
            let x = r(num, den);
            assert_eq!(x.round(RoundingRule::Down), down, "{num}/{den} down");
            assert_eq!(
                x.round(RoundingRule::HalfUp),
                half_up,
                "{num}/{den} half up"
            );
            assert_eq!(x.round(RoundingRule::Up), up, "{num}/{den} up");
            assert_eq!(x.trunc(), down, "{num}/{den} trunc");
        }
    }

    #[test]
    fn overflow_is_none_not_a_panic() {
        let huge = r(i128::MAX, 1);
        assert_eq!(huge.checked_add(r(1, 1)), None);
        assert_eq!(huge.checked_scale(2, 1), None);
        assert_eq!(r(1, i128::MAX).checked_add(r(1, i128::MAX - 1)), None);
    }
}
