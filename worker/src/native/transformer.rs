//! The encoder-only Transformer with its backward pass: PyTorch's post-norm
//! `nn.TransformerEncoderLayer` (ReLU feed-forward of width 2d) behind a
//! shared `Linear(1, d)` and the sinusoidal encoding, then a final LayerNorm
//! and `Linear(d, 1)` on the last position.
//!
//! Rows are `(sequence, position)`, batch-major: every linear layer is one
//! product over all rows. Attention mixes only the few positions of one
//! sequence, so it is written out as loops over `(sequence, head)`.

use super::kernels::{
    Mat, Real, add_assign, add_column_sums, fill_rows, gemm, layer_norm, layer_norm_backward, relu,
    relu_backward,
};
use super::{Params, Shape};

/// Entries of the flat vector before the first encoder layer (`inp`), and
/// per encoder layer.
const INPUT_ENTRIES: usize = 2;
const LAYER_ENTRIES: usize = 12;

/// Offsets of one encoder layer's tensors among its [`LAYER_ENTRIES`].
const IN_PROJ: usize = 0;
const OUT_PROJ: usize = 2;
const LINEAR1: usize = 4;
const LINEAR2: usize = 6;
const NORM1: usize = 8;
const NORM2: usize = 10;

/// What one encoder layer's forward pass keeps for its backward pass.
#[derive(Default)]
struct LayerTape<T> {
    /// `[rows, 3d]`: queries, keys, values with their bias.
    qkv: Vec<T>,
    /// `[batch, heads, length, length]`: attention weights.
    probs: Vec<T>,
    /// `[rows, d]`: attended values, heads side by side.
    attended: Vec<T>,
    /// LayerNorm 1: normalised input, reciprocal deviations, output.
    xhat1: Vec<T>,
    rstd1: Vec<T>,
    x1: Vec<T>,
    /// `[rows, 2d]`: the feed-forward hidden layer after its ReLU.
    hidden: Vec<T>,
    xhat2: Vec<T>,
    rstd2: Vec<T>,
}

/// Buffers of the Transformer, reused from call to call.
#[derive(Default)]
pub(super) struct Transformer<T> {
    /// `[layers + 1][rows, d]`: the input of each layer, then the output of
    /// the last.
    xs: Vec<Vec<T>>,
    tapes: Vec<LayerTape<T>>,
    /// `[length, d]` sinusoidal encoding.
    encoding: Vec<T>,
    /// Final LayerNorm of the last position: `[batch, d]`.
    last: Vec<T>,
    xhat_f: Vec<T>,
    rstd_f: Vec<T>,
    out_f: Vec<T>,
    /// Scratch of the forward and backward passes.
    sum: Vec<T>,
    d_rows: Vec<T>,
    d_hidden: Vec<T>,
    d_attended: Vec<T>,
    d_qkv: Vec<T>,
}

fn sized<T: Real>(buffer: &mut Vec<T>, len: usize) -> &mut Vec<T> {
    buffer.resize(len, T::ZERO);
    buffer
}

impl<T: Real> Transformer<T> {
    fn prepare(&mut self, s: &Shape) {
        let rows = s.batch * s.length;
        let d = s.d;
        self.xs.resize_with(s.layers + 1, Vec::new);
        for x in &mut self.xs {
            sized(x, rows * d);
        }
        self.tapes.resize_with(s.layers, LayerTape::default);
        for tape in &mut self.tapes {
            sized(&mut tape.qkv, rows * 3 * d);
            sized(&mut tape.probs, s.batch * s.heads * s.length * s.length);
            sized(&mut tape.attended, rows * d);
            sized(&mut tape.xhat1, rows * d);
            sized(&mut tape.rstd1, rows);
            sized(&mut tape.x1, rows * d);
            sized(&mut tape.hidden, rows * 2 * d);
            sized(&mut tape.xhat2, rows * d);
            sized(&mut tape.rstd2, rows);
        }
        if self.encoding.len() != s.length * d {
            self.encoding = crate::model::positional_encoding_values(s.length, d)
                .into_iter()
                .map(T::from_f32)
                .collect();
        }
        sized(&mut self.last, s.batch * d);
        sized(&mut self.xhat_f, s.batch * d);
        sized(&mut self.rstd_f, s.batch);
        sized(&mut self.out_f, s.batch * d);
        sized(&mut self.sum, rows * d);
    }

