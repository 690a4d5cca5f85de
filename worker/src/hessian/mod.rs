//! Sharpness of a reached minimum: the Hessian of the training loss.
//!
//! burn's autodiff is first order, so Hessian-vector products are central
//! differences of exact gradients evaluated in f64:
//!
//! `H v ~ |v| (g(theta + h u) - g(theta - h u)) / 2h`, with `u = v / |v|`.
//!
//! The truncation error is `O(h^2)` times the third derivative and the
//! rounding error about `eps |g| / h`; `h = eps^(1/3) max(1, rms(theta))`
//! (about 6e-6 for the study's weights) balances the two. In PyTorch, f64,
//! steps of 1e-5 to 1e-6 along a unit direction agree with exact
//! double-backward products to 1e-7 to 1e-10 relative; steps of 1e-3 cross
//! the ReLU kinks of the Transformer's feed-forward layers and are useless,
//! which is why f32 (whose rounding forces such steps) is not used here.
//!
//! - [`analyse`]: the whole analysis of a trained model, as a task runs it.
//! - [`spectrum`]: power iteration, Lanczos, Hutchinson and stochastic
//!   Lanczos quadrature on any symmetric operator.
//! - [`linalg`]: small dense helpers and symmetric eigendecomposition.

mod analysis;
pub mod linalg;
pub mod spectrum;

pub use analysis::{analyse, write_hessian};

use minima_shared::{ModelSpec, TaskKind};
use serde::Serialize;

use crate::data::Split;
use crate::native::Evaluator;
use linalg::norm;
use spectrum::Operator;

/// Something whose gradient can be evaluated at any point.
pub trait Gradient {
    fn dim(&self) -> usize;
    /// The gradient at `theta`.
    fn gradient(&mut self, theta: &[f64]) -> Vec<f64>;
}

/// The mean training loss of a model over a fixed set of sequences, in f64
/// and evaluation mode (no dropout), evaluated by the native models
/// ([`crate::native`]).
pub struct LossFunction {
    data: Split,
    native: Evaluator<f64>,
    /// Gradients evaluated so far, for reports and benchmarks.
    pub gradient_count: usize,
}

impl LossFunction {
    pub fn new(spec: &ModelSpec, kind: TaskKind, data: Split) -> LossFunction {
        LossFunction {
            data,
            native: Evaluator::new(spec, kind),
            gradient_count: 0,
        }
    }

    /// Mean loss at `theta`.
    pub fn loss(&mut self, theta: &[f64]) -> f64 {
        self.native.evaluate(theta, &self.data).loss
    }
}

impl Gradient for LossFunction {
    fn dim(&self) -> usize {
        self.native.dim()
    }

    /// The gradient of the mean loss.
    fn gradient(&mut self, theta: &[f64]) -> Vec<f64> {
        self.gradient_count += 1;
        let mut grad = vec![0.0; theta.len()];
        self.native.loss_and_gradient(theta, &self.data, &mut grad);
        grad
    }
}

/// Step of the central difference along a unit direction at `theta`.
pub fn default_step(theta: &[f64]) -> f64 {
    let rms = norm(theta) / (theta.len().max(1) as f64).sqrt();
    f64::EPSILON.cbrt() * rms.max(1.0)
}

/// `v -> H v` of a [`Gradient`] at a point, by central differences.
pub struct FiniteDifferenceHessian<'a, G: Gradient> {
    pub function: &'a mut G,
    pub theta: Vec<f64>,
    /// Step along the unit direction.
    pub step: f64,
    /// Products computed so far.
    pub products: usize,
}

impl<'a, G: Gradient> FiniteDifferenceHessian<'a, G> {
    pub fn new(function: &'a mut G, theta: Vec<f64>) -> Self {
        let step = default_step(&theta);
        FiniteDifferenceHessian {
            function,
            theta,
            step,
            products: 0,
        }
    }
}

impl<G: Gradient> Operator for FiniteDifferenceHessian<'_, G> {
    fn dim(&self) -> usize {
        self.theta.len()
    }

    fn apply(&mut self, v: &[f64]) -> Vec<f64> {
        self.products += 1;
        let size = norm(v);
        if size == 0.0 {
            return vec![0.0; v.len()];
        }
        let h = self.step;
        let shifted = |sign: f64| -> Vec<f64> {
            self.theta
                .iter()
                .zip(v)
                .map(|(t, x)| t + sign * h * x / size)
                .collect()
        };
        let (plus, minus) = (shifted(1.0), shifted(-1.0));
        let g_plus = self.function.gradient(&plus);
        let g_minus = self.function.gradient(&minus);
        let factor = size / (2.0 * h);
        g_plus
            .iter()
            .zip(&g_minus)
            .map(|(a, b)| (a - b) * factor)
            .collect()
    }
}

/// The Hessian seen in coordinates scaled by the parameters' magnitudes:
/// `D H D` with `D = diag(|theta|)`.
///
/// A rescaling that leaves the network's function unchanged multiplies
/// parameters elementwise, `theta' = S theta`, and the Hessian becomes
/// `S^-1 H S^-1`; with `D' = S D`, `D' H' D' = D H D`. The spectrum of this
/// operator (the adaptive sharpness of Kwon et al. 2021) is therefore the
/// same for every equivalent network, which the raw spectrum is not
/// (Dinh et al. 2017).
pub struct AdaptiveHessian<'a> {
    pub inner: &'a mut dyn Operator,
    pub magnitudes: Vec<f64>,
}

impl Operator for AdaptiveHessian<'_> {
    fn dim(&self) -> usize {
        self.magnitudes.len()
    }

    fn apply(&mut self, v: &[f64]) -> Vec<f64> {
        let dv: Vec<f64> = v.iter().zip(&self.magnitudes).map(|(x, m)| x * m).collect();
        let hdv = self.inner.apply(&dv);
        hdv.iter()
            .zip(&self.magnitudes)
            .map(|(x, m)| x * m)
            .collect()
    }
}

/// `|theta|` elementwise: the scaling of [`AdaptiveHessian`].
pub fn magnitudes(theta: &[f64]) -> Vec<f64> {
    theta.iter().map(|t| t.abs()).collect()
}

/// What the sharpness analysis of a task measured.
#[derive(Debug, Clone, Serialize)]
pub struct HessianReport {
    /// Training sequences the loss was averaged over (the first ones).
    pub samples: usize,
    pub loss: f64,
    pub method: &'static str,
    /// Central-difference step along unit directions.
    pub step: f64,
    /// Seed of the random starts and probe vectors.
    pub seed: u64,
    pub power_tolerance: f64,
    pub power_max_iterations: usize,
    pub trace_tolerance: f64,
    pub trace_max_samples: usize,
    pub lanczos_steps: usize,
    /// Eigenvalues of largest magnitude, signed, by power iteration.
    pub top_eigenvalues: Vec<spectrum::PowerResult>,
    /// Smallest and largest Ritz values of a Lanczos run.
    pub smallest_eigenvalue: f64,
    pub largest_eigenvalue: f64,
    pub trace: spectrum::TraceEstimate,
    /// Top eigenvalue and trace of `D H D`, `D = diag(|theta|)`.
    pub adaptive_top_eigenvalue: f64,
    pub adaptive_trace: spectrum::TraceEstimate,
    /// Hessian-vector products computed, and gradients behind them.
    pub products: usize,
    pub gradients: usize,
}
