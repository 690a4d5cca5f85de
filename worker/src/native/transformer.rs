//! The encoder-only Transformer with its backward pass: PyTorch's post-norm
//! `nn.TransformerEncoderLayer` (ReLU feed-forward of width 2d) behind a
//! shared `Linear(1, d)` and the sinusoidal encoding, then a final LayerNorm
//! and `Linear(d, 1)` on the last position.
//!
//! Activations are feature-major, `[features][position][sequence]`: every
//! linear layer is one product `W X` over all columns, LayerNorm and
//! attention run element-wise across the sequences of a batch (long
//! contiguous spans, whatever d and the head width), and the columns of one
//! position are one contiguous block.
//!
//! Only the last position reaches the output, so the last encoder layer
//! computes attention, its feed-forward block and both LayerNorms for that
//! position alone (its keys and values still come from every position).

use super::kernels::{
    Mat, Real, add_assign, add_outer, add_product, add_row_dots, add_row_sums, fill_by_row, gemm,
    layer_norm, layer_norm_backward, softmax_across,
};
use super::{Params, Shape};

/// Entries of the flat vector before the first encoder layer (`inp`), and
/// per encoder layer.
pub(super) const INPUT_ENTRIES: usize = 2;
pub(super) const LAYER_ENTRIES: usize = 12;

/// Offsets of one encoder layer's tensors among its [`LAYER_ENTRIES`].
pub(super) const IN_PROJ: usize = 0;
pub(super) const OUT_PROJ: usize = 2;
pub(super) const LINEAR1: usize = 4;
pub(super) const LINEAR2: usize = 6;
pub(super) const NORM1: usize = 8;
pub(super) const NORM2: usize = 10;

/// What one encoder layer's forward pass keeps for its backward pass. A
/// layer computes its outputs for `queries` positions (all of them, or the
/// last one in the last layer): `width = queries * batch` columns.
#[derive(Default)]
struct LayerTape<T> {
    /// `[3d][length * batch]`: queries, keys, values with their bias.
    qkv: Vec<T>,
    /// `[heads][queries][length][batch]`: attention weights.
    probs: Vec<T>,
    /// `[d][width]`: attended values, heads stacked.
    attended: Vec<T>,
    /// LayerNorm 1: normalised input, reciprocal deviations, output.
    xhat1: Vec<T>,
    rstd1: Vec<T>,
    x1: Vec<T>,
    /// `[2d][width]`: the feed-forward hidden layer after its ReLU.
    hidden: Vec<T>,
    /// `[2d][width]`: which hidden units the ReLU let through.
    active: Vec<bool>,
    xhat2: Vec<T>,
    rstd2: Vec<T>,
}

/// Buffers of the Transformer, reused from call to call.
#[derive(Default)]
pub(super) struct Transformer<T> {
    /// `[length][batch]`: the inputs.
    xt: Vec<T>,
    /// `[layers + 1][d][columns]`: each layer's input, then the last
    /// layer's output (`[d][batch]`, the last position only).
    xs: Vec<Vec<T>>,
    tapes: Vec<LayerTape<T>>,
    /// `[length][d]` sinusoidal encoding.
    encoding: Vec<T>,
    /// Final LayerNorm: normalised input, deviations and output, `[d][batch]`.
    xhat_f: Vec<T>,
    rstd_f: Vec<T>,
    out_f: Vec<T>,
    /// Scratch: sums, column statistics, attention scores.
    sum: Vec<T>,
    column_a: Vec<T>,
    column_b: Vec<T>,
    scores: Vec<T>,
    /// Backward scratch: the gradient of the current layer's outputs (in
    /// place, down to its inputs), and of its parts.
    d_rows: Vec<T>,
    d_input: Vec<T>,
    d_hidden: Vec<T>,
    d_attended: Vec<T>,
    d_qkv: Vec<T>,
    /// ReLU activation patterns, recorded or replayed (see [`Patterns`]).
    pub(super) patterns: Patterns,
}

