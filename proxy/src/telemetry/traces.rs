//! OTLP traces: one server span per request, a client child span for the origin request,
//! W3C `traceparent`/`tracestate` taken from the client and passed to the origin. Export runs
//! on the SDK's batch thread; when the collector is down or slow, spans are dropped and
//! counted, and requests never wait.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use pingora_http::RequestHeader;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TraceError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Span accounting, exported as metrics.
#[derive(Debug, Default)]
pub(crate) struct SpanCounters {
    pending: AtomicUsize,
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

/// Wraps the OTLP exporter to count what it delivered and what it lost.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    counters: Arc<SpanCounters>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let r = self.inner.export(batch).await;
        self.counters.pending.fetch_sub(n.min(self.counters.pending.load(Ordering::Relaxed)), Ordering::Relaxed);
        match &r {
            Ok(()) => self.counters.exported.fetch_add(n as u64, Ordering::Relaxed),
            Err(_) => self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed),
        };
        r
    }
    fn shutdown_with_timeout(&self, t: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r)
    }
}

/// Drops (and counts) ended spans beyond the queue size before they reach the batch
/// processor, so the drop count is exact and nothing ever blocks.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    counters: Arc<SpanCounters>,
    limit: usize,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx)
    }
    fn on_end(&self, span: SpanData) {
        if self.counters.pending.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r)
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct RequestInjector<'a>(&'a mut RequestHeader);
impl Injector for RequestInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let _ = self.0.insert_header(key.to_string(), value);
    }
}

/// What the sampler and exporter are set to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceSettings {
    pub endpoint: String,
    pub service_name: String,
    pub ratio: f64,
    pub queue_size: usize,
}

/// The OTel sampler names (`OTEL_TRACES_SAMPLER`) mapped to a parent-based ratio.
pub(crate) fn ratio_from_env(sampler: Option<&str>, arg: Option<&str>) -> f64 {
    let arg = arg.and_then(|a| a.trim().parse::<f64>().ok()).filter(|r| (0.0..=1.0).contains(r));
    match sampler.map(str::trim) {
        Some("always_off" | "parentbased_always_off") => 0.0,
        Some("traceidratio" | "parentbased_traceidratio") => arg.unwrap_or(1.0),
        _ => 1.0,
    }
}

pub(crate) struct Tracing {
    ratio: f64,
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    propagator: TraceContextPropagator,
    pub counters: Arc<SpanCounters>,
}

impl Tracing {
    pub(crate) fn start(s: &TraceSettings) -> Result<Tracing, TraceError> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let url = format!("{}/v1/traces", s.endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(2))
            .with_headers(Default::default())
            .build()
            .map_err(|e| TraceError::Exporter { endpoint: url, reason: e.to_string() })?;
        let counters = Arc::new(SpanCounters::default());
        let batch = BatchSpanProcessor::builder(CountingExporter { inner: exporter, counters: counters.clone() })
            .with_batch_config(
                BatchConfigBuilder::default().with_max_queue_size(s.queue_size).with_scheduled_delay(Duration::from_millis(500)).build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(s.service_name.clone()).build())
            // The ratio is applied by `decide` before any span exists; what reaches the SDK
            // is to be recorded.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_span_processor(BoundedProcessor { inner: batch, counters: counters.clone(), limit: s.queue_size })
            .build();
        let tracer = provider.tracer("portier");
        Ok(Tracing { ratio: s.ratio, provider, tracer, propagator: TraceContextPropagator::new(), counters })
    }

    /// Head sampling, decided before any SDK span exists so that unsampled requests (most of
    /// them at a 10% ratio) cost a random number. Parent-based: a client's sampled flag is
    /// followed, a client's unsampled `traceparent` is forwarded as is (and its trace id
    /// logged). A request Portier chooses not to sample sends the origin no `traceparent` at
    /// all: an origin SDK with the default parent-based sampler would otherwise drop its own
    /// span for it, and the application's span metrics would read the ratio of its traffic
    /// (issue 23). Its own sampler decides, as if Portier were not there; the access log and
    /// the origin still share the request's `X-Request-Id`.
    pub(crate) fn decide(&self, req: &RequestHeader) -> Decision {
        match parse_traceparent(req) {
            Some((_, true)) => Decision::Record,
            Some((id, false)) => Decision::Skip { trace_id: Some(id) },
            None if self.ratio >= 1.0 || (rand_u64() as f64) < self.ratio * u64::MAX as f64 => Decision::Record,
            None => Decision::Skip { trace_id: None },
        }
    }

    /// Starts the server span, child of the client's `traceparent` when there is one.
    pub(crate) fn server_span(&self, req: &RequestHeader, name: String, start: SystemTime) -> Context {
        let parent = self.propagator.extract(&HeaderExtractor(&req.headers));
        let span =
            self.tracer.span_builder(name).with_kind(SpanKind::Server).with_start_time(start).start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Starts the client span for the origin request and writes its `traceparent` (and the
    /// client's `tracestate`) into the forwarded request, replacing the client's.
    pub(crate) fn client_span(&self, server: &Context, name: String, req: &mut RequestHeader) -> Context {
        let span = self.tracer.span_builder(name).with_kind(SpanKind::Client).start_with_context(&self.tracer, server);
        let cx = server.with_span(span);
        self.propagator.inject_context(&cx, &mut RequestInjector(req));
        cx
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(2));
    }
}

