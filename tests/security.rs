//! Security between real processes: TLS with certificate and key files.
//! (Tokens are tested with the other failures in faults.rs.)

use std::path::Path;

use minima_e2e::{assert_success, run};

const SWEEP: &str = "
name: tls
task: sequence-classification
data: {samples: 200}
train: {epochs: 1}
analysis: {}
grid:
  - {arch: [gru], layers: [1], hidden: [4]}
";

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM.
fn self_signed(dir: &Path) {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
}

#[test]
fn a_sweep_runs_over_tls_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.yaml"), SWEEP).unwrap();
    self_signed(dir.path());
    let output = run(
        "coordinator",
        dir.path(),
        &[
            "--sweep",
            "tls.yaml",
            "--local-workers",
            "1",
            "--token",
            "s3cret",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
        ],
    );
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listening on https://"), "{stderr}");
    let table = std::fs::read_to_string(dir.path().join("results/tls/table.csv")).unwrap();
    assert_eq!(table.lines().count(), 2, "{table}");
}

#[test]
fn a_certificate_without_its_key_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.yaml"), SWEEP).unwrap();
    self_signed(dir.path());
    let output = run(
        "coordinator",
        dir.path(),
        &["--sweep", "tls.yaml", "--tls-cert", "cert.pem"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls_key"), "{stderr}");
    assert!(!dir.path().join("results").exists(), "nothing written");
}
