//! Spectral estimates of a symmetric operator known only through products
//! `v -> H v`: power iteration with deflation (PyHessian's eigenvalue
//! method), Lanczos with full re-orthogonalisation, Hutchinson's trace
//! estimator and stochastic Lanczos quadrature for the spectral density.

use serde::Serialize;

use super::linalg::{axpy, dot, norm, normalize, orthogonalize, scale, tridiagonal_eigen};
use crate::rng::Rng;

/// A symmetric linear operator on vectors of length `dim()`.
pub trait Operator {
    fn dim(&self) -> usize;
    /// `H v`.
    fn apply(&mut self, v: &[f64]) -> Vec<f64>;
}

/// A random vector of ±1 entries.
pub fn rademacher(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| if rng.next_u64() >> 63 == 0 { 1.0 } else { -1.0 })
        .collect()
}

fn gaussian_unit(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    normalize(&mut v);
    v
}

/// One eigenvalue found by power iteration.
#[derive(Debug, Clone, Serialize)]
pub struct PowerResult {
    pub eigenvalue: f64,
    pub iterations: usize,
    pub converged: bool,
    #[serde(skip)]
    pub eigenvector: Vec<f64>,
}

/// The `k` eigenvalues of largest magnitude, with their signs, by power
/// iteration; each later one is deflated against the earlier eigenvectors.
/// Stops when the relative change of the Rayleigh quotient is below `tol`
/// or after `max_iter` products, as PyHessian does.
pub fn top_eigenvalues(
    op: &mut dyn Operator,
    k: usize,
    max_iter: usize,
    tol: f64,
    rng: &mut Rng,
) -> Vec<PowerResult> {
    let n = op.dim();
    let mut found: Vec<PowerResult> = Vec::with_capacity(k);
    for _ in 0..k.min(n) {
        let basis: Vec<Vec<f64>> = found.iter().map(|r| r.eigenvector.clone()).collect();
        let mut v = gaussian_unit(rng, n);
        orthogonalize(&mut v, &basis);
        normalize(&mut v);
        let mut eigenvalue: Option<f64> = None;
        let mut result = PowerResult {
            eigenvalue: 0.0,
            iterations: 0,
            converged: false,
            eigenvector: v.clone(),
        };
        for iteration in 1..=max_iter {
            let mut hv = op.apply(&v);
            orthogonalize(&mut hv, &basis);
            let rayleigh = dot(&hv, &v);
            let size = normalize(&mut hv);
            result.iterations = iteration;
            result.eigenvalue = rayleigh;
            if size == 0.0 {
                result.converged = true;
                break;
            }
            v = hv;
            if let Some(previous) = eigenvalue
                && (rayleigh - previous).abs() / (previous.abs() + 1e-6) < tol
            {
                result.converged = true;
                break;
            }
            eigenvalue = Some(rayleigh);
        }
        result.eigenvector = v;
        found.push(result);
    }
    found
}

/// The tridiagonal matrix of a Lanczos run and its Ritz pairs.
#[derive(Debug, Clone, Serialize)]
pub struct LanczosRun {
    pub alpha: Vec<f64>,
    pub beta: Vec<f64>,
    /// Eigenvalues of the tridiagonal matrix, ascending.
    pub ritz_values: Vec<f64>,
    /// Squared first components of its eigenvectors: the quadrature weights.
    pub ritz_weights: Vec<f64>,
}

/// `steps` Lanczos steps from the unit vector along `start`, each new vector
/// re-orthogonalised against all earlier ones (stable in f64 for the few
/// hundred steps used here). Stops early when the Krylov space is exhausted.
pub fn lanczos(op: &mut dyn Operator, start: &[f64], steps: usize) -> LanczosRun {
    let n = op.dim();
    let steps = steps.min(n).max(1);
    let mut q = start.to_vec();
    normalize(&mut q);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(steps);
    let mut alpha = Vec::with_capacity(steps);
    let mut beta: Vec<f64> = Vec::with_capacity(steps);
    for j in 0..steps {
        let mut w = op.apply(&q);
        let a = dot(&w, &q);
        alpha.push(a);
        axpy(-a, &q, &mut w);
        if let (Some(previous), Some(&b)) = (basis.last(), beta.last()) {
            axpy(-b, previous, &mut w);
        }
        basis.push(q);
        // Twice is enough (Kahan, Parlett).
        orthogonalize(&mut w, &basis);
        orthogonalize(&mut w, &basis);
        let b = norm(&w);
        if j + 1 == steps || b <= 1e-10 * a.abs().max(1e-300) {
            break;
        }
        beta.push(b);
        scale(1.0 / b, &mut w);
        q = w;
    }
    let (ritz_values, firsts) = tridiagonal_eigen(&alpha, &beta);
    LanczosRun {
        alpha,
        beta,
        ritz_values,
        ritz_weights: firsts.iter().map(|f| f * f).collect(),
    }
}

