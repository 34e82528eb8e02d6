//! The route table: a request's path parsed once into a [`Route`]. The
//! route picks the answer, for the fast path and the router's handlers
//! alike, and labels the request's counter; the router is built from the
//! same patterns.

use crate::config::ProbeKind;

/// Where a request goes, from its path alone (the method is the handler's
/// business: a wrong one gets 405 on its route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/healthz`: the sidecar itself.
    Healthz,
    /// `/startupz`, `/livez`, `/readyz`: every check of the kind.
    Probe(ProbeKind),
    /// `/livez/NAME` (and the others): one check, its name decoded.
    Check(ProbeKind, String),
    /// `/containers/CONTAINER/PROBE`: the checks of one app container; an
    /// unknown probe name is the handler's 404.
    Container {
        /// The container's name, decoded.
        container: String,
        /// The probe's path segment, decoded.
        probe: String,
    },
    /// `/prestop`.
    Prestop,
    /// `/drain`.
    Drain,
    /// `/exit`.
    Exit,
    /// `/reload`.
    Reload,
    /// `/metrics`.
    Metrics,
    /// `/status`: every check's state, for `healthproxy status`.
    Status,
    /// Anything else: 404.
    Unmatched,
}

/// The `route` label of each route, indexed by [`Route::index`]; also the
/// router's patterns.
pub(crate) const LABELS: [&str; 15] = [
    "/healthz",
    "/startupz",
    "/livez",
    "/readyz",
    "/startupz/{name}",
    "/livez/{name}",
    "/readyz/{name}",
    "/containers/{container}/{probe}",
    "/prestop",
    "/drain",
    "/exit",
    "/metrics",
    "/reload",
    "/status",
    "unmatched",
];

impl Route {
    /// The route of `path` (without its query).
    pub(crate) fn parse(path: &str) -> Route {
        match path {
            // The kubelet's probes first, without splitting the path.
            "/readyz" => return Route::Probe(ProbeKind::Readiness),
            "/livez" => return Route::Probe(ProbeKind::Liveness),
            "/startupz" => return Route::Probe(ProbeKind::Startup),
            "/healthz" => return Route::Healthz,
            "/prestop" => return Route::Prestop,
            "/drain" => return Route::Drain,
            "/exit" => return Route::Exit,
            "/reload" => return Route::Reload,
            "/metrics" => return Route::Metrics,
            "/status" => return Route::Status,
            _ => {}
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Route::Unmatched;
        };
        let mut segments = rest.split('/');
        let first = segments.next().unwrap_or_default();
        match (first, segments.next(), segments.next(), segments.next()) {
            (probe, None, None, None) => match kind(probe) {
                Some(kind) => Route::Probe(kind),
                None => Route::Unmatched,
            },
            (probe, Some(name), None, None) if !name.is_empty() => match kind(probe) {
                Some(kind) => Route::Check(kind, decode(name)),
                None => Route::Unmatched,
            },
            ("containers", Some(container), Some(probe), None)
                if !container.is_empty() && !probe.is_empty() =>
            {
                Route::Container {
                    container: decode(container),
                    probe: decode(probe),
                }
            }
            _ => Route::Unmatched,
        }
    }

    /// The position of this route's label in [`LABELS`].
    pub(crate) fn index(&self) -> usize {
        match self {
            Route::Healthz => 0,
            Route::Probe(kind) => 1 + *kind as usize,
            Route::Check(kind, _) => 4 + *kind as usize,
            Route::Container { .. } => 7,
            Route::Prestop => 8,
            Route::Drain => 9,
            Route::Exit => 10,
            Route::Metrics => 11,
            Route::Reload => 12,
            Route::Status => 13,
            Route::Unmatched => 14,
        }
    }

    /// The `route` label: the pattern, never the requested name.
    pub(crate) fn label(&self) -> &'static str {
        LABELS[self.index()]
    }
}

/// The probe kind whose endpoint is `segment` (`livez`, ...).
pub(crate) fn kind(segment: &str) -> Option<ProbeKind> {
    ProbeKind::ALL.into_iter().find(|k| k.endpoint() == segment)
}

/// A path segment, percent-decoded as the router decodes its parameters;
/// bytes that are not UTF-8 become U+FFFD and so match no name.
fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_one_route_and_its_label_is_the_pattern() {
        let cases = [
            ("/healthz", Route::Healthz, "/healthz"),
            ("/readyz", Route::Probe(ProbeKind::Readiness), "/readyz"),
            ("/startupz", Route::Probe(ProbeKind::Startup), "/startupz"),
            (
                "/livez/my%20check",
                Route::Check(ProbeKind::Liveness, "my check".into()),
                "/livez/{name}",
            ),
            (
                "/containers/web/readyz",
                Route::Container {
                    container: "web".into(),
                    probe: "readyz".into(),
                },
                "/containers/{container}/{probe}",
            ),
            ("/metrics", Route::Metrics, "/metrics"),
            ("/prestop", Route::Prestop, "/prestop"),
            ("/readyz/", Route::Unmatched, "unmatched"),
            ("/readyz/a/b", Route::Unmatched, "unmatched"),
            ("/READYZ", Route::Unmatched, "unmatched"),
            ("/read%79z", Route::Unmatched, "unmatched"),
            ("/containers/web", Route::Unmatched, "unmatched"),
            ("/", Route::Unmatched, "unmatched"),
            ("", Route::Unmatched, "unmatched"),
        ];
        for (path, route, label) in cases {
            assert_eq!(Route::parse(path), route, "{path}");
            assert_eq!(route.label(), label, "{path}");
        }
    }
}
