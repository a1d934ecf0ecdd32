//! Compression dictionaries (RFC 9842). A route with `dictionary = "/assets/*.js"` sends its
//! matching text responses with `Use-As-Dictionary: match="/assets/*.js"` and keeps their
//! bodies, by SHA-256, in a bounded store. A browser that holds one asks for the next
//! version of the bundle with `Available-Dictionary: :<hash>:` and `dcz` in
//! `Accept-Encoding`; when Portier holds that dictionary for that route, the response is
//! compressed against it (`Content-Encoding: dcz`, a delta a few KB long after a deploy) and
//! stored as its own variant, keyed by the dictionary's hash. Anything else (an unknown or
//! malformed hash, no `dcz`, another route's dictionary) falls back to the ordinary codings.
//!
//! Only `dcz` is produced: the brotli encoder Portier uses cannot take a dictionary, and
//! every browser that sends `Available-Dictionary` accepts both.

use crate::config::{CompressionConfig, DictionaryMatch};
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use pingora_core::protocols::http::compression::DictionaryData;
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;

pub(crate) type Hash = [u8; 32];

const AVAILABLE_DICTIONARY: http::HeaderName = http::HeaderName::from_static("available-dictionary");
pub(crate) const USE_AS_DICTIONARY: super::fields::Name = (http::HeaderName::from_static("use-as-dictionary"), "use-as-dictionary");

/// A kept dictionary: the decoded body of a response Portier sent with `Use-As-Dictionary`.
pub(crate) struct Dictionary {
    pub(crate) data: DictionaryData,
    /// The route (its pattern) that served it: a dictionary is only used on its own route, so
    /// one route's content never becomes the compression context of another's.
    route: Box<str>,
}

/// What a kept dictionary holds beyond its bytes (LRU node, `Arc`, route name), counted
/// against the budget so many small ones cannot outgrow it.
const ENTRY_OVERHEAD: u64 = 256;

impl Dictionary {
    fn cost(&self) -> u64 {
        self.data.bytes.len() as u64 + self.route.len() as u64 + ENTRY_OVERHEAD
    }
}

/// The route's side: the pattern, and the header value made from it once.
pub(crate) struct RouteDictionary {
    pattern: DictionaryMatch,
    header: http::HeaderValue,
}

impl RouteDictionary {
    pub(crate) fn new(pattern: &DictionaryMatch) -> Option<RouteDictionary> {
        // The pattern's characters were checked at load (no quote or backslash to escape).
        let header = http::HeaderValue::from_str(&format!("match=\"{}\"", pattern.as_str())).ok()?;
        Some(RouteDictionary { pattern: pattern.clone(), header })
    }
}

/// Dictionaries by hash, least recently used out first past the byte budget.
pub(crate) struct Dictionaries {
    inner: Mutex<Inner>,
}

struct Inner {
    by_hash: LruCache<Hash, Arc<Dictionary>>,
    bytes: u64,
    budget: u64,
    max_one: u64,
}

impl Dictionaries {
    pub(crate) fn new(cfg: &CompressionConfig) -> Dictionaries {
        Dictionaries {
            inner: Mutex::new(Inner {
                by_hash: LruCache::unbounded(),
                bytes: 0,
                budget: cfg.dictionaries_max_size.0,
                max_one: cfg.dictionary_max_size.0,
            }),
        }
    }

    /// A reload's new sizes; past the new budget the oldest go.
    pub(crate) fn resize(&self, cfg: &CompressionConfig) {
        let mut inner = self.inner.lock();
        inner.budget = cfg.dictionaries_max_size.0;
        inner.max_one = cfg.dictionary_max_size.0;
        inner.evict();
    }

    pub(crate) fn max_one(&self) -> usize {
        usize::try_from(self.inner.lock().max_one).unwrap_or(usize::MAX)
    }

    fn get(&self, hash: &Hash) -> Option<Arc<Dictionary>> {
        self.inner.lock().by_hash.get(hash).cloned()
    }

    fn insert(&self, d: Dictionary) {
        let mut inner = self.inner.lock();
        if d.data.bytes.len() as u64 > inner.max_one || inner.by_hash.contains(&d.data.hash) {
            return;
        }
        inner.bytes += d.cost();
        inner.by_hash.put(d.data.hash, Arc::new(d));
        inner.evict();
    }

    /// Dictionaries kept, and their bytes.
    pub(crate) fn stats(&self) -> (usize, u64) {
        let inner = self.inner.lock();
        (inner.by_hash.len(), inner.bytes)
    }
}

impl Inner {
    fn evict(&mut self) {
        while self.bytes > self.budget {
            let Some((_, d)) = self.by_hash.pop_lru() else { break };
            self.bytes -= d.cost();
        }
    }
}

/// The dictionary to compress this request's response against: the client offers it
/// (`Available-Dictionary`, one well-formed SHA-256), accepts `dcz`, and Portier holds it for
/// this route and path.
pub(crate) fn offered(req: &RequestHeader, route: &str, rd: &RouteDictionary, store: &Dictionaries, path: &str) -> Option<Arc<Dictionary>> {
    let mut lines = req.headers.get_all(AVAILABLE_DICTIONARY).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else { return None };
    let hash = parse_available(line.as_bytes())?;
    if !rd.pattern.matches(path) || !super::compression::accepts(req, "dcz") {
        return None;
    }
    store.get(&hash).filter(|d| &*d.route == route)
}

