//! The native models against two independent references: PyTorch's own
//! modules and autograd (fixtures made by `python/make_fixtures.py`), and
//! burn's autodiff on the burn models of `minima_worker::model`.

mod support;

use burn::tensor::DType;
use minima_shared::task::DataSpec;
use minima_shared::{Arch, ModelSpec, TaskKind};
use minima_worker::data::{Dataset, Split};
use minima_worker::loss::{batch_loss, chunk, evaluate};
use minima_worker::model::{Ctx, Layout, Network};
use minima_worker::native::{CHUNK, Evaluator};
use minima_worker::rng::Rng;
use support::{relative_error, torch_references};

/// In float64 the native outputs, loss and gradient agree with PyTorch's to
/// 1e-7 relative: the positional encoding is computed in f32 on both sides
/// and its sines may differ by one f32 ulp (about 1e-8 on Transformer
/// outputs); recurrent models agree to about 1e-15. A wrong gate order,
/// transpose or scale is off by more than 1e-2.
#[test]
fn native_outputs_losses_and_gradients_equal_pytorch_in_f64() {
    let cases = torch_references();
    for case in cases {
        let (spec, kind) = (case.spec(), case.kind());
        let label = format!("{} {}", spec.label(), kind);
        let inputs = case.x.concat();
        let length = case.x[0].len();
        let mut native = Evaluator::<f64>::new(&spec, kind);
        let outputs = native.outputs(&case.theta, &inputs, length);
        let mut grad = vec![0.0; case.theta.len()];
        let loss = native.loss_and_gradient_of(&case.theta, &inputs, &case.y, length, &mut grad);

        let out_err = relative_error(&outputs, &case.outputs);
        let grad_err = relative_error(&grad, &case.grad);
        let loss_err = ((loss - case.loss) / case.loss).abs();
        eprintln!("{label}: outputs {out_err:e}, loss {loss_err:e}, gradient {grad_err:e}");
        assert!(out_err < 1e-7, "{label}: outputs off by {out_err:e}");
        assert!(loss_err < 1e-7, "{label}: loss {loss} vs {}", case.loss);
        assert!(grad_err < 1e-7, "{label}: gradient off by {grad_err:e}");
        if spec.arch != Arch::Transformer {
            assert!(out_err < 1e-13 && grad_err < 1e-13, "{label}");
        }
    }
}

fn spec(arch: Arch, layers: usize, hidden: usize, heads: Option<usize>) -> ModelSpec {
    ModelSpec {
        arch,
        layers,
        hidden,
        heads,
    }
}

/// Models of every family with several layers, heads and sizes, at
/// parameters moved off their initial values.
fn models() -> Vec<ModelSpec> {
    vec![
        spec(Arch::Lstm, 1, 8, None),
        spec(Arch::Lstm, 3, 16, None),
        spec(Arch::Gru, 1, 8, None),
        spec(Arch::Gru, 3, 16, None),
        spec(Arch::Transformer, 1, 8, Some(1)),
        spec(Arch::Transformer, 2, 16, Some(4)),
        spec(Arch::Transformer, 3, 8, Some(2)),
    ]
}

fn perturbed(spec: &ModelSpec, seed: u64) -> Vec<f64> {
    let mut rng = Rng::stream(seed, "test");
    Layout::for_model(spec)
        .initialise(seed)
        .iter()
        .map(|&t| f64::from(t) + 0.2 * rng.normal())
        .collect()
}

/// The data of a task, with a training split longer than one chunk and not
/// a multiple of it. Inputs are scaled into (-2, 2) so that no layer
/// saturates and every parameter's gradient is exercised.
fn data(kind: TaskKind) -> Split {
    let spec = DataSpec {
        samples: 800,
        scale: 0.002,
        ..DataSpec::default()
    };
    let train = Dataset::generate(kind, &spec).train;
    let n = CHUNK + CHUNK / 3;
    assert!(train.len() >= n);
    train.head(n)
}

