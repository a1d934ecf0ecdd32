//! Prometheus metrics (crate `prometheus`, own registry), recorded once per client request in
//! the gateway's `logging` step and read at scrape time for gauges.

use super::names::*;
use super::RequestSummary as RequestRecord;
use prometheus::{Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::time::Instant;

pub(crate) struct Metrics {
    registry: Registry,
    service_name: String,
    span_calls: IntCounterVec,
    span_duration: HistogramVec,
    pub cache_hit: IntCounter,
    pub cache_miss: IntCounter,
    cache_requests: IntCounterVec,
    cache_entries: IntGauge,
    cache_size: IntGauge,
    dictionaries: IntGauge,
    dictionary_bytes: IntGauge,
    cache_capacity: IntGauge,
    cache_evictions: IntCounter,
    cache_purged: IntCounterVec,
    served_bytes: IntCounterVec,
    pub coalesced: IntCounter,
    pub(crate) invalidation_skipped: IntCounter,
    compression_bytes: IntCounterVec,
    recompressed: IntCounterVec,
    recompress_saved: IntCounterVec,
    background: IntCounterVec,
    upstream_duration: HistogramVec,
    response_size: HistogramVec,
    upstream_errors: IntCounterVec,
    upstream_healthy: GaugeVec,
    limits_refused: IntCounterVec,
    auth_checks: IntCounterVec,
    quic_handshakes: IntCounterVec,
    connections_open: IntGauge,
    uptime: Gauge,
    spans_exported: IntCounter,
    spans_dropped: IntCounter,
    log_dropped: IntCounter,
    profiles_ok: IntCounter,
    profiles_failed: IntCounter,
    started: Instant,
}

/// The store's figures, read at scrape time.
pub(crate) struct StoreGauges {
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub evictions: u64,
}

/// Label values known at start, so every series exists (at 0) before its first event and
/// rate() queries have data; each domain names its own.
pub(crate) struct StartLabels<'a> {
    pub cache_statuses: &'a [&'static str],
    pub purge_reasons: &'a [&'static str],
    pub auth_outcomes: &'a [&'static str],
}

/// Counters kept elsewhere (storage, tracer, access log), copied in at scrape time.
pub(crate) struct External<'a> {
    pub store: Option<StoreGauges>,
    /// (pool, address, healthy) for every upstream address.
    pub upstream_health: Vec<(&'a str, String, bool)>,
    pub spans: Option<&'a super::traces::SpanCounters>,
    pub access_log_dropped: u64,
    pub profiles: Option<&'a super::profiling::ProfileCounters>,
    pub connections: Option<&'a pingora_core::apps::ConnectionLimit>,
    /// Compression dictionaries kept, and their bytes.
    pub dictionaries: (usize, u64),
}

/// The `outcome` label values of `quic_handshakes_total`.
pub(crate) const QUIC_OUTCOMES: [&str; 4] = ["accepted", "retry", "refused", "failed"];

/// The `limit` label values of `limits_refused_total`.
const LIMITS: [&str; 5] = ["uri", "headers", "body", "requests_per_client", "connections"];

