//! Invalidation after writes: RFC 9111 §4.4 (the request URI and same-host `Location` /
//! `Content-Location` after a 2xx/3xx to an unsafe method) and the configured rules, such
//! as `POST /api/sync` invalidating `/api/stats/` and `/api/games` for the same `username`.

use super::purge::Selector;
use super::store::Store;
use super::url::query_param;
use super::url::CacheUrl;
use crate::config::InvalidationRule;
use pingora_http::{RequestHeader, ResponseHeader};

/// Methods after which the RFC requires invalidation (anything not known to be safe).
pub(crate) fn is_unsafe(m: &http::Method) -> bool {
    !matches!(*m, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE)
}

/// A configured rule, ready to match.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    method: http::Method,
    path: crate::config::PathPattern,
    prefixes: Vec<String>,
    pub match_param: Option<String>,
}

impl Rule {
    pub(crate) fn new(r: &InvalidationRule) -> Rule {
        Rule { method: r.method.0.clone(), path: r.path.clone(), prefixes: r.prefixes.clone(), match_param: r.match_param.clone() }
    }

    pub(crate) fn matches(&self, req: &RequestHeader) -> bool {
        req.method == self.method && self.path.matches(req.uri.path())
    }
}

/// Indexes of the rules matching this request (usually none).
pub(crate) fn matching(rules: &[Rule], req: &RequestHeader) -> Vec<usize> {
    rules.iter().enumerate().filter(|(_, r)| r.matches(req)).map(|(i, _)| i).collect()
}

/// A top-level string (or number) field of a small JSON body.
pub(crate) fn json_field(body: &[u8], name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A `Location` / `Content-Location` value as a URL on the same origin as `base`, never
/// `base` itself. An absolute URL counts only on the same origin (RFC 9111 §4.4 forbids
/// invalidating another origin on the word of this one).
fn same_host_target(base: &CacheUrl, value: &str) -> Option<String> {
    if value.starts_with('/') {
        return crate::edge::target::origin_form(value.as_bytes()).ok().map(|pq| base.with_path(pq.as_str()));
    }
    let full = CacheUrl::parse(value).ok()?;
    (full.origin() == base.origin() && full != *base).then(|| full.into_string())
}

/// What an invalidation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalidated {
    pub(crate) purged: usize,
    /// Rules that matched but could not read their parameter, so purged nothing.
    pub(crate) skipped: usize,
}

/// Runs after the response to `req` is known.
pub(crate) fn after_response(
    storage: &dyn Store,
    rules: &[&Rule],
    url: &CacheUrl,
    req: &RequestHeader,
    resp: &ResponseHeader,
    body: &[u8],
) -> Invalidated {
    let status = resp.status.as_u16();
    if !(200..400).contains(&status) {
        return Invalidated::default();
    }
    let mut purged = 0;
    let mut skipped = 0;
    if is_unsafe(&req.method) {
        purged += storage.purge_matching(&Selector::Url(url.as_str().to_string()), false);
        for h in ["location", "content-location"] {
            if let Some(target) = resp.headers.get(h).and_then(|v| v.to_str().ok()).and_then(|v| same_host_target(url, v)) {
                purged += storage.purge_matching(&Selector::Url(target), false);
            }
        }
    }
    for rule in rules {
        let value =
            rule.match_param.as_deref().and_then(|p| query_param(req.uri.query(), p).map(str::to_string).or_else(|| json_field(body, p)));
        if rule.match_param.is_some() && value.is_none() {
            // The parameter cannot be read (absent, a body that is not JSON, or past the part
            // kept): purge nothing. Purging the whole prefix would let any client empty
            // every user's entries with one request.
            skipped += 1;
            continue;
        }
        for prefix in &rule.prefixes {
            let sel = match (&rule.match_param, &value) {
                (Some(p), Some(v)) => Selector::PrefixWithParam { prefix: url.with_path(prefix), param: p.clone(), value: v.clone() },
                _ => Selector::Prefix(url.with_path(prefix)),
            };
            purged += storage.purge_matching(&sel, false);
        }
    }
    Invalidated { purged, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_targets_stay_on_the_same_host() {
        let base = CacheUrl::parse("http://h:8080/a").unwrap();
        assert_eq!(same_host_target(&base, "/b?x"), Some("http://h:8080/b?x".into()));
        assert_eq!(same_host_target(&base, "http://H:8080/c"), Some("http://h:8080/c".into()));
        assert_eq!(same_host_target(&base, "http://h:8080/a"), None, "the request's own URL is purged already");
        assert_eq!(same_host_target(&base, "http://evil/c"), None);
        assert_eq!(same_host_target(&base, "http://h:8080@evil/c"), None);
        assert_eq!(json_field(br#"{"username":"bob","n":1}"#, "username"), Some("bob".into()));
        assert_eq!(json_field(b"not json", "username"), None);
        assert_eq!(query_param(Some("a=1&username=bob"), "username"), Some("bob"));
    }
}
