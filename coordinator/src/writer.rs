//! The store's one writer: a thread that owns the [`Store`] and commits the
//! changes of many callers together (group commit).
//!
//! Every change is persisted before it is acknowledged, and with
//! `synchronous = FULL` each commit waits for the disk. One commit per
//! change capped the coordinator at a few hundred leases and heartbeats a
//! second; here the thread takes every change that is waiting, runs each in
//! a savepoint of one transaction (a refused change rolls back alone),
//! commits once, and only then answers the callers. A caller whose change
//! was in a batch that failed to commit gets the error, never a false
//! acknowledgement.

use std::sync::mpsc;

use crate::store::{Store, StoreError};

/// Most changes committed together. Bounds the time the first caller of a
/// batch waits for the others.
const MAX_BATCH: usize = 512;

/// Runs on the writer thread with the store; returns the answer to send
/// once the batch has committed (or failed to).
type Job = Box<dyn FnOnce(&mut Store) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Moves `store` to a thread of its own.
    pub fn start(store: Store) -> Writer {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(store, queue))
            .expect("cannot start the store's writer thread");
        Writer { jobs }
    }

    /// Runs `change` on the store and returns its result once it is on disk.
    pub async fn call<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(change, reply)?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))?
    }

    /// [`call`](Writer::call) for code that is not async.
    #[cfg(test)]
    pub fn call_blocking<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(change, reply)?;
        answer
            .blocking_recv()
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))?
    }

    fn send<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
        reply: tokio::sync::oneshot::Sender<Result<R, StoreError>>,
    ) -> Result<(), StoreError> {
        let job: Job = Box::new(move |store: &mut Store| {
            let result = change(store);
            Box::new(move |committed: Result<(), String>| {
                let _ = reply.send(match committed {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Unavailable(e)),
                });
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))
    }
}

fn write_loop(mut store: Store, queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (answers, committed) =
            store.batch(|store| jobs.drain(..).map(|job| job(store)).collect::<Vec<_>>());
        let committed = committed.map_err(|e| {
            tracing::error!(error = %e, "a batch of store changes failed to commit");
            format!("not saved: {e}")
        });
        for answer in answers {
            answer(committed.clone());
        }
        jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Policy;

    fn writer_with(tasks: usize) -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("minima.db"), Policy::default()).unwrap();
        let tasks: Vec<(String, String, f64)> = (0..tasks)
            .map(|i| (format!("{i:064x}"), "{}".into(), 0.0))
            .collect();
        store.add_sweep("s", "src", &tasks, 0).unwrap();
        (dir, Writer::start(store))
    }

    #[test]
    fn concurrent_callers_each_get_their_own_answer_and_all_is_on_disk() {
        let (dir, writer) = writer_with(200);
        let threads: Vec<_> = (0..8)
            .map(|w| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    let mut leased = Vec::new();
                    for _ in 0..25 {
                        let worker = format!("w{w}");
                        let a = writer
                            .call_blocking(move |s| s.lease("s", &worker, 1))
                            .unwrap()
                            .expect("a task for everyone");
                        leased.push(a.task_id);
                    }
                    leased
                })
            })
            .collect();
        let mut all: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 200, "every task leased exactly once");
        // A refused change in a batch does not undo the others.
        let refused = writer.call_blocking(|s| s.release("L0-forged", "x", 2));
        assert!(matches!(refused, Err(StoreError::Rejected(_))));
        let reader = Store::reader(&dir.path().join("minima.db")).unwrap();
        assert_eq!(reader.progress("s").unwrap().leased, 200);
    }
}
