//! The Hessian analyses against references that do not come from the code
//! under test: a quadratic whose Hessian is known in closed form, the dense
//! eigendecomposition of a small network's Hessian, second differences of
//! the loss alone, and a function-preserving rescaling of a network.

use burn::tensor::DType;
use minima_shared::task::DataSpec;
use minima_shared::{Arch, ModelSpec, TaskKind};
use minima_worker::data::{Dataset, Split};
use minima_worker::hessian::linalg::{dot, norm, normalize, symmetric_eigen, with_spectrum};
use minima_worker::hessian::spectrum::{
    Operator, hutchinson_trace, lanczos, rademacher, spectral_density, top_eigenvalues, trapezoid,
};
use minima_worker::hessian::{
    AdaptiveHessian, FiniteDifferenceHessian, Gradient, LossFunction, Scheme, magnitudes,
};
use minima_worker::loss::evaluate;
use minima_worker::model::{Ctx, Layout, Network};
use minima_worker::rng::Rng;

/// `L = 1/2 theta^T A theta + b^T theta` with `A` of known spectrum:
/// gradient `A theta + b`, Hessian `A`.
struct Quadratic {
    n: usize,
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Quadratic {
    fn new(values: &[f64]) -> Quadratic {
        let mut rng = Rng::new(12);
        Quadratic {
            n: values.len(),
            a: with_spectrum(values, 11),
            b: values.iter().map(|_| rng.normal()).collect(),
        }
    }

    fn times(&self, v: &[f64]) -> Vec<f64> {
        (0..self.n)
            .map(|i| dot(&self.a[i * self.n..(i + 1) * self.n], v))
            .collect()
    }
}

impl Gradient for Quadratic {
    fn dim(&self) -> usize {
        self.n
    }
    fn gradient(&mut self, theta: &[f64]) -> Vec<f64> {
        let mut g = self.times(theta);
        g.iter_mut().zip(&self.b).for_each(|(g, b)| *g += b);
        g
    }
}

fn quadratic_spectrum() -> Vec<f64> {
    let mut values: Vec<f64> = (0..30).map(|i| 0.5 + 0.25 * i as f64).collect();
    values[3] = -12.0; // the largest magnitude is negative
    values[17] = 10.0;
    values
}

#[test]
fn quadratic_loss_matches_its_closed_form() {
    let values = quadratic_spectrum();
    let mut quadratic = Quadratic::new(&values);
    let reference = Quadratic::new(&values);
    let mut rng = Rng::new(1);
    let theta: Vec<f64> = (0..30).map(|_| rng.normal()).collect();
    // H v = A v, up to rounding of the differences: about eps |g| / h,
    // with h = eps^(1/3) (central) and eps^(1/2) (forward).
    let v: Vec<f64> = (0..30).map(|_| rng.normal()).collect();
    let av = reference.times(&v);
    for (scheme, tolerance) in [(Scheme::Central, 1e-8), (Scheme::Forward, 1e-6)] {
        let mut op = FiniteDifferenceHessian::with_scheme(&mut quadratic, theta.clone(), scheme);
        let hv = op.apply(&v);
        let err = norm(&hv.iter().zip(&av).map(|(a, b)| a - b).collect::<Vec<_>>()) / norm(&av);
        assert!(err < tolerance, "{scheme:?}: H v off by {err:e}");
    }
    let mut op = FiniteDifferenceHessian::new(&mut quadratic, theta);

    let top = top_eigenvalues(&mut op, 2, 1000, 1e-9, &mut rng);
    assert!(
        (top[0].eigenvalue + 12.0).abs() < 1e-4,
        "{}",
        top[0].eigenvalue
    );
    assert!(
        (top[1].eigenvalue - 10.0).abs() < 1e-4,
        "{}",
        top[1].eigenvalue
    );

    let run = lanczos(&mut op, &rademacher(&mut rng, 30), 30);
    assert!((run.ritz_values[0] + 12.0).abs() < 1e-6);
    assert!((run.ritz_values.last().unwrap() - 10.0).abs() < 1e-6);

    let exact_trace: f64 = values.iter().sum();
    let trace = hutchinson_trace(&mut op, 3000, 0.0, &mut rng);
    assert!(
        (trace.trace - exact_trace).abs() < 4.0 * trace.standard_error,
        "{} vs {exact_trace} (se {})",
        trace.trace,
        trace.standard_error
    );

    // Density moments: mass 1, and mean times n near the trace.
    let d = spectral_density(&mut op, 40, 30, 3000, 1e-3, &mut rng);
    assert!((trapezoid(&d.grid, &d.density) - 1.0).abs() < 1e-12);
    let mean = d.mean();
    assert!(
        (mean * 30.0 - exact_trace).abs() < 0.15 * exact_trace.abs(),
        "{} vs {exact_trace}",
        mean * 30.0
    );
}

/// A one-layer Transformer with d = 2 (65 parameters) on 40 sequences.
fn small_network() -> (ModelSpec, Split, Vec<f64>) {
    network(2)
}

fn network(hidden: usize) -> (ModelSpec, Split, Vec<f64>) {
    let spec = ModelSpec {
        arch: Arch::Transformer,
        layers: 1,
        hidden,
        heads: Some(1),
    };
    let data_spec = DataSpec {
        samples: 60,
        scale: 0.002,
        ..DataSpec::default()
    };
    let data = Dataset::generate(TaskKind::SequenceClassification, &data_spec)
        .train
        .head(40);
    let theta = Layout::for_model(&spec)
        .initialise(3)
        .iter()
        .map(|&t| f64::from(t))
        .collect();
    (spec, data, theta)
}

fn dense_hessian(op: &mut dyn Operator) -> Vec<f64> {
    let n = op.dim();
    let mut h = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        for (i, value) in op.apply(&e).into_iter().enumerate() {
            h[i * n + j] = value;
        }
    }
    h
}

