//! Running a sweep: persist it, serve leases over gRPC, start local worker
//! processes, show progress, and aggregate when every task is done.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use minima_shared::proto::coordinator_server::CoordinatorServer;
use minima_shared::{Sweep, TaskSpec};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::outputs;
use crate::service::{CoordinatorService, EpochProgress, State, now_ms};
use crate::store::{Policy, Progress, Store, TaskStatus};

/// How a sweep is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Root of all sweeps' outputs; the sweep writes under `<out>/<name>`.
    pub out: PathBuf,
    /// The store; by default `<out>/minima.db`.
    pub db: PathBuf,
    /// Where workers reach the coordinator. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Worker processes started on this machine.
    pub local_workers: usize,
    /// CPU-kernel threads of each local worker.
    pub threads_per_worker: usize,
    /// Where local workers train (`--device` of the worker).
    pub worker_device: String,
    /// Shared secret every worker must present.
    pub token: Option<String>,
    pub policy: Policy,
    /// How often workers renew their leases.
    pub heartbeat_interval_ms: i64,
    /// Certificate and key files (PEM) when serving TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The executable of local workers: this coordinator binary, which runs
    /// as a worker when its first argument is `worker-process`.
    pub worker_binary: PathBuf,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub finished: usize,
    /// Tasks finished before this run started.
    pub reused: usize,
    pub failed: Vec<TaskStatus>,
    pub dir: PathBuf,
    pub figures: usize,
}

/// Opens the store of `options` and records the sweep in it.
pub fn open_store(sweep: &Sweep, source: &str, options: &RunOptions) -> anyhow::Result<Store> {
    if let Some(parent) = options.db.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut store = Store::open(&options.db, options.policy)
        .with_context(|| format!("cannot open the store {}", options.db.display()))?;
    let tasks: Vec<(String, String, f64)> = sweep
        .tasks
        .iter()
        .map(|t| Ok((t.id().to_string(), serde_json::to_string(t)?, cost(t))))
        .collect::<anyhow::Result<_>>()?;
    store.add_sweep(&sweep.name, source, &tasks, now_ms())?;
    Ok(store)
}

/// A task's relative cost, for leasing the longest tasks first: training
/// and every analysis scale with the parameters times the sequences seen.
fn cost(task: &TaskSpec) -> f64 {
    let params = task.model.param_count() as f64;
    let training = (task.train.epochs * task.data.samples) as f64;
    params * training
}

/// Rewrites task folders, `table.csv` and figures from the store.
pub fn report(sweep: &Sweep, source: &str, options: &RunOptions) -> anyhow::Result<(usize, usize)> {
    let store = open_store(sweep, source, options)?;
    let dir = options.out.join(&sweep.name);
    outputs::materialise(&store, sweep, &dir)?;
    let results = outputs::stored_results(&store, sweep)?;
    outputs::write_table(&dir, sweep, &results)?;
    let figures = outputs::draw_figures(sweep, &dir, &results)?;
    Ok((results.iter().flatten().count(), figures))
}

