//! AVX-512 building blocks of the fused passes: aligned buffers, a register
//! tile of products, and `exp`, `sigmoid` and `tanh` on sixteen lanes.
//!
//! Every function here is compiled for AVX-512F and inlined into callers
//! that are; the callers check the CPU once ([`available`]).

use std::arch::x86_64::*;

/// f32 lanes of one vector.
pub(super) const LANES: usize = 16;

/// Whether this CPU runs the fused passes.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// One vector's worth of f32, aligned so that every row of a buffer whose
/// width is a multiple of [`LANES`] starts on a cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([f32; LANES]);

/// A zeroed f32 buffer of at least `len` values, 64-byte aligned.
#[derive(Default)]
pub(super) struct Buffer(Vec<Block>);

impl Buffer {
    pub(super) fn resize(&mut self, len: usize) {
        self.0.resize(len.div_ceil(LANES), Block::default());
    }

    pub(super) fn as_ptr(&self) -> *const f32 {
        self.0.as_ptr().cast()
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.0.as_mut_ptr().cast()
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [f32] {
        let len = self.0.len() * LANES;
        // SAFETY: `Block` is `repr(C)` over `[f32; LANES]` with no padding
        // (64 bytes either way), so the blocks are `len` contiguous f32.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), len) }
    }

    pub(super) fn as_slice(&self) -> &[f32] {
        let len = self.0.len() * LANES;
        // SAFETY: as in `as_mut_slice`.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), len) }
    }
}

/// Writes the sequences `x` (`[count, length]` row-major, at most `block`
/// of them) into `out` as `[length][block]`, zero beyond the last: a block
/// of inputs, one step per row.
pub(super) fn transpose_block(x: &[f32], length: usize, block: usize, out: &mut [f32]) {
    out[..length * block].fill(0.0);
    for (c, row) in x.chunks_exact(length).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[t * block + c] = v;
        }
    }
}

/// `out[c] = bias + sum_j w[j] top[j block + c]`: `Linear(d, 1)` on a
/// feature-major `[d][block]` block, for the first `out.len()` sequences.
pub(super) fn linear_out(w: &[f32], bias: f32, top: &[f32], block: usize, out: &mut [f32]) {
    for (c, z) in out.iter_mut().enumerate() {
        *z = bias
            + w.iter()
                .enumerate()
                .map(|(j, &wj)| wj * top[j * block + c])
                .sum::<f32>();
    }
}

/// `acc[r][v] += sum_{k < depth} w[k stride + r] x[k ld + LANES v ..]
/// [..LANES]`: `R` rows of weights (packed `[depth][stride]`, `R <= stride`)
/// against `V` vectors of each of `depth` input rows. The accumulators stay
/// in registers when the caller keeps `R * V` within the 32 vector
/// registers.
///
/// # Safety
/// `w` must hold `(depth - 1) * stride + R` values, and `x` rows `0..depth`
/// of `ld` values, 64-byte aligned, with `LANES * V <= ld`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn accumulate<const R: usize, const V: usize>(
    acc: &mut [[__m512; V]; R],
    w: *const f32,
    stride: usize,
    x: *const f32,
    ld: usize,
    depth: usize,
) {
    for k in 0..depth {
        let mut xs = [_mm512_setzero_ps(); V];
        for (v, xv) in xs.iter_mut().enumerate() {
            // SAFETY: row k < depth, vector v < V, inside the caller's rows.
            *xv = unsafe { load(x.add(k * ld + v * LANES)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: k stride + r < (depth - 1) stride + R.
            let wk = _mm512_set1_ps(unsafe { *w.add(k * stride + r) });
            for (a, &xv) in row.iter_mut().zip(&xs) {
                *a = _mm512_fmadd_ps(wk, xv, *a);
            }
        }
    }
}

/// Applies `f` to each vector of `x`. The functions below take `W`
/// independent vectors at once and go through them operation by operation:
/// their dependency chains (tens of cycles of latency each) then overlap,
/// where one vector at a time would leave the units idle.
#[inline(always)]
fn each<const W: usize>(x: [__m512; W], f: impl Fn(__m512) -> __m512) -> [__m512; W] {
    let mut y = x;
    for v in &mut y {
        *v = f(*v);
    }
    y
}

/// `e^x`, within 1.4 f32 epsilons (relative) for `|x| < 10` and 3.2
/// beyond (measured against f64 over [-200, 200]): `e^x = 2^k e^r` with
/// `|r| <= ln 2 / 2` and a degree-5 polynomial for `e^r` fitted for the
/// least largest relative error (1.1e-7 before rounding). The scalar
/// `Real::exp` spends three more multiply-adds on Cephes' degree 7 and a
/// two-part `ln 2` for about one epsilon everywhere; here the multiply-add
/// units are the bottleneck of the whole pass, and the single-part `ln 2`
/// only costs accuracy where `|k|` is large, where a sigmoid or tanh has
/// saturated. Arguments are clamped to where the result is finite and
/// normal.
///
/// For the same reason the rest runs on the other units: `k` is rounded by
/// adding `1.5 * 2^23` (its low mantissa bits then hold `k`), and `2^k` is
/// applied by adding `k` to the exponent bits of `e^r` (exact: the clamps
/// keep the result normal), where `roundscale` and `scalef` would each
/// take a multiply-add slot.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp<const W: usize>(x: [__m512; W]) -> [__m512; W] {
    const MAGIC: f32 = 12_582_912.0;
    let x = each(x, |v| {
        _mm512_min_ps(
            _mm512_max_ps(v, _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(88.0),
        )
    });
    let t = each(x, |v| {
        _mm512_fmadd_ps(
            v,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
            _mm512_set1_ps(MAGIC),
        )
    });
    let mut r = x;
    for (r, &t) in r.iter_mut().zip(&t) {
        let k = _mm512_sub_ps(t, _mm512_set1_ps(MAGIC));
        *r = _mm512_fnmadd_ps(k, _mm512_set1_ps(std::f32::consts::LN_2), *r);
    }
    let mut p = [_mm512_set1_ps(8.312_525e-3); W];
    for c in [4.189_011_5e-2, 0.166_671_14, 0.499_992_3] {
        for (p, &r) in p.iter_mut().zip(&r) {
            *p = _mm512_fmadd_ps(*p, r, _mm512_set1_ps(c));
        }
    }
    let mut y = p;
    for v in 0..W {
        let pr = _mm512_mul_ps(p[v], r[v]);
        let er = _mm512_fmadd_ps(pr, r[v], _mm512_add_ps(r[v], _mm512_set1_ps(1.0)));
        let k = _mm512_sub_epi32(
            _mm512_castps_si512(t[v]),
            _mm512_set1_epi32(MAGIC.to_bits() as i32),
        );
        let bits = _mm512_add_epi32(_mm512_castps_si512(er), _mm512_slli_epi32::<23>(k));
        y[v] = _mm512_castsi512_ps(bits);
    }
    y
}

/// `1 / a` for `a >= 1`: the 14-bit estimate and one Newton step, within
/// an ulp of the quotient and cheaper than a division when the multiply-add
/// units are not already saturated.
#[inline]
#[target_feature(enable = "avx512f")]
fn recip(a: __m512) -> __m512 {
    let r = _mm512_rcp14_ps(a);
    _mm512_fmadd_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(1.0)), r)
}

