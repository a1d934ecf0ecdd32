//! Headers Portier adds to or removes from every response it sends, whatever the source.

use pingora_error::Result;
use pingora_http::ResponseHeader;

/// Removed from every response: Portier's own control fields (`Portier-Cache-Control`,
/// `Surrogate-Control`, see [`crate::cache::policy::OWN_FIELDS`]) and the fields that stay
/// inside: tags purges select by (they would tell clients how responses are grouped, e.g.
/// per user) and the compression marker. As parsed names: removing by `&str` parses the
/// name again on every response.
pub(crate) static NEVER_SENT: [http::HeaderName; 5] = [
    http::HeaderName::from_static("portier-cache-control"),
    http::HeaderName::from_static("surrogate-control"),
    http::HeaderName::from_static("cache-tag"),
    http::HeaderName::from_static("surrogate-key"),
    crate::edge::compression::MARKER_NAME,
];

/// The headers that prove the cache, readable by a cross-origin page's script.
const EXPOSED: &str = "X-Cache, Age, ETag, Cache-Status, Server-Timing, X-Request-Id";

/// On a CORS response (the origin set `Access-Control-Allow-Origin`), lets the page's script
/// read the cache headers and DevTools show `Server-Timing` for the cross-origin call.
pub(crate) fn expose_cache_headers(resp: &mut ResponseHeader) -> Result<()> {
    let Some(allow) = resp.headers.get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN).cloned() else { return Ok(()) };
    let merged = match resp.headers.get(http::header::ACCESS_CONTROL_EXPOSE_HEADERS).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {EXPOSED}"),
        _ => EXPOSED.to_string(),
    };
    resp.insert_header(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, merged)?;
    if !resp.headers.contains_key("timing-allow-origin") {
        resp.insert_header("timing-allow-origin", allow)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_sent_is_own_fields_and_internal() {
        let names: Vec<&str> = super::NEVER_SENT.iter().map(|n| n.as_str()).collect();
        assert_eq!(names[..2], crate::cache::policy::OWN_FIELDS);
        assert_eq!(names[2..], ["cache-tag", "surrogate-key", crate::edge::compression::MARKER]);
    }
}