    /// # Shapes
    /// - x: `[batch, length]` (one feature per position)
    /// - out: `[batch]`
    pub(super) fn forward(&mut self, s: &Shape, p: &Params<T>, x: &[T], out: &mut [T]) {
        self.prepare(s);
        let (d, rows) = (s.d, s.batch * s.length);

        // Embedding: Linear(1, d) of every position plus the encoding.
        let (w, b) = (p.get(0), p.get(1));
        for (r, row) in self.xs[0].chunks_exact_mut(d).enumerate() {
            let pe = &self.encoding[(r % s.length) * d..][..d];
            for j in 0..d {
                row[j] = x[r] * w[j] + b[j] + pe[j];
            }
        }

        for layer in 0..s.layers {
            let base = INPUT_ENTRIES + layer * LAYER_ENTRIES;
            let (done, next) = self.xs.split_at_mut(layer + 1);
            let (input, output) = (&done[layer], &mut next[0]);
            let tape = &mut self.tapes[layer];

            // Self-attention and the first residual block.
            fill_rows(&mut tape.qkv, p.get(base + IN_PROJ + 1));
            let w_in = Mat::t(p.get(base + IN_PROJ), d);
            gemm(
                rows,
                3 * d,
                d,
                &mut tape.qkv,
                3 * d,
                Mat::new(input, d),
                w_in,
                true,
            );
            attention(s, &tape.qkv, &mut tape.probs, &mut tape.attended);
            fill_rows(&mut self.sum, p.get(base + OUT_PROJ + 1));
            let w_out = Mat::t(p.get(base + OUT_PROJ), d);
            gemm(
                rows,
                d,
                d,
                &mut self.sum,
                d,
                Mat::new(&tape.attended, d),
                w_out,
                true,
            );
            add_assign(&mut self.sum, input);
            let (scale, shift) = (p.get(base + NORM1), p.get(base + NORM1 + 1));
            layer_norm(
                &self.sum,
                scale,
                shift,
                &mut tape.xhat1,
                &mut tape.rstd1,
                &mut tape.x1,
            );

            // Feed-forward and the second residual block.
            fill_rows(&mut tape.hidden, p.get(base + LINEAR1 + 1));
            let w1 = Mat::t(p.get(base + LINEAR1), d);
            gemm(
                rows,
                2 * d,
                d,
                &mut tape.hidden,
                2 * d,
                Mat::new(&tape.x1, d),
                w1,
                true,
            );
            relu(&mut tape.hidden);
            fill_rows(&mut self.sum, p.get(base + LINEAR2 + 1));
            let w2 = Mat::t(p.get(base + LINEAR2), 2 * d);
            gemm(
                rows,
                d,
                2 * d,
                &mut self.sum,
                d,
                Mat::new(&tape.hidden, 2 * d),
                w2,
                true,
            );
            add_assign(&mut self.sum, &tape.x1);
            let (scale, shift) = (p.get(base + NORM2), p.get(base + NORM2 + 1));
            layer_norm(
                &self.sum,
                scale,
                shift,
                &mut tape.xhat2,
                &mut tape.rstd2,
                output,
            );
        }

        // Final LayerNorm and Linear(d, 1), on the last position only.
        let top = &self.xs[s.layers];
        for (b, row) in self.last.chunks_exact_mut(d).enumerate() {
            row.copy_from_slice(&top[(b * s.length + s.length - 1) * d..][..d]);
        }
        let base = INPUT_ENTRIES + s.layers * LAYER_ENTRIES;
        let (scale, shift) = (p.get(base), p.get(base + 1));
        layer_norm(
            &self.last,
            scale,
            shift,
            &mut self.xhat_f,
            &mut self.rstd_f,
            &mut self.out_f,
        );
        let w = Mat::t(p.get(base + 2), d);
        gemm(s.batch, 1, d, out, 1, Mat::new(&self.out_f, d), w, false);
        let bias = p.get(base + 3)[0];
        out.iter_mut().for_each(|z| *z += bias);
    }

