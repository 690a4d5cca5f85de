//! The gRPC service workers talk to: thin handlers that check the token,
//! convert the request, call the store and map its errors to status codes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use minima_shared::proto::coordinator_server::Coordinator;
use minima_shared::proto::{
    Ack, Assignment, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse,
    LeaseRequest, LeaseResponse, ProgressRequest, RegisterRequest, RegisterResponse,
    ReleaseRequest,
};
use minima_shared::{TaskMetrics, TaskSpec};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::outputs;
use crate::store::{Rejection, Store, StoreError};

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the handlers share. The store is behind a plain mutex: each call
/// holds it for one short transaction.
pub struct State {
    pub store: Mutex<Store>,
    /// The sweep whose tasks are leased.
    pub sweep: String,
    /// Specs of the sweep's tasks by id, to write finished task folders.
    pub specs: HashMap<String, TaskSpec>,
    /// The sweep's output folder.
    pub dir: PathBuf,
    /// Required from every caller when set.
    pub token: Option<String>,
    pub heartbeat_interval_ms: u32,
    next_worker: AtomicU64,
}

impl State {
    pub fn new(
        store: Store,
        sweep: String,
        specs: HashMap<String, TaskSpec>,
        dir: PathBuf,
        token: Option<String>,
    ) -> State {
        let heartbeat_interval_ms = (store.policy().lease_timeout_ms / 3).max(1) as u32;
        State {
            store: Mutex::new(store),
            sweep,
            specs,
            dir,
            token,
            heartbeat_interval_ms,
            next_worker: AtomicU64::new(1),
        }
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back), so the store stays usable.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The service, cheap to clone.
#[derive(Clone)]
pub struct CoordinatorService {
    pub state: Arc<State>,
}

/// One place where store errors become gRPC statuses.
fn status(error: StoreError) -> Status {
    match error {
        StoreError::Rejected(Rejection::UnknownLease(_)) => Status::not_found(error.to_string()),
        StoreError::Rejected(_) => Status::failed_precondition(error.to_string()),
        StoreError::Database(_) | StoreError::Foreign => Status::internal(error.to_string()),
    }
}

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is missing")))
    } else {
        Ok(value)
    }
}

impl CoordinatorService {
    fn authorise<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.state.token else {
            return Ok(());
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated(
                "this coordinator requires a token (--token)",
            )),
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let n = self.state.next_worker.fetch_add(1, Ordering::Relaxed);
        let worker_id = format!("W{n}-{}", now_ms());
        let device = if r.device.is_empty() {
            "cpu".to_string()
        } else {
            r.device
        };
        self.state
            .store()
            .register_worker(&worker_id, &r.name, &device, now_ms())
            .map_err(status)?;
        info!(worker_id = %worker_id, name = %r.name, device = %device, "worker registered");
        let timeout = self.state.store().policy().lease_timeout_ms as u32;
        Ok(Response::new(RegisterResponse {
            worker_id,
            heartbeat_interval_ms: self.state.heartbeat_interval_ms,
            lease_timeout_ms: timeout,
        }))
    }

    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let worker = required("worker_id", &r.worker_id)?;
        let mut store = self.state.store();
        let assignment = store
            .lease(&self.state.sweep, worker, now_ms())
            .map_err(status)?;
        let done =
            assignment.is_none() && store.progress(&self.state.sweep).map_err(status)?.is_done();
        drop(store);
        if let Some(a) = &assignment {
            info!(worker_id = worker, task_id = %&a.task_id[..12], lease_id = %a.lease_id, "task leased");
        }
        Ok(Response::new(LeaseResponse {
            assignment: assignment.map(|a| Assignment {
                task_id: a.task_id,
                lease_id: a.lease_id,
                spec_json: a.spec_json,
                lease_number: a.lease_number,
            }),
            retry_after_ms: 500,
            sweep_done: done,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let worker = required("worker_id", &r.worker_id)?;
        let lost = self
            .state
            .store()
            .heartbeat(worker, &r.lease_ids, now_ms())
            .map_err(status)?;
        if !lost.is_empty() {
            warn!(worker_id = worker, lost = ?lost, "heartbeat for leases no longer held");
        }
        Ok(Response::new(HeartbeatResponse {
            lost_lease_ids: lost,
        }))
    }

    async fn report_progress(
        &self,
        request: Request<ProgressRequest>,
    ) -> Result<Response<Ack>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let task = required("task_id", &r.task_id)?;
        debug!(
            task_id = %&task[..task.len().min(12)],
            lease_id = %r.lease_id,
            epoch = r.epoch,
            epochs = r.epochs,
            train_loss = r.train_loss,
            validation_loss = r.validation_loss,
            "epoch finished"
        );
        Ok(Response::new(Ack {}))
    }

    async fn complete(&self, request: Request<CompleteRequest>) -> Result<Response<Ack>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let lease = required("lease_id", &r.lease_id)?;
        let task = required("task_id", &r.task_id)?;
        let metrics: TaskMetrics = serde_json::from_str(&r.metrics_json)
            .map_err(|e| Status::invalid_argument(format!("metrics_json: {e}")))?;
        if metrics.task_id != task {
            return Err(Status::invalid_argument("metrics_json is of another task"));
        }
        let artifacts: Vec<(String, Vec<u8>)> = r
            .artifacts
            .into_iter()
            .map(|a| (a.name, a.content))
            .collect();
        for (name, _) in &artifacts {
            if !outputs::is_plain_file_name(name) {
                return Err(Status::invalid_argument(format!(
                    "artifact name '{name}' is not a plain file name"
                )));
            }
        }
        // Persisted before it is acknowledged; the folder is derived from it.
        self.state
            .store()
            .complete(lease, task, &r.metrics_json, &artifacts, now_ms())
            .map_err(status)?;
        info!(task_id = %&task[..12], lease_id = lease, test_loss = metrics.test_loss, "task finished");
        if let Some(spec) = self.state.specs.get(task) {
            let dir = outputs::task_dir(&self.state.dir, spec);
            if let Err(e) = outputs::write_artifacts(&dir, &artifacts) {
                // The store has the result; the folder is rewritten on the
                // next run or `--report`.
                warn!(task_id = %&task[..12], error = %e, "cannot write task folder");
            }
        }
        Ok(Response::new(Ack {}))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<Ack>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let lease = required("lease_id", &r.lease_id)?;
        let task = required("task_id", &r.task_id)?;
        let retried = self
            .state
            .store()
            .fail(lease, task, &r.reason, now_ms())
            .map_err(status)?;
        warn!(task_id = %&task[..12], lease_id = lease, reason = %r.reason, retried, "task failed");
        Ok(Response::new(Ack {}))
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<Ack>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let lease = required("lease_id", &r.lease_id)?;
        let task = required("task_id", &r.task_id)?;
        self.state
            .store()
            .release(lease, task, now_ms())
            .map_err(status)?;
        info!(task_id = %&task[..12], lease_id = lease, "task released");
        Ok(Response::new(Ack {}))
    }
}