/// `1 / (1 + e^-x)`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn sigmoid<const W: usize>(x: [__m512; W]) -> [__m512; W] {
    let e = exp(each(x, |v| _mm512_sub_ps(_mm512_setzero_ps(), v)));
    each(e, |e| recip(_mm512_add_ps(_mm512_set1_ps(1.0), e)))
}

/// `tanh x = 1 - 2 / (1 + e^2x)`, as the native scalar `tanh`: exact
/// limits at both ends, an absolute error of about an ulp of 1 near 0.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn tanh<const W: usize>(x: [__m512; W]) -> [__m512; W] {
    let e = exp(each(x, |v| _mm512_add_ps(v, v)));
    each(e, |e| {
        let one = _mm512_set1_ps(1.0);
        _mm512_fnmadd_ps(recip(_mm512_add_ps(one, e)), _mm512_set1_ps(2.0), one)
    })
}

/// Loads `LANES` values.
///
/// # Safety
/// `p` must point at `LANES` readable values, 64-byte aligned.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load(p: *const f32) -> __m512 {
    unsafe { _mm512_load_ps(p) }
}

/// Stores `LANES` values.
///
/// # Safety
/// `p` must point at `LANES` writable values, 64-byte aligned.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store(p: *mut f32, v: __m512) {
    unsafe { _mm512_store_ps(p, v) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::kernels;

    /// The vector functions against the scalar ones of the native models,
    /// over the range the gates see and beyond the clamps: within a few f32
    /// ulps (the vector versions fuse their multiply-adds).
    #[test]
    fn vector_functions_match_the_scalar_ones() {
        if !available() {
            return;
        }
        let xs: Vec<f32> = (0..=32_000).map(|k| -200.0 + k as f32 / 80.0).collect();
        for chunk in xs.chunks_exact(LANES) {
            let mut got = [[0.0f32; LANES]; 3];
            // SAFETY: AVX-512F is available; the arrays hold LANES values.
            unsafe {
                let v = _mm512_loadu_ps(chunk.as_ptr());
                _mm512_storeu_ps(got[0].as_mut_ptr(), exp([v])[0]);
                _mm512_storeu_ps(got[1].as_mut_ptr(), sigmoid([v])[0]);
                _mm512_storeu_ps(got[2].as_mut_ptr(), tanh([v])[0]);
            }
            for (l, &x) in chunk.iter().enumerate() {
                let e = <f32 as kernels::Real>::exp(x);
                assert!((got[0][l] - e).abs() <= 4.0 * f32::EPSILON * e, "exp({x})");
                let s = kernels::sigmoid(x);
                assert!(
                    (got[1][l] - s).abs() <= 4.0 * f32::EPSILON * s.max(1e-30),
                    "sigmoid({x})"
                );
                let t = kernels::tanh(x);
                assert!((got[2][l] - t).abs() <= 4.0 * f32::EPSILON, "tanh({x})");
            }
        }
    }
}
