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
//! Terms that grow past f64's range are rescaled as the sum goes, and the
//! BG/NBD expectations pick between the paper's form and its Euler
//! transformation whichever keeps the terms smaller (see `bgnbd`).

use super::ClvError;

/// Terms after which a series that has not converged is a failure; at z =
/// 0.999 the series needs a few tens of thousands.
const MAX_TERMS: u32 = 1_000_000;

/// Relative size of the remaining tail at which the sum stops.
const RELATIVE_TOLERANCE: f64 = 1e-16;

/// A number held as `mantissa · e^log_scale`, so that a series whose terms
/// pass f64's range can still be summed and multiplied by a small prefactor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scaled {
    pub mantissa: f64,
    pub log_scale: f64,
}

/// Terms above this are rescaled down, together with the partial sum.
const RESCALE_ABOVE: f64 = 1e200;

/// 2F1(a, b; c; z) for 0 <= z < 1 and c not a non-positive integer, as
/// a plain number (the tests' entry point).
#[cfg(test)]
pub(crate) fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64, ClvError> {
    let scaled = hyp2f1_scaled(a, b, c, z)?;
    let value = scaled.mantissa * scaled.log_scale.exp();
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ClvError::NumericalFailure("2F1 is not finite"))
    }
}

/// 2F1(a, b; c; z) for 0 <= z < 1 and c not a non-positive integer, as a
/// scaled number: the sum is rescaled whenever a term grows past 1e200.
pub(crate) fn hyp2f1_scaled(a: f64, b: f64, c: f64, z: f64) -> Result<Scaled, ClvError> {
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
    let mut log_scale = 0.0_f64;
    for j in 0..MAX_TERMS {
        let jf = f64::from(j);
        let ratio = (a + jf) * (b + jf) / ((c + jf) * (jf + 1.0)) * z;
        term *= ratio;
        sum += term;
        if term == 0.0 {
            // a or b is a non-positive integer: the series is a polynomial.
            return scaled(sum, log_scale);
        }
        if term.abs() > RESCALE_ABOVE {
            let factor = term.abs();
            term /= factor;
            sum /= factor;
            log_scale += factor.ln();
        }
        // Past the point where |ratio| < 1 the ratios tend to z, so the tail
        // is bounded by a geometric series with the larger of the two.
        let bound = ratio.abs().max(z);
        if bound < 1.0 && term.abs() * bound / (1.0 - bound) <= RELATIVE_TOLERANCE * sum.abs() {
            return scaled(sum, log_scale);
        }
    }
    Err(ClvError::NumericalFailure("2F1 series did not converge"))
}

fn scaled(mantissa: f64, log_scale: f64) -> Result<Scaled, ClvError> {
    if mantissa.is_finite() && log_scale.is_finite() {
        Ok(Scaled {
            mantissa,
            log_scale,
        })
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
    fn sums_series_whose_terms_overflow_f64() {
        // 2F1(a, b; b; z) = (1 - z)^(-a): with a = 5,000 and z = 0.9 that is
        // e^11513, far past f64, and its terms pass 1e300 on the way.
        let scaled = super::hyp2f1_scaled(5_000.0, 2.5, 2.5, 0.9).unwrap();
        let log_value = scaled.log_scale + scaled.mantissa.ln();
        let expected = -5_000.0 * 0.1f64.ln();
        assert!(
            (log_value - expected).abs() < 1e-9 * expected,
            "{log_value} vs {expected}"
        );
        assert!(hyp2f1(5_000.0, 2.5, 2.5, 0.9).is_err());
    }

    #[test]
    fn refuses_arguments_outside_its_domain() {
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.0).is_err());
        assert!(hyp2f1(1.0, 1.0, 2.0, -0.1).is_err());
        assert!(hyp2f1(1.0, 1.0, -1.0, 0.5).is_err());
        assert!(hyp2f1(f64::NAN, 1.0, 2.0, 0.5).is_err());
    }
}
