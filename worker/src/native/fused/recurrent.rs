//! Fused evaluation of stacked LSTM and GRU layers: each step's gate
//! products stay in registers and go straight through the cell's
//! nonlinearities, so no gate ever reaches memory.
//!
//! A block of `LANES * V` sequences runs through the whole network before
//! the next block starts; a layer's outputs are `[length][d][columns]`,
//! the next layer's inputs. For unit `j` one register tile holds the
//! pre-activations of its gates (LSTM: f i g o; GRU: r z n from the input
//! side and r z n from the hidden side, which the reset gate keeps apart)
//! for every sequence of the block; the weights of those rows are packed
//! `[j][k][gate]` so the tile reads them in order. The LSTM's forget gate
//! comes first so that the first step, whose cell starts at zero, can
//! leave it out.

use std::arch::x86_64::*;

use super::simd::{
    Buffer, LANES, accumulate, linear_out, load, sigmoid, store, tanh, transpose_block,
};
use crate::native::recurrent::LAYER_ENTRIES;
use crate::native::{Params, Shape};

/// Sequences per block, in vectors. The LSTM's `4 * V` accumulators and
/// `V` input vectors just fit the 32 vector registers; the GRU's `6 * V`
/// spill a few, yet measured faster than `V = 4` (3.3 against 3.8 ms for
/// the 11-layer d = 32 GRU over 500 sequences): more independent vectors
/// in the nonlinearities keep more units busy. `V = 8` was slower for both.
const V: usize = 6;
const BLOCK: usize = LANES * V;

/// One layer's weights, packed for [`accumulate`]: for unit `j`, the rows
/// of its gates side by side for each input feature.
#[derive(Default)]
struct LayerPack {
    /// `[d][inputs][gates]`.
    input: Vec<f32>,
    /// `[d][d][gates]`.
    hidden: Vec<f32>,
    /// LSTM: `[d][4]` of `b_ih + b_hh` (f i g o); GRU: `[d][6]`, `b_ih`
    /// (r z n) then `b_hh` (r z n).
    bias: Vec<f32>,
    inputs: usize,
}

/// Packed weights and the activations of one block, reused from call to
/// call.
#[derive(Default)]
pub(super) struct Recurrent {
    layers: Vec<LayerPack>,
    /// The block's inputs, `[length][BLOCK]`.
    x: Buffer,
    /// Outputs of the layer below and of the current one,
    /// `[length][d][BLOCK]`.
    below: Buffer,
    above: Buffer,
    /// LSTM: the cells of the current layer, `[d][BLOCK]`.
    cells: Buffer,
}

