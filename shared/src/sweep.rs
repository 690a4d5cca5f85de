//! The sweep file: what a user writes, how it is checked, and the tasks it
//! expands into.
//!
//! Parsing happens in two stages. The `*File` structs mirror the YAML and
//! refuse unknown keys; numbers arrive as signed integers or floats so that a
//! negative count can be reported as such. `validate` then turns them into
//! typed [`TaskSpec`]s, naming the field and the value of the first mistake.

use std::collections::HashSet;
use std::path::Path;

use config::{Config, File, FileFormat};
use serde::Deserialize;

use crate::error::SweepError;
use crate::model::{Arch, ModelSpec};
use crate::task::{
    AnalysisSpec, DataSpec, HessianSpec, InterpolationSpec, SurfaceSpec, TaskKind, TaskSpec,
    TrainSpec,
};

/// A validated sweep: its name and every task of its grid, in grid order.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Also the name of the output folder; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Distinct tasks; a point reached by two sub-grids appears once.
    pub tasks: Vec<TaskSpec>,
}

impl Sweep {
    /// Reads, parses and validates a sweep file.
    pub fn load(path: &Path) -> Result<Sweep, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Sweep::from_yaml(&text)
    }

    /// Parses and validates sweep YAML held in memory.
    pub fn from_yaml(text: &str) -> Result<Sweep, SweepError> {
        let file: SweepFile = Config::builder()
            .add_source(File::from_str(text, FileFormat::Yaml))
            .build()
            .and_then(|config| config.try_deserialize())
            .map_err(|e| SweepError::Parse(e.to_string()))?;
        file.validate()
    }
}

/// The sweep file as written. Built by hand, it describes a sweep without a
/// file (a single-task run, a test).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub name: String,
    pub task: String,
    #[serde(default)]
    pub data: DataFile,
    #[serde(default)]
    pub train: TrainFile,
    pub grid: Vec<GridFile>,
    pub seeds: Option<Vec<f64>>,
    pub analysis: Option<AnalysisFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub samples: Option<f64>,
    pub length: Option<f64>,
    pub seed: Option<f64>,
    pub test_fraction: Option<f64>,
    pub validation_fraction: Option<f64>,
    pub range: Option<Vec<f64>>,
    pub threshold: Option<f64>,
    pub step: Option<f64>,
    pub scale: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    pub epochs: Option<f64>,
    pub batch_size: Option<f64>,
    pub learning_rate: Option<f64>,
    pub weight_decay: Option<f64>,
    pub betas: Option<Vec<f64>>,
    pub epsilon: Option<f64>,
    /// A number, or `0` to turn clipping off.
    pub clip_grad_norm: Option<f64>,
    pub dropout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFile {
    pub arch: Vec<String>,
    pub layers: Vec<f64>,
    pub hidden: Vec<f64>,
    /// Transformer only; ignored for recurrent models. Defaults to `[1]`.
    pub heads: Option<Vec<f64>>,
}

