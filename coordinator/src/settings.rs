//! The coordinator's settings: defaults, then a settings file, then
//! `MINIMA_*` environment variables, then flags, each overriding the one
//! before (the `config` crate does the layering).
//!
//! A settings file is YAML with the keys of [`Settings`]:
//!
//! ```yaml
//! listen: 0.0.0.0:7070
//! out: /var/lib/minima/results
//! lease_timeout_ms: 30000
//! heartbeat_interval_ms: 10000
//! max_attempts: 5
//! ```
//!
//! Each key has an environment variable of the same name in capitals after
//! `MINIMA_` (`MINIMA_LEASE_TIMEOUT_MS`) and a flag (`--lease-timeout-ms`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use minima_worker::device::TrainDevice;

use crate::store::Policy;

/// Every setting, after layering. Keys of the settings file are these
/// field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address workers connect to; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Folder under which each sweep writes `<out>/<name>`.
    pub out: PathBuf,
    /// The store; `<out>/minima.db` when unset.
    pub db: Option<PathBuf>,
    /// Local worker processes; one per core when unset.
    pub local_workers: Option<usize>,
    pub threads_per_worker: usize,
    /// Where local workers train: cpu, cuda:N or libtorch[:cuda:N].
    pub worker_device: String,
    /// Shared secret every worker presents.
    pub token: Option<String>,
    pub lease_timeout_ms: i64,
    /// How often workers renew their leases; a third of the lease timeout
    /// when unset.
    pub heartbeat_interval_ms: Option<i64>,
    pub max_attempts: u32,
    /// Backoff before a failed task's first retry, doubled for each further.
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// `text` or `json`.
    pub log_format: String,
    /// Server certificate (PEM) for TLS; TLS is on when this is set.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
}

/// The keys, for the environment variables they accept.
const KEYS: [&str; 15] = [
    "listen",
    "out",
    "db",
    "local_workers",
    "threads_per_worker",
    "worker_device",
    "token",
    "lease_timeout_ms",
    "heartbeat_interval_ms",
    "max_attempts",
    "backoff_ms",
    "max_backoff_ms",
    "log_format",
    "tls_cert",
    "tls_key",
];

