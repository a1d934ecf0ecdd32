//! Entry points for `cargo fuzz` (`fuzz/`) and the property tests below: every parser Portier
//! writes or configures, fed arbitrary bytes. Each one must not panic, and checks the
//! promises its parser makes (an accepted target is rooted origin-form, a cache URL parses
//! back to itself, ...). Not an API: hidden, and free to change.

use crate::cache::{conditional, directives::Directives, invalidate, key, policy, purge::PurgeRequest, url::CacheUrl};
use crate::config::{CacheConfig, Route};
use crate::edge::target::{self, Scheme};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// A field's name and value, as raw bytes.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Splits fuzz input into a first line and `name: value` fields, as a head would carry them.
fn lines(data: &[u8]) -> (&[u8], Vec<Field<'_>>) {
    let mut parts = data.split(|b| *b == b'\n');
    let first = parts.next().unwrap_or_default();
    let fields = parts
        .filter_map(|l| {
            let i = l.iter().position(|b| *b == b':')?;
            Some((&l[..i], l[i + 1..].trim_ascii()))
        })
        .collect();
    (first, fields)
}

fn request(data: &[u8]) -> Option<RequestHeader> {
    let (target, fields) = lines(data);
    let mut req = RequestHeader::build("GET", target, None).ok()?;
    for (k, v) in fields {
        let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k), http::HeaderValue::from_bytes(v)) else { continue };
        req.append_header(name, value).ok()?;
    }
    Some(req)
}

fn response(status: u16, data: &[u8]) -> Option<ResponseHeader> {
    let (_, fields) = lines(data);
    let mut resp = ResponseHeader::build(status, None).ok()?;
    for (k, v) in fields {
        let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k), http::HeaderValue::from_bytes(v)) else { continue };
        resp.append_header(name, value).ok()?;
    }
    Some(resp)
}

/// The request target and `Host` check, request-side cache rules, preconditions and limits.
pub fn request_head(data: &[u8]) {
    let Some(mut req) = request(data) else { return };
    let raw_host = req.headers.get(http::header::HOST).cloned();
    if let Ok(t) = target::accept(&mut req, Scheme::Http) {
        let path = t.path();
        assert!(path.starts_with('/') || t.asterisk, "accepted target not rooted: {path:?}");
        assert!(!path.split('/').any(|s| s == ".." || s == "."), "dot segment accepted: {path:?}");
        assert!(!path.contains('\\') && !path.contains('#'), "{path:?}");
        assert!(raw_host.is_some() || t.host().is_empty(), "a host without a Host field");
        let url = CacheUrl::of(&t);
        assert_eq!(CacheUrl::parse(url.as_str()).ok().map(|u| u.as_str().to_string()), Some(url.as_str().to_string()));
        let _ = key::cache_key(&url);
    }
    let rules = policy::request_rules(&req);
    let stored = ResponseHeader::build(200, None).ok();
    if let Some(stored) = stored {
        let _ = conditional::has_preconditions(&req) && conditional::precondition_failed(&req, &stored);
        let _ = rules
            .forces_revalidation(&pingora_cache::CacheMeta::new(SystemTime::now(), SystemTime::now(), 0, 0, stored), SystemTime::now());
    }
    let _ = crate::edge::limits::check_head(&req, &crate::config::Limits::default());
}

/// A response's cache directives, age and storage decision, and the `Vary` variance of a
/// request against it. The first byte picks the status.
pub fn response_head(data: &[u8]) {
    let status = 100 + u16::from(data.first().copied().unwrap_or(0)) * 2;
    let data = data.get(1..).unwrap_or_default();
    let Some(resp) = response(status.min(599), data) else { return };
    let Some(req) = request(data) else { return };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = policy::response_directives(&resp);
    let age = policy::initial_age(&resp, now);
    assert!(age <= Duration::from_secs(u64::from(u32::MAX)) * 2, "{age:?}");
    let route = policy::RoutePolicy::from_route(&Route::new(None, "/*".parse().expect("a valid pattern"), "p"));
    if let Ok(plan) = policy::decide(&req, &resp, &route, &CacheConfig::default(), false, now) {
        let meta = policy::build_meta(&plan, &resp, now);
        let _ = key::variance(&meta, &req, None, None);
    }
}

/// `Cache-Control`-style directive lists, one field line per input line.
pub fn directives(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Directives::parse(text.lines());
}

/// Absolute URLs as purges and invalidations name them.
pub fn cache_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(u) = CacheUrl::parse(&text) {
        let again = CacheUrl::parse(u.as_str()).expect("a parsed URL parses again");
        assert_eq!(again.as_str(), u.as_str());
        let _ = crate::cache::url::path_of(u.as_str());
    }
    let _ = crate::cache::url::query_param(Some(&text), "username");
}

/// Request bodies read by invalidation rules and the admin purge API.
pub fn invalidation_body(data: &[u8]) {
    let _ = invalidate::json_field(data, "username");
    let _ = PurgeRequest::parse(data);
}

/// Configuration files: every problem reported, no panic.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::config::load_str(&text, "fuzz.toml", |_| None);
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that look like heads: tokens, separators and the characters parsers trip on.
    fn headish() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"/".to_vec()),
                Just(b"..".to_vec()),
                Just(b"%2e".to_vec()),
                Just(b"http://".to_vec()),
                Just(b"\nHost: ".to_vec()),
                Just(b"\nCache-Control: ".to_vec()),
                Just(b"\nVary: ".to_vec()),
                Just(b"\nAge: ".to_vec()),
                Just(b"\nIf-None-Match: ".to_vec()),
                Just(b"max-age=".to_vec()),
                Just(b"\"".to_vec()),
                Just(b",".to_vec()),
                Just(b"=".to_vec()),
                "[ -~]{0,8}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..4),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn request_heads(data in headish()) { request_head(&data) }

        #[test]
        fn response_heads(data in headish()) { response_head(&data) }

        #[test]
        fn directive_lists(data in headish()) { directives(&data) }

        #[test]
        fn cache_urls(data in headish()) { cache_url(&data) }

        #[test]
        fn invalidation_bodies(data in proptest::collection::vec(any::<u8>(), 0..256)) { invalidation_body(&data) }

        #[test]
        fn json_bodies(name in "[a-z]{1,8}", value in "[ -~]{0,16}") {
            let body = serde_json::json!({ name.clone(): value.clone() }).to_string();
            prop_assert_eq!(invalidate::json_field(body.as_bytes(), &name), Some(value));
        }

        #[test]
        fn config_files(data in "[\\[\\]a-z_.=\" 0-9\n]{0,200}") { config(data.as_bytes()) }
    }
}
