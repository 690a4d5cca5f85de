//! The three model families as functions of a flat parameter vector.
//!
//! A [`Network`] is built from a host-side flat vector (see [`layout`]): each
//! parameter tensor becomes one leaf tensor on the device, so gradients come
//! back per tensor and are concatenated into a flat gradient in the same
//! order. Training, interpolation, surfaces and Hessians all move the model by
//! moving that vector, which keeps every analysis independent of burn's module
//! machinery and lets the same code run in f32 (training) and f64 (analyses).

pub mod layout;
mod recurrent;
mod transformer;

pub(crate) use transformer::{positional_encoding, positional_encoding_values};

use burn::tensor::{DType, Device, Element, Gradients, Tensor, TensorData};
use minima_shared::{Arch, ModelSpec};

pub use layout::{Layout, ParamEntry, ParamKind};

use crate::rng::Rng;

/// Where and in which precision a network computes.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub device: Device,
    pub dtype: DType,
}

impl Ctx {
    /// The pure-Rust CPU backend, without gradients.
    pub fn flex(dtype: DType) -> Ctx {
        Ctx {
            device: Device::flex(),
            dtype,
        }
    }

    /// The pure-Rust CPU backend with first-order autodiff.
    pub fn flex_autodiff(dtype: DType) -> Ctx {
        Ctx {
            device: Device::flex().autodiff(),
            dtype,
        }
    }

    /// A tensor of this context from host values.
    pub fn tensor<E: Element, const D: usize>(
        &self,
        values: Vec<E>,
        shape: [usize; D],
    ) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), (&self.device, self.dtype))
    }
}

/// Dropout in training mode: masks drawn on the host from the task's
/// `"dropout"` stream, so a run is reproducible on any backend.
pub struct Dropout<'a> {
    pub p: f64,
    pub rng: &'a mut Rng,
}

impl Dropout<'_> {
    /// Zeroes each element with probability `p` and scales the rest by
    /// `1 / (1 - p)`, as PyTorch's inverted dropout does.
    pub fn apply<const D: usize>(&mut self, ctx: &Ctx, x: Tensor<D>) -> Tensor<D> {
        if self.p == 0.0 {
            return x;
        }
        let shape: [usize; D] = x.dims();
        let n: usize = shape.iter().product();
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if self.rng.next_f64() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        x * ctx.tensor(mask, shape)
    }
}

/// A model of `spec` whose parameters are leaf tensors made from a flat vector.
pub struct Network {
    pub spec: ModelSpec,
    pub ctx: Ctx,
    /// One leaf per layout entry, flat (rank 1), in layout order.
    leaves: Vec<Tensor<1>>,
    layout: Layout,
}

impl Network {
    /// Builds the network at parameters `theta`; with `track_grads` its leaves
    /// record gradients (the context must then be an autodiff one).
    pub fn new<E: Element>(spec: &ModelSpec, ctx: &Ctx, theta: &[E], track_grads: bool) -> Network {
        let layout = Layout::for_model(spec);
        assert_eq!(
            theta.len(),
            layout.len,
            "flat vector does not fit the model"
        );
        let leaves = layout
            .entries
            .iter()
            .map(|entry| {
                let leaf = ctx.tensor(theta[entry.range()].to_vec(), [entry.len()]);
                if track_grads {
                    leaf.require_grad()
                } else {
                    leaf
                }
            })
            .collect();
        Network {
            spec: *spec,
            ctx: ctx.clone(),
            leaves,
            layout,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Maps sequences to one output (a logit or a prediction) each.
    ///
    /// # Shapes
    /// - x: `[batch, length, 1]`
    /// - output: `[batch, 1]`
    pub fn forward(&self, x: Tensor<3>, dropout: Option<&mut Dropout>) -> Tensor<2> {
        let params = Params {
            leaves: &self.leaves,
            entries: &self.layout.entries,
            next: 0,
        };
        match self.spec.arch {
            Arch::Lstm => recurrent::lstm(self, params, x, dropout),
            Arch::Gru => recurrent::gru(self, params, x, dropout),
            Arch::Transformer => transformer::forward(self, params, x, dropout),
        }
    }

    /// The gradient with respect to the flat vector, from a backward pass of a
    /// loss computed with this network. Leaves the loss did not reach get 0.
    pub fn flat_gradient(&self, grads: &Gradients) -> Vec<f64> {
        let mut flat = Vec::with_capacity(self.layout.len);
        for (leaf, entry) in self.leaves.iter().zip(&self.layout.entries) {
            match leaf.grad(grads) {
                Some(g) => flat.extend(g.into_data().iter::<f64>()),
                None => flat.extend(std::iter::repeat_n(0.0, entry.len())),
            }
        }
        flat
    }
}

/// Hands out the leaves in layout order, reshaped to their PyTorch shapes.
struct Params<'a> {
    leaves: &'a [Tensor<1>],
    entries: &'a [ParamEntry],
    next: usize,
}

impl Params<'_> {
    fn vector(&mut self) -> Tensor<1> {
        let leaf = self.leaves[self.next].clone();
        self.next += 1;
        leaf
    }

