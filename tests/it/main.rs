//! Behaviour tests against real things: sockets on 127.0.0.1, child
//! processes, an HTTPS server, a gRPC health server, and the built binary.

mod cli;
mod commands;
mod db_dialogue;
mod db_mysql;
mod db_mysql8;
mod db_postgres;
mod db_redis;
mod deploy;
mod drain;
mod endpoints;
mod example_config;
mod exec_check;
#[cfg(feature = "inject")]
mod exec_convert_e2e;
mod fuzz_regressions;
mod grpc_check;
mod grpc_endpoint;
mod haproxy;
mod hostile;
mod http_check;
mod http_rules;
mod http_tools;
#[cfg(feature = "inject")]
mod inject;
mod kubelet_parity;
mod limits;
mod logs;
mod metrics;
mod oracle;
mod reasons;
mod reload;
mod reload_rule;
mod response_fuzz;
mod soak;
mod support;
mod surfaces;
mod thresholds;
mod tls_checks;
#[cfg(feature = "webhook")]
mod webhook;