/// Ends a span with the HTTP attributes both semantic-convention generations name, so a
/// collector's span metrics find `http.status_code` whichever it uses. The attributes are
/// only built for sampled spans.
pub(crate) fn finish(cx: &Context, status: u16, attrs: impl FnOnce() -> Vec<KeyValue>) {
    let span = cx.span();
    if !span.is_recording() {
        span.end();
        return;
    }
    let attrs = attrs();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    span.set_attribute(KeyValue::new("http.status_code", i64::from(status)));
    for a in attrs {
        span.set_attribute(a);
    }
    if status >= 500 || status == 0 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
}

pub(crate) fn trace_id(cx: &Context) -> Option<String> {
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// What to do about tracing for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Create spans.
    Record,
    /// No spans; log `trace_id` (the client's, when it sent an unsampled `traceparent`).
    Skip { trace_id: Option<String> },
}

/// xorshift64*, seeded per thread: sampling needs speed, not secrecy.
fn rand_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7));
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// `(trace id, sampled)` of a valid incoming `traceparent`.
fn parse_traceparent(req: &RequestHeader) -> Option<(String, bool)> {
    const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    let tp = req.headers.get(TRACEPARENT)?.to_str().ok()?.trim();
    let mut parts = tp.split('-');
    let (v, id, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0');
    if v.len() != 2 || v == "ff" || !hex(id, 32) || !hex(span, 16) || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((id.to_ascii_lowercase(), flags & 1 == 1))
}

/// The trace id of an incoming `traceparent` (for log correlation when tracing is off).
pub(crate) fn incoming_trace_id(req: &RequestHeader) -> Option<String> {
    parse_traceparent(req).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_env_and_traceparent_parsing() {
        assert_eq!(ratio_from_env(Some("parentbased_traceidratio"), Some("0.1")), 0.1);
        assert_eq!(ratio_from_env(Some("always_off"), None), 0.0);
        assert_eq!(ratio_from_env(Some("traceidratio"), Some("7")), 1.0, "out of range falls back");
        assert_eq!(ratio_from_env(None, None), 1.0);
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(incoming_trace_id(&r).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        r.insert_header("traceparent", "garbage").unwrap();
        assert_eq!(incoming_trace_id(&r), None);
        r.insert_header("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01").unwrap();
        assert_eq!(incoming_trace_id(&r), None, "all-zero trace id is invalid");
        r.insert_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(parse_traceparent(&r), Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), false)));
    }
}
