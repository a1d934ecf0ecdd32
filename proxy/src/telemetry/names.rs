//! Every metric Portier exports, in one table. Names follow Prometheus conventions, except the
//! `traces_spanmetrics_*` series, which keep the exact names, labels and millisecond buckets
//! the OpenTelemetry Collector's spanmetrics connector produces, so the runbook's PromQL works
//! unchanged with `service_name="proxy"`.

pub(crate) struct MetricName {
    pub name: &'static str,
    pub help: &'static str,
}

const fn m(name: &'static str, help: &'static str) -> MetricName {
    MetricName { name, help }
}

pub(crate) const SPAN_CALLS: MetricName =
    m("traces_spanmetrics_calls_total", "Server spans (client requests), as the spanmetrics connector counts them");
pub(crate) const SPAN_DURATION: MetricName =
    m("traces_spanmetrics_duration_milliseconds", "Server span duration in milliseconds, as the spanmetrics connector measures it");
pub(crate) const SPAN_LABELS: [&str; 7] =
    ["service_name", "span_name", "span_kind", "status_code", "http_method", "http_status_code", "cache_status"];
/// The connector's default explicit buckets, in milliseconds.
pub(crate) const SPAN_BUCKETS_MS: [f64; 16] =
    [2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0, 10000.0, 15000.0];

pub(crate) const CACHE_HIT: MetricName =
    m("cache_hit_total", "Client requests answered from cache without asking the origin (HIT and STALE)");
pub(crate) const CACHE_MISS: MetricName =
    m("cache_miss_total", "Client requests that went to the origin (MISS, EXPIRED, REVALIDATED, BYPASS)");
pub(crate) const CACHE_REQUESTS: MetricName = m("cache_requests_total", "Client requests by cache status");
pub(crate) const CACHE_SHARED_LOOKUPS: MetricName = m(
    "cache_shared_lookups_total",
    "Lookups of memory misses in the shared tier (Redis), by result: hit, miss, error, corrupt (a value that failed its length or checksum check: deleted, not served); concurrent misses for one key share one",
);
pub(crate) const CACHE_SHARED_CALLS: MetricName =
    m("cache_shared_calls_total", "Calls to the shared tier by operation and outcome (ok, error, timeout, skipped)");
pub(crate) const CACHE_SHARED_DURATION: MetricName = m("cache_shared_call_duration_seconds", "Shared-tier call latency by operation");
pub(crate) const CACHE_SHARED_LOCK_WAIT: MetricName =
    m("cache_shared_lock_wait_seconds", "Time a miss waited for another replica's fill of the same object");
pub(crate) const CACHE_SHARED_PURGE_DELAY: MetricName =
    m("cache_shared_purge_delay_seconds", "From a purge's publication by one replica to its application by another");
pub(crate) const CACHE_SHARED_UP: MetricName = m("cache_shared_up", "1 while the shared tier is connected and its circuit closed");
pub(crate) const CACHE_DISK_LOOKUPS: MetricName = m(
    "cache_disk_lookups_total",
    "Lookups of memory misses in the disk tier, by result: hit, miss, corrupt (a file that failed its length or checksum check: deleted, not served)",
);
pub(crate) const CACHE_DISK_DISCARDED: MetricName = m(
    "cache_disk_discarded_total",
    "Files of the disk tier deleted unserved, by reason: truncated, checksum, expired, unreadable, interrupted (a write cut by a crash)",
);
pub(crate) const CACHE_DISK_EVICTIONS: MetricName =
    m("cache_disk_evictions_total", "Files of the disk tier deleted to stay within cache.disk.max_size");
pub(crate) const CACHE_DISK_WRITE_ERRORS: MetricName =
    m("cache_disk_write_errors_total", "Writes to the disk tier that failed (a full or read-only disk): the entry stays in memory only");
pub(crate) const CACHE_DISK_WRITES_DROPPED: MetricName = m(
    "cache_disk_writes_dropped_total",
    "Fills not written to the disk tier because 64 writes were already waiting: the entry stays in memory only",
);
pub(crate) const CACHE_DISK_ENTRIES: MetricName = m("cache_disk_entries", "Responses stored in the disk tier");
pub(crate) const CACHE_DISK_BYTES: MetricName = m("cache_disk_bytes", "Bytes of the disk tier's files");
pub(crate) const CACHE_DISK_CAPACITY: MetricName = m("cache_disk_capacity_bytes", "The disk tier's budget (cache.disk.max_size)");
pub(crate) const CACHE_DISK_SCAN_DONE: MetricName =
    m("cache_disk_scan_done", "1 once the disk tier has read back what it held at start (before that, what it has not reached is a miss)");
