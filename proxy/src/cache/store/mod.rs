//! The seam between the cache and where entries live. Pingora asks a [`Storage`] for lookups
//! and fills; Portier also needs purges by URL, prefix and tag, and sizes for its metrics.
//! A shared or tiered store (Redis behind the memory one) is one new implementation of
//! [`Store`]; nothing else changes. [`memory::MemStorage`] is the default.
//!
//! `entry.rs`: what a stored response is, and its codec; `memory/`: the memory tier (LRU,
//! budget, indexes); `redis.rs`: the shared tier; `disk.rs`: the disk tier; `tiered.rs`:
//! memory in front of the disk and Redis tiers.

pub(crate) mod disk;
pub(crate) mod entry;
pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod tiered;

use crate::cache::purge::Selector;
use bytes::Bytes;
use pingora_cache::key::CacheHashKey;
use pingora_cache::key::HashBinary;
use pingora_cache::Storage;
use serde::{Deserialize, Serialize};

/// Counts a store keeps for `/metrics` and `/cache/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StoreStats {
    pub entries: usize,
    /// Bytes held, headers, bodies and bookkeeping.
    pub bytes: usize,
    /// The byte budget.
    pub capacity: usize,
    pub max_object: usize,
    pub evictions: u64,
}

pub(crate) trait Store: Storage + Sync + Send {
    /// Purges what `sel` selects, every Vary variant included; `soft` marks entries stale
    /// instead of removing them. Returns how many entries were affected.
    fn purge_matching(&self, sel: &Selector, soft: bool) -> usize;

    /// Purges every variant of one key.
    fn purge_key(&self, key: &dyn CacheHashKey, soft: bool) -> usize;

    fn stats(&self) -> StoreStats;

    /// The tiers behind memory that report a size (the disk tier), for `/cache/stats` and `/ui`.
    fn tier_stats(&self) -> Vec<TierStats> {
        Vec::new()
    }

    /// The memory tier's copy of a variant re-encoded smaller ([`memory::MemStorage::reencode`]);
    /// false when the entry changed meanwhile and nothing was replaced.
    fn reencode(&self, _key: &pingora_cache::key::CacheKey, _stored: &Bytes, _etag: Option<http::HeaderValue>, _body: Bytes) -> bool {
        false
    }

    /// A request that took a fill lock for `primary` ended without storing anything (not
    /// storable, the origin failed, the client left): a tier holding a lock others wait on
    /// (the shared tier's, across replicas) gives it up now.
    fn request_ended(&self, _primary: &pingora_cache::key::HashBinary) {}
}

/// A tier's size, as `/cache/stats` and `/ui` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct TierStats {
    pub tier: &'static str,
    pub entries: usize,
    pub bytes: u64,
    pub capacity: u64,
}

/// Milliseconds since the Unix epoch (0 before it), as the tiers store times.
pub(super) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a purge selects, as every tier (and, through the shared one, every replica) applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PurgeScope {
    Select(Selector),
    /// Every variant of one URL (by primary key).
    Primary(String),
    /// One stored variant.
    Combined(String),
}

/// A tier behind the memory one (Redis today): what [`tiered::Tiered`] asks, in order, on a
/// memory miss, and tells of every fill, refresh and purge. Values travel in the shared
/// encoding ([`redis::decode`]) and are checked whole by `Tiered` before anything is served:
/// a tier only stores and returns bytes. A disk tier is one more implementation.
#[async_trait::async_trait]
pub(crate) trait Tier: Send + Sync {
    /// What a hit from this tier is reported as (`Cache-Status` detail, metrics).
    fn provenance(&self) -> memory::HitTier;

    /// Whether asking it now can help (a disconnected Redis cannot).
    fn available(&self) -> bool {
        true
    }

    /// A memory miss: the stored value, or `None` (the next tier, then the origin). A tier
    /// that coordinates fills across processes may take a fill lock here, released by
    /// [`Self::put`], [`Self::release`] or [`Self::release_later`].
    async fn get(&self, combined: HashBinary, primary: HashBinary) -> Option<Bytes>;

    /// A stale entry in memory, for a tier that coordinates refreshes: `Some((this process
    /// refreshes it, a fresher value if one is stored))`; `None` when it does not.
    async fn claim_refresh(&self, _combined: &HashBinary, _primary: &HashBinary) -> Option<(bool, Option<Bytes>)> {
        None
    }

    /// A fill started for `combined`.
    fn filling(&self, _combined: &HashBinary) {}

    /// A complete entry (a fill, or a revalidation's new freshness).
    async fn put(&self, combined: &HashBinary, primary: &HashBinary, entry: &memory::Entry);

    /// The fill for `combined` failed: its lock goes now.
    async fn release(&self, _combined: &HashBinary) {}

    /// [`Self::release`] from a place that cannot wait (a dropped fill).
    fn release_later(&self, _combined: HashBinary) {}

    /// A request ended without storing: the locks it took for that URL go.
    fn release_primary(&self, _primary: &HashBinary) {}

    /// A value it returned was not whole: never served; the tier deletes it.
    fn discard(&self, combined: &HashBinary, value: Bytes);

    /// A purge (`soft`: marked stale instead of removed).
    fn purge(&self, scope: PurgeScope, soft: bool);

    /// Its size, when it keeps one here (Redis's is Redis's).
    fn stats(&self) -> Option<TierStats> {
        None
    }
}
