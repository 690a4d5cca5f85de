//! The `coordinator` command line: expands a sweep and runs it.
//!
//! - [`store`]: SQLite store and lease state machine.
//! - [`service`]: the gRPC service workers talk to.
//! - [`run`]: serving a sweep, local worker processes, progress.
//! - [`outputs`], [`table`], [`figures`]: the output folder.

mod figures;
mod outputs;
mod run;
mod service;
mod settings;
mod store;
mod table;
mod writer;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use minima_shared::Sweep;

use crate::run::{RunOptions, default_db, report, run_sweep};
use crate::settings::{Flags, Settings};
use crate::store::Store;

/// Sweeps built into the binary, runnable by name without their file.
const BUILTIN_SWEEPS: [(&str, &str); 3] = [
    ("table1", include_str!("../../sweeps/table1.yaml")),
    (
        "sequence-learning",
        include_str!("../../sweeps/sequence-learning.yaml"),
    ),
    ("small", include_str!("../../sweeps/small.yaml")),
];

#[derive(Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Runs a minima sweep: trains every model of its grid and tabulates the results"
)]
struct Cli {
    /// Sweep file (YAML), or the name of a built-in sweep: table1,
    /// sequence-learning, small.
    #[arg(long)]
    sweep: String,
    /// Print the expanded tasks as CSV with their parameter counts; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rebuild task folders, table.csv and the figures from the store; train nothing.
    #[arg(long, conflicts_with = "dry_run")]
    report: bool,
    /// Print every task's state, attempts, worker and last error from the store.
    #[arg(long, conflicts_with_all = ["dry_run", "report"])]
    status: bool,
    /// Settings file (YAML) read before the environment and these flags
    /// (or MINIMA_CONFIG).
    #[arg(long, env = "MINIMA_CONFIG")]
    config: Option<PathBuf>,
    /// Folder under which the sweep's results are written [default: results].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The store (SQLite) [default: <out>/minima.db].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Worker processes started on this machine [default: one per core; 0
    /// to rely on remote workers].
    #[arg(long)]
    local_workers: Option<usize>,
    /// CPU-kernel threads per local worker [default: 1].
    #[arg(long)]
    threads_per_worker: Option<usize>,
    /// Where local workers train: cpu, cuda:N (build feature `cuda`),
    /// libtorch or libtorch:cuda:N (feature `libtorch`) [default: cpu].
    /// Several local workers may share one GPU.
    #[arg(long)]
    worker_device: Option<String>,
    /// Address workers connect to; port 0 picks a free one. Anything but
    /// loopback requires a token [default: 127.0.0.1:0].
    #[arg(long)]
    listen: Option<String>,
    /// Shared secret workers must present (better: MINIMA_TOKEN, which other
    /// users cannot read from the process list).
    #[arg(long)]
    token: Option<String>,
    /// A lease not renewed for this long expires and its task runs again
    /// [default: 15000].
    #[arg(long)]
    lease_timeout_ms: Option<i64>,
    /// How often workers renew their leases [default: a third of the lease
    /// timeout].
    #[arg(long)]
    heartbeat_interval_ms: Option<i64>,
    /// Attempts before a task that fails by itself is marked failed
    /// [default: 3].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Wait before retrying a failed task, doubled per attempt [default: 1000].
    #[arg(long)]
    backoff_ms: Option<i64>,
    /// Longest wait before a retry [default: 60000].
    #[arg(long)]
    max_backoff_ms: Option<i64>,
    /// Log format on stderr: text or json [default: text].
    #[arg(long)]
    log_format: Option<String>,
    /// Serve TLS with this certificate (PEM); needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

impl Cli {
    fn flags(&self) -> Flags {
        Flags {
            listen: self.listen.clone(),
            out: self.out.clone(),
            db: self.db.clone(),
            local_workers: self.local_workers,
            threads_per_worker: self.threads_per_worker,
            worker_device: self.worker_device.clone(),
            token: self.token.clone(),
            lease_timeout_ms: self.lease_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
            log_format: self.log_format.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// The hidden mode in which the coordinator binary runs one of its own local
/// workers, so that `coordinator` alone is a complete installation.
#[derive(Parser)]
#[command(name = "coordinator worker-process", hide = true)]
struct WorkerProcess {
    #[arg(long)]
    coordinator: String,
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

/// First argument that selects [`WorkerProcess`] mode.
pub const WORKER_PROCESS: &str = "worker-process";

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(WORKER_PROCESS) {
        return worker_process();
    }
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = match Settings::load(cli.config.as_deref(), &env, &cli.flags()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&settings.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli, settings) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a local worker process: the same client as the `worker` binary.
fn worker_process() -> ExitCode {
    let args = WorkerProcess::parse_from(std::env::args().skip(1));
    let _ = init_logging("text");
    let device = args
        .device
        .parse()
        .map_err(|e| anyhow::anyhow!("--device: {e}"));
    let result = device.and_then(|device| {
        let options = minima_worker::client::ClientOptions {
            url: args.coordinator,
            token: std::env::var("MINIMA_TOKEN").ok().filter(|t| !t.is_empty()),
            tls_ca: args.tls_ca,
            name: args.name,
            threads: args.threads.max(1),
            device,
            slots: 1,
            exit_when_done: true,
            // Its coordinator is its parent: it is there, or restarting.
            give_up_after: Some(std::time::Duration::from_secs(600)),
        };
        tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(minima_worker::client::serve(options)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => bail!("--log-format: unknown format '{other}' (expected text or json)"),
    }
    Ok(())
}

fn run(cli: Cli, settings: Settings) -> anyhow::Result<ExitCode> {
    let (sweep, source) = load_sweep(&cli.sweep)?;
    if cli.dry_run {
        print_plan(&sweep)?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = RunOptions {
        db: settings
            .db
            .clone()
            .unwrap_or_else(|| default_db(&settings.out)),
        out: settings.out.clone(),
        listen: settings.listen,
        local_workers: settings
            .local_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        threads_per_worker: settings.threads_per_worker,
        worker_device: settings.worker_device.clone(),
        token: settings.token.clone(),
        policy: settings.policy(),
        heartbeat_interval_ms: settings.heartbeat_interval_ms(),
        tls: match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        },
        worker_binary: std::env::current_exe()
            .context("cannot find the coordinator's own executable")?,
    };
    if cli.status {
        return print_status(&sweep, &options);
    }
    if cli.report {
        let (finished, figures) = report(&sweep, &source, &options)?;
        eprintln!(
            "sweep {}: {finished} of {} tasks finished; table and {figures} figure files rebuilt in {}",
            sweep.name,
            sweep.tasks.len(),
            options.out.join(&sweep.name).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let summary = runtime.block_on(run_sweep(&sweep, &source, &options))?;
    let table = summary.dir.join("table.csv");
    eprintln!(
        "sweep {}: {} finished ({} before this run), {} failed; table in {}, {} figure files",
        sweep.name,
        summary.finished,
        summary.reused,
        summary.failed.len(),
        table.display(),
        summary.figures
    );
    if summary.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for task in &summary.failed {
            eprintln!(
                "failed: task {} after {} attempts: {}",
                &task.task_id[..12],
                task.attempts,
                task.last_error.as_deref().unwrap_or("no reason given")
            );
        }
        Ok(ExitCode::from(1))
    }
}

/// Prints one line per task: model, seed, state, attempts, worker, error.
fn print_status(sweep: &Sweep, options: &RunOptions) -> anyhow::Result<ExitCode> {
    if !options.db.is_file() {
        bail!(
            "no store at {}: the sweep has not run with this --out/--db",
            options.db.display()
        );
    }
    let store = Store::reader(&options.db)
        .with_context(|| format!("cannot open the store {}", options.db.display()))?;
    let statuses = run::statuses(&store, sweep)?;
    let progress = store.progress(&sweep.name)?;
    let mut text = String::from("task,model,seed,state,attempts,worker,last_error\n");
    for spec in &sweep.tasks {
        let id = spec.id();
        let (state, attempts, worker, error) = match statuses.get(id.as_str()) {
            Some(t) => (
                t.state.as_str(),
                t.attempts,
                t.worker_id.clone().unwrap_or_default(),
                t.last_error.clone().unwrap_or_default(),
            ),
            None => ("unknown", 0, String::new(), String::new()),
        };
        text.push_str(&format!(
            "{},{},{},{state},{attempts},{worker},{}\n",
            id.short(),
            spec.model.label(),
            spec.seed,
            error.replace([',', '\n'], " ")
        ));
    }
    print_quietly(&text)?;
    eprintln!(
        "sweep {}: {} finished, {} running, {} pending, {} failed",
        sweep.name, progress.finished, progress.leased, progress.pending, progress.failed
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the expanded tasks as CSV. A closed pipe (`| head`) ends the
/// listing quietly.
fn print_plan(sweep: &Sweep) -> anyhow::Result<()> {
    let mut text = format!("{}\n", table::PLAN_HEADER);
    for task in &sweep.tasks {
        text.push_str(&table::plan_row(task));
        text.push('\n');
    }
    print_quietly(&text)
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
fn print_quietly(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Reads a sweep from a file, or a built-in sweep by name when no such file
/// exists; returns it with its source text.
fn load_sweep(arg: &str) -> anyhow::Result<(Sweep, String)> {
    let path = Path::new(arg);
    let source = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("cannot read sweep file {arg}"))?
    } else if let Some((_, text)) = BUILTIN_SWEEPS.iter().find(|(name, _)| *name == arg) {
        text.to_string()
    } else {
        bail!(
            "sweep file {arg} does not exist (built-in sweeps: table1, sequence-learning, small)"
        );
    };
    let sweep = Sweep::from_yaml(&source).with_context(|| format!("sweep {arg}"))?;
    Ok((sweep, source))
}
