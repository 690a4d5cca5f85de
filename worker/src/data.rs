//! The study's two toy data sets, generated from a seed.
//!
//! All sequences are drawn in one pass from the `"data"` stream of the data
//! seed and split in order: the first test-fraction of sequences is the test
//! set, the next validation-fraction of the rest the validation set, the
//! remainder the training set. The draws are iid, so a split in order is as
//! random as any other, and it keeps every split stable when a user only
//! changes the fractions.

use std::io::{self, Write};
use std::path::Path;

use minima_shared::task::{DataSpec, TaskKind};

use crate::rng::Rng;

/// Sequences and targets of one split, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `len * length` values, sequence after sequence.
    pub inputs: Vec<f32>,
    /// One target per sequence: the 0/1 label, or the next element.
    pub targets: Vec<f32>,
    /// Elements per sequence.
    pub length: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The first `n` sequences (all of them if `n` is larger).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            inputs: self.inputs[..n * self.length].to_vec(),
            targets: self.targets[..n].to_vec(),
            length: self.length,
        }
    }

    /// Inputs and targets of the sequences at `indices`, in that order.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let mut inputs = Vec::with_capacity(indices.len() * self.length);
        let mut targets = Vec::with_capacity(indices.len());
        for &i in indices {
            inputs.extend_from_slice(&self.inputs[i * self.length..(i + 1) * self.length]);
            targets.push(self.targets[i]);
        }
        (inputs, targets)
    }
}

/// The three splits of a task's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub train: Split,
    pub validation: Split,
    pub test: Split,
}

impl Dataset {
    /// Generates the data of `kind` as `spec` describes.
    pub fn generate(kind: TaskKind, spec: &DataSpec) -> Dataset {
        let mut rng = Rng::stream(spec.seed, "data");
        let [low, high] = spec.range;
        let mut inputs = Vec::with_capacity(spec.samples * spec.length);
        let mut targets = Vec::with_capacity(spec.samples);
        for _ in 0..spec.samples {
            // Targets are computed from the values as stored (f32), so labels
            // agree with what the model is fed.
            match kind {
                TaskKind::SequenceClassification => {
                    let mut sum = 0.0f64;
                    for _ in 0..spec.length {
                        let x = rng.uniform(low, high) as f32;
                        sum += f64::from(x);
                        inputs.push(x * spec.scale as f32);
                    }
                    targets.push(if sum >= spec.threshold { 1.0 } else { 0.0 });
                }
                TaskKind::SequenceLearning => {
                    let first = rng.uniform(low, high);
                    for j in 0..spec.length {
                        inputs.push(((first + j as f64 * spec.step) * spec.scale) as f32);
                    }
                    let next = first + spec.length as f64 * spec.step;
                    targets.push((next * spec.scale) as f32);
                }
            }
        }

        let all = Split {
            inputs,
            targets,
            length: spec.length,
        };
        let (train, validation, test) = spec.split_sizes();
        let range = |start: usize, n: usize| {
            let idx: Vec<usize> = (start..start + n).collect();
            let (inputs, targets) = all.gather(&idx);
            Split {
                inputs,
                targets,
                length: spec.length,
            }
        };
        Dataset {
            test: range(0, test),
            validation: range(test, validation),
            train: range(test + validation, train),
        }
    }

    /// Writes `{x,y}_{train,validation,test}.npy` into `dir`: inputs as
    /// float32 `[n, length, 1]`, targets as float32 `[n, 1]`, the shapes the
    /// models take and return.
    pub fn write_npy(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, split) in [
            ("train", &self.train),
            ("validation", &self.validation),
            ("test", &self.test),
        ] {
            let n = split.len();
            write_npy_f32(
                &dir.join(format!("x_{name}.npy")),
                &[n, split.length, 1],
                &split.inputs,
            )?;
            write_npy_f32(&dir.join(format!("y_{name}.npy")), &[n, 1], &split.targets)?;
        }
        Ok(())
    }
}

/// Writes a little-endian float32 array in NumPy's `.npy` format (version 1.0).
pub fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) -> io::Result<()> {
    let mut bytes = npy_header("<f4", shape);
    bytes.reserve(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::output::write_atomic(path, &bytes)
}

/// Writes a little-endian float64 array in NumPy's `.npy` format (version 1.0).
pub fn write_npy_f64(path: &Path, shape: &[usize], values: &[f64]) -> io::Result<()> {
    let mut bytes = npy_header("<f8", shape);
    bytes.reserve(values.len() * 8);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::output::write_atomic(path, &bytes)
}

/// Magic, version, header length and a header dict padded with spaces so
/// that the data starts on a 64-byte boundary, as NumPy writes it.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut bytes = Vec::with_capacity(10 + dict.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes
        .write_all(&(dict.len() as u16).to_le_bytes())
        .expect("writing to a Vec");
    bytes.extend_from_slice(dict.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_sizes_and_split() {
        let data = Dataset::generate(TaskKind::SequenceClassification, &DataSpec::default());
        assert_eq!(data.train.len(), 4050);
        assert_eq!(data.validation.len(), 450);
        assert_eq!(data.test.len(), 500);
        assert_eq!(data.train.inputs.len(), 4050 * 5);
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let spec = DataSpec::default();
        let a = Dataset::generate(TaskKind::SequenceClassification, &spec);
        let b = Dataset::generate(TaskKind::SequenceClassification, &spec);
        assert_eq!(a, b);
        let other = DataSpec { seed: 1, ..spec };
        let c = Dataset::generate(TaskKind::SequenceClassification, &other);
        assert_ne!(a.train.inputs, c.train.inputs);
    }

    #[test]
    fn classification_labels_are_sum_at_least_threshold() {
        let data = Dataset::generate(TaskKind::SequenceClassification, &DataSpec::default());
        let mut positives = 0;
        for split in [&data.train, &data.validation, &data.test] {
            for (seq, &label) in split.inputs.chunks(5).zip(&split.targets) {
                assert!(seq.iter().all(|x| (-1000.0..1000.0).contains(x)));
                let sum: f64 = seq.iter().map(|&x| f64::from(x)).sum();
                assert_eq!(label, if sum >= 0.0 { 1.0 } else { 0.0 });
                positives += label as usize;
            }
        }
        // The sum is symmetric around 0: about half the labels are 1.
        assert!(
            (2300..2700).contains(&positives),
            "{positives} positives of 5000"
        );
    }

    #[test]
    fn learning_targets_continue_the_progression() {
        let data = Dataset::generate(TaskKind::SequenceLearning, &DataSpec::default());
        for (seq, &target) in data.train.inputs.chunks(5).zip(&data.train.targets) {
            assert!((-1000.0..1000.0).contains(&seq[0]));
            for pair in seq.windows(2) {
                assert!((pair[1] - pair[0] - 1000.0).abs() < 1e-3);
            }
            assert!((target - (seq[4] + 1000.0)).abs() < 1e-3);
        }
    }

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let header = npy_header("<f4", &[4050, 5, 1]);
        assert_eq!(header.len() % 64, 0);
        assert_eq!(&header[..8], b"\x93NUMPY\x01\x00");
        let text = String::from_utf8(header[10..].to_vec()).unwrap();
        assert!(
            text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (4050, 5, 1), }")
        );
        assert!(text.ends_with('\n'));
        assert_eq!(npy_header("<f8", &[7]).len() % 64, 0);
        let one_d = String::from_utf8(npy_header("<f8", &[7])[10..].to_vec()).unwrap();
        assert!(one_d.contains("'shape': (7,)"));
    }
}
