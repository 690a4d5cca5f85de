//! The loss landscape along lines and planes of parameter space.
//!
//! - Linear interpolation (Goodfellow et al. 2015): the loss at
//!   `(1 - a) theta_0 + a theta_1` between the initial and the final weights,
//!   on the whole training and test splits.
//! - The 2-D surface (Li et al. 2018): the loss at `theta + x delta + y eta`
//!   for two Gaussian directions rescaled per filter, so that every output
//!   row of a weight matrix gets the norm of the same row of `theta`; the
//!   picture is then unchanged by the rescalings a network is invariant to.
//!
//! All losses in evaluation mode (no dropout), in f32 like training, by the
//! native models ([`crate::native`]).

use std::path::Path;

use minima_shared::TaskSpec;
use minima_shared::task::InterpolationSpec;
use serde::Serialize;

use minima_shared::task::SurfaceSpec;

use crate::data::{Dataset, Split, write_npy_f64};
use crate::hessian::linalg::{dot, norm};
use crate::model::{Layout, ParamKind};
use crate::native::Evaluator;
use crate::output::{write_atomic, write_json};
use crate::rng::Rng;

/// Losses along the line from the initial to the final weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interpolation {
    /// Evenly spaced, both ends of the range included; 0 is the initial and
    /// 1 the final weights.
    pub alphas: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub test_loss: Vec<f64>,
}

/// Evaluates the task's loss at `points` evenly spaced points of the line
/// through `theta_initial` (a = 0) and `theta_final` (a = 1).
pub fn interpolate(
    spec: &TaskSpec,
    data: &Dataset,
    theta_initial: &[f32],
    theta_final: &[f32],
    line: &InterpolationSpec,
) -> Interpolation {
    let mut native = Evaluator::<f32>::new(&spec.model, spec.task);
    let alphas = axis(line.range, line.points);
    let mut result = Interpolation {
        alphas: alphas.clone(),
        train_loss: Vec::with_capacity(alphas.len()),
        test_loss: Vec::with_capacity(alphas.len()),
    };
    for &a in &alphas {
        // At a = 0 and a = 1 this is exactly theta_initial and theta_final.
        let theta: Vec<f32> = theta_initial
            .iter()
            .zip(theta_final)
            .map(|(&t0, &t1)| ((1.0 - a) * f64::from(t0) + a * f64::from(t1)) as f32)
            .collect();
        result
            .train_loss
            .push(native.evaluate(&theta, &data.train).loss);
        result
            .test_loss
            .push(native.evaluate(&theta, &data.test).loss);
    }
    result
}

/// Writes `interpolation.csv`: `alpha,train_loss,test_loss`.
pub fn write_interpolation(dir: &Path, line: &Interpolation) -> std::io::Result<()> {
    let mut csv = String::from("alpha,train_loss,test_loss\n");
    for ((a, train), test) in line
        .alphas
        .iter()
        .zip(&line.train_loss)
        .zip(&line.test_loss)
    {
        csv.push_str(&format!("{a},{train},{test}\n"));
    }
    write_atomic(&dir.join("interpolation.csv"), csv.as_bytes())
}