/// burn's f64 loss and gradient of the mean loss over `split`.
fn burn_loss_and_gradient(
    spec: &ModelSpec,
    kind: TaskKind,
    theta: &[f64],
    split: &Split,
) -> (f64, Vec<f64>, Vec<f64>) {
    let ctx = Ctx::flex_autodiff(DType::F64);
    let net = Network::new(spec, &ctx, theta, true);
    let (x, y) = chunk(&ctx, split, 0, split.len());
    let outputs = net.forward(x, None);
    let out: Vec<f64> = outputs.clone().into_data().iter::<f64>().collect();
    let loss = batch_loss(kind, outputs, y);
    let grad = net.flat_gradient(&loss.backward());
    (loss.into_scalar::<f64>(), grad, out)
}

/// In f64 the native passes equal burn's autodiff on the same models and
/// data to 1e-11 relative (both compute in f64; the native `exp` is within
/// 2 ulps of libm's), across chunk boundaries.
#[test]
fn native_gradients_equal_burn_autodiff_in_f64() {
    for kind in [TaskKind::SequenceClassification, TaskKind::SequenceLearning] {
        let split = data(kind);
        for (k, spec) in models().iter().enumerate() {
            let label = format!("{} {kind}", spec.label());
            let theta = perturbed(spec, k as u64);
            let (loss, grad, out) = burn_loss_and_gradient(spec, kind, &theta, &split);

            let mut native = Evaluator::<f64>::new(spec, kind);
            let ours_out = native.outputs(&theta, &split.inputs, split.length);
            let mut ours_grad = vec![f64::NAN; theta.len()];
            let ours_loss = native.loss_and_gradient(&theta, &split, &mut ours_grad);

            let out_err = relative_error(&ours_out, &out);
            let grad_err = relative_error(&ours_grad, &grad);
            let loss_err = ((ours_loss - loss) / loss).abs();
            eprintln!("{label}: outputs {out_err:e}, loss {loss_err:e}, gradient {grad_err:e}");
            assert!(out_err < 1e-11, "{label}: outputs off by {out_err:e}");
            assert!(loss_err < 1e-11, "{label}: loss {ours_loss} vs {loss}");
            assert!(grad_err < 1e-11, "{label}: gradient off by {grad_err:e}");

            // A second call reuses the buffers and gives the same numbers.
            let mut again = vec![0.0; theta.len()];
            assert_eq!(
                native.loss_and_gradient(&theta, &split, &mut again),
                ours_loss
            );
            assert_eq!(again, ours_grad, "{label}: second call differs");
        }
    }
}

/// In f32 the native evaluation (loss and accuracy) equals burn's f32
/// evaluation to 1e-5 relative: both round every operation to f32, in a
/// different order.
#[test]
fn native_f32_evaluation_equals_burn() {
    let ctx = Ctx::flex(DType::F32);
    for kind in [TaskKind::SequenceClassification, TaskKind::SequenceLearning] {
        let split = data(kind);
        for (k, spec) in models().iter().enumerate() {
            let theta: Vec<f32> = perturbed(spec, 10 + k as u64)
                .iter()
                .map(|&t| t as f32)
                .collect();
            let net = Network::new(spec, &ctx, &theta, false);
            let theirs = evaluate(&net, kind, &split);
            let ours = Evaluator::<f32>::new(spec, kind).evaluate(&theta, &split);
            let label = format!("{} {kind}", spec.label());
            let err = ((ours.loss - theirs.loss) / theirs.loss).abs();
            assert!(err < 1e-5, "{label}: loss {} vs {}", ours.loss, theirs.loss);
            if let (Some(a), Some(b)) = (ours.accuracy, theirs.accuracy) {
                // A logit within rounding of 0 may fall either side.
                assert!(
                    (a - b).abs() <= 2.0 / split.len() as f64,
                    "{label}: accuracy {a} vs {b}"
                );
            }
        }
    }
}

