//! Cache keys: the checked request's URL (scheme, authority, path and query; see
//! [`super::url`]) — no method, so GET, HEAD and PURGE share one entry — and the Vary variance.

use super::url::CacheUrl;
use crate::config::Coding;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, VarianceBuilder};
use pingora_http::RequestHeader;

/// The key's hash is computed here once: Pingora asks for it at the lookup, the lock and the
/// predictor, and `CacheKey` hashes (blake2) anew on each call unless given the result.
pub(crate) fn cache_key(url: &CacheUrl) -> CacheKey {
    cache_key_hashed(url, primary_hash(url.as_str()))
}

/// The key hash of a URL: Pingora's (blake2 of the primary key, ~2,200 instructions), kept
/// per thread for the URLs asked most recently (a lookup is a few hundred).
fn primary_hash(url: &str) -> HashBinary {
    use pingora_cache::key::CacheHashKey;
    thread_local! {
        static MEMO: Memo = Memo::default();
    }
    remembered(&MEMO, url.as_bytes(), 512, 1024, || Some(CacheKey::new(url, "").primary_bin())).unwrap_or_default()
}

type Memo = std::cell::RefCell<std::collections::HashMap<Box<[u8]>, HashBinary>>;

/// `compute()`, remembered in this thread's `memo` by its exact `input`. Bounded: inputs over
/// `max_input` bytes are not kept, and a table of `max_entries` is emptied.
fn remembered(
    memo: &'static std::thread::LocalKey<Memo>,
    input: &[u8],
    max_input: usize,
    max_entries: usize,
    compute: impl FnOnce() -> Option<HashBinary>,
) -> Option<HashBinary> {
    let keep = input.len() <= max_input;
    if let Some(hash) = keep.then(|| memo.with(|m| m.borrow().get(input).copied())).flatten() {
        return Some(hash);
    }
    let hash = compute()?;
    if keep {
        memo.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= max_entries {
                m.clear();
            }
            m.insert(input.into(), hash);
        });
    }
    Some(hash)
}

/// [`cache_key`] for a URL whose key hash this request computed already (`hash` is
/// `cache_key(url)`'s): the fast path's, when Pingora asks for the key after it.
pub(crate) fn cache_key_hashed(url: &CacheUrl, hash: HashBinary) -> CacheKey {
    let mut key = CacheKey::new(url.as_str(), "");
    key.set_primary_bin_override(hash);
    key
}

/// Request fields that RFC 9110 defines as comma-separated lists, where field lines may be
/// combined and whitespace around elements carries no meaning; only these are normalised.
/// Any other field (Cookie, Authorization, ...) varies on its exact bytes, line by line.
const LIST_FIELDS: [&str; 5] = ["accept", "accept-charset", "accept-encoding", "accept-language", "te"];
/// Of those, the ones whose elements are case-insensitive and whose order is not significant.
const UNORDERED_CASELESS: [&str; 2] = ["accept-encoding", "te"];

/// The elements of a list field's combined value: split on commas outside quoted strings
/// (a comma inside `"a,b"` is data), optional whitespace trimmed, empty elements dropped.
fn list_elements<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for line in lines {
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, &c) in line.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                quoted = !quoted;
            } else if c == b',' && !quoted {
                out.push(line[start..i].trim_ascii());
                start = i + 1;
            }
        }
        out.push(line[start..].trim_ascii());
    }
    out.retain(|e| !e.is_empty());
    out
}

/// The value a variant is matched on. Present and absent can never be equal (the first byte
/// differs), an empty field is present, and no byte is ever dropped: a value that is not
/// visible ASCII varies like any other.
fn variant_value(name: &str, req: &RequestHeader) -> Vec<u8> {
    let mut lines = req.headers.get_all(name).iter().map(|v| v.as_bytes()).peekable();
    if lines.peek().is_none() {
        return b"absent".to_vec();
    }
    let mut value = b"=".to_vec();
    if LIST_FIELDS.contains(&name) {
        let mut elements: Vec<Vec<u8>> = list_elements(lines).into_iter().map(<[u8]>::to_vec).collect();
        if UNORDERED_CASELESS.contains(&name) {
            elements.iter_mut().for_each(|e| e.make_ascii_lowercase());
            elements.sort();
        }
        // Joined with a byte no field value holds: an element may contain a quoted comma.
        value.extend_from_slice(&elements.join(&b"\n"[..]));
    } else {
        // Line breaks cannot occur in a field value, so separate lines stay distinguishable
        // from one line holding the same bytes.
        for (i, line) in lines.enumerate() {
            if i > 0 {
                value.push(b'\n');
            }
            value.extend_from_slice(line);
        }
    }
    value
}