/// Hutchinson's estimate of the trace with its standard error.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEstimate {
    pub trace: f64,
    pub standard_error: f64,
    pub samples: usize,
    pub converged: bool,
}

/// Averages `v^T H v` over Rademacher vectors until the running mean changes
/// by less than `tol` relative, or `max_samples` vectors (PyHessian's rule).
pub fn hutchinson_trace(
    op: &mut dyn Operator,
    max_samples: usize,
    tol: f64,
    rng: &mut Rng,
) -> TraceEstimate {
    let n = op.dim();
    let mut values: Vec<f64> = Vec::with_capacity(max_samples);
    let mut mean = 0.0;
    let mut converged = false;
    for _ in 0..max_samples.max(1) {
        let v = rademacher(rng, n);
        values.push(dot(&op.apply(&v), &v));
        let new_mean = values.iter().sum::<f64>() / values.len() as f64;
        if values.len() > 1 && (new_mean - mean).abs() / (mean.abs() + 1e-6) < tol {
            mean = new_mean;
            converged = true;
            break;
        }
        mean = new_mean;
    }
    let count = values.len() as f64;
    let variance = if values.len() > 1 {
        values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (count - 1.0)
    } else {
        0.0
    };
    TraceEstimate {
        trace: mean,
        standard_error: (variance / count).sqrt(),
        samples: values.len(),
        converged,
    }
}

/// The spectral density by stochastic Lanczos quadrature.
#[derive(Debug, Clone, Serialize)]
pub struct Density {
    /// Grid of eigenvalues, ascending.
    pub grid: Vec<f64>,
    /// Density at each grid point; integrates to 1 over the grid.
    pub density: Vec<f64>,
    /// Standard deviation of the Gaussian put on each Ritz value.
    pub sigma: f64,
    /// One Lanczos run per random start.
    pub runs: Vec<LanczosRun>,
}