fn sync_counter(c: &IntCounter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

#[derive(Clone)]
struct Handles {
    calls: IntCounter,
    duration: prometheus::Histogram,
    by_status: IntCounter,
    hit_or_miss: IntCounter,
    served: IntCounter,
    size: prometheus::Histogram,
}

/// The handle cache's keys are hashes of internal, bounded labels (route span names, known
/// methods, statuses), never raw client input: a fast fixed hasher is enough, and SipHash
/// twice per request was measurable on the hit path.
type FastState = foldhash::fast::FixedState;

thread_local! {
    static HANDLES: std::cell::RefCell<std::collections::HashMap<u64, Handles, FastState>> =
        std::cell::RefCell::new(std::collections::HashMap::with_hasher(FastState::default()));
}

pub(crate) fn counter_vec(r: &Registry, n: &MetricName, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(n.name, n.help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}
pub(crate) fn counter(r: &Registry, n: &MetricName) -> prometheus::Result<IntCounter> {
    let c = IntCounter::with_opts(Opts::new(n.name, n.help))?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}
pub(crate) fn gauge(r: &Registry, n: &MetricName) -> prometheus::Result<IntGauge> {
    let g = IntGauge::with_opts(Opts::new(n.name, n.help))?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub(crate) fn new(service_name: &str, labels: &StartLabels<'_>) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let span_calls = counter_vec(&r, &SPAN_CALLS, &SPAN_LABELS)?;
        let span_duration =
            HistogramVec::new(HistogramOpts::new(SPAN_DURATION.name, SPAN_DURATION.help).buckets(SPAN_BUCKETS_MS.to_vec()), &SPAN_LABELS)?;
        r.register(Box::new(span_duration.clone()))?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(UPSTREAM_DURATION.name, UPSTREAM_DURATION.help).buckets(UPSTREAM_BUCKETS_MS.to_vec()),
            &["pool"],
        )?;
        r.register(Box::new(upstream_duration.clone()))?;
        let response_size = HistogramVec::new(
            HistogramOpts::new(RESPONSE_SIZE.name, RESPONSE_SIZE.help).buckets(RESPONSE_SIZE_BUCKETS.to_vec()),
            &RESPONSE_SIZE_LABELS,
        )?;
        r.register(Box::new(response_size.clone()))?;
        let upstream_healthy = GaugeVec::new(Opts::new(UPSTREAM_HEALTHY.name, UPSTREAM_HEALTHY.help), &["pool", "address"])?;
        r.register(Box::new(upstream_healthy.clone()))?;
        let uptime = Gauge::with_opts(Opts::new(UPTIME.name, UPTIME.help))?;
        r.register(Box::new(uptime.clone()))?;
        let build = IntGauge::with_opts(Opts::new(BUILD_INFO.name, BUILD_INFO.help).const_label("version", env!("CARGO_PKG_VERSION")))?;
        build.set(1);
        r.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

        let m = Metrics {
            service_name: service_name.to_string(),
            span_calls,
            span_duration,
            cache_hit: counter(&r, &CACHE_HIT)?,
            cache_miss: counter(&r, &CACHE_MISS)?,
            cache_requests: counter_vec(&r, &CACHE_REQUESTS, &["cache_status"])?,
            cache_entries: gauge(&r, &CACHE_ENTRIES)?,
            cache_size: gauge(&r, &CACHE_SIZE)?,
            dictionaries: gauge(&r, &COMPRESSION_DICTIONARIES)?,
            dictionary_bytes: gauge(&r, &COMPRESSION_DICTIONARY_BYTES)?,
            cache_capacity: gauge(&r, &CACHE_CAPACITY)?,
            cache_evictions: counter(&r, &CACHE_EVICTIONS)?,
            cache_purged: counter_vec(&r, &CACHE_PURGED, &["reason"])?,
            served_bytes: counter_vec(&r, &CACHE_SERVED_BYTES, &["source"])?,
            coalesced: counter(&r, &CACHE_COALESCED)?,
            invalidation_skipped: counter(&r, &CACHE_INVALIDATION_SKIPPED)?,
            compression_bytes: counter_vec(&r, &COMPRESSION_BYTES, &["route", "encoding", "stage"])?,
            recompressed: counter_vec(&r, &COMPRESSION_RECOMPRESSED, &["encoding", "outcome"])?,
            recompress_saved: counter_vec(&r, &COMPRESSION_RECOMPRESS_SAVED, &["encoding"])?,
            background: counter_vec(&r, &CACHE_BACKGROUND_REFRESHES, &["outcome"])?,
            upstream_duration,
            response_size,
            upstream_errors: counter_vec(&r, &UPSTREAM_ERRORS, &["pool", "kind"])?,
            upstream_healthy,
            limits_refused: counter_vec(&r, &LIMITS_REFUSED, &["limit"])?,
            auth_checks: counter_vec(&r, &AUTH_CHECKS, &["outcome"])?,
            quic_handshakes: counter_vec(&r, &QUIC_HANDSHAKES, &["outcome"])?,
            connections_open: gauge(&r, &CONNECTIONS_OPEN)?,
            uptime,
            spans_exported: counter(&r, &TRACE_SPANS_EXPORTED)?,
            spans_dropped: counter(&r, &TRACE_SPANS_DROPPED)?,
            log_dropped: counter(&r, &ACCESS_LOG_DROPPED)?,
            profiles_ok: IntCounter::with_opts(Opts::new(PROFILES_PUSHED.name, PROFILES_PUSHED.help).const_label("outcome", "ok"))?,
            profiles_failed: IntCounter::with_opts(Opts::new(PROFILES_PUSHED.name, PROFILES_PUSHED.help).const_label("outcome", "failed"))?,
            started: Instant::now(),
            registry: r,
        };
        m.registry.register(Box::new(m.profiles_ok.clone()))?;
        m.registry.register(Box::new(m.profiles_failed.clone()))?;
        // Every cache status appears from the start, so rate() queries have a series at 0.
        for s in labels.cache_statuses {
            m.cache_requests.with_label_values(&[s]);
            m.background.with_label_values(&[s]);
        }
        for reason in labels.purge_reasons {
            m.cache_purged.with_label_values(&[reason]);
        }

        for src in ["cache", "origin"] {
            m.served_bytes.with_label_values(&[src]);
        }
        for limit in LIMITS {
            m.limits_refused.with_label_values(&[limit]);
        }
        for outcome in QUIC_OUTCOMES {
            m.quic_handshakes.with_label_values(&[outcome]);
        }
        for outcome in labels.auth_outcomes {
            m.auth_checks.with_label_values(&[outcome]);
        }
        Ok(m)
    }

    /// Where components register their own instruments (the shared tier's).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A client request (never a background refresh: those go to [`Self::background_refresh`]).
    /// `cache_on`: whether this Portier has a cache. One without (a front that only spreads
    /// requests over caching replicas) counts no cache hits, misses or served bytes, so that
    /// sums over every Portier (the dashboards') count each request's cache answer once.
    pub(crate) fn record_request(&self, r: &RequestRecord<'_>, cache_on: bool) {
        let h = self.handles(r);
        h.calls.inc();
        h.duration.observe(r.duration_ms);
        h.size.observe(r.bytes as f64);
        if cache_on {
            h.by_status.inc();
            h.hit_or_miss.inc();
            h.served.inc_by(r.bytes);
        }
    }

    /// The metric children for one label combination, cached per thread: resolving seven
    /// label values through the registry on every request cost measurable throughput.
    fn handles(&self, r: &RequestRecord<'_>) -> Handles {
        use std::hash::BuildHasher;
        let key = FastState::default().hash_one((
            self as *const Metrics as usize,
            r.span_name,
            r.method_label,
            r.status,
            r.cache_status.name,
            r.route,
            r.content_type,
        ));
        HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(h) = cache.get(&key) {
                return h.clone();
            }
            let status = r.status.to_string();
            let status_code = if r.status >= 500 { "STATUS_CODE_ERROR" } else { "STATUS_CODE_UNSET" };
            let labels = [
                self.service_name.as_str(),
                r.span_name,
                "SPAN_KIND_SERVER",
                status_code,
                r.method_label,
                status.as_str(),
                r.cache_status.name,
            ];
            let from_cache = r.cache_status.from_store;
            let h = Handles {
                calls: self.span_calls.with_label_values(&labels),
                duration: self.span_duration.with_label_values(&labels),
                by_status: self.cache_requests.with_label_values(&[r.cache_status.name]),
                hit_or_miss: if from_cache { self.cache_hit.clone() } else { self.cache_miss.clone() },
                served: self.served_bytes.with_label_values(&[if from_cache { "cache" } else { "origin" }]),
                size: self.response_size.with_label_values(&[if r.route.is_empty() { "none" } else { r.route }, r.content_type.as_str()]),
            };
            // Label sets are bounded (routes x methods x statuses x cache statuses), but a
            // stream of odd methods or statuses must not grow this without limit.
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(key, h.clone());
            h
        })
    }

    pub(crate) fn background_refresh(&self, outcome: &'static str) {
        self.background.with_label_values(&[outcome]).inc();
    }

    /// `reason`: [`crate::cache::purge::PurgeReason`]'s label.
    pub(crate) fn purged(&self, reason: &'static str, n: usize) {
        self.cache_purged.with_label_values(&[reason]).inc_by(n as u64);
    }

    pub(crate) fn upstream_response(&self, pool: &str, ms: f64) {
        self.upstream_duration.with_label_values(&[pool]).observe(ms);
    }

    /// One background re-compression: `outcome` is `replaced` (with `saved` bytes less),
    /// `not_smaller`, `changed` (the stored copy moved on), `failed` or `dropped` (queue full).
    pub(crate) fn recompressed(&self, encoding: &str, outcome: &str, saved: usize) {
        self.recompressed.with_label_values(&[encoding, outcome]).inc();
        if saved > 0 {
            self.recompress_saved.with_label_values(&[encoding]).inc_by(saved as u64);
        }
    }

    /// One compressed body: `before` bytes in, `after` bytes out.
    pub(crate) fn compressed(&self, route: &str, encoding: &str, before: usize, after: usize) {
        self.compression_bytes.with_label_values(&[route, encoding, "in"]).inc_by(before as u64);
        self.compression_bytes.with_label_values(&[route, encoding, "out"]).inc_by(after as u64);
    }

    /// How a Basic authentication check ended.
    pub(crate) fn auth_checked(&self, outcome: &'static str) {
        self.auth_checks.with_label_values(&[outcome]).inc();
    }

    /// An HTTP/3 connection attempt's outcome (one of [`QUIC_OUTCOMES`]).
    pub(crate) fn quic_handshake(&self, outcome: &'static str) {
        self.quic_handshakes.with_label_values(&[outcome]).inc();
    }

    /// A request refused by a `[limits]` setting (one of [`LIMITS`]).
    pub(crate) fn limited(&self, limit: &'static str) {
        self.limits_refused.with_label_values(&[limit]).inc();
    }

    /// Body bytes served so far: (from the cache, from the origin).
    pub(crate) fn served_bytes(&self) -> (u64, u64) {
        (self.served_bytes.with_label_values(&["cache"]).get(), self.served_bytes.with_label_values(&["origin"]).get())
    }

    /// `kind`: [`crate::upstream::UpstreamErrorKind`]'s label.
    pub(crate) fn upstream_error(&self, pool: &str, kind: &'static str) {
        self.upstream_errors.with_label_values(&[pool, kind]).inc();
    }

    /// The counters `portier report` compares between the start and the end of a run, summed
    /// over every label but the ones it reads (`cache_requests_total{cache_status="HIT"}`; a
    /// histogram as its `_sum` and `_count`): a few dozen numbers, whatever the routes.
    pub(crate) fn totals(&self) -> std::collections::BTreeMap<String, f64> {
        let keep: [(&str, &[&str]); 8] = [
            (COMPRESSION_RECOMPRESS_SAVED.name, &[]),
            (CACHE_HIT.name, &[]),
            (CACHE_REQUESTS.name, &["cache_status"]),
            (CACHE_SERVED_BYTES.name, &["source"]),
            (COMPRESSION_BYTES.name, &["encoding", "stage"]),
            (SPAN_CALLS.name, &["http_status_code"]),
            (UPSTREAM_DURATION.name, &[]),
            (RESPONSE_SIZE.name, &[]),
        ];
        let mut out = std::collections::BTreeMap::new();
        for family in self.registry.gather() {
            let Some((name, labels)) = keep.iter().find(|(n, _)| *n == family.name()) else { continue };
            for m in family.get_metric() {
                let selected: Vec<String> = labels
                    .iter()
                    .filter_map(|l| m.get_label().iter().find(|p| p.name() == *l).map(|p| format!("{l}=\"{}\"", p.value())))
                    .collect();
                let key = if selected.is_empty() { name.to_string() } else { format!("{name}{{{}}}", selected.join(",")) };
                if m.get_histogram().get_sample_count() > 0 || family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
                    let h = m.get_histogram();
                    *out.entry(format!("{key}_sum")).or_insert(0.0) += h.get_sample_sum();
                    *out.entry(format!("{key}_count")).or_insert(0.0) += h.get_sample_count() as f64;
                } else {
                    *out.entry(key).or_insert(0.0) += m.get_counter().get_value();
                }
            }
        }
        // Portier's own CPU time, to the microsecond: the process collector's counter is whole
        // seconds, too coarse for a run of a few minutes.
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one rusage into the pointer it is given.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0 {
            // SAFETY: initialised by the successful call above (and zeroed before it).
            let u = unsafe { usage.assume_init() };
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            out.insert("process_cpu_seconds_total".into(), secs(u.ru_utime) + secs(u.ru_stime));
        }
        out
    }

    /// Refreshes scrape-time values and renders the text exposition format.
    pub(crate) fn render(&self, ext: &External<'_>) -> String {
        if let Some(sp) = ext.spans {
            sync_counter(&self.spans_exported, sp.exported.load(std::sync::atomic::Ordering::Relaxed));
            sync_counter(&self.spans_dropped, sp.dropped.load(std::sync::atomic::Ordering::Relaxed));
        }
        sync_counter(&self.log_dropped, ext.access_log_dropped);
        if let Some(c) = ext.connections {
            self.connections_open.set(c.open() as i64);
            sync_counter(&self.limits_refused.with_label_values(&["connections"]), c.refused());
        }
        if let Some(p) = ext.profiles {
            sync_counter(&self.profiles_ok, p.pushed.load(std::sync::atomic::Ordering::Relaxed));
            sync_counter(&self.profiles_failed, p.failed.load(std::sync::atomic::Ordering::Relaxed));
        }
        if let Some(s) = &ext.store {
            self.cache_entries.set(s.entries as i64);
            self.cache_size.set(s.bytes as i64);
            self.cache_capacity.set(s.capacity as i64);
            sync_counter(&self.cache_evictions, s.evictions);
        }
        self.dictionaries.set(ext.dictionaries.0 as i64);
        self.dictionary_bytes.set(ext.dictionaries.1 as i64);
        for (pool, addr, healthy) in &ext.upstream_health {
            self.upstream_healthy.with_label_values(&[pool, addr.as_str()]).set(if *healthy { 1.0 } else { 0.0 });
        }
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