    fn matrix(&mut self) -> Tensor<2> {
        let [rows, cols] = self.entries[self.next].shape[..] else {
            panic!("{} is not a matrix", self.entries[self.next].name);
        };
        self.vector().reshape([rows, cols])
    }

    /// A PyTorch `nn.Linear` (weight `[out, in]`, bias `[out]`) on the last axis.
    fn linear<const D: usize>(&mut self, x: Tensor<D>) -> Tensor<D> {
        let weight = self.matrix();
        let bias = self.vector();
        linear(x, weight, bias)
    }

    /// A PyTorch `nn.LayerNorm(d)` (eps 1e-5) on the last axis.
    fn layer_norm<const D: usize>(&mut self, x: Tensor<D>) -> Tensor<D> {
        let scale = self.vector();
        let shift = self.vector();
        layer_norm(x, scale, shift)
    }
}

/// Tensors outside autodiff with at least this many elements get their
/// sigmoid and tanh composed from `exp`: flex evaluates `sigmoid` and `tanh`
/// one scalar libm call at a time (about 10 and 16 ns an element), `exp` in
/// about 4 ns, and the cheap element-wise steps around it cost less than the
/// difference. Measured on the 500-sample loss of the 11-layer, d = 32
/// models: LSTM 37 -> 30 ms, GRU 25 -> 18 ms. With autodiff the composition
/// was slower (five backward steps instead of one: LSTM gradient 116 ->
/// 121 ms), and small tensors are bound by per-operation overhead, so both
/// keep the fused operation.
const COMPOSED_ACTIVATION_MIN: usize = 4096;

fn composed<const D: usize>(x: &Tensor<D>) -> bool {
    !x.is_autodiff() && x.shape().num_elements() >= COMPOSED_ACTIVATION_MIN
}

/// `1 / (1 + exp(-x))`; where `exp` overflows the result is exactly 0, as it
/// should be (this path never runs backward, where `0 * inf` would be NaN).
pub(crate) fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !composed(&x) {
        return burn::tensor::activation::sigmoid(x);
    }
    x.neg().exp().add_scalar(1.0).recip()
}

/// `tanh(x) = 2 sigmoid(2x) - 1`, through [`sigmoid`].
pub(crate) fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !composed(&x) {
        return burn::tensor::activation::tanh(x);
    }
    sigmoid(x.mul_scalar(2.0)).mul_scalar(2.0).sub_scalar(1.0)
}

/// `x W^T + b` with a PyTorch-layout weight `[out, in]`.
fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<D> {
    burn::tensor::module::linear(x, weight.transpose(), Some(bias))
}

/// LayerNorm over the last axis with PyTorch's epsilon of 1e-5.
fn layer_norm<const D: usize>(x: Tensor<D>, scale: Tensor<1>, shift: Tensor<1>) -> Tensor<D> {
    burn::tensor::module::layer_norm(x, scale, Some(shift), 1e-5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The composed activations equal burn's fused ones, in f64 and f32,
    /// also where `exp` overflows.
    #[test]
    fn composed_activations_match_the_fused_ones() {
        let n = 2 * COMPOSED_ACTIVATION_MIN;
        let values: Vec<f64> = (0..n)
            .map(|k| -150.0 + 300.0 * k as f64 / n as f64)
            .collect();
        for (dtype, tolerance) in [(DType::F64, 1e-15), (DType::F32, 1e-6)] {
            let ctx = Ctx::flex(dtype);
            let x = ctx.tensor(values.clone(), [n]);
            for (composed, fused) in [
                (
                    sigmoid(x.clone()),
                    burn::tensor::activation::sigmoid(x.clone()),
                ),
                (tanh(x.clone()), burn::tensor::activation::tanh(x.clone())),
            ] {
                let a: Vec<f64> = composed.into_data().iter::<f64>().collect();
                let b: Vec<f64> = fused.into_data().iter::<f64>().collect();
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < tolerance, "{dtype:?}: values differ by {worst:e}");
                assert!(a.iter().all(|v| v.is_finite()));
            }
        }
    }
}
