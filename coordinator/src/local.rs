//! Runs a sweep on this machine: worker threads in this process take tasks
//! from a queue, and the coordinator thread writes each result as it arrives.
//!
//! The output folder is the record of progress. A task is finished when its
//! folder holds `metrics.json` for its id (written last, atomically), so a
//! rerun after a crash or Ctrl-C skips finished tasks and runs only the rest.
//! TODO: the gRPC coordinator with its SQLite store replaces this in-process
//! scheduling; until then remote workers cannot join a sweep.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use anyhow::Context;
use minima_shared::{Sweep, TaskMetrics, TaskSpec};
use minima_worker::output::write_atomic;
use minima_worker::run::{read_finished, run_task, write_task_folder};
use minima_worker::with_compute_threads;
use tracing::{debug, error, info};

use crate::{figures, table};

/// How a local run is set up.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Root of all sweeps' outputs; the sweep writes under `<out>/<name>`.
    pub out: PathBuf,
    /// Worker threads; each trains one task at a time.
    pub workers: usize,
    /// CPU-kernel threads of each worker.
    pub threads_per_worker: usize,
}

/// What a local run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Tasks found finished in the output folder and not run again.
    pub reused: usize,
    /// Tasks trained in this run.
    pub ran: usize,
    /// Tasks that failed, with their reasons.
    pub failed: Vec<(TaskSpec, String)>,
    /// The sweep's output folder.
    pub dir: PathBuf,
    /// Figure files written (PNG and SVG).
    pub figures: usize,
}

/// The output folder of one task.
pub fn task_dir(sweep_dir: &Path, spec: &TaskSpec) -> PathBuf {
    sweep_dir.join("tasks").join(spec.folder_name())
}

enum Outcome {
    Finished(Box<TaskMetrics>, f64),
    Failed(String),
}

/// Runs every unfinished task of `sweep` and keeps `table.csv` current.
pub fn run_sweep(sweep: &Sweep, source: &str, options: &LocalOptions) -> anyhow::Result<Summary> {
    let dir = options.out.join(&sweep.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join("sweep.yaml"), source.as_bytes())
        .with_context(|| format!("cannot write into {}", dir.display()))?;

    // Finished results, indexed like `sweep.tasks`.
    let mut results: Vec<Option<TaskMetrics>> = sweep
        .tasks
        .iter()
        .map(|t| read_finished(&task_dir(&dir, t), t))
        .collect();
    let mut summary = Summary {
        reused: results.iter().flatten().count(),
        dir: dir.clone(),
        ..Summary::default()
    };
    write_table(&dir, sweep, &results)?;
    let pending: VecDeque<usize> = (0..sweep.tasks.len())
        .filter(|&i| results[i].is_none())
        .collect();
    let total = pending.len();
    eprintln!(
        "sweep {}: {} tasks, {} already finished, {} to run on {} local workers",
        sweep.name,
        sweep.tasks.len(),
        summary.reused,
        total,
        options.workers.min(total.max(1)),
    );
    if total == 0 {
        summary.figures = draw_figures(sweep, &dir, &results)?;
        return Ok(summary);
    }

    let queue = Mutex::new(pending);
    let (sender, receiver) = mpsc::channel::<(usize, Outcome)>();
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for worker in 0..options.workers.min(total) {
            let sender = sender.clone();
            let queue = &queue;
            let dir = &dir;
            scope.spawn(move || {
                with_compute_threads(options.threads_per_worker, || {
                    loop {
                        let Some(index) = queue.lock().expect("queue lock").pop_front() else {
                            break;
                        };
                        let spec = &sweep.tasks[index];
                        let outcome = run_one(worker, spec, &task_dir(dir, spec));
                        if sender.send((index, outcome)).is_err() {
                            break;
                        }
                    }
                })
            });
        }
        drop(sender);

        let mut done = 0;
        for (index, outcome) in receiver {
            done += 1;
            let spec = &sweep.tasks[index];
            match outcome {
                Outcome::Finished(metrics, seconds) => {
                    summary.ran += 1;
                    eprintln!(
                        "[{done}/{total}] {} seed {}: test loss {:.4} ({seconds:.1} s){}",
                        spec.model.label(),
                        spec.seed,
                        metrics.test_loss,
                        eta(started, done, total),
                    );
                    results[index] = Some(*metrics);
                    write_table(&dir, sweep, &results)?;
                }
                Outcome::Failed(reason) => {
                    eprintln!(
                        "[{done}/{total}] {} seed {}: FAILED: {reason}",
                        spec.model.label(),
                        spec.seed
                    );
                    summary.failed.push((spec.clone(), reason));
                }
            }
        }
        Ok(())
    })?;
    summary.figures = draw_figures(sweep, &dir, &results)?;
    Ok(summary)
}

