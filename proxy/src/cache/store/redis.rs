//! The shared tier: Redis (or Valkey) behind each replica's memory cache, so replicas ask the
//! origin once per object, see each other's purges, and a restarted replica starts warm.
//!
//! Every call is bounded by `cache.shared.timeout` and goes through a circuit breaker: when
//! Redis is slow or gone, requests carry on with the memory tier alone, never an error.
//!
//! Layout under the configured prefix `P` (hex keys are Pingora's cache-key hashes):
//! - `P:o:<combined>`: one stored response, `PT2` + part lengths + meta + body + CRC-32, expiring
//!   when it may no longer be served (freshness plus the stale windows);
//! - `P:v:<primary>`: the set of a URL's stored variants, for URL purges;
//! - `P:urls` / `P:paths`: ordered indexes (`url\0primary`, `path\0url\0primary`) for URL, path and
//!   prefix purges, and `P:expiries` (the same URLs by expiry) so they forget expired objects;
//!   `P:t:<tag>`: a tag's variants;
//! - `P:l:<combined>`: the fill lock, a token set with `NX PX`;
//! - channel `P:purge`: every purge, applied by each replica to its memory tier.

use super::memory::{Entry, MemStorage};
use super::unix_ms;
use crate::cache::purge::Selector;
use crate::cache::url::path_of;
use crate::telemetry::events::emit;
use crate::telemetry::metrics::{counter_vec, gauge};
use crate::telemetry::names::*;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use pingora_cache::key::{str2hex, HashBinary};
use pingora_cache::CacheMeta;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};

/// The `op` label values of the shared tier's calls.
pub(crate) const SHARED_OPS: [&str; 8] = ["get", "lock", "poll", "put", "unlock", "purge", "publish", "discard"];

/// The shared tier's instruments, registered by the cache layer (handles are cheap clones).
#[derive(Clone)]
pub(crate) struct SharedTierMetrics {
    pub(crate) lookups: IntCounterVec,
    pub(crate) calls: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) lock_wait: prometheus::Histogram,
    pub(crate) purge_delay: prometheus::Histogram,
    pub(crate) up: IntGauge,
}

impl SharedTierMetrics {
    /// Registers the shared tier's instruments (at 0, so the dashboard's panels have data
    /// before the first call) on Portier's registry.
    pub(crate) fn register(r: &prometheus::Registry) -> prometheus::Result<SharedTierMetrics> {
        let duration = HistogramVec::new(
            HistogramOpts::new(CACHE_SHARED_DURATION.name, CACHE_SHARED_DURATION.help).buckets(SHARED_BUCKETS_S.to_vec()),
            &["op"],
        )?;
        r.register(Box::new(duration.clone()))?;
        let histogram = |n: &MetricName| -> prometheus::Result<prometheus::Histogram> {
            let h = prometheus::Histogram::with_opts(HistogramOpts::new(n.name, n.help).buckets(SHARED_WAIT_BUCKETS_S.to_vec()))?;
            r.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let m = SharedTierMetrics {
            lookups: counter_vec(r, &CACHE_SHARED_LOOKUPS, &["result"])?,
            calls: counter_vec(r, &CACHE_SHARED_CALLS, &["op", "outcome"])?,
            duration,
            lock_wait: histogram(&CACHE_SHARED_LOCK_WAIT)?,
            purge_delay: histogram(&CACHE_SHARED_PURGE_DELAY)?,
            up: gauge(r, &CACHE_SHARED_UP)?,
        };
        for result in ["hit", "miss", "error", "corrupt"] {
            m.lookups.with_label_values(&[result]);
        }
        // Series at 0 from the start, so the dashboard's queries have data before the first call.
        for op in SHARED_OPS {
            m.duration.with_label_values(&[op]);
        }
        Ok(m)
    }
}

/// Purges remembered while Redis is unreachable, replayed on reconnection.
const MAX_PENDING: usize = 10_000;
/// How often a miss waiting on another replica's fill looks for the object.
const POLL: Duration = Duration::from_millis(5);
/// `PT2`: lengths for every part and a CRC-32 over all of it. `PT1` values (no body length,
/// no checksum) are refused like any other unreadable value: a miss, deleted.
const VALUE_MAGIC: &[u8; 3] = b"PT2";
/// Drops index entries of objects past their expiry (at most 100 per fill): KEYS = expiries,
/// urls, paths; ARGV = now in Unix ms. An expiry member is the path-index member
/// (`path\0url\0primary`); the URL-index member is what follows its first NUL.
const PRUNE_SCRIPT: &str = "local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100) \
     for _, m in ipairs(old) do \
       redis.call('ZREM', KEYS[1], m) redis.call('ZREM', KEYS[3], m) \
       local i = string.find(m, '\\0', 1, true) \
       if i then redis.call('ZREM', KEYS[2], string.sub(m, i + 1)) end \
     end return #old";
const RELEASE_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

pub(crate) use super::PurgeScope;

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    from: String,
    /// Milliseconds since the Unix epoch when published: the receivers measure the fan-out.
    sent_ms: u64,
    soft: bool,
    target: PurgeScope,
}