/// `:<base64 of 32 bytes>:`, an RFC 8941 byte sequence; anything else is no offer.
fn parse_available(v: &[u8]) -> Option<Hash> {
    let item = sfv::Parser::new(v).parse::<sfv::Item>().ok()?;
    let sfv::BareItem::ByteSequence(bytes) = item.bare_item else { return None };
    bytes.try_into().ok()
}

/// Marks a response that may become a dictionary and returns the collector of its body; `None`
/// when the route keeps none, the path is not the pattern's, or the response is not one every
/// user may share (private, no-store, a cookie).
/// Marks a response that may become a dictionary (`Use-As-Dictionary`); false when the route
/// keeps none for this path, or the response is not one every user may share (private,
/// no-store, a cookie), or too large to keep (a browser would offer a hash Portier never
/// holds). Its decoded body then goes to [`keep`].
pub(crate) fn start(resp: &mut ResponseHeader, rd: &RouteDictionary, path: &str, max: usize) -> bool {
    let h = &resp.headers;
    let cc = |token| super::fields::has_token(h, http::header::CACHE_CONTROL, token);
    let too_large = super::target::content_length(h).is_some_and(|n| n > max as u64);
    if !rd.pattern.matches(path) || cc("private") || cc("no-store") || h.contains_key(http::header::SET_COOKIE) || too_large {
        return false;
    }
    let _ = resp.insert_header(USE_AS_DICTIONARY, rd.header.clone());
    true
}

/// Keeps a whole decoded body (at least `min` bytes) under its hash.
pub(crate) fn keep(body: Bytes, min: usize, route: &str, store: &Dictionaries) {
    // A body that starts with zstd's dictionary magic would be read as a trained
    // dictionary, not as the raw content RFC 9842 means (no text response starts so).
    if body.len() < min.max(1) || body.starts_with(&[0x37, 0xa4, 0x30, 0xec]) {
        return;
    }
    let hash = ring::digest::digest(&ring::digest::SHA256, &body);
    let Ok(hash) = Hash::try_from(hash.as_ref()) else { return };
    store.insert(Dictionary { data: DictionaryData { bytes: body, hash }, route: route.into() });
}

/// The decoded body of a response that becomes a dictionary, kept as it passes; dropped whole
/// past `max` (never a partial body).
pub(crate) struct Capture {
    body: Vec<u8>,
    max: usize,
    over: bool,
}

impl Capture {
    pub(crate) fn new(resp: &ResponseHeader, max: usize) -> Capture {
        // Reserved from the declared length (never more than `max`): no regrowth.
        let reserve = crate::edge::target::content_length(&resp.headers).map_or(0, |n| usize::try_from(n).unwrap_or(0).min(max));
        Capture { body: Vec::with_capacity(reserve), max, over: false }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.over || self.body.len() + chunk.len() > self.max {
            self.over = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    /// The whole body, or `None` past the limit.
    pub(crate) fn into_body(self) -> Option<Bytes> {
        // Boxed first: a `Bytes` made from a `Vec` keeps its spare capacity.
        (!self.over).then(|| Bytes::from(self.body.into_boxed_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn rd() -> RouteDictionary {
        RouteDictionary::new(&"/assets/*.js".parse().unwrap()).unwrap()
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/assets/app.v2.js", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn a_kept_dictionary_is_offered_only_when_everything_agrees() {
        let store = Dictionaries::new(&CompressionConfig::default());
        keep(Bytes::from_static(b"function v1() {}"), 1, "/assets/*", &store);
        let hash = ring::digest::digest(&ring::digest::SHA256, b"function v1() {}");
        let offer = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(hash.as_ref()));
        let path = "/assets/app.v2.js";
        let ok = req(&[("accept-encoding", "gzip, br, zstd, dcb, dcz"), ("available-dictionary", &offer)]);
        assert!(offered(&ok, "/assets/*", &rd(), &store, path).is_some_and(|d| &d.data.bytes[..] == b"function v1() {}"));
        assert!(offered(&ok, "/other/*", &rd(), &store, path).is_none(), "another route's dictionary");
        assert!(offered(&ok, "/assets/*", &rd(), &store, "/assets/app.css").is_none(), "a path outside the match");
        let no_dcz = req(&[("accept-encoding", "gzip, br, dcz;q=0"), ("available-dictionary", &offer)]);
        assert!(offered(&no_dcz, "/assets/*", &rd(), &store, path).is_none());
        for bad in ["", ":AAAA:", "abc", &offer[1..], ":!!!:"] {
            let r = req(&[("accept-encoding", "dcz"), ("available-dictionary", bad)]);
            assert!(offered(&r, "/assets/*", &rd(), &store, path).is_none(), "{bad:?}");
        }
        let two = req(&[("accept-encoding", "dcz"), ("available-dictionary", &offer), ("available-dictionary", &offer)]);
        assert!(offered(&two, "/assets/*", &rd(), &store, path).is_none(), "two field lines are not one hash");
    }

    #[test]
    fn the_budget_and_the_size_limit_hold() {
        let cfg = CompressionConfig {
            dictionaries_max_size: crate::config::ByteSize(2 * (50 + 2 + ENTRY_OVERHEAD)),
            dictionary_max_size: crate::config::ByteSize(60),
            ..CompressionConfig::default()
        };
        let store = Dictionaries::new(&cfg);
        for (i, len) in [(1u8, 50), (2, 50), (3, 50), (4, 61)] {
            keep(Bytes::from(vec![i; len]), 1, "/r", &store);
        }
        keep(Bytes::from_static(b"tiny"), 10, "/r", &store);
        assert_eq!(store.stats(), (2, 2 * (50 + 2 + ENTRY_OVERHEAD)), "the oldest went; the 61-byte one was never kept");
    }
}
