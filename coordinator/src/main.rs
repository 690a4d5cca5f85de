//! The `coordinator` command line: expands a sweep and runs it.

mod figures;
mod local;
mod store;
mod table;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use minima_shared::Sweep;

use crate::local::{LocalOptions, rebuild, run_sweep};

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
    /// Rebuild table.csv and the figures from finished tasks; train nothing.
    #[arg(long, conflicts_with = "dry_run")]
    report: bool,
    /// Folder under which the sweep's results are written.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Worker threads on this machine (default: one per core).
    #[arg(long)]
    local_workers: Option<usize>,
    /// CPU-kernel threads per local worker.
    #[arg(long, default_value_t = 1)]
    threads_per_worker: usize,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (sweep, source) = load_sweep(&cli.sweep)?;
    if cli.dry_run {
        print_plan(&sweep)?;
        return Ok(ExitCode::SUCCESS);
    }

    let workers = match cli.local_workers {
        Some(0) => bail!("--local-workers: must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if cli.threads_per_worker == 0 {
        bail!("--threads-per-worker: must be at least 1");
    }
    let options = LocalOptions {
        out: cli.out,
        workers,
        threads_per_worker: cli.threads_per_worker,
    };
    if cli.report {
        let (finished, figures) = rebuild(&sweep, &options)?;
        eprintln!(
            "sweep {}: {finished} of {} tasks finished; table and {figures} figure files rebuilt in {}",
            sweep.name,
            sweep.tasks.len(),
            options.out.join(&sweep.name).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let summary = run_sweep(&sweep, &source, &options)?;
    let table = summary.dir.join("table.csv");
    eprintln!(
        "sweep {}: {} run, {} reused, {} failed; table in {}, {} figure files",
        sweep.name,
        summary.ran,
        summary.reused,
        summary.failed.len(),
        table.display(),
        summary.figures
    );
    if summary.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for (spec, reason) in &summary.failed {
            eprintln!(
                "failed: {} seed {}: {reason}",
                spec.model.label(),
                spec.seed
            );
        }
        Ok(ExitCode::from(1))
    }
}

/// Prints the expanded tasks as CSV. A closed pipe (`| head`) ends the
/// listing quietly.
fn print_plan(sweep: &Sweep) -> anyhow::Result<()> {
    let mut text = format!("{}\n", table::PLAN_HEADER);
    for task in &sweep.tasks {
        text.push_str(&table::plan_row(task));
        text.push('\n');
    }
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
