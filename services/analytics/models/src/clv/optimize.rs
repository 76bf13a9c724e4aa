//! Minimising a smooth objective with argmin's L-BFGS and a More-Thuente
//! line search, the way both CLV fits use it.
//!
//! argmin asks for the cost and the gradient at a point in two calls; the
//! objectives compute both in one pass, so the last evaluation is cached.

use std::cell::RefCell;

use argmin::core::{
    CostFunction, Error as ArgminError, Executor, Gradient, State, TerminationReason,
};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::ClvError;

/// An objective that computes its value and gradient together.
pub(crate) trait SmoothObjective {
    /// The value at `theta`, with the gradient written into `gradient`.
    /// Returns `None` where the objective is not finite.
    fn value_and_gradient(&self, theta: &[f64], gradient: &mut [f64]) -> Option<f64>;
}

/// The result of a minimisation.
pub(crate) struct Minimum {
    /// The minimising point.
    pub theta: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// L-BFGS iterations taken.
    pub iterations: u64,
}

/// Iterations after which the fit is declared not converged.
const MAX_ITERATIONS: u64 = 1_000;
/// Gradient norm at which L-BFGS stops.
const GRADIENT_TOLERANCE: f64 = 1e-10;
/// Change of the objective between iterations at which L-BFGS stops,
/// relative to the objective at the start (at least 1). The objectives sum
/// up to a million rows, whose rounding moves them by some 1e-14 of their
/// value: below this the iterations only chase that noise (on a million
/// customers an absolute 1e-14 let BG/NBD spend over two thirds of its
/// evaluations there, moving the parameters by some 1e-11).
const RELATIVE_COST_TOLERANCE: f64 = 1e-13;
/// Gradient norm under which a stop of the line search still counts as
/// convergence (the objectives are means per customer, of order 1).
const ACCEPTED_GRADIENT: f64 = 1e-6;
/// Pairs of vectors L-BFGS keeps.
const HISTORY: usize = 8;

/// Minimises `objective` from `start`.
pub(crate) fn minimize<O: SmoothObjective>(
    objective: &O,
    start: Vec<f64>,
) -> Result<Minimum, ClvError> {
    let problem = Cached::new(objective);
    // The start's evaluation is kept for the optimiser's first.
    let (start_value, _) = problem
        .evaluate(&start)
        .map_err(|_| ClvError::FitFailed("objective is not finite at the start".to_owned()))?;
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), HISTORY)
        .with_tolerance_grad(GRADIENT_TOLERANCE)
        .and_then(|solver| {
            solver.with_tolerance_cost(RELATIVE_COST_TOLERANCE * start_value.abs().max(1.0))
        })
        .map_err(fit_failed)?;
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(start).max_iters(MAX_ITERATIONS))
        .timer(false)
        .run()
        .map_err(fit_failed)?;
    let state = result.state();
    let theta = state
        .get_best_param()
        .cloned()
        .ok_or_else(|| ClvError::FitFailed("optimiser returned no parameters".to_owned()))?;
    let (value, gradient) = Cached::new(objective)
        .evaluate(&theta)
        .map_err(|_| ClvError::FitFailed("objective is not finite at the optimum".to_owned()))?;
    let gradient_norm = gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
    let converged = matches!(
        state.get_termination_reason(),
        Some(TerminationReason::SolverConverged)
    );
    // Near the optimum the objective is flat to rounding and the line search
    // can fail to find a decrease: that is convergence if the gradient is
    // already small.
    if !converged && gradient_norm > ACCEPTED_GRADIENT {
        return Err(ClvError::FitFailed(format!(
            "optimiser stopped without converging ({:?}), gradient norm {gradient_norm:e}",
            state.get_termination_reason()
        )));
    }
    Ok(Minimum {
        theta,
        value,
        iterations: state.get_iter(),
    })
}

fn fit_failed(error: ArgminError) -> ClvError {
    ClvError::FitFailed(error.to_string())
}

/// Cached value and gradient at the last point evaluated.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

struct Cached<'a, O> {
    objective: &'a O,
    last: RefCell<Option<Evaluation>>,
}

