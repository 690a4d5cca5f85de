//! Soak: 200 quick tasks, 20 worker processes, a random worker killed
//! (SIGKILL) and replaced every half second, and the coordinator killed twice and
//! restarted on its store. Every task must finish with exactly one result,
//! and no task finished before a coordinator kill may run again.
//! Real processes on loopback only; bounded at 10 minutes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minima_e2e::{binary, start_coordinator};

const TASKS: usize = 200;
const WORKERS: usize = 20;

fn sweep() -> String {
    let seeds: Vec<String> = (0..TASKS).map(|s| s.to_string()).collect();
    format!(
        "name: soak
task: sequence-classification
data: {{samples: 600}}
train: {{epochs: 4}}
analysis: {{}}
grid:
  - {{arch: [lstm], layers: [1], hidden: [2]}}
seeds: [{}]
",
        seeds.join(", ")
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn worker(dir: &Path, url: &str, n: usize) -> Child {
    Command::new(binary("worker"))
        .args(["--coordinator", url, "--exit-when-done"])
        .args(["--name", &format!("soak-{n}")])
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts")
}

/// Per task: (state, leases ever taken, results).
fn store_rows(db: &Path) -> Vec<(String, i64, i64)> {
    let Ok(db) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    db.prepare(
        "SELECT t.state, t.leases, (SELECT count(*) FROM results r WHERE r.task_id = t.id)
         FROM tasks t ORDER BY t.rowid",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_default()
}

fn finished(rows: &[(String, i64, i64)]) -> Vec<usize> {
    (0..rows.len())
        .filter(|&i| rows[i].0 == "finished")
        .collect()
}

/// xorshift64: which worker dies next, the same on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn two_hundred_tasks_survive_killed_workers_and_two_coordinator_kills() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("soak.yaml"), sweep()).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--sweep",
        "soak.yaml",
        "--local-workers",
        "0",
        "--lease-timeout-ms",
        "2000",
        "--listen",
        listen.as_str(),
    ];
    let db = dir.path().join("results/minima.db");
    let (mut coordinator, url) = start_coordinator(dir.path(), &args);
    let mut workers: Vec<Child> = (0..WORKERS).map(|n| worker(dir.path(), &url, n)).collect();

    let start = Instant::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut worker_kills = 0;
    let mut coordinator_kills = 0;
    let mut protected: Vec<(usize, i64)> = Vec::new();
    let mut last_kill = Instant::now();
    let code = loop {
        if let Some(code) = coordinator.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "sweep did not finish in 10 minutes: {} of {TASKS} finished",
            finished(&store_rows(&db)).len()
        );
        std::thread::sleep(Duration::from_millis(100));
        let done = finished(&store_rows(&db));
        if done.len() < TASKS && last_kill.elapsed() > Duration::from_millis(500) {
            let victim = (next(&mut rng) % WORKERS as u64) as usize;
            let _ = workers[victim].kill();
            let _ = workers[victim].wait();
            workers[victim] = worker(dir.path(), &url, victim);
            worker_kills += 1;
            last_kill = Instant::now();
        }
        let due = match coordinator_kills {
            0 => done.len() >= TASKS / 3,
            1 => done.len() >= 2 * TASKS / 3,
            _ => false,
        };
        if due && done.len() < TASKS {
            coordinator.kill().unwrap();
            coordinator.wait().unwrap();
            coordinator_kills += 1;
            let rows = store_rows(&db);
            protected.extend(finished(&rows).into_iter().map(|i| (i, rows[i].1)));
            std::thread::sleep(Duration::from_millis(300));
            coordinator = start_coordinator(dir.path(), &args).0;
        }
    };
    assert!(code.success(), "coordinator exit {code:?}");
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }

    let rows = store_rows(&db);
    assert_eq!(rows.len(), TASKS);
    for (i, (state, _, results)) in rows.iter().enumerate() {
        assert_eq!(state, "finished", "task {i}");
        assert_eq!(*results, 1, "task {i} has one result");
    }
    assert_eq!(coordinator_kills, 2, "the sweep ended before both kills");
    assert!(worker_kills >= 10, "only {worker_kills} workers killed");
    for &(i, leases) in &protected {
        assert_eq!(
            rows[i].1, leases,
            "task {i} finished before a kill and ran again"
        );
    }
    let leases: i64 = rows.iter().map(|r| r.1).sum();
    let table = std::fs::read_to_string(dir.path().join("results/soak/table.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + TASKS);
    eprintln!(
        "soak: {TASKS} tasks, {WORKERS} workers, {worker_kills} workers killed, \
         {coordinator_kills} coordinator kills, {leases} leases, {:.0} s",
        start.elapsed().as_secs_f64()
    );
}