    /// Adds to `grad` the gradient of `sum_b dout[b] z[b]` for the inputs of
    /// the last [`Self::forward`].
    pub(super) fn backward(
        &mut self,
        s: &Shape,
        p: &Params<T>,
        x: &[T],
        dout: &[T],
        grad: &mut [T],
    ) {
        let (d, rows) = (s.d, s.batch * s.length);
        let base = INPUT_ENTRIES + s.layers * LAYER_ENTRIES;

        // Output layer and final LayerNorm, back to the rows of the last
        // position; every other row of the top layer gets no gradient.
        let w = p.get(base + 2);
        gemm(
            1,
            d,
            s.batch,
            &mut grad[p.range(base + 2)],
            d,
            Mat::t(dout, 1),
            Mat::new(&self.out_f, d),
            true,
        );
        grad[p.range(base + 3)][0] += dout.iter().fold(T::ZERO, |a, &v| a + v);
        for (row, &dz) in self.last.chunks_exact_mut(d).zip(dout) {
            for (g, &wv) in row.iter_mut().zip(w) {
                *g = dz * wv;
            }
        }
        let (g_scale, g_shift) = two_mut(grad, p.range(base), p.range(base + 1));
        layer_norm_backward(
            &mut self.last,
            &self.xhat_f,
            &self.rstd_f,
            p.get(base),
            g_scale,
            g_shift,
        );
        let d_rows = sized(&mut self.d_rows, rows * d);
        d_rows.fill(T::ZERO);
        for (b, row) in self.last.chunks_exact(d).enumerate() {
            d_rows[(b * s.length + s.length - 1) * d..][..d].copy_from_slice(row);
        }

        for layer in (0..s.layers).rev() {
            self.layer_backward(s, p, layer, grad);
        }

        // Embedding.
        let (gw, gb) = two_mut(grad, p.range(0), p.range(1));
        for (r, row) in self.d_rows.chunks_exact(d).enumerate() {
            for j in 0..d {
                gw[j] += row[j] * x[r];
                gb[j] += row[j];
            }
        }
    }

