//! The request method as a metric label and span name: a client may send any token as a
//! method, so only a known set is recorded as itself and the rest as `_OTHER` (the
//! OpenTelemetry convention), keeping label sets bounded whatever clients send.

use http::Method;

/// RFC 9110's methods, PATCH (RFC 5789) and PURGE.
const REGISTERED: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PURGE"];

pub(crate) const OTHER: &str = "_OTHER";

/// The registered methods plus those the config names (invalidation rules).
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownMethods {
    /// Leaked once at start-up, so a label is a `&'static str` a request can keep.
    configured: Vec<&'static str>,
}

impl KnownMethods {
    pub(crate) fn new(configured: impl IntoIterator<Item = Method>) -> KnownMethods {
        let mut names: Vec<String> =
            configured.into_iter().map(|m| m.as_str().to_string()).filter(|m| !REGISTERED.contains(&m.as_str())).collect();
        names.sort();
        names.dedup();
        KnownMethods { configured: names.into_iter().map(|m| &*Box::leak(m.into_boxed_str())).collect() }
    }

    /// `m` itself when known, `_OTHER` otherwise.
    pub(crate) fn label(&self, m: &Method) -> &'static str {
        let s = m.as_str();
        REGISTERED.iter().chain(&self.configured).find(|k| **k == s).copied().unwrap_or(OTHER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_other() {
        let k = KnownMethods::new([Method::from_bytes(b"REPORT").unwrap()]);
        assert_eq!(k.label(&Method::GET), "GET");
        assert_eq!(k.label(&Method::from_bytes(b"PURGE").unwrap()), "PURGE");
        assert_eq!(k.label(&Method::from_bytes(b"REPORT").unwrap()), "REPORT");
        assert_eq!(k.label(&Method::from_bytes(b"M00042XYZ").unwrap()), OTHER);
        assert_eq!(k.label(&Method::from_bytes(b"get").unwrap()), OTHER, "methods are case-sensitive");
    }
}
