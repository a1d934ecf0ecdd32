//! Portier's in-memory cache storage for Pingora: a byte budget that counts headers and body,
//! strict LRU eviction (the `lru` crate), a per-object limit, zero-copy hits, every Vary
//! variant of a URL purged together, tags, and soft purge.
//!
//! Why LRU and not TinyUFO: TinyUFO weights are `u16`, so a byte budget needs scaled units,
//! and its admission filter can refuse a freshly filled object that readers wait for. A strict
//! LRU with exact byte accounting is predictable and testable; one mutex guards it because
//! every operation under it is O(1) or, for purges, costs what it matches (ordered indexes by
//! URL and by path), and soft purges rewrite metas outside it.

use super::purge::Selector;
use super::url::path_of;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Per-entry bookkeeping counted against the budget on top of headers and body: the LRU
/// node and its slot, the URL, path and variant indexes, allocator rounding. Measured with
/// `mem-bench` (resident memory per entry minus what the other terms count: about 500 bytes
/// once metas are kept decoded only, in their compact form, and the path index points into
/// the URL instead of copying the path).
const ENTRY_OVERHEAD: usize = 520;

/// A header Portier's policy puts in the stored meta to ask for an edge-generated ETag; the
/// storage replaces it with `ETag: "<hash of the body>"` once the whole body is known.
pub(crate) const GENERATE_ETAG_MARKER: &str = "x-portier-generate-etag";

/// A stored meta's fields, kept decoded so a hit rebuilds its `CacheMeta` without
/// decompressing the header (the serialized form stays the source of truth). Only metas that
/// `CacheMeta::new` can express exactly get one: provenance equal to creation time, and an
/// epoch override whenever `updated` differs from `created`.
struct Decoded {
    fresh_until: SystemTime,
    created: SystemTime,
    swr: u32,
    sie: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
    header: Head,
}

/// The serialized meta without the spare capacity its encoder left (a `Bytes` made from a
/// `Vec` keeps the whole capacity).
fn exact(v: Vec<u8>) -> Bytes {
    Bytes::from(v.into_boxed_slice())
}

/// Field names of stored heads, each kept once for the whole cache: an entry holds a 2-byte
/// index per field instead of a 32-byte `HeaderName` (~250 bytes per entry). Hits read the
/// table without a lock; a name never seen before is added under the mutex (fills only).
/// Bounded: past `MAX_NAMES` distinct names (an origin inventing names), new heads are kept
/// serialized instead.
struct Names {
    max: usize,
    index: parking_lot::Mutex<HashMap<http::HeaderName, u16>>,
    table: arc_swap::ArcSwap<Vec<http::HeaderName>>,
}

const MAX_NAMES: usize = 4096;

impl Names {
    fn new(max: usize) -> Names {
        let max = max.min(usize::from(u16::MAX));
        Names { max, index: parking_lot::Mutex::new(HashMap::new()), table: arc_swap::ArcSwap::from_pointee(Vec::new()) }
    }

    fn global() -> &'static Names {
        static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| Names::new(MAX_NAMES))
    }

    fn intern(&self, name: &http::HeaderName) -> Option<u16> {
        let mut index = self.index.lock();
        if let Some(i) = index.get(name) {
            return Some(*i);
        }
        if index.len() >= self.max {
            return None;
        }
        let i = index.len() as u16;
        let mut table = (**self.table.load()).clone();
        table.push(name.clone());
        self.table.store(Arc::new(table));
        index.insert(name.clone(), i);
        Some(i)
    }
}

/// A stored response head in two allocations: each field's name (interned, see [`Names`])
/// with where its value ends, and every value's bytes back to back. Pingora parses a response head without copying (each
/// name and value a slice of the buffer it was read into: keeping those would keep the whole
/// buffer, 9.8 KB resident per 1.8 KB entry), and a `HeaderMap` copy costs buckets, indices
/// and one allocation per value (~1.2 KB for six fields). Each hit builds its
/// `ResponseHeader` from this: the values are slices of the shared buffer, not copies.
struct Head {
    status: http::StatusCode,
    version: http::Version,
    /// Only when the origin's differs from the status code's canonical phrase.
    reason: Option<Box<str>>,
    fields: Box<[(u16, u32)]>,
    values: Bytes,
}

impl Head {
    /// None when a name cannot be interned (the table is full).
    fn of(h: &pingora_http::ResponseHeader, names: &Names) -> Option<Head> {
        let mut values = Vec::with_capacity(h.headers.iter().map(|(_, v)| v.len()).sum());
        let mut fields = Vec::with_capacity(h.headers.len());
        for (name, value) in &h.headers {
            values.extend_from_slice(value.as_bytes());
            fields.push((names.intern(name)?, values.len() as u32));
        }
        let reason = h.get_reason_phrase().filter(|r| Some(*r) != h.status.canonical_reason()).map(Box::from);
        Some(Head { status: h.status, version: h.version, reason, fields: fields.into_boxed_slice(), values: Bytes::from(values) })
    }

