//! The coordinator's store: sweeps, tasks, leases, results and artifacts in
//! one SQLite file (WAL), and the lease state machine on top of it.
//!
//! Every change is one transaction, committed before the caller answers a
//! worker, so a coordinator killed at any instant restarts on the same file
//! and loses nothing it acknowledged. Time is an argument (`now_ms`), never
//! read here, so the tests drive the clock.
//!
//! # Lease state machine
//!
//! A task is `pending`, `leased`, `finished` or `failed`. `lease` moves the
//! first pending task whose backoff has passed to `leased` and creates an
//! `active` lease with a deadline; at most one lease of a task is active.
//! `heartbeat` pushes deadlines forward; `reap` expires leases past their
//! deadline and returns their tasks to `pending` without charging an
//! attempt (the worker was lost, the task did nothing wrong). Reports name
//! a lease: `complete`, `fail` and `release` are accepted only from the
//! task's active lease, so a late report from an expired or replaced lease,
//! or a forged one, changes nothing. The first result wins and a finished
//! task is never rewritten. `fail` charges an attempt and retries after an
//! exponential backoff until `max_attempts`, then marks the task failed.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Savepoint, params};

/// Lease and retry settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// A lease not renewed for this long expires.
    pub lease_timeout_ms: i64,
    /// Attempts a task may fail (by itself) before it is marked failed.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub backoff_ms: i64,
    /// Longest backoff.
    pub max_backoff_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lease_timeout_ms: 15_000,
            max_attempts: 3,
            backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("lease {0} is unknown")]
    UnknownLease(String),
    #[error("lease {lease} is {state}, not active")]
    NotActive { lease: String, state: String },
    #[error("lease {lease} does not hold task {task}")]
    WrongTask { lease: String, task: String },
}

/// Errors of the store: the database itself, or a refused report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the file is a SQLite database of another program, not a minima store")]
    Foreign,
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub task_id: String,
    pub lease_id: String,
    pub spec_json: String,
    /// 1 for the first lease of the task, counting every lease.
    pub lease_number: u32,
}

/// Counts of a sweep's tasks by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub pending: usize,
    pub leased: usize,
    pub finished: usize,
    pub failed: usize,
}

impl Progress {
    pub fn total(&self) -> usize {
        self.pending + self.leased + self.finished + self.failed
    }

    pub fn is_done(&self) -> bool {
        self.pending == 0 && self.leased == 0
    }
}

/// One task's row for status displays.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: String,
    pub attempts: u32,
    pub worker_id: Option<String>,
    pub last_error: Option<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, source TEXT NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'finished', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    leases INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT);
CREATE TABLE IF NOT EXISTS sweep_tasks (
    sweep TEXT NOT NULL, task_id TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (sweep, task_id));
-- Status displays list a sweep in grid order.
CREATE INDEX IF NOT EXISTS sweep_order ON sweep_tasks (sweep, position);
-- Leasing takes the oldest pending task (a sweep adds its tasks costliest
-- first). The rowid is this index's last column, so it walks pending tasks
-- only, in the order they were added:
-- walking the sweep in grid order instead skipped every leased and finished
-- task first, which made each lease slower the further a sweep had come.
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'expired', 'released', 'completed', 'failed')),
    deadline_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_lease ON leases (task_id) WHERE state = 'active';
-- The reaper looks at active leases only.
CREATE INDEX IF NOT EXISTS active_deadlines ON leases (deadline_ms) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY, lease_id TEXT NOT NULL, metrics_json TEXT NOT NULL,
    finished_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    task_id TEXT NOT NULL, name TEXT NOT NULL, content BLOB NOT NULL,
    PRIMARY KEY (task_id, name));
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, device TEXT NOT NULL,
    registered_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
";

/// Marks a database as ours, so a foreign SQLite file is refused.
const FORMAT: &str = "minima-store-v1";

/// 64 bits from the operating system's per-process random hash keys.
fn random_bits() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

/// One change in progress; rolled back if dropped before `commit`.
enum Write<'a> {
    Transaction(rusqlite::Transaction<'a>),
    Savepoint(Savepoint<'a>),
}

impl Write<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Write::Transaction(tx) => tx.commit(),
            Write::Savepoint(sp) => sp.commit(),
        }
    }
}

