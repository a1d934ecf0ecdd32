//! A stored response as the stores keep it: its meta (decoded when `CacheMeta::new` can
//! express it, else serialized), its head in two allocations with interned field names, its
//! body, and what purges select it by; and the codec between that and Pingora's `CacheMeta`.

use bytes::Bytes;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use pingora_error::Result;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Per-entry bookkeeping counted against the budget on top of headers and body: the LRU
/// node and its slot, the URL, path and variant indexes, allocator rounding. Measured with
/// `mem-bench` (resident memory per entry minus what the other terms count: about 500 bytes
/// once metas are kept decoded only, in their compact form, and the path index points into
/// the URL instead of copying the path).
pub(in crate::cache::store) const ENTRY_OVERHEAD: usize = 520;

/// A header Portier's policy puts in the stored meta to ask for an edge-generated ETag; the
/// storage replaces it with `ETag: "<hash of the body>"` once the whole body is known.
pub(crate) const GENERATE_ETAG_MARKER: &str = "x-portier-generate-etag";

/// A stored meta's fields, kept decoded so a hit rebuilds its `CacheMeta` without
/// decompressing the header (the serialized form stays the source of truth). Only metas that
/// `CacheMeta::new` can express exactly get one: provenance equal to creation time, and an
/// epoch override whenever `updated` differs from `created`.
pub(in crate::cache::store) struct Decoded {
    pub(in crate::cache::store) fresh_until: SystemTime,
    pub(in crate::cache::store) created: SystemTime,
    pub(in crate::cache::store) swr: u32,
    pub(in crate::cache::store) sie: u32,
    pub(in crate::cache::store) variance: Option<HashBinary>,
    pub(in crate::cache::store) epoch_override: Option<SystemTime>,
    pub(in crate::cache::store) header: Head,
}

/// The serialized meta without the spare capacity its encoder left (a `Bytes` made from a
/// `Vec` keeps the whole capacity).
pub(in crate::cache::store) fn exact(v: Vec<u8>) -> Bytes {
    Bytes::from(v.into_boxed_slice())
}

/// Field names of stored heads, each kept once for the whole cache: an entry holds a 2-byte
/// index per field instead of a 32-byte `HeaderName` (~250 bytes per entry). Hits read the
/// table without a lock; a name never seen before is added under the mutex (fills only).
/// Bounded: past `MAX_NAMES` distinct names (an origin inventing names), new heads are kept
/// serialized instead.
pub(in crate::cache::store) struct Names {
    pub(in crate::cache::store) max: usize,
    pub(in crate::cache::store) index: parking_lot::Mutex<HashMap<http::HeaderName, u16>>,
    pub(in crate::cache::store) table: arc_swap::ArcSwap<Vec<http::HeaderName>>,
}

pub(in crate::cache::store) const MAX_NAMES: usize = 4096;

impl Names {
    pub(in crate::cache::store) fn new(max: usize) -> Names {
        let max = max.min(usize::from(u16::MAX));
        Names { max, index: parking_lot::Mutex::new(HashMap::new()), table: arc_swap::ArcSwap::from_pointee(Vec::new()) }
    }

