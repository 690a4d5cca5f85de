//! Times the worker's hot paths on the study's configurations, in the CSV
//! layout of the PyTorch reference script (`torch_reference.py`), so the two
//! can be run side by side and compared by ratio:
//!
//!     cargo bench -p minima-worker --bench kernels -- [--configs quick|all] [--repeats 5]
//!
//! Columns: the median time of a training step (batch 10, dropout on, AdamW,
//! clipping; burn), and over 500 samples with the native models of a
//! gradient (f32), of one loss evaluation (f32, a surface point: the fused
//! passes where the CPU has them), of a gradient in f64 and of a
//! Hessian-vector product (forward differences: one f64 gradient, beside
//! the gradient at theta computed once); then, for comparison, the loss
//! evaluation by the taped f32 passes, and burn's f32 gradient and loss
//! evaluation. Milliseconds, single-threaded. `--only TEXT` keeps the
//! configurations whose label (`lstm-l11-d32`, `transformer-l6-d32-h2`)
//! contains TEXT.

use std::time::Instant;

use burn::tensor::DType;
use minima_shared::task::{AnalysisSpec, DataSpec, TrainSpec};
use minima_shared::{Arch, ModelSpec, TaskKind, TaskSpec};
use minima_worker::data::Split;
use minima_worker::hessian::spectrum::Operator;
use minima_worker::hessian::{FiniteDifferenceHessian, Gradient, LossFunction};
use minima_worker::loss::batch_loss;
use minima_worker::model::{Ctx, Layout, Network};
use minima_worker::native::Evaluator;
use minima_worker::optim::AdamW;
use minima_worker::rng::Rng;
use minima_worker::train::train_step;

fn configs(all: bool) -> Vec<ModelSpec> {
    let spec = |arch, layers, hidden, heads| ModelSpec {
        arch,
        layers,
        hidden,
        heads,
    };
    if !all {
        return vec![
            spec(Arch::Lstm, 1, 8, None),
            spec(Arch::Lstm, 11, 32, None),
            spec(Arch::Gru, 11, 32, None),
            spec(Arch::Transformer, 1, 8, Some(1)),
            spec(Arch::Transformer, 11, 32, Some(4)),
        ];
    }
    let mut rows = Vec::new();
    for arch in [Arch::Gru, Arch::Lstm] {
        for layers in [1, 6, 11] {
            for hidden in [8, 16, 32] {
                rows.push(spec(arch, layers, hidden, None));
            }
        }
    }
    for layers in [1, 6, 11] {
        for heads in [1, 2, 4] {
            for hidden in [8, 16, 32] {
                rows.push(spec(Arch::Transformer, layers, hidden, Some(heads)));
            }
        }
    }
    rows
}

/// Median over `repeats` of the mean time of `inner` calls, after one warm-up.
fn median_seconds(repeats: usize, inner: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..inner {
                f();
            }
            start.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// `n` classification sequences in (-1000, 1000) and their labels.
fn batch(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..n * 5)
        .map(|_| rng.uniform(-1000.0, 1000.0) as f32)
        .collect();
    let y = x
        .chunks(5)
        .map(|s| {
            if s.iter().sum::<f32>() >= 0.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    (x, y)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let all = value("--configs").is_some_and(|v| v == "all");
    let repeats: usize = value("--repeats").map_or(5, |v| v.parse().expect("--repeats N"));
    let only = value("--only").cloned().unwrap_or_default();

    minima_worker::with_compute_threads(1, || {
        println!(
            "model,layers,heads,hidden,params,step_ms,grad500_ms,point500_ms,grad500_f64_ms,\
             hvp500_ms,point500_taped_ms,grad500_burn_ms,point500_burn_ms"
        );
        for model in configs(all) {
            if !model.label().contains(&only) {
                continue;
            }
            let kind = TaskKind::SequenceClassification;
            let spec = TaskSpec {
                task: kind,
                data: DataSpec::default(),
                model,
                train: TrainSpec::for_task(kind),
                seed: 0,
                analysis: AnalysisSpec::default(),
            };
            let layout = Layout::for_model(&model);
            let mut theta = layout.initialise(0);
            let mut rng = Rng::new(0);
            let (xb, yb) = batch(&mut rng, 10);
            let (xs, ys) = batch(&mut rng, 500);

            let train_ctx = Ctx::flex_autodiff(DType::F32);
            let mut optimizer = AdamW::new(layout.len, &spec.train);
            let mut dropout = Rng::new(1);
            let step = median_seconds(repeats, 20, || {
                train_step(
                    &spec,
                    &train_ctx,
                    &mut theta,
                    &mut optimizer,
                    (&xb, &yb),
                    &mut dropout,
                );
            });

            // burn's f32 gradient: the path of training.
            let grad_burn = median_seconds(repeats, 3, || {
                let net = Network::new(&model, &train_ctx, &theta, true);
                let x = train_ctx.tensor(xs.clone(), [500, 5, 1]);
                let y = train_ctx.tensor(ys.clone(), [500, 1]);
                let loss = batch_loss(kind, net.forward(x, None), y);
                std::hint::black_box(net.flat_gradient(&loss.backward()));
            });
            let eval_ctx = Ctx::flex(DType::F32);
            let point_burn = median_seconds(repeats, 5, || {
                let net = Network::new(&model, &eval_ctx, &theta, false);
                let x = eval_ctx.tensor(xs.clone(), [500, 5, 1]);
                let y = eval_ctx.tensor(ys.clone(), [500, 1]);
                std::hint::black_box(
                    batch_loss(kind, net.forward(x, None), y).into_scalar::<f64>(),
                );
            });

            // The native models: the paths of every analysis.
            let split = Split {
                inputs: xs.clone(),
                targets: ys.clone(),
                length: 5,
            };
            let mut native32 = Evaluator::<f32>::new(&model, kind);
            let mut grad32 = vec![0.0f32; theta.len()];
            let grad = median_seconds(repeats, 3, || {
                std::hint::black_box(native32.loss_and_gradient(&theta, &split, &mut grad32));
            });
            let point = median_seconds(repeats, 5, || {
                std::hint::black_box(native32.evaluate(&theta, &split));
            });
            let mut taped32 = Evaluator::<f32>::new(&model, kind).taped_only();
            let point_taped = median_seconds(repeats, 5, || {
                std::hint::black_box(taped32.evaluate(&theta, &split));
            });
            let mut function = LossFunction::new(&model, kind, split);
            let theta64: Vec<f64> = theta.iter().map(|&t| f64::from(t)).collect();
            // As the analysis runs: ReLU patterns frozen at theta.
            function.freeze_at(&theta64);
            let grad64 = median_seconds(repeats, 3, || {
                std::hint::black_box(function.gradient(&theta64));
            });
            let mut op = FiniteDifferenceHessian::new(&mut function, theta64.clone());
            let v: Vec<f64> = (0..theta64.len()).map(|_| rng.normal()).collect();
            let hvp = median_seconds(repeats, 3, || {
                std::hint::black_box(op.apply(&v));
            });

            let heads = model.heads.map_or("NA".to_string(), |h| h.to_string());
            println!(
                "{},{},{heads},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
                model.arch.display_name(),
                model.layers,
                model.hidden,
                layout.len,
                step * 1e3,
                grad * 1e3,
                point * 1e3,
                grad64 * 1e3,
                hvp * 1e3,
                point_taped * 1e3,
                grad_burn * 1e3,
                point_burn * 1e3,
            );
        }
    });
}