/// Shared-tier call latencies, in seconds: a local Redis answers in ~0.1 ms.
pub(crate) const SHARED_BUCKETS_S: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
/// Lock waits and purge fan-out, in seconds.
pub(crate) const SHARED_WAIT_BUCKETS_S: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
pub(crate) const CACHE_ENTRIES: MetricName = m("cache_entries", "Responses stored in the cache");
pub(crate) const CACHE_SIZE: MetricName = m("cache_size_bytes", "Bytes used by stored responses (headers, bodies and bookkeeping)");
pub(crate) const CACHE_CAPACITY: MetricName = m("cache_capacity_bytes", "The cache's byte budget (cache.max_size)");
pub(crate) const CACHE_EVICTIONS: MetricName = m("cache_evictions_total", "Entries evicted to stay within the byte budget");
pub(crate) const CACHE_PURGED: MetricName = m("cache_purged_total", "Entries removed or expired by purges and invalidations, by reason");
pub(crate) const CACHE_SERVED_BYTES: MetricName =
    m("cache_served_bytes_total", "Response body bytes sent to clients, by source (cache or origin)");
pub(crate) const CACHE_INVALIDATION_SKIPPED: MetricName = m(
    "cache_invalidation_skipped_total",
    "Invalidation rules that matched a request but could not read its parameter, and so purged nothing",
);
pub(crate) const CACHE_COALESCED: MetricName =
    m("cache_coalesced_total", "Requests that waited for another request's origin fetch instead of making their own");
pub(crate) const CACHE_BACKGROUND_REFRESHES: MetricName =
    m("cache_background_refreshes_total", "stale-while-revalidate refreshes made in the background, by outcome");

pub(crate) const COMPRESSION_BYTES: MetricName = m(
    "compression_bytes_total",
    "Response body bytes compressed on their way into the cache, by route, encoding and stage (in: before, out: after)",
);

pub(crate) const COMPRESSION_RECOMPRESSED: MetricName = m(
    "compression_recompressed_total",
    "Stored responses compressed again in the background at the strongest level, by encoding and outcome",
);
pub(crate) const COMPRESSION_RECOMPRESS_SAVED: MetricName =
    m("compression_recompress_saved_bytes_total", "Bytes the background re-compression took off stored responses, by encoding");
pub(crate) const COMPRESSION_DICTIONARIES: MetricName =
    m("compression_dictionaries", "Compression dictionaries (RFC 9842) kept to answer Available-Dictionary with dcz");
pub(crate) const COMPRESSION_DICTIONARY_BYTES: MetricName =
    m("compression_dictionary_bytes", "Bytes the kept compression dictionaries count against their budget (bodies and bookkeeping)");

/// OpenTelemetry's `http.server.response.body.size`, as Prometheus names it.
pub(crate) const RESPONSE_SIZE: MetricName =
    m("http_server_response_body_size_bytes", "Response body bytes sent to clients (after compression), by route pattern and content type");
pub(crate) const RESPONSE_SIZE_LABELS: [&str; 2] = ["http_route", "content_type"];
/// From a tiny JSON answer to a large bundle or image, by powers of four.
pub(crate) const RESPONSE_SIZE_BUCKETS: [f64; 10] =
    [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0];

pub(crate) const UPSTREAM_DURATION: MetricName =
    m("upstream_request_duration_milliseconds", "Time from sending the request upstream to its response header, by pool");
pub(crate) const UPSTREAM_ERRORS: MetricName =
    m("upstream_errors_total", "Upstream failures by pool and kind (connect, connect_timeout, timeout, other)");
pub(crate) const UPSTREAM_HEALTHY: MetricName = m("upstream_healthy", "1 when an upstream address is considered healthy, else 0");
pub(crate) const UPSTREAM_BUCKETS_MS: [f64; 14] =
    [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0];

pub(crate) const TRACE_SPANS_EXPORTED: MetricName = m("trace_spans_exported_total", "Spans delivered to the OTLP endpoint");
pub(crate) const TRACE_SPANS_DROPPED: MetricName =
    m("trace_spans_dropped_total", "Spans dropped because the OTLP endpoint failed or the export queue was full");
pub(crate) const ACCESS_LOG_DROPPED: MetricName =
    m("access_log_dropped_total", "Access log lines dropped because stdout could not keep up");

pub(crate) const PROFILES_PUSHED: MetricName =
    m("profiles_pushed_total", "Profiles pushed to Pyroscope (each window's CPU profile, then a heap profile), by outcome (ok, failed)");

pub(crate) const LIMITS_REFUSED: MetricName = m(
    "limits_refused_total",
    "Requests and connections refused for going over a [limits] setting, by limit (uri, headers, body, requests_per_client, connections)",
);
pub(crate) const AUTH_CHECKS: MetricName =
    m("auth_checks_total", "Basic authentication checks by outcome (verified, remembered, missing, failed, rate_limited: 429, busy: 503)");
pub(crate) const QUIC_HANDSHAKES: MetricName = m(
    "quic_handshakes_total",
    "HTTP/3 connection attempts by outcome (accepted, retry: asked to prove its address first, refused: limits.max_connections, failed: timed out or broken)",
);
pub(crate) const CONNECTIONS_OPEN: MetricName = m("connections_open", "Client connections open on the public listeners");

pub(crate) const UPTIME: MetricName = m("portier_uptime_seconds", "Seconds since the process started");
pub(crate) const BUILD_INFO: MetricName = m("portier_build_info", "Always 1; the version label says which Portier runs");
