//! The `worker` command line: `worker --coordinator URL` joins a coordinator
//! and trains the tasks it leases; `worker run` trains one configuration on
//! this machine, without a coordinator.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use minima_shared::sweep::{DataFile, TrainFile};
use minima_shared::{GridFile, SweepError, SweepFile, TaskSpec};
use minima_worker::client::{ClientOptions, serve};
use minima_worker::data::Dataset;
use minima_worker::device::{DeviceError, TrainDevice};
use minima_worker::run::{run_task, write_task_folder};
use minima_worker::with_compute_threads;

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "Trains and analyses sequence models for minima"
)]
struct Cli {
    /// Join the coordinator at this URL (e.g. http://10.0.0.5:7421) and train
    /// the tasks it leases.
    #[arg(long)]
    coordinator: Option<String>,
    /// Shared secret of the coordinator (or MINIMA_TOKEN).
    #[arg(long, env = "MINIMA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust this certificate (PEM) for an https:// coordinator: its own
    /// self-signed certificate or the CA that signed it (or MINIMA_TLS_CA).
    /// Without it, https uses the public web roots.
    #[arg(long, env = "MINIMA_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Name shown in the coordinator's logs and status (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Threads for the CPU kernels of each task.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where training runs: cpu, cuda:N (feature `cuda`), libtorch or
    /// libtorch:cuda:N (feature `libtorch`). The analyses run on the CPU.
    #[arg(long, env = "MINIMA_DEVICE", default_value = "cpu")]
    device: String,
    /// Tasks run at once by this process (several per GPU pay off: the
    /// study's models are too small to fill one).
    #[arg(long, env = "MINIMA_SLOTS", default_value_t = 1)]
    slots: usize,
    /// Give up (exit 2) when the coordinator has been unreachable for this
    /// many seconds; 0 retries for ever, for workers started long before
    /// their coordinator.
    #[arg(long, env = "MINIMA_GIVE_UP_AFTER", default_value_t = 600)]
    give_up_after: u64,
    /// Exit when the coordinator's sweep is done instead of waiting for more.
    #[arg(long)]
    exit_when_done: bool,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train one configuration here and write its results.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Model family: lstm, gru or transformer.
    #[arg(long)]
    arch: String,
    /// Number of stacked layers.
    #[arg(long, allow_negative_numbers = true)]
    layers: f64,
    /// Hidden size d.
    #[arg(long, allow_negative_numbers = true)]
    hidden: f64,
    /// Attention heads (Transformer only).
    #[arg(long, allow_negative_numbers = true)]
    heads: Option<f64>,
    /// sequence-classification or sequence-learning.
    #[arg(long, default_value = "sequence-classification")]
    task: String,
    /// Epochs (default: 10 for classification, 50 for sequence learning).
    #[arg(long, allow_negative_numbers = true)]
    epochs: Option<f64>,
    /// Seed of initialisation, dropout and batch order.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    seed: f64,
    /// Seed of the data set.
    #[arg(long, allow_negative_numbers = true)]
    data_seed: Option<f64>,
    /// Sequences in the whole data set (default 5000).
    #[arg(long, allow_negative_numbers = true)]
    samples: Option<f64>,
    /// Dropout probability (default 0.1).
    #[arg(long, allow_negative_numbers = true)]
    dropout: Option<f64>,
    /// Output folder (default: results/single/<task folder>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the data splits as .npy under <out>/data.
    #[arg(long)]
    write_data: bool,
    /// Threads for the CPU kernels.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where training runs: cpu, cuda:N, libtorch or libtorch:cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    init_logging(&cli.log_format);
    let result = match (cli.command.take(), cli.coordinator.take()) {
        (Some(Command::Run(args)), None) => run(args),
        (None, Some(url)) => worker_options(url, &cli).and_then(join),
        (Some(_), Some(_)) => Err(anyhow::anyhow!(
            "--coordinator: not with `run`, which needs no coordinator"
        )),
        (None, None) => Err(anyhow::anyhow!(
            "nothing to do: give --coordinator URL to join a coordinator, or `worker run --help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The options of `worker --coordinator URL`, with every flag checked.
fn worker_options(url: String, cli: &Cli) -> anyhow::Result<ClientOptions> {
    if cli.slots == 0 {
        anyhow::bail!("--slots: must be at least 1");
    }
    Ok(ClientOptions {
        url,
        token: cli.token.clone(),
        tls_ca: cli.tls_ca.clone(),
        name: cli.name.clone().unwrap_or_else(host_name),
        threads: cli.threads.max(1),
        device: parse_device(&cli.device)?,
        slots: cli.slots,
        exit_when_done: cli.exit_when_done,
        give_up_after: (cli.give_up_after > 0)
            .then(|| std::time::Duration::from_secs(cli.give_up_after)),
    })
}

fn parse_device(text: &str) -> anyhow::Result<TrainDevice> {
    text.parse()
        .map_err(|e: DeviceError| anyhow::anyhow!("--device: {e}"))
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()))
}

/// Joins a coordinator until its sweep is done or the process is stopped.
fn join(options: ClientOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(options))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let spec = task_from_args(&args)?;
    let device = parse_device(&args.device)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results/single").join(spec.folder_name()));

    let model = spec.model;
    eprintln!(
        "training {} ({} parameters) on {} for {} epochs on {device}",
        model.label(),
        model.param_count(),
        spec.task,
        spec.train.epochs
    );
    let report = with_compute_threads(args.threads, || {
        run_task(&spec, device, &mut |e| {
            eprintln!(
                "epoch {:>3}/{}  train loss {:.6}  validation loss {:.6}",
                e.epoch, spec.train.epochs, e.train_loss, e.validation_loss
            );
        })
    });
    write_task_folder(&out, &spec, &report)?;
    if args.write_data {
        let data = Dataset::generate(spec.task, &spec.data);
        let dir = out.join("data");
        data.write_npy(&dir)
            .with_context(|| format!("cannot write {}", dir.display()))?;
    }

    let m = &report.metrics;
    let accuracy = m
        .test_accuracy
        .map(|a| format!(", test accuracy {:.1} %", 100.0 * a))
        .unwrap_or_default();
    println!(
        "{} {} layers d={}{}: {} parameters, test loss {:.6}{}, trained in {:.1} s",
        model.arch,
        model.layers,
        model.hidden,
        model
            .heads
            .map(|h| format!(" heads={h}"))
            .unwrap_or_default(),
        m.params,
        m.test_loss,
        accuracy,
        report.timings.train_seconds
    );
    println!("results in {}", out.display());
    Ok(())
}

/// Builds the task through the same validation as a sweep file, so the
/// command line and sweep files accept and refuse the same values.
fn task_from_args(args: &RunArgs) -> anyhow::Result<TaskSpec> {
    let file = SweepFile {
        name: "single".into(),
        task: args.task.clone(),
        data: DataFile {
            samples: args.samples,
            seed: args.data_seed,
            ..DataFile::default()
        },
        train: TrainFile {
            epochs: args.epochs,
            dropout: args.dropout,
            ..TrainFile::default()
        },
        grid: vec![GridFile {
            arch: vec![args.arch.clone()],
            layers: vec![args.layers],
            hidden: vec![args.hidden],
            heads: args.heads.map(|h| vec![h]),
        }],
        seeds: Some(vec![args.seed]),
        analysis: None,
    };
    let mut sweep = file
        .validate()
        .map_err(|e| anyhow::anyhow!(flag_error(e)))?;
    Ok(sweep.tasks.remove(0))
}

/// Names the command-line flag instead of the sweep-file field.
fn flag_error(error: SweepError) -> String {
    match error {
        SweepError::Invalid { field, message } => {
            let flag = match field.as_str() {
                "grid[0].arch" => "--arch",
                "grid[0].layers" => "--layers",
                "grid[0].hidden" => "--hidden",
                "grid[0].heads" => "--heads",
                "train.epochs" => "--epochs",
                "train.dropout" => "--dropout",
                "data.samples" => "--samples",
                "data.seed" => "--data-seed",
                "seeds" => "--seed",
                other => other,
            };
            format!("{flag}: {message}")
        }
        other => other.to_string(),
    }
}
