//! The study's models evaluated by hand-written CPU code: outputs, losses and
//! exact gradients over many sequences at once, in f32 or f64.
//!
//! The analyses evaluate one small network on thousands of sequences again
//! and again: a Hessian needs hundreds of f64 gradients, a surface thousands
//! of loss evaluations. On burn's `flex` backend those spend their time in
//! transcendental functions evaluated one libm call at a time and in
//! per-operation overhead. This module computes the same functions as
//! [`crate::model`] (the same flat parameter vector, PyTorch's equations),
//! with matrix products from the `gemm` crate, fused element-wise loops that
//! vectorise (see [`kernels`]), buffers reused from call to call and
//! backward passes written out by hand. Tests hold it to burn's autodiff and
//! to PyTorch's outputs.
//!
//! Two kinds of pass: the taped ones keep every activation a backward pass
//! needs (gradients, Hessian products, and any output in f64); the fused
//! ones compute f32 outputs alone, which is all a loss surface or an
//! interpolation asks for, and are what [`Evaluator::evaluate`] runs on
//! CPUs with AVX-512.
//!
//! Dropout is not implemented: these are evaluation-mode passes, which is
//! what every analysis uses; training keeps the burn model.
//!
//! - [`kernels`]: the float type, vectorisable `exp`, matrix products and the
//!   fused loops of the layers.
//! - `recurrent`, `transformer`: the taped forward and backward passes.
//! - `fused`: forward passes only, for loss evaluations in f32.

mod fused;
pub mod kernels;
mod recurrent;
mod transformer;

use minima_shared::{Arch, ModelSpec, TaskKind};

use crate::data::Split;
use crate::loss::Evaluation;
use crate::model::Layout;
pub use kernels::Real;

/// Sequences per forward pass. Small enough that a chunk's activations stay
/// in cache between the forward and the backward pass, large enough that
/// the matrix products run near full speed, and a multiple of the widest
/// vector loop (AVX-512, unrolled) so that the element-wise loops across a
/// chunk have no scalar remainder. Results do not depend on it beyond the
/// order of the final sums.
pub const CHUNK: usize = 256;

/// Sequences per pass when only outputs are wanted: nothing is kept for a
/// backward pass, so a smaller chunk keeps one layer's activations in the
/// core's own cache.
const OUTPUT_CHUNK: usize = 64;

/// The sizes of one pass: the model's and the chunk's.
pub(crate) struct Shape {
    layers: usize,
    d: usize,
    heads: usize,
    batch: usize,
    length: usize,
    /// Index of the output layer's weight among the layout's entries.
    out_weight: usize,
}

impl Shape {
    fn out_weight(&self) -> usize {
        self.out_weight
    }
}

/// The parameter tensors of a flat vector, by layout entry.
pub(crate) struct Params<'a, T> {
    theta: &'a [T],
    layout: &'a Layout,
}

impl<'a, T> Params<'a, T> {
    fn range(&self, entry: usize) -> std::ops::Range<usize> {
        self.layout.entries[entry].range()
    }

    fn get(&self, entry: usize) -> &'a [T] {
        &self.theta[self.range(entry)]
    }

    fn four(&self, entry: usize) -> [&'a [T]; 4] {
        [0, 1, 2, 3].map(|k| self.get(entry + k))
    }
}

enum Buffers<T> {
    Recurrent(recurrent::Recurrent<T>),
    Transformer(transformer::Transformer<T>),
}

impl<T> Buffers<T> {
    /// Whether every ReLU follows its sign (no patterns recorded or
    /// replayed), as in the fused passes.
    fn relu_is_free(&self) -> bool {
        match self {
            Buffers::Recurrent(_) => true,
            Buffers::Transformer(b) => b.patterns.is_free(),
        }
    }
}

/// One model of one task, evaluated natively; holds the buffers of its
/// passes, so one evaluator serves many calls without allocating.
pub struct Evaluator<T: Real> {
    spec: ModelSpec,
    kind: TaskKind,
    layout: Layout,
    buffers: Buffers<T>,
    /// Inputs, outputs and output gradients of the current chunk.
    x: Vec<T>,
    out: Vec<T>,
    dout: Vec<T>,
    /// The fused f32 passes, where this model, precision and CPU have them
    /// (see [`Self::taped_only`]); with their inputs and outputs.
    fused: Option<fused::Fused>,
    x32: Vec<f32>,
    out32: Vec<f32>,
}