/// What a memory miss learned from the shared tier.
pub(crate) enum Flight {
    /// The stored value (decode it with [`decode`]).
    Found(Bytes),
    /// Go to the origin: this replica holds the fill lock, or the tier cannot help.
    Origin,
}

impl Clone for Flight {
    fn clone(&self) -> Self {
        match self {
            Flight::Found(b) => Flight::Found(b.clone()),
            Flight::Origin => Flight::Origin,
        }
    }
}

struct Held {
    primary: HashBinary,
    token: String,
    /// A fill is writing the object: it releases the lock itself, after the write.
    filling: bool,
}

/// Opens after consecutive failures, for a delay that doubles up to 5 s; a success closes it.
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    const THRESHOLD: u32 = 3;

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
    fn allows(&self) -> bool {
        self.now_ms() >= self.open_until_ms.load(Ordering::Relaxed)
    }
    fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
    /// True when this failure opened the circuit.
    fn failed(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < Self::THRESHOLD {
            return false;
        }
        let delay = (250u64 << (n - Self::THRESHOLD).min(5)).min(5_000);
        self.open_until_ms.store(self.now_ms() + delay, Ordering::Relaxed);
        true
    }
}

pub(crate) struct RedisTier {
    prefix: String,
    timeout: Duration,
    pub(crate) max_object: usize,
    lock_ttl: Duration,
    /// This process, so it skips its own purge messages.
    id: String,
    rt: tokio::runtime::Handle,
    conn: ArcSwapOption<MultiplexedConnection>,
    breaker: Breaker,
    /// Wakes the connection supervisor to reconnect (the circuit opened).
    reconnect: Notify,
    /// Fill locks this process holds, by combined key.
    held: Mutex<HashMap<HashBinary, Held>>,
    /// Memory misses in progress, so concurrent ones for a key make one set of Redis calls.
    flights: Mutex<HashMap<HashBinary, watch::Receiver<Option<Flight>>>>,
    pending: Mutex<VecDeque<Message>>,
    l1: &'static MemStorage,
    /// This machine's other tiers (the disk): another replica's purges and a reconnection's
    /// clear reach them as they reach memory.
    local: Vec<Arc<dyn super::Tier>>,
    metrics: SharedTierMetrics,
    tokens: AtomicU64,
}