/// `runs` Lanczos runs of `steps` steps from Rademacher starts; each Ritz
/// value becomes a Gaussian of width `sigma_rel` times the spectrum's width,
/// weighted by its quadrature weight, and the runs are averaged.
pub fn spectral_density(
    op: &mut dyn Operator,
    runs: usize,
    steps: usize,
    points: usize,
    sigma_rel: f64,
    rng: &mut Rng,
) -> Density {
    let n = op.dim();
    let runs: Vec<LanczosRun> = (0..runs.max(1))
        .map(|_| lanczos(op, &rademacher(rng, n), steps))
        .collect();
    let all = runs.iter().flat_map(|r| r.ritz_values.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let width = (hi - lo).max(1e-12);
    let sigma = sigma_rel * width;
    let (start, end) = (
        lo - 0.05 * width - 3.0 * sigma,
        hi + 0.05 * width + 3.0 * sigma,
    );
    let step = (end - start) / (points.max(2) - 1) as f64;
    let grid: Vec<f64> = (0..points.max(2))
        .map(|i| start + i as f64 * step)
        .collect();
    let norm_const = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
    let mut density: Vec<f64> = grid
        .iter()
        .map(|&t| {
            runs.iter()
                .flat_map(|r| r.ritz_values.iter().zip(&r.ritz_weights))
                .map(|(&value, &weight)| {
                    weight * norm_const * (-0.5 * ((t - value) / sigma).powi(2)).exp()
                })
                .sum::<f64>()
                / runs.len() as f64
        })
        .collect();
    // The Gaussians' tails beyond the grid are negligible; renormalise the
    // trapezoidal integral to exactly 1 so plots and moments agree.
    let integral = trapezoid(&grid, &density);
    if integral > 0.0 {
        density.iter_mut().for_each(|d| *d /= integral);
    }
    Density {
        grid,
        density,
        sigma,
        runs,
    }
}

impl Density {
    /// The first moment of the density: the mean eigenvalue, trace / n.
    pub fn mean(&self) -> f64 {
        let weighted: Vec<f64> = self
            .grid
            .iter()
            .zip(&self.density)
            .map(|(t, p)| t * p)
            .collect();
        trapezoid(&self.grid, &weighted)
    }

    /// The same moment from the quadrature nodes, before broadening.
    pub fn quadrature_mean(&self) -> f64 {
        let per_run = |r: &LanczosRun| -> f64 {
            r.ritz_values
                .iter()
                .zip(&r.ritz_weights)
                .map(|(v, w)| v * w)
                .sum()
        };
        self.runs.iter().map(per_run).sum::<f64>() / self.runs.len() as f64
    }
}

/// Trapezoidal integral of `y` over the grid `x`.
pub fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| 0.5 * (x[1] - x[0]) * (y[0] + y[1]))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dense matrix of known spectrum.
    struct Dense {
        n: usize,
        a: Vec<f64>,
    }

    impl Dense {
        fn with_spectrum(values: &[f64], seed: u64) -> Dense {
            Dense {
                n: values.len(),
                a: super::super::linalg::with_spectrum(values, seed),
            }
        }
    }

    impl Operator for Dense {
        fn dim(&self) -> usize {
            self.n
        }
        fn apply(&mut self, v: &[f64]) -> Vec<f64> {
            (0..self.n)
                .map(|i| dot(&self.a[i * self.n..(i + 1) * self.n], v))
                .collect()
        }
    }

    fn spectrum() -> Vec<f64> {
        // Largest magnitude is negative, as in some of the study's minima.
        let mut values: Vec<f64> = (0..40).map(|i| 0.1 * i as f64).collect();
        values[7] = -9.0;
        values[20] = 6.0;
        values
    }

    #[test]
    fn power_iteration_finds_the_signed_top_eigenvalues() {
        let mut op = Dense::with_spectrum(&spectrum(), 1);
        let top = top_eigenvalues(&mut op, 2, 1000, 1e-10, &mut Rng::new(2));
        assert!((top[0].eigenvalue + 9.0).abs() < 1e-6, "{top:?}");
        assert!((top[1].eigenvalue - 6.0).abs() < 1e-6, "{top:?}");
    }

    #[test]
    fn lanczos_finds_both_ends() {
        let mut op = Dense::with_spectrum(&spectrum(), 3);
        let start = rademacher(&mut Rng::new(4), 40);
        let run = lanczos(&mut op, &start, 40);
        assert!((run.ritz_values[0] + 9.0).abs() < 1e-8);
        assert!((run.ritz_values.last().unwrap() - 6.0).abs() < 1e-8);
        let weights: f64 = run.ritz_weights.iter().sum();
        assert!((weights - 1.0).abs() < 1e-10);
    }

    #[test]
    fn hutchinson_is_unbiased_within_its_standard_error() {
        let values = spectrum();
        let exact: f64 = values.iter().sum();
        let mut op = Dense::with_spectrum(&values, 5);
        let estimate = hutchinson_trace(&mut op, 2000, 0.0, &mut Rng::new(6));
        assert_eq!(estimate.samples, 2000);
        assert!(
            (estimate.trace - exact).abs() < 4.0 * estimate.standard_error,
            "{} vs {exact} (se {})",
            estimate.trace,
            estimate.standard_error
        );
    }

    #[test]
    fn density_integrates_to_one_and_its_mean_is_the_trace_over_n() {
        let values = spectrum();
        let n = values.len() as f64;
        let mut op = Dense::with_spectrum(&values, 7);
        let d = spectral_density(&mut op, 20, 40, 4000, 0.005, &mut Rng::new(8));
        assert!((trapezoid(&d.grid, &d.density) - 1.0).abs() < 1e-12);
        let mean = d.mean();
        let exact = values.iter().sum::<f64>() / n;
        // Each run's quadrature mean is v^T H v / n for a Rademacher v: a
        // Hutchinson sample, so 20 runs leave a few percent of noise.
        let quadrature = d.quadrature_mean();
        assert!(
            (mean - quadrature).abs() < 1e-3 * exact.abs().max(1.0),
            "{mean} vs {quadrature}"
        );
        assert!(
            (quadrature - exact).abs() < 0.2 * exact.abs(),
            "{quadrature} vs {exact}"
        );
    }
}
