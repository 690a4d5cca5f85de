//! A worker process with several slots: each slot registers on its own and
//! holds a lease of its own, so one process (one GPU) trains several tasks
//! at once; and devices this build lacks are refused before anything runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use minima_e2e::{binary, run, start_coordinator};

/// Two tasks of several seconds each.
const SWEEP: &str = "
name: slots
task: sequence-classification
data: {samples: 3000}
train: {epochs: 20}
analysis: {}
grid:
  - {arch: [lstm], layers: [1], hidden: [4]}
seeds: [0, 1]
";

/// The task lines of `coordinator --status`.
fn status(dir: &std::path::Path) -> Vec<String> {
    let output = run("coordinator", dir, &["--sweep", "slots.yaml", "--status"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn one_worker_process_with_two_slots_trains_two_tasks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slots.yaml"), SWEEP).unwrap();
    let (mut coordinator, url) = start_coordinator(
        dir.path(),
        &["--sweep", "slots.yaml", "--local-workers", "0"],
    );
    let mut worker = Command::new(binary("worker"))
        .args(["--coordinator", &url, "--exit-when-done", "--slots", "2"])
        .args(["--name", "gpu-box"])
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");

    let start = Instant::now();
    let mut both_leased = false;
    let finished = loop {
        if !both_leased {
            let lines = status(dir.path());
            both_leased = lines.iter().filter(|l| l.contains(",leased,")).count() == 2;
        }
        if let Some(code) = coordinator.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "sweep did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(worker.wait().unwrap().success());
    assert!(finished.success());
    assert!(both_leased, "the two slots never held a lease each at once");

    let lines = status(dir.path());
    let workers: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields[3], "finished", "{l}");
            fields[5]
        })
        .collect();
    assert_eq!(workers.len(), 2, "each slot finished one task: {lines:#?}");
}

/// Runs `name` with `args`, which must end in exit code 2 without a panic;
/// returns what it wrote on stderr.
fn refused(name: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let output = run(name, dir, args);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn devices_this_build_lacks_are_refused_with_the_feature_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused(
        "worker",
        dir.path(),
        &["--coordinator", "http://127.0.0.1:9", "--device", "cuda:0"],
    );
    assert!(
        stderr.contains("--device") && stderr.contains("--features cuda"),
        "{stderr}"
    );

    let stderr = refused(
        "coordinator",
        dir.path(),
        &["--sweep", "small", "--worker-device", "tpu"],
    );
    assert!(
        stderr.contains("worker_device (--worker-device): `tpu` is not a device"),
        "{stderr}"
    );
    assert!(!dir.path().join("results").exists(), "nothing was written");

    let stderr = refused(
        "worker",
        dir.path(),
        &["--coordinator", "http://127.0.0.1:9", "--slots", "0"],
    );
    assert!(stderr.contains("--slots: must be at least 1"), "{stderr}");
}
