//! The 2-D loss surface: filter normalisation, grid layout and chunking.

use minima_shared::task::SurfaceSpec;
use minima_shared::{Sweep, TaskSpec};
use minima_worker::data::Dataset;
use minima_worker::device::TrainDevice;
use minima_worker::landscape::{Plane, axis, filter_normalised_direction, surface, surface_points};
use minima_worker::model::{Layout, ParamKind};
use minima_worker::native::Evaluator;
use minima_worker::rng::Rng;
use minima_worker::train::train;

/// A briefly trained two-layer Transformer and its data.
fn trained() -> (TaskSpec, Dataset, Vec<f32>) {
    let spec = Sweep::from_yaml(
        "
name: t
task: sequence-classification
data: {samples: 300}
train: {epochs: 1}
analysis: {}
grid:
  - {arch: [transformer], layers: [2], heads: [2], hidden: [4]}
",
    )
    .unwrap()
    .tasks
    .remove(0);
    let data = Dataset::generate(spec.task, &spec.data);
    let theta = train(&spec, &data, TrainDevice::Cpu, &mut |_| {}).theta_final;
    (spec, data, theta)
}

fn row_norm(values: impl Iterator<Item = f64>) -> f64 {
    values.map(|v| v * v).sum::<f64>().sqrt()
}

#[test]
fn each_filter_of_a_direction_has_the_norm_of_the_same_filter_of_theta() {
    let (spec, _, theta) = trained();
    let layout = Layout::for_model(&spec.model);
    for include_vectors in [false, true] {
        let d = filter_normalised_direction(&layout, &theta, include_vectors, &mut Rng::new(4));
        for entry in &layout.entries {
            let range = entry.range();
            if entry.kind == ParamKind::Weight {
                let cols = entry.shape[1];
                for (d_row, t_row) in d[range.clone()].chunks(cols).zip(theta[range].chunks(cols)) {
                    let want = row_norm(t_row.iter().map(|&t| f64::from(t)));
                    let got = row_norm(d_row.iter().copied());
                    assert!(
                        (got - want).abs() < 1e-9 * want.max(1.0),
                        "{}: {got} vs {want}",
                        entry.name
                    );
                }
            } else if include_vectors {
                for (&dv, &t) in d[range.clone()].iter().zip(&theta[range]) {
                    assert_eq!(dv, f64::from(t), "{}", entry.name);
                }
            } else {
                assert!(
                    d[range].iter().all(|&v| v == 0.0),
                    "{} stays still",
                    entry.name
                );
            }
        }
    }
}

#[test]
fn the_centre_of_the_grid_is_the_trained_model() {
    let (spec, data, theta) = trained();
    let s = SurfaceSpec {
        resolution: 3,
        samples: 100,
        ..SurfaceSpec::default()
    };
    let (plane, grid) = surface(&spec, &data, &theta, &s);
    assert_eq!(grid.xs, [-1.0, 0.0, 1.0]);
    // Exactly the loss a task reports for its trained model.
    let mut native = Evaluator::<f32>::new(&spec.model, spec.task);
    assert_eq!(
        grid.train[4],
        native.evaluate(&theta, &data.train.head(100)).loss
    );
    assert_eq!(grid.test[4], native.evaluate(&theta, &data.test).loss);
    assert!(
        plane.cosine.abs() < 0.5,
        "random directions are far from parallel: {}",
        plane.cosine
    );
    assert!(grid.train.iter().all(|l| l.is_finite()));
}

/// A 3 x 2 grid: entry `j * 3 + i` must be the loss at `(xs[i], ys[j])`.
#[test]
fn a_non_square_grid_is_laid_out_row_by_y_and_column_by_x() {
    let (spec, data, theta) = trained();
    let layout = Layout::for_model(&spec.model);
    let plane = Plane::draw(&layout, &theta, false, 7);
    let train = data.train.head(50);
    let xs = [-0.5, 0.25, 1.0];
    let ys = [0.0, 0.75];
    let grid = surface_points(&spec, &train, &data.test, &theta, &plane, &xs, &ys, 0..6);
    let mut native = Evaluator::<f32>::new(&spec.model, spec.task);
    for (j, &y) in ys.iter().enumerate() {
        for (i, &x) in xs.iter().enumerate() {
            let point: Vec<f32> = theta
                .iter()
                .zip(plane.delta.iter().zip(&plane.eta))
                .map(|(&t, (d, e))| (f64::from(t) + x * d + y * e) as f32)
                .collect();
            assert_eq!(
                grid[j * 3 + i].0,
                native.evaluate(&point, &train).loss,
                "x {x}, y {y}"
            );
        }
    }
    // The losses differ along both axes, so a transposed grid could not pass.
    assert_ne!(grid[0].0, grid[2].0);
    assert_ne!(grid[0].0, grid[3].0);
}

#[test]
fn a_grid_computed_in_chunks_equals_the_whole_grid() {
    let (spec, data, theta) = trained();
    let plane = Plane::draw(&Layout::for_model(&spec.model), &theta, false, 1);
    let axis = axis([-1.0, 1.0], 4);
    let train = data.train.head(40);
    let whole = surface_points(
        &spec,
        &train,
        &data.test,
        &theta,
        &plane,
        &axis,
        &axis,
        0..16,
    );
    let mut chunks = surface_points(
        &spec,
        &train,
        &data.test,
        &theta,
        &plane,
        &axis,
        &axis,
        0..5,
    );
    chunks.extend(surface_points(
        &spec,
        &train,
        &data.test,
        &theta,
        &plane,
        &axis,
        &axis,
        5..16,
    ));
    assert_eq!(whole, chunks);
}
