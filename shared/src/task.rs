//! One task: the full configuration of a single training run and its analyses.
//!
//! A task's identity is a hash of this configuration, so the same settings
//! always name the same task, whatever order the sweep file wrote its keys in.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::ModelSpec;

/// Sequences per data set in the study.
pub const DEFAULT_SAMPLES: usize = 5000;
/// Elements per sequence in the study.
pub const DEFAULT_LENGTH: usize = 5;
/// Share of all sequences held out for testing.
pub const DEFAULT_TEST_FRACTION: f64 = 0.1;
/// Share of the remaining sequences used for validation.
pub const DEFAULT_VALIDATION_FRACTION: f64 = 0.1;
/// Inputs (and first elements of progressions) are drawn uniformly from here.
pub const DEFAULT_RANGE: [f64; 2] = [-1000.0, 1000.0];
/// Classification label: 1 when the sum of a sequence is at least this.
pub const DEFAULT_THRESHOLD: f64 = 0.0;
/// Step of the arithmetic progressions of sequence learning.
pub const DEFAULT_STEP: f64 = 1000.0;

pub const DEFAULT_CLASSIFICATION_EPOCHS: usize = 10;
pub const DEFAULT_LEARNING_EPOCHS: usize = 50;
pub const DEFAULT_BATCH_SIZE: usize = 10;
pub const DEFAULT_LEARNING_RATE: f64 = 1e-3;
/// PyTorch's AdamW defaults, which the study used.
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;
pub const DEFAULT_BETAS: [f64; 2] = [0.9, 0.999];
pub const DEFAULT_EPSILON: f64 = 1e-8;
pub const DEFAULT_CLIP_GRAD_NORM: f64 = 0.25;
pub const DEFAULT_DROPOUT: f64 = 0.1;

pub const DEFAULT_HESSIAN_SAMPLES: usize = 1000;
pub const DEFAULT_TOP_EIGENVALUES: usize = 1;
/// PyHessian's tolerance and iteration cap for power iteration and traces.
pub const DEFAULT_HESSIAN_TOLERANCE: f64 = 1e-3;
pub const DEFAULT_HESSIAN_ITERATIONS: usize = 100;
pub const DEFAULT_LANCZOS_STEPS: usize = 100;
pub const DEFAULT_DENSITY_RUNS: usize = 4;
pub const DEFAULT_INTERPOLATION_POINTS: usize = 41;
pub const DEFAULT_INTERPOLATION_RANGE: [f64; 2] = [-0.5, 1.5];
pub const DEFAULT_SURFACE_RESOLUTION: usize = 51;
pub const DEFAULT_SURFACE_RANGE: [f64; 2] = [-1.0, 1.0];
pub const DEFAULT_SURFACE_SAMPLES: usize = 1000;

/// The two toy problems of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Is the sum of the sequence at least the threshold? Binary cross-entropy.
    SequenceClassification,
    /// Predict the next element of an arithmetic progression. Mean squared error.
    SequenceLearning,
}

impl TaskKind {
    pub const ALL: [TaskKind; 2] = [TaskKind::SequenceClassification, TaskKind::SequenceLearning];

    pub fn key(self) -> &'static str {
        match self {
            TaskKind::SequenceClassification => "sequence-classification",
            TaskKind::SequenceLearning => "sequence-learning",
        }
    }

    pub fn parse(text: &str) -> Option<TaskKind> {
        TaskKind::ALL
            .into_iter()
            .find(|kind| kind.key() == text.trim())
    }

    pub fn default_epochs(self) -> usize {
        match self {
            TaskKind::SequenceClassification => DEFAULT_CLASSIFICATION_EPOCHS,
            TaskKind::SequenceLearning => DEFAULT_LEARNING_EPOCHS,
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// How a task's data set is generated and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub samples: usize,
    pub length: usize,
    /// Seeds the generator: the same seed gives the same data on every machine.
    pub seed: u64,
    pub test_fraction: f64,
    pub validation_fraction: f64,
    /// Lower and upper bound of the uniform draws.
    pub range: [f64; 2],
    pub threshold: f64,
    pub step: f64,
    /// Factor applied to inputs (and to sequence-learning targets); 1 is the
    /// study's raw values.
    pub scale: f64,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            samples: DEFAULT_SAMPLES,
            length: DEFAULT_LENGTH,
            seed: 0,
            test_fraction: DEFAULT_TEST_FRACTION,
            validation_fraction: DEFAULT_VALIDATION_FRACTION,
            range: DEFAULT_RANGE,
            threshold: DEFAULT_THRESHOLD,
            step: DEFAULT_STEP,
            scale: 1.0,
        }
    }
}

impl DataSpec {
    /// Sizes of the (train, validation, test) splits: the test set is the
    /// rounded test fraction of all samples, validation the rounded fraction
    /// of the rest (4050 / 450 / 500 for the study's 5000).
    pub fn split_sizes(&self) -> (usize, usize, usize) {
        let test = (self.samples as f64 * self.test_fraction).round() as usize;
        let rest = self.samples - test;
        let validation = (rest as f64 * self.validation_fraction).round() as usize;
        (rest - validation, validation, test)
    }
}

/// The training protocol: AdamW with global gradient-norm clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub epsilon: f64,
    /// Maximum global L2 norm of the gradient; `None` turns clipping off.
    pub clip_grad_norm: Option<f64>,
    pub dropout: f64,
}

impl TrainSpec {
    pub fn for_task(kind: TaskKind) -> Self {
        TrainSpec {
            epochs: kind.default_epochs(),
            batch_size: DEFAULT_BATCH_SIZE,
            learning_rate: DEFAULT_LEARNING_RATE,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            betas: DEFAULT_BETAS,
            epsilon: DEFAULT_EPSILON,
            clip_grad_norm: Some(DEFAULT_CLIP_GRAD_NORM),
            dropout: DEFAULT_DROPOUT,
        }
    }
}

