//! The arithmetic under the native models: a float type, branch-free
//! transcendental functions that vectorise, matrix products and the fused
//! element-wise loops of the layers.
//!
//! Every loop here is compiled several times, for AVX-512, for AVX2 with FMA
//! and for the baseline, and the best version the CPU supports is picked at
//! run time ([`multiversion`]): the binary stays portable and still uses the
//! widest vectors of the machine it runs on.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// Compiles each function once per instruction set and dispatches at run time.
macro_rules! simd {
    ($($item:item)*) => {
        $(
            #[multiversion::multiversion(targets(
                "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
                "x86_64+avx2+fma",
            ))]
            $item
        )*
    };
}

/// f32 or f64: the precision a native model computes in.
pub trait Real:
    Copy
    + Default
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    /// `e^x` to within a few ulps, without branches so that loops over it
    /// vectorise; arguments are clamped to where the result is finite and
    /// normal.
    fn exp(self) -> Self;
    /// The values as f32 when `Self` is f32: the fused passes are f32 only.
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;

    #[inline(always)]
    fn from_f64(v: f64) -> f32 {
        v as f32
    }

    #[inline(always)]
    fn from_f32(v: f32) -> f32 {
        v
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }

    fn as_f32(values: &[f32]) -> Option<&[f32]> {
        Some(values)
    }

    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }

    /// Cephes' `expf`: `e^x = 2^k e^r` with `|r| <= ln 2 / 2` and a degree-6
    /// polynomial for `e^r`.
    #[inline(always)]
    fn exp(self) -> f32 {
        // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa
        // bits, which then give k without a float-to-int conversion.
        const MAGIC: f32 = 12_582_912.0;
        let x = self.clamp(-87.0, 88.0);
        let t = x * std::f32::consts::LOG2_E + MAGIC;
        let k = t - MAGIC;
        let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
        let mut p = 1.987_569_1e-4;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 0.166_666_65;
        p = p * r + 0.5;
        let y = p * r * r + r + 1.0;
        let k_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
        y * f32::from_bits(k_bits.wrapping_add(127) << 23)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;

    #[inline(always)]
    fn from_f64(v: f64) -> f64 {
        v
    }

    #[inline(always)]
    fn from_f32(v: f32) -> f64 {
        f64::from(v)
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    fn as_f32(_: &[f64]) -> Option<&[f32]> {
        None
    }

    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }

    /// `e^x = 2^k e^r` with `|r| <= ln 2 / 2`, `ln 2` split in two so that
    /// `r` is exact, and the Taylor series of `e^r` to degree 13 (truncation
    /// below 1e-17 relative).
    #[inline(always)]
    fn exp(self) -> f64 {
        const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
        const LN2_HI: f64 = 6.931_471_803_691_238e-1;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        let x = self.clamp(-708.0, 709.0);
        let t = x * std::f64::consts::LOG2_E + MAGIC;
        let k = t - MAGIC;
        let r = x - k * LN2_HI - k * LN2_LO;
        let mut p = 1.0 / 6_227_020_800.0;
        p = p * r + 1.0 / 479_001_600.0;
        p = p * r + 1.0 / 39_916_800.0;
        p = p * r + 1.0 / 3_628_800.0;
        p = p * r + 1.0 / 362_880.0;
        p = p * r + 1.0 / 40_320.0;
        p = p * r + 1.0 / 5_040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        let y = p * r + 1.0;
        let k_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
        y * f64::from_bits(k_bits.wrapping_add(1023) << 52)
    }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

/// `tanh x = 1 - 2 / (1 + e^2x)`: exact limits at both ends, an absolute
/// error of about one ulp of 1 near 0.
#[inline(always)]
pub fn tanh<T: Real>(x: T) -> T {
    let two = T::ONE + T::ONE;
    T::ONE - two / (T::ONE + (x * two).exp())
}

/// A row-major matrix operand of [`gemm`]: element `(i, j)` of the logical
/// matrix is `data[i * ld + j]`, or `data[j * ld + i]` when `transposed`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub ld: usize,
    pub transposed: bool,
}

impl<'a, T> Mat<'a, T> {
    /// The matrix stored with `ld` elements per row.
    pub fn new(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            ld,
            transposed: false,
        }
    }

    /// The transpose of the matrix stored with `ld` elements per row.
    pub fn t(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            ld,
            transposed: true,
        }
    }

    /// Strides (row, column) of the logical matrix, after checking that a
    /// logical `rows x cols` matrix lies inside `data`.
    fn strides(&self, rows: usize, cols: usize) -> (isize, isize) {
        let (stored_rows, stored_cols) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(
            stored_cols <= self.ld && (stored_rows - 1) * self.ld + stored_cols <= self.data.len(),
            "matrix operand out of bounds"
        );
        if self.transposed {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }
}