/// What the feed-forward ReLUs do with their activation patterns.
///
/// A ReLU network is piecewise smooth: a finite difference of gradients
/// whose step moves a pre-activation across zero picks up a jump, which
/// does not shrink with the step. Replaying the patterns of the unshifted
/// point keeps the whole difference on one smooth piece, where it converges
/// to the Hessian PyTorch's double-backward computes (ReLU'' = 0).
#[derive(Debug, Default)]
pub(super) struct Patterns {
    mode: PatternMode,
    /// Every ReLU's pattern, in the order of the passes that recorded them.
    store: Vec<bool>,
    cursor: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum PatternMode {
    /// Patterns follow the signs (an ordinary ReLU).
    #[default]
    Free,
    Record,
    Replay,
}

impl Patterns {
    /// Whether ReLUs follow their signs.
    pub(super) fn is_free(&self) -> bool {
        self.mode == PatternMode::Free
    }

    /// Starts a pass over the sequences the patterns were recorded on.
    pub(super) fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// From now on, record each ReLU's pattern.
    pub(super) fn record(&mut self) {
        self.mode = PatternMode::Record;
        self.store.clear();
        self.cursor = 0;
    }

    /// From now on, replay what was recorded.
    pub(super) fn replay(&mut self) {
        self.mode = PatternMode::Replay;
        self.cursor = 0;
    }

    /// The ReLU of `z` (in place) with its pattern written to `active`.
    /// Branch-free selects, so the loops vectorise.
    fn relu<T: Real>(&mut self, z: &mut [T], active: &mut Vec<bool>) {
        active.clear();
        active.resize(z.len(), false);
        match self.mode {
            PatternMode::Free | PatternMode::Record => {
                for (v, on) in z.iter_mut().zip(active.iter_mut()) {
                    *on = *v > T::ZERO;
                    *v = if *on { *v } else { T::ZERO };
                }
                if self.mode == PatternMode::Record {
                    self.store.extend_from_slice(active);
                }
            }
            PatternMode::Replay => {
                let end = self.cursor + z.len();
                assert!(
                    end <= self.store.len(),
                    "activation patterns replayed on other sequences than recorded"
                );
                active.copy_from_slice(&self.store[self.cursor..end]);
                self.cursor = end;
                for (v, &on) in z.iter_mut().zip(active.iter()) {
                    *v = if on { *v } else { T::ZERO };
                }
            }
        }
    }
}

fn sized<T: Real>(buffer: &mut Vec<T>, len: usize) -> &mut Vec<T> {
    buffer.resize(len, T::ZERO);
    buffer
}

/// Positions a layer computes outputs for: all, except in the last layer.
fn queries(s: &Shape, layer: usize) -> usize {
    if layer + 1 == s.layers { 1 } else { s.length }
}

impl<T: Real> Transformer<T> {
    fn prepare(&mut self, s: &Shape, x: &[T]) {
        let (d, b, n) = (s.d, s.batch, s.length);
        let columns = n * b;
        self.xs.resize_with(s.layers + 1, Vec::new);
        for (layer, x) in self.xs.iter_mut().enumerate() {
            let width = if layer == 0 {
                columns
            } else {
                queries(s, layer - 1) * b
            };
            sized(x, d * width);
        }
        self.tapes.resize_with(s.layers, LayerTape::default);
        for (layer, tape) in self.tapes.iter_mut().enumerate() {
            let q = queries(s, layer);
            let width = q * b;
            sized(&mut tape.qkv, 3 * d * columns);
            sized(&mut tape.probs, s.heads * q * n * b);
            sized(&mut tape.attended, d * width);
            sized(&mut tape.xhat1, d * width);
            sized(&mut tape.rstd1, width);
            sized(&mut tape.x1, d * width);
            sized(&mut tape.hidden, 2 * d * width);
            sized(&mut tape.xhat2, d * width);
            sized(&mut tape.rstd2, width);
        }
        if self.encoding.len() != n * d {
            self.encoding = crate::model::positional_encoding_values(n, d)
                .into_iter()
                .map(T::from_f32)
                .collect();
        }
        sized(&mut self.xhat_f, d * b);
        sized(&mut self.rstd_f, b);
        sized(&mut self.out_f, d * b);
        sized(&mut self.sum, d * columns);
        sized(&mut self.column_a, columns);
        sized(&mut self.column_b, columns);
        sized(&mut self.scores, n * b);
        // [batch, length] -> [length, batch].
        sized(&mut self.xt, columns);
        for (seq, row) in x.chunks_exact(n).enumerate() {
            for (t, &v) in row.iter().enumerate() {
                self.xt[t * b + seq] = v;
            }
        }
    }