/// The hex form Pingora's `CacheHashKey::combined()` gives (its `hex2str` is private), for
/// hashes held without their key.
pub(super) fn hex(h: &HashBinary) -> String {
    let mut s = String::with_capacity(32);
    for b in h {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// The stored value: magic, the two meta parts and the body each after its length, and a
/// CRC-32 of everything before it, so a value cut short or changed in Redis is never served.
pub(super) fn encode(internal: &[u8], header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(23 + internal.len() + header.len() + body.len());
    v.extend_from_slice(VALUE_MAGIC);
    v.extend_from_slice(&(internal.len() as u32).to_le_bytes());
    v.extend_from_slice(internal);
    v.extend_from_slice(&(header.len() as u32).to_le_bytes());
    v.extend_from_slice(header);
    v.extend_from_slice(&(body.len() as u64).to_le_bytes());
    v.extend_from_slice(body);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// The (internal meta, header meta, body) of a stored value, sharing its bytes; None when it
/// is not one of ours, or not whole: every length must add up to the value's, and the
/// checksum must match.
pub(crate) fn decode(v: &Bytes) -> Option<(Bytes, Bytes, Bytes)> {
    let (content, crc) = v.split_at_checked(v.len().checked_sub(4)?)?;
    if crc32fast::hash(content).to_le_bytes() != crc {
        return None;
    }
    let rest = content.strip_prefix(VALUE_MAGIC.as_slice())?;
    let read = |at: usize, n: usize| -> Option<u64> {
        let b = content.get(at..at.checked_add(n)?)?;
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    };
    let start = content.len() - rest.len();
    let i_len = usize::try_from(read(start, 4)?).ok()?;
    let i_at = start + 4;
    let h_len = usize::try_from(read(i_at.checked_add(i_len)?, 4)?).ok()?;
    let h_at = i_at + i_len + 4;
    let b_len = usize::try_from(read(h_at.checked_add(h_len)?, 8)?).ok()?;
    let b_at = h_at + h_len + 8;
    (b_at.checked_add(b_len)? == content.len())
        .then(|| (v.slice(i_at..i_at + i_len), v.slice(h_at..h_at + h_len), v.slice(b_at..b_at + b_len)))
}

/// Removes a flight when its leader finishes or is dropped (the client went away), so the
/// next miss starts a new one.
struct FlightGuard<'a> {
    tier: &'a RedisTier,
    key: HashBinary,
    tx: watch::Sender<Option<Flight>>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.tier.flights.lock().remove(&self.key);
    }
}

impl RedisTier {
    /// Starts the tier: its own runtime thread keeps the connection and the purge subscription
    /// alive (reconnecting with backoff); requests only use the connection it publishes.
    pub(crate) fn start(
        cfg: &crate::config::SharedCacheConfig,
        url: &crate::config::RedisUrl,
        lock_ttl: Duration,
        l1: &'static MemStorage,
        local: Vec<Arc<dyn super::Tier>>,
        metrics: SharedTierMetrics,
    ) -> Result<Arc<RedisTier>, String> {
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("cache.shared.url {url:?}: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portier-shared-cache")
            .enable_all()
            .build()
            .map_err(|e| format!("cache.shared: cannot start its runtime: {e}"))?;
        let tier = Arc::new(RedisTier {
            prefix: cfg.prefix.clone(),
            timeout: cfg.timeout.get(),
            max_object: cfg.max_object_size.bytes() as usize,
            lock_ttl,
            id: format!("{}-{:x}", std::process::id(), unix_ms(SystemTime::now())),
            rt: rt.handle().clone(),
            conn: ArcSwapOption::empty(),
            breaker: Breaker { failures: AtomicU32::new(0), open_until_ms: AtomicU64::new(0), epoch: Instant::now() },
            reconnect: Notify::new(),
            held: Mutex::default(),
            flights: Mutex::default(),
            pending: Mutex::default(),
            l1,
            local,
            metrics,
            tokens: AtomicU64::new(0),
        });
        let supervised = tier.clone();
        std::thread::Builder::new()
            .name("portier-shared-cache".into())
            .spawn(move || rt.block_on(supervised.supervise(client)))
            .map_err(|e| format!("cache.shared: cannot start its thread: {e}"))?;
        Ok(tier)
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}:{kind}:{rest}", self.prefix)
    }
    fn index(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:purge", self.prefix)
    }

    /// Whether a call would be attempted now.
    pub(crate) fn available(&self) -> bool {
        self.breaker.allows() && self.conn.load().is_some()
    }

    /// One bounded pipeline; None on any failure, which feeds the circuit breaker.
    async fn query<T: redis::FromRedisValue>(&self, op: &'static str, pipe: &redis::Pipeline) -> Option<T> {
        let conn = match (self.breaker.allows(), self.conn.load_full()) {
            (true, Some(c)) => c,
            _ => {
                self.metrics.calls.with_label_values(&[op, "skipped"]).inc();
                return None;
            }
        };
        let mut c = (*conn).clone();
        let started = Instant::now();
        let r = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut c)).await;
        self.metrics.duration.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        let outcome = match r {
            Ok(Ok(v)) => {
                self.breaker.succeeded();
                self.metrics.calls.with_label_values(&[op, "ok"]).inc();
                return Some(v);
            }
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        self.metrics.calls.with_label_values(&[op, outcome]).inc();
        if self.breaker.failed() {
            self.metrics.up.set(0);
            self.reconnect.notify_waiters();
        }
        None
    }

    /// A memory miss: the stored object, or permission to ask the origin. Concurrent misses
    /// for a key in this process share one answer; across replicas, one fill lock.
    pub(crate) async fn fetch(&self, combined: HashBinary, primary: HashBinary) -> Flight {
        if !self.available() {
            self.metrics.lookups.with_label_values(&["error"]).inc();
            return Flight::Origin;
        }
        let joined = {
            let mut flights = self.flights.lock();
            match flights.get(&combined) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(combined, rx);
                    Ok(tx)
                }
            }
        };
        match joined {
            Ok(tx) => {
                let guard = FlightGuard { tier: self, key: combined, tx };
                let found = self.lead(combined, primary).await;
                guard.tx.send_replace(Some(found.clone()));
                found
            }
            Err(mut rx) => {
                let wait = self.lock_ttl + self.timeout;
                match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
                    Ok(Ok(v)) => v.clone().unwrap_or(Flight::Origin),
                    _ => Flight::Origin,
                }
            }
        }
    }

    async fn get(&self, combined: &HashBinary) -> Result<Option<Bytes>, ()> {
        let got: Option<(Option<Vec<u8>>,)> = self.query("get", redis::pipe().get(self.key("o", &hex(combined)))).await;
        match got {
            Some((v,)) => Ok(v.map(Bytes::from)),
            None => Err(()),
        }
    }

    /// Takes the fill lock (unless another process holds it) and reads the object, in one
    /// round trip.
    async fn lock_and_read(&self, combined: &HashBinary, primary: &HashBinary) -> Option<(bool, Option<Bytes>)> {
        let token = format!("{}-{}", self.id, self.tokens.fetch_add(1, Ordering::Relaxed));
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.key("l", &hex(combined))).arg(&token).arg("NX").arg("PX").arg(self.lock_ttl.as_millis() as u64);
        pipe.get(self.key("o", &hex(combined)));
        let (set, value): (Option<String>, Option<Vec<u8>>) = self.query("lock", &pipe).await?;
        let won = set.is_some();
        if won {
            self.held.lock().insert(*combined, Held { primary: *primary, token, filling: false });
        }
        Some((won, value.map(Bytes::from)))
    }

    /// A miss taking the fill lock: a fill that completed between the first read and the
    /// lock is seen here, and the lock is given back.
    async fn try_lock(&self, combined: &HashBinary, primary: &HashBinary) -> Option<(bool, Option<Bytes>)> {
        let (won, value) = self.lock_and_read(combined, primary).await?;
        if won && value.is_some() {
            self.release(combined).await;
        }
        Some((won, value))
    }

    async fn lead(&self, combined: HashBinary, primary: HashBinary) -> Flight {
        let found = |v: Bytes| {
            self.metrics.lookups.with_label_values(&["hit"]).inc();
            Flight::Found(v)
        };
        let error = || {
            self.metrics.lookups.with_label_values(&["error"]).inc();
            Flight::Origin
        };
        match self.get(&combined).await {
            Ok(Some(v)) => return found(v),
            Ok(None) => {}
            Err(()) => return error(),
        }
        self.metrics.lookups.with_label_values(&["miss"]).inc();
        let started = Instant::now();
        let lock_key = self.key("l", &hex(&combined));
        let obj_key = self.key("o", &hex(&combined));
        loop {
            match self.try_lock(&combined, &primary).await {
                Some((_, Some(v))) => return Flight::Found(v),
                Some((true, None)) | None => return Flight::Origin,
                Some((false, None)) => {}
            }
            // Another replica is filling: wait for its object, or for its lock to go (the
            // response was not storable, or that replica died) and compete again.
            loop {
                if started.elapsed() >= self.lock_ttl {
                    self.metrics.lock_wait.observe(started.elapsed().as_secs_f64());
                    return Flight::Origin;
                }
                tokio::time::sleep(POLL).await;
                let mut pipe = redis::pipe();
                pipe.get(&obj_key).exists(&lock_key);
                let Some((v, locked)): Option<(Option<Vec<u8>>, bool)> = self.query("poll", &pipe).await else {
                    return Flight::Origin;
                };
                if let Some(v) = v {
                    self.metrics.lock_wait.observe(started.elapsed().as_secs_f64());
                    return Flight::Found(Bytes::from(v));
                }
                if !locked {
                    break;
                }
            }
        }
    }

    /// A stale memory entry: the stored copy (another replica may have refreshed it) and
    /// whether this process refreshes it (it holds, or just took, the lock), so a
    /// stale-while-revalidate refresh happens once for all replicas. None when Redis
    /// cannot answer.
    pub(crate) async fn claim_refresh(&self, combined: &HashBinary, primary: &HashBinary) -> Option<(bool, Option<Bytes>)> {
        if self.held.lock().contains_key(combined) {
            return Some((true, None));
        }
        self.lock_and_read(combined, primary).await
    }

    fn release_pipe(&self, pipe: &mut redis::Pipeline, combined: &HashBinary) -> bool {
        let Some(held) = self.held.lock().remove(combined) else {
            return false;
        };
        pipe.cmd("EVAL").arg(RELEASE_SCRIPT).arg(1).arg(self.key("l", &hex(combined))).arg(held.token).ignore();
        true
    }

    /// Gives up the fill lock on `combined`, if this process holds it.
    pub(crate) async fn release(&self, combined: &HashBinary) {
        let mut pipe = redis::pipe();
        if self.release_pipe(&mut pipe, combined) {
            let _: Option<()> = self.query("unlock", &pipe).await;
        }
    }

    /// The same, from a destructor: runs on the tier's own runtime.
    pub(crate) fn release_later(self: &Arc<Self>, combined: HashBinary) {
        if self.held.lock().contains_key(&combined) {
            let tier = self.clone();
            self.rt.spawn(async move { tier.release(&combined).await });
        }
    }

    /// A value read for `combined` was not whole or not ours: it is counted and deleted (only
    /// if it is still the same bytes, so a good copy written meanwhile stays), never served.
    pub(crate) fn discard(self: &Arc<Self>, combined: &HashBinary, value: Bytes) {
        self.metrics.lookups.with_label_values(&["corrupt"]).inc();
        // A `PT1` value is a replica of the previous release's, expected while a rolling
        // upgrade runs: replaced quietly. Anything else is damage worth a line in the log.
        if !value.starts_with(b"PT1") {
            crate::telemetry::events::emit(
                "warn",
                "shared_cache_value_discarded",
                &[("key", &hex(combined)), ("bytes", &value.len().to_string())],
            );
        }
        let tier = self.clone();
        let key = self.key("o", &hex(combined));
        self.rt.spawn(async move {
            let mut pipe = redis::pipe();
            // The lock's compare-and-delete serves: delete the key only while it holds these bytes.
            pipe.cmd("EVAL").arg(RELEASE_SCRIPT).arg(1).arg(key).arg(value.as_ref()).ignore();
            let _: Option<()> = tier.query("discard", &pipe).await;
        });
    }

    /// A fill started for `combined`: its lock is the fill's to release.
    pub(crate) fn filling(&self, combined: &HashBinary) {
        if let Some(h) = self.held.lock().get_mut(combined) {
            h.filling = true;
        }
    }

    /// A request ended without storing what it fetched: the locks taken for that URL go,
    /// except those of fills still writing (Pingora may log a request before its fill ends).
    pub(crate) fn release_primary(self: &Arc<Self>, primary: &HashBinary) {
        let mine: Vec<HashBinary> = {
            let held = self.held.lock();
            if held.is_empty() {
                return;
            }
            held.iter().filter(|(_, h)| h.primary == *primary && !h.filling).map(|(c, _)| *c).collect()
        };
        for c in mine {
            self.release_later(c);
        }
    }

    /// Writes a completed entry (and its indexes) with an expiry covering its stale windows,
    /// then releases the fill lock in the same round trip.
    pub(crate) async fn put(&self, combined: &HashBinary, primary: &HashBinary, entry: &Entry) {
        let mut pipe = redis::pipe();
        let ttl_ms = entry.servable_for(SystemTime::now()).map_or(0, |d| d.as_millis() as u64);
        // Serialized here, off the hit path: the memory tier keeps most metas decoded only.
        let parts = if ttl_ms > 0 && entry.body().len() <= self.max_object { entry.meta_parts().ok() } else { None };
        if let Some((internal, header)) = &parts {
            let c = hex(combined);
            let p = hex(primary);
            // Sets keep the longest expiry of their members: NX gives a new set one, GT only raises it.
            let expire = |pipe: &mut redis::Pipeline, key: &str| {
                pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("NX").ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("GT").ignore();
            };
            pipe.cmd("SET").arg(self.key("o", &c)).arg(encode(internal, header, entry.body())).arg("PX").arg(ttl_ms).ignore();
            let variants = self.key("v", &p);
            pipe.sadd(&variants, &c).ignore();
            expire(&mut pipe, &variants);
            let url = entry.url();
            let path_member = format!("{}\0{url}\0{p}", path_of(url));
            pipe.zadd(self.index("urls"), format!("{url}\0{p}"), 0).ignore();
            pipe.zadd(self.index("paths"), &path_member, 0).ignore();
            // The indexes forget a URL once its last variant has expired (checked as fills come in).
            let now = unix_ms(SystemTime::now());
            pipe.cmd("ZADD").arg(self.index("expiries")).arg("GT").arg(now + ttl_ms).arg(&path_member).ignore();
            pipe.cmd("EVAL")
                .arg(PRUNE_SCRIPT)
                .arg(3)
                .arg(self.index("expiries"))
                .arg(self.index("urls"))
                .arg(self.index("paths"))
                .arg(now)
                .ignore();
            for t in entry.tags() {
                let k = self.key("t", t);
                pipe.sadd(&k, &c).ignore();
                expire(&mut pipe, &k);
            }
        }
        self.release_pipe(&mut pipe, combined);
        let _: Option<()> = self.query("put", &pipe).await;
    }

    /// Purges in the shared tier, then tells every replica to purge its memory tier. Runs on
    /// the tier's runtime; a purge that cannot reach Redis is replayed on reconnection.
    pub(crate) fn broadcast(self: &Arc<Self>, target: PurgeScope, soft: bool) {
        let msg = Message { from: self.id.clone(), sent_ms: unix_ms(SystemTime::now()), soft, target };
        let tier = self.clone();
        self.rt.spawn(async move {
            if !tier.apply_and_publish(&msg).await {
                let mut pending = tier.pending.lock();
                if pending.len() >= MAX_PENDING {
                    pending.pop_front();
                    emit(
                        "warn",
                        "shared_cache_purge_dropped",
                        &[("waiting", &MAX_PENDING.to_string()), ("why", "Redis unreachable; the oldest waiting purge is dropped")],
                    );
                }
                pending.push_back(msg);
            }
        });
    }

    async fn apply_and_publish(&self, msg: &Message) -> bool {
        let Some(variants) = self.select(&msg.target).await else {
            return false;
        };
        if !variants.is_empty() {
            let ok = if msg.soft { self.expire_all(&variants).await } else { self.delete_all(&variants).await };
            if !ok {
                return false;
            }
        }
        let Ok(text) = serde_json::to_string(msg) else {
            return true;
        };
        let published: Option<(i64,)> = self.query("publish", redis::pipe().publish(self.channel(), text)).await;
        published.is_some()
    }

    /// The stored variants (combined keys, hex) a purge target selects, forgetting the index
    /// entries on the way (a soft purge keeps them: the objects stay).
    async fn select(&self, target: &PurgeScope) -> Option<Vec<String>> {
        match target {
            PurgeScope::Combined(c) => Some(vec![c.clone()]),
            PurgeScope::Primary(p) => {
                let (members,): (Vec<String>,) = self.query("purge", redis::pipe().smembers(self.key("v", p))).await?;
                Some(members)
            }
            PurgeScope::Select(Selector::Tag(t)) => {
                let (members,): (Vec<String>,) = self.query("purge", redis::pipe().smembers(self.key("t", t))).await?;
                Some(members)
            }
            PurgeScope::Select(sel) => {
                // Path selectors (any host) read the path index, absolute ones the URL index.
                let (index, prefix) = match sel {
                    Selector::Url(u) if u.starts_with('/') => ("paths", format!("{u}\0")),
                    Selector::Url(u) => ("urls", format!("{u}\0")),
                    Selector::Prefix(p) | Selector::PrefixWithParam { prefix: p, .. } if p.starts_with('/') => ("paths", p.clone()),
                    Selector::Prefix(p) | Selector::PrefixWithParam { prefix: p, .. } => ("urls", p.clone()),
                    Selector::Tag(_) => return Some(Vec::new()),
                };
                let mut pipe = redis::pipe();
                pipe.cmd("ZRANGEBYLEX").arg(self.index(index)).arg(format!("[{prefix}")).arg(format!("[{prefix}\u{7f}"));
                let (members,): (Vec<String>,) = self.query("purge", &pipe).await?;
                let mut primaries = Vec::new();
                for m in &members {
                    // `url\0primary` or `path\0url\0primary`.
                    let mut parts = m.rsplitn(2, '\0');
                    let (Some(p), Some(front)) = (parts.next(), parts.next()) else { continue };
                    let url = if index == "paths" { front.split_once('\0').map_or(front, |(_, u)| u) } else { front };
                    if sel.matches(url) && str2hex(p).is_some() {
                        primaries.push((url.to_string(), p.to_string()));
                    }
                }
                if primaries.is_empty() {
                    return Some(Vec::new());
                }
                let mut pipe = redis::pipe();
                for (_, p) in &primaries {
                    pipe.smembers(self.key("v", p));
                }
                let sets: Vec<Vec<String>> = self.query("purge", &pipe).await?;
                let mut forget = redis::pipe();
                for (url, p) in &primaries {
                    forget.zrem(self.index("urls"), format!("{url}\0{p}")).ignore();
                    let path_member = format!("{}\0{url}\0{p}", path_of(url));
                    forget.zrem(self.index("paths"), &path_member).ignore();
                    forget.zrem(self.index("expiries"), &path_member).ignore();
                    forget.del(self.key("v", p)).ignore();
                }
                let _: Option<()> = self.query("purge", &forget).await;
                Some(sets.into_iter().flatten().collect())
            }
        }
    }

    async fn delete_all(&self, variants: &[String]) -> bool {
        let mut pipe = redis::pipe();
        for c in variants {
            pipe.del(self.key("o", c)).ignore();
        }
        self.query::<()>("purge", &pipe).await.is_some()
    }

    /// Soft purge: each object's meta marked stale now, its expiry kept.
    async fn expire_all(&self, variants: &[String]) -> bool {
        let mut pipe = redis::pipe();
        for c in variants {
            pipe.get(self.key("o", c));
        }
        let Some(values): Option<Vec<Option<Vec<u8>>>> = self.query("purge", &pipe).await else {
            return false;
        };
        let now = SystemTime::now();
        let mut write = redis::pipe();
        for (c, v) in variants.iter().zip(values) {
            let Some((i, h, body)) = v.map(Bytes::from).as_ref().and_then(decode) else { continue };
            let Ok(mut meta) = CacheMeta::deserialize(&i, &h) else { continue };
            meta.expire_at(now);
            let Ok((i, h)) = meta.serialize() else { continue };
            write.cmd("SET").arg(self.key("o", c)).arg(encode(&i, &h, &body)).arg("XX").arg("KEEPTTL").ignore();
        }
        self.query::<()>("purge", &write).await.is_some()
    }

    fn on_message(&self, payload: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<Message>(payload) else {
            emit("warn", "shared_cache_message_unreadable", &[("bytes", &payload.len().to_string())]);
            return;
        };
        if msg.from == self.id {
            return;
        }
        match &msg.target {
            PurgeScope::Select(sel) => {
                self.l1.purge_matching(sel, msg.soft);
            }
            PurgeScope::Primary(p) => {
                if let Some(p) = str2hex(p) {
                    self.l1.purge_primary(&p, msg.soft);
                }
            }
            PurgeScope::Combined(c) => {
                if let Some(c) = str2hex(c) {
                    self.l1.purge_combined(&c, msg.soft);
                }
            }
        }
        for tier in &self.local {
            tier.purge(msg.target.clone(), msg.soft);
        }
        let delay_ms = unix_ms(SystemTime::now()).saturating_sub(msg.sent_ms);
        self.metrics.purge_delay.observe(delay_ms as f64 / 1000.0);
    }

    /// Keeps one command connection and one subscription alive. Each (re)connection drops the
    /// memory tier: purges published while this replica was not listening must not leave it
    /// serving what was purged; the shared tier refills it on the next requests.
    async fn supervise(self: Arc<Self>, client: redis::Client) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connect(&client).await {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    let dropped = self.l1.clear();
                    // The disk too: it may hold what was purged while this replica was not
                    // listening (with Redis, replicas start warm from Redis instead).
                    for tier in &self.local {
                        tier.purge(PurgeScope::Select(Selector::Prefix(String::new())), false);
                    }
                    if dropped > 0 {
                        emit("info", "shared_cache_connected", &[("memory_entries_dropped", &dropped.to_string())]);
                    }
                    self.replay_pending().await;
                    self.metrics.up.set(1);
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            m = messages.next() => match m {
                                Some(m) => self.on_message(m.get_payload_bytes()),
                                None => break,
                            },
                            _ = self.reconnect.notified() => break,
                        }
                    }
                    emit("warn", "shared_cache_disconnected", &[("fallback", "memory until it is back")]);
                }
                Err(e) => emit("warn", "shared_cache_connect_failed", &[("error", &e.to_string()), ("retry_in", &format!("{backoff:?}"))]),
            }
            self.conn.store(None);
            self.metrics.up.set(0);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn connect(&self, client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(self.timeout));
        let conn = client.get_multiplexed_async_connection_with_config(&cfg).await?;
        let mut pubsub = tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "subscription timed out")))??;
        pubsub.subscribe(self.channel()).await?;
        self.breaker.succeeded();
        self.breaker.open_until_ms.store(0, Ordering::Relaxed);
        self.conn.store(Some(Arc::new(conn)));
        Ok(pubsub)
    }

    async fn replay_pending(&self) {
        loop {
            let Some(msg) = self.pending.lock().pop_front() else { return };
            if !self.apply_and_publish(&msg).await {
                self.pending.lock().push_front(msg);
                return;
            }
        }
    }
}