    pub(in crate::cache::store) fn global() -> &'static Names {
        static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| Names::new(MAX_NAMES))
    }

    pub(in crate::cache::store) fn intern(&self, name: &http::HeaderName) -> Option<u16> {
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
pub(in crate::cache::store) struct Head {
    pub(in crate::cache::store) status: http::StatusCode,
    pub(in crate::cache::store) version: http::Version,
    /// Only when the origin's differs from the status code's canonical phrase.
    pub(in crate::cache::store) reason: Option<Box<str>>,
    pub(in crate::cache::store) fields: Box<[(u16, u32)]>,
    pub(in crate::cache::store) values: Bytes,
}

impl Head {
    /// None when a name cannot be interned (the table is full).
    pub(in crate::cache::store) fn of(h: &pingora_http::ResponseHeader, names: &Names) -> Option<Head> {
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
    pub(in crate::cache::store) fn header(&self, names: &Names) -> pingora_http::ResponseHeader {
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
    pub(in crate::cache::store) fn weight(&self) -> usize {
        self.values.len() + self.fields.len() * std::mem::size_of::<(u16, u32)>() + self.reason.as_ref().map_or(0, |r| r.len())
    }
}

/// An entry's meta as kept: decoded when `CacheMeta::new` expresses it exactly (a hit then
/// rebuilds it without decompressing anything), else serialized. Never both: the serialized
/// form of a decoded meta is made again when something needs it (the shared tier, a soft purge).
#[derive(Clone)]
pub(in crate::cache::store) enum StoredMeta {
    Decoded(Arc<Decoded>),
    /// Boxed: two `Bytes` inline would make every entry (and LRU node) 56 bytes larger.
    Serialized(Box<(Bytes, Bytes)>),
}

impl StoredMeta {
    pub(in crate::cache::store) fn of(meta: &CacheMeta) -> Result<StoredMeta> {
        match Decoded::of(meta) {
            Some(d) => Ok(StoredMeta::Decoded(d)),
            None => {
                let (i, h) = meta.serialize()?;
                Ok(StoredMeta::Serialized(Box::new((exact(i), exact(h)))))
            }
        }
    }

    /// `parts` (the meta serialized) are kept only when the meta cannot be kept decoded.
    pub(in crate::cache::store) fn from_parts(parts: (Bytes, Bytes), decoded: Option<Arc<Decoded>>) -> StoredMeta {
        match decoded {
            Some(d) => StoredMeta::Decoded(d),
            None => StoredMeta::Serialized(Box::new(parts)),
        }
    }

    pub(in crate::cache::store) fn meta(&self) -> Result<CacheMeta> {
        match self {
            StoredMeta::Decoded(d) => Ok(d.rebuild()),
            StoredMeta::Serialized(p) => CacheMeta::deserialize(&p.0, &p.1),
        }
    }

    pub(in crate::cache::store) fn parts(&self) -> Result<(Bytes, Bytes)> {
        match self {
            StoredMeta::Decoded(d) => {
                let (i, h) = d.rebuild().serialize()?;
                Ok((exact(i), exact(h)))
            }
            StoredMeta::Serialized(p) => Ok((p.0.clone(), p.1.clone())),
        }
    }

    /// Bytes counted against the budget.
    pub(in crate::cache::store) fn weight(&self) -> usize {
        match self {
            StoredMeta::Decoded(d) => d.weight(),
            StoredMeta::Serialized(p) => p.0.len() + p.1.len(),
        }
    }

    /// This very meta, not one stored since (a refill or another rewrite replaced it).
    pub(in crate::cache::store) fn same(&self, other: &StoredMeta) -> bool {
        match (self, other) {
            (StoredMeta::Decoded(a), StoredMeta::Decoded(b)) => Arc::ptr_eq(a, b),
            (StoredMeta::Serialized(a), StoredMeta::Serialized(b)) => a.0.as_ptr() == b.0.as_ptr(),
            _ => false,
        }
    }
}

impl Decoded {
    pub(in crate::cache::store) fn of(meta: &CacheMeta) -> Option<Arc<Decoded>> {
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
    pub(in crate::cache::store) fn weight(&self) -> usize {
        std::mem::size_of::<Decoded>() + 32 + self.header.weight()
    }

    pub(in crate::cache::store) fn rebuild(self: &Arc<Self>) -> CacheMeta {
        let mut m = CacheMeta::new(self.fresh_until, self.created, self.swr, self.sie, recent_head(self));
        if let Some(v) = self.variance {
            m.set_variance_key(v);
        }
        if let Some(e) = self.epoch_override {
            m.set_epoch_override(e);
        }
        m
    }
}

/// How many built heads each thread keeps ([`recent_head`]).
const RECENT_HEADS: usize = 32;

/// The head of `d` as a `ResponseHeader`: a copy of one this thread built lately from the
/// same decoded meta, or built now. Building it (a `HeaderMap` filled field by field, each
/// name hashed, each value checked) was ~5,000 instructions of every hit; a copy of the built
/// map is ~1,300. Keyed by the `Arc` itself, held: a meta is never changed in place (a
/// refresh, soft purge or re-encoding stores a new one), so the same allocation is the same
/// head, and holding it means its address cannot be reused by another. Bounded: a few dozen
/// heads per thread, and the metas they hold alive past their eviction.
fn recent_head(d: &Arc<Decoded>) -> pingora_http::ResponseHeader {
    use std::cell::RefCell;
    /// The heads, each with the meta it was built from, and the slot the next one replaces.
    type Heads = (Vec<(Arc<Decoded>, pingora_http::ResponseHeader)>, usize);
    thread_local! {
        static HEADS: RefCell<Heads> = const { RefCell::new((Vec::new(), 0)) };
    }
    HEADS.with(|heads| {
        let mut heads = heads.borrow_mut();
        if let Some((_, head)) = heads.0.iter().find(|(k, _)| Arc::ptr_eq(k, d)) {
            return head.clone();
        }
        let head = d.header.header(Names::global());
        let (list, next) = &mut *heads;
        if list.len() < RECENT_HEADS {
            list.push((d.clone(), head.clone()));
        } else {
            list[*next] = (d.clone(), head.clone());
            *next = (*next + 1) % RECENT_HEADS;
        }
        head
    })
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(in crate::cache::store) meta: StoredMeta,
    pub(in crate::cache::store) body: Bytes,
    pub(in crate::cache::store) primary: HashBinary,
    /// `scheme://host/path?query`, for URL and prefix purges.
    pub(in crate::cache::store) url: Arc<str>,
    pub(in crate::cache::store) tags: Box<[String]>,
    pub(in crate::cache::store) size: usize,
}

impl Entry {
    /// An entry and the bytes it is counted for: its meta as kept, body, URL, and the
    /// bookkeeping around them (LRU node, indexes).
    pub(in crate::cache::store) fn new(meta: StoredMeta, body: Bytes, primary: HashBinary, url: Arc<str>, tags: Box<[String]>) -> Entry {
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