    /// # Shapes
    /// - x: `[batch, length]` (one feature per position)
    /// - out: `[batch]`
    pub(super) fn forward(&mut self, s: &Shape, p: &Params<T>, x: &[T], out: &mut [T]) {
        self.prepare(s, x);
        let (d, b, n) = (s.d, s.batch, s.length);
        let columns = n * b;

        // Embedding: Linear(1, d) of every position plus the encoding.
        let (w, bias) = (p.get(0), p.get(1));
        for (j, row) in self.xs[0].chunks_exact_mut(columns).enumerate() {
            for (t, block) in row.chunks_exact_mut(b).enumerate() {
                let offset = bias[j] + self.encoding[t * d + j];
                let xt = &self.xt[t * b..(t + 1) * b];
                for (v, &xv) in block.iter_mut().zip(xt) {
                    *v = xv * w[j] + offset;
                }
            }
        }

        for layer in 0..s.layers {
            let base = INPUT_ENTRIES + layer * LAYER_ENTRIES;
            let q = queries(s, layer);
            let width = q * b;
            let (done, next) = self.xs.split_at_mut(layer + 1);
            let (input, output) = (&done[layer], &mut next[0]);
            let tape = &mut self.tapes[layer];

            // Self-attention and the first residual block; the residual is
            // the input's columns of the positions computed.
            fill_by_row(&mut tape.qkv, p.get(base + IN_PROJ + 1));
            let w_in = Mat::new(p.get(base + IN_PROJ), d);
            gemm(
                3 * d,
                columns,
                d,
                &mut tape.qkv,
                columns,
                w_in,
                Mat::new(input, columns),
                true,
            );
            attention(
                s,
                q,
                &tape.qkv,
                &mut tape.probs,
                &mut tape.attended,
                &mut self.scores,
                (&mut self.column_a, &mut self.column_b),
            );
            let sum = &mut self.sum[..d * width];
            fill_by_row(sum, p.get(base + OUT_PROJ + 1));
            let w_out = Mat::new(p.get(base + OUT_PROJ), d);
            gemm(
                d,
                width,
                d,
                sum,
                width,
                w_out,
                Mat::new(&tape.attended, width),
                true,
            );
            for (row, input_row) in sum.chunks_exact_mut(width).zip(input.chunks_exact(columns)) {
                add_assign(row, &input_row[columns - width..]);
            }
            let (scale, shift) = (p.get(base + NORM1), p.get(base + NORM1 + 1));
            let mean = &mut self.column_a[..width];
            layer_norm(
                sum,
                scale,
                shift,
                &mut tape.xhat1,
                &mut tape.rstd1,
                mean,
                &mut tape.x1,
            );

            // Feed-forward and the second residual block.
            fill_by_row(&mut tape.hidden, p.get(base + LINEAR1 + 1));
            let w1 = Mat::new(p.get(base + LINEAR1), d);
            gemm(
                2 * d,
                width,
                d,
                &mut tape.hidden,
                width,
                w1,
                Mat::new(&tape.x1, width),
                true,
            );
            self.patterns.relu(&mut tape.hidden, &mut tape.active);
            fill_by_row(sum, p.get(base + LINEAR2 + 1));
            let w2 = Mat::new(p.get(base + LINEAR2), 2 * d);
            gemm(
                d,
                width,
                2 * d,
                sum,
                width,
                w2,
                Mat::new(&tape.hidden, width),
                true,
            );
            add_assign(sum, &tape.x1);
            let (scale, shift) = (p.get(base + NORM2), p.get(base + NORM2 + 1));
            layer_norm(
                sum,
                scale,
                shift,
                &mut tape.xhat2,
                &mut tape.rstd2,
                mean,
                output,
            );
        }

        // Final LayerNorm and Linear(d, 1) of the last position.
        let base = INPUT_ENTRIES + s.layers * LAYER_ENTRIES;
        let (scale, shift) = (p.get(base), p.get(base + 1));
        let top = &self.xs[s.layers];
        let mean = &mut self.column_a[..b];
        layer_norm(
            top,
            scale,
            shift,
            &mut self.xhat_f,
            &mut self.rstd_f,
            mean,
            &mut self.out_f,
        );
        let w = Mat::new(p.get(base + 2), d);
        gemm(1, b, d, out, b, w, Mat::new(&self.out_f, b), false);
        let bias = p.get(base + 3)[0];
        out.iter_mut().for_each(|z| *z += bias);
    }

