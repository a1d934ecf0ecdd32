//! Preconditions a cache answers itself: `If-Match` / `If-Unmodified-Since` failures are 412
//! (RFC 9110 §13.1.1, §13.1.4). `If-None-Match` / `If-Modified-Since` → 304 is Pingora's
//! `not_modified_filter`, which already does weak comparison, lists and `*`.

use pingora_http::{RequestHeader, ResponseHeader};

pub(crate) fn has_preconditions(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::IF_MATCH) || req.headers.contains_key(http::header::IF_UNMODIFIED_SINCE)
}

/// Strong comparison: both tags strong and byte-equal.
fn strong_match(list: &str, etag: &str) -> bool {
    if etag.starts_with("W/") {
        return false;
    }
    list.split(',').map(str::trim).any(|t| t == "*" || (!t.starts_with("W/") && t == etag))
}

/// True when the request's preconditions fail against the stored response.
pub(crate) fn precondition_failed(req: &RequestHeader, stored: &ResponseHeader) -> bool {
    let h = &req.headers;
    if let Some(im) = h.get(http::header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let etag = stored.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("");
        if im.trim() == "*" {
            return false;
        }
        return !strong_match(im, etag);
    }
    let ius = h.get(http::header::IF_UNMODIFIED_SINCE).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    let lm = stored
        .headers
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    matches!((ius, lm), (Some(ius), Some(lm)) if lm > ius)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(k: &str, v: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header(k.to_string(), v).unwrap();
        r
    }

    #[test]
    fn if_match_is_strong_and_ius_compares_dates() {
        let mut s = ResponseHeader::build(200, None).unwrap();
        s.insert_header("etag", "\"v1\"").unwrap();
        s.insert_header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert!(!precondition_failed(&req("if-match", "\"v1\""), &s));
        assert!(!precondition_failed(&req("if-match", "\"x\", \"v1\""), &s));
        assert!(!precondition_failed(&req("if-match", "*"), &s));
        assert!(precondition_failed(&req("if-match", "W/\"v1\""), &s), "weak tags never match strongly");
        assert!(precondition_failed(&req("if-match", "\"v2\""), &s));
        assert!(!precondition_failed(&req("if-unmodified-since", "Wed, 21 Oct 2015 07:28:00 GMT"), &s));
        assert!(precondition_failed(&req("if-unmodified-since", "Tue, 20 Oct 2015 07:28:00 GMT"), &s));
        assert!(!precondition_failed(&req("if-unmodified-since", "garbage"), &s), "invalid date is ignored");
    }
}