impl std::ops::Deref for Write<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Write::Transaction(tx) => tx,
            Write::Savepoint(sp) => sp,
        }
    }
}

/// The store, over one SQLite connection.
pub struct Store {
    db: Connection,
    policy: Policy,
}

impl Store {
    /// Opens (creating if needed) the store at `path`. A file that is not
    /// SQLite, or a SQLite database of something else, is refused.
    pub fn open(path: &Path, policy: Policy) -> Result<Store, StoreError> {
        let db = Connection::open(path)?;
        Store::init(db, policy)
    }

    /// Opens an existing store to read it beside the connection that writes
    /// (WAL lets readers and one writer work at once). Creates nothing.
    pub fn reader(path: &Path) -> Result<Store, StoreError> {
        let db = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let format: Option<String> = db
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()
            .unwrap_or(None);
        if format.as_deref() != Some(FORMAT) {
            return Err(StoreError::Foreign);
        }
        Ok(Store {
            db,
            policy: Policy::default(),
        })
    }

    /// A store in memory, for tests.
    #[cfg(test)]
    pub fn in_memory(policy: Policy) -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, policy)
    }

    fn init(db: Connection, policy: Policy) -> Result<Store, StoreError> {
        // The format is checked before anything is set: switching a foreign
        // database to WAL would already rewrite its header.
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let tables: i64 = db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            let format: Option<String> = db
                .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                    r.get(0)
                })
                .optional()
                .unwrap_or(None);
            if format.as_deref() != Some(FORMAT) {
                return Err(StoreError::Foreign);
            }
        }
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?1)",
            params![FORMAT],
        )?;
        Ok(Store { db, policy })
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Starts one change: its own immediate transaction, or a savepoint when
    /// it runs inside a [`batch`](Store::batch), so that a refused change
    /// rolls back alone and the others of the batch still commit.
    fn write(&mut self) -> Result<Write<'_>, StoreError> {
        Ok(if self.db.is_autocommit() {
            Write::Transaction(
                self.db
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
            )
        } else {
            Write::Savepoint(self.db.savepoint()?)
        })
    }

    /// Runs `changes` in one transaction and commits them together: one
    /// write to disk (fsync) for the whole batch instead of one per change.
    /// Returns what `changes` returned and whether the commit succeeded; the
    /// caller must acknowledge nothing of the batch unless it did. When the
    /// transaction cannot begin (another process holds the write lock past
    /// the busy timeout) each change runs in its own transaction instead.
    pub fn batch<R>(
        &mut self,
        changes: impl FnOnce(&mut Store) -> R,
    ) -> (R, Result<(), StoreError>) {
        let grouped = self.db.execute_batch("BEGIN IMMEDIATE").is_ok();
        let out = changes(self);
        if !grouped {
            return (out, Ok(()));
        }
        match self.db.execute_batch("COMMIT") {
            Ok(()) => (out, Ok(())),
            Err(e) => {
                let _ = self.db.execute_batch("ROLLBACK");
                (out, Err(e.into()))
            }
        }
    }

    /// Records a sweep and its tasks, given in grid order as (id,
    /// configuration, estimated cost). Tasks already known, from this or
    /// another sweep, keep their state and results. New tasks are leased
    /// costliest first (ties in grid order), so that with several workers
    /// the longest tasks do not start last and leave the others idle.
    pub fn add_sweep(
        &mut self,
        name: &str,
        source: &str,
        tasks: &[(String, String, f64)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO sweeps (name, source, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET source = ?2, updated_ms = ?3",
            params![name, source, now_ms],
        )?;
        tx.execute("DELETE FROM sweep_tasks WHERE sweep = ?1", params![name])?;
        // Leases follow the order tasks were added in (see tasks_by_state).
        let mut by_cost: Vec<&(String, String, f64)> = tasks.iter().collect();
        by_cost.sort_by(|a, b| b.2.total_cmp(&a.2));
        for (id, spec_json, _) in by_cost {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO tasks (id, spec_json, state) VALUES (?1, ?2, 'pending')",
            )?
            .execute(params![id, spec_json])?;
        }
        for (position, (id, _, _)) in tasks.iter().enumerate() {
            tx.prepare_cached(
                "INSERT INTO sweep_tasks (sweep, task_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![name, id, position as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a worker; returns nothing it did not know before.
    pub fn register_worker(
        &mut self,
        id: &str,
        name: &str,
        device: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO workers (id, name, device, registered_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (id) DO UPDATE SET last_seen_ms = ?4",
            params![id, name, device, now_ms],
        )?;
        Ok(())
    }

    /// Atomically hands the first ready pending task of `sweep` to `worker`.
    pub fn lease(
        &mut self,
        sweep: &str,
        worker: &str,
        now_ms: i64,
    ) -> Result<Option<Assignment>, StoreError> {
        let timeout = self.policy.lease_timeout_ms;
        let tx = self.write()?;
        let task: Option<(String, String, u32)> = tx
            .prepare_cached(
                "SELECT t.id, t.spec_json, t.leases FROM tasks t INDEXED BY tasks_by_state
                 WHERE t.state = 'pending' AND t.not_before_ms <= ?2
                   AND EXISTS (SELECT 1 FROM sweep_tasks s WHERE s.sweep = ?1 AND s.task_id = t.id)
                 ORDER BY t.rowid LIMIT 1",
            )?
            .query_row(params![sweep, now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((task_id, spec_json, leases)) = task else {
            return Ok(None);
        };
        let lease_number = leases + 1;
        // A sequence number makes it unique; random bits make it unguessable.
        let sequence: i64 =
            tx.query_row("SELECT COALESCE(MAX(rowid), 0) + 1 FROM leases", [], |r| {
                r.get(0)
            })?;
        let lease_id = format!("L{sequence}-{:016x}", random_bits());
        tx.execute(
            "UPDATE tasks SET state = 'leased', leases = ?2 WHERE id = ?1",
            params![task_id, lease_number],
        )?;
        tx.execute(
            "INSERT INTO leases (id, task_id, worker_id, state, deadline_ms, created_ms)
             VALUES (?1, ?2, ?3, 'active', ?4, ?5)",
            params![lease_id, task_id, worker, now_ms + timeout, now_ms],
        )?;
        tx.execute(
            "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
            params![worker, now_ms],
        )?;
        tx.commit()?;
        Ok(Some(Assignment {
            task_id,
            lease_id,
            spec_json,
            lease_number,
        }))
    }

    /// Renews the worker's active leases among `leases`; returns those that
    /// are no longer active (the worker should stop working on them).
    pub fn heartbeat(
        &mut self,
        worker: &str,
        leases: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let timeout = self.policy.lease_timeout_ms;
        let tx = self.write()?;
        let mut lost = Vec::new();
        for lease in leases {
            let renewed = tx
                .prepare_cached(
                    "UPDATE leases SET deadline_ms = ?3
                     WHERE id = ?1 AND worker_id = ?2 AND state = 'active' AND deadline_ms >= ?4",
                )?
                .execute(params![lease, worker, now_ms + timeout, now_ms])?;
            if renewed == 0 {
                lost.push(lease.clone());
            }
        }
        tx.execute(
            "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
            params![worker, now_ms],
        )?;
        tx.commit()?;
        Ok(lost)
    }

    /// Expires every active lease past its deadline and returns its task to
    /// the queue, uncharged. Returns the expired lease ids.
    pub fn reap(&mut self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let tx = self.write()?;
        let expired: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT id, task_id FROM leases WHERE state = 'active' AND deadline_ms < ?1",
            )?;
            let rows = stmt.query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (lease, task) in &expired {
            tx.execute(
                "UPDATE leases SET state = 'expired' WHERE id = ?1",
                params![lease],
            )?;
            tx.execute(
                "UPDATE tasks SET state = 'pending', not_before_ms = ?2 WHERE id = ?1 AND state = 'leased'",
                params![task, now_ms],
            )?;
        }
        tx.commit()?;
        Ok(expired.into_iter().map(|(lease, _)| lease).collect())
    }

    /// The active lease `lease` of `task`, or why a report from it is refused.
    fn check_active(
        tx: &Connection,
        lease: &str,
        task: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let row: Option<(String, String, i64)> = tx
            .query_row(
                "SELECT task_id, state, deadline_ms FROM leases WHERE id = ?1",
                params![lease],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((lease_task, state, deadline)) = row else {
            return Err(Rejection::UnknownLease(lease.to_string()).into());
        };
        if lease_task != task {
            return Err(Rejection::WrongTask {
                lease: lease.to_string(),
                task: task.to_string(),
            }
            .into());
        }
        if state != "active" || deadline < now_ms {
            let state = if state == "active" {
                "expired".to_string()
            } else {
                state
            };
            return Err(Rejection::NotActive {
                lease: lease.to_string(),
                state,
            }
            .into());
        }
        Ok(())
    }

    /// Stores the result of `task` reported under `lease`, with its files.
    pub fn complete(
        &mut self,
        lease: &str,
        task: &str,
        metrics_json: &str,
        artifacts: &[(String, Vec<u8>)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        Store::check_active(&tx, lease, task, now_ms)?;
        tx.execute(
            "INSERT INTO results (task_id, lease_id, metrics_json, finished_ms) VALUES (?1, ?2, ?3, ?4)",
            params![task, lease, metrics_json, now_ms],
        )?;
        for (name, content) in artifacts {
            tx.execute(
                "INSERT OR REPLACE INTO artifacts (task_id, name, content) VALUES (?1, ?2, ?3)",
                params![task, name, content],
            )?;
        }
        tx.execute(
            "UPDATE leases SET state = 'completed' WHERE id = ?1",
            params![lease],
        )?;
        tx.execute(
            "UPDATE tasks SET state = 'finished', last_error = NULL WHERE id = ?1",
            params![task],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that `task` failed by itself under `lease`: retried after a
    /// backoff, or failed for good after `max_attempts`. Returns whether the
    /// task will be retried.
    pub fn fail(
        &mut self,
        lease: &str,
        task: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let policy = self.policy;
        let tx = self.write()?;
        Store::check_active(&tx, lease, task, now_ms)?;
        let attempts: u32 = tx.query_row(
            "SELECT attempts FROM tasks WHERE id = ?1",
            params![task],
            |r| r.get(0),
        )?;
        let attempts = attempts + 1;
        let retry = attempts < policy.max_attempts;
        let backoff = (policy.backoff_ms << (attempts - 1).min(30)).min(policy.max_backoff_ms);
        tx.execute(
            "UPDATE leases SET state = 'failed' WHERE id = ?1",
            params![lease],
        )?;
        tx.execute(
            "UPDATE tasks SET attempts = ?2, last_error = ?3, state = ?4, not_before_ms = ?5 WHERE id = ?1",
            params![task, attempts, reason, if retry { "pending" } else { "failed" }, now_ms + backoff],
        )?;
        tx.commit()?;
        Ok(retry)
    }

    /// Gives `task` back without charging it (a worker shutting down).
    pub fn release(&mut self, lease: &str, task: &str, now_ms: i64) -> Result<(), StoreError> {
        let tx = self.write()?;
        Store::check_active(&tx, lease, task, now_ms)?;
        tx.execute(
            "UPDATE leases SET state = 'released' WHERE id = ?1",
            params![lease],
        )?;
        tx.execute(
            "UPDATE tasks SET state = 'pending', not_before_ms = ?2 WHERE id = ?1",
            params![task, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// How many tasks of `sweep` are in each state.
    pub fn progress(&self, sweep: &str) -> Result<Progress, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT t.state, count(*) FROM tasks t JOIN sweep_tasks s ON s.task_id = t.id
             WHERE s.sweep = ?1 GROUP BY t.state",
        )?;
        let mut progress = Progress::default();
        for row in stmt.query_map(params![sweep], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (state, count) = row?;
            let count = count as usize;
            match state.as_str() {
                "pending" => progress.pending = count,
                "leased" => progress.leased = count,
                "finished" => progress.finished = count,
                _ => progress.failed = count,
            }
        }
        Ok(progress)
    }

    /// Whether `sweep` still has a task pending or leased. Cheap: it stops at
    /// the first such task (idle workers ask this at the end of a sweep).
    pub fn unfinished(&self, sweep: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT 1 FROM tasks t INDEXED BY tasks_by_state
                 WHERE t.state IN ('pending', 'leased')
                   AND EXISTS (SELECT 1 FROM sweep_tasks s WHERE s.sweep = ?1 AND s.task_id = t.id)
                 LIMIT 1",
                params![sweep],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Every task of `sweep` in grid order, with state, charged attempts, the
    /// worker of its latest lease and its last error.
    pub fn task_statuses(&self, sweep: &str) -> Result<Vec<TaskStatus>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT t.id, t.state, t.attempts, t.last_error,
                    (SELECT worker_id FROM leases l WHERE l.task_id = t.id ORDER BY created_ms DESC LIMIT 1)
             FROM tasks t JOIN sweep_tasks s ON s.task_id = t.id
             WHERE s.sweep = ?1 ORDER BY s.position",
        )?;
        let rows = stmt.query_map(params![sweep], |r| {
            Ok(TaskStatus {
                task_id: r.get(0)?,
                state: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                worker_id: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored metrics JSON of a finished task.
    #[cfg(test)]
    pub fn result(&self, task: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .prepare_cached("SELECT metrics_json FROM results WHERE task_id = ?1")?
            .query_row(params![task], |r| r.get(0))
            .optional()?)
    }

    /// The stored metrics of every finished task of `sweep`, by task id, in
    /// one query: reading them one task at a time cost a query per task.
    pub fn sweep_results(&self, sweep: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT r.task_id, r.metrics_json FROM sweep_tasks s
             JOIN results r ON r.task_id = s.task_id WHERE s.sweep = ?1",
        )?;
        let rows = stmt.query_map(params![sweep], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored files of a finished task.
    pub fn artifacts(&self, task: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT name, content FROM artifacts WHERE task_id = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![task], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of results of a task (never more than one).
    #[cfg(test)]
    pub fn result_count(&self, task: &str) -> Result<usize, StoreError> {
        let n: i64 = self.db.query_row(
            "SELECT count(*) FROM results WHERE task_id = ?1",
            params![task],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Active leases of a task (never more than one).
    #[cfg(test)]
    pub fn active_leases(&self, task: &str) -> Result<usize, StoreError> {
        let n: i64 = self.db.query_row(
            "SELECT count(*) FROM leases WHERE task_id = ?1 AND state = 'active'",
            params![task],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            lease_timeout_ms: 100,
            max_attempts: 3,
            backoff_ms: 10,
            max_backoff_ms: 1000,
        }
    }

    fn store_with(tasks: usize) -> Store {
        let mut store = Store::in_memory(policy()).unwrap();
        let tasks: Vec<(String, String, f64)> = (0..tasks)
            .map(|i| (format!("{i:064x}"), format!("{{\"n\":{i}}}"), 0.0))
            .collect();
        store.add_sweep("s", "name: s", &tasks, 0).unwrap();
        store
    }

    #[test]
    fn leases_hand_out_each_task_once_in_grid_order() {
        let mut store = store_with(2);
        let a = store.lease("s", "w1", 0).unwrap().unwrap();
        let b = store.lease("s", "w2", 0).unwrap().unwrap();
        assert_eq!(a.task_id, format!("{:064x}", 0));
        assert_eq!(b.task_id, format!("{:064x}", 1));
        assert_eq!(store.lease("s", "w3", 0).unwrap(), None);
    }

    #[test]
    fn costlier_tasks_are_leased_first_and_the_sweep_keeps_grid_order() {
        let mut store = Store::in_memory(policy()).unwrap();
        let tasks: Vec<(String, String, f64)> = [1.0, 5.0, 3.0, 5.0]
            .iter()
            .enumerate()
            .map(|(i, &cost)| (format!("{i:064x}"), "{}".to_string(), cost))
            .collect();
        store.add_sweep("s", "src", &tasks, 0).unwrap();
        let order: Vec<String> = (0..4)
            .map(|k| {
                store
                    .lease("s", &format!("w{k}"), 0)
                    .unwrap()
                    .unwrap()
                    .task_id
            })
            .collect();
        let expected: Vec<String> = [1, 3, 2, 0].iter().map(|i| format!("{i:064x}")).collect();
        assert_eq!(order, expected, "costliest first, ties in grid order");
        let listed: Vec<String> = store
            .task_statuses("s")
            .unwrap()
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        let grid: Vec<String> = (0..4).map(|i| format!("{i:064x}")).collect();
        assert_eq!(listed, grid);
    }

    #[test]
    fn an_expired_lease_is_re_leased_uncharged_and_its_late_report_refused() {
        let mut store = store_with(1);
        let first = store.lease("s", "w1", 0).unwrap().unwrap();
        assert_eq!(
            store
                .heartbeat("w1", std::slice::from_ref(&first.lease_id), 50)
                .unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(store.reap(149).unwrap().len(), 0, "renewed to 150");
        assert_eq!(store.reap(151).unwrap(), vec![first.lease_id.clone()]);
        let second = store.lease("s", "w2", 151).unwrap().unwrap();
        assert_eq!(second.task_id, first.task_id);
        assert_eq!(second.lease_number, 2);
        // The lost worker comes back: its heartbeat and its result are refused.
        assert_eq!(
            store
                .heartbeat("w1", std::slice::from_ref(&first.lease_id), 152)
                .unwrap(),
            vec![first.lease_id.clone()]
        );
        let late = store.complete(&first.lease_id, &first.task_id, "{}", &[], 152);
        assert!(
            matches!(late, Err(StoreError::Rejected(Rejection::NotActive { .. }))),
            "{late:?}"
        );
        store
            .complete(
                &second.lease_id,
                &second.task_id,
                "{\"ok\":1}",
                &[("a".into(), vec![1])],
                153,
            )
            .unwrap();
        assert_eq!(
            store.task_statuses("s").unwrap()[0].attempts,
            0,
            "a lost worker is not charged"
        );
        assert_eq!(
            store.result(&first.task_id).unwrap().as_deref(),
            Some("{\"ok\":1}")
        );
    }

    #[test]
    fn the_first_result_wins_and_forged_reports_change_nothing() {
        let mut store = store_with(2);
        let a = store.lease("s", "w1", 0).unwrap().unwrap();
        store
            .complete(&a.lease_id, &a.task_id, "{\"first\":1}", &[], 1)
            .unwrap();
        let again = store.complete(&a.lease_id, &a.task_id, "{\"second\":1}", &[], 2);
        assert!(again.is_err());
        let forged = store.complete("no-such-lease", &a.task_id, "{}", &[], 2);
        assert!(matches!(
            forged,
            Err(StoreError::Rejected(Rejection::UnknownLease(_)))
        ));
        let b = store.lease("s", "w1", 3).unwrap().unwrap();
        let crossed = store.complete(&b.lease_id, &a.task_id, "{}", &[], 3);
        assert!(matches!(
            crossed,
            Err(StoreError::Rejected(Rejection::WrongTask { .. }))
        ));
        assert_eq!(
            store.result(&a.task_id).unwrap().as_deref(),
            Some("{\"first\":1}")
        );
        assert_eq!(store.result_count(&a.task_id).unwrap(), 1);
    }

    #[test]
    fn failures_retry_with_backoff_then_fail_the_task() {
        let mut store = store_with(1);
        let mut now = 0;
        for attempt in 1..=3u32 {
            let lease = store.lease("s", "w", now).unwrap().unwrap();
            let retried = store
                .fail(&lease.lease_id, &lease.task_id, "diverged", now)
                .unwrap();
            assert_eq!(retried, attempt < 3);
            let backoff = 10 << (attempt - 1);
            if retried {
                assert_eq!(
                    store.lease("s", "w", now + backoff - 1).unwrap(),
                    None,
                    "backing off"
                );
            }
            now += backoff;
        }
        let status = &store.task_statuses("s").unwrap()[0];
        assert_eq!(status.state, "failed");
        assert_eq!(status.attempts, 3);
        assert_eq!(status.last_error.as_deref(), Some("diverged"));
        assert!(store.progress("s").unwrap().is_done());
    }

    #[test]
    fn a_released_task_goes_back_uncharged() {
        let mut store = store_with(1);
        let lease = store.lease("s", "w", 0).unwrap().unwrap();
        store.release(&lease.lease_id, &lease.task_id, 1).unwrap();
        let again = store.lease("s", "w2", 1).unwrap().unwrap();
        assert_eq!(again.task_id, lease.task_id);
        assert_eq!(store.task_statuses("s").unwrap()[0].attempts, 0);
    }

    #[test]
    fn a_reopened_store_sees_every_acknowledged_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minima.db");
        let (done, leased) = {
            let mut store = Store::open(&path, policy()).unwrap();
            let tasks: Vec<(String, String, f64)> = (0..3)
                .map(|i| (format!("{i:064x}"), "{}".into(), 0.0))
                .collect();
            store.add_sweep("s", "src", &tasks, 0).unwrap();
            let a = store.lease("s", "w", 0).unwrap().unwrap();
            store
                .complete(
                    &a.lease_id,
                    &a.task_id,
                    "{\"m\":1}",
                    &[("f".into(), b"xyz".to_vec())],
                    1,
                )
                .unwrap();
            let b = store.lease("s", "w", 2).unwrap().unwrap();
            (a.task_id, b)
        };
        let mut store = Store::open(&path, policy()).unwrap();
        assert_eq!(store.result(&done).unwrap().as_deref(), Some("{\"m\":1}"));
        assert_eq!(
            store.artifacts(&done).unwrap(),
            vec![("f".to_string(), b"xyz".to_vec())]
        );
        let progress = store.progress("s").unwrap();
        assert_eq!(
            (progress.finished, progress.leased, progress.pending),
            (1, 1, 1)
        );
        // The lease taken before the restart expires on the new clock.
        assert_eq!(store.reap(1000).unwrap(), vec![leased.lease_id]);
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let db = Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE accounts (id INTEGER);")
            .unwrap();
        drop(db);
        assert!(matches!(
            Store::open(&path, policy()),
            Err(StoreError::Foreign)
        ));
        let junk = dir.path().join("junk.db");
        let text = b"this is not a database, just some text that is long enough".to_vec();
        std::fs::write(&junk, &text).unwrap();
        assert!(Store::open(&junk, policy()).is_err());
        assert_eq!(std::fs::read(&junk).unwrap(), text, "left untouched");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lease(u8),
        Heartbeat(u8),
        Complete(u8),
        Fail(u8),
        Release(u8),
        Reap,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::Lease),
            (0u8..4).prop_map(Op::Heartbeat),
            (0u8..4).prop_map(Op::Complete),
            (0u8..4).prop_map(Op::Fail),
            (0u8..4).prop_map(Op::Release),
            Just(Op::Reap),
            (0u8..120).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever workers do, in any order and at any time: no task ever
        /// has two active leases, no task has two results, and a finished
        /// task stays finished with its first result.
        #[test]
        fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..80)) {
            let mut store = store_with(3);
            let mut now = 0i64;
            // Every lease each worker was ever given: stale ones stay in play.
            let mut held: Vec<Vec<Assignment>> = vec![Vec::new(); 4];
            let mut first_results: std::collections::HashMap<String, String> = Default::default();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Lease(w) => {
                        if let Some(a) = store.lease("s", &format!("w{w}"), now).unwrap() {
                            held[w as usize].push(a);
                        }
                    }
                    Op::Heartbeat(w) => {
                        let ids: Vec<String> = held[w as usize].iter().map(|a| a.lease_id.clone()).collect();
                        store.heartbeat(&format!("w{w}"), &ids, now).unwrap();
                    }
                    Op::Complete(w) => {
                        if let Some(a) = held[w as usize].last().cloned() {
                            let body = format!("{{\"op\":{n}}}");
                            if store.complete(&a.lease_id, &a.task_id, &body, &[], now).is_ok() {
                                prop_assert!(!first_results.contains_key(&a.task_id), "second result accepted");
                                first_results.insert(a.task_id.clone(), body);
                            }
                        }
                    }
                    Op::Fail(w) => {
                        if let Some(a) = held[w as usize].last().cloned() {
                            let _ = store.fail(&a.lease_id, &a.task_id, "boom", now);
                        }
                    }
                    Op::Release(w) => {
                        if let Some(a) = held[w as usize].first().cloned() {
                            let _ = store.release(&a.lease_id, &a.task_id, now);
                        }
                    }
                    Op::Reap => { store.reap(now).unwrap(); }
                    Op::Tick(ms) => now += i64::from(ms),
                }
                for i in 0..3 {
                    let task = format!("{i:064x}");
                    prop_assert!(store.active_leases(&task).unwrap() <= 1);
                    prop_assert!(store.result_count(&task).unwrap() <= 1);
                    if let Some(body) = first_results.get(&task) {
                        let stored = store.result(&task).unwrap();
                        prop_assert_eq!(stored.as_ref(), Some(body));
                        let statuses = store.task_statuses("s").unwrap();
                        prop_assert_eq!(statuses[i].state.as_str(), "finished");
                    }
                }
            }
        }
    }
}
