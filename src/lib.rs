//! healthproxy: a Kubernetes sidecar that runs an application's health
//! checks locally with the kubelet's semantics and serves `/livez`,
//! `/readyz` and `/startupz` for the kubelet's httpGet probes.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed settings, and lints.
//! - [`check`]: one run of one check (http, tcp, exec, grpc, file).
//! - [`engine`]: one task per check: timers, timeouts, thresholds.
//! - [`state`]: the shared snapshot the endpoints read.
//! - [`server`]: the HTTP endpoints.
//! - [`cli`]: the command line and its subcommands.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod check;
pub mod config;