/// Hessian analyses of the training loss at the reached minimum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HessianSpec {
    /// Training sequences the Hessian is averaged over (the first ones).
    pub samples: usize,
    /// Eigenvalues of largest magnitude, by power iteration and deflation.
    pub top_eigenvalues: usize,
    /// Relative change of the Rayleigh quotient that stops power iteration.
    pub tolerance: f64,
    pub max_iterations: usize,
    /// Hutchinson's trace estimate (and the adaptive trace).
    pub trace: bool,
    /// Relative change of the running mean that stops Hutchinson's estimator.
    pub trace_tolerance: f64,
    pub trace_samples: usize,
    /// Steps of each Lanczos run (both ends of the spectrum, the density).
    pub lanczos_steps: usize,
    /// The spectral density by stochastic Lanczos quadrature.
    pub density: bool,
    /// Random starts of the density estimate.
    pub density_runs: usize,
}

impl Default for HessianSpec {
    fn default() -> Self {
        HessianSpec {
            samples: DEFAULT_HESSIAN_SAMPLES,
            top_eigenvalues: DEFAULT_TOP_EIGENVALUES,
            tolerance: DEFAULT_HESSIAN_TOLERANCE,
            max_iterations: DEFAULT_HESSIAN_ITERATIONS,
            trace: true,
            trace_tolerance: DEFAULT_HESSIAN_TOLERANCE,
            trace_samples: DEFAULT_HESSIAN_ITERATIONS,
            lanczos_steps: DEFAULT_LANCZOS_STEPS,
            density: false,
            density_runs: DEFAULT_DENSITY_RUNS,
        }
    }
}

/// Loss along the line from the initial to the final weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterpolationSpec {
    pub points: usize,
    pub range: [f64; 2],
}

impl Default for InterpolationSpec {
    fn default() -> Self {
        InterpolationSpec {
            points: DEFAULT_INTERPOLATION_POINTS,
            range: DEFAULT_INTERPOLATION_RANGE,
        }
    }
}

/// Loss on a square grid around the final weights along two
/// filter-normalised random directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurfaceSpec {
    /// Points per axis; the grid is `resolution x resolution`.
    pub resolution: usize,
    /// Range of both coefficients.
    pub range: [f64; 2],
    /// Training sequences (the first ones) of the training-loss surface; the
    /// test surface uses the whole test set.
    pub samples: usize,
    /// Whether biases and LayerNorm parameters move too (along themselves,
    /// as Li et al. do); by default only weight matrices move.
    pub include_vectors: bool,
}

impl Default for SurfaceSpec {
    fn default() -> Self {
        SurfaceSpec {
            resolution: DEFAULT_SURFACE_RESOLUTION,
            range: DEFAULT_SURFACE_RANGE,
            samples: DEFAULT_SURFACE_SAMPLES,
            include_vectors: false,
        }
    }
}

/// Which analyses run after training; `None` leaves one out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnalysisSpec {
    pub hessian: Option<HessianSpec>,
    pub interpolation: Option<InterpolationSpec>,
    pub surface: Option<SurfaceSpec>,
}

/// Everything that determines a task's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task: TaskKind,
    pub data: DataSpec,
    pub model: ModelSpec,
    pub train: TrainSpec,
    /// Seeds initialisation, dropout masks and the shuffling of batches.
    pub seed: u64,
    pub analysis: AnalysisSpec,
}

/// Bumped whenever the meaning of a field changes, so old ids never alias
/// new computations.
const ID_VERSION: &str = "minima-task-v1";

impl TaskSpec {
    /// The canonical identity: SHA-256 of a version tag and the JSON of the
    /// typed configuration. Field order is fixed by the struct, not by the
    /// sweep file, so reordering keys in YAML leaves the id unchanged.
    pub fn id(&self) -> TaskId {
        let json = serde_json::to_string(self).expect("task spec serialises to JSON");
        let mut hasher = Sha256::new();
        hasher.update(ID_VERSION.as_bytes());
        hasher.update([0]);
        hasher.update(json.as_bytes());
        let digest = hasher.finalize();
        TaskId(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Folder name of the task's outputs: readable label, seed and short id.
    pub fn folder_name(&self) -> String {
        format!(
            "{}-s{}-{}",
            self.model.label(),
            self.seed,
            self.id().short()
        )
    }
}

/// Hex SHA-256 of a task's configuration; see [`TaskSpec::id`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(String);

impl TaskId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits: enough to tell tasks of one sweep apart.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    fn spec() -> TaskSpec {
        let kind = TaskKind::SequenceClassification;
        TaskSpec {
            task: kind,
            data: DataSpec::default(),
            model: ModelSpec {
                arch: Arch::Lstm,
                layers: 1,
                hidden: 8,
                heads: None,
            },
            train: TrainSpec::for_task(kind),
            seed: 0,
            analysis: AnalysisSpec::default(),
        }
    }

    #[test]
    fn study_split_is_4050_450_500() {
        assert_eq!(DataSpec::default().split_sizes(), (4050, 450, 500));
    }

    #[test]
    fn id_changes_with_any_setting() {
        let base = spec();
        let mut other = base.clone();
        other.seed = 1;
        assert_ne!(base.id(), other.id());
        let mut other = base.clone();
        other.train.learning_rate = 2e-3;
        assert_ne!(base.id(), other.id());
        let mut other = base.clone();
        other.data.seed = 7;
        assert_ne!(base.id(), other.id());
        assert_eq!(base.id(), spec().id());
        assert_eq!(base.id().as_str().len(), 64);
    }
}