    /// The response head again; the names go out in their canonical case (HTTP field names are
    /// case-insensitive).
    fn header(&self, names: &Names) -> pingora_http::ResponseHeader {
        const ADDED_ON_EVERY_ANSWER: usize = 8;
        let table = names.table.load();
        // Room for the fields every answer from the store gets (Age, X-Cache, Cache-Status,
        // Server-Timing, X-Request-Id, Via, Date...): growing the map rehashes every field.
        let mut map = http::HeaderMap::with_capacity(self.fields.len() + ADDED_ON_EVERY_ANSWER);
        let mut start = 0;
        for (name, end) in self.fields.iter() {
            let end = *end as usize;
            // The bytes came from a `HeaderValue`: they are valid (checked again, not assumed).
            // The table only grows: an index handed out is always there.
            if let (Some(name), Ok(v)) =
                (table.get(usize::from(*name)), http::HeaderValue::from_maybe_shared(self.values.slice(start..end)))
            {
                map.append(name.clone(), v);
            }
            start = end;
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = map;
        let mut out = pingora_http::ResponseHeader::from(parts);
        if let Some(r) = &self.reason {
            let _ = out.set_reason_phrase(Some(r));
        }
        out
    }

    /// What it holds: the values, each field's name index and offset (the interned names are
    /// shared by the whole cache and bounded by `MAX_NAMES`).
    fn weight(&self) -> usize {
        self.values.len() + self.fields.len() * std::mem::size_of::<(u16, u32)>() + self.reason.as_ref().map_or(0, |r| r.len())
    }
}

/// An entry's meta as kept: decoded when `CacheMeta::new` expresses it exactly (a hit then
/// rebuilds it without decompressing anything), else serialized. Never both: the serialized
/// form of a decoded meta is made again when something needs it (the shared tier, a soft purge).
#[derive(Clone)]
enum StoredMeta {
    Decoded(Arc<Decoded>),
    /// Boxed: two `Bytes` inline would make every entry (and LRU node) 56 bytes larger.
    Serialized(Box<(Bytes, Bytes)>),
}

impl StoredMeta {
    fn of(meta: &CacheMeta) -> Result<StoredMeta> {
        match Decoded::of(meta) {
            Some(d) => Ok(StoredMeta::Decoded(d)),
            None => {
                let (i, h) = meta.serialize()?;
                Ok(StoredMeta::Serialized(Box::new((exact(i), exact(h)))))
            }
        }
    }

    /// `parts` (the meta serialized) are kept only when the meta cannot be kept decoded.
    fn from_parts(parts: (Bytes, Bytes), decoded: Option<Arc<Decoded>>) -> StoredMeta {
        match decoded {
            Some(d) => StoredMeta::Decoded(d),
            None => StoredMeta::Serialized(Box::new(parts)),
        }
    }

    fn meta(&self) -> Result<CacheMeta> {
        match self {
            StoredMeta::Decoded(d) => Ok(d.rebuild()),
            StoredMeta::Serialized(p) => CacheMeta::deserialize(&p.0, &p.1),
        }
    }

    fn parts(&self) -> Result<(Bytes, Bytes)> {
        match self {
            StoredMeta::Decoded(d) => {
                let (i, h) = d.rebuild().serialize()?;
                Ok((exact(i), exact(h)))
            }
            StoredMeta::Serialized(p) => Ok((p.0.clone(), p.1.clone())),
        }
    }

    /// Bytes counted against the budget.
    fn weight(&self) -> usize {
        match self {
            StoredMeta::Decoded(d) => d.weight(),
            StoredMeta::Serialized(p) => p.0.len() + p.1.len(),
        }
    }

    /// This very meta, not one stored since (a refill or another rewrite replaced it).
    fn same(&self, other: &StoredMeta) -> bool {
        match (self, other) {
            (StoredMeta::Decoded(a), StoredMeta::Decoded(b)) => Arc::ptr_eq(a, b),
            (StoredMeta::Serialized(a), StoredMeta::Serialized(b)) => a.0.as_ptr() == b.0.as_ptr(),
            _ => false,
        }
    }
}

impl Decoded {
    fn of(meta: &CacheMeta) -> Option<Arc<Decoded>> {
        let exact = meta.provenance() == meta.created() && (meta.updated() == meta.created() || meta.epoch_override().is_some());
        if !exact {
            return None;
        }
        Some(Arc::new(Decoded {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            swr: meta.stale_while_revalidate_sec(),
            sie: meta.stale_if_error_sec(),
            variance: meta.variance(),
            epoch_override: meta.epoch_override(),
            header: Head::of(meta.response_header(), Names::global())?,
        }))
    }

    /// Bytes the decoded meta holds, counted against the budget like everything stored: the
    /// shared allocation (with the `Arc`'s counts and allocator rounding) and the head.
    fn weight(&self) -> usize {
        std::mem::size_of::<Decoded>() + 32 + self.header.weight()
    }