/// Rewrites `table.csv` and the figures from the finished task folders,
/// running nothing; returns how many tasks were finished.
pub fn rebuild(sweep: &Sweep, options: &LocalOptions) -> anyhow::Result<(usize, usize)> {
    let dir = options.out.join(&sweep.name);
    anyhow::ensure!(
        dir.is_dir(),
        "no results of sweep {} in {}",
        sweep.name,
        options.out.display()
    );
    let results: Vec<Option<TaskMetrics>> = sweep
        .tasks
        .iter()
        .map(|t| read_finished(&task_dir(&dir, t), t))
        .collect();
    write_table(&dir, sweep, &results)?;
    let figures = draw_figures(sweep, &dir, &results)?;
    Ok((results.iter().flatten().count(), figures))
}

/// Draws the sweep's figures from its finished tasks; returns the number of
/// files written.
fn draw_figures(
    sweep: &Sweep,
    dir: &Path,
    results: &[Option<TaskMetrics>],
) -> anyhow::Result<usize> {
    let rows: Vec<(TaskSpec, TaskMetrics, PathBuf)> = sweep
        .tasks
        .iter()
        .zip(results)
        .filter_map(|(spec, m)| m.clone().map(|m| (spec.clone(), m, task_dir(dir, spec))))
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let files = figures::draw_sweep(&sweep.name, dir, &rows)?;
    info!(
        files = files.len(),
        seconds = started.elapsed().as_secs_f64(),
        "figures drawn"
    );
    Ok(files.len())
}

/// Trains one task and writes its folder; a panic inside burn becomes a
/// failure of this task alone.
fn run_one(worker: usize, spec: &TaskSpec, dir: &Path) -> Outcome {
    let task_id = spec.id();
    debug!(worker_id = worker, task_id = %task_id.short(), model = %spec.model.label(), "task started");
    let result = catch_unwind(AssertUnwindSafe(|| {
        let report = run_task(spec, &mut |e| {
            debug!(task_id = %task_id.short(), epoch = e.epoch, train_loss = e.train_loss, "epoch finished");
        });
        write_task_folder(dir, spec, &report).map(|()| report)
    }));
    match result {
        Ok(Ok(report)) => {
            info!(worker_id = worker, task_id = %task_id.short(), test_loss = report.metrics.test_loss, "task finished");
            Outcome::Finished(Box::new(report.metrics), report.timings.total_seconds)
        }
        Ok(Err(e)) => {
            error!(worker_id = worker, task_id = %task_id.short(), error = %e, "task failed");
            Outcome::Failed(format!("{e:#}"))
        }
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string());
            error!(worker_id = worker, task_id = %task_id.short(), error = %reason, "task panicked");
            Outcome::Failed(reason)
        }
    }
}

/// Rewrites `table.csv` with every finished task, in grid order.
fn write_table(dir: &Path, sweep: &Sweep, results: &[Option<TaskMetrics>]) -> anyhow::Result<()> {
    let rows: Vec<(TaskSpec, TaskMetrics)> = sweep
        .tasks
        .iter()
        .zip(results)
        .filter_map(|(spec, m)| m.clone().map(|m| (spec.clone(), m)))
        .collect();
    let path = dir.join("table.csv");
    write_atomic(&path, table::render(&rows).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `, about N s left` from the mean pace so far.
fn eta(started: Instant, done: usize, total: usize) -> String {
    if done >= total {
        return String::new();
    }
    let per_task = started.elapsed().as_secs_f64() / done as f64;
    format!(", about {:.0} s left", per_task * (total - done) as f64)
}
