//! A worker joined to a coordinator over gRPC: each of its slots pulls one
//! task at a time, renews its lease from a task of its own while training
//! runs on a blocking thread, and uploads the task folder's files with the
//! result. Slots share the process (and its GPU, when training runs on one)
//! but register separately, so the coordinator accounts for each as a worker.
//!
//! A coordinator that cannot be reached is retried with backoff, and the
//! worker registers again when it comes back. On Ctrl-C or SIGTERM the
//! worker gives its task back (release) and exits; the task runs elsewhere.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use minima_shared::TaskSpec;
use minima_shared::proto::coordinator_client::CoordinatorClient;
use minima_shared::proto::{
    Artifact, Assignment, CompleteRequest, FailRequest, HeartbeatRequest, LeaseRequest,
    ProgressRequest, RegisterRequest, ReleaseRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::{info, warn};

use crate::device::TrainDevice;
use crate::run::{run_task, write_task_folder};

/// How a worker joins.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub url: String,
    pub token: Option<String>,
    /// Certificate (PEM) to trust for an `https://` coordinator.
    pub tls_ca: Option<std::path::PathBuf>,
    pub name: String,
    /// CPU-kernel threads of each task.
    pub threads: usize,
    /// Where training runs.
    pub device: TrainDevice,
    /// Tasks run at once; each slot registers as `<name>/<k>` when above 1.
    pub slots: usize,
    /// Exit once the coordinator says the sweep is done (local workers);
    /// otherwise keep asking for work.
    pub exit_when_done: bool,
    /// Give up when the coordinator has been unreachable this long; `None`
    /// retries for ever.
    pub give_up_after: Option<Duration>,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = CoordinatorClient<InterceptedService<Channel, Auth>>;

/// A registered session with the coordinator.
struct Session {
    client: Client,
    worker_id: String,
    heartbeat: Duration,
}

/// Connects, registering again after every loss, with backoff up to 10 s,
/// until `options.give_up_after` has passed without reaching it.
async fn connect(options: &ClientOptions) -> anyhow::Result<Session> {
    let started = std::time::Instant::now();
    let auth = match &options.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .context("--token: not a valid header value")?,
        ),
        None => None,
    };
    let mut endpoint = Channel::from_shared(options.url.clone())
        .map_err(|e| anyhow!("--coordinator: {e}"))?
        .connect_timeout(Duration::from_secs(5));
    if options.url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        tls = match &options.tls_ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--tls-ca: cannot read {}", path.display()))?;
                tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => tls.with_webpki_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .context("--tls-ca: not a usable certificate")?;
    } else if options.tls_ca.is_some() {
        anyhow::bail!("--tls-ca: the coordinator URL must start with https:// to use TLS");
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let channel = endpoint.connect().await?;
            let mut client = CoordinatorClient::with_interceptor(channel, Auth(auth.clone()))
                .max_encoding_message_size(256 * 1024 * 1024);
            let reply = client
                .register(RegisterRequest {
                    name: options.name.clone(),
                    device: options.device.to_string(),
                    backend: options.device.backend().into(),
                    slots: 1,
                })
                .await?
                .into_inner();
            anyhow::Ok(Session {
                client,
                worker_id: reply.worker_id,
                heartbeat: Duration::from_millis(u64::from(reply.heartbeat_interval_ms.max(50))),
            })
        };
        match attempt.await {
            Ok(session) => {
                info!(worker_id = %session.worker_id, url = %options.url, "registered");
                return Ok(session);
            }
            Err(e) => {
                // A refused token will not get better by waiting.
                if let Some(status) = e.downcast_ref::<Status>()
                    && status.code() == Code::Unauthenticated
                {
                    return Err(anyhow!(
                        "the coordinator refused this worker: {}",
                        status.message()
                    ));
                }
                if let Some(limit) = options.give_up_after
                    && started.elapsed() >= limit
                {
                    return Err(anyhow!(
                        "cannot reach the coordinator at {} (tried for {} s): {e:#}",
                        options.url,
                        limit.as_secs()
                    ));
                }
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "coordinator unreachable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Serves the coordinator with every slot until the sweep is done (with
/// `exit_when_done`) or the process is asked to stop. A slot that ends in an
/// error (a refused token, say) stops the others, which give their tasks back.
pub async fn serve(options: ClientOptions) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopping.store(true, Ordering::SeqCst);
    });

    let slots = options.slots.max(1);
    let mut running = tokio::task::JoinSet::new();
    for k in 0..slots {
        let mut options = options.clone();
        if slots > 1 {
            options.name = format!("{}/{k}", options.name);
        }
        let stop = stop.clone();
        running.spawn(async move { serve_slot(options, stop).await });
    }
    let mut first_error = None;
    while let Some(joined) = running.join_next().await {
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => anyhow!("a worker slot ended abnormally: {e}"),
        };
        stop.store(true, Ordering::SeqCst);
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}

