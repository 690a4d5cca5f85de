//! The sharpness analysis of one trained model, as a task runs it.

use std::path::Path;

use minima_shared::TaskSpec;
use minima_shared::task::HessianSpec;
use tracing::info;

use super::spectrum::{self, Density, Operator};
use super::{AdaptiveHessian, FiniteDifferenceHessian, HessianReport, LossFunction, magnitudes};
use crate::data::Dataset;
use crate::output::write_atomic;
use crate::rng::Rng;

/// Points of the density grid.
const DENSITY_POINTS: usize = 1000;
/// Width of each Ritz value's Gaussian, relative to the spectrum's width.
const DENSITY_SIGMA: f64 = 1e-3;

/// Measures the Hessian of the training loss at `theta` as `h` asks.
pub fn analyse(
    spec: &TaskSpec,
    data: &Dataset,
    theta: &[f32],
    h: &HessianSpec,
) -> (HessianReport, Option<Density>) {
    let mut function = LossFunction::new(&spec.model, spec.task, data.train.head(h.samples));
    let theta: Vec<f64> = theta.iter().map(|&t| f64::from(t)).collect();
    let loss = function.loss(&theta);
    function.freeze_at(&theta);
    let seed = spec.seed;
    let mut rng = Rng::stream(seed, "hessian");
    let mut op = FiniteDifferenceHessian::new(&mut function, theta.clone());
    let (step, method) = (op.step, op.scheme.describe());

    let top = spectrum::top_eigenvalues(
        &mut op,
        h.top_eigenvalues,
        h.max_iterations,
        h.tolerance,
        &mut rng,
    );
    info!(task_id = %spec.id().short(), top_eigenvalue = top[0].eigenvalue, "top eigenvalue");

    // Both ends of the spectrum; with a density, its first run serves.
    let density = h.density.then(|| {
        spectrum::spectral_density(
            &mut op,
            h.density_runs,
            h.lanczos_steps,
            DENSITY_POINTS,
            DENSITY_SIGMA,
            &mut rng,
        )
    });
    let ends = match &density {
        Some(d) => d.runs[0].ritz_values.clone(),
        None => {
            let start = spectrum::rademacher(&mut rng, op.dim());
            spectrum::lanczos(&mut op, &start, h.lanczos_steps).ritz_values
        }
    };

    let skipped = spectrum::TraceEstimate {
        trace: f64::NAN,
        standard_error: f64::NAN,
        samples: 0,
        converged: false,
    };
    let trace = if h.trace {
        spectrum::hutchinson_trace(&mut op, h.trace_samples, h.trace_tolerance, &mut rng)
    } else {
        skipped.clone()
    };

    let mut adaptive = AdaptiveHessian {
        inner: &mut op,
        magnitudes: magnitudes(&theta),
    };
    let adaptive_top =
        spectrum::top_eigenvalues(&mut adaptive, 1, h.max_iterations, h.tolerance, &mut rng);
    let adaptive_trace = if h.trace {
        spectrum::hutchinson_trace(&mut adaptive, h.trace_samples, h.trace_tolerance, &mut rng)
    } else {
        skipped
    };

    let products = op.products;
    drop(op);
    let report = HessianReport {
        samples: h.samples.min(data.train.len()),
        loss,
        method,
        step,
        seed,
        power_tolerance: h.tolerance,
        power_max_iterations: h.max_iterations,
        trace_tolerance: h.trace_tolerance,
        trace_max_samples: h.trace_samples,
        lanczos_steps: h.lanczos_steps,
        top_eigenvalues: top,
        smallest_eigenvalue: ends[0],
        largest_eigenvalue: *ends.last().expect("a Lanczos run has a Ritz value"),
        trace,
        adaptive_top_eigenvalue: adaptive_top[0].eigenvalue,
        adaptive_trace,
        products,
        gradients: function.gradient_count,
    };
    (report, density)
}

/// Writes `hessian.json`, and with a density `density.csv` (eigenvalue,
/// density) and `ritz.csv` (run, value, weight).
pub fn write_hessian(
    dir: &Path,
    report: &HessianReport,
    density: Option<&Density>,
) -> anyhow::Result<()> {
    crate::output::write_json(&dir.join("hessian.json"), report)?;
    if let Some(d) = density {
        let mut csv = String::from("eigenvalue,density\n");
        for (t, p) in d.grid.iter().zip(&d.density) {
            csv.push_str(&format!("{t},{p}\n"));
        }
        write_atomic(&dir.join("density.csv"), csv.as_bytes())?;
        let mut ritz = String::from("run,value,weight\n");
        for (run, r) in d.runs.iter().enumerate() {
            for (v, w) in r.ritz_values.iter().zip(&r.ritz_weights) {
                ritz.push_str(&format!("{run},{v},{w}\n"));
            }
        }
        write_atomic(&dir.join("ritz.csv"), ritz.as_bytes())?;
    }
    Ok(())
}
