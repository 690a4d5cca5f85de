//! Training and task runs: the loss goes down, a task is a function of its
//! configuration, and its folder holds what it promises.

use minima_shared::{Sweep, TaskSpec};
use minima_worker::device::TrainDevice;
use minima_worker::run::{read_finished, run_task, write_task_folder};

/// One small task per family: 600 sequences, 2 epochs, a light Hessian.
fn tasks() -> Vec<TaskSpec> {
    Sweep::from_yaml(
        "
name: t
task: sequence-classification
data: {samples: 600}
train: {epochs: 2}
analysis:
  hessian: {samples: 100, max_iterations: 20, trace_samples: 10, lanczos_steps: 10}
  interpolation: {points: 5, range: [-0.5, 1.5]}
grid:
  - {arch: [lstm, gru], layers: [2], hidden: [8]}
  - {arch: [transformer], layers: [2], heads: [2], hidden: [8]}
",
    )
    .unwrap()
    .tasks
}

#[test]
fn a_short_run_lowers_the_training_loss() {
    for spec in tasks() {
        let report = run_task(&spec, TrainDevice::Cpu, &mut |_| {});
        let m = &report.metrics;
        assert!(
            m.train_loss < m.initial_train_loss,
            "{}: {} -> {}",
            spec.model.label(),
            m.initial_train_loss,
            m.train_loss
        );
        assert_eq!(m.epochs.len(), 2);
        assert_eq!(m.params, spec.model.param_count());
        assert!(m.test_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
        assert!(
            m.top_eigenvalue.is_some_and(f64::is_finite),
            "{}",
            spec.model.label()
        );
        assert!(m.trace.is_some_and(f64::is_finite));
        assert!(m.adaptive_top_eigenvalue.is_some_and(f64::is_finite));
    }
}

#[test]
fn sequence_learning_lowers_the_mean_squared_error() {
    let spec = Sweep::from_yaml(
        "
name: t
task: sequence-learning
data: {samples: 600}
train: {epochs: 3}
analysis: {}
grid:
  - {arch: [transformer], layers: [1], heads: [1], hidden: [8]}
",
    )
    .unwrap()
    .tasks
    .remove(0);
    let m = run_task(&spec, TrainDevice::Cpu, &mut |_| {}).metrics;
    assert!(
        m.train_loss < m.initial_train_loss,
        "{} -> {}",
        m.initial_train_loss,
        m.train_loss
    );
    assert_eq!(m.test_accuracy, None);
    assert_eq!(m.top_eigenvalue, None, "no analysis was asked for");
}

#[test]
fn the_same_task_twice_gives_bit_identical_results() {
    for spec in tasks() {
        let a = run_task(&spec, TrainDevice::Cpu, &mut |_| {});
        let b = run_task(&spec, TrainDevice::Cpu, &mut |_| {});
        assert_eq!(a.metrics, b.metrics, "{}", spec.model.label());
        assert_eq!(
            a.training.theta_final,
            b.training.theta_final,
            "{}",
            spec.model.label()
        );
        // and another seed is another run
        let mut other = spec.clone();
        other.seed += 1;
        let c = run_task(&other, TrainDevice::Cpu, &mut |_| {});
        assert_ne!(a.training.theta_initial, c.training.theta_initial);
    }
}

#[test]
fn a_task_folder_holds_metrics_losses_and_both_weights() {
    let spec = tasks().remove(2);
    let report = run_task(&spec, TrainDevice::Cpu, &mut |_| {});
    let dir = tempfile::tempdir().unwrap();
    write_task_folder(dir.path(), &spec, &report).unwrap();
    for file in [
        "task.json",
        "epochs.csv",
        "metrics.json",
        "timings.json",
        "hessian.json",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let epochs = std::fs::read_to_string(dir.path().join("epochs.csv")).unwrap();
    assert_eq!(epochs.lines().count(), 1 + 2);
    assert!(epochs.starts_with("epoch,train_loss,validation_loss\n"));
    for (file, theta) in [
        (
            "weights_initial.safetensors",
            &report.training.theta_initial,
        ),
        ("weights_final.safetensors", &report.training.theta_final),
    ] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let out_bias = tensors.tensor("out.bias").unwrap();
        let stored = f32::from_le_bytes(out_bias.data().try_into().unwrap());
        assert_eq!(stored, *theta.last().unwrap(), "{file}");
    }
    assert_eq!(
        read_finished(dir.path(), &spec),
        Some(report.metrics.clone())
    );
    let mut other = spec.clone();
    other.seed = 9;
    assert_eq!(
        read_finished(dir.path(), &other),
        None,
        "metrics of another task are not reused"
    );
}

#[test]
fn interpolation_ends_are_the_initial_and_final_losses() {
    let spec = tasks().remove(0);
    let report = run_task(&spec, TrainDevice::Cpu, &mut |_| {});
    let line = report.interpolation.expect("the task asks for it");
    assert_eq!(line.alphas, [-0.5, 0.0, 0.5, 1.0, 1.5]);
    let m = &report.metrics;
    assert_eq!(line.train_loss[1], m.initial_train_loss);
    assert_eq!(line.test_loss[1], m.initial_test_loss);
    assert_eq!(line.train_loss[3], m.train_loss);
    assert_eq!(line.test_loss[3], m.test_loss);
}
