//! Errors of reading and checking a sweep file.

use thiserror::Error;

/// Why a sweep file was refused. Every message fits on one line and names the
/// offending field or file.
#[derive(Debug, Error)]
pub enum SweepError {
    #[error("cannot read sweep file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("sweep file does not parse: {0}")]
    Parse(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}