/// The shared tier as one of the tiers behind memory (see [`super::Tier`]).
pub(crate) struct SharedTier(pub(crate) Arc<RedisTier>);

#[async_trait::async_trait]
impl super::Tier for SharedTier {
    fn provenance(&self) -> super::memory::HitTier {
        super::memory::HitTier::Shared
    }

    fn available(&self) -> bool {
        self.0.available()
    }

    async fn get(&self, combined: HashBinary, primary: HashBinary) -> Option<Bytes> {
        match self.0.fetch(combined, primary).await {
            Flight::Found(v) => Some(v),
            Flight::Origin => None,
        }
    }

    async fn claim_refresh(&self, combined: &HashBinary, primary: &HashBinary) -> Option<(bool, Option<Bytes>)> {
        self.0.claim_refresh(combined, primary).await
    }

    fn filling(&self, combined: &HashBinary) {
        self.0.filling(combined);
    }

    async fn put(&self, combined: &HashBinary, primary: &HashBinary, entry: &Entry) {
        self.0.put(combined, primary, entry).await;
    }

    async fn release(&self, combined: &HashBinary) {
        self.0.release(combined).await;
    }

    fn release_later(&self, combined: HashBinary) {
        self.0.release_later(combined);
    }

    fn release_primary(&self, primary: &HashBinary) {
        self.0.release_primary(primary);
    }

