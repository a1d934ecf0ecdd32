//! What Portier adds to the request it forwards: request id and `X-Forwarded-*`.

use http::HeaderValue;
use pingora_http::RequestHeader;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Keeps a client's `X-Request-Id` when it is a sane token (so a trace started upstream of
/// Portier keeps its id); otherwise makes a new one.
pub(crate) fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            return v.to_string();
        }
    }
    new_id()
}

/// 32 hex digits (the width of a W/3C trace id), unique per process and unpredictable enough
/// for correlation; not a security token.
pub(crate) fn new_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SEED: RandomState = RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = SEED.with(|s| {
        let mut h1 = s.build_hasher();
        h1.write_u64(n);
        let mut h2 = s.build_hasher();
        h2.write_u64(!n);
        (h1.finish(), h2.finish())
    });
    let mut id = String::with_capacity(32);
    crate::text::push_hex_u64(&mut id, a);
    crate::text::push_hex_u64(&mut id, b);
    id
}

/// Request fields that frameworks read as the URL, scheme, host or method instead of the
/// request line. They are not part of the cache key, so a client sending one could make the
/// origin answer for another resource and have that stored for everyone (web cache
/// poisoning). Portier removes them; the ones it sets itself (`X-Forwarded-*`) it rewrites.
pub(crate) const UNKEYED_OVERRIDES: [&str; 9] = [
    "forwarded",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// A field with `_` that reads as a forwarding or override field once `_` becomes `-`:
/// CGI-style servers (PHP, WSGI, Rack) map `X_Forwarded_For` and `X-Forwarded-For` to the
/// same variable, so a client could pass its own through Portier's (nginx drops every
/// underscored field by default; Portier drops these).
fn disguised(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let dashed = name.replace('_', "-").to_ascii_lowercase();
    dashed.starts_with("x-forwarded-") || dashed == "x-real-ip" || dashed == REQUEST_ID || UNKEYED_OVERRIDES.contains(&dashed.as_str())
}

/// Sets `X-Forwarded-For` and `X-Real-IP` (the client address; values sent by the client are
/// not trusted and are replaced, as Caddy does without `trusted_proxies`),
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and the request id.
pub(crate) fn add_forwarded(req: &mut RequestHeader, client_ip: Option<&str>, host: Option<&str>, proto: &str, request_id: &str) {
    // One pass over the fields the client sent, removing only those present: eleven removals
    // by name (each hashing and looking up a name almost never there) cost ~3,000
    // instructions per forwarded request.
    let dropped: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            UNKEYED_OVERRIDES.contains(&k) || k == "x-forwarded-for" || k == "x-real-ip" || disguised(k)
        })
        .cloned()
        .collect();
    for name in dropped {
        let _ = req.remove_header(&name);
    }
    if let Some(ip) = client_ip {
        let _ = req.insert_header("x-forwarded-for", ip);
        let _ = req.insert_header("x-real-ip", ip);
    }
    let _ = req.insert_header("x-forwarded-proto", proto);
    if let Some(h) = host.filter(|h| HeaderValue::from_str(h).is_ok()) {
        let _ = req.insert_header("x-forwarded-host", h);
    }
    let _ = req.insert_header(REQUEST_ID, request_id);
}

/// `Via` with this hop appended (RFC 9110 §7.6.3): the lines already there, then
/// `<version> <name>`, the version being that of the message as Portier received it
/// (`2 portier` on a request from an HTTP/2 client). Origins and caches behind learn that a
/// proxy is in front (and how the client spoke); a chain of Portiers with distinct
/// `server.name`s reads as such.
pub(crate) fn via(existing: http::header::GetAll<'_, HeaderValue>, version: http::Version, name: &crate::config::Pseudonym) -> HeaderValue {
    let mine = name.via(version);
    // No proxy before (the common case): the value made at load, no allocation.
    super::fields::appended(existing, mine.as_bytes()).unwrap_or_else(|| mine.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_client_ids_kept_when_sane() {
        assert_ne!(new_id(), new_id());
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
        // Both halves vary (not a constant half and a counter).
        let other = new_id();
        assert_ne!(id[..16], other[..16]);
        assert_ne!(id[16..], other[16..]);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(REQUEST_ID, "abc-123").unwrap();
        assert_eq!(request_id(&req), "abc-123");
        req.insert_header(REQUEST_ID, "bad id with spaces").unwrap();
        assert_ne!(request_id(&req), "bad id with spaces");
    }
}
