//! Sharpness of a reached minimum: the Hessian of the training loss.
//!
//! burn's autodiff is first order, so Hessian-vector products are finite
//! differences of exact gradients evaluated in f64, along the unit direction
//! `u = v / |v|`. Two schemes:
//!
//! - [`Scheme::Forward`] (the default): `H v ~ |v| (g(theta + h u) - g(theta)) / h`
//!   with `g(theta)` computed once per operator, so a product costs one
//!   gradient. Truncation error `O(h)` times the third derivative, rounding
//!   about `delta |g| / h` with `delta` the relative rounding of a gradient;
//!   `h = sqrt(eps) max(1, rms(theta))` (about 1.5e-8). Measured on trained
//!   Table I models (`benches/fd_accuracy.rs`, docs/benchmarks.md): within
//!   5e-6 relative of central differences, whose own error is below 1e-7.
//! - [`Scheme::Central`]: `H v ~ |v| (g(theta + h u) - g(theta - h u)) / 2h`,
//!   two gradients a product; error `O(h^2)`, `h = eps^(1/3) max(1,
//!   rms(theta))` (about 6e-6). In PyTorch, f64, steps of 1e-5 to 1e-6 along
//!   a unit direction agree with exact double-backward products to 1e-7 to
//!   1e-10 relative; steps of 1e-3 cross the ReLU kinks of the Transformer's
//!   feed-forward layers and are useless, which is why f32 (whose rounding
//!   forces such steps) is not used here.
//!
//! Even steps of 1e-6 cross ReLU kinks of the deep Transformers: on a
//! trained 11-layer d = 32 model, central products with the default step and
//! a quarter of it differed by 75 %. [`LossFunction::freeze_at`] therefore
//! keeps the ReLUs' activation patterns of `theta` for every evaluation, so
//! the differences stay on the smooth piece `theta` lies on and converge to
//! the Hessian double-backward computes (ReLU'' = 0): the same two steps
//! then agree to 1.5e-8.
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

    /// Keeps the ReLU activation patterns of `theta` for every later
    /// evaluation ([`Evaluator::freeze_activation_patterns`]): finite
    /// differences around `theta` then measure the Hessian of the piece of
    /// the loss `theta` lies on, as double-backward does, instead of jumps
    /// across its kinks.
    pub fn freeze_at(&mut self, theta: &[f64]) {
        self.native.freeze_activation_patterns(theta, &self.data);
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

/// How a Hessian-vector product is taken from gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// One gradient a product, beside the gradient at `theta` computed once.
    Forward,
    /// Two gradients a product, second-order accurate.
    Central,
}

impl Scheme {
    /// The step along a unit direction at `theta` that balances truncation
    /// and rounding.
    pub fn default_step(self, theta: &[f64]) -> f64 {
        let rms = norm(theta) / (theta.len().max(1) as f64).sqrt();
        let base = match self {
            Scheme::Forward => f64::EPSILON.sqrt(),
            Scheme::Central => f64::EPSILON.cbrt(),
        };
        base * rms.max(1.0)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scheme::Forward => "forward differences of f64 gradients",
            Scheme::Central => "central differences of f64 gradients",
        }
    }
}

/// `v -> H v` of a [`Gradient`] at a point, by finite differences.
pub struct FiniteDifferenceHessian<'a, G: Gradient> {
    pub function: &'a mut G,
    pub theta: Vec<f64>,
    pub scheme: Scheme,
    /// Step along the unit direction.
    pub step: f64,
    /// Products computed so far.
    pub products: usize,
    /// The gradient at `theta`, once the forward scheme needed it.
    at_theta: Option<Vec<f64>>,
}

impl<'a, G: Gradient> FiniteDifferenceHessian<'a, G> {
    /// The forward-difference operator with its default step.
    pub fn new(function: &'a mut G, theta: Vec<f64>) -> Self {
        Self::with_scheme(function, theta, Scheme::Forward)
    }

    pub fn with_scheme(function: &'a mut G, theta: Vec<f64>, scheme: Scheme) -> Self {
        let step = scheme.default_step(&theta);
        FiniteDifferenceHessian {
            function,
            theta,
            scheme,
            step,
            products: 0,
            at_theta: None,
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
        let plus = self.function.gradient(&shifted(1.0));
        let (base, factor) = match self.scheme {
            Scheme::Forward => {
                if self.at_theta.is_none() {
                    self.at_theta = Some(self.function.gradient(&self.theta));
                }
                (self.at_theta.as_deref().unwrap_or_default(), size / h)
            }
            Scheme::Central => {
                let minus = self.function.gradient(&shifted(-1.0));
                let factor = size / (2.0 * h);
                return plus
                    .iter()
                    .zip(&minus)
                    .map(|(a, b)| (a - b) * factor)
                    .collect();
            }
        };
        plus.iter()
            .zip(base)
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
    /// Finite-difference step along unit directions.
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
