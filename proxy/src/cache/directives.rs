//! Parsing `Cache-Control`-style fields (also `CDN-Cache-Control` and `Portier-Cache-Control`,
//! RFC 9213 targeted fields) into the directives a shared cache acts on.

/// Directives found in one field (all its lines). For list-valued directives (`private`,
/// `no-cache`), `Some(vec![])` is the bare form and `Some(fields)` the qualified form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub present: bool,
    pub no_store: bool,
    pub no_cache: Option<Vec<String>>,
    pub private: Option<Vec<String>>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    pub immutable: bool,
    pub must_understand: bool,
    // request-only
    pub only_if_cached: bool,
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
}

/// Splits on commas outside quotes.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Delta-seconds: a non-negative integer (quoted tolerated). Values too large saturate, as
/// RFC 9111 §1.2.2 asks. Anything else is invalid (`None`).
fn delta_seconds(v: &str) -> Option<u64> {
    let v = v.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::from(u32::MAX)).min(u64::from(u32::MAX)))
}

fn field_list(v: Option<&str>) -> Vec<String> {
    v.map(|v| v.trim().trim_matches('"').split(',').map(|f| f.trim().to_ascii_lowercase()).filter(|f| !f.is_empty()).collect())
        .unwrap_or_default()
}

impl Directives {
    /// Parses every line of a field. For a duplicated numeric directive the first wins; an
    /// invalid `max-age`/`s-maxage` counts as 0 (stale), as RFC 9111 §4.2.1 allows.
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Directives {
        let mut d = Directives::default();
        for line in lines {
            for item in split_top(line) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                d.present = true;
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim())),
                    None => (item.to_ascii_lowercase(), None),
                };
                let secs = || value.and_then(delta_seconds);
                match name.as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache.get_or_insert_with(Vec::new).extend(field_list(value)),
                    "private" => d.private.get_or_insert_with(Vec::new).extend(field_list(value)),
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "max-age" => {
                        d.max_age.get_or_insert(secs().unwrap_or(0));
                    }
                    "s-maxage" => {
                        d.s_maxage.get_or_insert(secs().unwrap_or(0));
                    }
                    "stale-while-revalidate" => {
                        if let Some(s) = secs() {
                            d.stale_while_revalidate.get_or_insert(s);
                        }
                    }
                    "stale-if-error" => {
                        if let Some(s) = secs() {
                            d.stale_if_error.get_or_insert(s);
                        }
                    }
                    "immutable" => d.immutable = true,
                    "must-understand" => d.must_understand = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "max-stale" => {
                        d.max_stale.get_or_insert(secs());
                    }
                    "min-fresh" => {
                        if let Some(s) = secs() {
                            d.min_fresh.get_or_insert(s);
                        }
                    }
                    _ => {}
                }
            }
        }
        d
    }

    pub(crate) fn from_headers(h: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Directives {
        Directives::parse(h.get_all(name).iter().filter_map(|v| v.to_str().ok()))
    }

    /// An RFC 9213 targeted field (`CDN-Cache-Control`, `Portier-Cache-Control`): a Structured
    /// Field Dictionary (RFC 9651), parsed with `sfv`. A field that does not parse as a whole
    /// is ignored (`present` false), so `Cache-Control` governs instead. Members that are not
    /// the expected type (`max-age=?1`, `no-store=3`) are ignored one by one.
    pub(crate) fn from_targeted(h: &http::HeaderMap, name: &str) -> Directives {
        let lines: Vec<&[u8]> = h.get_all(name).iter().map(|v| v.as_bytes()).collect();
        if lines.is_empty() {
            return Directives::default();
        }
        // The combined field value (RFC 9110 §5.3), as RFC 9651 §4.2 parses several lines.
        let combined = lines.join(&b", "[..]);
        let Ok(dict) = sfv::Parser::new(&combined).parse::<sfv::Dictionary>() else {
            return Directives::default();
        };
        let mut d = Directives { present: true, ..Default::default() };
        for (key, entry) in &dict {
            let sfv::ListEntry::Item(item) = entry else { continue };
            let flag = item.bare_item.as_boolean() == Some(true);
            let seconds = item.bare_item.as_integer().and_then(|i| u64::try_from(i64::from(i)).ok()).map(|v| v.min(u64::from(u32::MAX)));
            match key.as_str() {
                "no-store" => d.no_store |= flag,
                "no-cache" if flag => d.no_cache = Some(Vec::new()),
                "private" if flag => d.private = Some(Vec::new()),
                "public" => d.public |= flag,
                "must-revalidate" => d.must_revalidate |= flag,
                "proxy-revalidate" => d.proxy_revalidate |= flag,
                "immutable" => d.immutable |= flag,
                "must-understand" => d.must_understand |= flag,
                "max-age" => d.max_age = d.max_age.or(seconds),
                "s-maxage" => d.s_maxage = d.s_maxage.or(seconds),
                "stale-while-revalidate" => d.stale_while_revalidate = d.stale_while_revalidate.or(seconds),
                "stale-if-error" => d.stale_if_error = d.stale_if_error.or(seconds),
                _ => {}
            }
        }
        d
    }
}

pub(crate) use crate::edge::fields::field_tokens;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targeted_fields_are_structured_dictionaries() {
        let h = |v: &[&str]| {
            let mut m = http::HeaderMap::new();
            for x in v {
                m.append("cdn-cache-control", http::HeaderValue::from_str(x).unwrap());
            }
            Directives::from_targeted(&m, "cdn-cache-control")
        };
        let d = h(&["max-age=60, stale-while-revalidate=30", "must-revalidate"]);
        assert!(d.present && d.must_revalidate);
        assert_eq!((d.max_age, d.stale_while_revalidate), (Some(60), Some(30)));
        assert!(h(&["no-store"]).no_store);
        assert_eq!(h(&["max-age=\"60\""]).max_age, None, "a string is not an integer");
        for broken in ["max-age=60,", "max-age=60;;", "Max-Age=60", "max-age=6 0"] {
            assert!(!h(&[broken]).present, "{broken:?} fails as a whole and is ignored");
        }
        assert_eq!(h(&["max-age=-5"]).max_age, None);
        assert!(!h(&[]).present);
    }

    #[test]
    fn parses_the_usual_and_the_odd() {
        let d = Directives::parse(["public, max-age=60, stale-while-revalidate=30", "s-maxage=\"10\""]);
        assert!(d.public);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(10));
        assert_eq!(d.stale_while_revalidate, Some(30));
        let d = Directives::parse(["private=\"set-cookie, x-user\", no-cache=\"x-a\", max-age=abc, max-age=5"]);
        assert_eq!(d.private, Some(vec!["set-cookie".into(), "x-user".into()]));
        assert_eq!(d.no_cache, Some(vec!["x-a".into()]));
        assert_eq!(d.max_age, Some(0), "invalid first value means stale");
        let d = Directives::parse(["max-age=99999999999999999999"]);
        assert_eq!(d.max_age, Some(u64::from(u32::MAX)));
        assert!(!Directives::parse([""]).present);
        let d = Directives::parse(["no-cache, max-stale"]);
        assert_eq!(d.no_cache, Some(vec![]));
        assert_eq!(d.max_stale, Some(None));
    }
}
