//! The disk tier: one file per stored variant under `[cache.disk] path` (as nginx keeps its
//! cache), behind the memory tier, so a deploy or a crash does not send every request to the
//! origin. Chosen over `foyer` and a log-structured file of Portier's own because a file per
//! object is what survives a `kill -9` without a journal: a file is written under `tmp/` and
//! renamed into place only when whole, so a cut write leaves nothing a restart could take
//! for an entry, and eviction and purges are an `unlink` each, with no compaction.
//!
//! A file is `PTD1`, the length of its index record, the record (combined and primary keys,
//! how long it may be served, URL, tags), a CRC-32 of everything before, then the value in
//! the shared tier's encoding (its own lengths and CRC-32 over meta and body, checked by
//! [`super::tiered::Tiered`] before anything is served). At start a background thread reads
//! every file's record (not its body), keeps the ones that are whole and still servable, and
//! deletes the rest with what was left in `tmp/`; until it is done, what it has not reached
//! is a miss. Purges delete files (soft ones rewrite the meta stale) before they return, so
//! what was purged before a restart stays purged.

use super::memory::{Entry, HitTier};
use super::redis::hex;
use super::unix_ms;
use super::{PurgeScope, Tier};
use crate::cache::purge::Selector;
use crate::telemetry::events::emit;
use crate::telemetry::metrics::{counter, counter_vec, gauge};
use crate::telemetry::names::*;
use bytes::Bytes;
use parking_lot::Mutex;
use pingora_cache::key::{str2hex, HashBinary};
use pingora_cache::CacheMeta;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

const FILE_MAGIC: &[u8; 4] = b"PTD1";
/// Longest index record read at start (a URL is at most a few KB; tags are bounded too).
const MAX_RECORD: usize = 1 << 20;
/// Writes waiting or running at once; past it a fill is kept in memory only. A flood of
/// distinct URLs would otherwise queue a blocking task per miss (Tokio's pool grows to 512
/// threads).
const MAX_PENDING_WRITES: usize = 64;
/// Files up to this size are read where the request runs (see [`LocalDisk::get`]).
const INLINE_READ: u64 = 64 * 1024;
/// Why an entry on disk was thrown away, for `cache_disk_discarded_total`.
pub(crate) const DISCARD_REASONS: [&str; 5] = ["truncated", "checksum", "expired", "unreadable", "interrupted"];

/// The disk tier's instruments, registered whether or not a disk tier is configured.
#[derive(Clone)]
pub(crate) struct DiskTierMetrics {
    pub(crate) lookups: IntCounterVec,
    pub(crate) discarded: IntCounterVec,
    pub(crate) evictions: IntCounter,
    pub(crate) write_errors: IntCounter,
    pub(crate) writes_dropped: IntCounter,
    pub(crate) entries: IntGauge,
    pub(crate) bytes: IntGauge,
    pub(crate) capacity: IntGauge,
    pub(crate) scan_done: IntGauge,
}

impl DiskTierMetrics {
    pub(crate) fn register(r: &prometheus::Registry) -> prometheus::Result<DiskTierMetrics> {
        let m = DiskTierMetrics {
            lookups: counter_vec(r, &CACHE_DISK_LOOKUPS, &["result"])?,
            discarded: counter_vec(r, &CACHE_DISK_DISCARDED, &["reason"])?,
            evictions: counter(r, &CACHE_DISK_EVICTIONS)?,
            write_errors: counter(r, &CACHE_DISK_WRITE_ERRORS)?,
            writes_dropped: counter(r, &CACHE_DISK_WRITES_DROPPED)?,
            entries: gauge(r, &CACHE_DISK_ENTRIES)?,
            bytes: gauge(r, &CACHE_DISK_BYTES)?,
            capacity: gauge(r, &CACHE_DISK_CAPACITY)?,
            scan_done: gauge(r, &CACHE_DISK_SCAN_DONE)?,
        };
        for result in ["hit", "miss", "corrupt"] {
            m.lookups.with_label_values(&[result]);
        }
        for reason in DISCARD_REASONS {
            m.discarded.with_label_values(&[reason]);
        }
        Ok(m)
    }
}

