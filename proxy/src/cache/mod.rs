//! The edge cache: storage, policy, status headers, conditional requests, invalidation, purge.
//! [`CacheLayer`] holds the process-wide parts Pingora wants as `&'static`.

pub(crate) mod conditional;
pub(crate) mod directives;
pub(crate) mod failed_fills;
pub(crate) mod invalidate;
pub(crate) mod key;
pub(crate) mod policy;
pub(crate) mod purge;
pub(crate) mod recompress;
pub(crate) mod revalidate;
pub(crate) mod status;
pub(crate) mod store;
pub(crate) mod url;

pub(crate) use store::redis::SharedTierMetrics;

/// The instruments of the tiers behind memory, registered whether or not they are configured
/// (their dashboard rows then read 0, not "no data").
#[derive(Clone)]
pub(crate) struct TierMetrics {
    pub(crate) shared: SharedTierMetrics,
    pub(crate) disk: store::disk::DiskTierMetrics,
}

impl TierMetrics {
    pub(crate) fn register(r: &prometheus::Registry) -> prometheus::Result<TierMetrics> {
        Ok(TierMetrics { shared: SharedTierMetrics::register(r)?, disk: store::disk::DiskTierMetrics::register(r)? })
    }
}

use crate::config::Config;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::{CacheablePredictor, Predictor};
use pingora_cache::CacheOptionOverrides;
use pingora_proxy::Session;
use store::memory::MemStorage;
use store::Store;

/// The gateway's one handle on the cache: it asks this, never a tier.
pub(crate) struct CacheLayer {
    /// Where entries live (the in-memory store by default).
    storage: &'static dyn Store,
    /// The memory tier (`storage` itself, or the first of its tiers): fresh hits are read
    /// from it directly ([`Self::fresh_in_memory`]).
    memory: &'static MemStorage,
    lock: &'static CacheKeyLockImpl,
    /// Remembers keys whose responses were uncacheable, so later requests for them skip the
    /// lookup and the lock: after one uncacheable fill, waiters are not all released to the
    /// origin at once again.
    predictor: &'static (dyn CacheablePredictor + Sync),
    lock_timeout: std::time::Duration,
    max_object: usize,
    pub config: crate::config::CacheConfig,
    pub rules: Vec<invalidate::Rule>,
    /// Fills that just failed, to answer the clients coalesced on them at once.
    failed_fills: std::sync::Arc<failed_fills::FailedFills>,
}

/// Where a hit came from, read in `cache_hit_filter`.
pub(crate) struct HitSource {
    /// The tier behind memory that answered, as `Cache-Status` names it (`detail=shared`,
    /// `detail=disk`); `None` for memory.
    pub(crate) tier: Option<&'static str>,
    /// Another replica is refreshing this stale entry: serve it stale, do not refresh too.
    pub(crate) refreshing_elsewhere: bool,
}

/// A fresh hit from memory may queue its stored copy's re-compression ([`recompress`]).
pub(crate) fn after_hit(
    layer: &CacheLayer,
    metrics: &std::sync::Arc<crate::telemetry::metrics::Metrics>,
    cfg: &crate::config::CompressionConfig,
    key: &pingora_cache::key::CacheKey,
    meta: &pingora_cache::CacheMeta,
    hit: &pingora_cache::storage::HitHandler,
) {
    if let Some(body) = store::tiered::memory_body(hit) {
        layer.after_memory_hit(metrics, cfg, key, meta, body);
    }
}

impl HitSource {
    pub(crate) fn of(hit: &pingora_cache::storage::HitHandler) -> HitSource {
        let (tier, refreshing_elsewhere) = store::tiered::hit_origin(hit);
        HitSource { tier: tier.detail(), refreshing_elsewhere }
    }
}