impl<'a, O: SmoothObjective> Cached<'a, O> {
    fn new(objective: &'a O) -> Self {
        Self {
            objective,
            last: RefCell::new(None),
        }
    }

    fn evaluate(&self, theta: &[f64]) -> Result<(f64, Vec<f64>), ArgminError> {
        if let Some((at, value, gradient)) = self.last.borrow().as_ref()
            && at.as_slice() == theta
        {
            return Ok((*value, gradient.clone()));
        }
        let mut gradient = vec![0.0; theta.len()];
        let value = self
            .objective
            .value_and_gradient(theta, &mut gradient)
            .filter(|value| value.is_finite() && gradient.iter().all(|g| g.is_finite()))
            .ok_or_else(|| ArgminError::msg("objective is not finite"))?;
        *self.last.borrow_mut() = Some((theta.to_vec(), value, gradient.clone()));
        Ok((value, gradient))
    }
}

impl<O: SmoothObjective> CostFunction for Cached<'_, O> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<Self::Output, ArgminError> {
        self.evaluate(theta).map(|(value, _)| value)
    }
}

impl<O: SmoothObjective> Gradient for Cached<'_, O> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Self::Param) -> Result<Self::Gradient, ArgminError> {
        self.evaluate(theta).map(|(_, gradient)| gradient)
    }
}

/// Rows per chunk of [`chunked_sum`]. Fixed, so the chunks, and so the
/// order the partial sums are added in, do not depend on the machine.
pub(crate) const CHUNK_ROWS: usize = 1 << 15;

/// Σ `sum(chunk)` over the chunks of [`CHUNK_ROWS`] rows of `rows`, added
/// in chunk order, with the chunks spread over the machine's cores when
/// there are several of both (one evaluation of a fit's objective on a
/// million customers is some 10^5 to 10^6 rows).
///
/// Every chunk is summed alone and the partial sums are then added in
/// order, so the result is the same, bit for bit, whatever the number of
/// threads.
pub(crate) fn chunked_sum<T, const N: usize>(
    rows: &[T],
    sum: impl Fn(&[T]) -> [f64; N] + Sync,
) -> [f64; N]
where
    T: Sync,
{
    let chunks: Vec<&[T]> = rows.chunks(CHUNK_ROWS).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(chunks.len());
    let mut partials = vec![[0.0; N]; chunks.len()];
    if threads <= 1 {
        for (partial, chunk) in partials.iter_mut().zip(&chunks) {
            *partial = sum(chunk);
        }
    } else {
        // Contiguous runs of chunks, one per thread; this thread takes the
        // first run.
        let per_thread = chunks.len().div_ceil(threads);
        let sum = &sum;
        std::thread::scope(|scope| {
            let mut runs = partials
                .chunks_mut(per_thread)
                .zip(chunks.chunks(per_thread));
            let first = runs.next();
            for (partials, chunks) in runs {
                scope.spawn(move || {
                    for (partial, chunk) in partials.iter_mut().zip(chunks) {
                        *partial = sum(chunk);
                    }
                });
            }
            if let Some((partials, chunks)) = first {
                for (partial, chunk) in partials.iter_mut().zip(chunks) {
                    *partial = sum(chunk);
                }
            }
        });
    }
    let mut total = [0.0; N];
    for partial in &partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_sums_add_every_row_once_in_chunk_order() {
        let rows: Vec<f64> = (0..(3 * CHUNK_ROWS + 17)).map(|i| i as f64 * 0.1).collect();
        let [count, total] = chunked_sum(&rows, |chunk| {
            [chunk.len() as f64, chunk.iter().sum::<f64>()]
        });
        assert_eq!(count, rows.len() as f64);
        // The same association, on one thread.
        let expected = rows
            .chunks(CHUNK_ROWS)
            .map(|chunk| chunk.iter().sum::<f64>())
            .fold(0.0, |t, p| t + p);
        assert_eq!(total.to_bits(), expected.to_bits());
        let [none] = chunked_sum(&[] as &[f64], |chunk| [chunk.len() as f64]);
        assert_eq!(none, 0.0);
    }
}
