//! Helpers of the end-to-end tests: the real binaries and scratch folders.
//!
//! The binaries are those `cargo test --workspace` builds beside the test
//! executables (the coordinator and worker packages have integration tests
//! of their own, which makes cargo build their binaries first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Path of a workspace binary built by this `cargo test` run.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Runs a binary with `args` in `dir` and waits for it.
pub fn run(name: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"))
}

/// Panics with the process's output unless it exited with 0.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `coordinator` in `dir` with `args` and returns it with the URL it
/// prints once listening. Its stderr keeps being drained, so it never blocks
/// on a full pipe; its stdout is discarded.
pub fn start_coordinator(dir: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(binary("coordinator"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("coordinator prints its address")
            .unwrap();
        if let Some(url) = line.strip_prefix("coordinator listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}
