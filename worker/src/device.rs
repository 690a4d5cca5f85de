//! Where a worker trains: burn's pure-Rust CPU backend (`flex`, always
//! built), its CUDA backend (cargo feature `cuda`) or LibTorch (cargo feature
//! `libtorch`).
//!
//! Only training runs on the chosen device. The analyses (Hessian, trace,
//! density, interpolation, surfaces) run on the CPU's native f64/f32 kernels
//! whatever the device: they are batched over the whole sample and were
//! measured faster there than burn's evaluation (docs/benchmarks.md).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device};

use crate::model::Ctx;

/// A training device, as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainDevice {
    /// burn's `flex` backend on this machine's CPU.
    #[default]
    Cpu,
    /// burn's CUDA backend on GPU `N` (`cuda:N`).
    Cuda(usize),
    /// LibTorch on the CPU (`libtorch`).
    LibTorchCpu,
    /// LibTorch on GPU `N` (`libtorch:cuda:N`).
    LibTorchCuda(usize),
}

/// A device string that does not parse, or names a backend this build lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "`{0}` is not a device: use cpu, cuda, cuda:N, libtorch, libtorch:cpu or libtorch:cuda:N"
    )]
    Unknown(String),
    #[error(
        "`{device}` needs the `{feature}` feature, which this build lacks (cargo build --features {feature})"
    )]
    NotBuilt {
        device: String,
        feature: &'static str,
    },
}

impl FromStr for TrainDevice {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<TrainDevice, DeviceError> {
        let unknown = || DeviceError::Unknown(text.to_string());
        let index = |s: &str| s.parse::<usize>().map_err(|_| unknown());
        let device = match text.trim().to_ascii_lowercase().as_str() {
            "cpu" | "flex" => TrainDevice::Cpu,
            "cuda" => TrainDevice::Cuda(0),
            "libtorch" | "libtorch:cpu" => TrainDevice::LibTorchCpu,
            "libtorch:cuda" => TrainDevice::LibTorchCuda(0),
            other => {
                if let Some(n) = other.strip_prefix("libtorch:cuda:") {
                    TrainDevice::LibTorchCuda(index(n)?)
                } else if let Some(n) = other.strip_prefix("cuda:") {
                    TrainDevice::Cuda(index(n)?)
                } else {
                    return Err(unknown());
                }
            }
        };
        device.check_built()?;
        Ok(device)
    }
}

impl fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainDevice::Cpu => write!(f, "cpu"),
            TrainDevice::Cuda(n) => write!(f, "cuda:{n}"),
            TrainDevice::LibTorchCpu => write!(f, "libtorch:cpu"),
            TrainDevice::LibTorchCuda(n) => write!(f, "libtorch:cuda:{n}"),
        }
    }
}

impl TrainDevice {
    /// The burn backend behind this device, as reported to the coordinator.
    pub fn backend(&self) -> &'static str {
        match self {
            TrainDevice::Cpu => "flex",
            TrainDevice::Cuda(_) => "cuda",
            TrainDevice::LibTorchCpu | TrainDevice::LibTorchCuda(_) => "libtorch",
        }
    }

    /// Refuses a device whose backend was not compiled in.
    fn check_built(&self) -> Result<(), DeviceError> {
        let feature = match self {
            TrainDevice::Cpu => return Ok(()),
            TrainDevice::Cuda(_) if cfg!(feature = "cuda") => return Ok(()),
            TrainDevice::LibTorchCpu | TrainDevice::LibTorchCuda(_)
                if cfg!(feature = "libtorch") =>
            {
                return Ok(());
            }
            TrainDevice::Cuda(_) => "cuda",
            _ => "libtorch",
        };
        Err(DeviceError::NotBuilt {
            device: self.to_string(),
            feature,
        })
    }

    /// The f32 autodiff context training runs in.
    ///
    /// # Panics
    /// On a device whose backend this build lacks; [`FromStr`] refuses those.
    pub fn training_context(&self) -> Ctx {
        Ctx {
            device: self.burn_device().autodiff(),
            dtype: DType::F32,
        }
    }

    fn burn_device(&self) -> Device {
        match *self {
            TrainDevice::Cpu => Device::flex(),
            #[cfg(feature = "cuda")]
            TrainDevice::Cuda(n) => Device::cuda(n),
            #[cfg(feature = "libtorch")]
            #[allow(deprecated)] // burn keeps LibTorch as a deprecated backend
            TrainDevice::LibTorchCpu => Device::libtorch(),
            #[cfg(feature = "libtorch")]
            #[allow(deprecated)]
            TrainDevice::LibTorchCuda(n) => Device::libtorch_cuda(n),
            #[allow(unreachable_patterns)]
            other => panic!("{}", other.check_built().unwrap_err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_and_print_back() {
        assert_eq!("cpu".parse(), Ok(TrainDevice::Cpu));
        assert_eq!(" CPU ".parse(), Ok(TrainDevice::Cpu));
        assert_eq!(TrainDevice::Cpu.to_string(), "cpu");
        for text in ["cuda:x", "cuda:", "gpu", "cuda:-1", "libtorch:cuda:a", ""] {
            assert_eq!(
                text.parse::<TrainDevice>(),
                Err(DeviceError::Unknown(text.to_string())),
                "{text}"
            );
        }
    }

    #[test]
    fn devices_of_backends_not_built_are_refused_by_name() {
        let cuda = "cuda:1".parse::<TrainDevice>();
        if cfg!(feature = "cuda") {
            assert_eq!(cuda, Ok(TrainDevice::Cuda(1)));
        } else {
            let message = cuda.unwrap_err().to_string();
            assert!(message.contains("`cuda:1`") && message.contains("--features cuda"));
        }
        let torch = "libtorch:cuda:2".parse::<TrainDevice>();
        if cfg!(feature = "libtorch") {
            assert_eq!(torch, Ok(TrainDevice::LibTorchCuda(2)));
            assert_eq!(TrainDevice::LibTorchCuda(2).to_string(), "libtorch:cuda:2");
        } else {
            assert!(
                torch
                    .unwrap_err()
                    .to_string()
                    .contains("--features libtorch")
            );
        }
    }
}