impl<T: Real> Evaluator<T> {
    pub fn new(spec: &ModelSpec, kind: TaskKind) -> Evaluator<T> {
        let buffers = match spec.arch {
            Arch::Lstm | Arch::Gru => Buffers::Recurrent(Default::default()),
            Arch::Transformer => Buffers::Transformer(Default::default()),
        };
        Evaluator {
            spec: *spec,
            kind,
            layout: Layout::for_model(spec),
            buffers,
            x: Vec::new(),
            out: Vec::new(),
            dout: Vec::new(),
            // Fused passes exist in f32 only.
            fused: (T::as_f32(&[]).is_some() && fused::Fused::available())
                .then(fused::Fused::default),
            x32: Vec::new(),
            out32: Vec::new(),
        }
    }

    /// The same evaluator with the fused passes turned off: every output
    /// then comes from the taped passes (for comparisons).
    pub fn taped_only(mut self) -> Self {
        self.fused = None;
        self
    }

    /// Whether this evaluator has the fused passes (in f32 on a CPU with
    /// AVX-512, unless [`Self::taped_only`]): outputs then come from them,
    /// except a Transformer's over sequences of more than 8 steps or with
    /// its activation patterns frozen.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Parameters of the model.
    pub fn dim(&self) -> usize {
        self.layout.len
    }

    /// The outputs (a logit or a prediction per sequence) of the sequences
    /// `inputs` (row-major `[count, length]`); the chunk's activations stay
    /// for [`Self::backward`].
    fn forward<I: Real>(&mut self, theta: &[T], inputs: &[I], length: usize) {
        self.x.clear();
        self.x
            .extend(inputs.iter().map(|&v| T::from_f64(v.to_f64())));
        let count = inputs.len() / length;
        self.out.resize(count, T::ZERO);
        let shape = self.shape(count, length);
        let params = Params {
            theta,
            layout: &self.layout,
        };
        match (&mut self.buffers, self.spec.arch) {
            (Buffers::Recurrent(b), Arch::Lstm) => {
                b.lstm_forward(&shape, &params, &self.x, &mut self.out)
            }
            (Buffers::Recurrent(b), _) => b.gru_forward(&shape, &params, &self.x, &mut self.out),
            (Buffers::Transformer(b), _) => b.forward(&shape, &params, &self.x, &mut self.out),
        }
    }

    /// Adds to `grad` the gradient of `sum_b dout[b] z[b]` over the chunk of
    /// the last forward pass.
    fn backward(&mut self, theta: &[T], length: usize, grad: &mut [T]) {
        let shape = self.shape(self.out.len(), length);
        let params = Params {
            theta,
            layout: &self.layout,
        };
        let dout = &self.dout;
        match (&mut self.buffers, self.spec.arch) {
            (Buffers::Recurrent(b), Arch::Lstm) => b.lstm_backward(&shape, &params, dout, grad),
            (Buffers::Recurrent(b), _) => b.gru_backward(&shape, &params, dout, grad),
            (Buffers::Transformer(b), _) => b.backward(&shape, &params, dout, grad),
        }
    }

    fn shape(&self, batch: usize, length: usize) -> Shape {
        Shape {
            layers: self.spec.layers,
            d: self.spec.hidden,
            heads: self.spec.heads.unwrap_or(1),
            batch,
            length,
            out_weight: self.layout.entries.len() - 2,
        }
    }

    /// The model's outputs for the sequences `inputs` (row-major
    /// `[count, length]`, f32 or f64).
    pub fn outputs<I: Real>(&mut self, theta: &[T], inputs: &[I], length: usize) -> Vec<f64> {
        assert_eq!(
            theta.len(),
            self.layout.len,
            "flat vector does not fit the model"
        );
        let count = inputs.len() / length;
        let shape = self.shape(count, length);
        if self.buffers.relu_is_free()
            && fused::Fused::takes(self.spec.arch, length)
            && let (Some(fused), Some(theta32)) = (&mut self.fused, T::as_f32(theta))
        {
            self.x32.clear();
            self.x32.extend(inputs.iter().map(|&v| v.to_f64() as f32));
            self.out32.resize(count, 0.0);
            let params = Params {
                theta: theta32,
                layout: &self.layout,
            };
            fused.forward(self.spec.arch, &shape, &params, &self.x32, &mut self.out32);
            return self.out32.iter().map(|&z| f64::from(z)).collect();
        }
        let mut all = Vec::with_capacity(count);
        self.rewind_patterns();
        for (start, n) in chunks(count, OUTPUT_CHUNK) {
            self.forward(theta, &inputs[start * length..(start + n) * length], length);
            all.extend(self.out.iter().map(|z| z.to_f64()));
        }
        all
    }

