//! The study's losses and the evaluation of a network over a whole split.

use burn::tensor::{Tensor, activation};
use minima_shared::TaskKind;

use crate::data::Split;
use crate::model::{Ctx, Network};

/// Sequences per forward pass when evaluating; bounds memory, not results.
pub const EVAL_CHUNK: usize = 1000;

/// Mean loss of a batch: binary cross-entropy on the logits (the numerically
/// stable form of BCE after a sigmoid) or mean squared error.
///
/// # Shapes
/// - outputs, targets: `[batch, 1]`
/// - result: `[1]`
pub fn batch_loss(kind: TaskKind, outputs: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    match kind {
        // max(z, 0) - z y + log(1 + exp(-|z|))
        TaskKind::SequenceClassification => {
            let softplus = outputs.clone().abs().neg().exp().log1p();
            (activation::relu(outputs.clone()) - outputs * targets + softplus).mean()
        }
        TaskKind::SequenceLearning => (outputs - targets).square().mean(),
    }
}

/// Loss (and, for classification, accuracy) of a network over a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: Option<f64>,
}

/// Evaluates `net` on every sequence of `split` in evaluation mode (no
/// dropout), averaging chunk losses weighted by chunk size.
pub fn evaluate(net: &Network, kind: TaskKind, split: &Split) -> Evaluation {
    let ctx = &net.ctx;
    let n = split.len();
    let mut total = 0.0;
    let mut correct = 0usize;
    for start in (0..n).step_by(EVAL_CHUNK) {
        let count = EVAL_CHUNK.min(n - start);
        let (x, y) = chunk(ctx, split, start, count);
        let outputs = net.forward(x, None);
        if kind == TaskKind::SequenceClassification {
            let logits = outputs.clone().into_data();
            correct += logits
                .iter::<f64>()
                .zip(&split.targets[start..start + count])
                .filter(|&(z, &t)| (z >= 0.0) == (t >= 0.5))
                .count();
        }
        total += batch_loss(kind, outputs, y).into_scalar::<f64>() * count as f64;
    }
    Evaluation {
        loss: total / n as f64,
        accuracy: (kind == TaskKind::SequenceClassification).then(|| correct as f64 / n as f64),
    }
}

/// Tensors of `count` sequences of `split` from `start`.
///
/// # Shapes
/// - x: `[count, length, 1]`
/// - y: `[count, 1]`
pub fn chunk(ctx: &Ctx, split: &Split, start: usize, count: usize) -> (Tensor<3>, Tensor<2>) {
    let len = split.length;
    let x = ctx.tensor(
        split.inputs[start * len..(start + count) * len].to_vec(),
        [count, len, 1],
    );
    let y = ctx.tensor(split.targets[start..start + count].to_vec(), [count, 1]);
    (x, y)
}