/// What the index keeps per file: enough to select it for a purge and to count it against
/// the budget, without reading it.
struct Record {
    primary: HashBinary,
    /// Unix ms after which it may not be served (stale windows included).
    until_ms: u64,
    /// The value's length: the file is the record's bytes and this many more.
    value_len: u64,
    url: Box<str>,
    tags: Box<[Box<str>]>,
    /// The file's length.
    size: u64,
}

struct Index {
    lru: lru::LruCache<HashBinary, Record>,
    variants: HashMap<HashBinary, Vec<HashBinary>>,
    bytes: u64,
    /// Purges made while the start-up scan runs (`None` once it is done): a file it has not
    /// reached yet is checked against them before it is indexed, so it cannot come back.
    purged_while_scanning: Option<Vec<PurgeScope>>,
}

/// Whether a purge selects this file.
fn selects(scope: &PurgeScope, combined: &HashBinary, r: &Record) -> bool {
    match scope {
        PurgeScope::Combined(c) => str2hex(c).as_ref() == Some(combined),
        PurgeScope::Primary(p) => str2hex(p) == Some(r.primary),
        PurgeScope::Select(Selector::Tag(t)) => r.tags.iter().any(|x| **x == **t),
        PurgeScope::Select(sel) => sel.matches(&r.url),
    }
}

impl Index {
    fn remove(&mut self, combined: &HashBinary) -> Option<Record> {
        let r = self.lru.pop(combined)?;
        self.bytes = self.bytes.saturating_sub(r.size);
        if let Some(v) = self.variants.get_mut(&r.primary) {
            v.retain(|c| c != combined);
            if v.is_empty() {
                self.variants.remove(&r.primary);
            }
        }
        Some(r)
    }

    fn insert(&mut self, combined: HashBinary, r: Record) {
        self.remove(&combined);
        self.bytes += r.size;
        self.variants.entry(r.primary).or_default().push(combined);
        self.lru.put(combined, r);
    }
}

pub(crate) struct DiskTier {
    objects: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    max_object: usize,
    index: Mutex<Index>,
    /// Bumped by every purge: a write that started before one is not put in place after it.
    purges: AtomicU64,
    /// Names for files being written, unique within the process.
    writes: AtomicU64,
    /// Writes queued or running (bounded by [`MAX_PENDING_WRITES`]).
    pending: std::sync::atomic::AtomicUsize,
    /// The purge count when each fill in progress started: a purge during the origin's
    /// answer keeps that answer off the disk.
    fills: Mutex<HashMap<HashBinary, u64>>,
    metrics: DiskTierMetrics,
}

fn record_bytes(combined: &HashBinary, r: &Record) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + r.url.len());
    v.extend_from_slice(combined);
    v.extend_from_slice(&r.primary);
    v.extend_from_slice(&r.until_ms.to_le_bytes());
    v.extend_from_slice(&r.value_len.to_le_bytes());
    v.extend_from_slice(&(r.url.len() as u32).to_le_bytes());
    v.extend_from_slice(r.url.as_bytes());
    v.extend_from_slice(&(r.tags.len() as u32).to_le_bytes());
    for t in r.tags.iter() {
        v.extend_from_slice(&(t.len() as u32).to_le_bytes());
        v.extend_from_slice(t.as_bytes());
    }
    v
}

/// The file's bytes: magic, record length, record, CRC-32 of those, the value.
fn file_bytes(combined: &HashBinary, r: &Record, value: &[u8]) -> Vec<u8> {
    let rec = record_bytes(combined, r);
    let mut v = Vec::with_capacity(12 + rec.len() + value.len());
    v.extend_from_slice(FILE_MAGIC);
    v.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    v.extend_from_slice(&rec);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v.extend_from_slice(value);
    v
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn key(&mut self) -> Option<HashBinary> {
        self.take(16)?.try_into().ok()
    }
    fn text(&mut self) -> Option<Box<str>> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok().map(Box::from)
    }
}

