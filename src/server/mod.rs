//! The HTTP endpoints. Every probe is answered from the cached snapshot; a
//! request never runs a check.
//!
//! | method    | path                                  | status     |
//! |-----------|---------------------------------------|------------|
//! | GET, HEAD | `/healthz`                            | 200: the sidecar itself answers |
//! | GET, HEAD | `/startupz`, `/livez`, `/readyz`      | 200 or 503 |
//! | GET, HEAD | `/startupz/NAME`, `/livez/NAME`, `/readyz/NAME` | 200 or 503; 404 for an unknown check |
//! | GET, HEAD | `/containers/CONTAINER/livez` (and `readyz`, `startupz`) | 200 or 503; 404 for an unknown container |
//! | GET, POST | `/prestop`                            | 200 once the drain is done; 401 without the token, 403 off loopback when none is set |
//! | POST      | `/drain`                              | 202: the drain has started; 401 / 403 as `/prestop` |
//! | POST      | `/exit`                               | 200, then the process exits 0; 401 / 403 as `/prestop` |
//! | POST      | `/reload`                             | 200: the config file reloaded; 400: rejected, the running one stays; 401 / 403 as `/prestop` |
//! | GET, HEAD | `/metrics`                            | 200: Prometheus text format |
//! | GET, HEAD | `/status`                             | 200: every check's state and recent transitions, JSON (`healthproxy status`) |
//!
//! Probes take `?verbose`, `?exclude=NAME` (repeatable) and `?format=json`,
//! and honour `Accept: application/json` and `application/health+json`.
//! Other methods get 405, other paths 404.
//!
//! # Two paths for a request
//!
//! A plain probe — `GET` or `HEAD` of `/healthz`, `/startupz`, `/livez` or
//! `/readyz`, no query, no JSON asked for: what the kubelet sends, many
//! times a second across a node — that arrives whole as a connection's
//! next bytes is answered from those bytes before hyper sees them
//! (`front`), with the bytes hyper would write. Everything else, plain
//! probes on a connection hyper already serves included, goes through
//! hyper to the router (`handlers`). Each request's path is parsed once
//! into a `Route` (`route`): the router is built from its patterns, the
//! handlers answer from it, and `healthproxy_http_requests_total` is
//! counted by it.
//!
//! There used to be a third path, a plain probe answered inside hyper's
//! service call without the router. It went (issue 28) because the front
//! path already takes every plain probe the kubelet sends, at half the
//! instructions: under callgrind (`bench/request_cost.py`, GET /readyz
//! with the kubelet's headers, 4,000 requests) the front path costs 6,448
//! instructions a request on 64 kept-alive connections and 14,998 on a
//! fresh connection each, hyper with the service-call path 12,699 and
//! 26,783 (both measured on 912593c, the second with the front path
//! turned off). What the third path still served — a plain probe after a
//! routed request on the same connection, pipelined probes, HTTP/1.0 — is
//! rare and now pays the router's cost, for the same bytes. Keeping hyper's path and
//! deleting the front one instead would have encoded every answer once,
//! as hyper does, but doubled the kubelet's cost per probe; so the answer
//! keeps two encodings of one template (`answer`), checked byte for byte
//! against each other by `tests/it/endpoints.rs`.
//!
//! # Layout
//!
//! - `endpoints`: `Endpoints`, the handle both paths answer through.
//! - `answer`: `Answer`, its response for hyper and its head for the
//!   front path; the format a request asks for.
//! - `shared`: what the handlers share (the snapshot, the lifecycle, the
//!   metrics, the reloads) and the probes' answers built from it.
//! - `admission`: what clients may make the endpoints hold or do at once
//!   (large answers, renderings, scrapes, log lines).
//! - `handlers`: the router and the handlers of every route.
//! - `listen`: the accept loop of the HTTP listener; `table`: its
//!   connections and the sweep; `front`: the front path, a connection's
//!   plain probes answered from its bytes.
//! - `budget`: what the sidecar may hold (binding, the open files limit,
//!   the connection caps, the memory budget). `answers`: the budget of
//!   large answers.
//! - `render`: the bodies (text, JSON, health+json, `/status`).
//! - `accept`: the accept loop every listener shares (HTTP, gRPC, the
//!   webhook's two ports), over one connection table (`table`).
//! - `grpc`: the gRPC health endpoint. `held`: a gRPC or webhook
//!   connection, closed when its table makes room.

pub(crate) mod accept;
mod admission;
mod answer;
mod answers;
mod budget;
mod endpoints;
mod front;
pub mod grpc;
mod handlers;
pub(crate) mod held;
mod listen;
mod render;
mod route;
mod shared;
mod table;

pub(crate) use budget::{SHUTDOWN_GRACE, bind, connection_cap};
pub use budget::{memory_budget, memory_limit, raise_fd_limit};
pub(crate) use endpoints::endpoints;
pub(crate) use listen::serve;
pub use render::{Options, Probe, Scope};