    /// Adds to `grad` the gradient of `sum_b dout[b] z[b]` for the inputs of
    /// the last [`Self::forward`].
    pub(super) fn backward(&mut self, s: &Shape, p: &Params<T>, dout: &[T], grad: &mut [T]) {
        let (d, b) = (s.d, s.batch);
        let base = INPUT_ENTRIES + s.layers * LAYER_ENTRIES;

        // Output layer and final LayerNorm.
        let gw = &mut grad[p.range(base + 2)];
        gemm(
            1,
            d,
            b,
            gw,
            d,
            Mat::new(dout, b),
            Mat::t(&self.out_f, b),
            true,
        );
        grad[p.range(base + 3)][0] += dout.iter().fold(T::ZERO, |a, &v| a + v);
        let dr = sized(&mut self.d_rows, d * b);
        dr.fill(T::ZERO);
        add_outer(dr, p.get(base + 2), dout);
        let (gs, gb) = two_mut(grad, p.range(base), p.range(base + 1));
        let (ca, cb) = (&mut self.column_a[..b], &mut self.column_b[..b]);
        layer_norm_backward(dr, &self.xhat_f, &self.rstd_f, p.get(base), gs, gb, ca, cb);

        for layer in (0..s.layers).rev() {
            self.layer_backward(s, p, layer, grad);
        }

        // Embedding.
        add_row_dots(&mut grad[p.range(0)], &self.d_rows, &self.xt);
        add_row_sums(&mut grad[p.range(1)], &self.d_rows);
    }