fn symmetrised(h: &[f64], n: usize) -> Vec<f64> {
    (0..n * n)
        .map(|k| 0.5 * (h[k] + h[(k % n) * n + k / n]))
        .collect()
}

#[test]
fn small_network_spectrum_agrees_with_its_dense_hessian() {
    let (spec, data, theta) = small_network();
    let n = theta.len();
    assert_eq!(n, 65);
    let mut function = LossFunction::new(&spec, TaskKind::SequenceClassification, data);
    let mut op = FiniteDifferenceHessian::new(&mut function, theta.clone());
    let h = dense_hessian(&mut op);

    let asymmetry: f64 = (0..n * n)
        .map(|k| (h[k] - h[(k % n) * n + k / n]).powi(2))
        .sum::<f64>()
        .sqrt();
    let size: f64 = h.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(asymmetry / size < 1e-6, "asymmetry {:e}", asymmetry / size);

    let (values, _) = symmetric_eigen(&symmetrised(&h, n), n);
    let top = values
        .iter()
        .copied()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
        .unwrap();
    let mut rng = Rng::new(5);
    let power = top_eigenvalues(&mut op, 1, 2000, 1e-10, &mut rng);
    assert!(
        (power[0].eigenvalue - top).abs() < 1e-4 * top.abs(),
        "{} vs {top}",
        power[0].eigenvalue
    );

    let run = lanczos(&mut op, &rademacher(&mut rng, n), n);
    let scale = top.abs();
    assert!(
        (run.ritz_values[0] - values[0]).abs() < 1e-5 * scale,
        "{} vs {}",
        run.ritz_values[0],
        values[0]
    );
    assert!((run.ritz_values.last().unwrap() - values[n - 1]).abs() < 1e-5 * scale);

    let exact_trace: f64 = values.iter().sum();
    let trace = hutchinson_trace(&mut op, 400, 0.0, &mut rng);
    assert!(
        (trace.trace - exact_trace).abs() < 4.0 * trace.standard_error + 1e-6 * scale,
        "{} vs {exact_trace} (se {})",
        trace.trace,
        trace.standard_error
    );

    // The density's first moment times n is the mean of v^T H v over its
    // starts: Gauss quadrature is exact for degree 1.
    let d = spectral_density(&mut op, 30, 20, 2000, 1e-3, &mut rng);
    assert!((trapezoid(&d.grid, &d.density) - 1.0).abs() < 1e-12);
    let mean = d.mean();
    let quadrature = d.quadrature_mean();
    assert!(
        (mean - quadrature).abs() < 1e-6 * scale,
        "{mean} vs {quadrature}"
    );
    let spread = trace.standard_error * (400.0f64 / 30.0).sqrt();
    assert!(
        (mean * n as f64 - exact_trace).abs() < 4.0 * spread,
        "{} vs {exact_trace}",
        mean * n as f64
    );
}

