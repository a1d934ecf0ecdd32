//! Purging on demand: the `PURGE` method on the public listener (only from allowed addresses
//! or with the token) and `POST /cache/purge` on the admin listener.

use super::url::path_of;
use crate::config::PurgeConfig;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::net::IpAddr;

/// What a purge removes.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Selector {
    /// Exact URL: `scheme://host/path?query`; or a path+query (`/a?b`) for any host.
    Url(String),
    /// URL prefix: `scheme://host/prefix`; or a path prefix (`/api/`) for any host.
    Prefix(String),
    /// URL prefix whose query has `param=value` (invalidation rules keyed on a user).
    PrefixWithParam {
        prefix: String,
        param: String,
        value: String,
    },
    Tag(String),
}

impl Selector {
    pub(crate) fn matches(&self, url: &str) -> bool {
        match self {
            Selector::Url(u) if u.starts_with('/') => path_of(url) == u,
            Selector::Url(u) => url == u,
            Selector::Prefix(p) if p.starts_with('/') => path_of(url).starts_with(p.as_str()),
            Selector::Prefix(p) => url.starts_with(p.as_str()),
            Selector::PrefixWithParam { prefix, param, value } => {
                let query = url.split_once('?').map(|(_, q)| q);
                Selector::Prefix(prefix.clone()).matches(url) && super::url::query_param(query, param) == Some(value.as_str())
            }
            Selector::Tag(_) => false,
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn authorized(cfg: &PurgeConfig, client: Option<IpAddr>, req: &RequestHeader) -> bool {
    if let Some(token) = cfg.token.as_deref() {
        let sent = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| req.headers.get("x-purge-token").and_then(|v| v.to_str().ok()));
        if sent.is_some_and(|s| same(s.trim().as_bytes(), token.as_bytes())) {
            return true;
        }
    }
    client.is_some_and(|ip| cfg.allow_from.contains(&crate::config::unmapped(ip)))
}

/// `POST /cache/purge` body: exactly one of `url`, `prefix`, `tag`; `soft` keeps entries as
/// stale (served while revalidating) instead of deleting them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub tag: Option<String>,
    #[serde(default)]
    pub soft: bool,
}

impl PurgeRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<(Selector, bool), String> {
        let r: PurgeRequest = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let sel = match (r.url, r.prefix, r.tag) {
            (Some(u), None, None) => Selector::Url(normalise_url(&u)?),
            (None, Some(p), None) => Selector::Prefix(normalise_url(&p)?),
            (None, None, Some(t)) if !t.trim().is_empty() => Selector::Tag(t.trim().to_string()),
            _ => return Err("give exactly one of \"url\", \"prefix\" or \"tag\" (non-empty)".into()),
        };
        Ok((sel, r.soft))
    }
}

/// Paths stay paths (any host); absolute URLs are checked and normalised as request targets
/// are (scheme and host lower-cased, default port dropped), so they name the key a request gets.
fn normalise_url(u: &str) -> Result<String, String> {
    if u.starts_with('/') {
        return crate::edge::target::origin_form(u.as_bytes()).map(|pq| pq.as_str().to_string()).map_err(|e| format!("{u:?}: {e}"));
    }
    super::url::CacheUrl::parse(u).map(super::url::CacheUrl::into_string).map_err(|e| format!("{u:?}: {e}"))
}

/// Why entries were purged: the `reason` label of `cache_purged_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PurgeReason {
    Api,
    ApiSoft,
    PurgeMethod,
    PurgeMethodSoft,
    UnsafeMethod,
    Rule,
}

impl PurgeReason {
    pub(crate) const ALL: [PurgeReason; 6] = [
        PurgeReason::Api,
        PurgeReason::ApiSoft,
        PurgeReason::PurgeMethod,
        PurgeReason::PurgeMethodSoft,
        PurgeReason::UnsafeMethod,
        PurgeReason::Rule,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PurgeReason::Api => "api",
            PurgeReason::ApiSoft => "api_soft",
            PurgeReason::PurgeMethod => "purge_method",
            PurgeReason::PurgeMethodSoft => "purge_method_soft",
            PurgeReason::UnsafeMethod => "unsafe_method",
            PurgeReason::Rule => "rule",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_requests_parse_or_explain() {
        assert!(matches!(PurgeRequest::parse(br#"{"tag":"user-1"}"#), Ok((Selector::Tag(t), false)) if t == "user-1"));
        assert!(
            matches!(PurgeRequest::parse(br#"{"url":"HTTP://H:1/a?b","soft":true}"#), Ok((Selector::Url(u), true)) if u == "http://h:1/a?b")
        );
        assert!(matches!(PurgeRequest::parse(br#"{"prefix":"http://h:80"}"#), Ok((Selector::Prefix(u), false)) if u == "http://h/"));
        assert!(PurgeRequest::parse(br#"{"url":"http://v/a/../b"}"#).is_err());
        assert!(PurgeRequest::parse(br#"{"url":"ftp://h/a"}"#).is_err());
        assert!(PurgeRequest::parse(br#"{"url":"/a","tag":"x"}"#).is_err());
        assert!(PurgeRequest::parse(br#"{"urll":"/a"}"#).is_err());
        assert!(PurgeRequest::parse(b"nope").is_err());
    }

    #[test]
    fn purge_auth_by_address_or_token() {
        let cfg = PurgeConfig { allow_from: vec!["10.0.0.1".parse().unwrap()], token: Some("s3cret".into()) };
        let mut req = RequestHeader::build("PURGE", b"/", None).unwrap();
        assert!(!authorized(&cfg, Some("10.0.0.2".parse().unwrap()), &req));
        assert!(authorized(&cfg, Some("10.0.0.1".parse().unwrap()), &req));
        assert!(authorized(&cfg, Some("::ffff:10.0.0.1".parse().unwrap()), &req));
        req.insert_header("authorization", "Bearer s3cret").unwrap();
        assert!(authorized(&cfg, Some("10.0.0.2".parse().unwrap()), &req));
        req.insert_header("authorization", "Bearer s3creT").unwrap();
        assert!(!authorized(&cfg, None, &req));
    }
}