    fn rebuild(&self) -> CacheMeta {
        let mut m = CacheMeta::new(self.fresh_until, self.created, self.swr, self.sie, self.header.header(Names::global()));
        if let Some(v) = self.variance {
            m.set_variance_key(v);
        }
        if let Some(e) = self.epoch_override {
            m.set_epoch_override(e);
        }
        m
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    meta: StoredMeta,
    body: Bytes,
    primary: HashBinary,
    /// `scheme://host/path?query`, for URL and prefix purges.
    url: Arc<str>,
    tags: Box<[String]>,
    size: usize,
}

/// A query parameter's name and value, as written in the URL.
type ParamPair = (Box<str>, Box<str>);

/// What purges look entries up by, so a purge costs what it matches instead of a scan of
/// the whole cache under the lock.
#[derive(Default)]
struct Index {
    /// primary key → every stored variant (combined keys), the primary slot included.
    variants: HashMap<HashBinary, Vec<HashBinary>>,
    tags: HashMap<String, HashSet<HashBinary>>,
    /// `scheme://host/path?query` → primary key, ordered for URL-prefix purges.
    by_url: BTreeMap<Arc<str>, HashBinary>,
    /// (`/path?query`, primary key), ordered for path and path-prefix purges on any host.
    by_path: BTreeSet<PathKey>,
    /// Query parameters that invalidation rules match on (`username`): (name, value) → the
    /// URLs that carry it, so a rule's purge for one user does not walk every user's entries.
    params: Box<[Box<str>]>,
    by_param: HashMap<ParamPair, HashMap<HashBinary, Arc<str>>>,
}

/// An entry's `/path?query` as a slice of its URL's own allocation (a copy of the path cost
/// ~50 bytes per entry), ordered by that path, then the primary key.
struct PathKey {
    url: Arc<str>,
    path_at: u32,
    primary: HashBinary,
}

impl PathKey {
    fn new(url: Arc<str>, primary: HashBinary) -> PathKey {
        let path_at = (url.len() - path_of(&url).len()) as u32;
        PathKey { url, path_at, primary }
    }
    fn path(&self) -> &str {
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
    fn primaries(&self, sel: &Selector) -> Vec<HashBinary> {
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
    fn indexed_params(&self, url: &str) -> Vec<ParamPair> {
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

    fn add(&mut self, primary: HashBinary, url: &Arc<str>) {
        self.by_url.insert(url.clone(), primary);
        self.by_path.insert(PathKey::new(url.clone(), primary));
        for pair in self.indexed_params(url) {
            self.by_param.entry(pair).or_default().insert(primary, url.clone());
        }
    }

    fn forget(&mut self, primary: &HashBinary, url: &Arc<str>) {
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

struct Inner {
    lru: LruCache<HashBinary, Entry>,
    bytes: usize,
    index: Index,
}

impl Inner {
    /// Replaces an entry's meta (prepared by the caller, outside the lock), keeping the byte
    /// accounting exact. False when the entry is gone.
    fn replace_meta(&mut self, combined: &HashBinary, meta: StoredMeta) -> bool {
        let new = meta.weight();
        let Some(e) = self.lru.peek_mut(combined) else {
            return false;
        };
        let old = e.meta.weight();
        e.meta = meta;
        e.size = e.size - old + new;
        self.bytes = self.bytes - old + new;
        true
    }

    fn unindex(&mut self, combined: &HashBinary, e: &Entry) {
        self.bytes -= e.size;
        if let Some(v) = self.index.variants.get_mut(&e.primary) {
            v.retain(|k| k != combined);
            if v.is_empty() {
                self.index.variants.remove(&e.primary);
                self.index.forget(&e.primary, &e.url);
            }
        }
        for t in e.tags.iter() {
            if let Some(set) = self.index.tags.get_mut(t) {
                set.remove(combined);
                if set.is_empty() {
                    self.index.tags.remove(t);
                }
            }
        }
    }

    fn remove(&mut self, combined: &HashBinary) -> Option<Entry> {
        let e = self.lru.pop(combined)?;
        self.unindex(combined, &e);
        Some(e)
    }

    fn insert(&mut self, combined: HashBinary, mut e: Entry) {
        self.remove(&combined);
        // What the parameter index holds for this URL counts against the budget too.
        e.size += self.index.indexed_params(&e.url).iter().map(|(k, v)| k.len() + v.len() + 64).sum::<usize>();
        self.bytes += e.size;
        // Most URLs have one variant: a first push would reserve four (64 bytes).
        let vs = self.index.variants.entry(e.primary).or_insert_with(|| Vec::with_capacity(1));
        let first = vs.is_empty();
        if !vs.contains(&combined) {
            vs.push(combined);
        }
        if first {
            self.index.add(e.primary, &e.url);
        }
        for t in e.tags.iter() {
            self.index.tags.entry(t.clone()).or_default().insert(combined);
        }
        self.lru.put(combined, e);
    }
}

/// Counters the metrics and `/cache/stats` read.
#[derive(Debug, Default)]
pub(crate) struct StorageStats {
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    pub inserts: AtomicU64,
    pub rejected_too_large: AtomicU64,
}

pub(crate) struct MemStorage {
    inner: Mutex<Inner>,
    max_bytes: usize,
    max_object: usize,
    pub stats: StorageStats,
}

impl MemStorage {
    pub(crate) fn new(max_bytes: usize, max_object: usize) -> Self {
        MemStorage {
            inner: Mutex::new(Inner { lru: LruCache::unbounded(), bytes: 0, index: Index::default() }),
            max_bytes,
            max_object,
            stats: StorageStats::default(),
        }
    }

    /// Also index these query parameters (the `match_param` of invalidation rules).
    pub(crate) fn indexing_params(self, names: impl IntoIterator<Item = String>) -> Self {
        let mut names: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
        names.sort();
        names.dedup();
        self.inner.lock().index.params = names.into_boxed_slice();
        self
    }

    /// Leaked on purpose: Pingora's cache wants `&'static` storage, and there is one per process.
    pub(crate) fn leak(self) -> &'static MemStorage {
        Box::leak(Box::new(self))
    }

    #[cfg(test)]
    fn size(&self) -> usize {
        self.inner.lock().bytes
    }
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.inner.lock().lru.len()
    }

    /// Stores a completed entry (from a fill or from the shared tier), evicting as needed.
    pub(crate) fn admit(&self, combined: HashBinary, e: Entry) {
        if e.body.len() <= self.max_object {
            self.insert(combined, e)
        }
    }

    /// An entry rebuilt from its serialized meta and body, as the shared tier keeps them.
    pub(crate) fn entry_from_parts(&self, key: &CacheKey, internal: Bytes, header: Bytes, body: Bytes) -> Result<(CacheMeta, Entry)> {
        let meta = CacheMeta::deserialize(&internal, &header)?;
        let stored = StoredMeta::from_parts((internal, header), Decoded::of(&meta));
        let url: Arc<str> = key.primary_key_str().unwrap_or("").into();
        let tags = tags_of(&meta);
        Ok((meta, Entry::new(stored, body, key.primary_bin(), url, tags)))
    }

    /// Drops every entry; returns how many there were.
    pub(crate) fn clear(&self) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.lru.len();
        inner.lru.clear();
        inner.bytes = 0;
        let params = std::mem::take(&mut inner.index.params);
        inner.index = Index { params, ..Index::default() };
        n
    }

    /// Purges every variant of the URL whose primary key is `primary`.
    pub(crate) fn purge_primary(&self, primary: &HashBinary, soft: bool) -> usize {
        let keys = self.inner.lock().index.variants.get(primary).cloned().unwrap_or_default();
        self.purge_keys(&keys, soft)
    }

    /// Purges one stored variant.
    pub(crate) fn purge_combined(&self, combined: &HashBinary, soft: bool) -> usize {
        self.purge_keys(&[*combined], soft)
    }

    /// A copy of a stored entry (its meta and body shared, not copied), for the shared tier.
    pub(crate) fn entry(&self, combined: &HashBinary) -> Option<Entry> {
        self.inner.lock().lru.peek(combined).cloned()
    }

    /// A fill for `key`, whose completed entry the caller may copy elsewhere before admitting it.
    pub(crate) fn fill(&'static self, key: &CacheKey, meta: &CacheMeta) -> Result<Fill> {
        let h = &meta.response_header().headers;
        // The stored header must frame the stored body by itself: a chunked or close-delimited
        // origin response gets a Content-Length once the whole body is known.
        let patch = h.contains_key(GENERATE_ETAG_MARKER)
            || !h.contains_key(http::header::CONTENT_LENGTH)
            || h.contains_key(http::header::TRANSFER_ENCODING);
        let decoded = if patch { None } else { Decoded::of(meta) };
        // Serialized only when it is what will be kept or edited: a decoded meta needs no zstd
        // compression of its header on every fill.
        let serialized = if decoded.is_none() { Some(meta.serialize()?) } else { None };
        Ok(Fill {
            storage: self,
            combined: key.combined_bin(),
            primary: key.primary_bin(),
            url: key.primary_key_str().unwrap_or("").into(),
            tags: tags_of(meta),
            serialized,
            patch,
            decoded,
            chunks: Vec::new(),
            len: 0,
            too_large: false,
        })
    }

    fn insert(&self, combined: HashBinary, e: Entry) {
        let mut inner = self.inner.lock();
        inner.insert(combined, e);
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        while inner.bytes > self.max_bytes {
            let Some((k, old)) = inner.lru.pop_lru() else {
                break;
            };
            inner.unindex(&k, &old);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            self.stats.evicted_bytes.fetch_add(old.size as u64, Ordering::Relaxed);
        }
    }

    /// Marks entries stale now (they stay for stale-while-revalidate / stale-if-error).
    /// Metas are rewritten outside the lock, so hits never wait for the (de)serialisation;
    /// an entry refilled meanwhile keeps its new meta. Returns how many were expired.
    fn expire_keys(&self, keys: &[HashBinary]) -> usize {
        let read: Vec<(HashBinary, StoredMeta)> = {
            let inner = self.inner.lock();
            keys.iter().filter_map(|k| inner.lru.peek(k).map(|e| (*k, e.meta.clone()))).collect()
        };
        let now = SystemTime::now();
        // The key, the meta read (to see a refill), the expired meta.
        let rewritten: Vec<(HashBinary, StoredMeta, StoredMeta)> = read
            .into_iter()
            .filter_map(|(k, old)| {
                let mut meta = old.meta().ok()?;
                meta.expire_at(now);
                Some((k, old, StoredMeta::of(&meta).ok()?))
            })
            .collect();
        let mut inner = self.inner.lock();
        let mut n = 0;
        for (k, old, new) in rewritten {
            let unchanged = inner.lru.peek(&k).is_some_and(|e| e.meta.same(&old));
            if unchanged && inner.replace_meta(&k, new) {
                n += 1;
            }
        }
        n
    }

    /// Purges what `sel` selects, every Vary variant included. `soft` marks entries stale
    /// instead of removing them. Returns the number of entries affected.
    pub(crate) fn purge_matching(&self, sel: &Selector, soft: bool) -> usize {
        let keys: Vec<HashBinary> = {
            let inner = self.inner.lock();
            match sel {
                Selector::Tag(t) => inner.index.tags.get(t).map(|s| s.iter().copied().collect()).unwrap_or_default(),
                _ => inner.index.primaries(sel).iter().filter_map(|p| inner.index.variants.get(p)).flatten().copied().collect(),
            }
        };
        self.purge_keys(&keys, soft)
    }

    /// Purges one cache key's every variant.
    pub(crate) fn purge_key(&self, key: &(impl CacheHashKey + ?Sized), soft: bool) -> usize {
        self.purge_primary(&key.primary_bin(), soft)
    }

    /// Removes (or, `soft`, expires) these entries; returns how many there were.
    fn purge_keys(&self, keys: &[HashBinary], soft: bool) -> usize {
        if soft {
            self.expire_keys(keys)
        } else {
            let mut inner = self.inner.lock();
            keys.iter().filter(|k| inner.remove(k).is_some()).count()
        }
    }
}

impl super::store::Store for MemStorage {
    fn purge_matching(&self, sel: &Selector, soft: bool) -> usize {
        MemStorage::purge_matching(self, sel, soft)
    }

    fn purge_key(&self, key: &dyn CacheHashKey, soft: bool) -> usize {
        MemStorage::purge_key(self, key, soft)
    }

    fn stats(&self) -> super::store::StoreStats {
        let inner = self.inner.lock();
        super::store::StoreStats {
            entries: inner.lru.len(),
            bytes: inner.bytes,
            capacity: self.max_bytes,
            max_object: self.max_object,
            evictions: self.stats.evictions.load(Ordering::Relaxed),
        }
    }
}

fn storage_error(what: &str, e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::InternalError, format!("cache storage: {what}: {e}"))
}

/// Tags from `Cache-Tag` / `Surrogate-Key` (comma or space separated).
fn tags_of(meta: &CacheMeta) -> Box<[String]> {
    let h = &meta.response_header().headers;
    let mut tags: Vec<String> = ["cache-tag", "surrogate-key"]
        .iter()
        .flat_map(|n| h.get_all(*n).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ' ']))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    tags.sort();
    tags.dedup();
    tags.into_boxed_slice()
}

#[async_trait::async_trait]
impl Storage for MemStorage {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let found = {
            let mut inner = self.inner.lock();
            inner.lru.get(&key.combined_bin()).map(|e| (e.meta.clone(), e.body.clone()))
        };
        let Some((stored, body)) = found else {
            return Ok(None);
        };
        Ok(Some((stored.meta()?, Box::new(Hit::new(body, Tier::Memory)))))
    }

