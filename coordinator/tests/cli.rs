//! The coordinator's command line: dry runs and the refusal of bad input.

use std::path::Path;
use std::process::{Command, Output};

fn coordinator(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("coordinator starts")
}

fn repo_file(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
        .display()
        .to_string()
}

#[test]
fn dry_run_lists_the_45_tasks_of_table1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = coordinator(
        dir.path(),
        &["--sweep", &repo_file("sweeps/table1.yaml"), "--dry-run"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("model,layers,heads,hidden,params"));
    assert_eq!(lines.len(), 1 + 45);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("LSTM,11,NA,32,88993,0,sequence-classification,10,"))
    );
    assert!(lines.iter().any(|l| l.starts_with("GRU,6,NA,32,35073,")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Transformer,11,4,32,94145,"))
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a dry run writes nothing"
    );
}

#[test]
fn builtin_sweeps_run_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = coordinator(dir.path(), &["--sweep", "sequence-learning", "--dry-run"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("LSTM,2,NA,14,2647,"), "{stdout}");
    assert!(stdout.contains("Transformer,2,1,12,2629,"), "{stdout}");
}

/// Each bad sweep is refused with exit code 2 and one line on stderr that
/// names the field and the value, never a panic.
#[test]
fn bad_sweeps_get_one_line_naming_field_and_value() {
    let grid = "grid:\n  - {arch: [lstm], layers: [1], hidden: [8]}\n";
    let head = "name: bad\ntask: sequence-classification\n";
    let cases = [
        (
            format!(
                "{head}grid:\n  - {{arch: [transformer], layers: [1], heads: [3], hidden: [8]}}\n"
            ),
            vec!["grid[0].heads", "3 heads do not divide hidden size 8"],
        ),
        (
            format!("{head}grid:\n  - {{arch: [gru], layers: [0], hidden: [8]}}\n"),
            vec!["grid[0].layers", "0"],
        ),
        (
            format!("{head}grid:\n  - {{arch: [rnn], layers: [1], hidden: [8]}}\n"),
            vec!["grid[0].arch", "rnn"],
        ),
        (
            format!("name: bad\ntask: translation\n{grid}"),
            vec!["task", "translation"],
        ),
        (
            format!("{head}train: {{epochs: 0}}\n{grid}"),
            vec!["train.epochs", "0"],
        ),
        (
            format!("{head}train: {{epochs: -2}}\n{grid}"),
            vec!["train.epochs", "-2"],
        ),
        (
            format!("{head}learning_rate: 0.1\n{grid}"),
            vec!["learning_rate"],
        ),
        (
            format!("{head}train: {{epochs: 3, lr: 0.1}}\n{grid}"),
            vec!["lr"],
        ),
        (format!("{head}grid: [unclosed\n"), vec!["does not parse"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (yaml, expected) in cases {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let output = coordinator(dir.path(), &["--sweep", file.to_str().unwrap()]);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{yaml}\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line for {yaml}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for text in expected {
            assert!(stderr.contains(text), "{stderr:?} should contain {text:?}");
        }
        assert!(
            !dir.path().join("results").exists(),
            "nothing written for {yaml}"
        );
    }
}

#[test]
fn missing_sweep_file_and_bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = coordinator(dir.path(), &["--sweep", "no-such-sweep.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no-such-sweep.yaml"), "{stderr}");

    let output = coordinator(
        dir.path(),
        &["--sweep", "small", "--threads-per-worker", "0"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("--threads-per-worker")
    );

    // Listening beyond loopback without a token is refused before anything starts.
    let output = coordinator(dir.path(), &["--sweep", "small", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--listen") && stderr.contains("--token"),
        "{stderr}"
    );
    assert!(!dir.path().join("results").exists());
}

#[test]
fn a_foreign_or_truncated_store_and_a_bad_settings_file_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    let db = rusqlite::Connection::open(&foreign).unwrap();
    db.execute_batch("CREATE TABLE accounts (id INTEGER); INSERT INTO accounts VALUES (7);")
        .unwrap();
    drop(db);
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"SQLite format 3\0 and then the file was cut short").unwrap();

    for path in [&foreign, &junk] {
        let before = std::fs::read(path).unwrap();
        let db = path.display().to_string();
        for mode in [
            &["--report"][..],
            &["--status"][..],
            &["--local-workers", "0"][..],
        ] {
            let mut args = vec!["--sweep", "small", "--db", db.as_str()];
            args.extend_from_slice(mode);
            let output = coordinator(dir.path(), &args);
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert_eq!(output.status.code(), Some(2), "{mode:?} on {db}: {stderr}");
            assert!(stderr.contains(&db), "{mode:?}: {stderr}");
            assert!(
                std::fs::read(path).unwrap() == before,
                "{mode:?} changed {db}"
            );
        }
    }

    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "lease_timeout_ms: 9000\nmax_atempts: 5\n").unwrap();
    let output = coordinator(
        dir.path(),
        &["--sweep", "small", "--config", settings.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("max_atempts"), "{stderr}");
    assert!(!dir.path().join("results").exists());
}
