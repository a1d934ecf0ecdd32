//! Stored text at the strongest levels without making anyone wait for them. A cacheable text
//! response is compressed on its way into the cache at the route's quick level (zstd 3, br 5:
//! the first client's latency); once it is stored, one background task compresses the same
//! body again at the coding's strongest level (zstd 19, br 11, gzip 9) on a blocking thread
//! and, when that is smaller, puts it in place of the stored copy with its own strong ETag
//! (`"abc-zstd"` → `"abc-zstd-max"`), in memory and in the tiers behind it. Every later hit
//! sends the smaller bytes.
//!
//! The stored copy is only replaced if it is still the one compressed (same length, same
//! validator, same meta: not purged, expired, refreshed or refilled since). One task works
//! through a bounded queue, one body at a time, so a burst of new assets costs at most one
//! core; what does not fit is counted and left at the quick level.

use crate::cache::store::Store;
use crate::config::Coding;
use crate::telemetry::metrics::Metrics;
use bytes::Bytes;
use pingora_cache::key::CacheKey;
use std::sync::{Arc, OnceLock};

/// Bodies waiting: at the strongest levels (~1 ms per KB for br 11) a page's assets take
/// seconds; more than this many at once are left as they are.
const QUEUE: usize = 64;

/// One stored variant to compress again.
pub(crate) struct Job {
    pub(crate) key: CacheKey,
    pub(crate) coding: Coding,
    /// The decoded body, as the origin sent it.
    pub(crate) original: Bytes,
    /// The stored copy: its length and its ETag.
    pub(crate) stored_len: usize,
    pub(crate) stored_etag: Option<http::HeaderValue>,
}

type Queued = (Job, &'static dyn Store, Arc<Metrics>);

static QUEUED: OnceLock<tokio::sync::mpsc::Sender<Queued>> = OnceLock::new();

/// Queues `job`; called from a request's task (the worker starts on the first one's runtime,
/// which lives as long as the process).
pub(crate) fn schedule(store: &'static dyn Store, metrics: &Arc<Metrics>, job: Job) {
    let coding = job.coding;
    let tx = QUEUED.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(work(rx));
        tx
    });
    if tx.try_send((job, store, metrics.clone())).is_err() {
        metrics.recompressed(coding.as_str(), "dropped", 0);
    }
}

async fn work(mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    while let Some((job, store, metrics)) = rx.recv().await {
        let (coding, original) = (job.coding, job.original.clone());
        let level = crate::edge::compression::strongest(coding);
        let out =
            tokio::task::spawn_blocking(move || crate::edge::compression::compress_all(coding, level, &original)).await.ok().flatten();
        let outcome = match out {
            None => "failed",
            Some(b) if b.len() >= job.stored_len => "not_smaller",
            Some(b) => {
                let saved = job.stored_len - b.len();
                let etag = job.stored_etag.as_ref().and_then(crate::edge::compression::strongest_etag).or_else(|| job.stored_etag.clone());
                let replace = |b: Bytes| store.reencode(&job.key, job.stored_len, job.stored_etag.as_ref(), etag.clone(), b);
                // Queued as the body ended, a small one may be ready before its fill is stored:
                // one more look a moment later (a purge meanwhile still leaves nothing to replace).
                let replaced = replace(b.clone()) || {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    replace(b)
                };
                if replaced {
                    metrics.recompressed(coding.as_str(), "replaced", saved);
                    continue;
                }
                "changed"
            }
        };
        metrics.recompressed(coding.as_str(), outcome, 0);
    }
}
