//! How far the forward-difference Hessian-vector product (one gradient a
//! product, the default) is from second-order central differences, on
//! trained models of the study:
//!
//!     cargo bench -p minima-worker --bench fd_accuracy -- [--epochs 3]
//!
//! For each configuration: train (the study's protocol, `--epochs` epochs on
//! the default data), then over the Hessian's first 500 training sequences
//! and three random unit directions, print the largest relative distance
//! `|Hv_a - Hv_ref| / |Hv_ref|` of
//! - `central_h/4`: central differences with a quarter of the default step
//!   against the default central step (the reference's own error), and
//! - `forward`: forward differences with their default step against it,
//!
//! and the largest relative difference of the Rayleigh quotients `u^T H u`;
//! all with the ReLU activation patterns frozen at theta (as the analysis
//! runs), and, for `free_central_h/4`, without.

use minima_shared::task::{AnalysisSpec, DataSpec, TrainSpec};
use minima_shared::{Arch, ModelSpec, TaskKind, TaskSpec};
use minima_worker::data::Dataset;
use minima_worker::device::TrainDevice;
use minima_worker::hessian::linalg::norm;
use minima_worker::hessian::spectrum::Operator;
use minima_worker::hessian::{FiniteDifferenceHessian, LossFunction, Scheme};
use minima_worker::rng::Rng;
use minima_worker::train::train;

fn relative(a: &[f64], reference: &[f64]) -> f64 {
    let diff: Vec<f64> = a.iter().zip(reference).map(|(x, y)| x - y).collect();
    norm(&diff) / norm(reference)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let epochs = args
        .iter()
        .position(|a| a == "--epochs")
        .and_then(|i| args.get(i + 1))
        .map_or(3, |v| v.parse().expect("--epochs N"));
    let spec = |arch, layers, hidden, heads| ModelSpec {
        arch,
        layers,
        hidden,
        heads,
    };
    let models = [
        spec(Arch::Lstm, 1, 8, None),
        spec(Arch::Lstm, 11, 32, None),
        spec(Arch::Gru, 6, 16, None),
        spec(Arch::Gru, 11, 32, None),
        spec(Arch::Transformer, 1, 8, Some(1)),
        spec(Arch::Transformer, 6, 16, Some(2)),
        spec(Arch::Transformer, 11, 32, Some(4)),
    ];
    println!(
        "model,layers,heads,hidden,params,free_central_h/4,central_h/4,forward,forward_rayleigh"
    );
    for model in models {
        let kind = TaskKind::SequenceClassification;
        let mut train_spec = TrainSpec::for_task(kind);
        train_spec.epochs = epochs;
        let task = TaskSpec {
            task: kind,
            data: DataSpec::default(),
            model,
            train: train_spec,
            seed: 0,
            analysis: AnalysisSpec::default(),
        };
        let data = Dataset::generate(kind, &task.data);
        let theta: Vec<f64> = train(&task, &data, TrainDevice::Cpu, &mut |_| {})
            .theta_final
            .iter()
            .map(|&t| f64::from(t))
            .collect();
        let mut function = LossFunction::new(&model, kind, data.train.head(500));
        let mut free = LossFunction::new(&model, kind, data.train.head(500));
        function.freeze_at(&theta);
        let mut rng = Rng::new(11);
        let directions: Vec<Vec<f64>> = (0..3)
            .map(|_| {
                let v: Vec<f64> = (0..theta.len()).map(|_| rng.normal()).collect();
                let n = norm(&v);
                v.iter().map(|x| x / n).collect()
            })
            .collect();
        let products = |function: &mut LossFunction, scheme, shrink: f64| {
            let mut op = FiniteDifferenceHessian::with_scheme(function, theta.clone(), scheme);
            op.step /= shrink;
            directions.iter().map(|u| op.apply(u)).collect::<Vec<_>>()
        };
        let free_reference = products(&mut free, Scheme::Central, 1.0);
        let free_small = products(&mut free, Scheme::Central, 4.0);
        let reference = products(&mut function, Scheme::Central, 1.0);
        let small = products(&mut function, Scheme::Central, 4.0);
        let forward = products(&mut function, Scheme::Forward, 1.0);
        let worst_against = |a: &[Vec<f64>], reference: &[Vec<f64>]| {
            a.iter()
                .zip(reference)
                .map(|(x, r)| relative(x, r))
                .fold(0.0, f64::max)
        };
        let worst = |a: &[Vec<f64>]| worst_against(a, &reference);
        let rayleigh = forward
            .iter()
            .zip(&reference)
            .zip(&directions)
            .map(|((f, r), u)| (dot(u, f) - dot(u, r)).abs() / dot(u, r).abs())
            .fold(0.0, f64::max);
        let heads = model.heads.map_or("NA".to_string(), |h| h.to_string());
        println!(
            "{},{},{heads},{},{},{:.1e},{:.1e},{:.1e},{:.1e}",
            model.arch.display_name(),
            model.layers,
            model.hidden,
            theta.len(),
            worst_against(&free_small, &free_reference),
            worst(&small),
            worst(&forward),
            rayleigh
        );
    }
}