/// A random Gaussian direction rescaled per filter: each row of each weight
/// matrix gets the norm of the same row of `theta`. Vectors (biases,
/// LayerNorm) are left still, or with `include_vectors` move along
/// themselves (the direction equals `theta` there), as Li et al. do.
pub fn filter_normalised_direction(
    layout: &Layout,
    theta: &[f32],
    include_vectors: bool,
    rng: &mut Rng,
) -> Vec<f64> {
    let mut direction = vec![0.0; theta.len()];
    for entry in &layout.entries {
        let range = entry.range();
        match entry.kind {
            ParamKind::Weight => {
                let cols = entry.shape[1];
                for (d_row, t_row) in direction[range.clone()]
                    .chunks_mut(cols)
                    .zip(theta[range].chunks(cols))
                {
                    d_row.iter_mut().for_each(|d| *d = rng.normal());
                    let target = t_row
                        .iter()
                        .map(|&t| f64::from(t).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let scale = target / (norm(d_row) + 1e-10);
                    d_row.iter_mut().for_each(|d| *d *= scale);
                }
            }
            ParamKind::Bias | ParamKind::NormScale | ParamKind::NormShift => {
                if include_vectors {
                    for (d, &t) in direction[range.clone()].iter_mut().zip(&theta[range]) {
                        *d = f64::from(t);
                    }
                }
            }
        }
    }
    direction
}

/// The two directions of a surface and how they were drawn.
#[derive(Debug, Clone)]
pub struct Plane {
    pub delta: Vec<f64>,
    pub eta: Vec<f64>,
    /// Seed of the `"surface"` stream both directions come from.
    pub seed: u64,
    /// Cosine of the angle between `delta` and `eta`; near 0 in high
    /// dimension.
    pub cosine: f64,
}

impl Plane {
    pub fn draw(layout: &Layout, theta: &[f32], include_vectors: bool, seed: u64) -> Plane {
        let mut rng = Rng::stream(seed, "surface");
        let delta = filter_normalised_direction(layout, theta, include_vectors, &mut rng);
        let eta = filter_normalised_direction(layout, theta, include_vectors, &mut rng);
        let cosine = dot(&delta, &eta) / (norm(&delta) * norm(&eta)).max(f64::MIN_POSITIVE);
        Plane {
            delta,
            eta,
            seed,
            cosine,
        }
    }
}

/// Losses on a grid of the plane through `theta` spanned by `delta`, `eta`.
///
/// Layout: `train[j * xs.len() + i]` is the loss at
/// `theta + xs[i] delta + ys[j] eta`, i.e. rows follow `y` and columns `x`,
/// as `.npy` arrays of shape `[ys.len(), xs.len()]` (the convention of
/// matplotlib's `contour(x, y, z)`).
#[derive(Debug, Clone, PartialEq)]
pub struct SurfaceGrid {
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub train: Vec<f64>,
    pub test: Vec<f64>,
}

/// Evaluates the points `indices` (row-major, see [`SurfaceGrid`]) of the
/// grid `xs x ys`: the unit a surface can be split into between workers.
/// Returns `(train loss, test loss)` per point.
#[allow(clippy::too_many_arguments)]
pub fn surface_points(
    spec: &TaskSpec,
    train: &Split,
    test: &Split,
    theta: &[f32],
    plane: &Plane,
    xs: &[f64],
    ys: &[f64],
    indices: std::ops::Range<usize>,
) -> Vec<(f64, f64)> {
    let mut native = Evaluator::<f32>::new(&spec.model, spec.task);
    indices
        .map(|k| {
            let (x, y) = (xs[k % xs.len()], ys[k / xs.len()]);
            let point: Vec<f32> = theta
                .iter()
                .zip(plane.delta.iter().zip(&plane.eta))
                .map(|(&t, (d, e))| (f64::from(t) + x * d + y * e) as f32)
                .collect();
            let train_loss = native.evaluate(&point, train).loss;
            (train_loss, native.evaluate(&point, test).loss)
        })
        .collect()
}

/// Evenly spaced points of `range`, both ends included.
pub fn axis(range: [f64; 2], points: usize) -> Vec<f64> {
    let steps = (points.max(2) - 1) as f64;
    (0..points.max(2))
        .map(|i| range[0] + (range[1] - range[0]) * i as f64 / steps)
        .collect()
}

/// The whole surface a task asks for, around its final weights.
pub fn surface(
    spec: &TaskSpec,
    data: &Dataset,
    theta: &[f32],
    s: &SurfaceSpec,
) -> (Plane, SurfaceGrid) {
    let layout = Layout::for_model(&spec.model);
    let plane = Plane::draw(&layout, theta, s.include_vectors, spec.seed);
    let xs = axis(s.range, s.resolution);
    let ys = xs.clone();
    let train = data.train.head(s.samples);
    let points = surface_points(
        spec,
        &train,
        &data.test,
        theta,
        &plane,
        &xs,
        &ys,
        0..xs.len() * ys.len(),
    );
    let grid = SurfaceGrid {
        train: points.iter().map(|p| p.0).collect(),
        test: points.iter().map(|p| p.1).collect(),
        xs,
        ys,
    };
    (plane, grid)
}

/// Writes `surface_train.npy` and `surface_test.npy` (float64
/// `[len(y), len(x)]`) and `surface.json` with the axes, the layout, the
/// direction seed, the cosine between the directions and the settings.
pub fn write_surface(
    dir: &Path,
    s: &SurfaceSpec,
    plane: &Plane,
    grid: &SurfaceGrid,
) -> std::io::Result<()> {
    let shape = [grid.ys.len(), grid.xs.len()];
    write_npy_f64(&dir.join("surface_train.npy"), &shape, &grid.train)?;
    write_npy_f64(&dir.join("surface_test.npy"), &shape, &grid.test)?;
    let info = serde_json::json!({
        "x": grid.xs,
        "y": grid.ys,
        "layout": "surface_*.npy[j][i] = loss(theta + x[i] * delta + y[j] * eta), shape [len(y), len(x)]",
        "direction_seed": plane.seed,
        "direction_stream": "surface",
        "cosine": plane.cosine,
        "train_samples": s.samples,
        "include_vectors": s.include_vectors,
        "normalisation": "filter: each row of each weight matrix has the norm of the same row of theta",
    });
    write_json(&dir.join("surface.json"), &info)
}