/// Packs the `gates * d` rows of a row-major `[gates * d][inputs]` matrix as
/// `[d][inputs][gates]`, gate `g` of the packing from block `order[g]` of
/// the rows.
fn pack(w: &[f32], order: &[usize], d: usize, out: &mut Vec<f32>) {
    let gates = order.len();
    let inputs = w.len() / (gates * d);
    out.clear();
    out.resize(w.len(), 0.0);
    for (g, &block) in order.iter().enumerate() {
        for j in 0..d {
            let row = &w[(block * d + j) * inputs..(block * d + j + 1) * inputs];
            for (k, &v) in row.iter().enumerate() {
                out[(j * inputs + k) * gates + g] = v;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    /// The order of the packed gates, as blocks of PyTorch's rows (LSTM
    /// i f g o, GRU r z n).
    fn order(self) -> &'static [usize] {
        match self {
            Cell::Lstm => &[1, 0, 2, 3],
            Cell::Gru => &[0, 1, 2],
        }
    }
}

impl Recurrent {
    fn pack_layers(&mut self, cell: Cell, s: &Shape, p: &Params<f32>) {
        let (d, order) = (s.d, cell.order());
        self.layers.resize_with(s.layers, LayerPack::default);
        for (layer, pack_) in self.layers.iter_mut().enumerate() {
            let [w_ih, w_hh, b_ih, b_hh] = p.four(LAYER_ENTRIES * layer);
            pack_.inputs = w_ih.len() / (order.len() * d);
            pack(w_ih, order, d, &mut pack_.input);
            pack(w_hh, order, d, &mut pack_.hidden);
            pack_.bias.clear();
            for j in 0..d {
                match cell {
                    Cell::Lstm => pack_
                        .bias
                        .extend(order.iter().map(|g| b_ih[g * d + j] + b_hh[g * d + j])),
                    Cell::Gru => {
                        pack_.bias.extend(order.iter().map(|g| b_ih[g * d + j]));
                        pack_.bias.extend(order.iter().map(|g| b_hh[g * d + j]));
                    }
                }
            }
        }
    }

    /// The outputs of the sequences `x` (`[count, length]` row-major) into
    /// `out` (`count` values).
    pub(super) fn forward(
        &mut self,
        cell: Cell,
        s: &Shape,
        p: &Params<f32>,
        x: &[f32],
        out: &mut [f32],
    ) {
        self.pack_layers(cell, s, p);
        let (d, n) = (s.d, s.length);
        self.x.resize(n * BLOCK);
        self.below.resize(n * d * BLOCK);
        self.above.resize(n * d * BLOCK);
        self.cells.resize(d * BLOCK);
        let (w_out, b_out) = (p.get(s.out_weight()), p.get(s.out_weight() + 1)[0]);
        let count = out.len();
        for start in (0..count).step_by(BLOCK) {
            let width = BLOCK.min(count - start);
            let block = &x[start * n..(start + width) * n];
            transpose_block(block, n, BLOCK, self.x.as_mut_slice());
            // SAFETY: AVX-512F was checked by the caller; the buffers were
            // sized above for this shape.
            unsafe {
                match width.div_ceil(LANES) {
                    1 => self.block::<1>(cell, s),
                    2 => self.block::<2>(cell, s),
                    3 => self.block::<3>(cell, s),
                    4 => self.block::<4>(cell, s),
                    5 => self.block::<5>(cell, s),
                    _ => self.block::<V>(cell, s),
                }
            }
            // Linear(d, 1) on the top layer's last step.
            let last = &self.below.as_slice()[(n - 1) * d * BLOCK..n * d * BLOCK];
            linear_out(w_out, b_out, last, BLOCK, &mut out[start..start + width]);
        }
    }

    /// Runs the block in `x` through every layer, `W` vectors of sequences;
    /// the top layer's outputs are left in `below`.
    ///
    /// # Safety
    /// AVX-512F must be available and the buffers sized by `forward`.
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const W: usize>(&mut self, cell: Cell, s: &Shape) {
        let (d, n) = (s.d, s.length);
        let step = d * BLOCK;
        for layer in 0..s.layers {
            let pack = &self.layers[layer];
            let input = if layer == 0 {
                self.x.as_ptr()
            } else {
                self.below.as_ptr()
            };
            let out = self.above.as_mut_ptr();
            let cells = self.cells.as_mut_ptr();
            for t in 0..n {
                // SAFETY: step t of the inputs (`inputs` rows) and of the
                // outputs lie inside the buffers sized for `length` steps.
                unsafe {
                    let x = input.add(t * pack.inputs * BLOCK);
                    let h_prev = (t > 0).then(|| out.add((t - 1) * step).cast_const());
                    let h = out.add(t * step);
                    match cell {
                        Cell::Lstm => lstm_step::<W>(pack, d, x, h_prev, cells, h),
                        Cell::Gru => gru_step::<W>(pack, d, x, h_prev, h),
                    }
                }
            }
            std::mem::swap(&mut self.below, &mut self.above);
        }
    }
}

/// One LSTM step of a block: `h`, and the cells in place (`h_prev` is
/// `None` at the first step, where state and cells are zero).
///
/// # Safety
/// `x` holds `pack.inputs` rows, `h_prev`, `cells` and `h` `d` rows, each
/// of [`BLOCK`] aligned values.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn lstm_step<const W: usize>(
    pack: &LayerPack,
    d: usize,
    x: *const f32,
    h_prev: Option<*const f32>,
    cells: *mut f32,
    h: *mut f32,
) {
    let k = pack.inputs;
    for j in 0..d {
        let at = |v: usize| j * BLOCK + v * LANES;
        let bias = |g: usize| [_mm512_set1_ps(pack.bias[4 * j + g]); W];
        let (wx, wh) = (
            pack.input[4 * j * k..].as_ptr(),
            pack.hidden[4 * j * d..].as_ptr(),
        );
        let mut c = [_mm512_setzero_ps(); W];
        let (i, g, o) = match h_prev {
            Some(hp) => {
                let mut acc = [bias(0), bias(1), bias(2), bias(3)];
                // SAFETY: unit j's packed rows and the block's rows.
                unsafe {
                    accumulate::<4, W>(&mut acc, wx, 4, x, BLOCK, k);
                    accumulate::<4, W>(&mut acc, wh, 4, hp, BLOCK, d);
                }
                let f = sigmoid(acc[0]);
                for (v, c) in c.iter_mut().enumerate() {
                    // SAFETY: row j, vector v of the cells.
                    *c = _mm512_mul_ps(f[v], unsafe { load(cells.add(at(v))) });
                }
                (acc[1], acc[2], acc[3])
            }
            None => {
                // The cell starts at zero: no forget gate, no hidden side.
                let mut acc = [bias(1), bias(2), bias(3)];
                // SAFETY: gates 1..4 of unit j's packed rows.
                unsafe { accumulate::<3, W>(&mut acc, wx.add(1), 4, x, BLOCK, k) };
                (acc[0], acc[1], acc[2])
            }
        };
        let (i, g, o) = (sigmoid(i), tanh(g), sigmoid(o));
        for v in 0..W {
            c[v] = _mm512_fmadd_ps(i[v], g[v], c[v]);
        }
        let tc = tanh(c);
        for v in 0..W {
            // SAFETY: row j, vector v of the cells and of h.
            unsafe {
                store(cells.add(at(v)), c[v]);
                store(h.add(at(v)), _mm512_mul_ps(o[v], tc[v]));
            }
        }
    }
}

/// One GRU step of a block (`h_prev` is `None` at the first step, where the
/// state is zero): `h = (1 - z) n + z h_prev`, `n = tanh(x_n + r (W_hn h +
/// b_hn))`.
///
/// # Safety
/// As [`lstm_step`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gru_step<const W: usize>(
    pack: &LayerPack,
    d: usize,
    x: *const f32,
    h_prev: Option<*const f32>,
    h: *mut f32,
) {
    let k = pack.inputs;
    for j in 0..d {
        let mut ax = [[_mm512_setzero_ps(); W]; 3];
        let mut ah = [[_mm512_setzero_ps(); W]; 3];
        for g in 0..3 {
            ax[g] = [_mm512_set1_ps(pack.bias[6 * j + g]); W];
            ah[g] = [_mm512_set1_ps(pack.bias[6 * j + 3 + g]); W];
        }
        // SAFETY: unit j's packed rows and the block's rows, as promised.
        unsafe {
            accumulate::<3, W>(&mut ax, pack.input[3 * j * k..].as_ptr(), 3, x, BLOCK, k);
            if let Some(hp) = h_prev {
                accumulate::<3, W>(&mut ah, pack.hidden[3 * j * d..].as_ptr(), 3, hp, BLOCK, d);
            }
        }
        let mut hp = [_mm512_setzero_ps(); W];
        let mut rz = [[_mm512_setzero_ps(); W]; 2];
        for v in 0..W {
            for g in 0..2 {
                rz[g][v] = _mm512_add_ps(ax[g][v], ah[g][v]);
            }
            if let Some(p) = h_prev {
                // SAFETY: row j, vector v of h_prev.
                hp[v] = unsafe { load(p.add(j * BLOCK + v * LANES)) };
            }
        }
        let (r, z) = (sigmoid(rz[0]), sigmoid(rz[1]));
        let mut pre = ax[2];
        for v in 0..W {
            pre[v] = _mm512_fmadd_ps(r[v], ah[2][v], ax[2][v]);
        }
        let nv = tanh(pre);
        for v in 0..W {
            let hv = _mm512_fmadd_ps(z[v], _mm512_sub_ps(hp[v], nv[v]), nv[v]);
            // SAFETY: row j, vector v of h.
            unsafe { store(h.add(j * BLOCK + v * LANES), hv) };
        }
    }
}
