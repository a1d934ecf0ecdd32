//! Reading HTTP list fields, for the cache and compression alike.

/// The comma-separated tokens of every line of a list field (`Vary`, `Connection`, ...),
/// trimmed and lower-cased.
pub(crate) fn field_tokens(h: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Vec<String> {
    h.get_all(name)
        .iter()
        // Lossy rather than skipped: a `Vary` line with one odd byte must still name the
        // fields it names, or the response would be stored without its variance.
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect()
}