    async fn get_miss_handler(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<MissHandler> {
        Ok(Box::new(self.fill(key, meta)?))
    }

    async fn purge(&'static self, target: PurgeTarget<'_>, _purge_type: PurgeType, _trace: &SpanHandle) -> Result<PurgeOutcome> {
        let key = target.key();
        // Purging a URL (no variance) must drop every Vary variant, not just the primary slot.
        let n = match (target, key.variance_bin()) {
            (PurgeTarget::Active(_), None) => self.purge_key(key, false),
            _ => usize::from(self.inner.lock().remove(&key.combined_bin()).is_some()),
        };
        Ok(if n > 0 { PurgeOutcome::Purged(None) } else { PurgeOutcome::NotFound })
    }

    async fn expire(&'static self, target: PurgeTarget<'_>, _trace: &SpanHandle) -> Result<PurgeOutcome> {
        let found = self.expire_keys(&[target.key().combined_bin()]) > 0;
        Ok(if found { PurgeOutcome::Expired } else { PurgeOutcome::NotFound })
    }

    /// Never panics: an entry purged or evicted while a revalidation was in flight is simply
    /// not there any more (`Ok(false)`).
    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let stored = StoredMeta::of(meta)?;
        Ok(self.inner.lock().replace_meta(&key.combined_bin(), stored))
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Which tier answered a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Memory,
    /// Read from the shared tier (Redis) on a memory miss.
    Shared,
}

/// A hit: slices of the stored `Bytes`, no copy.
pub(crate) struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    pub(crate) tier: Tier,
    /// Stale, and another replica holds the shared refresh lock.
    pub(crate) refreshing_elsewhere: bool,
}

