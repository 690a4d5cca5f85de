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
//! Written for AVX-512 (`simd`); on other CPUs, and in f64, the evaluator
//! uses the taped passes.
//!
//! - `simd`: aligned buffers, the register tile, vector `exp`, `sigmoid`,
//!   `tanh`.
//! - `recurrent`: LSTM and GRU.
//! - `transformer`: the encoder.

#[cfg(target_arch = "x86_64")]
mod recurrent;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(target_arch = "x86_64")]
mod transformer;

use minima_shared::Arch;

use super::{Params, Shape};

/// The fused passes of one model, with their buffers.
#[derive(Default)]
pub(super) struct Fused {
    #[cfg(target_arch = "x86_64")]
    recurrent: recurrent::Recurrent,
    #[cfg(target_arch = "x86_64")]
    transformer: transformer::Transformer,
}

/// The longest sequences the fused Transformer takes: attention keeps a
/// query's scores over every position in registers.
const MAX_TRANSFORMER_LENGTH: usize = 8;

impl Fused {
    /// Whether this CPU runs the fused passes.
    pub(super) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return simd::available();
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// Whether the fused passes take sequences of `length` steps through
    /// `arch`.
    pub(super) fn takes(arch: Arch, length: usize) -> bool {
        arch != Arch::Transformer || length <= MAX_TRANSFORMER_LENGTH
    }

    /// The outputs of the sequences `x` (`[count, length]` row-major) into
    /// `out` (`count` values). Only where [`Self::available`] and
    /// [`Self::takes`].
    pub(super) fn forward(
        &mut self,
        arch: Arch,
        s: &Shape,
        p: &Params<f32>,
        x: &[f32],
        out: &mut [f32],
    ) {
        assert!(
            Self::available() && Self::takes(arch, s.length),
            "no fused pass for {arch:?} over {} steps on this CPU",
            s.length
        );
        #[cfg(target_arch = "x86_64")]
        match arch {
            Arch::Lstm => self.recurrent.forward(recurrent::Cell::Lstm, s, p, x, out),
            Arch::Gru => self.recurrent.forward(recurrent::Cell::Gru, s, p, x, out),
            Arch::Transformer => self.transformer.forward(s, p, x, out),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (p, x, out);
    }
}
