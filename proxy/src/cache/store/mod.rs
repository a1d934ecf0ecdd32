//! The seam between the cache and where entries live. Pingora asks a [`Storage`] for lookups
//! and fills; Portier also needs purges by URL, prefix and tag, and sizes for its metrics.
//! A shared or tiered store (Redis behind the memory one) is one new implementation of
//! [`Store`]; nothing else changes. [`memory::MemStorage`] is the default.
//!
//! `entry.rs`: what a stored response is, and its codec; `memory/`: the memory tier (LRU,
//! budget, indexes); `redis.rs`: the shared tier; `tiered.rs`: memory in front of Redis.

pub(crate) mod entry;
pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod tiered;

use crate::cache::purge::Selector;
use pingora_cache::key::CacheHashKey;
use pingora_cache::Storage;

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

    /// A request that took a fill lock for `primary` ended without storing anything (not
    /// storable, the origin failed, the client left): a tier holding a lock others wait on
    /// (the shared tier's, across replicas) gives it up now.
    fn request_ended(&self, _primary: &pingora_cache::key::HashBinary) {}
}