/// When the `analysis` key is present, exactly the analyses it lists run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisFile {
    pub hessian: Option<HessianFile>,
    pub interpolation: Option<InterpolationFile>,
    pub surface: Option<SurfaceFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HessianFile {
    pub samples: Option<f64>,
    pub top_eigenvalues: Option<f64>,
    pub tolerance: Option<f64>,
    pub max_iterations: Option<f64>,
    pub trace: Option<bool>,
    pub trace_tolerance: Option<f64>,
    pub trace_samples: Option<f64>,
    pub lanczos_steps: Option<f64>,
    pub density: Option<bool>,
    pub density_runs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpolationFile {
    pub points: Option<f64>,
    pub range: Option<Vec<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceFile {
    pub resolution: Option<f64>,
    pub range: Option<Vec<f64>>,
    pub samples: Option<f64>,
    pub include_vectors: Option<bool>,
}

impl SweepFile {
    /// Checks every value and expands the grid into tasks.
    pub fn validate(self) -> Result<Sweep, SweepError> {
        let name = self.name.trim().to_string();
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.');
        if !name_ok {
            return Err(invalid(
                "name",
                format!("'{name}' must be letters, digits, '.', '_' or '-' (it names a folder)"),
            ));
        }
        let kind = TaskKind::parse(&self.task).ok_or_else(|| {
            invalid(
                "task",
                format!(
                    "unknown task '{}' (expected sequence-classification or sequence-learning)",
                    self.task
                ),
            )
        })?;
        let data = self.data.validate()?;
        let train = self.train.validate(kind)?;
        let seeds = validate_seeds(self.seeds)?;
        let analysis = match self.analysis {
            Some(file) => file.validate(&data)?,
            // The surface costs thousands of loss evaluations: only on request.
            None => AnalysisSpec {
                hessian: Some(HessianSpec::default()).map(|h| cap_hessian(h, &data)),
                interpolation: Some(InterpolationSpec::default()),
                surface: None,
            },
        };
        if self.grid.is_empty() {
            return Err(invalid(
                "grid",
                "must list at least one sub-grid".to_string(),
            ));
        }

        let mut tasks = Vec::new();
        let mut seen = HashSet::new();
        for (index, grid) in self.grid.iter().enumerate() {
            for model in grid.expand(index)? {
                for &seed in &seeds {
                    let task = TaskSpec {
                        task: kind,
                        data: data.clone(),
                        model,
                        train: train.clone(),
                        seed,
                        analysis: analysis.clone(),
                    };
                    if seen.insert(task.id()) {
                        tasks.push(task);
                    }
                }
            }
        }
        Ok(Sweep { name, tasks })
    }
}

/// The default Hessian sample count is the study's 1000, or the whole
/// training set when it is smaller (small sweeps).
fn cap_hessian(mut hessian: HessianSpec, data: &DataSpec) -> HessianSpec {
    hessian.samples = hessian.samples.min(data.split_sizes().0);
    hessian
}

impl DataFile {
    fn validate(self) -> Result<DataSpec, SweepError> {
        let defaults = DataSpec::default();
        let spec = DataSpec {
            samples: count("data.samples", self.samples, defaults.samples, 3)?,
            length: count("data.length", self.length, defaults.length, 1)?,
            seed: non_negative("data.seed", self.seed, defaults.seed)?,
            test_fraction: fraction(
                "data.test_fraction",
                self.test_fraction,
                defaults.test_fraction,
            )?,
            validation_fraction: fraction(
                "data.validation_fraction",
                self.validation_fraction,
                defaults.validation_fraction,
            )?,
            range: interval("data.range", self.range, defaults.range)?,
            threshold: finite("data.threshold", self.threshold, defaults.threshold)?,
            step: finite("data.step", self.step, defaults.step)?,
            scale: positive("data.scale", self.scale, defaults.scale)?,
        };
        let (train, validation, test) = spec.split_sizes();
        if train == 0 || validation == 0 || test == 0 {
            return Err(invalid(
                "data.samples",
                format!(
                    "{} samples split into {train} train / {validation} validation / {test} test; \
                     every split needs at least one sequence",
                    spec.samples
                ),
            ));
        }
        Ok(spec)
    }
}

impl TrainFile {
    fn validate(self, kind: TaskKind) -> Result<TrainSpec, SweepError> {
        let defaults = TrainSpec::for_task(kind);
        let betas = match self.betas {
            None => defaults.betas,
            Some(values) => {
                let [b1, b2] = pair("train.betas", &values)?;
                for beta in [b1, b2] {
                    if !(0.0..1.0).contains(&beta) {
                        return Err(invalid("train.betas", format!("{beta} must be in [0, 1)")));
                    }
                }
                [b1, b2]
            }
        };
        let clip_grad_norm = match self.clip_grad_norm {
            None => defaults.clip_grad_norm,
            Some(0.0) => None,
            Some(value) => Some(positive("train.clip_grad_norm", Some(value), 0.0)?),
        };
        let dropout = self.dropout.unwrap_or(defaults.dropout);
        if !(0.0..1.0).contains(&dropout) {
            return Err(invalid(
                "train.dropout",
                format!("{dropout} must be in [0, 1)"),
            ));
        }
        Ok(TrainSpec {
            epochs: count("train.epochs", self.epochs, defaults.epochs, 1)?,
            batch_size: count("train.batch_size", self.batch_size, defaults.batch_size, 1)?,
            learning_rate: positive(
                "train.learning_rate",
                self.learning_rate,
                defaults.learning_rate,
            )?,
            weight_decay: non_negative_float(
                "train.weight_decay",
                self.weight_decay,
                defaults.weight_decay,
            )?,
            betas,
            epsilon: positive("train.epsilon", self.epsilon, defaults.epsilon)?,
            clip_grad_norm,
            dropout,
        })
    }
}

impl GridFile {
    fn expand(&self, index: usize) -> Result<Vec<ModelSpec>, SweepError> {
        let field = |key: &str| format!("grid[{index}].{key}");
        if self.arch.is_empty() {
            return Err(invalid(
                &field("arch"),
                "must list at least one architecture".into(),
            ));
        }
        let mut archs = Vec::new();
        for name in &self.arch {
            let arch = Arch::parse(name).ok_or_else(|| {
                invalid(
                    &field("arch"),
                    format!("unknown architecture '{name}' (expected lstm, gru or transformer)"),
                )
            })?;
            archs.push(arch);
        }
        let layers = counts(&field("layers"), &self.layers)?;
        let hidden = counts(&field("hidden"), &self.hidden)?;
        let heads = match &self.heads {
            Some(values) => counts(&field("heads"), values)?,
            None => vec![1],
        };

        let mut models = Vec::new();
        for &arch in &archs {
            for &layers in &layers {
                if arch.is_recurrent() {
                    for &hidden in &hidden {
                        models.push(ModelSpec {
                            arch,
                            layers,
                            hidden,
                            heads: None,
                        });
                    }
                    continue;
                }
                for &heads in &heads {
                    for &hidden in &hidden {
                        if hidden % heads != 0 {
                            return Err(invalid(
                                &field("heads"),
                                format!("{heads} heads do not divide hidden size {hidden}"),
                            ));
                        }
                        models.push(ModelSpec {
                            arch,
                            layers,
                            hidden,
                            heads: Some(heads),
                        });
                    }
                }
            }
        }
        Ok(models)
    }
}

impl AnalysisFile {
    fn validate(self, data: &DataSpec) -> Result<AnalysisSpec, SweepError> {
        let hessian = match self.hessian {
            None => None,
            Some(file) => {
                let defaults = cap_hessian(HessianSpec::default(), data);
                let train = data.split_sizes().0;
                let samples = count(
                    "analysis.hessian.samples",
                    file.samples,
                    defaults.samples,
                    1,
                )?;
                if samples > train {
                    return Err(invalid(
                        "analysis.hessian.samples",
                        format!("{samples} exceeds the {train} training sequences"),
                    ));
                }
                Some(HessianSpec {
                    samples,
                    top_eigenvalues: count(
                        "analysis.hessian.top_eigenvalues",
                        file.top_eigenvalues,
                        defaults.top_eigenvalues,
                        1,
                    )?,
                    tolerance: positive(
                        "analysis.hessian.tolerance",
                        file.tolerance,
                        defaults.tolerance,
                    )?,
                    max_iterations: count(
                        "analysis.hessian.max_iterations",
                        file.max_iterations,
                        defaults.max_iterations,
                        1,
                    )?,
                    trace: file.trace.unwrap_or(defaults.trace),
                    trace_tolerance: positive(
                        "analysis.hessian.trace_tolerance",
                        file.trace_tolerance,
                        defaults.trace_tolerance,
                    )?,
                    trace_samples: count(
                        "analysis.hessian.trace_samples",
                        file.trace_samples,
                        defaults.trace_samples,
                        2,
                    )?,
                    lanczos_steps: count(
                        "analysis.hessian.lanczos_steps",
                        file.lanczos_steps,
                        defaults.lanczos_steps,
                        2,
                    )?,
                    density: file.density.unwrap_or(defaults.density),
                    density_runs: count(
                        "analysis.hessian.density_runs",
                        file.density_runs,
                        defaults.density_runs,
                        1,
                    )?,
                })
            }
        };
        let interpolation = match self.interpolation {
            None => None,
            Some(file) => {
                let defaults = InterpolationSpec::default();
                Some(InterpolationSpec {
                    points: count(
                        "analysis.interpolation.points",
                        file.points,
                        defaults.points,
                        2,
                    )?,
                    range: interval("analysis.interpolation.range", file.range, defaults.range)?,
                })
            }
        };
        let surface = match self.surface {
            None => None,
            Some(file) => {
                let defaults = SurfaceSpec::default();
                Some(SurfaceSpec {
                    resolution: count(
                        "analysis.surface.resolution",
                        file.resolution,
                        defaults.resolution,
                        2,
                    )?,
                    range: interval("analysis.surface.range", file.range, defaults.range)?,
                    samples: count(
                        "analysis.surface.samples",
                        file.samples,
                        defaults.samples,
                        1,
                    )?
                    .min(data.split_sizes().0),
                    include_vectors: file.include_vectors.unwrap_or(defaults.include_vectors),
                })
            }
        };
        Ok(AnalysisSpec {
            hessian,
            interpolation,
            surface,
        })
    }
}

fn validate_seeds(seeds: Option<Vec<f64>>) -> Result<Vec<u64>, SweepError> {
    let seeds = seeds.unwrap_or_else(|| vec![0.0]);
    if seeds.is_empty() {
        return Err(invalid("seeds", "must list at least one seed".to_string()));
    }
    seeds
        .into_iter()
        .map(|seed| non_negative("seeds", Some(seed), 0))
        .collect()
}

fn invalid(field: &str, message: String) -> SweepError {
    SweepError::Invalid {
        field: field.to_string(),
        message,
    }
}

/// An integer setting of at least `min`. Integers arrive as floats so that
/// `1.5` is refused instead of silently truncated.
fn count(field: &str, value: Option<f64>, default: usize, min: usize) -> Result<usize, SweepError> {
    match value {
        None => Ok(default),
        Some(v) if v.fract() != 0.0 || !v.is_finite() => {
            Err(invalid(field, format!("{v} must be a whole number")))
        }
        Some(v) if v >= min as f64 => Ok(v as usize),
        Some(v) => Err(invalid(field, format!("{v} must be at least {min}"))),
    }
}

/// A list of integers, each at least 1.
fn counts(field: &str, values: &[f64]) -> Result<Vec<usize>, SweepError> {
    if values.is_empty() {
        return Err(invalid(field, "must list at least one value".to_string()));
    }
    values
        .iter()
        .map(|&v| count(field, Some(v), 0, 1))
        .collect()
}

fn non_negative(field: &str, value: Option<f64>, default: u64) -> Result<u64, SweepError> {
    match value {
        None => Ok(default),
        Some(v) if v.fract() != 0.0 || !v.is_finite() => {
            Err(invalid(field, format!("{v} must be a whole number")))
        }
        Some(v) if v >= 0.0 => Ok(v as u64),
        Some(v) => Err(invalid(field, format!("{v} must not be negative"))),
    }
}

fn finite(field: &str, value: Option<f64>, default: f64) -> Result<f64, SweepError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() => Ok(v),
        Some(v) => Err(invalid(field, format!("{v} must be a finite number"))),
    }
}

