//! Revalidation: an upstream 304 refreshes the stored response (RFC 9111 §4.3.4).

use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use std::time::SystemTime;

/// Fields in the 304 that must not replace the stored ones (framing, hop-by-hop, encoding;
/// RFC 9111 §3.2), and `Set-Cookie`: a cookie on a 304 is for the client whose request
/// revalidated ([`cookies_for_client`]), never for the stored response everyone gets.
const NOT_MERGED: [&str; 11] = [
    "set-cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "content-encoding",
    "content-range",
];

/// The 304's `Set-Cookie` fields, passed on to the client that made the request.
pub(crate) fn cookies_for_client(not_modified: &ResponseHeader) -> Vec<http::HeaderValue> {
    not_modified.headers.get_all(http::header::SET_COOKIE).iter().cloned().collect()
}

/// Every field of the 304 replaces the stored one (Pingora copies only five). A 304 without
/// `Date` is dated now, so the stored `Date` does not make the refreshed entry look as old as
/// the first fill. The stored validators stay: a 304 updates the response it validated, and
/// Pingora's own merge already copied the 304's ETag into `merged_by_pingora`.
pub(crate) fn merge_304(merged_by_pingora: &ResponseHeader, not_modified: &ResponseHeader, stored: Option<&CacheMeta>) -> ResponseHeader {
    let mut merged = merged_by_pingora.clone();
    if !not_modified.headers.contains_key(http::header::DATE) {
        let _ = merged.insert_header(http::header::DATE, httpdate::fmt_http_date(SystemTime::now()));
    }
    for name in not_modified.headers.keys() {
        if NOT_MERGED.contains(&name.as_str()) {
            continue;
        }
        merged.remove_header(name);
        for v in not_modified.headers.get_all(name) {
            let _ = merged.append_header(name.clone(), v.clone());
        }
    }
    if let Some(stored) = stored {
        for name in ["etag", "content-md5"] {
            merged.remove_header(name);
            for v in stored.response_header().headers.get_all(name) {
                let _ = merged.append_header(name, v.clone());
            }
        }
        // A body Portier encoded varies on what Portier added (Accept-Encoding, and
        // Available-Dictionary for a dcz delta), which the origin's 304 does not know: the
        // stored `Vary` stays, with any name the 304 adds after it. Without this a delta would
        // go out with the origin's `Vary` and a cache downstream could hand it to a client
        // without the dictionary (RFC 9842 §6.2).
        let sh = &stored.response_header().headers;
        if sh.contains_key(crate::edge::compression::MARKER_NAME) {
            let kept: Vec<http::HeaderValue> = sh.get_all(http::header::VARY).iter().cloned().collect();
            let stored_names = crate::cache::directives::field_tokens(sh, http::header::VARY);
            let added: Vec<String> = crate::cache::directives::field_tokens(&not_modified.headers, http::header::VARY)
                .into_iter()
                .filter(|n| !stored_names.contains(n))
                .collect();
            merged.remove_header(&http::header::VARY);
            for v in kept {
                let _ = merged.append_header(http::header::VARY, v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&added.join(", ")) {
                if !added.is_empty() {
                    let _ = merged.append_header(http::header::VARY, v);
                }
            }
        }
    }
    merged
}
