//! Small dense linear algebra the spectral methods need: vector helpers and
//! the eigendecomposition of a symmetric matrix by cyclic Jacobi rotations
//! (Lanczos tridiagonals have at most a few hundred rows, and the tests'
//! dense Hessians fewer than a hundred).

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `y += alpha * x`
pub fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

pub fn scale(alpha: f64, x: &mut [f64]) {
    x.iter_mut().for_each(|v| *v *= alpha);
}

/// Scales `x` to unit norm and returns its former norm.
pub fn normalize(x: &mut [f64]) -> f64 {
    let n = norm(x);
    if n > 0.0 {
        scale(1.0 / n, x);
    }
    n
}

/// Removes from `x` its components along the (orthonormal) `basis`.
pub fn orthogonalize(x: &mut [f64], basis: &[Vec<f64>]) {
    for b in basis {
        let c = dot(x, b);
        axpy(-c, b, x);
    }
}

/// A dense symmetric `n x n` matrix with eigenvalues `values`: `Q D Q` with
/// `Q = I - 2 u u^T` a Householder reflection along a random unit `u`. The
/// known spectrum is the reference of the tests and benchmarks.
pub fn with_spectrum(values: &[f64], seed: u64) -> Vec<f64> {
    let n = values.len();
    let mut rng = crate::rng::Rng::new(seed);
    let mut u: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    normalize(&mut u);
    let q = |i: usize, j: usize| f64::from(u8::from(i == j)) - 2.0 * u[i] * u[j];
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| q(i, k) * values[k] * q(j, k)).sum();
        }
    }
    a
}

/// Eigenvalues (ascending) and eigenvectors (`vectors[k]` belongs to
/// `values[k]`) of the symmetric `n x n` row-major matrix `a`.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n);
    let mut m = a.to_vec();
    // Columns of v are the eigenvectors.
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale = m
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // Rotation angle that zeroes m[p][q] (Golub and Van Loan, 8.5).
                let tau = (aqq - app) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[i * n + i].total_cmp(&m[j * n + j]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

/// Eigenvalues (ascending) and the first component of each unit eigenvector
/// of the symmetric tridiagonal matrix with diagonal `alpha` and
/// off-diagonal `beta` (`beta.len() == alpha.len() - 1`).
pub fn tridiagonal_eigen(alpha: &[f64], beta: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = alpha.len();
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        t[i * n + i] = alpha[i];
        if i + 1 < n {
            t[i * n + i + 1] = beta[i];
            t[(i + 1) * n + i] = beta[i];
        }
    }
    let (values, vectors) = symmetric_eigen(&t, n);
    let firsts = vectors.iter().map(|v| v[0]).collect();
    (values, firsts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_spectrum() {
        // Q diag(d) Q^T with Q a rotation in the (0, 2) plane.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, 0.0, -s, 0.0, 1.0, 0.0, s, 0.0, c];
        let d = [3.0, -1.0, 0.5];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| q[i * 3 + k] * d[k] * q[j * 3 + k]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(&a, 3);
        let expected = [-1.0, 0.5, 3.0];
        for (v, e) in values.iter().zip(expected) {
            assert!((v - e).abs() < 1e-12, "{values:?}");
        }
        // A v = lambda v for each pair.
        for (lambda, vec) in values.iter().zip(&vectors) {
            for i in 0..3 {
                let av: f64 = (0..3).map(|j| a[i * 3 + j] * vec[j]).sum();
                assert!((av - lambda * vec[i]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn tridiagonal_of_the_second_difference_matrix() {
        // tridiag(-1, 2, -1) of size n has eigenvalues 2 - 2 cos(k pi / (n + 1)).
        let n = 12;
        let (values, firsts) = tridiagonal_eigen(&vec![2.0; n], &vec![-1.0; n - 1]);
        for (k, v) in values.iter().enumerate() {
            let exact = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
            assert!((v - exact).abs() < 1e-12, "{v} vs {exact}");
        }
        let total: f64 = firsts.iter().map(|f| f * f).sum();
        assert!(
            (total - 1.0).abs() < 1e-12,
            "first components form a unit vector"
        );
    }
}