impl CacheLayer {
    /// Leaks the storage, lock and predictor: one per process, alive until exit.
    /// `tier_metrics`: the instruments of the tiers behind memory, registered whether or not they are
    /// configured (their dashboard rows then read 0, not "no data").
    pub(crate) fn new(cfg: &Config, tier_metrics: TierMetrics) -> CacheLayer {
        let c = &cfg.cache;
        let lock_timeout = c.lock_timeout.get();
        let memory = MemStorage::new(c.max_size.bytes() as usize, c.max_object_size.bytes() as usize)
            .indexing_params(cfg.invalidation.iter().filter_map(|r| r.match_param.clone()))
            .leak();
        // Behind memory, in the order asked on a miss: this machine's disk, then Redis.
        let mut tiers: Vec<std::sync::Arc<dyn store::Tier>> = Vec::new();
        if let Some(path) = &c.disk.path {
            match store::disk::DiskTier::open(&c.disk, path, tier_metrics.disk) {
                Ok(disk) => tiers.push(std::sync::Arc::new(store::disk::LocalDisk(disk))),
                Err(e) => crate::telemetry::events::emit(
                    "error",
                    "disk_cache_unavailable",
                    &[("error", &e.to_string()), ("fallback", "without the disk tier")],
                ),
            }
        }
        if let Some(url) = &c.shared.url {
            let local = tiers.clone();
            match store::redis::RedisTier::start(&c.shared, url, lock_timeout, memory, local, tier_metrics.shared) {
                Ok(l2) => tiers.push(std::sync::Arc::new(store::redis::SharedTier(l2))),
                Err(e) => crate::telemetry::events::emit(
                    "error",
                    "shared_cache_unavailable",
                    &[("error", &e.to_string()), ("fallback", "without the shared tier")],
                ),
            }
        }
        let storage: &'static dyn Store = if tiers.is_empty() { memory } else { store::tiered::Tiered { l1: memory, tiers }.leak() };
        CacheLayer {
            storage,
            memory,
            lock: Box::leak(CacheLock::new_boxed(lock_timeout)),
            // Only what the response says is remembered: a client's `no-store` or an
            // `Authorization` request must not make the URL skip the lock for everyone.
            predictor: Box::leak(Box::new(Predictor::<16>::new(256, Some(policy::Unstorable::is_request_side)))),
            lock_timeout,
            max_object: c.max_object_size.bytes() as usize,
            config: c.clone(),
            rules: cfg.invalidation.iter().map(invalidate::Rule::new).collect(),
            failed_fills: std::sync::Arc::default(),
        }
    }

    /// The same storage, lock and predictor (the stored entries stay) under a reloaded
    /// configuration's routes, rules and policy. Sizes and the lock timeout stay as started.
    pub(crate) fn reconfigured(&self, cfg: &Config) -> CacheLayer {
        let mut config = cfg.cache.clone();
        config.max_size = self.config.max_size;
        config.max_object_size = self.config.max_object_size;
        config.lock_timeout = self.config.lock_timeout;
        CacheLayer {
            storage: self.storage,
            memory: self.memory,
            lock: self.lock,
            predictor: self.predictor,
            lock_timeout: self.lock_timeout,
            max_object: self.max_object,
            config,
            rules: cfg.invalidation.iter().map(invalidate::Rule::new).collect(),
            failed_fills: self.failed_fills.clone(),
        }
    }