/// A record (and where the value starts) from a file's first bytes; `Err` names the reason
/// it is not one: cut short, or not what it says.
fn parse_head(head: &[u8]) -> Result<(HashBinary, Record, usize), &'static str> {
    let mut c = Cursor(head);
    if c.take(4) != Some(FILE_MAGIC.as_slice()) {
        return Err(if head.len() < 4 { "truncated" } else { "checksum" });
    }
    let n = c.u32().ok_or("truncated")? as usize;
    if n > MAX_RECORD {
        return Err("checksum");
    }
    let rec = c.take(n).ok_or("truncated")?;
    let crc = c.u32().ok_or("truncated")?;
    if crc32fast::hash(&head[..8 + n]) != crc {
        return Err("checksum");
    }
    let mut r = Cursor(rec);
    let parsed = (|| {
        let combined = r.key()?;
        let primary = r.key()?;
        let until_ms = r.u64()?;
        let value_len = r.u64()?;
        let url = r.text()?;
        let count = r.u32()? as usize;
        let mut tags = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            tags.push(r.text()?);
        }
        Some((combined, Record { primary, until_ms, value_len, url, tags: tags.into_boxed_slice(), size: 0 }))
    })();
    let (combined, record) = parsed.ok_or("checksum")?;
    Ok((combined, record, 8 + n + 4))
}

