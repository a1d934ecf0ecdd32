//! The memory tier's purge indexes: by URL, by path, by tag and by the query parameters
//! invalidation rules match on, so a purge costs what it matches.

use crate::cache::purge::Selector;
use crate::cache::url::path_of;
use pingora_cache::key::HashBinary;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

/// A query parameter's name and value, as written in the URL.
pub(in crate::cache::store) type ParamPair = (Box<str>, Box<str>);

/// What purges look entries up by, so a purge costs what it matches instead of a scan of
/// the whole cache under the lock.
#[derive(Default)]
pub(in crate::cache::store) struct Index {
    /// primary key → every stored variant (combined keys), the primary slot included.
    pub(in crate::cache::store) variants: HashMap<HashBinary, Vec<HashBinary>>,
    pub(in crate::cache::store) tags: HashMap<String, HashSet<HashBinary>>,
    /// `scheme://host/path?query` → primary key, ordered for URL-prefix purges.
    pub(in crate::cache::store) by_url: BTreeMap<Arc<str>, HashBinary>,
    /// (`/path?query`, primary key), ordered for path and path-prefix purges on any host.
    pub(in crate::cache::store) by_path: BTreeSet<PathKey>,
    /// Query parameters that invalidation rules match on (`username`): (name, value) → the
    /// URLs that carry it, so a rule's purge for one user does not walk every user's entries.
    pub(in crate::cache::store) params: Box<[Box<str>]>,
    pub(in crate::cache::store) by_param: HashMap<ParamPair, HashMap<HashBinary, Arc<str>>>,
}

/// An entry's `/path?query` as a slice of its URL's own allocation (a copy of the path cost
/// ~50 bytes per entry), ordered by that path, then the primary key.
pub(in crate::cache::store) struct PathKey {
    pub(in crate::cache::store) url: Arc<str>,
    pub(in crate::cache::store) path_at: u32,
    pub(in crate::cache::store) primary: HashBinary,
}

impl PathKey {
    pub(in crate::cache::store) fn new(url: Arc<str>, primary: HashBinary) -> PathKey {
        let path_at = (url.len() - path_of(&url).len()) as u32;
        PathKey { url, path_at, primary }
    }
    pub(in crate::cache::store) fn path(&self) -> &str {
        self.url.get(self.path_at as usize..).unwrap_or("")
    }
}

impl PartialEq for PathKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for PathKey {}
impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PathKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.path().cmp(other.path()).then_with(|| self.primary.cmp(&other.primary))
    }
}

impl Index {
    /// Primary keys whose URL `sel` selects (not tags).
    pub(in crate::cache::store) fn primaries(&self, sel: &Selector) -> Vec<HashBinary> {
        let by_path = |p: &str, exact: bool| -> Vec<(Arc<str>, HashBinary)> {
            self.by_path
                .range((Bound::Included(PathKey::new(Arc::from(p), [0u8; 16])), Bound::Unbounded))
                .take_while(|k| if exact { k.path() == p } else { k.path().starts_with(p) })
                .map(|k| (k.url.clone(), k.primary))
                .collect()
        };
        let by_url_prefix = |p: &str| -> Vec<(Arc<str>, HashBinary)> {
            self.by_url
                .range::<str, _>((Bound::Included(p), Bound::Unbounded))
                .take_while(|(u, _)| u.starts_with(p))
                .map(|(u, k)| (u.clone(), *k))
                .collect()
        };
        let candidates = match sel {
            Selector::PrefixWithParam { param, value, .. } if self.params.iter().any(|p| **p == **param) => self
                .by_param
                .get(&(Box::from(param.as_str()), Box::from(value.as_str())))
                .map(|m| m.iter().map(|(k, u)| (u.clone(), *k)).collect())
                .unwrap_or_default(),
            Selector::Url(u) if u.starts_with('/') => by_path(u, true),
            Selector::Url(u) => self.by_url.get_key_value(u.as_str()).map(|(u, k)| (u.clone(), *k)).into_iter().collect(),
            Selector::Prefix(p) | Selector::PrefixWithParam { prefix: p, .. } if p.starts_with('/') => by_path(p, false),
            Selector::Prefix(p) | Selector::PrefixWithParam { prefix: p, .. } => by_url_prefix(p),
            Selector::Tag(_) => Vec::new(),
        };
        // The indexes narrow the search; the selector has the last word.
        candidates.into_iter().filter(|(u, _)| sel.matches(u)).map(|(_, k)| k).collect()
    }

    /// The (name, value) pairs of `url`'s query that are indexed.
    pub(in crate::cache::store) fn indexed_params(&self, url: &str) -> Vec<ParamPair> {
        if self.params.is_empty() {
            return Vec::new();
        }
        let query = url.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                self.params.iter().any(|p| **p == *k).then(|| (Box::from(k), Box::from(v)))
            })
            .collect()
    }

    pub(in crate::cache::store) fn add(&mut self, primary: HashBinary, url: &Arc<str>) {
        self.by_url.insert(url.clone(), primary);
        self.by_path.insert(PathKey::new(url.clone(), primary));
        for pair in self.indexed_params(url) {
            self.by_param.entry(pair).or_default().insert(primary, url.clone());
        }
    }

    pub(in crate::cache::store) fn forget(&mut self, primary: &HashBinary, url: &Arc<str>) {
        self.by_url.remove(&**url);
        self.by_path.remove(&PathKey::new(url.clone(), *primary));
        for pair in self.indexed_params(url) {
            if let Some(m) = self.by_param.get_mut(&pair) {
                m.remove(primary);
                if m.is_empty() {
                    self.by_param.remove(&pair);
                }
            }
        }
    }
}
