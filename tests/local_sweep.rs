//! A whole sweep through the real `coordinator` binary on this machine:
//! two local workers share it, a rerun resumes, added grid points run alone.

use std::path::Path;

use minima_e2e::{assert_success, run};

const SWEEP: &str = "
name: e2e
task: sequence-classification
data: {samples: 300}
train: {epochs: 1}
analysis:
  hessian: {samples: 100, max_iterations: 20, trace_samples: 10, lanczos_steps: 10}
  interpolation: {points: 5}
grid:
  - {arch: [lstm, gru], layers: [1], hidden: [4]}
  - {arch: [transformer], layers: [1], heads: [2], hidden: [4]}
seeds: [0, 1]
";

fn table(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("results/e2e/table.csv")).unwrap();
    text.lines().map(str::to_string).collect()
}

fn metrics_mtimes(dir: &Path) -> Vec<std::time::SystemTime> {
    let mut times: Vec<_> = std::fs::read_dir(dir.join("results/e2e/tasks"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .join("metrics.json")
                .metadata()
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    times.sort();
    times
}

#[test]
fn two_local_workers_run_a_sweep_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("e2e.yaml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let sweep = sweep.to_str().unwrap();

    let output = run(
        "coordinator",
        dir.path(),
        &["--sweep", sweep, "--local-workers", "2"],
    );
    assert_success(&output);
    let rows = table(dir.path());
    assert!(rows[0].starts_with("model,layers,heads,hidden,params,top_eigenvalue,trace,test_loss"));
    assert_eq!(rows.len(), 1 + 6, "{rows:#?}");
    assert!(
        rows[1].starts_with("LSTM,1,NA,4,"),
        "grid order: {}",
        rows[1]
    );
    assert!(rows.iter().any(|r| r.starts_with("Transformer,1,2,4,")));
    for task in std::fs::read_dir(dir.path().join("results/e2e/tasks")).unwrap() {
        let task = task.unwrap().path();
        for file in [
            "metrics.json",
            "epochs.csv",
            "weights_initial.safetensors",
            "weights_final.safetensors",
        ] {
            assert!(task.join(file).is_file(), "{} lacks {file}", task.display());
        }
    }

    let figures = dir.path().join("results/e2e/figures");
    for name in ["test_loss", "top_eigenvalue", "trace", "interpolation"] {
        for ext in ["png", "svg"] {
            let file = figures.join(format!("{name}.{ext}"));
            assert!(
                file.metadata().is_ok_and(|m| m.len() > 1000),
                "{} drawn",
                file.display()
            );
        }
    }

    // The table and figures can be rebuilt from the task folders alone.
    std::fs::remove_file(dir.path().join("results/e2e/table.csv")).unwrap();
    std::fs::remove_dir_all(&figures).unwrap();
    let output = run("coordinator", dir.path(), &["--sweep", sweep, "--report"]);
    assert_success(&output);
    assert_eq!(table(dir.path()), rows);
    assert!(figures.join("test_loss.png").is_file());

    // A rerun trains nothing and leaves every result as it was.
    let before = metrics_mtimes(dir.path());
    let output = run("coordinator", dir.path(), &["--sweep", sweep]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("6 already finished, 0 to run"), "{stderr}");
    assert_eq!(metrics_mtimes(dir.path()), before);
    assert_eq!(table(dir.path()), rows);

    // One more hidden size: only its two tasks run.
    let grown = SWEEP.replace(
        "hidden: [4]}\n  - {arch: [transformer]",
        "hidden: [4, 6]}\n  - {arch: [transformer]",
    );
    std::fs::write(dir.path().join("e2e.yaml"), grown).unwrap();
    let output = run("coordinator", dir.path(), &["--sweep", sweep]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("10 tasks, 6 already finished, 4 to run"),
        "{stderr}"
    );
    assert_eq!(table(dir.path()).len(), 1 + 10);
}

#[test]
fn worker_run_twice_writes_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &'static str| {
        vec![
            "run",
            "--arch",
            "gru",
            "--layers",
            "2",
            "--hidden",
            "4",
            "--samples",
            "300",
            "--epochs",
            "1",
            "--out",
            out,
        ]
    };
    assert_success(&run("worker", dir.path(), &args("a")));
    assert_success(&run("worker", dir.path(), &args("b")));
    let a = std::fs::read(dir.path().join("a/metrics.json")).unwrap();
    let b = std::fs::read(dir.path().join("b/metrics.json")).unwrap();
    assert_eq!(a, b);
    let output = run(
        "worker",
        dir.path(),
        &[
            "run",
            "--arch",
            "transformer",
            "--layers",
            "1",
            "--hidden",
            "6",
            "--heads",
            "4",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--heads: 4 heads do not divide hidden size 6"),
        "{stderr}"
    );
}
