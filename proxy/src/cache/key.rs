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
    use pingora_cache::key::CacheHashKey;
    let mut key = CacheKey::new(url.as_str(), "");
    let hash = key.primary_bin();
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
    let mut names = super::directives::field_tokens(headers, http::header::VARY);
    names.sort();
    names.dedup();
    let portier_encodes = headers.contains_key(crate::edge::compression::MARKER);
    let mut vb = VarianceBuilder::new();
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
        vb.add_owned_name_value(name, value);
    }
    vb.finalize()
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
