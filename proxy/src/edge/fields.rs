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

/// `member` after the lines of a list field (RFC 9110 §5.3: lines joined with `, ` are the
/// same list), as one value; `None` when the field has no non-empty line, so the caller
/// writes its own value without building one.
pub(crate) fn appended(existing: http::header::GetAll<'_, http::HeaderValue>, member: &[u8]) -> Option<http::HeaderValue> {
    let mut out: Vec<u8> = Vec::new();
    for v in existing {
        let v = v.as_bytes().trim_ascii();
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    if out.is_empty() {
        return None;
    }
    out.extend_from_slice(member);
    // The lines were valid field values and so is `member`: unreachable, but an unreadable
    // list is not worth failing a response for (the caller then writes its member alone).
    http::HeaderValue::from_bytes(&out).ok()
}
