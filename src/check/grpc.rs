//! `grpc`: call `grpc.health.v1.Health/Check` over plaintext HTTP/2 on a
//! fresh connection; only `SERVING` is healthy. Every other outcome is a
//! failure in the kubelet's words (kubelet-semantics §2.3).

use std::error::Error as _;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Failed, Outcome, Reason, Resolver, dial, error_chain};
use crate::config::GrpcSpec;

/// The `User-Agent` of the calls; the kubelet's is `kube-probe/<version>`.
/// (tonic appends its own `tonic/<version>`.)
const USER_AGENT: &str = concat!("healthproxy/", env!("CARGO_PKG_VERSION"));

/// A prepared grpc check.
#[derive(Debug)]
pub struct GrpcCheck {
    spec: GrpcSpec,
    resolver: Resolver,
}

impl GrpcCheck {
    /// Prepares the check.
    pub fn new(spec: GrpcSpec) -> Self {
        GrpcCheck {
            spec,
            resolver: Resolver::default(),
        }
    }

    /// Connects and calls `Check` once; one deadline, `timeout` from now,
    /// covers the dial, the HTTP/2 handshake and the call, as the kubelet's
    /// single context does.
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let within = humantime::format_duration(timeout);
        let authority = self.spec.host.authority(self.spec.port);

        let channel = match self.connect(&authority, deadline).await {
            Ok(channel) => channel,
            Err(Failed {
                reason: Reason::Timeout,
                message,
            }) => {
                return Outcome::failure(
                    Reason::Timeout,
                    format!("timeout: failed to connect service {authority:?} within {within}: {message}"),
                );
            }
            Err(Failed { reason, message }) => {
                return Outcome::failure(
                    reason,
                    format!("error: failed to connect service at {authority:?}: {message}"),
                );
            }
        };

        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.spec.service.clone(),
        });
        // Tell the server too, as grpc-go does from the context deadline.
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let call = async { HealthClient::new(channel).check(request).await };
        let rpc_timeout = || format!("timeout: health rpc did not complete within {within}");
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Outcome::failure(Reason::Timeout, rpc_timeout()),
            Ok(Ok(response)) => {
                let status = response.into_inner().status;
                match ServingStatus::try_from(status) {
                    Ok(ServingStatus::Serving) => Outcome::success("service healthy"),
                    Ok(other) => Outcome::failure(
                        Reason::NotServing,
                        format!("service unhealthy (responded with {:?})", other.as_str_name()),
                    ),
                    // Go prints an unknown enum value as its number.
                    Err(_) => Outcome::failure(
                        Reason::NotServing,
                        format!("service unhealthy (responded with {:?})", status.to_string()),
                    ),
                }
            }
            Ok(Err(status)) => match status.code() {
                Code::Unimplemented => Outcome::failure(
                    Reason::Other,
                    format!(
                        "error: this server does not implement the grpc health protocol \
                     (grpc.health.v1.Health): {}",
                        status.message()
                    ),
                ),
                Code::DeadlineExceeded => Outcome::failure(Reason::Timeout, rpc_timeout()),
                // tonic enforces the request's grpc-timeout on the client
                // side too and reports it as Cancelled: our own deadline.
                Code::Cancelled if Instant::now() >= deadline => {
                    Outcome::failure(Reason::Timeout, rpc_timeout())
                }
                _ => Outcome::failure(
                    Reason::Other,
                    format!(
                        "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                        status.code(),
                        status_text(&status)
                    ),
                ),
            },
        }
    }

    /// Dials `host:port` and completes the HTTP/2 handshake by `deadline`.
    /// A dial that ran out of time fails with [`Reason::Timeout`].
    async fn connect(&self, authority: &str, deadline: Instant) -> Result<Channel, Failed> {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = dial(&self.resolver, &self.spec.host, self.spec.port, left).await?;
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .and_then(|e| e.user_agent(USER_AGENT))
            .map_err(|e| Failed::new(Reason::Other, error_chain(&e)))?;
        match tokio::time::timeout_at(deadline, endpoint.connect_with_connector(Dialed(Some(stream)))).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(Failed::new(Reason::Other, error_chain(&e))),
            Err(_) => Err(Failed::new(
                Reason::Timeout,
                "the HTTP/2 handshake did not complete",
            )),
        }
    }
}

/// A status's message, or its transport cause when the message is empty
/// (a connection that broke during the call).
fn status_text(status: &tonic::Status) -> String {
    match (status.message(), status.source()) {
        ("", Some(source)) => error_chain(source),
        (message, _) => message.to_string(),
    }
}

/// A connector that hands tonic the stream [`dial`] opened, so the dial
/// has the same bounds and messages as every other network check. A
/// second connection attempt (tonic reconnecting) fails.
struct Dialed(Option<TcpStream>);

impl tower::Service<Uri> for Dialed {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        ready(
            self.0
                .take()
                .map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("connection closed")),
        )
    }
}
