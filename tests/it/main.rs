//! Behaviour tests against real things: sockets on 127.0.0.1, child
//! processes, an HTTPS server, a gRPC health server, and the built binary.

mod exec_check;
mod grpc_check;
mod http_check;
