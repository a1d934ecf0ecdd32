//! The memory tier in front of the shared one: what Pingora sees as the storage when
//! `[cache.shared]` is set. Hits come from memory; a memory miss asks Redis (one round trip)
//! before the origin; fills, revalidations and purges reach both tiers and every replica.

use super::memory::{Fill, Hit, HitTier, MemStorage};
use super::redis::decode;
use super::{PurgeScope, Store, StoreStats, Tier};
use crate::cache::purge::Selector;
use bytes::Bytes;
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::storage::{HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheMeta, Storage};
use pingora_error::Result;
use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

/// Memory in front of the tiers behind it, asked in their order.
pub(crate) struct Tiered {
    pub(crate) l1: &'static MemStorage,
    pub(crate) tiers: Vec<Arc<dyn Tier>>,
}

/// Which tier answered a hit, and whether another replica is refreshing it; read in
/// `cache_hit_filter`.
pub(crate) fn hit_origin(hit: &HitHandler) -> (HitTier, bool) {
    hit.as_any().downcast_ref::<Hit>().map_or((HitTier::Memory, false), |h| (h.tier, h.refreshing_elsewhere))
}

/// The stored body of a hit answered from memory.
pub(crate) fn memory_body(hit: &HitHandler) -> Option<&Bytes> {
    hit.as_any().downcast_ref::<Hit>().filter(|h| h.tier == HitTier::Memory).map(Hit::stored_body)
}

impl Tiered {
    pub(crate) fn leak(self) -> &'static Tiered {
        Box::leak(Box::new(self))
    }

    fn purge_tiers(&self, scope: PurgeScope, soft: bool) {
        for tier in &self.tiers {
            tier.purge(scope.clone(), soft);
        }
    }

    /// A value read from Redis, served and kept in memory for the next hits, once checked
    /// whole: its lengths and checksum, a meta that parses, and a body as long as its
    /// `Content-Length` says (a short one would stall the client's keep-alive connection).
    /// A bad value is a miss, counted and deleted.
    fn serve(&self, tier: &dyn Tier, key: &CacheKey, value: &Bytes) -> Option<(CacheMeta, HitHandler)> {
        let checked = decode(value).and_then(|(internal, header, body)| {
            let (meta, entry) = self.l1.entry_from_parts(key, internal, header, body).ok()?;
            let declared = crate::edge::target::content_length(&meta.response_header().headers);
            declared.is_none_or(|n| n == entry.body().len() as u64).then_some((meta, entry))
        });
        let Some((meta, entry)) = checked else {
            tier.discard(&key.combined_bin(), value.clone());
            return None;
        };
        let body = entry.body().clone();
        self.l1.admit(key.combined_bin(), entry);
        Some((meta, Box::new(Hit::new(body, tier.provenance()))))
    }
}

