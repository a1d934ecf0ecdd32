//! Cache keys: scheme, host, path and query — no method, so GET, HEAD and PURGE share one
//! entry — and the Vary variance.

use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, VarianceBuilder};
use pingora_http::RequestHeader;

/// `http://host/path?query`. The host cannot contain `/`, so the framing is unambiguous; the
/// readable form doubles as the URL that URL and prefix purges match.
pub fn primary(req: &RequestHeader) -> String {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase();
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("http://{host}{pq}")
}

pub fn cache_key(req: &RequestHeader) -> CacheKey {
    CacheKey::new(primary(req), "")
}

/// Header values normalised so equivalent requests share a variant: `gzip, br` and `br,gzip`
/// are one variant for `Accept-Encoding`.
fn normalise(name: &str, value: &str) -> Vec<u8> {
    if name.eq_ignore_ascii_case("accept-encoding") {
        let mut tokens: Vec<String> = value.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect();
        tokens.sort();
        tokens.join(",").into_bytes()
    } else {
        // Field lines combined and whitespace around list items dropped: `a, b` is `a,b`.
        value.split(',').map(str::trim).collect::<Vec<_>>().join(",").into_bytes()
    }
}

/// The variance for `req` under the stored response's `Vary` (None when it has none).
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names = super::directives::field_tokens(&meta.response_header().headers, http::header::VARY);
    names.sort();
    names.dedup();
    let mut vb = VarianceBuilder::new();
    for name in names {
        let values: Vec<&str> = req.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
        let value = normalise(&name, &values.join(","));
        vb.add_owned_name_value(name, value);
    }
    vb.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::SystemTime;

    fn req(host: &str, target: &str, ae: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        if let Some(a) = ae {
            r.insert_header("accept-encoding", a).unwrap();
        }
        r
    }

    #[test]
    fn key_has_host_path_query_not_method() {
        assert_eq!(primary(&req("Example.COM:8080", "/a/b?x=1&y=2", None)), "http://example.com:8080/a/b?x=1&y=2");
        let mut head = req("h", "/p", None);
        head.set_method(http::Method::HEAD);
        assert_eq!(primary(&head), primary(&req("h", "/p", None)));
    }

    #[test]
    fn vary_normalises_accept_encoding() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("vary", "Accept-Encoding").unwrap();
        let now = SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, h);
        let a = variance(&meta, &req("h", "/", Some("gzip, br")));
        let b = variance(&meta, &req("h", "/", Some("br,gzip")));
        let c = variance(&meta, &req("h", "/", Some("gzip")));
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("vary", "X-Foo").unwrap();
        let meta = CacheMeta::new(now, now, 0, 0, h);
        let with = |v: &[&str]| {
            let mut r = req("h", "/", None);
            for x in v {
                r.append_header("x-foo", *x).unwrap();
            }
            variance(&meta, &r)
        };
        assert_eq!(with(&["a, b"]), with(&["a,b"]), "whitespace");
        assert_eq!(with(&["a", "b"]), with(&["a,b"]), "field lines combined");
    }
}