/// The fused f32 passes (the evaluator's default on CPUs with AVX-512)
/// against the f64 taped passes, which equal PyTorch's: outputs within
/// 2e-5 relative (f32 rounding through a few layers), on batches that fill
/// no whole block, on scaled inputs and on the raw inputs of the study,
/// which saturate the gates; hidden sizes that are no multiple of the
/// vector width or of the register tiles, and several heads.
#[test]
fn fused_f32_outputs_equal_the_f64_passes() {
    let models = [
        spec(Arch::Lstm, 1, 8, None),
        spec(Arch::Lstm, 3, 12, None),
        spec(Arch::Lstm, 2, 32, None),
        spec(Arch::Gru, 1, 8, None),
        spec(Arch::Gru, 3, 12, None),
        spec(Arch::Gru, 2, 32, None),
        spec(Arch::Transformer, 1, 8, Some(1)),
        spec(Arch::Transformer, 2, 16, Some(4)),
        spec(Arch::Transformer, 3, 12, Some(2)),
        spec(Arch::Transformer, 2, 32, Some(2)),
        spec(Arch::Gru, 2, 10, None),
        spec(Arch::Transformer, 2, 10, Some(2)),
    ];
    for kind in [TaskKind::SequenceClassification, TaskKind::SequenceLearning] {
        for scale in [0.002, 1.0] {
            let data = DataSpec {
                samples: 800,
                scale,
                ..DataSpec::default()
            };
            let all = Dataset::generate(kind, &data).train;
            for (k, model) in models.iter().enumerate() {
                let theta = perturbed(model, 20 + k as u64);
                let theta32: Vec<f32> = theta.iter().map(|&t| t as f32).collect();
                let mut fused = Evaluator::<f32>::new(model, kind);
                #[cfg(target_arch = "x86_64")]
                let expected = std::arch::is_x86_feature_detected!("avx512f");
                #[cfg(not(target_arch = "x86_64"))]
                let expected = false;
                assert_eq!(fused.is_fused(), expected, "fused passes on this CPU");
                let mut reference = Evaluator::<f64>::new(model, kind);
                for count in [1, 17, 100, CHUNK + CHUNK / 3] {
                    let split = all.head(count);
                    let label = format!("{} {kind} scale {scale} on {count}", model.label());
                    let ours = fused.outputs(&theta32, &split.inputs, split.length);
                    let theirs = reference.outputs(&theta, &split.inputs, split.length);
                    let err = relative_error(&ours, &theirs);
                    assert!(err < 2e-5, "{label}: outputs off by {err:e}");
                    let taped = Evaluator::<f32>::new(model, kind).taped_only().outputs(
                        &theta32,
                        &split.inputs,
                        split.length,
                    );
                    let err = relative_error(&ours, &taped);
                    assert!(err < 2e-5, "{label}: fused and taped f32 differ by {err:e}");
                }
            }
        }
    }
}

/// Sequences longer than the fused Transformer takes (8 steps) still
/// evaluate, through the taped pass, and equal the f64 passes; the
/// recurrent fused passes take any length.
#[test]
fn long_sequences_evaluate_in_f32_and_equal_the_f64_passes() {
    let data = DataSpec {
        samples: 400,
        length: 12,
        scale: 0.002,
        ..DataSpec::default()
    };
    let kind = TaskKind::SequenceClassification;
    let split = Dataset::generate(kind, &data).train.head(100);
    for (k, model) in [
        spec(Arch::Transformer, 2, 16, Some(2)),
        spec(Arch::Lstm, 2, 16, None),
        spec(Arch::Gru, 2, 16, None),
    ]
    .iter()
    .enumerate()
    {
        let theta = perturbed(model, 40 + k as u64);
        let theta32: Vec<f32> = theta.iter().map(|&t| t as f32).collect();
        let ours =
            Evaluator::<f32>::new(model, kind).outputs(&theta32, &split.inputs, split.length);
        let theirs =
            Evaluator::<f64>::new(model, kind).outputs(&theta, &split.inputs, split.length);
        let err = relative_error(&ours, &theirs);
        assert!(
            err < 2e-5,
            "{} over 12 steps: outputs off by {err:e}",
            model.label()
        );
    }
}