#[test]
fn hessian_vector_products_agree_with_independent_computations() {
    let (spec, data, theta) = small_network();
    let mut function = LossFunction::new(&spec, TaskKind::SequenceClassification, data.clone());
    let mut rng = Rng::new(7);
    let mut v: Vec<f64> = (0..theta.len()).map(|_| rng.normal()).collect();
    normalize(&mut v);

    let relative = |a: &[f64], b: &[f64]| {
        let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        norm(&diff) / norm(b)
    };
    let mut op = FiniteDifferenceHessian::new(&mut function, theta.clone());
    let hv = op.apply(&v);
    // The other scheme, with its own step, and it again with a step ten
    // times smaller: truncation and rounding all change.
    let mut central =
        FiniteDifferenceHessian::with_scheme(&mut function, theta.clone(), Scheme::Central);
    let hv_central = central.apply(&v);
    central.step /= 10.0;
    let hv_small = central.apply(&v);
    let schemes = relative(&hv, &hv_central);
    assert!(schemes < 1e-5, "schemes disagree by {schemes:e}");
    let steps = relative(&hv_small, &hv_central);
    assert!(steps < 1e-5, "steps disagree by {steps:e}");

    // Second differences of the loss alone, from burn's forward pass (no
    // gradient code, and not the native models the products come from):
    // v^T H v ~ (L(t + h v) - 2 L(t) + L(t - h v)) / h^2.
    let h = 1e-4;
    let ctx = Ctx::flex(DType::F64);
    let at = |s: f64| {
        let point: Vec<f64> = theta.iter().zip(&v).map(|(t, x)| t + s * h * x).collect();
        let net = Network::new(&spec, &ctx, &point, false);
        evaluate(&net, TaskKind::SequenceClassification, &data).loss
    };
    let curvature = (at(1.0) - 2.0 * at(0.0) + at(-1.0)) / (h * h);
    let vhv = dot(&v, &hv);
    assert!(
        (vhv - curvature).abs() < 1e-3 * vhv.abs().max(1e-3),
        "{vhv} vs {curvature}"
    );
}

/// Multiplies the feed-forward block's hidden units by `alpha` on the way in
/// and `1 / alpha` on the way out: ReLU is positively homogeneous, so the
/// network computes the same function.
fn rescale_feed_forward(spec: &ModelSpec, theta: &[f64], alpha: f64) -> Vec<f64> {
    let layout = Layout::for_model(spec);
    let mut scaled = theta.to_vec();
    let entry = |name: &str| {
        layout
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .clone()
    };
    for name in ["enc.layers.0.linear1.weight", "enc.layers.0.linear1.bias"] {
        scaled[entry(name).range()]
            .iter_mut()
            .for_each(|t| *t *= alpha);
    }
    scaled[entry("enc.layers.0.linear2.weight").range()]
        .iter_mut()
        .for_each(|t| *t /= alpha);
    scaled
}

#[test]
fn adaptive_sharpness_is_unchanged_by_a_function_preserving_rescaling() {
    // d = 4 (193 parameters): with d = 2 LayerNorm leaves only two input
    // patterns and the feed-forward units can all be inactive.
    let (spec, data, theta) = network(4);
    // Shrinking the hidden units twentyfold multiplies their block of the
    // Hessian by 400, enough to move the top eigenvalue.
    let scaled = rescale_feed_forward(&spec, &theta, 0.05);
    let mut f1 = LossFunction::new(&spec, TaskKind::SequenceClassification, data.clone());
    let mut f2 = LossFunction::new(&spec, TaskKind::SequenceClassification, data);
    assert!(
        (f1.loss(&theta) - f2.loss(&scaled)).abs() < 1e-12,
        "same function"
    );

    let mut raw1 = FiniteDifferenceHessian::new(&mut f1, theta.clone());
    let mut raw2 = FiniteDifferenceHessian::new(&mut f2, scaled.clone());
    let n = theta.len();
    let (values1, _) = symmetric_eigen(&symmetrised(&dense_hessian(&mut raw1), n), n);
    let (values2, _) = symmetric_eigen(&symmetrised(&dense_hessian(&mut raw2), n), n);
    let top = |v: &[f64]| {
        v.iter()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap()
    };
    let (top1, top2) = (top(&values1), top(&values2));
    assert!(
        (top1 - top2).abs() > 0.1 * top1.abs(),
        "raw top eigenvalue moves: {top1} vs {top2}"
    );

    let mut rng = Rng::new(9);
    let mut a1 = AdaptiveHessian {
        inner: &mut raw1,
        magnitudes: magnitudes(&theta),
    };
    let adaptive1 = top_eigenvalues(&mut a1, 1, 3000, 1e-12, &mut rng)[0].eigenvalue;
    let mut a2 = AdaptiveHessian {
        inner: &mut raw2,
        magnitudes: magnitudes(&scaled),
    };
    let adaptive2 = top_eigenvalues(&mut a2, 1, 3000, 1e-12, &mut rng)[0].eigenvalue;
    assert!(
        (adaptive1 - adaptive2).abs() < 1e-4 * adaptive1.abs(),
        "adaptive top eigenvalue {adaptive1} vs {adaptive2}"
    );
}

