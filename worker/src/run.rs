//! One task from configuration to results: data, training, evaluation and
//! the files of its output folder.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use minima_shared::{EpochLosses, TaskMetrics, TaskSpec, TaskTimings};

use crate::data::Dataset;
use crate::device::TrainDevice;
use crate::export::write_safetensors;
use crate::hessian::spectrum::Density;
use crate::hessian::{HessianReport, analyse, write_hessian};
use crate::landscape::{
    self, Interpolation, Plane, SurfaceGrid, interpolate, write_interpolation, write_surface,
};
use crate::native::Evaluator;
use crate::output::{write_atomic, write_json};
use crate::train::{TrainOutcome, train};

/// File whose presence marks a finished task folder; written last.
pub const METRICS_FILE: &str = "metrics.json";

/// Everything a finished task produced.
#[derive(Debug, Clone)]
pub struct TaskReport {
    pub metrics: TaskMetrics,
    pub timings: TaskTimings,
    pub training: TrainOutcome,
    /// The sharpness analysis, when the task asks for it.
    pub hessian: Option<(HessianReport, Option<Density>)>,
    /// The linear interpolation, when the task asks for it.
    pub interpolation: Option<Interpolation>,
    /// The 2-D surface around the final weights, when the task asks for it.
    pub surface: Option<(Plane, SurfaceGrid)>,
}

/// Runs a task: generates its data, trains, evaluates the initial and final
/// weights and analyses the minimum. Training runs on `device`, the analyses
/// on the CPU. `on_epoch` hears of each finished epoch.
pub fn run_task(
    spec: &TaskSpec,
    device: TrainDevice,
    on_epoch: &mut dyn FnMut(&EpochLosses),
) -> TaskReport {
    let started = Instant::now();
    let data = Dataset::generate(spec.task, &spec.data);
    let training = train(spec, &data, device, on_epoch);
    let train_seconds = started.elapsed().as_secs_f64();

    let mut native = Evaluator::<f32>::new(&spec.model, spec.task);
    let (initial, fin) = (&training.theta_initial, &training.theta_final);
    let test = native.evaluate(fin, &data.test);
    let hessian_started = Instant::now();
    let hessian = spec
        .analysis
        .hessian
        .as_ref()
        .map(|h| analyse(spec, &data, &training.theta_final, h));
    let hessian_seconds = hessian_started.elapsed().as_secs_f64();
    let interpolation = spec.analysis.interpolation.as_ref().map(|line| {
        interpolate(
            spec,
            &data,
            &training.theta_initial,
            &training.theta_final,
            line,
        )
    });
    let surface_started = Instant::now();
    let surface = spec
        .analysis
        .surface
        .as_ref()
        .map(|s| landscape::surface(spec, &data, &training.theta_final, s));
    let surface_seconds = surface_started.elapsed().as_secs_f64();
    let finite = |v: f64| v.is_finite().then_some(v);
    let report = hessian.as_ref().map(|(r, _)| r);
    let metrics = TaskMetrics {
        task_id: spec.id().to_string(),
        params: training.theta_final.len(),
        epochs: training.epochs.clone(),
        initial_train_loss: native.evaluate(initial, &data.train).loss,
        initial_test_loss: native.evaluate(initial, &data.test).loss,
        train_loss: native.evaluate(fin, &data.train).loss,
        validation_loss: native.evaluate(fin, &data.validation).loss,
        test_loss: test.loss,
        test_accuracy: test.accuracy,
        top_eigenvalue: report.map(|r| r.top_eigenvalues[0].eigenvalue),
        trace: report.and_then(|r| finite(r.trace.trace)),
        trace_standard_error: report.and_then(|r| finite(r.trace.standard_error)),
        adaptive_top_eigenvalue: report.map(|r| r.adaptive_top_eigenvalue),
        adaptive_trace: report.and_then(|r| finite(r.adaptive_trace.trace)),
    };
    let timings = TaskTimings {
        train_seconds,
        hessian_seconds,
        surface_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    TaskReport {
        metrics,
        timings,
        training,
        hessian,
        interpolation,
        surface,
    }
}

/// Writes a task's folder: `task.json`, `epochs.csv`, the initial and final
/// weights as safetensors, the Hessian analysis (`hessian.json`, and
/// `density.csv` and `ritz.csv` with a density), `interpolation.csv`, the
/// surface (`surface_train.npy`, `surface_test.npy`, `surface.json`),
/// `timings.json` and, last, `metrics.json`.
pub fn write_task_folder(dir: &Path, spec: &TaskSpec, report: &TaskReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let task = serde_json::json!({ "id": spec.id().as_str(), "spec": spec });
    write_json(&dir.join("task.json"), &task)?;

    let mut csv = String::from("epoch,train_loss,validation_loss\n");
    for e in &report.metrics.epochs {
        csv.push_str(&format!(
            "{},{},{}\n",
            e.epoch, e.train_loss, e.validation_loss
        ));
    }
    write_atomic(&dir.join("epochs.csv"), csv.as_bytes())?;

    let metadata = HashMap::from([
        ("task_id".to_string(), spec.id().to_string()),
        ("model".to_string(), spec.model.label()),
        ("format".to_string(), "pt".to_string()),
    ]);
    let length = spec.data.length;
    let t = &report.training;
    write_safetensors(
        &dir.join("weights_initial.safetensors"),
        &spec.model,
        length,
        &t.theta_initial,
        metadata.clone(),
    )?;
    write_safetensors(
        &dir.join("weights_final.safetensors"),
        &spec.model,
        length,
        &t.theta_final,
        metadata,
    )?;
    if let Some((hessian, density)) = &report.hessian {
        write_hessian(dir, hessian, density.as_ref())?;
    }
    if let Some(line) = &report.interpolation {
        write_interpolation(dir, line)?;
    }
    if let (Some((plane, grid)), Some(s)) = (&report.surface, &spec.analysis.surface) {
        write_surface(dir, s, plane, grid)?;
    }
    write_json(&dir.join("timings.json"), &report.timings)?;
    write_json(&dir.join(METRICS_FILE), &report.metrics)?;
    Ok(())
}

/// The metrics of a finished task folder, if it holds those of `spec`.
pub fn read_finished(dir: &Path, spec: &TaskSpec) -> Option<TaskMetrics> {
    let text = std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?;
    let metrics: TaskMetrics = serde_json::from_str(&text).ok()?;
    (metrics.task_id == spec.id().as_str()).then_some(metrics)
}