    /// One encoder layer backwards: `d_rows` holds the gradient of the
    /// layer's outputs and is left holding that of its inputs.
    fn layer_backward(&mut self, s: &Shape, p: &Params<T>, layer: usize, grad: &mut [T]) {
        let (d, b, n) = (s.d, s.batch, s.length);
        let columns = n * b;
        let width = queries(s, layer) * b;
        let base = INPUT_ENTRIES + layer * LAYER_ENTRIES;
        let tape = &self.tapes[layer];
        let input = &self.xs[layer];
        let dr = &mut self.d_rows;
        let (ca, cb) = (&mut self.column_a[..width], &mut self.column_b[..width]);

        // Second LayerNorm, then the feed-forward block; the residual adds
        // the block's input gradient to the LayerNorm's.
        let (gs, gb) = two_mut(grad, p.range(base + NORM2), p.range(base + NORM2 + 1));
        layer_norm_backward(
            dr,
            &tape.xhat2,
            &tape.rstd2,
            p.get(base + NORM2),
            gs,
            gb,
            ca,
            cb,
        );
        let gw2 = &mut grad[p.range(base + LINEAR2)];
        gemm(
            d,
            2 * d,
            width,
            gw2,
            2 * d,
            Mat::new(dr, width),
            Mat::t(&tape.hidden, width),
            true,
        );
        add_row_sums(&mut grad[p.range(base + LINEAR2 + 1)], dr);
        let dh = sized(&mut self.d_hidden, 2 * d * width);
        let w2 = Mat::t(p.get(base + LINEAR2), 2 * d);
        gemm(2 * d, width, d, dh, width, w2, Mat::new(dr, width), false);
        for (g, &on) in dh.iter_mut().zip(&tape.active) {
            if !on {
                *g = T::ZERO;
            }
        }
        let gw1 = &mut grad[p.range(base + LINEAR1)];
        gemm(
            2 * d,
            d,
            width,
            gw1,
            d,
            Mat::new(dh, width),
            Mat::t(&tape.x1, width),
            true,
        );
        add_row_sums(&mut grad[p.range(base + LINEAR1 + 1)], dh);
        let w1 = Mat::t(p.get(base + LINEAR1), d);
        gemm(d, width, 2 * d, dr, width, w1, Mat::new(dh, width), true);

        // First LayerNorm, then attention; again the residual adds up.
        let (gs, gb) = two_mut(grad, p.range(base + NORM1), p.range(base + NORM1 + 1));
        layer_norm_backward(
            dr,
            &tape.xhat1,
            &tape.rstd1,
            p.get(base + NORM1),
            gs,
            gb,
            ca,
            cb,
        );
        let gwo = &mut grad[p.range(base + OUT_PROJ)];
        gemm(
            d,
            d,
            width,
            gwo,
            d,
            Mat::new(dr, width),
            Mat::t(&tape.attended, width),
            true,
        );
        add_row_sums(&mut grad[p.range(base + OUT_PROJ + 1)], dr);
        let da = sized(&mut self.d_attended, d * width);
        let wo = Mat::t(p.get(base + OUT_PROJ), d);
        gemm(d, width, d, da, width, wo, Mat::new(dr, width), false);
        let dq = sized(&mut self.d_qkv, 3 * d * columns);
        dq.fill(T::ZERO);
        attention_backward(
            s,
            queries(s, layer),
            &tape.qkv,
            &tape.probs,
            da,
            dq,
            &mut self.scores,
            ca,
        );
        let gwi = &mut grad[p.range(base + IN_PROJ)];
        gemm(
            3 * d,
            d,
            columns,
            gwi,
            d,
            Mat::new(dq, columns),
            Mat::t(input, columns),
            true,
        );
        add_row_sums(&mut grad[p.range(base + IN_PROJ + 1)], dq);

        // The input's gradient: through the projections, plus the residual
        // on the columns the layer computed.
        let di = sized(&mut self.d_input, d * columns);
        let wi = Mat::t(p.get(base + IN_PROJ), d);
        gemm(
            d,
            columns,
            3 * d,
            di,
            columns,
            wi,
            Mat::new(dq, columns),
            false,
        );
        for (row, d_row) in di.chunks_exact_mut(columns).zip(dr.chunks_exact(width)) {
            add_assign(&mut row[columns - width..], d_row);
        }
        std::mem::swap(&mut self.d_rows, &mut self.d_input);
    }
}

/// Two disjoint ranges of one slice, mutably.
fn two_mut<T>(
    v: &mut [T],
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> (&mut [T], &mut [T]) {
    assert!(a.end <= b.start, "ranges out of order");
    let (left, right) = v.split_at_mut(b.start);
    (&mut left[a], &mut right[..b.end - b.start])
}

/// Scaled dot-product attention of every head, for the last `queries`
/// positions, from `qkv` (`[3d][length][batch]`: q, k, v with heads
/// stacked); element-wise across the sequences of the batch. `scores` is
/// `[length][batch]` scratch, `columns` two vectors of `batch`.
fn attention<T: Real>(
    s: &Shape,
    queries: usize,
    qkv: &[T],
    probs: &mut [T],
    attended: &mut [T],
    scores: &mut [T],
    columns: (&mut [T], &mut [T]),
) {
    let (d, b, n, hd) = (s.d, s.batch, s.length, s.d / s.heads);
    let cols = n * b;
    let scale = T::ONE / T::from_f64(hd as f64).sqrt();
    let (max, total) = (&mut columns.0[..b], &mut columns.1[..b]);
    let width = queries * b;
    let at = |row: usize, t: usize| &qkv[row * cols + t * b..row * cols + (t + 1) * b];
    for h in 0..s.heads {
        for qi in 0..queries {
            let i = n - queries + qi;
            scores.fill(T::ZERO);
            for (j, sj) in scores.chunks_exact_mut(b).enumerate() {
                for e in h * hd..(h + 1) * hd {
                    add_product(sj, at(e, i), at(d + e, j));
                }
            }
            softmax_across(scores, b, scale, max, total);
            for e in h * hd..(h + 1) * hd {
                let out = &mut attended[e * width + qi * b..e * width + (qi + 1) * b];
                out.fill(T::ZERO);
                for (j, pj) in scores.chunks_exact(b).enumerate() {
                    add_product(out, pj, at(2 * d + e, j));
                }
            }
            let p = &mut probs[(h * queries + qi) * n * b..(h * queries + qi + 1) * n * b];
            p.copy_from_slice(scores);
        }
    }
}

/// [`attention`] backwards: adds into `d_qkv` the gradients of q, k and v
/// from the gradient of the attended values. `ds` is `[length][batch]`
/// scratch, `weighted` one vector of `batch`.
#[allow(clippy::too_many_arguments)]
fn attention_backward<T: Real>(
    s: &Shape,
    queries: usize,
    qkv: &[T],
    probs: &[T],
    d_attended: &[T],
    d_qkv: &mut [T],
    ds: &mut [T],
    weighted: &mut [T],
) {
    let (d, b, n, hd) = (s.d, s.batch, s.length, s.d / s.heads);
    let cols = n * b;
    let scale = T::ONE / T::from_f64(hd as f64).sqrt();
    let width = queries * b;
    let weighted = &mut weighted[..b];
    let span = |row: usize, t: usize| row * cols + t * b..row * cols + (t + 1) * b;
    for h in 0..s.heads {
        for qi in 0..queries {
            let i = n - queries + qi;
            let p = &probs[(h * queries + qi) * n * b..(h * queries + qi + 1) * n * b];

            // Through the weighted sum of values: dp_j = da . v_j, dv_j += p_j da.
            ds.fill(T::ZERO);
            for e in h * hd..(h + 1) * hd {
                let da = &d_attended[e * width + qi * b..e * width + (qi + 1) * b];
                for (j, (dsj, pj)) in ds.chunks_exact_mut(b).zip(p.chunks_exact(b)).enumerate() {
                    add_product(dsj, da, &qkv[span(2 * d + e, j)]);
                    add_product(&mut d_qkv[span(2 * d + e, j)], pj, da);
                }
            }

            // Through the softmax: ds_j = p_j (dp_j - sum_j' p_j' dp_j') scale.
            weighted.fill(T::ZERO);
            for (dsj, pj) in ds.chunks_exact(b).zip(p.chunks_exact(b)) {
                add_product(weighted, dsj, pj);
            }
            for (dsj, pj) in ds.chunks_exact_mut(b).zip(p.chunks_exact(b)) {
                for ((g, &pv), &w) in dsj.iter_mut().zip(pj).zip(&*weighted) {
                    *g = pv * (*g - w) * scale;
                }
            }

            // Through the scores q_i . k_j.
            for e in h * hd..(h + 1) * hd {
                for (j, dsj) in ds.chunks_exact(b).enumerate() {
                    let (q_span, k_span) = (span(e, i), span(d + e, j));
                    let k = &qkv[k_span.clone()];
                    add_product(&mut d_qkv[q_span.clone()], dsj, k);
                    let q = &qkv[q_span];
                    add_product(&mut d_qkv[k_span], dsj, q);
                }
            }
        }
    }
}
