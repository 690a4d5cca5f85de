//! What a finished task reports: losses and the measurements of its minimum.
//!
//! Everything here is a function of the task's configuration and seed, so two
//! runs of the same task produce equal values; wall-clock times live apart in
//! [`TaskTimings`] for that reason.

use serde::{Deserialize, Serialize};

/// Mean losses after one epoch of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLosses {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean of the mini-batch losses seen while training (dropout on), as
    /// PyTorch scripts usually print it.
    pub train_loss: f64,
    /// Loss on the validation split in evaluation mode (dropout off).
    pub validation_loss: f64,
}

/// The results of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Hex id of the task these metrics belong to.
    pub task_id: String,
    pub params: usize,
    pub epochs: Vec<EpochLosses>,
    /// Losses of the initial weights in evaluation mode.
    pub initial_train_loss: f64,
    pub initial_test_loss: f64,
    /// Losses of the final weights in evaluation mode, over whole splits.
    pub train_loss: f64,
    pub validation_loss: f64,
    pub test_loss: f64,
    /// Share of correctly classified test sequences (classification only).
    pub test_accuracy: Option<f64>,
    /// Hessian eigenvalue of largest magnitude, when the analysis ran.
    pub top_eigenvalue: Option<f64>,
    /// Hessian trace (Hutchinson), when the analysis ran.
    pub trace: Option<f64>,
    pub trace_standard_error: Option<f64>,
    /// Top eigenvalue and trace of the Hessian scaled by the parameters'
    /// magnitudes, which equivalent reparametrisations leave unchanged.
    pub adaptive_top_eigenvalue: Option<f64>,
    pub adaptive_trace: Option<f64>,
}

/// Wall-clock seconds spent on a task's stages; differs from run to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTimings {
    pub train_seconds: f64,
    pub hessian_seconds: f64,
    pub surface_seconds: f64,
    pub total_seconds: f64,
}
