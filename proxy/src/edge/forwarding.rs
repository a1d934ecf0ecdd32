//! What Portier adds to the request it forwards: request id and `X-Forwarded-*`.

use http::HeaderValue;
use pingora_http::RequestHeader;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use super::fields::REQUEST_ID;

/// The request id, a valid field value by construction: made once per request and written
/// to the forwarded request and the response without being checked or copied again.
#[derive(Clone, Debug)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    /// Marked sensitive so HPACK (HTTP/2) and QPACK write it as a literal, never indexed: a
    /// value seen once would only push reusable fields out of the connection's table, and
    /// every later field's lookup walked the stale ids left in it (~5,000 instructions per
    /// HTTP/2 hit). HTTP/1 ignores the mark.
    fn unique(mut v: HeaderValue) -> RequestId {
        v.set_sensitive(true);
        RequestId(v)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Visible ASCII by construction (a token or hex digits).
        self.0.to_str().unwrap_or_default()
    }

    pub(crate) fn value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Keeps a client's `X-Request-Id` when it is a sane token (so a trace started upstream of
/// Portier keeps its id); otherwise makes a new one.
pub(crate) fn request_id(req: &RequestHeader) -> RequestId {
    if let Some(v) = req.headers.get(&crate::edge::fields::X_REQUEST_ID.0) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b)) {
            return RequestId::unique(v.clone());
        }
    }
    RequestId::unique(HeaderValue::try_from(new_id()).unwrap_or(HeaderValue::from_static("-")))
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
pub(crate) fn add_forwarded(req: &mut RequestHeader, client_ip: Option<std::net::IpAddr>, proto: &'static str, request_id: HeaderValue) {
    use super::fields::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID};
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
    let host = req.headers.get(http::header::HOST).cloned();
    if let Some(ip) = client_ip.map(ip_value) {
        let _ = req.insert_header(X_FORWARDED_FOR, ip.clone());
        let _ = req.insert_header(X_REAL_IP, ip);
    }
    let _ = req.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(h) = host {
        let _ = req.insert_header(X_FORWARDED_HOST, h);
    }
    let _ = req.insert_header(X_REQUEST_ID, request_id);
}

/// An address as a field value; an IPv4 one without `core::fmt` (~3,000 instructions for
/// `to_string`, on every forwarded request).
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
    };
    let mut out = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        let mut buf = itoa::Buffer::new();
        let digits = buf.format(octet).as_bytes();
        out[n..n + digits.len()].copy_from_slice(digits);
        n += digits.len();
    }
    HeaderValue::from_bytes(&out[..n]).unwrap_or(HeaderValue::from_static("unknown"))
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
        assert_eq!(&*request_id(&req), "abc-123");
        req.insert_header(REQUEST_ID, "bad id with spaces").unwrap();
        assert_ne!(&*request_id(&req), "bad id with spaces");
    }
}