/// The variance for `req` under the stored response's `Vary` (None when it has none). For a
/// response Portier compresses, `Accept-Encoding` varies on the negotiated `coding` alone, so
/// every spelling of the header maps to one of four variants; with a `dictionary` (a `dcz`
/// delta) on that coding and the dictionary's hash, and `Available-Dictionary` is folded into
/// it, so a response stored with or without that name in its `Vary` gives one answer.
pub(crate) fn variance(meta: &CacheMeta, req: &RequestHeader, coding: Option<Coding>, dictionary: Option<&[u8; 32]>) -> Option<HashBinary> {
    let headers = &meta.response_header().headers;
    if dictionary.is_none() && headers.contains_key(crate::edge::compression::MARKER_NAME) && varies_on_encoding_alone(headers) {
        return Some(encoded_variance(coding));
    }
    let mut names = super::directives::field_tokens(headers, http::header::VARY);
    names.sort();
    names.dedup();
    let portier_encodes = headers.contains_key(crate::edge::compression::MARKER_NAME);
    let mut pairs = Vec::with_capacity(names.len());
    for name in names {
        if portier_encodes && name == "available-dictionary" {
            continue;
        }
        let value = if portier_encodes && name == "accept-encoding" {
            match dictionary {
                Some(hash) => [&b"coding=dcz;"[..], hash].concat(),
                None => format!("coding={}", coding.map_or("identity", Coding::as_str)).into_bytes(),
            }
        } else {
            variant_value(&name, req)
        };
        pairs.push((name, value));
    }
    if pairs.is_empty() {
        return None;
    }
    memoized_variance(pairs)
}

/// `Vary: Accept-Encoding` and nothing else, as Portier writes it on what it compresses.
fn varies_on_encoding_alone(headers: &http::HeaderMap) -> bool {
    let mut lines = headers.get_all(http::header::VARY).iter();
    matches!((lines.next(), lines.next()), (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"accept-encoding"))
}

/// The variance of a response Portier compresses, varying on `Accept-Encoding` alone: one of
/// four, computed once, the same hash the general path gives (tested).
fn encoded_variance(coding: Option<Coding>) -> HashBinary {
    static TABLE: std::sync::OnceLock<[HashBinary; 4]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        [None, Some(Coding::Gzip), Some(Coding::Br), Some(Coding::Zstd)].map(|c| {
            let mut vb = VarianceBuilder::new();
            vb.add_owned_value("accept-encoding", format!("coding={}", c.map_or("identity", Coding::as_str)).into_bytes());
            vb.finalize().unwrap_or_default()
        })
    });
    table[match coding {
        None => 0,
        Some(Coding::Gzip) => 1,
        Some(Coding::Br) => 2,
        Some(Coding::Zstd) => 3,
    }]
}

