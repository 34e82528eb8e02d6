//! Why a run failed, decided by the code that saw it fail: the `reason`
//! label of `healthproxy_check_failures_total`.

/// Why a run failed, for `healthproxy_check_failures_total{reason}`.
/// Each check produces it where the failure happens, never from the text
/// of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// A response body without the expected text (`body_contains`).
    Output,
    /// A response body that breaks `body_matches` or `body_not_matches`.
    Body,
    /// A response header missing or not matching `header_matches`.
    Header,
    /// The server refused the credentials (Redis `NOAUTH`/`WRONGPASS`,
    /// MySQL access denied).
    Auth,
    /// The server answered, but not what the check expects: an error
    /// reply, a failed query, a dialogue's pattern not found.
    Reply,
    /// A server that answered it is not accepting connections now:
    /// starting up, shutting down, in recovery (PostgreSQL's SQLSTATE
    /// 57P03, `pg_isready`'s "rejecting connections").
    Rejecting,
    /// The peer does not speak the check's protocol.
    Protocol,
    /// No process matched (`process`).
    NoProcess,
    /// Anything else.
    Other,
}

impl Reason {
    /// Every reason, in declaration order: `reason as usize` indexes it.
    pub(crate) const ALL: [Reason; 17] = [
        Reason::Timeout,
        Reason::Refused,
        Reason::Dns,
        Reason::Tls,
        Reason::Status,
        Reason::ExitCode,
        Reason::NotServing,
        Reason::Stale,
        Reason::Output,
        Reason::Body,
        Reason::Header,
        Reason::Auth,
        Reason::Reply,
        Reason::Rejecting,
        Reason::Protocol,
        Reason::NoProcess,
        Reason::Other,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
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
            Reason::Body => "body",
            Reason::Header => "header",
            Reason::Auth => "auth",
            Reason::Reply => "reply",
            Reason::Rejecting => "rejecting",
            Reason::Protocol => "protocol",
            Reason::NoProcess => "no_process",
            Reason::Other => "other",
        }
    }
}
