//! What the tests that compare with PyTorch share: the cases of
//! `fixtures/torch_reference.json` (made by `python/make_fixtures.py`) and
//! the relative error they are judged by.

use minima_shared::{Arch, ModelSpec, TaskKind};
use serde::Deserialize;

/// One small model with its parameters, inputs and targets, and what
/// PyTorch computed for them in float64.
#[derive(Deserialize)]
pub struct Reference {
    pub arch: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: Option<usize>,
    pub task: String,
    pub theta: Vec<f64>,
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
    pub outputs: Vec<f64>,
    pub loss: f64,
    pub grad: Vec<f64>,
}

impl Reference {
    /// The model of this case.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            arch: Arch::parse(&self.arch).expect("a known architecture"),
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
        }
    }

    /// The task, which sets the loss.
    pub fn kind(&self) -> TaskKind {
        TaskKind::parse(&self.task).expect("a known task")
    }
}

/// Every PyTorch reference case.
pub fn torch_references() -> Vec<Reference> {
    serde_json::from_str(include_str!("../fixtures/torch_reference.json"))
        .expect("the fixture parses")
}

/// `|ours - theirs| / |theirs|` in the Euclidean norm.
pub fn relative_error(ours: &[f64], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let diff: f64 = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = theirs.iter().map(|b| b * b).sum::<f64>().sqrt();
    diff / norm.max(1e-300)
}