/// `c = a b` (or `c += a b` with `accumulate`) for a logical `m x k` matrix
/// `a`, `k x n` matrix `b` and row-major `c` with `ldc` elements per row.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= ldc && (m - 1) * ldc + n <= c.len(),
        "product out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(T::ZERO);
            }
        }
        return;
    }
    let (a_rs, a_cs) = a.strides(m, k);
    let (b_rs, b_cs) = b.strides(k, n);
    // SAFETY: the three operands were checked to lie inside their slices
    // with these strides, and `c` is borrowed mutably, so it aliases neither.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

/// Partial sums kept per lane; a fixed order, so results do not change from
/// run to run, and one the compiler can keep in vector registers.
const LANES: usize = 16;

/// `sum_k f(a[k], b[k])`, summed in [`LANES`] interleaved partial sums.
#[inline(always)]
fn lane_sum<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::ZERO; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .fold(T::ZERO, |s, (&x, &y)| s + f(x, y));
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] += f(ca[l], cb[l]);
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

simd! {
    /// `out[r][j] = bias[j]` for every row of a row-major buffer of width
    /// `bias.len()`.
    pub fn fill_rows<T: Real>(out: &mut [T], bias: &[T]) {
        for row in out.chunks_exact_mut(bias.len()) {
            row.copy_from_slice(bias);
        }
    }

    /// `sums[j] += sum_r m[r][j]` over the rows of a row-major buffer.
    pub fn add_column_sums<T: Real>(sums: &mut [T], m: &[T]) {
        for row in m.chunks_exact(sums.len()) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
    }

    /// `y += x`.
    pub fn add_assign<T: Real>(y: &mut [T], x: &[T]) {
        for (a, &b) in y.iter_mut().zip(x) {
            *a += b;
        }
    }

    /// One LSTM step on `d` units of `batch` sequences each. `gates` holds
    /// the four blocks i, f, g, o (`[d, batch]` each) of the projections
    /// without `bias` (`[4d]`), and comes out as the activated gates; the
    /// cell `c = f c_prev + i g`, `tc = tanh c` and `h = o tanh c` are
    /// written. Blocks, not rows, so that every loop runs over long
    /// contiguous spans of full vectors.
    pub fn lstm_cell<T: Real>(
        gates: &mut [T],
        bias: &[T],
        c_prev: &[T],
        c: &mut [T],
        tc: &mut [T],
        h: &mut [T],
    ) {
        let n = c.len();
        let d = bias.len() / 4;
        let batch = n / d;
        let (i, rest) = gates.split_at_mut(n);
        let (f, rest) = rest.split_at_mut(n);
        let (g, o) = rest.split_at_mut(n);
        for j in 0..d {
            let span = j * batch..(j + 1) * batch;
            let (bi, bf, bg, bo) = (bias[j], bias[d + j], bias[2 * d + j], bias[3 * d + j]);
            let (i, f, g, o) = (&mut i[span.clone()], &mut f[span.clone()], &mut g[span.clone()], &mut o[span.clone()]);
            let (cp, c, tc, h) = (&c_prev[span.clone()], &mut c[span.clone()], &mut tc[span.clone()], &mut h[span]);
            for k in 0..batch {
                let iv = sigmoid(i[k] + bi);
                let fv = sigmoid(f[k] + bf);
                let gv = tanh(g[k] + bg);
                let ov = sigmoid(o[k] + bo);
                let cv = fv * cp[k] + iv * gv;
                let t = tanh(cv);
                (i[k], f[k], g[k], o[k]) = (iv, fv, gv, ov);
                (c[k], tc[k], h[k]) = (cv, t, ov * t);
            }
        }
    }

    /// The LSTM step backwards. From the activated `gates`, `c_prev`, `tc`
    /// and the incoming `dh`, with `dc` holding the gradient of the cell
    /// from the step after (zero at the last step), writes the gradients of
    /// the four pre-activation blocks into `da` and leaves in `dc` the
    /// gradient of `c_prev`.
    pub fn lstm_cell_backward<T: Real>(
        gates: &[T],
        c_prev: &[T],
        tc: &[T],
        dh: &[T],
        dc: &mut [T],
        da: &mut [T],
    ) {
        let n = dc.len();
        let (i, rest) = gates.split_at(n);
        let (f, rest) = rest.split_at(n);
        let (g, o) = rest.split_at(n);
        let (dai, rest) = da.split_at_mut(n);
        let (daf, rest) = rest.split_at_mut(n);
        let (dag, dao) = rest.split_at_mut(n);
        let (o, c_prev, tc, dh, dao) = (&o[..n], &c_prev[..n], &tc[..n], &dh[..n], &mut dao[..n]);
        for k in 0..n {
            let (iv, fv, gv, ov, t) = (i[k], f[k], g[k], o[k], tc[k]);
            let dcv = dc[k] + dh[k] * ov * (T::ONE - t * t);
            dai[k] = dcv * gv * iv * (T::ONE - iv);
            daf[k] = dcv * c_prev[k] * fv * (T::ONE - fv);
            dag[k] = dcv * iv * (T::ONE - gv * gv);
            dao[k] = dh[k] * t * ov * (T::ONE - ov);
            dc[k] = dcv * fv;
        }
    }

    /// One GRU step on `d` units of `batch` sequences each. `xw` (blocks
    /// r, z, n, `[d, batch]` each) holds the input projection without its
    /// bias `b_ih` and comes out as the activated gates; `hw` holds the
    /// hidden projection without its bias `b_hh`; the n block of the hidden
    /// projection with its bias is kept in `hn` for the backward pass;
    /// `h = (1 - z) n + z h_prev`.
    pub fn gru_cell<T: Real>(
        xw: &mut [T],
        hw: &[T],
        b_ih: &[T],
        b_hh: &[T],
        h_prev: &[T],
        hn: &mut [T],
        h: &mut [T],
    ) {
        let n = h.len();
        let d = b_ih.len() / 3;
        let batch = n / d;
        let (xr, rest) = xw.split_at_mut(n);
        let (xz, xn) = rest.split_at_mut(n);
        let (wr, rest) = hw.split_at(n);
        let (wz, wn) = rest.split_at(n);
        for j in 0..d {
            let span = j * batch..(j + 1) * batch;
            let br = b_ih[j] + b_hh[j];
            let bz = b_ih[d + j] + b_hh[d + j];
            let (bxn, bhn) = (b_ih[2 * d + j], b_hh[2 * d + j]);
            let (xr, xz, xn) = (&mut xr[span.clone()], &mut xz[span.clone()], &mut xn[span.clone()]);
            let (wr, wz, wn) = (&wr[span.clone()], &wz[span.clone()], &wn[span.clone()]);
            let (hp, hn, h) = (&h_prev[span.clone()], &mut hn[span.clone()], &mut h[span]);
            for k in 0..batch {
                let rv = sigmoid(xr[k] + wr[k] + br);
                let zv = sigmoid(xz[k] + wz[k] + bz);
                let hnv = wn[k] + bhn;
                let nv = tanh(xn[k] + bxn + rv * hnv);
                (xr[k], xz[k], xn[k]) = (rv, zv, nv);
                hn[k] = hnv;
                h[k] = nv + zv * (hp[k] - nv);
            }
        }
    }

    /// The GRU step backwards. From the activated gates, `hn`, `h_prev` and
    /// the incoming `dh`, writes the gradients of the input-side
    /// pre-activations into `dx` and of the hidden-side ones into `dhw`
    /// (blocks r, z, n), and into `dh_prev` the part of the gradient of
    /// `h_prev` that does not pass through the hidden product.
    pub fn gru_cell_backward<T: Real>(
        gates: &[T],
        hn: &[T],
        h_prev: &[T],
        dh: &[T],
        dx: &mut [T],
        dhw: &mut [T],
        dh_prev: &mut [T],
    ) {
        let n = dh.len();
        let (gr, rest) = gates.split_at(n);
        let (gz, gn) = rest.split_at(n);
        let (dxr, rest) = dx.split_at_mut(n);
        let (dxz, dxn) = rest.split_at_mut(n);
        let (dwr, rest) = dhw.split_at_mut(n);
        let (dwz, dwn) = rest.split_at_mut(n);
        let (gn, hn, h_prev, dh_prev) = (&gn[..n], &hn[..n], &h_prev[..n], &mut dh_prev[..n]);
        let (dxn, dwn) = (&mut dxn[..n], &mut dwn[..n]);
        for k in 0..n {
            let (rv, zv, nv) = (gr[k], gz[k], gn[k]);
            let dn = dh[k] * (T::ONE - zv) * (T::ONE - nv * nv);
            let dz = dh[k] * (h_prev[k] - nv) * zv * (T::ONE - zv);
            let dr = dn * hn[k] * rv * (T::ONE - rv);
            (dxr[k], dxz[k], dxn[k]) = (dr, dz, dn);
            (dwr[k], dwz[k], dwn[k]) = (dr, dz, dn * rv);
            dh_prev[k] = dh[k] * zv;
        }
    }

    /// `m[j][..] = values[j]`: each row of a row-major buffer filled with
    /// its own value.
    pub fn fill_by_row<T: Real>(m: &mut [T], values: &[T]) {
        let width = m.len() / values.len();
        for (row, &v) in m.chunks_exact_mut(width).zip(values) {
            row.fill(v);
        }
    }

    /// `m[j][..] += scale[j] x`: rank one, the product of a column and a row.
    pub fn add_outer<T: Real>(m: &mut [T], scale: &[T], x: &[T]) {
        for (row, &s) in m.chunks_exact_mut(x.len()).zip(scale) {
            for (v, &xv) in row.iter_mut().zip(x) {
                *v += s * xv;
            }
        }
    }

    /// `sums[j] += sum_k m[j][k]` over the rows of a row-major buffer.
    pub fn add_row_sums<T: Real>(sums: &mut [T], m: &[T]) {
        let width = m.len() / sums.len();
        for (s, row) in sums.iter_mut().zip(m.chunks_exact(width)) {
            *s += lane_sum(row, row, |v, _| v);
        }
    }

    /// `dots[j] += m[j] . x` for the rows of a row-major buffer.
    pub fn add_row_dots<T: Real>(dots: &mut [T], m: &[T], x: &[T]) {
        for (s, row) in dots.iter_mut().zip(m.chunks_exact(x.len())) {
            *s += lane_sum(row, x, |v, w| v * w);
        }
    }

    /// LayerNorm over the features of each column of a feature-major
    /// `[d, columns]` buffer (biased variance, epsilon 1e-5, as PyTorch):
    /// `y = xhat * scale + shift`, keeping `xhat` and each column's
    /// reciprocal standard deviation for the backward pass. `mean` is
    /// scratch of one value per column.
    pub fn layer_norm<T: Real>(
        x: &[T],
        scale: &[T],
        shift: &[T],
        xhat: &mut [T],
        rstd: &mut [T],
        mean: &mut [T],
        y: &mut [T],
    ) {
        let cols = rstd.len();
        let inv_d = T::ONE / T::from_f64(scale.len() as f64);
        mean.fill(T::ZERO);
        for row in x.chunks_exact(cols) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m *= inv_d);
        rstd.fill(T::ZERO);
        for row in x.chunks_exact(cols) {
            for ((r, &m), &v) in rstd.iter_mut().zip(&*mean).zip(row) {
                *r += (v - m) * (v - m);
            }
        }
        let eps = T::from_f64(1e-5);
        rstd.iter_mut().for_each(|r| *r = T::ONE / (*r * inv_d + eps).sqrt());
        for (j, ((xr, hr), yr)) in x
            .chunks_exact(cols)
            .zip(xhat.chunks_exact_mut(cols))
            .zip(y.chunks_exact_mut(cols))
            .enumerate()
        {
            let (g, b) = (scale[j], shift[j]);
            for c in 0..cols {
                let h = (xr[c] - mean[c]) * rstd[c];
                hr[c] = h;
                yr[c] = h * g + b;
            }
        }
    }

    /// [`layer_norm`] backwards: adds the gradients of scale and shift, and
    /// turns `dy` into the gradient of the input in place. `mean_g` and
    /// `mean_gh` are scratch of one value per column.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_backward<T: Real>(
        dy: &mut [T],
        xhat: &[T],
        rstd: &[T],
        scale: &[T],
        d_scale: &mut [T],
        d_shift: &mut [T],
        mean_g: &mut [T],
        mean_gh: &mut [T],
    ) {
        let cols = rstd.len();
        let inv_d = T::ONE / T::from_f64(scale.len() as f64);
        mean_g.fill(T::ZERO);
        mean_gh.fill(T::ZERO);
        for (j, (dr, hr)) in dy.chunks_exact(cols).zip(xhat.chunks_exact(cols)).enumerate() {
            d_scale[j] += lane_sum(dr, hr, |a, b| a * b);
            d_shift[j] += lane_sum(dr, dr, |a, _| a);
            let g = scale[j];
            for c in 0..cols {
                mean_g[c] += dr[c] * g;
                mean_gh[c] += dr[c] * g * hr[c];
            }
        }
        for (j, (dr, hr)) in dy.chunks_exact_mut(cols).zip(xhat.chunks_exact(cols)).enumerate() {
            let g = scale[j];
            for c in 0..cols {
                dr[c] = rstd[c] * (dr[c] * g - mean_g[c] * inv_d - hr[c] * mean_gh[c] * inv_d);
            }
        }
    }

    /// `acc[k] += a[k] * b[k]`.
    pub fn add_product<T: Real>(acc: &mut [T], a: &[T], b: &[T]) {
        for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
            *s += x * y;
        }
    }

    /// Softmax across `rows` vectors of equal length, element by element:
    /// `rows[j][k] <- e^(scale rows[j][k]) / sum_j' e^(scale rows[j'][k])`,
    /// shifted by the largest score for stability. `max` and `total` are
    /// scratch of one vector.
    pub fn softmax_across<T: Real>(rows: &mut [T], width: usize, scale: T, max: &mut [T], total: &mut [T]) {
        max.fill(T::from_f64(f64::NEG_INFINITY));
        for row in rows.chunks_exact_mut(width) {
            for (m, v) in max.iter_mut().zip(row.iter_mut()) {
                *v *= scale;
                if *v > *m {
                    *m = *v;
                }
            }
        }
        total.fill(T::ZERO);
        for row in rows.chunks_exact_mut(width) {
            for ((t, v), &m) in total.iter_mut().zip(row.iter_mut()).zip(&*max) {
                *v = (*v - m).exp();
                *t += *v;
            }
        }
        total.iter_mut().for_each(|t| *t = T::ONE / *t);
        for row in rows.chunks_exact_mut(width) {
            for (v, &t) in row.iter_mut().zip(&*total) {
                *v *= t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorisable exp against libm's where it is not clamped: within
    /// 2 ulps, relative, in both precisions; beyond, finite and of the right
    /// side of 1.
    #[test]
    fn exp_matches_libm() {
        let mut worst64 = 0.0f64;
        let mut worst32 = 0.0f64;
        for k in 0..=200_000 {
            let x = -708.0 + 1417.0 * k as f64 / 200_000.0;
            let ours = Real::exp(x);
            worst64 = worst64.max(((ours - x.exp()) / x.exp()).abs());
            let x = (x / 8.2) as f32;
            let reference = f64::from(x).exp();
            worst32 = worst32.max(((f64::from(Real::exp(x)) - reference) / reference).abs());
        }
        assert!(worst64 < 2.0 * f64::EPSILON, "f64 exp off by {worst64:e}");
        assert!(
            worst32 < 2.0 * f64::from(f32::EPSILON),
            "f32 exp off by {worst32:e}"
        );
        for big in [1e3, 1e30, f64::INFINITY] {
            assert!(Real::exp(big).is_finite() && Real::exp(-big) > 0.0);
            assert!(Real::exp(big as f32).is_finite() && Real::exp(-big as f32) > 0.0);
        }
    }

    /// sigmoid and tanh against libm, also far out where exp is clamped.
    #[test]
    fn sigmoid_and_tanh_match_libm() {
        for k in 0..=20_000 {
            let x = -1000.0 + 2000.0 * k as f64 / 20_000.0;
            assert!(
                (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 4e-16,
                "sigmoid({x})"
            );
            assert!((tanh(x) - x.tanh()).abs() < 5e-16, "tanh({x})");
            let y = x as f32 / 100.0;
            let s = 1.0 / (1.0 + (-f64::from(y)).exp());
            assert!((f64::from(sigmoid(y)) - s).abs() < 2e-7, "sigmoid({y}f32)");
            assert!(
                (f64::from(tanh(y)) - f64::from(y).tanh()).abs() < 4e-7,
                "tanh({y}f32)"
            );
        }
    }

    /// Every transpose combination of gemm against a triple loop.
    #[test]
    fn gemm_matches_a_triple_loop() {
        let (m, n, k) = (7, 5, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut expected = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                expected[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        for (ma, mb) in [
            (Mat::new(&a, k), Mat::new(&b, n)),
            (Mat::t(&at, m), Mat::new(&b, n)),
            (Mat::new(&a, k), Mat::t(&bt, k)),
            (Mat::t(&at, m), Mat::t(&bt, k)),
        ] {
            let mut c = vec![1.0; m * n];
            gemm(m, n, k, &mut c, n, ma, mb, true);
            for (c, e) in c.iter().zip(&expected) {
                assert!((c - 1.0 - e).abs() < 1e-14);
            }
            gemm(m, n, k, &mut c, n, ma, mb, false);
            for (c, e) in c.iter().zip(&expected) {
                assert!((c - e).abs() < 1e-14);
            }
        }
    }
}
