//! The sweep's output folder: task folders written from stored results,
//! `table.csv`, and the figures.
//!
//! The store is the record; the folder is derived from it and can be
//! rewritten at any time (`--report`), so a crash between acknowledging a
//! result and writing its files loses nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use minima_shared::{Sweep, TaskMetrics, TaskSpec};
use minima_worker::output::write_atomic;
use minima_worker::run::METRICS_FILE;
use tracing::info;

use crate::store::Store;
use crate::{figures, table};

/// The output folder of one task.
pub fn task_dir(sweep_dir: &Path, spec: &TaskSpec) -> PathBuf {
    sweep_dir.join("tasks").join(spec.folder_name())
}

/// A name that stays inside its folder: no separators, no `..`, no dot file.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Writes a task's files into `dir`, `metrics.json` last, each atomically.
pub fn write_artifacts(dir: &Path, artifacts: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (last, rest): (Vec<_>, Vec<_>) =
        artifacts.iter().partition(|(name, _)| name == METRICS_FILE);
    for (name, content) in rest.into_iter().chain(last) {
        write_atomic(&dir.join(name), content)
            .with_context(|| format!("cannot write {name} in {}", dir.display()))?;
    }
    Ok(())
}

/// The metrics of every task of `sweep` that the store holds a result of,
/// indexed like `sweep.tasks`.
pub fn stored_results(store: &Store, sweep: &Sweep) -> anyhow::Result<Vec<Option<TaskMetrics>>> {
    let mut stored = store.sweep_results(&sweep.name)?;
    if stored.is_empty() {
        return Ok(vec![None; sweep.tasks.len()]);
    }
    sweep
        .tasks
        .iter()
        .map(|spec| {
            let id = spec.id();
            let Some(json) = stored.remove(id.as_str()) else {
                return Ok(None);
            };
            let metrics = serde_json::from_str(&json)
                .with_context(|| format!("stored metrics of task {} do not parse", id.short()))?;
            Ok(Some(metrics))
        })
        .collect()
}

/// Rewrites the folder of every finished task whose `metrics.json` is
/// missing, from the store. Returns how many were written.
pub fn materialise(store: &Store, sweep: &Sweep, dir: &Path) -> anyhow::Result<usize> {
    let finished = store.sweep_results(&sweep.name)?;
    if finished.is_empty() {
        return Ok(0);
    }
    let mut written = 0;
    for spec in &sweep.tasks {
        let id = spec.id();
        if !finished.contains_key(id.as_str()) {
            continue;
        }
        let task_dir = task_dir(dir, spec);
        if task_dir.join(METRICS_FILE).is_file() {
            continue;
        }
        let artifacts = store.artifacts(id.as_str())?;
        if !artifacts.is_empty() {
            write_artifacts(&task_dir, &artifacts)?;
            written += 1;
        }
    }
    Ok(written)
}

/// Rewrites `table.csv` with every finished task, in grid order.
pub fn write_table(
    dir: &Path,
    sweep: &Sweep,
    results: &[Option<TaskMetrics>],
) -> anyhow::Result<()> {
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

/// Draws the sweep's figures from its finished tasks; returns the number of
/// files written.
pub fn draw_figures(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_cannot_leave_their_folder() {
        assert!(is_plain_file_name("weights_final.safetensors"));
        for bad in ["", "../x", "a/b", ".hidden", "..", "c:\\x", "a b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
