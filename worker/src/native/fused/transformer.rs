//! Fused evaluation of the encoder-only Transformer: every linear layer is
//! a register tile that starts from its bias and ends in its ReLU or
//! residual sum, attention keeps a query's scores, softmax and weighted
//! values in registers, and a block of sequences goes through the whole
//! network while its activations stay in the core's cache.
//!
//! Activations are feature-major, `[features][position][sequence]` for a
//! block of [`BLOCK`] sequences: a feature row holds one position's
//! sequences after the other's. As in the taped pass, the last encoder
//! layer computes queries, attention, feed-forward and norms for the last
//! position only.

use std::arch::x86_64::*;

use super::simd::{Buffer, LANES, accumulate, exp, linear_out, load, store, transpose_block};
use crate::native::transformer::{
    IN_PROJ, INPUT_ENTRIES, LAYER_ENTRIES, LINEAR1, LINEAR2, NORM1, NORM2, OUT_PROJ,
};
use crate::native::{Params, Shape};

/// Sequences per block, in vectors, and weight rows per register tile:
/// `ROWS * V` accumulators.
const V: usize = 4;
const BLOCK: usize = LANES * V;
const ROWS: usize = 4;

/// The longest sequences attention keeps in registers; longer ones use the
/// taped pass.
const MAX_LENGTH: usize = super::MAX_TRANSFORMER_LENGTH;

/// A weight matrix and its bias packed for [`accumulate`]: tiles of
/// [`ROWS`] rows, `[tiles][depth][ROWS]`, zero beyond the last row.
#[derive(Default)]
struct Packed {
    w: Vec<f32>,
    bias: Vec<f32>,
    rows: usize,
    depth: usize,
}

impl Packed {
    /// Packs rows `rows` of the row-major `w` (`depth` columns) and the
    /// same entries of `bias`.
    fn pack(&mut self, w: &[f32], bias: &[f32], rows: std::ops::Range<usize>, depth: usize) {
        let count = rows.len();
        let tiles = count.div_ceil(ROWS);
        self.w.clear();
        self.w.resize(tiles * depth * ROWS, 0.0);
        for (r, row) in rows.clone().enumerate() {
            for k in 0..depth {
                self.w[((r / ROWS) * depth + k) * ROWS + r % ROWS] = w[row * depth + k];
            }
        }
        self.bias.clear();
        self.bias.extend_from_slice(&bias[rows]);
        self.bias.resize(tiles * ROWS, 0.0);
        (self.rows, self.depth) = (count, depth);
    }
}

/// The packed linear layers of one encoder layer.
#[derive(Default)]
struct LayerPack {
    q: Packed,
    k: Packed,
    v: Packed,
    out: Packed,
    linear1: Packed,
    linear2: Packed,
}

/// What a linear layer does to its sums before storing them.
#[derive(Clone, Copy)]
enum Then {
    Nothing,
    Relu,
    /// Adds a residual of the same shape, with its row stride.
    Add(*const f32, usize),
}

/// Packed weights and one block's activations, reused from call to call.
#[derive(Default)]
pub(super) struct Transformer {
    layers: Vec<LayerPack>,
    /// `[length][d]` sinusoidal encoding.
    encoding: Vec<f32>,
    /// `[length][BLOCK]`: the block's inputs.
    xin: Buffer,
    /// `[d][length * BLOCK]`: the current layer's input, then its output.
    x: Buffer,
    /// `[3d][length * BLOCK]`: queries, keys and values.
    qkv: Buffer,
    /// `[d][queries * BLOCK]`: attended values, then the first residual sum
    /// and its norm.
    attended: Buffer,
    sum1: Buffer,
    /// `[2d][queries * BLOCK]`: the feed-forward hidden layer.
    hidden: Buffer,
    /// `[d][queries * BLOCK]`: the second residual sum.
    sum2: Buffer,
}

