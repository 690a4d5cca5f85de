//! Fused evaluation passes: a model's outputs in f32 with nothing kept for
//! a backward pass, the hot path of surfaces and interpolation (thousands
//! of loss evaluations of one network).
//!
//! Where the taped passes of [`super`] compute a layer as separate matrix
//! products and element-wise loops over buffers, these keep a register tile
//! of products and apply the layer's nonlinearities to it before it leaves
//! the registers, on blocks of sequences small enough to stay in cache
//! through the whole network. They compute the same functions in the same
//! precision; only the order of rounding differs (tests hold them to the
//! f64 passes).
//!
//! Written for AVX-512 ([`simd`]); on other CPUs, and in f64, the evaluator
//! uses the taped passes.
//!
//! - [`simd`]: aligned buffers, the register tile, vector `exp`, `sigmoid`,
//!   `tanh`.
//! - `recurrent`: LSTM and GRU.

mod recurrent;
mod simd;

use minima_shared::Arch;

use super::{Params, Shape};

/// The fused passes of one model, with their buffers.
#[derive(Default)]
pub(super) struct Fused {
    recurrent: recurrent::Recurrent,
}

impl Fused {
    /// Whether the fused passes run `arch` on this CPU.
    pub(super) fn supports(arch: Arch) -> bool {
        matches!(arch, Arch::Lstm | Arch::Gru) && simd::available()
    }

    /// The outputs of the sequences `x` (`[count, length]` row-major) into
    /// `out` (`count` values). Only for what [`Self::supports`].
    pub(super) fn forward(
        &mut self,
        arch: Arch,
        s: &Shape,
        p: &Params<f32>,
        x: &[f32],
        out: &mut [f32],
    ) {
        assert!(
            Self::supports(arch),
            "no fused pass for {arch:?} on this CPU"
        );
        let cell = match arch {
            Arch::Lstm => recurrent::Cell::Lstm,
            Arch::Gru => recurrent::Cell::Gru,
            Arch::Transformer => unreachable!("checked by supports"),
        };
        self.recurrent.forward(cell, s, p, x, out);
    }
}
