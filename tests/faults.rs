//! Failures between real coordinator and worker processes on loopback: a
//! worker killed in the middle of training, and workers with a wrong token.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minima_e2e::{binary, run, start_coordinator};

/// One task long enough (several seconds) to be killed in the middle.
const SWEEP: &str = "
name: faults
task: sequence-classification
data: {samples: 3000}
train: {epochs: 30}
analysis: {}
grid:
  - {arch: [lstm], layers: [1], hidden: [4]}
";

/// Starts a coordinator without local workers; returns it and its URL.
fn coordinator(dir: &Path, extra: &[&str]) -> (Child, String) {
    let mut args = vec![
        "--sweep",
        "faults.yaml",
        "--local-workers",
        "0",
        "--lease-timeout-ms",
        "1500",
    ];
    args.extend_from_slice(extra);
    start_coordinator(dir, &args)
}

fn worker(dir: &Path, url: &str, extra: &[&str]) -> Child {
    Command::new(binary("worker"))
        .args(["--coordinator", url, "--exit-when-done"])
        .args(extra)
        .current_dir(dir)
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts")
}

/// The task's line of `coordinator --status`.
fn status(dir: &Path) -> String {
    let output = run("coordinator", dir, &["--sweep", "faults.yaml", "--status"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_worker_loses_its_lease_and_another_finishes_the_task() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("faults.yaml"), SWEEP).unwrap();
    let (mut coordinator, url) = coordinator(dir.path(), &[]);

    let mut first = worker(dir.path(), &url, &["--name", "first"]);
    wait_for("the first worker's lease", Duration::from_secs(30), || {
        status(dir.path()).contains(",leased,")
    });
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = worker(dir.path(), &url, &["--name", "second"]);
    let start = Instant::now();
    let finished = loop {
        if let Some(code) = coordinator.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "sweep did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = second.wait();
    assert!(finished.success());

    // Finished once, by the second worker, and the lost worker was not
    // charged an attempt.
    let line = status(dir.path());
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields[3], "finished", "{line}");
    assert_eq!(fields[4], "0", "attempts charged: {line}");
    assert!(
        fields[5].starts_with("W2-"),
        "the second worker's lease finished it: {line}"
    );
    let table = std::fs::read_to_string(dir.path().join("results/faults/table.csv")).unwrap();
    assert_eq!(table.lines().count(), 2, "{table}");
    assert_eq!(table, table_without_faults(dir.path(), "faults.yaml"));
}

/// The table of the same sweep run again without faults, by local workers,
/// in a folder of its own.
fn table_without_faults(dir: &Path, sweep: &str) -> String {
    let output = run(
        "coordinator",
        dir,
        &["--sweep", sweep, "--out", "clean", "--local-workers", "2"],
    );
    minima_e2e::assert_success(&output);
    let name = sweep.trim_end_matches(".yaml");
    std::fs::read_to_string(dir.join("clean").join(name).join("table.csv")).unwrap()
}

#[test]
fn workers_without_the_right_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("faults.yaml"), SWEEP).unwrap();
    let (mut coordinator, url) = coordinator(dir.path(), &["--token", "s3cret"]);
    for token in [Some("wrong"), None] {
        let mut command = Command::new(binary("worker"));
        command
            .args(["--coordinator", &url, "--exit-when-done"])
            .env_remove("MINIMA_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{token:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("refused this worker"), "{stderr}");
    }
    assert!(
        status(dir.path()).contains(",pending,"),
        "nothing was leased"
    );
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
}

/// Several quick tasks, so the coordinator can be killed between them.
const RESTART_SWEEP: &str = "
name: restart
task: sequence-classification
data: {samples: 1500}
train: {epochs: 6}
analysis: {}
grid:
  - {arch: [lstm, gru], layers: [1], hidden: [4, 6, 8]}
";

/// A loopback port free now, so a restarted coordinator can take it again.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Per task of the store, in grid order: (state, number of leases ever
/// taken, number of results). Read beside a running coordinator (WAL).
fn store_rows(db: &Path) -> Vec<(String, i64, i64)> {
    if !db.is_file() {
        return Vec::new();
    }
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT t.state, t.leases, (SELECT count(*) FROM results r WHERE r.task_id = t.id)
             FROM tasks t ORDER BY t.rowid",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_coordinator_killed_mid_sweep_restarts_on_its_store_and_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("restart.yaml"), RESTART_SWEEP).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--sweep",
        "restart.yaml",
        "--local-workers",
        "0",
        "--lease-timeout-ms",
        "3000",
        "--listen",
        listen.as_str(),
    ];
    let (mut coordinator, url) = start_coordinator(dir.path(), &args);
    let mut worker = worker(dir.path(), &url, &["--name", "survivor"]);
    let db = dir.path().join("results/minima.db");
    let finished = |rows: &[(String, i64, i64)]| rows.iter().filter(|r| r.0 == "finished").count();
    wait_for("a first finished task", Duration::from_secs(120), || {
        finished(&store_rows(&db)) >= 1
    });
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let before = store_rows(&db);
    let done_before: Vec<usize> = (0..before.len())
        .filter(|&i| before[i].0 == "finished")
        .collect();
    assert!(done_before.len() < before.len(), "killed before the end");

    // The worker keeps retrying; the new coordinator takes the same port.
    std::thread::sleep(Duration::from_millis(500));
    let (mut coordinator, _) = start_coordinator(dir.path(), &args);
    let start = Instant::now();
    let code = loop {
        if let Some(code) = coordinator.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "sweep did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(code.success(), "restarted coordinator exit {code:?}");
    let _ = worker.wait();

    let after = store_rows(&db);
    assert_eq!(after.len(), 6);
    for (i, (state, leases, results)) in after.iter().enumerate() {
        assert_eq!(state, "finished", "task {i}: {after:?}");
        assert_eq!(*results, 1, "task {i} has one result");
        if done_before.contains(&i) {
            assert_eq!(*leases, 1, "task {i} finished before the kill ran again");
        }
    }
    let table = std::fs::read_to_string(dir.path().join("results/restart/table.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 6, "{table}");
    assert_eq!(table, table_without_faults(dir.path(), "restart.yaml"));
}

#[test]
fn a_worker_gives_up_on_an_unreachable_coordinator_with_its_address() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let url = "http://127.0.0.1:9";
    let start = Instant::now();
    let output = run(
        "worker",
        dir.path(),
        &["--coordinator", url, "--give-up-after", "1"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot reach the coordinator at http://127.0.0.1:9 (tried for 1 s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30));
}
