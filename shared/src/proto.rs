//! The generated gRPC code of `proto/minima/v1/coordinator.proto`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("minima.v1");