/// Variance hashes already computed on this thread, by their exact inputs. Blake2 over the
/// names and values was ~5,000 instructions of every hit of a varying response; a lookup here
/// is a few hundred.
fn memoized_variance(pairs: Vec<(String, Vec<u8>)>) -> Option<HashBinary> {
    thread_local! {
        static MEMO: Memo = Memo::default();
    }
    // Each part length-prefixed: no two different lists of pairs give the same bytes.
    let mut input = Vec::with_capacity(pairs.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (n, v) in &pairs {
        input.extend_from_slice(&(n.len() as u32).to_le_bytes());
        input.extend_from_slice(n.as_bytes());
        input.extend_from_slice(&(v.len() as u32).to_le_bytes());
        input.extend_from_slice(v);
    }
    remembered(&MEMO, &input, 256, 512, || {
        let mut vb = VarianceBuilder::new();
        for (n, v) in pairs {
            vb.add_owned_name_value(n, v);
        }
        vb.finalize()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::SystemTime;

    fn meta(vary: &str) -> CacheMeta {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("vary", vary).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now, now, 0, 0, h)
    }

    fn with(meta: &CacheMeta, name: &str, lines: &[&[u8]]) -> Option<HashBinary> {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in lines {
            r.append_header(name.to_string(), http::HeaderValue::from_bytes(v).unwrap()).unwrap();
        }
        variance(meta, &r, None, None)
    }

    #[test]
    fn list_fields_are_normalised() {
        let m = meta("Accept-Encoding");
        let ae = |v: &[&[u8]]| with(&m, "accept-encoding", v);
        assert!(ae(&[b"gzip"]).is_some());
        assert_eq!(ae(&[b"gzip, br"]), ae(&[b"BR,gzip"]), "order and case");
        assert_eq!(ae(&[b"gzip", b"br"]), ae(&[b"br,gzip"]), "field lines combined");
        assert_ne!(ae(&[b"gzip, br"]), ae(&[b"gzip"]));
        let m = meta("Accept-Language");
        let al = |v: &[&[u8]]| with(&m, "accept-language", v);
        assert_eq!(al(&[b"da, en"]), al(&[b"da,en"]), "whitespace around elements");
        assert_ne!(al(&[b"da, en"]), al(&[b"en, da"]), "order kept where it may matter");
        assert_ne!(al(&[b"a;x=\"1,2\""]), al(&[b"a;x=\"1", b"2\""]), "a quoted comma is not a separator");
    }

    #[test]
    fn a_remembered_key_hash_is_pingoras() {
        use pingora_cache::key::CacheHashKey;
        let long = format!("http://h/{}", "x".repeat(600));
        for url in ["http://h/a?b=1", "http://h/a?b=2", long.as_str()] {
            let want = CacheKey::new(url, "").primary_bin();
            assert_eq!(primary_hash(url), want, "computed");
            assert_eq!(primary_hash(url), want, "remembered");
        }
        assert_ne!(primary_hash("http://h/a?b=1"), primary_hash("http://h/a?b=2"));
    }

    #[test]
    fn the_encoded_variants_shortcut_gives_the_general_hash() {
        for vary in ["Accept-Encoding", " accept-encoding "] {
            let mut h = ResponseHeader::build(200, None).unwrap();
            h.insert_header("vary", vary).unwrap();
            h.insert_header(crate::edge::compression::MARKER, "1").unwrap();
            let now = SystemTime::now();
            let m = CacheMeta::new(now, now, 0, 0, h);
            let r = RequestHeader::build("GET", b"/", None).unwrap();
            for c in [None, Some(Coding::Gzip), Some(Coding::Br), Some(Coding::Zstd)] {
                let mut vb = VarianceBuilder::new();
                let v = format!("coding={}", c.map_or("identity", Coding::as_str));
                vb.add_value("accept-encoding", v.as_bytes());
                assert_eq!(variance(&m, &r, c, None), vb.finalize(), "{vary} {c:?}");
            }
        }
    }

    #[test]
    fn a_remembered_variance_is_the_one_computed() {
        let m = meta("Accept-Language, Cookie");
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("accept-language", "da").unwrap();
        r.append_header("cookie", "a=1").unwrap();
        let mut vb = VarianceBuilder::new();
        vb.add_value("accept-language", b"=da");
        vb.add_value("cookie", b"=a=1");
        let want = vb.finalize();
        assert_eq!(variance(&m, &r, None, None), want, "first, computed");
        assert_eq!(variance(&m, &r, None, None), want, "then, remembered");
        let mut other = RequestHeader::build("GET", b"/", None).unwrap();
        other.append_header("accept-language", "da").unwrap();
        other.append_header("cookie", "a=2").unwrap();
        assert_ne!(variance(&m, &other, None, None), want);
        // Past the size bound nothing is remembered, and the answer is still right.
        let long = "x".repeat(400);
        other.insert_header("cookie", long.as_str()).unwrap();
        let mut vb = VarianceBuilder::new();
        vb.add_value("accept-language", b"=da");
        let v = format!("={long}");
        vb.add_value("cookie", v.as_bytes());
        assert_eq!(variance(&m, &other, None, None), vb.finalize());
        assert!(
            variance(&meta("X-None"), &RequestHeader::build("GET", b"/", None).unwrap(), None, None).is_some(),
            "an absent field varies too"
        );
    }

    #[test]
    fn other_fields_vary_on_their_exact_bytes() {
        let m = meta("Cookie");
        let c = |v: &[&[u8]]| with(&m, "cookie", v);
        let absent = c(&[]);
        assert!(absent.is_some(), "a Vary response always has a variance");
        assert_ne!(c(&[b""]), absent, "empty is not absent");
        assert_ne!(c(&["session=alice-secret; name=Jos\u{e9}".as_bytes()]), absent, "non-ASCII is never dropped");
        assert_ne!(c(&[b"name=Jos\xe9"]), c(&[b"name=Jos\xc3\xa9"]));
        assert_ne!(c(&[b"a=1, b=2"]), c(&[b"a=1,b=2"]), "no whitespace folding outside list fields");
        assert_ne!(c(&[b"a=1", b"b=2"]), c(&[b"a=1,b=2"]), "two lines are not one");
        assert_eq!(c(&[b"a=1"]), c(&[b"a=1"]));
    }
}
