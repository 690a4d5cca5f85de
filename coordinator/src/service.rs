//! The gRPC service workers talk to: thin handlers that check the token,
//! convert the request, hand the change to the store's writer and map its
//! errors to status codes.

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
use crate::store::{Policy, Rejection, Store, StoreError};
use crate::writer::Writer;

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the handlers share.
pub struct State {
    /// The store's writer thread: every change goes through it.
    pub writer: Writer,
    pub policy: Policy,
    /// The sweep whose tasks are leased.
    pub sweep: String,
    /// Specs of the sweep's tasks by id, to write finished task folders.
    pub specs: HashMap<String, TaskSpec>,
    /// The sweep's output folder.
    pub dir: PathBuf,
    /// Required from every caller when set.
    pub token: Option<String>,
    pub heartbeat_interval_ms: u32,
    /// The latest epoch reported by each running lease, for the progress
    /// display. Kept in memory only: it is not a result.
    pub epochs: Mutex<HashMap<String, EpochProgress>>,
    next_worker: AtomicU64,
}

/// Where a running task's training is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochProgress {
    pub epoch: u32,
    pub epochs: u32,
    /// When it was reported, on [`now_ms`]'s clock.
    pub at_ms: i64,
}

impl State {
    /// Workers that have registered so far (a worker that reconnects
    /// counts again).
    pub fn registrations(&self) -> u64 {
        self.next_worker.load(Ordering::Relaxed) - 1
    }

    pub fn new(
        store: Store,
        sweep: String,
        specs: HashMap<String, TaskSpec>,
        dir: PathBuf,
        token: Option<String>,
        heartbeat_interval_ms: u32,
    ) -> State {
        State {
            policy: store.policy(),
            writer: Writer::start(store),
            sweep,
            specs,
            dir,
            token,
            heartbeat_interval_ms,
            epochs: Mutex::new(HashMap::new()),
            next_worker: AtomicU64::new(1),
        }
    }

    fn forget_epochs(&self, lease: &str) {
        self.epochs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(lease);
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
        StoreError::Unavailable(_) => Status::unavailable(error.to_string()),
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
        {
            let (id, name, device) = (worker_id.clone(), r.name.clone(), device.clone());
            self.state
                .writer
                .call(move |s| s.register_worker(&id, &name, &device, now_ms()))
                .await
                .map_err(status)?;
        }
        info!(worker_id = %worker_id, name = %r.name, device = %device, "worker registered");
        let timeout = self.state.policy.lease_timeout_ms as u32;
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
        let worker = required("worker_id", &r.worker_id)?.to_string();
        let sweep = self.state.sweep.clone();
        let (assignment, done) = {
            let worker = worker.clone();
            self.state
                .writer
                .call(move |s| {
                    let assignment = s.lease(&sweep, &worker, now_ms())?;
                    let done = assignment.is_none() && !s.unfinished(&sweep)?;
                    Ok((assignment, done))
                })
                .await
                .map_err(status)?
        };
        let worker = worker.as_str();
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
        let worker = required("worker_id", &r.worker_id)?.to_string();
        let lost = {
            let (worker, leases) = (worker.clone(), r.lease_ids);
            self.state
                .writer
                .call(move |s| s.heartbeat(&worker, &leases, now_ms()))
                .await
                .map_err(status)?
        };
        let worker = worker.as_str();
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
        if !r.lease_id.is_empty() {
            self.state
                .epochs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(
                    r.lease_id.clone(),
                    EpochProgress {
                        epoch: r.epoch,
                        epochs: r.epochs,
                        at_ms: now_ms(),
                    },
                );
        }
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
        let artifacts = {
            let (lease, task, metrics) = (lease.to_string(), task.to_string(), r.metrics_json);
            self.state
                .writer
                .call(move |s| {
                    s.complete(&lease, &task, &metrics, &artifacts, now_ms())
                        .map(|()| artifacts)
                })
                .await
                .map_err(status)?
        };
        self.state.forget_epochs(lease);
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
        let retried = {
            let (l, t, reason) = (lease.to_string(), task.to_string(), r.reason.clone());
            self.state
                .writer
                .call(move |s| s.fail(&l, &t, &reason, now_ms()))
                .await
                .map_err(status)?
        };
        self.state.forget_epochs(lease);
        warn!(task_id = %&task[..12], lease_id = lease, reason = %r.reason, retried, "task failed");
        Ok(Response::new(Ack {}))
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<Ack>, Status> {
        self.authorise(&request)?;
        let r = request.into_inner();
        let lease = required("lease_id", &r.lease_id)?;
        let task = required("task_id", &r.task_id)?;
        {
            let (l, t) = (lease.to_string(), task.to_string());
            self.state
                .writer
                .call(move |s| s.release(&l, &t, now_ms()))
                .await
                .map_err(status)?;
        }
        self.state.forget_epochs(lease);
        info!(task_id = %&task[..12], lease_id = lease, "task released");
        Ok(Response::new(Ack {}))
    }
}