    /// The store, for Pingora's `enable` and the invalidation rules.
    pub(crate) fn store(&self) -> &'static dyn Store {
        self.storage
    }

    pub(crate) fn stats(&self) -> store::StoreStats {
        self.storage.stats()
    }

    pub(crate) fn tier_stats(&self) -> Vec<store::TierStats> {
        self.storage.tier_stats()
    }

    pub(crate) fn purge_matching(&self, sel: &purge::Selector, soft: bool) -> usize {
        self.storage.purge_matching(sel, soft)
    }

    pub(crate) fn purge_url(&self, url: &url::CacheUrl, soft: bool) -> usize {
        self.storage.purge_key(&key::cache_key(url), soft)
    }

    /// The origin answered a fill: whatever failure was remembered for it is over.
    pub(crate) fn on_origin_answer(&self, primary: &pingora_cache::key::HashBinary) {
        self.failed_fills.clear(primary);
    }

    /// The origin failed a fill (502/504): the clients waiting on it get the same at once.
    pub(crate) fn on_origin_failure(&self, primary: pingora_cache::key::HashBinary, status: u16, detail: &'static str) {
        self.failed_fills.record(primary, failed_fills::Failure { status, detail });
    }

    /// A fill for `primary` that failed a moment ago, for a client that waited on it.
    pub(crate) fn recent_failure(&self, primary: &pingora_cache::key::HashBinary) -> Option<failed_fills::Failure> {
        self.failed_fills.recent(primary)
    }

    /// A request that may hold a fill lock ended without storing: see [`Store::request_ended`].
    pub(crate) fn request_ended(&self, primary: &pingora_cache::key::HashBinary) {
        self.storage.request_ended(primary);
    }

    /// A fresh entry of the memory tier for this request, found as Pingora's lookup finds
    /// one: the key's primary slot, then, when the stored response varies and this request
    /// is another variant, the variant's own slot, valid only if stored after the primary
    /// (the primary's provenance is the tombstone of older variants). `key` ends as Pingora
    /// leaves it (the variance set for a variant slot). None sends the request down
    /// Pingora's own path: nothing fresh in memory, or a key the predictor remembers as
    /// uncacheable (Pingora skips the lookup for those).
    pub(crate) fn fresh_in_memory(
        &self,
        key: &mut pingora_cache::CacheKey,
        variance: impl Fn(&pingora_cache::CacheMeta) -> Option<pingora_cache::key::HashBinary>,
        now: std::time::SystemTime,
    ) -> Option<(pingora_cache::CacheMeta, bytes::Bytes)> {
        use pingora_cache::key::CacheHashKey as _;
        if !self.predictor.cacheable_prediction(key) {
            return None;
        }
        let (meta, body) = self.memory.get(&key.combined_bin()).ok()??;
        let (meta, body) = match variance(&meta) {
            // With tiers behind memory, Pingora's lookup of a stale primary asks them for a
            // fresher one (another replica's refresh), whose provenance and `Vary` then pick
            // the variant: only a fresh primary is taken as it is here.
            Some(_) if self.has_tiers() && !meta.is_fresh(now) => return None,
            Some(v) if meta.variance() != Some(v) => {
                key.set_variance_key(v);
                let (variant, body) = self.memory.get(&key.combined_bin()).ok()??;
                if variant.created() < meta.provenance() || variant.variance() != Some(v) {
                    return None;
                }
                (variant, body)
            }
            _ => (meta, body),
        };
        meta.is_fresh(now).then_some((meta, body))
    }

    /// Whether tiers (disk, Redis) stand behind the memory one.
    fn has_tiers(&self) -> bool {
        !std::ptr::addr_eq(self.storage as *const dyn Store, self.memory as *const MemStorage)
    }

    /// A fresh hit answered from memory by [`Self::fresh_in_memory`] may queue its stored
    /// copy's re-compression, as one through Pingora does ([`after_hit`]).
    pub(crate) fn after_memory_hit(
        &self,
        metrics: &std::sync::Arc<crate::telemetry::metrics::Metrics>,
        cfg: &crate::config::CompressionConfig,
        key: &pingora_cache::key::CacheKey,
        meta: &pingora_cache::CacheMeta,
        body: &bytes::Bytes,
    ) {
        if cfg.recompress {
            let max = usize::try_from(cfg.recompress_max_size.0).unwrap_or(usize::MAX);
            recompress::on_hit(self.storage, metrics, key, meta, body, max);
        }
    }

    pub(crate) fn enable(&self, session: &mut Session) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.lock_timeout);
        session.cache.enable(self.storage, None, Some(self.predictor), Some(self.lock), Some(overrides));
        session.cache.set_max_file_size_bytes(self.max_object);
    }
}