#[async_trait::async_trait]
impl Storage for Tiered {
    async fn lookup(&'static self, key: &CacheKey, trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        if let Some((meta, mut hit)) = self.l1.lookup(key, trace).await? {
            if meta.is_fresh(SystemTime::now()) {
                return Ok(Some((meta, hit)));
            }
            // Stale here: another replica may have refreshed it already, or be refreshing it.
            let (combined, primary) = (key.combined_bin(), key.primary_bin());
            for tier in self.tiers.iter().filter(|t| t.available()) {
                let Some((mine, value)) = tier.claim_refresh(&combined, &primary).await else { continue };
                if let Some(fresher) =
                    value.and_then(|v| self.serve(tier.as_ref(), key, &v)).filter(|(m, _)| m.fresh_until() > meta.fresh_until())
                {
                    if mine {
                        tier.release(&combined).await;
                    }
                    return Ok(Some(fresher));
                }
                if !mine {
                    if let Some(h) = hit.as_any_mut().downcast_mut::<Hit>() {
                        h.refreshing_elsewhere = true;
                    }
                }
                return Ok(Some((meta, hit)));
            }
            return Ok(Some((meta, hit)));
        }
        for tier in &self.tiers {
            if let Some(v) = tier.get(key.combined_bin(), key.primary_bin()).await {
                if let Some(found) = self.serve(tier.as_ref(), key, &v) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    async fn get_miss_handler(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<MissHandler> {
        let combined = key.combined_bin();
        for tier in &self.tiers {
            tier.filling(&combined);
        }
        Ok(Box::new(TieredFill { fill: Some(self.l1.fill(key, meta)?), store: self, combined, primary: key.primary_bin() }))
    }

    async fn purge(&'static self, target: PurgeTarget<'_>, purge_type: PurgeType, trace: &SpanHandle) -> Result<PurgeOutcome> {
        let key = target.key();
        let shared = match (&target, key.variance_bin()) {
            (PurgeTarget::Active(_), None) => PurgeScope::Primary(key.primary()),
            _ => PurgeScope::Combined(key.combined()),
        };
        let out = self.l1.purge(target, purge_type, trace).await;
        self.purge_tiers(shared, false);
        out
    }

    async fn expire(&'static self, target: PurgeTarget<'_>, trace: &SpanHandle) -> Result<PurgeOutcome> {
        let combined = target.key().combined();
        let out = self.l1.expire(target, trace).await;
        self.purge_tiers(PurgeScope::Combined(combined), true);
        out
    }

    /// A revalidated entry's new freshness reaches the shared tier too, so other replicas
    /// stop revalidating it.
    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, trace: &SpanHandle) -> Result<bool> {
        let updated = self.l1.update_meta(key, meta, trace).await?;
        if updated {
            if let Some(entry) = self.l1.entry(&key.combined_bin()) {
                for tier in &self.tiers {
                    tier.put(&key.combined_bin(), &key.primary_bin(), &entry).await;
                }
            }
        }
        Ok(updated)
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

impl Store for Tiered {
    fn purge_matching(&self, sel: &Selector, soft: bool) -> usize {
        let n = self.l1.purge_matching(sel, soft);
        self.purge_tiers(PurgeScope::Select(sel.clone()), soft);
        n
    }

    fn purge_key(&self, key: &dyn CacheHashKey, soft: bool) -> usize {
        let n = self.l1.purge_key(key, soft);
        self.purge_tiers(PurgeScope::Primary(key.primary()), soft);
        n
    }

    fn stats(&self) -> StoreStats {
        Store::stats(self.l1)
    }

    fn tier_stats(&self) -> Vec<super::TierStats> {
        self.tiers.iter().filter_map(|t| t.stats()).collect()
    }

    fn request_ended(&self, primary: &HashBinary) {
        for tier in &self.tiers {
            tier.release_primary(primary);
        }
    }

    /// Memory only: the disk and shared tiers keep the first copy (each write there is a fill
    /// with its own locks and purge guards, which a background replacement must not take).
    fn reencode(&self, key: &CacheKey, stored: &Bytes, etag: Option<http::HeaderValue>, body: Bytes) -> bool {
        self.l1.reencode(&key.combined_bin(), stored, etag, body)
    }
}

/// A fill written to both tiers once complete. The fill lock taken on the shared tier is
/// released after the object is there (so waiting replicas find it), or when the fill fails
/// or is dropped half-way (nothing half-received is stored anywhere).
struct TieredFill {
    fill: Option<Fill>,
    store: &'static Tiered,
    combined: HashBinary,
    primary: HashBinary,
}

impl Drop for TieredFill {
    fn drop(&mut self) {
        if self.fill.is_some() {
            for tier in &self.store.tiers {
                tier.release_later(self.combined);
            }
        }
    }
}

#[async_trait::async_trait]
impl HandleMiss for TieredFill {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        match self.fill.as_mut() {
            Some(f) => f.write_body(data, eof).await,
            None => Ok(()),
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let Some(fill) = self.fill.take() else {
            return Ok(MissFinishType::Created(0));
        };
        match fill.complete() {
            Ok((combined, entry)) => {
                for tier in &self.store.tiers {
                    tier.put(&combined, &self.primary, &entry).await;
                }
                let size = entry.size();
                self.store.l1.admit(combined, entry);
                Ok(MissFinishType::Created(size))
            }
            Err(e) => {
                for tier in &self.store.tiers {
                    tier.release(&self.combined).await;
                }
                Err(e)
            }
        }
    }
}