    /// Fixes the activation patterns of the Transformer's ReLUs to those at
    /// `theta` on `split`: every later pass, which must be over the same
    /// sequences, lets through the units that were positive there. The loss
    /// then stays on one smooth piece around `theta`, so finite differences
    /// of its gradients converge to the Hessian (see `hessian`). Recurrent
    /// models are smooth; for them this does nothing.
    pub fn freeze_activation_patterns(&mut self, theta: &[T], split: &Split) {
        if let Buffers::Transformer(b) = &mut self.buffers {
            b.patterns.record();
            self.outputs(theta, &split.inputs, split.length);
            if let Buffers::Transformer(b) = &mut self.buffers {
                b.patterns.replay();
            }
        }
    }

    fn rewind_patterns(&mut self) {
        if let Buffers::Transformer(b) = &mut self.buffers {
            b.patterns.rewind();
        }
    }

    /// Mean loss (and, for classification, accuracy) over `split`, in
    /// evaluation mode.
    pub fn evaluate(&mut self, theta: &[T], split: &Split) -> Evaluation {
        let outputs = self.outputs(theta, &split.inputs, split.length);
        let n = split.len() as f64;
        let loss = outputs
            .iter()
            .zip(&split.targets)
            .map(|(&z, &y)| sample_loss(self.kind, z, f64::from(y)).0)
            .sum::<f64>()
            / n;
        let accuracy = (self.kind == TaskKind::SequenceClassification).then(|| {
            let correct = outputs
                .iter()
                .zip(&split.targets)
                .filter(|&(&z, &t)| (z >= 0.0) == (t >= 0.5))
                .count();
            correct as f64 / n
        });
        Evaluation { loss, accuracy }
    }

    /// The mean loss over `split` and, written into `grad`, its gradient
    /// with respect to `theta`.
    pub fn loss_and_gradient(&mut self, theta: &[T], split: &Split, grad: &mut [T]) -> f64 {
        self.loss_and_gradient_of(theta, &split.inputs, &split.targets, split.length, grad)
    }

    /// [`Self::loss_and_gradient`] of the sequences `inputs` (row-major
    /// `[count, length]`) with one target each.
    pub fn loss_and_gradient_of<I: Real>(
        &mut self,
        theta: &[T],
        inputs: &[I],
        targets: &[I],
        length: usize,
        grad: &mut [T],
    ) -> f64 {
        assert_eq!(
            theta.len(),
            self.layout.len,
            "flat vector does not fit the model"
        );
        assert_eq!(
            grad.len(),
            self.layout.len,
            "gradient does not fit the model"
        );
        assert_eq!(
            inputs.len(),
            targets.len() * length,
            "one target per sequence"
        );
        grad.fill(T::ZERO);
        let n = targets.len() as f64;
        let mut total = 0.0;
        self.rewind_patterns();
        for (start, count) in chunks(targets.len(), CHUNK) {
            self.forward(
                theta,
                &inputs[start * length..(start + count) * length],
                length,
            );
            self.dout.clear();
            for (z, &y) in self.out.iter().zip(&targets[start..start + count]) {
                let (loss, slope) = sample_loss(self.kind, z.to_f64(), y.to_f64());
                total += loss;
                self.dout.push(T::from_f64(slope / n));
            }
            self.backward(theta, length, grad);
        }
        total / n
    }
}

/// `(start, count)` of the chunks of `n` sequences.
fn chunks(n: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(size)
        .map(move |start| (start, size.min(n - start)))
}

/// One sequence's loss and its derivative with respect to the output `z`:
/// binary cross-entropy on the logit (`max(z, 0) - z y + ln(1 + e^-|z|)`,
/// slope `sigmoid(z) - y`) or the squared error (slope `2 (z - y)`).
fn sample_loss(kind: TaskKind, z: f64, y: f64) -> (f64, f64) {
    match kind {
        TaskKind::SequenceClassification => {
            let loss = z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
            (loss, 1.0 / (1.0 + (-z).exp()) - y)
        }
        TaskKind::SequenceLearning => ((z - y).powi(2), 2.0 * (z - y)),
    }
}