    fn discard(&self, combined: &HashBinary, value: Bytes) {
        self.0.discard(combined, value);
    }

    fn purge(&self, scope: PurgeScope, soft: bool) {
        self.0.broadcast(scope, soft);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_ones_are_refused() {
        let v = Bytes::from(encode(b"meta0", b"meta-1", b"body bytes"));
        let (i, h, b) = decode(&v).unwrap();
        assert_eq!((&i[..], &h[..], &b[..]), (&b"meta0"[..], &b"meta-1"[..], &b"body bytes"[..]));
        assert!(decode(&Bytes::from_static(b"PT1\xff\xff\xff\xff")).is_none());
        assert!(decode(&Bytes::from_static(b"hello")).is_none());
        assert!(decode(&Bytes::new()).is_none());
        // Cut short, one byte changed anywhere, or one byte more: refused.
        let whole = encode(b"meta0", b"meta-1", b"body bytes");
        for cut in 0..whole.len() {
            assert!(decode(&Bytes::copy_from_slice(&whole[..cut])).is_none(), "cut at {cut}");
        }
        for at in 0..whole.len() {
            let mut bad = whole.clone();
            bad[at] ^= 0x01;
            assert!(decode(&Bytes::from(bad)).is_none(), "byte {at} flipped");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(decode(&Bytes::from(longer)).is_none());
        let k = pingora_cache::key::hash_key("x");
        assert_eq!(str2hex(&hex(&k)), Some(k));
    }

    #[test]
    fn breaker_opens_after_three_failures_and_closes_on_success() {
        let b = Breaker { failures: AtomicU32::new(0), open_until_ms: AtomicU64::new(0), epoch: Instant::now() };
        assert!(!b.failed() && !b.failed());
        assert!(b.allows());
        assert!(b.failed());
        assert!(!b.allows());
        b.succeeded();
        assert_eq!(b.failures.load(Ordering::Relaxed), 0);
    }
}
