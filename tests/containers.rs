//! The deployment files, run for real: `deploy/images/build.sh` builds the
//! images from the binaries of this test run, `deploy/compose/compose.yaml`
//! starts a coordinator container and two worker containers on a private
//! network, and the sweep must survive a worker container killed and the
//! coordinator container killed and started again.
//!
//! Needs a Docker engine and Compose (`docker-compose` or `docker
//! compose`). Without them the test says so and passes, except under
//! `CI=true`, where their absence is a failure.

use minima_e2e::binary;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SWEEP: &str = "
name: boxed
task: sequence-classification
data: {samples: 1500}
train: {epochs: 6}
analysis: {}
grid:
  - {arch: [lstm, gru], layers: [1], hidden: [4, 6, 8]}
seeds: [0, 1]
";
const BOXED_TASKS: usize = 12;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ok(output: &Output) -> bool {
    output.status.success()
}

/// The compose command here: `docker-compose`, or the `docker compose`
/// plugin; none when neither (or no Docker engine) answers.
fn compose_command() -> Option<Vec<&'static str>> {
    let answers = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| ok(&o))
    };
    if !answers("docker", &["info"]) {
        return None;
    }
    if answers("docker-compose", &["version"]) {
        Some(vec!["docker-compose"])
    } else if answers("docker", &["compose", "version"]) {
        Some(vec!["docker", "compose"])
    } else {
        None
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn docker(args: &[&str]) -> Output {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(ok(&output), "docker {args:?}: {}", text(&output));
    output
}

/// One compose project, taken down with its volumes and images on drop.
struct Stack {
    compose: Vec<&'static str>,
    project: String,
    tag: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        let file = root().join("deploy/compose/compose.yaml");
        let output = Command::new(self.compose[0])
            .args(&self.compose[1..])
            .arg("-f")
            .arg(&file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(ok(&output), "docker-compose {args:?}: {}", text(&output));
        output
    }

    fn containers(&self, service: &str) -> Vec<String> {
        let out = self.compose(&["ps", "-q", service]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let file = root().join("deploy/compose/compose.yaml");
        let _ = Command::new(self.compose[0])
            .args(&self.compose[1..])
            .arg("-f")
            .arg(&file)
            .args(["-p", &self.project, "down", "-v", "--timeout", "1"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        for image in ["minima-coordinator", "minima-worker"] {
            let _ = Command::new("docker")
                .args(["rmi", &format!("{image}:{}", self.tag)])
                .output();
        }
    }
}

/// Per task: (state, leases ever taken, results), or nothing before the
/// store exists.
fn store_rows(db: &Path) -> Vec<(String, i64, i64)> {
    if !db.is_file() {
        return Vec::new();
    }
    let Ok(db) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let rows = db
        .prepare(
            "SELECT t.state, t.leases, (SELECT count(*) FROM results r WHERE r.task_id = t.id)
             FROM tasks t ORDER BY t.rowid",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()
        });
    rows.unwrap_or_default()
}

fn finished(db: &Path) -> usize {
    store_rows(db).iter().filter(|r| r.0 == "finished").count()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Serialises the stacks of this file: each wants the two cores to itself,
/// or its short lease timeout would be measured against a starved worker.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds the images from this run's binaries and brings up a coordinator
/// running `sweep` (named `name`) and two workers, with a 3 s lease timeout.
/// Returns the stack and its data folder, which holds `results/`.
fn start_stack(name: &str, sweep: &str) -> (Stack, tempfile::TempDir, tempfile::TempDir) {
    let tag = format!("e2e-{name}-{}", std::process::id());
    let bin_dir = binary("coordinator").parent().unwrap().to_path_buf();
    let build = Command::new("bash")
        .arg(root().join("deploy/images/build.sh"))
        .args(["--bin-dir", bin_dir.to_str().unwrap(), "--tag", &tag])
        .output()
        .unwrap();
    assert!(ok(&build), "build.sh: {}", text(&build));

    let data = tempfile::tempdir().unwrap();
    let sweeps = tempfile::tempdir().unwrap();
    std::fs::write(sweeps.path().join(format!("{name}.yaml")), sweep).unwrap();
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap().stdout;
        String::from_utf8(out).unwrap().trim().to_string()
    };
    let stack = Stack {
        compose: compose_command().expect("a compose command"),
        project: format!("minima{name}{}", std::process::id()),
        tag: tag.clone(),
        env: vec![
            ("MINIMA_TAG".into(), tag),
            ("MINIMA_TOKEN".into(), "container-test-token".into()),
            ("MINIMA_DATA".into(), data.path().display().to_string()),
            ("MINIMA_SWEEPS".into(), sweeps.path().display().to_string()),
            ("MINIMA_SWEEP".into(), format!("/sweeps/{name}.yaml")),
            ("MINIMA_USER".into(), format!("{}:{}", id("-u"), id("-g"))),
            ("MINIMA_LEASE_TIMEOUT_MS".into(), "3000".into()),
            ("RUST_LOG".into(), "warn".into()),
        ],
    };
    stack.compose(&["up", "-d", "--scale", "worker=2"]);
    (stack, data, sweeps)
}

/// Skips (outside CI) when no Docker engine is at hand.
fn docker_or_skip() -> bool {
    if compose_command().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but no Docker engine with Compose answers"
    );
    eprintln!("skipped: no Docker engine with Compose here");
    false
}

/// Waits for the coordinator container to exit and asserts it exited 0.
fn wait_for_success(container: &str) {
    let waited = docker(&["wait", container]);
    let code = String::from_utf8_lossy(&waited.stdout).trim().to_string();
    let logs = Command::new("docker")
        .args(["logs", "--tail", "30", container])
        .output()
        .unwrap();
    assert_eq!(code, "0", "coordinator exit: {}", text(&logs));
}

#[test]
fn a_compose_stack_finishes_a_sweep_through_worker_and_coordinator_kills() {
    if !docker_or_skip() {
        return;
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (stack, data, _sweeps) = start_stack("boxed", SWEEP);
    let db = data.path().join("results/minima.db");

    // A worker container dies without a word: its lease expires and its
    // task runs elsewhere.
    wait_for("a first finished task", Duration::from_secs(300), || {
        finished(&db) >= 1
    });
    let workers = stack.containers("worker");
    assert_eq!(workers.len(), 2, "{workers:?}");
    docker(&["kill", &workers[0]]);
    // Tasks finished so far were leased once; neither kill may run them again.
    let done_before: Vec<usize> = store_rows(&db)
        .iter()
        .enumerate()
        .filter(|(_, r)| r.0 == "finished")
        .map(|(i, _)| i)
        .collect();

    // The coordinator container dies at once and is started again on its
    // volume.
    let coordinator = stack.containers("coordinator");
    assert_eq!(coordinator.len(), 1);
    docker(&["kill", &coordinator[0]]);
    assert!(
        done_before.len() < BOXED_TASKS,
        "the sweep ended before the kills: nothing was tested"
    );
    docker(&["start", &coordinator[0]]);

    wait_for_success(&coordinator[0]);

    let rows = store_rows(&db);
    assert_eq!(rows.len(), BOXED_TASKS, "{rows:?}");
    for (i, (state, leases, results)) in rows.iter().enumerate() {
        assert_eq!(state, "finished", "task {i}: {rows:?}");
        assert_eq!(*results, 1, "task {i}: {rows:?}");
        if done_before.contains(&i) {
            assert_eq!(*leases, 1, "task {i} finished before the kill ran again");
        }
    }
    let table = std::fs::read_to_string(data.path().join("results/boxed/table.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + BOXED_TASKS, "{table}");
}

/// Longer tasks, so a worker can be cut off in the middle of one.
const PARTITION_SWEEP: &str = "
name: split
task: sequence-classification
data: {samples: 1500}
train: {epochs: 20}
analysis: {}
grid:
  - {arch: [lstm, gru], layers: [1], hidden: [4, 6, 8, 10]}
";

/// The lease (id, task id, worker name) the store holds active, if any.
fn active_lease(db: &Path) -> Option<(String, String, String)> {
    let db = rusqlite::Connection::open(db).ok()?;
    db.query_row(
        "SELECT l.id, l.task_id, w.name FROM leases l JOIN workers w ON w.id = l.worker_id
         WHERE l.state = 'active' ORDER BY l.created_ms LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

fn lease_state(db: &Path, lease: &str) -> Option<String> {
    let db = rusqlite::Connection::open(db).ok()?;
    db.query_row("SELECT state FROM leases WHERE id = ?1", [lease], |r| {
        r.get(0)
    })
    .ok()
}

/// Leases taken by workers of this name after `since_ms`.
fn leases_since(db: &Path, name: &str, since_ms: i64) -> i64 {
    let db = rusqlite::Connection::open(db).unwrap();
    db.query_row(
        "SELECT count(*) FROM leases l JOIN workers w ON w.id = l.worker_id
         WHERE w.name = ?1 AND l.created_ms > ?2",
        rusqlite::params![name, since_ms],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_worker_cut_off_mid_task_loses_its_lease_and_rejoins() {
    if !docker_or_skip() {
        return;
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (stack, data, _sweeps) = start_stack("split", PARTITION_SWEEP);
    let db = data.path().join("results/minima.db");

    // A worker's name is its container's host name, the id's first 12 digits.
    let (lease, task, name) = {
        let mut found = None;
        wait_for("a running task", Duration::from_secs(300), || {
            found = active_lease(&db);
            found.is_some()
        });
        found.unwrap()
    };
    let container = stack
        .containers("worker")
        .into_iter()
        .find(|c| c.starts_with(&name))
        .unwrap_or_else(|| panic!("no worker container named {name}"));
    let network = format!("{}_minima", stack.project);
    docker(&["network", "disconnect", &network, &container]);
    wait_for(
        "the cut-off lease to expire",
        Duration::from_secs(60),
        || lease_state(&db, &lease).as_deref() == Some("expired"),
    );
    let reconnected_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    docker(&["network", "connect", &network, &container]);

    let coordinator = stack.containers("coordinator");
    wait_for_success(&coordinator[0]);

    let rows = store_rows(&db);
    assert_eq!(rows.len(), 8, "{rows:?}");
    for (i, (state, _, results)) in rows.iter().enumerate() {
        assert_eq!(state, "finished", "task {i}: {rows:?}");
        assert_eq!(*results, 1, "task {i}: {rows:?}");
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (leases, winner): (i64, String) = conn
        .query_row(
            "SELECT t.leases, r.lease_id FROM tasks t JOIN results r ON r.task_id = t.id
             WHERE t.id = ?1",
            [&task],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(leases >= 2, "the cut-off task ran again elsewhere");
    assert_ne!(winner, lease, "the late report of the expired lease won");
    assert!(
        leases_since(&db, &name, reconnected_ms) >= 1,
        "the reconnected worker took no new work"
    );
}