/// One slot: leases, trains and reports tasks one at a time.
async fn serve_slot(options: ClientOptions, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut session = connect(&options).await?;
    while !stop.load(Ordering::SeqCst) {
        let reply = session
            .client
            .lease(LeaseRequest {
                worker_id: session.worker_id.clone(),
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::Unauthenticated => {
                return Err(anyhow!(
                    "the coordinator refused this worker: {}",
                    status.message()
                ));
            }
            Err(status) => {
                warn!(error = %status, "lease request failed; reconnecting");
                session = connect(&options).await?;
                continue;
            }
        };
        match reply.assignment {
            Some(assignment) => {
                if run_assignment(&mut session, assignment, &options, &stop).await?
                    == Outcome::Stopped
                {
                    break;
                }
            }
            None if reply.sweep_done && options.exit_when_done => {
                info!("sweep done; exiting");
                break;
            }
            None => {
                tokio::time::sleep(Duration::from_millis(u64::from(
                    reply.retry_after_ms.max(100),
                )))
                .await
            }
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    Stopped,
}

/// Trains one leased task and reports it.
async fn run_assignment(
    session: &mut Session,
    a: Assignment,
    options: &ClientOptions,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Outcome> {
    let task_id = a.task_id.clone();
    let short = task_id[..task_id.len().min(12)].to_string();
    let spec: TaskSpec = match serde_json::from_str(&a.spec_json) {
        Ok(spec) => spec,
        Err(e) => {
            let reason = format!("task configuration does not parse: {e}");
            report_failure(session, options, &a, &reason).await?;
            return Ok(Outcome::Done);
        }
    };
    info!(task_id = %short, lease_id = %a.lease_id, model = %spec.model.label(), "task started");

    // Heartbeats on their own task, never blocked by training.
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let mut client = session.client.clone();
        let (worker_id, lease_id, lost, every) = (
            session.worker_id.clone(),
            a.lease_id.clone(),
            lost.clone(),
            session.heartbeat,
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let request = HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    lease_ids: vec![lease_id.clone()],
                };
                match client.heartbeat(request).await {
                    Ok(reply) if reply.get_ref().lost_lease_ids.contains(&lease_id) => {
                        warn!(lease_id = %lease_id, "lease lost; the result will be dropped");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "heartbeat failed"),
                }
            }
        })
    };

    // Epoch progress, forwarded as it comes.
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<ProgressRequest>();
    let forwarder = {
        let mut client = session.client.clone();
        tokio::spawn(async move {
            while let Some(p) = progress_rx.recv().await {
                let _ = client.report_progress(p).await;
            }
        })
    };

    let (threads, device) = (options.threads, options.device);
    let (lease_id, spec_for_training) = (a.lease_id.clone(), spec.clone());
    let training = tokio::task::spawn_blocking(move || {
        crate::with_compute_threads(threads, || {
            catch_unwind(AssertUnwindSafe(|| {
                train_and_collect(&spec_for_training, device, &lease_id, &progress_tx)
            }))
        })
    });

    let result = tokio::select! {
        result = training => Some(result),
        _ = wait_for(stop.clone()) => None,
    };
    heartbeat.abort();
    forwarder.abort();

    let Some(result) = result else {
        // Stopping: give the task back so another worker takes it now.
        let release = ReleaseRequest {
            lease_id: a.lease_id.clone(),
            task_id: task_id.clone(),
        };
        match session.client.release(release).await {
            Ok(_) => info!(task_id = %short, "task released on shutdown"),
            Err(e) => warn!(task_id = %short, error = %e, "release failed; the lease will expire"),
        }
        return Ok(Outcome::Stopped);
    };
    if lost.load(Ordering::SeqCst) {
        return Ok(Outcome::Done);
    }
    match result {
        Ok(Ok(Ok((metrics_json, artifacts)))) => {
            let request = CompleteRequest {
                lease_id: a.lease_id.clone(),
                task_id: task_id.clone(),
                metrics_json,
                artifacts,
            };
            let delivered = deliver(session, options, "result", |mut client| {
                let request = request.clone();
                async move { client.complete(request).await.map(|_| ()) }
            })
            .await?;
            if delivered {
                info!(task_id = %short, "result accepted");
            }
        }
        Ok(Ok(Err(e))) => report_failure(session, options, &a, &format!("{e:#}")).await?,
        Ok(Err(panic)) => report_failure(session, options, &a, &panic_message(panic)).await?,
        Err(join) => {
            report_failure(session, options, &a, &format!("training thread: {join}")).await?
        }
    }
    Ok(Outcome::Done)
}

