//! Reading the Prometheus text format the sidecar's `/metrics` writes.

/// The value of the series `name{labels}` in a metrics text (labels as the
/// text format writes them, sorted by name), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The lines of a metrics text that belong to `family`.
pub fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(family)).collect()
}
