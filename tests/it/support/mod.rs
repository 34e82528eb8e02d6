//! Shared test support, one file per concern:
//!
//! - `sidecar`: the real binary (`healthproxy run` on an ephemeral port,
//!   its JSON logs, other subcommands run to completion);
//! - `app`: a small app whose health can be switched;
//! - `http`: an HTTP client (a request on a fresh connection, answers read
//!   off a kept-alive one);
//! - `probe`: the kubelet's HTTP prober as a client, and a prober that
//!   runs beside an attack;
//! - `wait`: `eventually`, waiting on a condition with a deadline;
//! - `net`: ports on 127.0.0.1;
//! - `proc`: what `/proc` says about a process, a child reaped on drop;
//! - `tools`: the installed tools the tests drive;
//! - `metrics`: reading the metrics text.
//!
//! The pod-network suite (tests/pod) includes this folder too, so a
//! helper is written once for both. Every helper is re-exported here, so
//! that `crate::support::NAME` is the path a test uses.

pub mod app;
pub mod http;
pub mod metrics;
pub mod net;
pub mod probe;
pub mod proc;
pub mod sidecar;
pub mod tools;
pub mod wait;

// Every helper at `crate::support::NAME`, whether a test of this binary
// uses it today or not (tests/pod uses others).
#[allow(unused_imports)]
pub use self::{
    app::App,
    http::{Reply, next_answer, request},
    metrics::{metric, series},
    net::{free_port, refusing_port},
    probe::{Prober, Seen, assert_no_probe_lost},
    proc::{Process, open_fds, proc_status, status_field},
    sidecar::{Proxy, binary, collect_logs, log_lines, run_binary},
    tools::{marked_sleeper, piped, tool},
    wait::eventually,
};