impl DiskTier {
    /// Opens (creating) `path`, and starts reading back what it holds in the background.
    pub(crate) fn open(cfg: &crate::config::DiskCacheConfig, path: &Path, metrics: DiskTierMetrics) -> std::io::Result<Arc<DiskTier>> {
        let objects = path.join("objects");
        let tmp = path.join("tmp");
        for d in [&objects, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", d.display())))?;
        }
        // Writable now, or the tier is not used at all (a read-only volume).
        let probe = tmp.join(format!("probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| std::io::Error::new(e.kind(), format!("writing in {}: {e}", tmp.display())))?;
        let _ = std::fs::remove_file(&probe);
        // What a write cut by a crash left, gone before any write of this process starts.
        let mut interrupted = 0;
        for f in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            if std::fs::remove_file(f.path()).is_ok() {
                interrupted += 1;
            }
        }
        metrics.discarded.with_label_values(&["interrupted"]).inc_by(interrupted);
        // Every shard directory now: a write then only renames, under the index lock.
        for i in 0..=255u8 {
            let d = objects.join(format!("{i:02x}"));
            std::fs::create_dir_all(&d).map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", d.display())))?;
        }
        metrics.capacity.set(cfg.max_size.bytes() as i64);
        metrics.scan_done.set(0);
        let tier = Arc::new(DiskTier {
            objects,
            tmp,
            max_bytes: cfg.max_size.bytes(),
            max_object: cfg.max_object_size.bytes() as usize,
            index: Mutex::new(Index {
                lru: lru::LruCache::unbounded(),
                variants: HashMap::new(),
                bytes: 0,
                purged_while_scanning: Some(Vec::new()),
            }),
            purges: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            pending: std::sync::atomic::AtomicUsize::new(0),
            fills: Mutex::new(HashMap::new()),
            metrics,
        });
        let scan = tier.clone();
        std::thread::Builder::new()
            .name("disk-cache-scan".into())
            .spawn(move || scan.scan())
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting the disk cache scan: {e}")))?;
        Ok(tier)
    }

    fn file(&self, combined: &HashBinary) -> PathBuf {
        let h = hex(combined);
        self.objects.join(&h[..2]).join(h)
    }

    fn discard_file(&self, path: &Path, reason: &'static str) {
        let _ = std::fs::remove_file(path);
        self.metrics.discarded.with_label_values(&[reason]).inc();
    }

    fn publish(&self, index: &Index) {
        self.metrics.entries.set(index.lru.len() as i64);
        self.metrics.bytes.set(index.bytes as i64);
    }

    /// Reads back every file's record: whole, servable ones are indexed; the rest, and
    /// anything left in `tmp/` by a write that was cut, are deleted and counted.
    fn scan(&self) {
        let started = std::time::Instant::now();
        let now = unix_ms(SystemTime::now());
        let (mut kept, mut dropped) = (0usize, 0usize);
        for shard in std::fs::read_dir(&self.objects).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let path = f.path();
                match self.read_record(&path) {
                    Ok((combined, record)) if record.until_ms > now && path == self.file(&combined) => {
                        let mut index = self.index.lock();
                        // A fill since start knows better than the file read here.
                        if index.lru.contains(&combined) {
                            continue;
                        }
                        let purged = index.purged_while_scanning.as_ref().is_some_and(|p| p.iter().any(|s| selects(s, &combined, &record)));
                        if purged {
                            let _ = std::fs::remove_file(&path);
                            continue;
                        }
                        index.insert(combined, record);
                        kept += 1;
                    }
                    Ok(_) => {
                        self.discard_file(&path, "expired");
                        dropped += 1;
                    }
                    Err(reason) => {
                        self.discard_file(&path, reason);
                        dropped += 1;
                    }
                }
            }
        }
        self.index.lock().purged_while_scanning = None;
        self.evict();
        self.publish(&self.index.lock());
        self.metrics.scan_done.set(1);
        emit(
            "info",
            "disk_cache_scanned",
            &[("entries", &kept.to_string()), ("discarded", &dropped.to_string()), ("ms", &started.elapsed().as_millis().to_string())],
        );
    }

    fn read_record(&self, path: &Path) -> Result<(HashBinary, Record), &'static str> {
        let mut f = std::fs::File::open(path).map_err(|_| "unreadable")?;
        let len = f.metadata().map_err(|_| "unreadable")?.len();
        let mut head = vec![0u8; (len as usize).min(4096)];
        f.read_exact(&mut head).map_err(|_| "truncated")?;
        let (combined, mut record, value_at) = match parse_head(&head) {
            // A record longer than the first 4 KiB (many tags): read it whole.
            Err("truncated") if len as usize > head.len() => {
                let mut all = vec![0u8; (len as usize).min(12 + MAX_RECORD)];
                std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut all)).map_err(|_| "unreadable")?;
                parse_head(&all)?
            }
            other => other?,
        };
        // A file cut anywhere (a full disk, a write torn by a power loss) is shorter than its
        // record says; its bytes are checked whole on the first hit.
        if Some(len) != (value_at as u64).checked_add(record.value_len) {
            return Err("truncated");
        }
        record.size = len;
        Ok((combined, record))
    }

    /// Past the budget, the least recently used files go.
    fn evict(&self) {
        loop {
            {
                let mut index = self.index.lock();
                if index.bytes <= self.max_bytes {
                    self.publish(&index);
                    return;
                }
                let Some(combined) = index.lru.peek_lru().map(|(c, _)| *c) else { return };
                index.remove(&combined);
                // Under the lock, as a write's rename is: a new file for the same key put in
                // place meanwhile would otherwise be unlinked while still indexed.
                let _ = std::fs::remove_file(self.file(&combined));
            }
            self.metrics.evictions.inc();
        }
    }

    /// The value of `combined`'s file, or the reason it cannot be served.
    fn read_value(&self, combined: &HashBinary) -> Result<Bytes, &'static str> {
        let path = self.file(combined);
        let all = std::fs::read(&path).map_err(|_| "unreadable")?;
        let (c, record, value_at) = parse_head(&all)?;
        if &c != combined {
            return Err("checksum");
        }
        if Some(all.len() as u64) != (value_at as u64).checked_add(record.value_len) {
            return Err("truncated");
        }
        let value = Bytes::from(all).slice(value_at..);
        // Checked here as well as by the tiered store, so a flipped byte counts as `corrupt`,
        // not as a hit.
        super::redis::decode(&value).ok_or("checksum")?;
        Ok(value)
    }

    /// The entry and its file (unlinked under the lock, see [`Self::evict`]; whether indexed
    /// or not, so a purge reaches a file the start-up scan has not read yet).
    fn remove(&self, combined: &HashBinary) {
        let mut index = self.index.lock();
        index.remove(combined);
        let _ = std::fs::remove_file(self.file(combined));
        self.publish(&index);
    }

    /// Writes `value` for `combined` under `tmp/` and renames it into place, unless a purge
    /// came in meanwhile (`purges_then`): nothing purged reappears.
    /// True when the file is in place.
    fn write(&self, combined: HashBinary, record: Record, value: &[u8], purges_then: u64) -> bool {
        let record = Record { value_len: value.len() as u64, ..record };
        let bytes = file_bytes(&combined, &record, value);
        // The process id too: an upgrade's new process shares the directory with the old one.
        let tmp = self.tmp.join(format!("{}-{}-{}", hex(&combined), std::process::id(), self.writes.fetch_add(1, Ordering::Relaxed)));
        let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(&bytes));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            self.metrics.write_errors.inc();
            emit("warn", "disk_cache_write_failed", &[("path", &tmp.display().to_string()), ("error", &e.to_string())]);
            return false;
        }
        let target = self.file(&combined);
        {
            let mut index = self.index.lock();
            if self.purges.load(Ordering::Acquire) != purges_then {
                drop(index);
                let _ = std::fs::remove_file(&tmp);
                return false;
            }
            if let Err(e) = std::fs::rename(&tmp, &target) {
                drop(index);
                let _ = std::fs::remove_file(&tmp);
                self.metrics.write_errors.inc();
                emit("warn", "disk_cache_write_failed", &[("path", &target.display().to_string()), ("error", &e.to_string())]);
                return false;
            }
            index.insert(combined, Record { size: bytes.len() as u64, ..record });
        }
        self.evict();
        true
    }

    /// The stored variants (combined keys) a purge selects, noting it for the start-up scan
    /// while that runs.
    fn select(&self, scope: &PurgeScope) -> Vec<HashBinary> {
        let mut index = self.index.lock();
        if let Some(log) = index.purged_while_scanning.as_mut() {
            log.push(scope.clone());
        }
        match scope {
            PurgeScope::Combined(c) => str2hex(c).into_iter().collect(),
            PurgeScope::Primary(p) => str2hex(p).and_then(|p| index.variants.get(&p).cloned()).unwrap_or_default(),
            _ => index.lru.iter().filter(|(c, r)| selects(scope, c, r)).map(|(c, _)| *c).collect(),
        }
    }

    /// A soft purge: the file rewritten with its meta stale from now (its serving window
    /// kept), so a restart serves it stale, not fresh.
    fn expire(&self, combined: &HashBinary, purges_then: u64) {
        let Ok(value) = self.read_value(combined) else {
            self.remove(combined);
            return;
        };
        let rewritten = super::redis::decode(&value).and_then(|(i, h, body)| {
            let mut meta = CacheMeta::deserialize(&i, &h).ok()?;
            meta.expire_at(SystemTime::now());
            let (i, h) = meta.serialize().ok()?;
            Some(super::redis::encode(&i, &h, &body))
        });
        let record = {
            let index = self.index.lock();
            index.lru.peek(combined).map(|r| Record {
                primary: r.primary,
                until_ms: r.until_ms,
                value_len: 0,
                url: r.url.clone(),
                tags: r.tags.clone(),
                size: 0,
            })
        };
        // A rewrite that cannot be put in place (a later purge, a failed write) leaves no
        // fresh copy behind: the entry goes.
        let rewrote = match (rewritten, record) {
            (Some(v), Some(r)) => self.write(*combined, r, &v, purges_then),
            _ => false,
        };
        if !rewrote {
            self.remove(combined);
        }
    }
}

