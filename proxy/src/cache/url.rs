//! The URL a cache entry is stored under: `scheme://authority/path?query`, built from a checked
//! request target or parsed from an operator's or origin's URL with the same rules. The parts
//! come from [`crate::edge::target`], where a host cannot hold `/` and a path must start with it, so
//! the string cannot be read two ways; it is also what URL and prefix purges match.

use crate::edge::target::{self, Authority, Refused, Scheme, Target};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheUrl {
    text: String,
    /// Where the path starts in `text` (the length of `scheme://authority`).
    path_at: usize,
}

impl CacheUrl {
    fn build(scheme: Scheme, authority: Option<&Authority>, path_and_query: &str) -> CacheUrl {
        let mut text = String::with_capacity(16 + path_and_query.len());
        text.push_str(scheme.as_str());
        text.push_str("://");
        if let Some(a) = authority {
            a.push_to(&mut text);
        }
        let path_at = text.len();
        text.push_str(path_and_query);
        CacheUrl { text, path_at }
    }

    pub(crate) fn of(t: &Target) -> CacheUrl {
        Self::build(t.scheme, t.authority.as_ref(), t.path_and_query.as_str())
    }

    /// An absolute `http(s)://authority/path?query` URL, checked as a request target would be.
    pub(crate) fn parse(u: &str) -> Result<CacheUrl, Refused> {
        let (scheme, rest) = Scheme::strip(u.as_bytes()).ok_or(Refused("expected an http(s):// URL"))?;
        let (auth, pq) = target::split_authority(rest);
        let auth = Authority::parse(auth, scheme).map_err(Refused)?;
        let pq = target::rooted_origin_form(pq)?;
        Ok(Self::build(scheme, Some(&auth), pq.as_str()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// `scheme://authority`, the part every URL of the same origin shares.
    pub(crate) fn origin(&self) -> &str {
        &self.text[..self.path_at]
    }

    /// `path` (a purge or rule prefix starting with `/`) on this URL's origin.
    pub(crate) fn with_path(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub(crate) fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `/path?query` part of a stored URL string.
pub(crate) fn path_of(url: &str) -> &str {
    url.find("://").and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..])).unwrap_or(url)
}

/// The value of `name` in a query string (`a=1&username=bob`), as written.
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_urls_match_the_keys_requests_get() {
        let u = CacheUrl::parse("HTTP://Example.com:80/a?b").unwrap();
        assert_eq!(u.as_str(), "http://example.com/a?b");
        assert_eq!(u.origin(), "http://example.com");
        assert_eq!(CacheUrl::parse("https://h:443").unwrap().as_str(), "https://h/");
        assert_eq!(CacheUrl::parse("http://h:8080?q").unwrap().as_str(), "http://h:8080/?q");
        for bad in ["ftp://h/x", "/x", "http://v/a/../b", "http://h h/", "http://u@h/"] {
            assert!(CacheUrl::parse(bad).is_err(), "{bad}");
        }
        let mut r = pingora_http::RequestHeader::build("GET", b"/a/b?x", None).unwrap();
        r.insert_header("host", "V:80").unwrap();
        let t = target::accept(&mut r, Scheme::Http).unwrap();
        assert_eq!(CacheUrl::of(&t), CacheUrl::parse("http://v/a/b?x").unwrap());
    }
}