impl Hit {
    pub(crate) fn new(body: Bytes, tier: Tier) -> Hit {
        let end = body.len();
        Hit { body, start: 0, end, done: false, tier, refreshing_elsewhere: false }
    }
}

#[async_trait::async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(self: Box<Self>, _storage: &'static (dyn Storage + Sync), _key: &CacheKey, _trace: &SpanHandle) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(ErrorType::InternalError, format!("seek start {start} beyond body of {}", self.body.len()));
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress. Chunks stay here until `finish`: a body cut off mid-way (the handler
/// is dropped unfinished) never reaches the store.
pub(crate) struct Fill {
    storage: &'static MemStorage,
    combined: HashBinary,
    primary: HashBinary,
    url: Arc<str>,
    tags: Box<[String]>,
    /// The meta serialized, when it is not kept decoded (or needs edits).
    serialized: Option<(Vec<u8>, Vec<u8>)>,
    /// The header needs edits once the body is complete (ETag, Content-Length).
    patch: bool,
    decoded: Option<Arc<Decoded>>,
    chunks: Vec<Bytes>,
    len: usize,
    too_large: bool,
}

#[async_trait::async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_large {
            return Ok(());
        }
        self.len += data.len();
        if self.len > self.storage.max_object {
            self.too_large = true;
            self.chunks = Vec::new();
        } else if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let storage = self.storage;
        let (combined, entry) = self.complete()?;
        let size = entry.size;
        storage.insert(combined, entry);
        Ok(MissFinishType::Created(size))
    }
}