/// A place among the [`MAX_PENDING_WRITES`], given back when dropped (also when the write
/// panics or its task is dropped).
struct Pending(Arc<DiskTier>);

impl Pending {
    fn take(tier: &Arc<DiskTier>) -> Option<Pending> {
        if tier.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_WRITES {
            tier.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Pending(tier.clone()))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The disk tier behind the memory one.
pub(crate) struct LocalDisk(pub(crate) Arc<DiskTier>);

#[async_trait::async_trait]
impl Tier for LocalDisk {
    fn provenance(&self) -> HitTier {
        HitTier::Disk
    }

    async fn get(&self, combined: HashBinary, _primary: HashBinary) -> Option<Bytes> {
        let now = unix_ms(SystemTime::now());
        let known = {
            let mut index = self.0.index.lock();
            index.lru.get(&combined).map(|r| (r.until_ms > now, r.size))
        };
        let size = match known {
            None => {
                self.0.metrics.lookups.with_label_values(&["miss"]).inc();
                return None;
            }
            Some((false, _)) => {
                self.0.remove(&combined);
                self.0.metrics.discarded.with_label_values(&["expired"]).inc();
                self.0.metrics.lookups.with_label_values(&["miss"]).inc();
                return None;
            }
            Some((true, size)) => size,
        };
        // A small file is read on the request's thread (from the page cache, a few
        // microseconds; handing it to the blocking pool cost more than the read: 2 KB disk
        // hits at 0.35x memory hits that way); a large one off it.
        let read = if size <= INLINE_READ {
            Ok(self.0.read_value(&combined))
        } else {
            let tier = self.0.clone();
            tokio::task::spawn_blocking(move || tier.read_value(&combined)).await
        };
        match read {
            Ok(Ok(v)) => {
                self.0.metrics.lookups.with_label_values(&["hit"]).inc();
                Some(v)
            }
            Ok(Err(reason)) => {
                self.0.remove(&combined);
                self.0.metrics.discarded.with_label_values(&[reason]).inc();
                self.0.metrics.lookups.with_label_values(&["corrupt"]).inc();
                None
            }
            Err(_) => None,
        }
    }

    async fn put(&self, combined: &HashBinary, primary: &HashBinary, entry: &Entry) {
        let now = SystemTime::now();
        let Some(servable) = entry.servable_for(now).filter(|d| !d.is_zero()) else { return };
        if entry.body().len() > self.0.max_object {
            return;
        }
        // The purge count when this fill started (a revalidation's new freshness: now).
        let purges_then = self.0.fills.lock().remove(combined).unwrap_or_else(|| self.0.purges.load(Ordering::Acquire));
        let slot = Pending::take(&self.0);
        if slot.is_none() {
            self.0.metrics.writes_dropped.inc();
            return;
        }
        let Ok((internal, header)) = entry.meta_parts() else { return };
        let record = Record {
            primary: *primary,
            until_ms: unix_ms(now + servable),
            value_len: 0,
            url: entry.url().into(),
            tags: entry.tags().iter().map(|t| Box::from(t.as_str())).collect(),
            size: 0,
        };
        let body = entry.body().clone();
        let tier = self.0.clone();
        let combined = *combined;
        // Off the request: the client has its answer from memory; the file follows.
        let write = move || {
            let value = super::redis::encode(&internal, &header, &body);
            tier.write(combined, record, &value, purges_then);
            drop(slot);
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(tokio::task::spawn_blocking(write));
        } else {
            write();
        }
    }

    fn stats(&self) -> Option<super::TierStats> {
        let index = self.0.index.lock();
        Some(super::TierStats { tier: "disk", entries: index.lru.len(), bytes: index.bytes, capacity: self.0.max_bytes })
    }

    fn discard(&self, combined: &HashBinary, _value: Bytes) {
        self.0.remove(combined);
        self.0.metrics.discarded.with_label_values(&["checksum"]).inc();
    }

    fn filling(&self, combined: &HashBinary) {
        let mut fills = self.0.fills.lock();
        // Fills that never ended (not storable, dropped) are forgotten past a bound; their
        // keys then take the count at `put`, a narrower guard.
        if fills.len() >= 10_000 {
            fills.clear();
        }
        fills.insert(*combined, self.0.purges.load(Ordering::Acquire));
    }

    async fn release(&self, combined: &HashBinary) {
        self.0.fills.lock().remove(combined);
    }

    fn release_later(&self, combined: HashBinary) {
        self.0.fills.lock().remove(&combined);
    }

    fn purge(&self, scope: PurgeScope, soft: bool) {
        let generation = self.0.purges.fetch_add(1, Ordering::AcqRel) + 1;
        for combined in self.0.select(&scope) {
            if soft {
                self.0.expire(&combined, generation);
            } else {
                self.0.remove(&combined);
            }
        }
    }
}