/// Frozen ReLU patterns change nothing at the point they were taken at,
/// and keep finite differences on the smooth piece of the loss that point
/// lies on. A kink is put 1e-7 away on purpose: one sequence, and a
/// feed-forward bias moved until its unit has just switched on (the bias's
/// derivative is zero exactly while the unit is off). Central differences
/// with the default step (about 6e-6) along that bias jump the kink; with
/// the patterns frozen they agree with a step too small to reach it.
#[test]
fn frozen_activation_patterns_keep_products_off_the_kinks() {
    // d = 8: with d = 2 a LayerNorm's output is always (-1, 1) and the
    // unit would hardly move the loss.
    let (spec, data, mut theta) = network(8);
    let data = data.head(1);
    let layout = Layout::for_model(&spec);
    let bias = layout
        .entries
        .iter()
        .find(|e| e.name.ends_with("layers.0.linear1.bias"))
        .expect("the feed-forward bias")
        .offset;
    let mut function = LossFunction::new(&spec, TaskKind::SequenceClassification, data.clone());
    let mut slope_at = |b: f64, theta: &mut Vec<f64>| {
        theta[bias] = b;
        function.gradient(theta)[bias]
    };
    // Bisect the bias between off (slope 0) and on.
    let (mut off, mut on) = (-50.0, 50.0);
    assert_eq!(slope_at(off, &mut theta), 0.0, "the unit is off far below");
    assert_ne!(slope_at(on, &mut theta), 0.0, "the unit is on far above");
    for _ in 0..200 {
        let mid = 0.5 * (off + on);
        if slope_at(mid, &mut theta) == 0.0 {
            off = mid;
        } else {
            on = mid;
        }
    }
    theta[bias] = on + 1e-7;
    let mut e = vec![0.0; theta.len()];
    e[bias] = 1.0;

    let mut free = LossFunction::new(&spec, TaskKind::SequenceClassification, data.clone());
    let mut frozen = LossFunction::new(&spec, TaskKind::SequenceClassification, data);
    frozen.freeze_at(&theta);
    assert_eq!(free.loss(&theta), frozen.loss(&theta));
    assert_eq!(free.gradient(&theta), frozen.gradient(&theta));

    // On a smooth piece, a quarter of the step changes a central product
    // by O(h^2); across a kink the jump term grows as 1/h.
    let spread = |function: &mut LossFunction| {
        let mut op = FiniteDifferenceHessian::with_scheme(function, theta.clone(), Scheme::Central);
        let a = op.apply(&e);
        op.step /= 4.0;
        let b = op.apply(&e);
        let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        (norm(&diff) / norm(&b), a)
    };
    let (jumped, free_product) = spread(&mut free);
    let (kept, frozen_product) = spread(&mut frozen);
    // (3/4 for a pure jump: the product of the smaller step is 4 times larger.)
    assert!(
        jumped > 0.5,
        "the free product did not cross the kink: {jumped:e}"
    );
    assert!(
        kept < 1e-6,
        "frozen products of two steps differ by {kept:e}"
    );
    assert!(
        free_product[bias].abs() > 1e3 * frozen_product[bias].abs(),
        "jump {:e} vs curvature {:e}",
        free_product[bias],
        frozen_product[bias]
    );
    let forward = FiniteDifferenceHessian::new(&mut frozen, theta.clone()).apply(&e);
    let diff: Vec<f64> = forward
        .iter()
        .zip(&frozen_product)
        .map(|(x, y)| x - y)
        .collect();
    let schemes = norm(&diff) / norm(&frozen_product);
    assert!(
        schemes < 1e-4,
        "frozen forward and central products differ by {schemes:e}"
    );
}
