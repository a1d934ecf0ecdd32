//! Reading HTTP list fields, for the cache and compression alike, and the names of the
//! fields Portier adds to every request and response.

/// A field name parsed when the program is built, with the bytes written for it on HTTP/1.
/// Pingora keeps every name twice (parsed, and as sent); given a `&str` it parses the name
/// again on each insert (~700 instructions for a non-standard one), given this pair it
/// parses nothing (vendor/pingora-http, `into_names`).
pub(crate) type Name = (http::HeaderName, &'static str);

const fn name(lowercase: &'static str) -> Name {
    (http::HeaderName::from_static(lowercase), lowercase)
}

pub(crate) const X_FORWARDED_FOR: Name = name("x-forwarded-for");
pub(crate) const X_REAL_IP: Name = name("x-real-ip");
pub(crate) const X_FORWARDED_PROTO: Name = name("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: Name = name("x-forwarded-host");
/// The request id's field (forwarding.rs makes its value).
pub(crate) const REQUEST_ID: &str = "x-request-id";
pub(crate) const X_REQUEST_ID: Name = name(REQUEST_ID);
pub(crate) const VIA: Name = name("via");
pub(crate) const X_CACHE: Name = name("x-cache");
pub(crate) const CACHE_STATUS: Name = name("cache-status");
pub(crate) const SERVER_TIMING: Name = name("server-timing");

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

/// Whether a list field names `token` (ASCII case-insensitively), without building the list:
/// asked of `Cache-Control` and `Vary` on every response, where [`field_tokens`]' strings
/// cost an allocation per token.
pub(crate) fn has_token(h: &http::HeaderMap, name: impl http::header::AsHeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())))
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