impl Transformer {
    fn pack_layers(&mut self, s: &Shape, p: &Params<f32>) {
        let d = s.d;
        self.layers.resize_with(s.layers, LayerPack::default);
        for (layer, pack) in self.layers.iter_mut().enumerate() {
            let base = INPUT_ENTRIES + layer * LAYER_ENTRIES;
            let (w, b) = (p.get(base + IN_PROJ), p.get(base + IN_PROJ + 1));
            pack.q.pack(w, b, 0..d, d);
            pack.k.pack(w, b, d..2 * d, d);
            pack.v.pack(w, b, 2 * d..3 * d, d);
            let entry = |offset| (p.get(base + offset), p.get(base + offset + 1));
            let (w, b) = entry(OUT_PROJ);
            pack.out.pack(w, b, 0..d, d);
            let (w, b) = entry(LINEAR1);
            pack.linear1.pack(w, b, 0..2 * d, d);
            let (w, b) = entry(LINEAR2);
            pack.linear2.pack(w, b, 0..d, 2 * d);
        }
    }

    /// The outputs of the sequences `x` (`[count, length]` row-major) into
    /// `out` (`count` values). `s.length` must be at most [`MAX_LENGTH`].
    pub(super) fn forward(&mut self, s: &Shape, p: &Params<f32>, x: &[f32], out: &mut [f32]) {
        assert!(
            s.length <= MAX_LENGTH,
            "sequences longer than the fused pass takes"
        );
        self.pack_layers(s, p);
        let (d, n) = (s.d, s.length);
        if self.encoding.len() != n * d {
            self.encoding = crate::model::positional_encoding_values(n, d);
        }
        let columns = n * BLOCK;
        self.xin.resize(columns);
        self.x.resize(d * columns);
        self.qkv.resize(3 * d * columns);
        for b in [&mut self.attended, &mut self.sum1, &mut self.sum2] {
            b.resize(d * columns);
        }
        self.hidden.resize(2 * d * columns);
        let count = out.len();
        for start in (0..count).step_by(BLOCK) {
            let width = BLOCK.min(count - start);
            let block = &x[start * n..(start + width) * n];
            transpose_block(block, n, BLOCK, self.xin.as_mut_slice());
            // SAFETY: AVX-512F was checked by the caller; the buffers were
            // sized above for this shape.
            unsafe { self.block(s, p, &mut out[start..start + width]) };
        }
    }

    /// One block through the network; writes the outputs of its first
    /// `out.len()` sequences.
    ///
    /// # Safety
    /// AVX-512F must be available and the buffers sized by `forward`.
    #[target_feature(enable = "avx512f")]
    unsafe fn block(&mut self, s: &Shape, p: &Params<f32>, out: &mut [f32]) {
        let (d, n) = (s.d, s.length);
        let columns = n * BLOCK;

        // Embedding: Linear(1, d) of every position plus the encoding.
        let (w, bias) = (p.get(0), p.get(1));
        let (xin, x) = (self.xin.as_slice(), self.x.as_mut_slice());
        for j in 0..d {
            for t in 0..n {
                let offset = bias[j] + self.encoding[t * d + j];
                let row = &mut x[j * columns + t * BLOCK..j * columns + (t + 1) * BLOCK];
                for (v, &xv) in row.iter_mut().zip(&xin[t * BLOCK..(t + 1) * BLOCK]) {
                    *v = xv * w[j] + offset;
                }
            }
        }

        for layer in 0..s.layers {
            let base = INPUT_ENTRIES + layer * LAYER_ENTRIES;
            let pack = &self.layers[layer];
            let last = layer + 1 == s.layers;
            let queries = if last { 1 } else { n };
            let (width, first) = (queries * BLOCK, (n - queries) * BLOCK);
            let x = self.x.as_mut_ptr();
            let qkv = self.qkv.as_mut_ptr();
            let (att, sum1) = (self.attended.as_mut_ptr(), self.sum1.as_mut_ptr());
            let (hidden, sum2) = (self.hidden.as_mut_ptr(), self.sum2.as_mut_ptr());
            // SAFETY: every operand below is a whole buffer or the columns
            // of the positions computed, inside the sizes set by `forward`.
            unsafe {
                let xq = x.add(first).cast_const();
                linear(
                    &pack.q,
                    xq,
                    columns,
                    width,
                    qkv.add(first),
                    columns,
                    Then::Nothing,
                );
                let (k, v) = (qkv.add(d * columns), qkv.add(2 * d * columns));
                linear(&pack.k, x, columns, columns, k, columns, Then::Nothing);
                linear(&pack.v, x, columns, columns, v, columns, Then::Nothing);
                attention(qkv, n, d, s.heads, queries, att);
                let residual = Then::Add(xq, columns);
                linear(&pack.out, att, width, width, sum1, width, residual);
                let (g, b) = (p.get(base + NORM1), p.get(base + NORM1 + 1));
                layer_norm(sum1, width, sum1, width, width, g, b);
                linear(&pack.linear1, sum1, width, width, hidden, width, Then::Relu);
                let residual = Then::Add(sum1, width);
                linear(&pack.linear2, hidden, width, width, sum2, width, residual);
                let (g, b) = (p.get(base + NORM2), p.get(base + NORM2 + 1));
                layer_norm(sum2, width, x, width, width, g, b);
            }
        }

        // Final LayerNorm and Linear(d, 1) of the last position, now
        // `[d][BLOCK]` in `x`.
        let base = INPUT_ENTRIES + s.layers * LAYER_ENTRIES;
        let (g, b) = (p.get(base), p.get(base + 1));
        let x = self.x.as_mut_ptr();
        // SAFETY: `x` holds d rows of BLOCK values.
        unsafe { layer_norm(x, BLOCK, x, BLOCK, BLOCK, g, b) };
        let (w, bias) = (p.get(base + 2), p.get(base + 3)[0]);
        linear_out(w, bias, self.x.as_slice(), BLOCK, out);
    }
}

