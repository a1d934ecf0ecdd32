//! Stored text at the strongest levels without making anyone wait for them. A cacheable text
//! response is compressed on its way into the cache at the route's quick level (zstd 3, br 5:
//! the first client's latency). When the stored copy is hit (it is worth more than one
//! send: a cache-busting query string never is), one background thread decodes it,
//! compresses it again at the coding's strongest level (zstd 19, br 11, gzip 9) and, when
//! that is smaller, puts it in place of the stored copy with its own strong ETag
//! (`"abc-zstd"` → `"abc-zstd-max"`). Every later hit from memory sends the smaller bytes;
//! the disk and shared tiers keep the first copy (a replica or a restart starts from it).
//!
//! The stored copy is replaced only if it is still the very one that was hit (the same
//! allocation, and the same meta: not purged, expired, refreshed or refilled since). The
//! thread runs at the lowest scheduling priority and works through a bounded queue one body
//! at a time; what does not fit is counted and left at the quick level.

use crate::cache::store::Store;
use crate::config::Coding;
use crate::telemetry::metrics::Metrics;
use bytes::Bytes;
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::CacheMeta;
use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, OnceLock};

/// Bodies waiting: at the strongest levels (~1 ms per KB for br 11) a page's assets take
/// seconds; more than this many at once are left as they are.
const QUEUE: usize = 64;

/// One stored copy to compress again.
struct Job {
    key: CacheKey,
    coding: Coding,
    /// The stored body, as hit: it identifies the copy to replace (an allocation the job
    /// keeps alive cannot be reused by another entry).
    stored: Bytes,
    stored_etag: Option<http::HeaderValue>,
    /// Largest decoded body worked on.
    max: usize,
}

type Queued = (Job, &'static dyn Store, Arc<Metrics>);

static QUEUED: OnceLock<Option<std::sync::mpsc::SyncSender<Queued>>> = OnceLock::new();

/// Stored copies already queued (by key and body), so a hot entry is queued once; forgotten
/// past a bound (at worst one more look at an entry).
static SEEN: Mutex<Option<HashSet<(HashBinary, usize)>>> = Mutex::new(None);
const SEEN_MAX: usize = 100_000;

fn first_look(combined: HashBinary, body: &Bytes) -> bool {
    let mut seen = SEEN.lock();
    let set = seen.get_or_insert_with(HashSet::new);
    if set.len() >= SEEN_MAX {
        set.clear();
    }
    set.insert((combined, body.as_ptr() as usize))
}

/// A fresh hit from memory of `meta` (stored body `body`): queues its re-compression when
/// Portier encoded it at less than the strongest level and it is at most `max` bytes decoded.
pub(crate) fn on_hit(store: &'static dyn Store, metrics: &Arc<Metrics>, key: &CacheKey, meta: &CacheMeta, body: &Bytes, max: usize) {
    let h = &meta.response_header().headers;
    if !h.contains_key(crate::edge::compression::MARKER_NAME) || crate::edge::fields::has_token(h, http::header::CACHE_CONTROL, "immutable")
    {
        return;
    }
    let coding = match h.get(http::header::CONTENT_ENCODING).map(http::HeaderValue::as_bytes) {
        Some(b"zstd") => Coding::Zstd,
        Some(b"br") => Coding::Br,
        Some(b"gzip") => Coding::Gzip,
        _ => return,
    };
    let stored_etag = h.get(http::header::ETAG).cloned();
    if stored_etag.as_ref().is_some_and(|t| t.as_bytes().ends_with(b"-max\"")) || body.len() > max || !first_look(key.combined_bin(), body)
    {
        return;
    }
    let job = Job { key: key.clone(), coding, stored: body.clone(), stored_etag, max };
    let tx = QUEUED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new().name("recompress".into()).spawn(move || work(&rx)).ok().map(|_| tx)
    });
    let sent = tx.as_ref().is_some_and(|tx| tx.try_send((job, store, metrics.clone())).is_ok());
    if !sent {
        metrics.recompressed(coding.as_str(), "dropped", 0);
    }
}

/// The thread's scheduling priority at its lowest (nice 19): the strongest levels cost
/// hundreds of milliseconds per body, and requests must not wait behind them for a core.
fn lowest_priority() {
    // SAFETY: setpriority has no memory effects; on Linux PRIO_PROCESS with a thread id
    // sets that thread's nice value alone. A failure leaves the default priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// The stored body decoded, at most `max` bytes (a body Portier encoded itself, read with a
/// bound all the same).
fn decode(coding: Coding, body: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let limit = max as u64 + 1;
    let read = match coding {
        Coding::Gzip => flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out),
        Coding::Br => brotli::Decompressor::new(body, 4096).take(limit).read_to_end(&mut out),
        Coding::Zstd => zstd::stream::read::Decoder::new(body).and_then(|d| d.take(limit).read_to_end(&mut out)),
    };
    (read.is_ok() && out.len() <= max).then_some(out)
}

fn work(rx: &std::sync::mpsc::Receiver<Queued>) {
    lowest_priority();
    while let Ok((job, store, metrics)) = rx.recv() {
        let coding = job.coding;
        let level = crate::edge::compression::strongest(coding);
        let out = decode(coding, &job.stored, job.max)
            .and_then(|plain| crate::edge::compression::compress_all(coding, level, &Bytes::from(plain)));
        let outcome = match out {
            None => "failed",
            Some(b) if b.len() >= job.stored.len() => "not_smaller",
            Some(b) => {
                let saved = job.stored.len() - b.len();
                let etag = job.stored_etag.as_ref().and_then(crate::edge::compression::strongest_etag).or_else(|| job.stored_etag.clone());
                // The new copy is not queued again when hit.
                first_look(job.key.combined_bin(), &b);
                if store.reencode(&job.key, &job.stored, etag, b) {
                    metrics.recompressed(coding.as_str(), "replaced", saved);
                    continue;
                }
                "changed"
            }
        };
        metrics.recompressed(coding.as_str(), outcome, 0);
    }
}
