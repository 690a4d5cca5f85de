//! Types the coordinator and the workers agree on.
//!
//! - [`sweep`]: the user's sweep file, its validation and its expansion into tasks.
//! - [`task`]: one task's full configuration and its canonical id.
//! - [`model`]: the three model families and their exact parameter counts.
//! - [`metrics`]: what a finished task reports.
//! - [`error`]: the errors of reading a sweep file.
//! - [`proto`]: the generated gRPC code of the coordinator-worker contract.

pub mod error;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod sweep;
pub mod task;

pub use error::SweepError;
pub use metrics::{EpochLosses, TaskMetrics, TaskTimings};
pub use model::{Arch, ModelSpec};
pub use sweep::{GridFile, Sweep, SweepFile};
pub use task::{TaskId, TaskKind, TaskSpec};