/// Runs every unfinished task of `sweep` and aggregates the results.
pub async fn run_sweep(
    sweep: &Sweep,
    source: &str,
    options: &RunOptions,
) -> anyhow::Result<Summary> {
    // The store first: a foreign or broken one stops the run before any
    // output folder is made.
    let store = open_store(sweep, source, options)?;
    let dir = options.out.join(&sweep.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    minima_worker::output::write_atomic(&dir.join("sweep.yaml"), source.as_bytes())?;
    outputs::materialise(&store, sweep, &dir)?;
    let start = store.progress(&sweep.name)?;
    let reused = start.finished;
    let mut summary = Summary {
        reused,
        dir: dir.clone(),
        ..Summary::default()
    };
    eprintln!(
        "sweep {}: {} tasks, {} already finished, {} to run",
        sweep.name,
        start.total(),
        reused,
        start.pending + start.leased
    );

    let specs = sweep
        .tasks
        .iter()
        .map(|t| (t.id().to_string(), t.clone()))
        .collect();
    let state = Arc::new(State::new(
        store,
        sweep.name.clone(),
        specs,
        dir.clone(),
        options.token.clone(),
        options.heartbeat_interval_ms as u32,
    ));
    if !start.is_done() {
        serve_until_done(sweep, &state, options).await?;
    }

    let store = reader(options)?;
    let results = outputs::stored_results(&store, sweep)?;
    outputs::write_table(&dir, sweep, &results)?;
    summary.figures = outputs::draw_figures(sweep, &dir, &results)?;
    summary.finished = results.iter().flatten().count();
    summary.failed = store
        .task_statuses(&sweep.name)?
        .into_iter()
        .filter(|t| t.state == "failed")
        .collect();
    Ok(summary)
}

/// Serves the sweep's tasks until none is pending or leased.
async fn serve_until_done(
    sweep: &Sweep,
    state: &Arc<State>,
    options: &RunOptions,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{address}");
    info!(address = %address, "coordinator listening");
    eprintln!("coordinator listening on {url}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = CoordinatorServer::new(CoordinatorService {
        state: state.clone(),
    })
    .max_decoding_message_size(256 * 1024 * 1024);
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &options.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("TLS: the certificate or key is not usable")?;
    }
    let server = tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));

    // The reaper runs on the coordinator's own clock, asked or not.
    let reaper_state = state.clone();
    let period = Duration::from_millis((options.policy.lease_timeout_ms / 4).max(50) as u64);
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            match reaper_state.writer.call(|s| s.reap(now_ms())).await {
                Ok(expired) if !expired.is_empty() => {
                    warn!(leases = ?expired, "leases expired; tasks requeued")
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "reaping failed"),
            }
        }
    });

    // Local workers reach a coordinator that listens on every interface
    // through loopback.
    let local = if address.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        format!("{scheme}://{}", SocketAddr::new(loopback, address.port()))
    } else {
        url.clone()
    };
    let mut workers = LocalWorkers::start(options, &local)?;
    let progress = watch(sweep, state, options, &mut workers).await;

    // Workers learn that the sweep is done from their next lease request,
    // so the server stays up until the local ones have gone, and a little
    // longer when other workers joined, which ask every `retry_after_ms`
    // (500 ms).
    let linger = tokio::time::sleep(Duration::from_millis(1200));
    workers.finish().await;
    if state.registrations() > workers.started() as u64 {
        linger.await;
    }
    let _ = stop.send(());
    reaper.abort();
    let _ = server.await;
    progress
}

/// Prints progress until the sweep is done, restarting local workers that
/// die. It reads the store through a connection of its own, so counting a
/// large sweep never holds up the writer.
async fn watch(
    sweep: &Sweep,
    state: &Arc<State>,
    options: &RunOptions,
    workers: &mut LocalWorkers,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let store = reader(options)?;
    let first = store.progress(&sweep.name)?;
    let mut last_line = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let progress = store.progress(&sweep.name)?;
        let line = progress_line(&progress, &first, started.elapsed(), &running_epochs(state));
        if line != last_line {
            if terminal {
                eprint!("\r{line:<100}");
            } else if line.split(' ').next() != last_line.split(' ').next() {
                eprintln!("{line}");
            }
            last_line = line;
        }
        if progress.is_done() {
            if terminal {
                eprintln!();
            }
            return Ok(());
        }
        workers.restart_dead().await?;
    }
}

/// Opens a reading connection to the run's store.
fn reader(options: &RunOptions) -> anyhow::Result<Store> {
    Store::reader(&options.db)
        .with_context(|| format!("cannot open the store {}", options.db.display()))
}

/// Epoch progress of the running tasks, most advanced first, leaving out
/// reports older than a lease timeout (their lease has ended).
fn running_epochs(state: &State) -> Vec<EpochProgress> {
    let now = now_ms();
    let mut epochs: Vec<EpochProgress> = state
        .epochs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .filter(|p| now - p.at_ms <= state.policy.lease_timeout_ms)
        .copied()
        .collect();
    epochs.sort_by(|a, b| {
        let fraction = |p: &EpochProgress| f64::from(p.epoch) / f64::from(p.epochs.max(1));
        fraction(b).total_cmp(&fraction(a))
    });
    epochs
}

