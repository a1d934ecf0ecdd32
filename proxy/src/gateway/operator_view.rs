//! What the gateway records for the operator page (`crate::control::operator` serves it, and
//! the JSON it reads, `/ui/data`): hit ratio and request rate over the last ten minutes, bytes served
//! from cache, entries and memory against the budget, the URLs with the most hits and the
//! most misses (with why they missed), the pools' health.
//!
//! The per-URL counts are kept for a bounded number of paths: when the table is full, the
//! least-requested half is dropped, so a flood of distinct URLs costs memory once, not per
//! URL, and the busy ones stay.

use crate::cache::status::CacheStatus;
use crate::telemetry::metrics::Metrics;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Paths counted at most; beyond, the least requested half goes.
const MAX_URLS: usize = 1024;
/// One history point every 5 s, ten minutes of them.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const POINTS: usize = 120;

/// A path and its counts.
pub(crate) type TopUrl = (String, UrlCounts);

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct UrlCounts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    /// Why the last request that went to the origin did (`miss`, `no-store`, ...).
    pub(crate) reason: Option<&'static str>,
}

/// A point of the history: cumulative counters at a time.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Point {
    pub(crate) t: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) cache_bytes: u64,
    pub(crate) origin_bytes: u64,
}

#[derive(Default)]
pub(crate) struct OperatorView {
    urls: Mutex<HashMap<Box<str>, UrlCounts>>,
    history: Mutex<VecDeque<Point>>,
}

impl OperatorView {
    /// One finished client request on a cache-eligible route.
    pub(crate) fn record(&self, path: &str, status: CacheStatus, reason: Option<&'static str>) {
        let mut urls = self.urls.lock();
        if let Some(c) = urls.get_mut(path) {
            c.bump(status, reason);
            return;
        }
        if urls.len() >= MAX_URLS {
            let mut totals: Vec<u64> = urls.values().map(|c| c.hits + c.misses).collect();
            let (_, median, _) = totals.select_nth_unstable(MAX_URLS / 2);
            let cut = *median;
            urls.retain(|_, c| c.hits + c.misses > cut);
        }
        let mut c = UrlCounts::default();
        c.bump(status, reason);
        urls.insert(path.into(), c);
    }

    /// The `n` paths with the most hits, and the `n` with the most misses.
    pub(crate) fn top(&self, n: usize) -> (Vec<TopUrl>, Vec<TopUrl>) {
        let urls = self.urls.lock();
        let pick = |key: fn(&UrlCounts) -> u64| {
            let mut v: Vec<(String, UrlCounts)> =
                urls.iter().filter(|(_, c)| key(c) > 0).map(|(p, c)| (p.to_string(), c.clone())).collect();
            v.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then_with(|| a.0.cmp(&b.0)));
            v.truncate(n);
            v
        };
        (pick(|c| c.hits), pick(|c| c.misses))
    }

    pub(crate) fn sample(&self, m: &Metrics) {
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (cache_bytes, origin_bytes) = m.served_bytes();
        let p = Point { t, hits: m.cache_hit.get(), misses: m.cache_miss.get(), cache_bytes, origin_bytes };
        let mut h = self.history.lock();
        if h.len() == POINTS {
            h.pop_front();
        }
        h.push_back(p);
    }

    pub(crate) fn history(&self) -> Vec<Point> {
        self.history.lock().iter().copied().collect()
    }

    /// Samples the counters every [`SAMPLE_EVERY`] for the process's life (one small thread).
    pub(crate) fn start_sampling(view: &Arc<OperatorView>, metrics: &Arc<Metrics>) {
        let (view, metrics) = (Arc::downgrade(view), Arc::downgrade(metrics));
        let _ = std::thread::Builder::new().name("portier-ui-sampler".into()).spawn(move || loop {
            match (view.upgrade(), metrics.upgrade()) {
                (Some(v), Some(m)) => v.sample(&m),
                _ => return,
            }
            std::thread::sleep(SAMPLE_EVERY);
        });
    }
}

impl UrlCounts {
    fn bump(&mut self, status: CacheStatus, reason: Option<&'static str>) {
        if status.answered_from_store() {
            self.hits += 1;
        } else {
            self.misses += 1;
            self.reason = reason.or(Some(status.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_distinct_urls_keeps_the_busy_ones_within_the_bound() {
        let v = OperatorView::default();
        for _ in 0..50 {
            v.record("/busy", CacheStatus::Hit, None);
        }
        v.record("/busy", CacheStatus::Miss, Some("no-store"));
        for i in 0..10_000 {
            v.record(&format!("/once/{i}"), CacheStatus::Miss, Some("miss"));
        }
        assert!(v.urls.lock().len() <= MAX_URLS);
        let (hits, misses) = v.top(3);
        assert_eq!(hits[0].0, "/busy");
        assert_eq!((hits[0].1.hits, hits[0].1.misses, hits[0].1.reason), (50, 1, Some("no-store")));
        assert_eq!(misses[0].0, "/busy", "ties broken by path, the busy one leads with its miss");
    }
}