/// `out[r][c] = then(bias[r] + sum_k w[r][k] x[k][c])` for the packed rows
/// and `c < cols`, a multiple of [`BLOCK`].
///
/// # Safety
/// `x` holds `p.depth` rows and `out` (and a residual) `p.rows` rows of at
/// least `cols` aligned values at the given strides (multiples of
/// [`LANES`]).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn linear(
    p: &Packed,
    x: *const f32,
    ldx: usize,
    cols: usize,
    out: *mut f32,
    ldo: usize,
    then: Then,
) {
    for tile in 0..p.rows.div_ceil(ROWS) {
        let rows = ROWS.min(p.rows - tile * ROWS);
        // SAFETY: tile `tile` of the packed weights.
        let w = unsafe { p.w.as_ptr().add(tile * p.depth * ROWS) };
        for c0 in (0..cols).step_by(BLOCK) {
            let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
            for (r, row) in acc.iter_mut().enumerate() {
                *row = [_mm512_set1_ps(p.bias[tile * ROWS + r]); V];
            }
            // SAFETY: columns c0.. of the depth rows of x.
            unsafe { accumulate::<ROWS, V>(&mut acc, w, ROWS, x.add(c0), ldx, p.depth) };
            for (r, row) in acc.iter().enumerate().take(rows) {
                let at = |ld: usize, v: usize| (tile * ROWS + r) * ld + c0 + v * LANES;
                for (v, &y) in row.iter().enumerate() {
                    // SAFETY: row tile ROWS + r < p.rows, columns < cols.
                    unsafe {
                        let y = match then {
                            Then::Nothing => y,
                            Then::Relu => _mm512_max_ps(y, _mm512_setzero_ps()),
                            Then::Add(res, ld) => _mm512_add_ps(y, load(res.add(at(ld, v)))),
                        };
                        store(out.add(at(ldo, v)), y);
                    }
                }
            }
        }
    }
}