    /// One encoder layer backwards: `d_rows` holds the gradient of the
    /// layer's output and is left holding that of its input.
    fn layer_backward(&mut self, s: &Shape, p: &Params<T>, layer: usize, grad: &mut [T]) {
        let (d, rows) = (s.d, s.batch * s.length);
        let base = INPUT_ENTRIES + layer * LAYER_ENTRIES;
        let tape = &self.tapes[layer];
        let input = &self.xs[layer];
        let dr = &mut self.d_rows;

        // Second LayerNorm, then the feed-forward block; the residual adds
        // the block's input gradient to the LayerNorm's.
        let (gs, gb) = two_mut(grad, p.range(base + NORM2), p.range(base + NORM2 + 1));
        layer_norm_backward(dr, &tape.xhat2, &tape.rstd2, p.get(base + NORM2), gs, gb);
        let gw2 = &mut grad[p.range(base + LINEAR2)];
        gemm(
            d,
            2 * d,
            rows,
            gw2,
            2 * d,
            Mat::t(dr, d),
            Mat::new(&tape.hidden, 2 * d),
            true,
        );
        add_column_sums(&mut grad[p.range(base + LINEAR2 + 1)], dr);
        let dh = sized(&mut self.d_hidden, rows * 2 * d);
        let w2 = Mat::new(p.get(base + LINEAR2), 2 * d);
        gemm(rows, 2 * d, d, dh, 2 * d, Mat::new(dr, d), w2, false);
        relu_backward(dh, &tape.hidden);
        let gw1 = &mut grad[p.range(base + LINEAR1)];
        gemm(
            2 * d,
            d,
            rows,
            gw1,
            d,
            Mat::t(dh, 2 * d),
            Mat::new(&tape.x1, d),
            true,
        );
        add_column_sums(&mut grad[p.range(base + LINEAR1 + 1)], dh);
        let w1 = Mat::new(p.get(base + LINEAR1), d);
        gemm(rows, d, 2 * d, dr, d, Mat::new(dh, 2 * d), w1, true);

        // First LayerNorm, then attention; again the residual adds up.
        let (gs, gb) = two_mut(grad, p.range(base + NORM1), p.range(base + NORM1 + 1));
        layer_norm_backward(dr, &tape.xhat1, &tape.rstd1, p.get(base + NORM1), gs, gb);
        let gwo = &mut grad[p.range(base + OUT_PROJ)];
        gemm(
            d,
            d,
            rows,
            gwo,
            d,
            Mat::t(dr, d),
            Mat::new(&tape.attended, d),
            true,
        );
        add_column_sums(&mut grad[p.range(base + OUT_PROJ + 1)], dr);
        let da = sized(&mut self.d_attended, rows * d);
        let wo = Mat::new(p.get(base + OUT_PROJ), d);
        gemm(rows, d, d, da, d, Mat::new(dr, d), wo, false);
        let dq = sized(&mut self.d_qkv, rows * 3 * d);
        dq.fill(T::ZERO);
        attention_backward(s, &tape.qkv, &tape.probs, da, dq);
        let gwi = &mut grad[p.range(base + IN_PROJ)];
        gemm(
            3 * d,
            d,
            rows,
            gwi,
            d,
            Mat::t(dq, 3 * d),
            Mat::new(input, d),
            true,
        );
        add_column_sums(&mut grad[p.range(base + IN_PROJ + 1)], dq);
        let wi = Mat::new(p.get(base + IN_PROJ), d);
        gemm(rows, d, 3 * d, dr, d, Mat::new(dq, 3 * d), wi, true);
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

#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::ZERO, |s, (&x, &y)| s + x * y)
}

/// Scaled dot-product attention of every head of every sequence, from the
/// packed `qkv` rows (`[rows, 3d]`: q, k, v each with heads side by side).
fn attention<T: Real>(s: &Shape, qkv: &[T], probs: &mut [T], attended: &mut [T]) {
    let (d, n, hd) = (s.d, s.length, s.d / s.heads);
    let scale = T::ONE / T::from_f64(hd as f64).sqrt();
    let mut weights = vec![T::ZERO; n];
    for b in 0..s.batch {
        let rows = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        for h in 0..s.heads {
            for i in 0..n {
                let q = &rows[i * 3 * d + h * hd..][..hd];
                let mut max = T::from_f64(f64::NEG_INFINITY);
                for (j, w) in weights.iter_mut().enumerate() {
                    *w = scale * dot(q, &rows[j * 3 * d + d + h * hd..][..hd]);
                    if *w > max {
                        max = *w;
                    }
                }
                let mut total = T::ZERO;
                for w in weights.iter_mut() {
                    *w = (*w - max).exp();
                    total += *w;
                }
                let p = &mut probs[((b * s.heads + h) * n + i) * n..][..n];
                let out = &mut attended[(b * n + i) * d + h * hd..][..hd];
                out.fill(T::ZERO);
                for (j, (pj, &w)) in p.iter_mut().zip(&weights).enumerate() {
                    *pj = w / total;
                    let v = &rows[j * 3 * d + 2 * d + h * hd..][..hd];
                    for (o, &vv) in out.iter_mut().zip(v) {
                        *o += *pj * vv;
                    }
                }
            }
        }
    }
}

/// [`attention`] backwards: adds into `d_qkv` the gradients of q, k and v
/// from the gradient of the attended values.
fn attention_backward<T: Real>(
    s: &Shape,
    qkv: &[T],
    probs: &[T],
    d_attended: &[T],
    d_qkv: &mut [T],
) {
    let (d, n, hd) = (s.d, s.length, s.d / s.heads);
    let scale = T::ONE / T::from_f64(hd as f64).sqrt();
    let mut ds = vec![T::ZERO; n];
    for b in 0..s.batch {
        let rows = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        let d_rows = &mut d_qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        for h in 0..s.heads {
            for i in 0..n {
                let p = &probs[((b * s.heads + h) * n + i) * n..][..n];
                let da = &d_attended[(b * n + i) * d + h * hd..][..hd];
                // Through the weighted sum of values, then the softmax.
                let mut weighted = T::ZERO;
                for (j, g) in ds.iter_mut().enumerate() {
                    let v_at = j * 3 * d + 2 * d + h * hd;
                    *g = dot(da, &rows[v_at..][..hd]);
                    weighted += p[j] * *g;
                    for (dv, &a) in d_rows[v_at..][..hd].iter_mut().zip(da) {
                        *dv += p[j] * a;
                    }
                }
                for (g, &pj) in ds.iter_mut().zip(p) {
                    *g = pj * (*g - weighted) * scale;
                }
                // Through the scores q_i . k_j.
                let q_at = i * 3 * d + h * hd;
                for (j, &g) in ds.iter().enumerate() {
                    let k_at = j * 3 * d + d + h * hd;
                    for e in 0..hd {
                        d_rows[q_at + e] += g * rows[k_at + e];
                        d_rows[k_at + e] += g * rows[q_at + e];
                    }
                }
            }
        }
    }
}
