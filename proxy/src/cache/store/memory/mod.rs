//! Portier's in-memory cache storage for Pingora: a byte budget that counts headers and body,
//! strict LRU eviction (the `lru` crate), a per-object limit, zero-copy hits, every Vary
//! variant of a URL purged together, tags, and soft purge.
//!
//! Why LRU and not TinyUFO: TinyUFO weights are `u16`, so a byte budget needs scaled units,
//! and its admission filter can refuse a freshly filled object that readers wait for. A strict
//! LRU with exact byte accounting is predictable and testable; one mutex guards it because
//! every operation under it is O(1) or, for purges, costs what it matches (ordered indexes by
//! URL and by path), and soft purges rewrite metas outside it.

use crate::cache::purge::Selector;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

mod index;

pub(crate) use super::entry::Entry;
pub(crate) use super::entry::GENERATE_ETAG_MARKER;
use super::entry::{exact, Decoded, StoredMeta};
use index::Index;

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

    /// What a lookup finds under `combined`: its meta and body (shared, not copied). A use:
    /// the entry moves to the front of the LRU order.
    pub(crate) fn get(&self, combined: &HashBinary) -> Result<Option<(CacheMeta, Bytes)>> {
        let found = self.inner.lock().lru.get(combined).map(|e| (e.meta.clone(), e.body.clone()));
        let Some((stored, body)) = found else { return Ok(None) };
        Ok(Some((stored.meta()?, body)))
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

    /// Replaces a stored variant's body with `body`, a smaller encoding of the same content
    /// (see [`crate::cache::recompress`]), and its validator with `etag`, when the entry is
    /// still the copy whose body is `stored` (the same allocation) with the meta it had when
    /// read here: not purged, expired, refreshed or refilled since (checked again under the
    /// lock). `Content-Length` follows the new body.
    pub(crate) fn reencode(&self, combined: &HashBinary, stored: &Bytes, etag: Option<http::HeaderValue>, body: Bytes) -> bool {
        let same_body = |e: &Entry| e.body.as_ptr() == stored.as_ptr() && e.body.len() == stored.len();
        let Some(cur) = self.entry(combined).filter(|e| same_body(e)) else { return false };
        let Ok(mut meta) = cur.meta.meta() else { return false };
        let h = meta.response_header_mut();
        if let Some(tag) = etag {
            let _ = h.insert_header(http::header::ETAG, tag);
        }
        let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len());
        let Ok(new_meta) = StoredMeta::of(&meta) else { return false };
        let new = Entry::new(new_meta, body, cur.primary, cur.url.clone(), cur.tags.clone());
        let mut inner = self.inner.lock();
        if !inner.lru.peek(combined).is_some_and(|e| same_body(e) && e.meta.same(&cur.meta)) {
            return false;
        }
        // In place, where it was in the LRU order (the replacement is not a use), keeping
        // what else the entry is counted for (its URL, the parameter index).
        let Some(e) = inner.lru.peek_mut(combined) else { return false };
        let old = e.size;
        let size = old - e.body.len() - e.meta.weight() + new.body.len() + new.meta.weight();
        *e = Entry { size, ..new };
        inner.bytes = inner.bytes - old + size;
        true
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
        self.expire_keys_once(keys, false)
    }

    fn expire_keys_once(&self, keys: &[HashBinary], retried: bool) -> usize {
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
        let mut changed = Vec::new();
        let mut n = 0;
        {
            let mut inner = self.inner.lock();
            for (k, old, new) in rewritten {
                let unchanged = inner.lru.peek(&k).is_some_and(|e| e.meta.same(&old));
                if unchanged && inner.replace_meta(&k, new) {
                    n += 1;
                } else if inner.lru.contains(&k) {
                    changed.push(k);
                }
            }
        }
        // Changed between the two locks (a refill, a re-encoded copy): expired again, once;
        // a fresh refill expired too is one revalidation, a re-encoded copy left fresh would
        // be a purge lost.
        if !changed.is_empty() && !retried {
            n += self.expire_keys_once(&changed, true);
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

impl super::Store for MemStorage {
    fn purge_matching(&self, sel: &Selector, soft: bool) -> usize {
        MemStorage::purge_matching(self, sel, soft)
    }

    fn purge_key(&self, key: &dyn CacheHashKey, soft: bool) -> usize {
        MemStorage::purge_key(self, key, soft)
    }

    fn stats(&self) -> super::StoreStats {
        let inner = self.inner.lock();
        super::StoreStats {
            entries: inner.lru.len(),
            bytes: inner.bytes,
            capacity: self.max_bytes,
            max_object: self.max_object,
            evictions: self.stats.evictions.load(Ordering::Relaxed),
        }
    }

    fn reencode(&self, key: &CacheKey, stored: &Bytes, etag: Option<http::HeaderValue>, body: Bytes) -> bool {
        MemStorage::reencode(self, &key.combined_bin(), stored, etag, body)
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
        let Some((meta, body)) = self.get(&key.combined_bin())? else {
            return Ok(None);
        };
        Ok(Some((meta, Box::new(Hit::new(body, HitTier::Memory)))))
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
    /// The body does not change, so its framing and validator are the stored entry's as it is
    /// now (the meta given was read before; the entry may have been re-encoded since).
    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let combined = key.combined_bin();
        let Some(cur) = self.entry(&combined) else { return Ok(false) };
        let mut meta = StoredMeta::of(meta)?.meta()?;
        let now = cur.meta.meta()?;
        let h = meta.response_header_mut();
        for name in [http::header::ETAG, http::header::CONTENT_LENGTH] {
            h.remove_header(&name);
            for v in now.response_header().headers.get_all(&name) {
                let _ = h.append_header(name.clone(), v.clone());
            }
        }
        let stored = StoredMeta::of(&meta)?;
        let mut inner = self.inner.lock();
        if !inner.lru.peek(&combined).is_some_and(|e| e.body.as_ptr() == cur.body.as_ptr() && e.meta.same(&cur.meta)) {
            return Ok(false);
        }
        Ok(inner.replace_meta(&combined, stored))
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
pub(crate) enum HitTier {
    Memory,
    /// Read from the shared tier (Redis) on a memory miss.
    Shared,
    /// Read from the disk tier on a memory miss.
    Disk,
}

impl HitTier {
    /// The `Cache-Status` detail of a hit from this tier.
    pub(crate) fn detail(self) -> Option<&'static str> {
        match self {
            HitTier::Memory => None,
            HitTier::Shared => Some("shared"),
            HitTier::Disk => Some("disk"),
        }
    }
}

/// A hit: slices of the stored `Bytes`, no copy.
pub(crate) struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    pub(crate) tier: HitTier,
    /// Stale, and another replica holds the shared refresh lock.
    pub(crate) refreshing_elsewhere: bool,
}

impl Hit {
    pub(crate) fn new(body: Bytes, tier: HitTier) -> Hit {
        let end = body.len();
        Hit { body, start: 0, end, done: false, tier, refreshing_elsewhere: false }
    }

    /// The stored body, whole (what identifies the stored copy).
    pub(crate) fn stored_body(&self) -> &Bytes {
        &self.body
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
    use crate::cache::store::entry::{Head, Names};
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

    /// The re-compression's replacement: only the very copy it read, never a refill; and a
    /// revalidation that read the entry before it keeps the new body's framing and validator.
    #[tokio::test]
    async fn a_reencoded_copy_replaces_only_its_own_entry_and_keeps_its_framing() {
        let s = MemStorage::new(1 << 20, 1 << 20).leak();
        let key = CacheKey::new("http://h/r", "");
        let combined = key.combined_bin();
        fill(s, "http://h/r", None, b"first copy, quick level", "").await;
        let first = s.entry(&combined).unwrap();
        let (old_meta, _) = s.lookup(&key, &Span::inactive().handle()).await.unwrap().unwrap();
        fill(s, "http://h/r", None, b"first copy, quick level", "").await;
        assert!(!s.reencode(&combined, &first.body, None, Bytes::from_static(b"smaller")), "a refill with the same bytes is another copy");
        let refilled = s.entry(&combined).unwrap();
        let before = s.size();
        let etag = http::HeaderValue::from_static("\"x-max\"");
        assert!(s.reencode(&combined, &refilled.body, Some(etag.clone()), Bytes::from_static(b"smaller")));
        let now = s.entry(&combined).unwrap();
        assert!(s.size() < before && s.size() == now.size(), "the one entry's new size is what is counted");
        assert_eq!(&now.body[..], b"smaller");
        assert!(!s.reencode(&combined, &refilled.body, None, Bytes::from_static(b"x")), "once");
        // A 304 whose lookup came before: merged onto the old meta, stored with the new framing.
        assert!(s.update_meta(&key, &old_meta, &Span::inactive().handle()).await.unwrap());
        let (meta, _) = s.lookup(&key, &Span::inactive().handle()).await.unwrap().unwrap();
        let h = &meta.response_header().headers;
        assert_eq!((h.get("content-length").unwrap(), h.get("etag")), (&http::HeaderValue::from(7), Some(&etag)));
    }

    #[tokio::test]
    async fn a_head_built_before_a_change_is_not_served_after_it() {
        let s = MemStorage::new(1 << 20, 1 << 20).leak();
        let key = CacheKey::new("http://h/head", "");
        let combined = key.combined_bin();
        fill(s, "http://h/head", None, b"the first copy", "").await;
        for _ in 0..2 {
            // Built, then copied from this thread's recent heads.
            let (meta, _) = s.get(&combined).unwrap().unwrap();
            assert_eq!(meta.response_header().headers.get("content-length").unwrap(), "14");
        }
        let stored = s.entry(&combined).unwrap();
        let etag = http::HeaderValue::from_static("\"smaller\"");
        assert!(s.reencode(&combined, &stored.body, Some(etag.clone()), Bytes::from_static(b"smaller")));
        let (meta, body) = s.get(&combined).unwrap().unwrap();
        let h = &meta.response_header().headers;
        assert_eq!(
            (h.get("content-length").unwrap(), h.get("etag"), &body[..]),
            (&http::HeaderValue::from(7), Some(&etag), &b"smaller"[..])
        );
        // Heads of many other entries push this one out; it is built again, the same.
        for i in 0..40 {
            let url = format!("http://h/other{i}");
            fill(s, &url, None, b"x", "").await;
            let _ = s.get(&CacheKey::new(url.as_str(), "").combined_bin()).unwrap();
        }
        let (again, _) = s.get(&combined).unwrap().unwrap();
        assert_eq!(again.response_header().headers.get("etag"), Some(&etag));
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