/// Values given on the command line; `None` where a flag was not given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<String>,
    pub out: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub local_workers: Option<usize>,
    pub threads_per_worker: Option<usize>,
    pub worker_device: Option<String>,
    pub token: Option<String>,
    pub lease_timeout_ms: Option<i64>,
    pub heartbeat_interval_ms: Option<i64>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<i64>,
    pub max_backoff_ms: Option<i64>,
    pub log_format: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Settings {
    /// Layers defaults, the settings `file`, the `MINIMA_*` variables of
    /// `env` and `flags`, then checks every value.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        flags: &Flags,
    ) -> anyhow::Result<Settings> {
        let mut builder = Config::builder()
            .set_default("listen", "127.0.0.1:0")?
            .set_default("out", "results")?
            .set_default("threads_per_worker", 1)?
            .set_default("worker_device", "cpu")?
            .set_default("lease_timeout_ms", 15_000)?
            .set_default("max_attempts", 3)?
            .set_default("backoff_ms", 1_000)?
            .set_default("max_backoff_ms", 60_000)?
            .set_default("log_format", "text")?;
        if let Some(path) = file {
            if !path.is_file() {
                bail!("settings file {} does not exist", path.display());
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read settings file {}", path.display()))?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Yaml));
        }
        // Only our own variables: an unrelated MINIMA_* is not a typo here.
        let ours: config::Map<String, String> = env
            .iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("MINIMA_")?.to_ascii_lowercase();
                KEYS.contains(&key.as_str())
                    .then(|| (name.clone(), value.clone()))
            })
            .filter(|(_, value)| !value.is_empty())
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("MINIMA")
                .prefix_separator("_")
                .source(Some(ours)),
        );
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        builder = builder
            .set_override_option("listen", flags.listen.clone())?
            .set_override_option("out", path(&flags.out))?
            .set_override_option("db", path(&flags.db))?
            .set_override_option("local_workers", flags.local_workers.map(|n| n as u64))?
            .set_override_option(
                "threads_per_worker",
                flags.threads_per_worker.map(|n| n as u64),
            )?
            .set_override_option("worker_device", flags.worker_device.clone())?
            .set_override_option("token", flags.token.clone())?
            .set_override_option("lease_timeout_ms", flags.lease_timeout_ms)?
            .set_override_option("heartbeat_interval_ms", flags.heartbeat_interval_ms)?
            .set_override_option("max_attempts", flags.max_attempts.map(u64::from))?
            .set_override_option("backoff_ms", flags.backoff_ms)?
            .set_override_option("max_backoff_ms", flags.max_backoff_ms)?
            .set_override_option("log_format", flags.log_format.clone())?
            .set_override_option("tls_cert", path(&flags.tls_cert))?
            .set_override_option("tls_key", path(&flags.tls_key))?;
        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.threads_per_worker == 0 {
            bail!("threads_per_worker (--threads-per-worker): must be at least 1");
        }
        if let Err(e) = self.worker_device.parse::<TrainDevice>() {
            bail!("worker_device (--worker-device): {e}");
        }
        if self.lease_timeout_ms < 100 {
            bail!(
                "lease_timeout_ms (--lease-timeout-ms): {} is too short (at least 100)",
                self.lease_timeout_ms
            );
        }
        let heartbeat = self.heartbeat_interval_ms();
        if heartbeat < 10 || 2 * heartbeat > self.lease_timeout_ms {
            bail!(
                "heartbeat_interval_ms (--heartbeat-interval-ms): {heartbeat} must be at least 10 and at most half of lease_timeout_ms ({}), so a lease survives a missed heartbeat",
                self.lease_timeout_ms
            );
        }
        if self.max_attempts == 0 {
            bail!("max_attempts (--max-attempts): must be at least 1");
        }
        if self.backoff_ms < 0 || self.max_backoff_ms < self.backoff_ms {
            bail!(
                "backoff_ms (--backoff-ms): {} must be at least 0 and at most max_backoff_ms ({})",
                self.backoff_ms,
                self.max_backoff_ms
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!(
                "log_format (--log-format): unknown format '{}' (expected text or json)",
                self.log_format
            );
        }
        if self.token.as_deref() == Some("") {
            bail!("token (--token): must not be empty");
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            bail!(
                "listen (--listen): {} is not a loopback address; set a token (--token or MINIMA_TOKEN) so only your workers can join",
                self.listen
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => bail!("tls_key (--tls-key): required with tls_cert"),
            (None, Some(_)) => bail!("tls_cert (--tls-cert): required with tls_key"),
            (Some(cert), Some(key)) => {
                for (field, path) in [("tls_cert", cert), ("tls_key", key)] {
                    if !path.is_file() {
                        bail!("{field}: {} does not exist", path.display());
                    }
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The heartbeat interval workers are told to keep.
    pub fn heartbeat_interval_ms(&self) -> i64 {
        self.heartbeat_interval_ms
            .unwrap_or(self.lease_timeout_ms / 3)
    }

    pub fn policy(&self) -> Policy {
        Policy {
            lease_timeout_ms: self.lease_timeout_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = Settings::load(None, &env(&[]), &Flags::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(s.out, PathBuf::from("results"));
        assert_eq!(s.lease_timeout_ms, 15_000);
        assert_eq!(s.heartbeat_interval_ms(), 5_000);
        assert_eq!(s.policy(), Policy::default());
    }

    #[test]
    fn file_then_environment_then_flags_each_override_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("coordinator.yaml");
        std::fs::write(
            &file,
            "lease_timeout_ms: 30000\nmax_attempts: 5\nout: from-file\nbackoff_ms: 10\n",
        )
        .unwrap();
        let vars = env(&[
            ("MINIMA_MAX_ATTEMPTS", "7"),
            ("MINIMA_OUT", "from-env"),
            ("MINIMA_CONFIG", "not a setting, ignored"),
            ("PATH", "/bin"),
        ]);
        let flags = Flags {
            out: Some("from-flag".into()),
            ..Flags::default()
        };
        let s = Settings::load(Some(&file), &vars, &flags).unwrap();
        assert_eq!(s.lease_timeout_ms, 30_000, "file over default");
        assert_eq!(s.heartbeat_interval_ms(), 10_000, "a third of the file's");
        assert_eq!(s.backoff_ms, 10, "file over default");
        assert_eq!(s.max_attempts, 7, "environment over file");
        assert_eq!(s.out, PathBuf::from("from-flag"), "flag over environment");
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &str); 6] = [
            ("lease_timeout_ms: 50\n", "lease_timeout_ms"),
            (
                "lease_timeout_ms: 1000\nheartbeat_interval_ms: 600\n",
                "heartbeat_interval_ms",
            ),
            ("lease_timout_ms: 1000\n", "lease_timout_ms"),
            ("max_attempts: many\n", "max_attempts"),
            ("listen: 0.0.0.0:7070\n", "listen"),
            ("tls_cert: cert.pem\n", "tls_key"),
        ];
        for (text, field) in cases {
            let file = dir.path().join("bad.yaml");
            std::fs::write(&file, text).unwrap();
            let error = Settings::load(Some(&file), &env(&[]), &Flags::default())
                .expect_err(text)
                .to_string();
            assert!(error.contains(field), "{text:?}: {error}");
        }
        let error = Settings::load(
            None,
            &env(&[("MINIMA_LEASE_TIMEOUT_MS", "soon")]),
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("lease_timeout_ms"), "{error}");
    }
}