/// Whether a failed call may succeed if sent again: the coordinator was
/// unreachable or went away mid-call, as opposed to refusing the report.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Sends a report until the coordinator answers it, reconnecting (and
/// waiting with backoff) while it is unreachable, so a result finished
/// while the coordinator restarts is not thrown away. Returns whether it
/// was accepted; a refusal (an expired lease, say) is logged and final.
async fn deliver<F, Fut>(
    session: &mut Session,
    options: &ClientOptions,
    what: &str,
    call: F,
) -> anyhow::Result<bool>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    for _ in 0..20 {
        match call(session.client.clone()).await {
            Ok(()) => return Ok(true),
            Err(status) if transient(status.code()) => {
                warn!(error = %status, "{what} not delivered; reconnecting to send it again");
                *session = connect(options).await?;
            }
            Err(status) => {
                warn!(error = %status, "{what} refused");
                return Ok(false);
            }
        }
    }
    warn!("{what} not delivered after 20 tries; giving up on it");
    Ok(false)
}

/// Runs the task and returns its metrics and the files of its folder.
fn train_and_collect(
    spec: &TaskSpec,
    device: TrainDevice,
    lease_id: &str,
    progress: &tokio::sync::mpsc::UnboundedSender<ProgressRequest>,
) -> anyhow::Result<(String, Vec<Artifact>)> {
    let task_id = spec.id().to_string();
    let report = run_task(spec, device, &mut |e| {
        let _ = progress.send(ProgressRequest {
            lease_id: lease_id.to_string(),
            task_id: task_id.clone(),
            epoch: e.epoch as u32,
            epochs: spec.train.epochs as u32,
            train_loss: e.train_loss,
            validation_loss: e.validation_loss,
        });
    });
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    write_task_folder(scratch.path(), spec, &report)?;
    let mut artifacts = Vec::new();
    for entry in std::fs::read_dir(scratch.path())? {
        let path = entry?.path();
        if path.is_file() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            artifacts.push(Artifact {
                content: std::fs::read(&path)?,
                name,
            });
        }
    }
    Ok((serde_json::to_string(&report.metrics)?, artifacts))
}

async fn report_failure(
    session: &mut Session,
    options: &ClientOptions,
    a: &Assignment,
    reason: &str,
) -> anyhow::Result<()> {
    warn!(task_id = %&a.task_id[..a.task_id.len().min(12)], reason, "task failed");
    let request = FailRequest {
        lease_id: a.lease_id.clone(),
        task_id: a.task_id.clone(),
        reason: reason.to_string(),
    };
    deliver(session, options, "failure report", |mut client| {
        let request = request.clone();
        async move { client.fail(request).await.map(|_| ()) }
    })
    .await?;
    Ok(())
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "training panicked".to_string())
}

async fn wait_for(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