/// The one-line progress display: tasks done, running (with the epochs of
/// up to four), failed, and an estimate of the time left.
pub fn progress_line(
    now: &Progress,
    first: &Progress,
    elapsed: Duration,
    epochs: &[EpochProgress],
) -> String {
    let done_now = (now.finished + now.failed).saturating_sub(first.finished + first.failed);
    let remaining = now.pending + now.leased;
    let eta = if done_now > 0 && remaining > 0 {
        let per_task = elapsed.as_secs_f64() / done_now as f64;
        format!(", about {:.0} s left", per_task * remaining as f64)
    } else {
        String::new()
    };
    let shown: Vec<String> = epochs
        .iter()
        .take(4)
        .map(|p| format!("{}/{}", p.epoch, p.epochs))
        .collect();
    let epochs = if shown.is_empty() {
        String::new()
    } else {
        format!(" (epochs {})", shown.join(" "))
    };
    format!(
        "[{}/{}] {} running{epochs}, {} failed{eta}",
        now.finished,
        now.total(),
        now.leased,
        now.failed
    )
}

/// Worker processes this coordinator started.
struct LocalWorkers {
    command: Vec<String>,
    token: Option<String>,
    binary: PathBuf,
    children: Vec<Child>,
    restarts: usize,
}

impl LocalWorkers {
    fn start(options: &RunOptions, url: &str) -> anyhow::Result<LocalWorkers> {
        if options.local_workers > 0 && !options.worker_binary.is_file() {
            bail!(
                "cannot start local workers: {} does not exist",
                options.worker_binary.display()
            );
        }
        let mut command = vec![
            crate::WORKER_PROCESS.to_string(),
            "--coordinator".to_string(),
            url.to_string(),
            "--threads".to_string(),
            options.threads_per_worker.to_string(),
            "--device".to_string(),
            options.worker_device.clone(),
        ];
        // Local workers trust the coordinator's own certificate.
        if let Some((cert, _)) = &options.tls {
            command.extend(["--tls-ca".to_string(), cert.display().to_string()]);
        }
        let mut workers = LocalWorkers {
            command,
            token: options.token.clone(),
            binary: options.worker_binary.clone(),
            children: Vec::new(),
            restarts: 0,
        };
        for k in 0..options.local_workers {
            let child = workers.spawn(k)?;
            workers.children.push(child);
        }
        Ok(workers)
    }

    fn spawn(&self, k: usize) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .args(&self.command)
            .args(["--name", &format!("local-{k}")])
            .kill_on_drop(true);
        // The token travels in the environment, not on a command line that
        // other users of the machine can read.
        match &self.token {
            Some(token) => command.env("MINIMA_TOKEN", token),
            None => command.env_remove("MINIMA_TOKEN"),
        };
        command
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))
    }

    /// Local worker processes started so far, restarts included.
    fn started(&self) -> usize {
        self.children.len() + self.restarts
    }

    /// A local worker that died (killed, out of memory) is replaced, up to
    /// three times per worker; its lease expires and its task runs again.
    async fn restart_dead(&mut self) -> anyhow::Result<()> {
        for k in 0..self.children.len() {
            if let Some(status) = self.children[k].try_wait()? {
                if self.restarts >= 3 * self.children.len() {
                    continue;
                }
                warn!(worker = k, status = %status, "local worker exited early; restarting it");
                self.restarts += 1;
                self.children[k] = self.spawn(k)?;
            }
        }
        Ok(())
    }

    /// Waits a little for workers to exit by themselves, then stops them.
    async fn finish(&mut self) {
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// `<out>/minima.db` unless given.
pub fn default_db(out: &Path) -> PathBuf {
    out.join("minima.db")
}

/// Task states of a sweep by id, for the status display.
pub fn statuses(store: &Store, sweep: &Sweep) -> anyhow::Result<HashMap<String, TaskStatus>> {
    Ok(store
        .task_statuses(&sweep.name)?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect())
}