/// Scaled dot-product attention of the last `queries` positions over all
/// `n`, head by head: `out[e][qi BLOCK + s]` from the queries, keys and
/// values in `qkv` (`[3d][n BLOCK]`).
///
/// # Safety
/// As [`linear`]: `qkv` holds `3d` rows of `n BLOCK` values, `out` `d` rows
/// of `queries BLOCK`, and `n <= MAX_LENGTH`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn attention(
    qkv: *const f32,
    n: usize,
    d: usize,
    heads: usize,
    queries: usize,
    out: *mut f32,
) {
    let (columns, width, hd) = (n * BLOCK, queries * BLOCK, d / heads);
    let scale = _mm512_set1_ps(1.0 / (hd as f32).sqrt());
    let at = |row: usize, t: usize, v: usize| row * columns + t * BLOCK + v * LANES;
    for h in 0..heads {
        for qi in 0..queries {
            let i = n - queries + qi;
            let mut scores = [[_mm512_setzero_ps(); V]; MAX_LENGTH];
            for e in h * hd..(h + 1) * hd {
                let mut q = [_mm512_setzero_ps(); V];
                for (v, q) in q.iter_mut().enumerate() {
                    // SAFETY: query row e at position i.
                    *q = unsafe { load(qkv.add(at(e, i, v))) };
                }
                for (j, sj) in scores.iter_mut().enumerate().take(n) {
                    for (v, s) in sj.iter_mut().enumerate() {
                        // SAFETY: key row d + e at position j < n.
                        let k = unsafe { load(qkv.add(at(d + e, j, v))) };
                        *s = _mm512_fmadd_ps(q[v], k, *s);
                    }
                }
            }

            // Softmax across the positions, shifted by the largest score.
            let mut max = [_mm512_set1_ps(f32::NEG_INFINITY); V];
            for sj in scores.iter_mut().take(n) {
                for (m, s) in max.iter_mut().zip(sj.iter_mut()) {
                    *s = _mm512_mul_ps(*s, scale);
                    *m = _mm512_max_ps(*m, *s);
                }
            }
            let mut total = [_mm512_setzero_ps(); V];
            for sj in scores.iter_mut().take(n) {
                let mut shifted = *sj;
                for (x, &m) in shifted.iter_mut().zip(&max) {
                    *x = _mm512_sub_ps(*x, m);
                }
                *sj = exp(shifted);
                for (t, &e) in total.iter_mut().zip(sj.iter()) {
                    *t = _mm512_add_ps(*t, e);
                }
            }
            let inverse = total.map(|t| _mm512_div_ps(_mm512_set1_ps(1.0), t));

            for e in h * hd..(h + 1) * hd {
                let mut acc = [_mm512_setzero_ps(); V];
                for (j, sj) in scores.iter().enumerate().take(n) {
                    for (v, a) in acc.iter_mut().enumerate() {
                        // SAFETY: value row 2d + e at position j < n.
                        let value = unsafe { load(qkv.add(at(2 * d + e, j, v))) };
                        *a = _mm512_fmadd_ps(sj[v], value, *a);
                    }
                }
                for (v, &a) in acc.iter().enumerate() {
                    // SAFETY: row e, query qi of `out`.
                    unsafe {
                        store(
                            out.add(e * width + qi * BLOCK + v * LANES),
                            _mm512_mul_ps(a, inverse[v]),
                        )
                    };
                }
            }
        }
    }
}

/// LayerNorm over the `d = scale.len()` rows of each column (biased
/// variance, epsilon 1e-5, as PyTorch), from `x` into `y` (which may be
/// `x`), for `cols` columns, a multiple of [`BLOCK`].
///
/// # Safety
/// `x` and `y` hold `d` rows of `cols` aligned values at their strides.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn layer_norm(
    x: *const f32,
    ldx: usize,
    y: *mut f32,
    ldy: usize,
    cols: usize,
    scale: &[f32],
    shift: &[f32],
) {
    let d = scale.len();
    let inv_d = _mm512_set1_ps(1.0 / d as f32);
    for c0 in (0..cols).step_by(BLOCK) {
        // SAFETY (all loads and stores): row r < d, columns c0.. < cols.
        let row = |r: usize, v: usize| unsafe { load(x.add(r * ldx + c0 + v * LANES)) };
        let mut mean = [_mm512_setzero_ps(); V];
        for r in 0..d {
            for (v, m) in mean.iter_mut().enumerate() {
                *m = _mm512_add_ps(*m, row(r, v));
            }
        }
        let mean = mean.map(|m| _mm512_mul_ps(m, inv_d));
        let mut var = [_mm512_setzero_ps(); V];
        for r in 0..d {
            for (v, s) in var.iter_mut().enumerate() {
                let dev = _mm512_sub_ps(row(r, v), mean[v]);
                *s = _mm512_fmadd_ps(dev, dev, *s);
            }
        }
        let rstd = var.map(|s| {
            let var = _mm512_fmadd_ps(s, inv_d, _mm512_set1_ps(1e-5));
            _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_sqrt_ps(var))
        });
        for r in 0..d {
            let (g, b) = (_mm512_set1_ps(scale[r]), _mm512_set1_ps(shift[r]));
            for v in 0..V {
                let h = _mm512_mul_ps(_mm512_sub_ps(row(r, v), mean[v]), rstd[v]);
                unsafe { store(y.add(r * ldy + c0 + v * LANES), _mm512_fmadd_ps(h, g, b)) };
            }
        }
    }
}