fn positive(field: &str, value: Option<f64>, default: f64) -> Result<f64, SweepError> {
    let v = finite(field, value, default)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} must be greater than 0")))
    }
}

fn non_negative_float(field: &str, value: Option<f64>, default: f64) -> Result<f64, SweepError> {
    let v = finite(field, value, default)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} must not be negative")))
    }
}

fn fraction(field: &str, value: Option<f64>, default: f64) -> Result<f64, SweepError> {
    let v = finite(field, value, default)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} must be between 0 and 1")))
    }
}

fn pair(field: &str, values: &[f64]) -> Result<[f64; 2], SweepError> {
    match values {
        &[a, b] if a.is_finite() && b.is_finite() => Ok([a, b]),
        _ => Err(invalid(
            field,
            format!("{values:?} must be two finite numbers"),
        )),
    }
}

/// Two numbers `[low, high]` with `low < high`.
fn interval(
    field: &str,
    value: Option<Vec<f64>>,
    default: [f64; 2],
) -> Result<[f64; 2], SweepError> {
    let Some(values) = value else {
        return Ok(default);
    };
    let [low, high] = pair(field, &values)?;
    if low < high {
        Ok([low, high])
    } else {
        Err(invalid(
            field,
            format!("[{low}, {high}] must have low < high"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE1: &str = "
name: table1
task: sequence-classification
data: {samples: 5000, length: 5, seed: 0}
train: {epochs: 10, batch_size: 10, learning_rate: 0.001, clip_grad_norm: 0.25, dropout: 0.1}
grid:
  - {arch: [gru, lstm], layers: [1, 6, 11], hidden: [8, 16, 32]}
  - {arch: [transformer], layers: [1, 6, 11], heads: [1, 2, 4], hidden: [8, 16, 32]}
seeds: [0]
";

    fn error_of(yaml: &str) -> String {
        Sweep::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn table1_expands_to_45_distinct_tasks() {
        let sweep = Sweep::from_yaml(TABLE1).unwrap();
        assert_eq!(sweep.name, "table1");
        assert_eq!(sweep.tasks.len(), 45);
        let ids: HashSet<_> = sweep.tasks.iter().map(|t| t.id()).collect();
        assert_eq!(ids.len(), 45);
        let transformers = sweep
            .tasks
            .iter()
            .filter(|t| t.model.arch == Arch::Transformer)
            .count();
        assert_eq!(transformers, 27);
        assert!(sweep.tasks.iter().all(|t| t.train.epochs == 10));
    }

    #[test]
    fn ids_do_not_depend_on_key_order() {
        let reordered = "
seeds: [0]
grid:
  - {hidden: [8, 16, 32], layers: [1, 6, 11], arch: [gru, lstm]}
  - {heads: [1, 2, 4], hidden: [8, 16, 32], arch: [transformer], layers: [1, 6, 11]}
train: {dropout: 0.1, clip_grad_norm: 0.25, learning_rate: 0.001, batch_size: 10, epochs: 10}
data: {seed: 0, length: 5, samples: 5000}
task: sequence-classification
name: table1
";
        let a: HashSet<_> = Sweep::from_yaml(TABLE1)
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.id())
            .collect();
        let b: HashSet<_> = Sweep::from_yaml(reordered)
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.id())
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn seeds_multiply_and_duplicates_collapse() {
        let yaml = "
name: s
task: sequence-learning
grid:
  - {arch: [lstm], layers: [2], hidden: [14]}
  - {arch: [lstm], layers: [2], hidden: [14]}
seeds: [0, 1, 2]
";
        let sweep = Sweep::from_yaml(yaml).unwrap();
        assert_eq!(sweep.tasks.len(), 3);
        assert!(sweep.tasks.iter().all(|t| t.train.epochs == 50));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                "{arch: [transformer], layers: [1], heads: [3], hidden: [8]}",
                "grid[0].heads",
                "3 heads do not divide hidden size 8",
            ),
            (
                "{arch: [lstm], layers: [0], hidden: [8]}",
                "grid[0].layers",
                "0 must be at least 1",
            ),
            (
                "{arch: [rnn], layers: [1], hidden: [8]}",
                "grid[0].arch",
                "unknown architecture 'rnn'",
            ),
            (
                "{arch: [gru], layers: [1], hidden: [-8]}",
                "grid[0].hidden",
                "-8 must be at least 1",
            ),
        ];
        for (entry, field, message) in cases {
            let yaml = format!("name: s\ntask: sequence-classification\ngrid:\n  - {entry}\n");
            let error = error_of(&yaml);
            assert!(error.contains(field), "{error} should name {field}");
            assert!(error.contains(message), "{error} should say {message}");
        }
    }

    #[test]
    fn bad_epochs_task_and_unknown_keys_are_refused() {
        let grid = "grid:\n  - {arch: [lstm], layers: [1], hidden: [8]}\n";
        let error = error_of(&format!(
            "name: s\ntask: sequence-classification\ntrain: {{epochs: 0}}\n{grid}"
        ));
        assert!(
            error.contains("train.epochs") && error.contains("0 must be at least 1"),
            "{error}"
        );
        let error = error_of(&format!(
            "name: s\ntask: sequence-classification\ntrain: {{epochs: -3}}\n{grid}"
        ));
        assert!(
            error.contains("train.epochs") && error.contains("-3"),
            "{error}"
        );
        let error = error_of(&format!(
            "name: s\ntask: sequence-classification\ntrain: {{epochs: 1.5}}\n{grid}"
        ));
        assert!(
            error.contains("train.epochs: 1.5 must be a whole number"),
            "{error}"
        );
        let error = error_of(&format!("name: s\ntask: regression\n{grid}"));
        assert!(
            error.contains("task") && error.contains("regression"),
            "{error}"
        );
        let error = error_of(&format!(
            "name: s\ntask: sequence-classification\nepochz: 3\n{grid}"
        ));
        assert!(error.contains("epochz"), "{error}");
        let error = error_of(&format!(
            "name: s\ntask: sequence-classification\ntrain: {{epoch: 3}}\n{grid}"
        ));
        assert!(error.contains("epoch"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}
