//! The scientific core of minima: everything a worker does with one task.
//!
//! - [`rng`]: the portable generator behind every random draw.
//! - [`data`]: the two toy data sets, their splits and `.npy` export.
//! - [`device`]: where training runs (CPU, CUDA, LibTorch).
//! - [`model`]: LSTM, GRU and Transformer as functions of a flat parameter
//!   vector laid out like PyTorch's `state_dict`.
//! - [`loss`]: the study's losses and whole-split evaluation.
//! - [`native`]: the models' outputs, losses and gradients in hand-written
//!   CPU code, for the analyses' large batches.
//! - [`optim`]: AdamW and global gradient-norm clipping as PyTorch does them.
//! - [`train`]: the training protocol.
//! - [`hessian`]: Hessian eigenvalues, trace and spectral density.
//! - [`landscape`]: the loss along the line from initial to final weights.
//! - [`run`]: one task from configuration to its output folder.
//! - [`export`]: weights as PyTorch-loadable safetensors.
//! - [`output`]: crash-safe file writes.
//! - [`client`]: a worker joined to a coordinator over gRPC.

pub mod client;
pub mod data;
pub mod device;
pub mod export;
pub mod hessian;
pub mod landscape;
pub mod loss;
pub mod model;
pub mod native;
pub mod optim;
pub mod output;
pub mod rng;
pub mod run;
pub mod train;

/// Runs `work` with burn's CPU kernels limited to `threads` threads.
///
/// Each worker gets a pool of its own, so several workers in one process do
/// not queue behind one shared pool. With one thread (the default) every
/// reduction runs in a fixed order and results are bit-identical from run to
/// run; larger pools split big sums adaptively and may differ in the last bits.
pub fn with_compute_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(work),
        // No thread could be started: run on this one.
        Err(_) => work(),
    }
}