impl Entry {
    /// An entry and the bytes it is counted for: its meta as kept, body, URL, and the
    /// bookkeeping around them (LRU node, indexes).
    fn new(meta: StoredMeta, body: Bytes, primary: HashBinary, url: Arc<str>, tags: Box<[String]>) -> Entry {
        let size = body.len() + meta.weight() + url.len() + ENTRY_OVERHEAD;
        Entry { meta, body, primary, url, tags, size }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
    /// The meta serialized, as the shared tier stores it.
    pub(crate) fn meta_parts(&self) -> Result<(Bytes, Bytes)> {
        self.meta.parts()
    }
    pub(crate) fn tags(&self) -> &[String] {
        &self.tags
    }
    /// How long the entry may still be served, fresh or stale: what a copy elsewhere should
    /// live. None when the meta cannot be read.
    pub(crate) fn servable_for(&self, now: SystemTime) -> Option<std::time::Duration> {
        let (fresh_until, swr, sie) = match &self.meta {
            StoredMeta::Decoded(d) => (d.fresh_until, d.swr, d.sie),
            StoredMeta::Serialized(p) => {
                let m = CacheMeta::deserialize(&p.0, &p.1).ok()?;
                (m.fresh_until(), m.stale_while_revalidate_sec(), m.stale_if_error_sec())
            }
        };
        let fresh = fresh_until.duration_since(now).unwrap_or_default();
        Some(fresh + std::time::Duration::from_secs(u64::from(swr.max(sie))))
    }
}

impl Fill {
    /// The entry this fill makes, once the whole body is in; an error when it may not be
    /// stored (over the object limit).
    pub(crate) fn complete(self) -> Result<(HashBinary, Entry)> {
        let s = self;
        if s.too_large {
            s.storage.stats.rejected_too_large.fetch_add(1, Ordering::Relaxed);
            return Err(storage_error("not stored", format!("body over max_object_size ({} bytes)", s.storage.max_object)));
        }
        // Always a fresh allocation of the body's size: a chunk is a slice of the buffer
        // Pingora read it into, and keeping the slice would keep that whole buffer (a 1.8 KB
        // body held about 8 KB resident that the budget never saw).
        let body = match s.chunks.len() {
            0 => Bytes::new(),
            1 => Bytes::copy_from_slice(&s.chunks[0]),
            _ => {
                let mut b = BytesMut::with_capacity(s.len);
                for c in &s.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        // `fill` keeps the meta decoded, or serialized when it cannot be (or needs edits).
        let stored = match (s.patch, s.decoded, s.serialized) {
            (false, Some(d), _) => StoredMeta::Decoded(d),
            (true, _, Some((internal, header))) => {
                let mut meta = CacheMeta::deserialize(&internal, &header)?;
                let h = meta.response_header_mut();
                if h.remove_header(GENERATE_ETAG_MARKER).is_some() && !h.headers.contains_key(http::header::ETAG) {
                    let hash = pingora_cache::key::hash_key(&body);
                    let tag: String = hash.iter().take(12).map(|b| format!("{b:02x}")).collect();
                    h.insert_header(http::header::ETAG, format!("\"{tag}\""))?;
                }
                h.remove_header(&http::header::TRANSFER_ENCODING);
                h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
                StoredMeta::of(&meta)?
            }
            (false, None, Some((internal, header))) => StoredMeta::Serialized(Box::new((exact(internal), exact(header)))),
            (_, _, None) => return Err(storage_error("not stored", "a fill without its meta".to_string())),
        };
        Ok((s.combined, Entry::new(stored, body, s.primary, s.url, s.tags)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;
    use std::time::Duration;

    fn meta(tags: &str) -> CacheMeta {
        let mut h = ResponseHeader::build(200, None).unwrap();
        if !tags.is_empty() {
            h.insert_header("cache-tag", tags).unwrap();
        }
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h)
    }

    async fn fill(s: &'static MemStorage, url: &str, variance: Option<&str>, body: &[u8], tags: &str) {
        let mut key = CacheKey::new(url, "");
        if let Some(v) = variance {
            key.set_variance_key(pingora_cache::key::hash_key(v));
        }
        let mut m = s.get_miss_handler(&key, &meta(tags), &Span::inactive().handle()).await.unwrap();
        m.write_body(Bytes::copy_from_slice(body), true).await.unwrap();
        m.finish().await.unwrap();
    }

    #[tokio::test]
    async fn budget_holds_and_lru_evicts_oldest() {
        let s = MemStorage::new(20_000, 8_000).leak();
        for i in 0..60 {
            fill(s, &format!("http://h/{i}"), None, &[b'x'; 1000], "").await;
            assert!(s.size() <= 20_000, "over budget after {i}: {}", s.size());
        }
        assert!(s.entries() < 60);
        assert!(s.stats.evictions.load(Ordering::Relaxed) > 0);
        let k = CacheKey::new("http://h/59", "");
        assert!(s.lookup(&k, &Span::inactive().handle()).await.unwrap().is_some(), "newest stays");
        let k = CacheKey::new("http://h/0", "");
        assert!(s.lookup(&k, &Span::inactive().handle()).await.unwrap().is_none(), "oldest went");
    }

    #[tokio::test]
    async fn purge_removes_every_variant_and_frees_bytes() {
        let s = MemStorage::new(1 << 20, 1 << 20).leak();
        fill(s, "http://h/v", None, b"primary", "").await;
        fill(s, "http://h/v", Some("gzip"), b"gzip", "").await;
        fill(s, "http://h/v", Some("br"), b"br", "").await;
        fill(s, "http://h/other", None, b"o", "").await;
        assert_eq!(s.entries(), 4);
        let key = CacheKey::new("http://h/v", "");
        let out = s.purge(PurgeTarget::Active(&key.to_compact()), PurgeType::Invalidation, &Span::inactive().handle()).await.unwrap();
        assert_eq!(out, PurgeOutcome::Purged(None));
        assert_eq!(s.entries(), 1);
        let other = s.size();
        s.purge_matching(&Selector::Url("/other".into()), false);
        assert_eq!(s.entries(), 0);
        assert_eq!(s.size(), 0, "all bytes freed (other was {other})");
    }

    #[tokio::test]
    async fn purges_find_entries_through_the_indexes_and_keep_them_in_step() {
        for indexed in [false, true] {
            let names = if indexed { vec!["username".to_string()] } else { Vec::new() };
            let s = MemStorage::new(1 << 20, 1 << 20).indexing_params(names).leak();
            fill(s, "http://h/api/stats/a?username=bob", None, b"1", "").await;
            fill(s, "http://h/api/stats/a?username=bob", Some("gzip"), b"2", "").await;
            fill(s, "http://h/api/stats/b?username=amy", None, b"3", "").await;
            fill(s, "http://h/api/statsx", None, b"4", "").await;
            fill(s, "http://g/api/stats/a?username=bob", None, b"5", "").await;
            let sel =
                |prefix: &str, v: &str| Selector::PrefixWithParam { prefix: prefix.into(), param: "username".into(), value: v.into() };
            assert_eq!(s.purge_matching(&sel("http://h/api/stats/", "bob"), false), 2, "both variants, that user, that host");
            assert_eq!(s.purge_matching(&sel("http://h/api/stats/", "bob"), false), 0, "the index forgot them");
            assert_eq!(s.purge_matching(&Selector::Prefix("http://h/api/stats/".into()), false), 1);
            assert_eq!(s.purge_matching(&Selector::Url("/api/stats/a?username=bob".into()), false), 1, "any host: g's entry");
            assert_eq!(s.purge_matching(&Selector::Url("http://h/api/statsx".into()), true), 1, "soft");
            assert_eq!(s.entries(), 1, "a soft purge keeps the entry");
            fill(s, "http://h/api/statsx", None, b"6", "").await;
            assert_eq!(s.purge_matching(&Selector::Prefix("/api/".into()), false), 1);
            assert_eq!((s.entries(), s.size()), (0, 0), "indexed: {indexed}");
            let inner = s.inner.lock();
            let i = &inner.index;
            assert!(i.by_url.is_empty() && i.by_path.is_empty() && i.variants.is_empty() && i.by_param.is_empty());
        }
    }

    #[tokio::test]
    async fn tags_prefixes_and_soft_purge() {
        let s = MemStorage::new(1 << 20, 1 << 20).leak();
        fill(s, "http://h/api/stats/a?u=1", None, b"a", "user-1 stats").await;
        fill(s, "http://h/api/stats/b?u=2", None, b"b", "user-2, stats").await;
        fill(s, "http://h/api/games?u=1", None, b"c", "user-1").await;
        assert_eq!(s.purge_matching(&Selector::Tag("user-1".into()), false), 2);
        assert_eq!(s.purge_matching(&Selector::Prefix("/api/stats/".into()), true), 1);
        let k = CacheKey::new("http://h/api/stats/b?u=2", "");
        let (m, _) = s.lookup(&k, &Span::inactive().handle()).await.unwrap().unwrap();
        assert!(!m.is_fresh(SystemTime::now()), "soft purge keeps the entry, stale");
    }

    #[tokio::test]
    async fn unfinished_or_oversized_fills_store_nothing_and_update_meta_never_panics() {
        let s = MemStorage::new(1 << 20, 100).leak();
        let key = CacheKey::new("http://h/cut", "");
        let mut m = s.get_miss_handler(&key, &meta(""), &Span::inactive().handle()).await.unwrap();
        m.write_body(Bytes::from_static(b"half"), false).await.unwrap();
        drop(m);
        assert_eq!(s.entries(), 0);
        let mut m = s.get_miss_handler(&key, &meta(""), &Span::inactive().handle()).await.unwrap();
        m.write_body(Bytes::from(vec![0u8; 101]), true).await.unwrap();
        assert!(m.finish().await.is_err());
        assert_eq!(s.entries(), 0);
        assert!(!s.update_meta(&key, &meta(""), &Span::inactive().handle()).await.unwrap());
    }

    #[tokio::test]
    async fn hits_rebuild_the_same_meta_without_decompressing() {
        let s = MemStorage::new(1 << 20, 1 << 20).leak();
        let now = SystemTime::now();
        let mut h = ResponseHeader::build(203, None).unwrap();
        h.set_reason_phrase(Some("Edge Made")).unwrap();
        h.insert_header("content-length", "4").unwrap();
        h.insert_header("X-Mixed-Case", "v").unwrap();
        // Several values of one field, in order, and a value with obs-text bytes.
        h.append_header("link", "</a.css>; rel=preload").unwrap();
        h.append_header("link", "</b.js>; rel=preload").unwrap();
        h.insert_header("x-latin1", http::HeaderValue::from_bytes(b"caf\xe9").unwrap()).unwrap();
        let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 7, 9, h);
        m.set_epoch_override(now - Duration::from_secs(5));
        let mut key = CacheKey::new("http://h/d", "");
        key.set_variance_key(pingora_cache::key::hash_key("gzip"));
        m.set_variance_key(pingora_cache::key::hash_key("gzip"));
        let mut w = s.get_miss_handler(&key, &m, &Span::inactive().handle()).await.unwrap();
        w.write_body(Bytes::from_static(b"body"), true).await.unwrap();
        w.finish().await.unwrap();
        let kept = s.inner.lock().lru.peek(&key.combined_bin()).unwrap().meta.clone();
        assert!(matches!(kept, StoredMeta::Decoded(_)), "kept decoded only");
        let (got, _) = s.lookup(&key, &Span::inactive().handle()).await.unwrap().unwrap();
        let (i, hb) = m.serialize().unwrap();
        let want = CacheMeta::deserialize(&i, &hb).unwrap();
        assert_eq!(got.fresh_until(), want.fresh_until());
        assert_eq!(got.created(), want.created());
        assert_eq!(got.provenance(), want.provenance());
        assert_eq!(got.epoch(), want.epoch());
        assert_eq!(got.age().as_secs(), want.age().as_secs());
        assert_eq!((got.stale_while_revalidate_sec(), got.stale_if_error_sec()), (7, 9));
        assert_eq!(got.variance(), want.variance());
        assert_eq!(got.response_header().headers, want.response_header().headers);
        let wire = |m: &CacheMeta| {
            let mut out = Vec::new();
            for (k, v) in m.response_header().headers.iter() {
                out.push(format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())));
            }
            out
        };
        assert_eq!(wire(&got), wire(&want));
        assert_eq!((got.response_header().status.as_u16(), got.response_header().get_reason_phrase()), (203, Some("Edge Made")));
        // What the shared tier and soft purges get back serialized is the same meta again.
        let (i2, h2) = kept.parts().unwrap();
        let again = CacheMeta::deserialize(&i2, &h2).unwrap();
        assert_eq!(again.response_header().headers, want.response_header().headers);
        assert_eq!((again.fresh_until(), again.variance()), (want.fresh_until(), want.variance()));
    }

    #[test]
    fn field_names_are_kept_once_and_the_table_is_bounded() {
        let names = Names::new(2);
        let a = http::HeaderName::from_static("x-a");
        let b = http::HeaderName::from_static("x-b");
        assert_eq!(names.intern(&a), Some(0));
        assert_eq!(names.intern(&http::header::ETAG), Some(1));
        assert_eq!(names.intern(&a), Some(0), "a name seen before keeps its index");
        assert_eq!(names.intern(&b), None, "full: the head is kept serialized instead");
        assert_eq!(names.table.load().as_slice(), &[a.clone(), http::header::ETAG]);
        // A head with a name the full table cannot take is not decoded.
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("x-a", "1").unwrap();
        assert!(Head::of(&h, &names).is_some());
        h.insert_header("x-b", "2").unwrap();
        assert!(Head::of(&h, &names).is_none());
    }

    #[tokio::test]
    async fn hits_share_the_stored_bytes() {
        let s = MemStorage::new(1 << 20, 1 << 20).leak();
        fill(s, "http://h/z", None, b"zero copy body", "").await;
        let k = CacheKey::new("http://h/z", "");
        let (_, mut h1) = s.lookup(&k, &Span::inactive().handle()).await.unwrap().unwrap();
        let (_, mut h2) = s.lookup(&k, &Span::inactive().handle()).await.unwrap().unwrap();
        let a = h1.read_body().await.unwrap().unwrap();
        let b = h2.read_body().await.unwrap().unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "same allocation");
        h1.seek(5, Some(9)).unwrap();
        assert_eq!(&h1.read_body().await.unwrap().unwrap()[..], b"copy");
    }
}
