//! The loss landscape along lines and planes of parameter space.
//!
//! Linear interpolation (Goodfellow et al. 2015): the loss at
//! `(1 - a) theta_0 + a theta_1` between the initial and the final weights,
//! on the whole training and test splits, in evaluation mode.
//!
//! TODO: the filter-normalised 2-D surface (Li et al. 2018) is configured in
//! sweep files but not computed yet.

use std::path::Path;

use burn::tensor::DType;
use minima_shared::TaskSpec;
use minima_shared::task::InterpolationSpec;
use serde::Serialize;

use crate::data::Dataset;
use crate::loss::evaluate;
use crate::model::{Ctx, Network};
use crate::output::write_atomic;

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
    let ctx = Ctx::flex(DType::F32);
    let [low, high] = line.range;
    let steps = (line.points - 1) as f64;
    let alphas: Vec<f64> = (0..line.points)
        .map(|i| low + (high - low) * i as f64 / steps)
        .collect();
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
        let net = Network::new(&spec.model, &ctx, &theta, false);
        result
            .train_loss
            .push(evaluate(&net, spec.task, &data.train).loss);
        result
            .test_loss
            .push(evaluate(&net, spec.task, &data.test).loss);
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
