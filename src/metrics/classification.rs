//! The `reason` label of a failed run.

/// Why a run failed, for `healthproxy_check_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The run did not finish within its timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake or certificate failed.
    Tls,
    /// An HTTP status outside 200–399.
    Status,
    /// A command exited non-zero or was killed.
    ExitCode,
    /// A gRPC service that is not `SERVING`.
    NotServing,
    /// A heartbeat file too old or missing.
    Stale,
    /// A response body without the expected text.
    Output,
    /// Anything else.
    Other,
}

impl Reason {
    /// Every reason, in declaration order: `reason as usize` indexes it.
    pub(super) const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::Refused,
        Reason::Dns,
        Reason::Tls,
        Reason::Status,
        Reason::ExitCode,
        Reason::NotServing,
        Reason::Stale,
        Reason::Output,
        Reason::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Dns => "dns",
            Reason::Tls => "tls",
            Reason::Status => "status",
            Reason::ExitCode => "exit_code",
            Reason::NotServing => "not_serving",
            Reason::Stale => "stale",
            Reason::Output => "output",
            Reason::Other => "other",
        }
    }

    /// Classifies a failed run of a `kind` check from its message. The
    /// messages are the checks' own (the kubelet's words), each pinned by
    /// the checks' tests; an exec check's message is the command's output,
    /// so any exec failure that is not a timeout is an exit code.
    pub fn of(kind: &str, message: &str) -> Reason {
        let has = |s: &str| message.contains(s);
        if has(": lookup ") {
            Reason::Dns
        } else if has("timed out")
            || has("deadline exceeded")
            || has("i/o timeout")
            || message.starts_with("timeout:")
        {
            Reason::Timeout
        } else if kind == "exec" {
            Reason::ExitCode
        } else if kind == "file" {
            Reason::Stale
        } else if has("statuscode") {
            Reason::Status
        } else if has("service unhealthy") {
            Reason::NotServing
        } else if has("does not contain") {
            Reason::Output
        } else if has("connection refused") {
            Reason::Refused
        } else if has("failed to lookup") || has("not known") || has("name resolution") {
            Reason::Dns
        } else if has("tls") || has("certificate") {
            Reason::Tls
        } else {
            Reason::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_from_the_checks_messages() {
        let cases = [
            ("http", "HTTP probe failed with statuscode: 500", Reason::Status),
            (
                "http",
                "Get \"http://127.0.0.1:1/\": dial tcp 127.0.0.1:1: connect: connection refused",
                Reason::Refused,
            ),
            (
                "http",
                "Get \"http://x/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                Reason::Timeout,
            ),
            (
                "http",
                "HTTP probe failed: response body does not contain \"ok\"",
                Reason::Output,
            ),
            (
                "http",
                "Get \"https://127.0.0.1:1/\": tls: invalid peer certificate: UnknownIssuer",
                Reason::Tls,
            ),
            (
                "http",
                "Get \"http://127.0.0.1/\": stopped after 10 redirects",
                Reason::Other,
            ),
            ("tcp", "dial tcp 10.0.0.1:5432: i/o timeout", Reason::Timeout),
            (
                "tcp",
                "dial tcp nope.invalid:1: connect: failed to lookup address information: Name or service not known",
                Reason::Dns,
            ),
            (
                "grpc",
                "service unhealthy (responded with \"NOT_SERVING\")",
                Reason::NotServing,
            ),
            (
                "grpc",
                "timeout: health rpc did not complete within 1s",
                Reason::Timeout,
            ),
            ("exec", "command \"sleep 5\" timed out", Reason::Timeout),
            ("exec", "database is not ready", Reason::ExitCode),
            (
                "file",
                "heartbeat file /tmp/hb is 40s old, older than max_age 30s",
                Reason::Stale,
            ),
            (
                "tcp",
                "dial tcp no-such-host.invalid:80: lookup no-such-host.invalid: failed to lookup address information",
                Reason::Dns,
            ),
        ];
        for (kind, message, reason) in cases {
            assert_eq!(Reason::of(kind, message), reason, "{kind}: {message}");
        }
    }
}
