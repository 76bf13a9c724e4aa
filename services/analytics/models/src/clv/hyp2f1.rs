//! The Gauss hypergeometric function 2F1(a, b; c; z) for 0 <= z < 1, by its
//! power series.
//!
//! Hand-rolled on purpose: none of the maintained pure-Rust special-function
//! crates checked (statrs 0.19, puruspe 0.4, special 0.14) has 2F1; mathru's
//! `f21` panics for c <= 0 and for z > 1 and evaluates gamma functions
//! without logarithms, and GSL bindings need a C library. BG/NBD only needs
//! 0 <= z < 1, where the series converges, and Fader and Hardie's note on
//! implementing the model ("Implementing the BG/NBD Model for Customer Base
//! Analysis in Excel", 2005) computes it the same way: u_0 = 1,
//! u_j = u_{j-1} (a+j-1)(b+j-1) / ((c+j-1) j) z, 2F1 = sum of u_j.
//! The callers apply Euler's transformation first (see `bgnbd`), which keeps
//! the parameters small so the series converges in a few dozen terms.

use super::ClvError;

/// Terms after which a series that has not converged is a failure; at z =
/// 0.999 the series needs a few tens of thousands.
const MAX_TERMS: u32 = 1_000_000;

/// Relative size of the remaining tail at which the sum stops.
const RELATIVE_TOLERANCE: f64 = 1e-16;

/// 2F1(a, b; c; z) for 0 <= z < 1 and c not a non-positive integer.
pub(crate) fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64, ClvError> {
    if !(a.is_finite() && b.is_finite() && c.is_finite() && z.is_finite()) {
        return Err(ClvError::NumericalFailure("non-finite argument to 2F1"));
    }
    if !(0.0..1.0).contains(&z) {
        return Err(ClvError::NumericalFailure("2F1 argument outside [0, 1)"));
    }
    if c <= 0.0 && c == c.floor() {
        return Err(ClvError::NumericalFailure(
            "2F1 with c a non-positive integer",
        ));
    }
    let mut term = 1.0_f64;
    let mut sum = 1.0_f64;
    for j in 0..MAX_TERMS {
        let jf = f64::from(j);
        let ratio = (a + jf) * (b + jf) / ((c + jf) * (jf + 1.0)) * z;
        term *= ratio;
        sum += term;
        if term == 0.0 {
            // a or b is a non-positive integer: the series is a polynomial.
            return finite(sum);
        }
        // Past the point where |ratio| < 1 the ratios tend to z, so the tail
        // is bounded by a geometric series with the larger of the two.
        let bound = ratio.abs().max(z);
        if bound < 1.0 && term.abs() * bound / (1.0 - bound) <= RELATIVE_TOLERANCE * sum.abs() {
            return finite(sum);
        }
    }
    Err(ClvError::NumericalFailure("2F1 series did not converge"))
}

fn finite(value: f64) -> Result<f64, ClvError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ClvError::NumericalFailure("2F1 is not finite"))
    }
}

#[cfg(test)]
mod tests {
    use super::hyp2f1;

    fn assert_close(actual: f64, expected: f64) {
        let relative = ((actual - expected) / expected).abs();
        assert!(
            relative < 1e-13,
            "{actual} vs {expected} (relative {relative:e})"
        );
    }

    #[test]
    fn matches_the_logarithm_closed_form() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z
        for z in [0.01, 0.3, 0.5, 0.9, 0.99] {
            assert_close(hyp2f1(1.0, 1.0, 2.0, z).unwrap(), -(1.0 - z).ln() / z);
        }
    }

    #[test]
    fn matches_the_binomial_closed_form() {
        // 2F1(a, b; b; z) = (1 - z)^(-a)
        for (a, b, z) in [(0.243, 2.426, 0.4), (3.7, 0.5, 0.8), (-0.6, 1.2, 0.95)] {
            assert_close(hyp2f1(a, b, b, z).unwrap(), (1.0 - z).powf(-a));
        }
    }

    #[test]
    fn is_one_at_zero_and_a_polynomial_for_negative_integer_a() {
        assert_eq!(hyp2f1(2.0, 3.0, 4.0, 0.0).unwrap(), 1.0);
        // 2F1(-2, b; c; z) = 1 - 2bz/c + b(b+1)z^2/(c(c+1))
        let (b, c, z) = (1.5, 2.5, 0.6);
        let expected = 1.0 - 2.0 * b * z / c + b * (b + 1.0) * z * z / (c * (c + 1.0));
        assert_close(hyp2f1(-2.0, b, c, z).unwrap(), expected);
    }

    #[test]
    fn refuses_arguments_outside_its_domain() {
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.0).is_err());
        assert!(hyp2f1(1.0, 1.0, 2.0, -0.1).is_err());
        assert!(hyp2f1(1.0, 1.0, -1.0, 0.5).is_err());
        assert!(hyp2f1(f64::NAN, 1.0, 2.0, 0.5).is_err());
    }
}
