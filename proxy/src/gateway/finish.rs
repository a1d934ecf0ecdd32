//! The last step: one summary of the request feeds the metrics, the span and the access log.

use super::{Ctx, State};
use crate::cache::status::CacheStatus;
use crate::telemetry::method::OTHER;
use crate::telemetry::{traces, RequestSummary};
use opentelemetry::KeyValue;
use pingora_proxy::Session;

impl State {
    pub(super) fn finish(&self, session: &mut Session, ctx: &mut Ctx, error: Option<&pingora_error::Error>) {
        let phase_status = if ctx.cache.answered_from_memory { CacheStatus::Hit } else { CacheStatus::from_phase(session.cache.phase()) };
        self.release_fill_lock(ctx, phase_status, error.is_none());
        if session.subrequest_ctx.is_some() {
            self.metrics.background_refresh(phase_status.as_str());
            return;
        }
        if let Some(cx) = ctx.trace.upstream.take() {
            // The origin never answered (connect failure, timeout).
            let pool = ctx.route.pool().map(|p| p.name.clone()).unwrap_or_default();
            traces::finish(&cx, 0, || vec![KeyValue::new("portier.pool", pool)]);
        }
        let req = session.req_header();
        let trace_id = match (&ctx.trace.server, ctx.trace.unsampled_trace_id.take()) {
            (Some(cx), _) => traces::trace_id(cx),
            (None, Some(id)) => Some(id),
            (None, None) => traces::incoming_trace_id(req),
        };
        // A refused request logs the target it sent (escaped by the log), not Pingora's `/`.
        let raw_target;
        let path = match &ctx.request.target {
            Some(t) => t.path(),
            None => {
                raw_target = String::from_utf8_lossy(req.raw_path());
                &raw_target
            }
        };
        let no_route;
        let span_name = if ctx.route.span_name.is_empty() {
            no_route = format!("{} (no route)", ctx.request.method_label);
            &no_route
        } else {
            &ctx.route.span_name
        };
        let summary = RequestSummary {
            method: req.method.as_str(),
            method_label: ctx.request.method_label,
            span_name,
            host: ctx.request.target.as_ref().map_or("", |t| t.host()),
            path,
            protocol: crate::telemetry::protocol_version(req.version),
            scheme: match &ctx.request.target {
                Some(t) => t.scheme.as_str(),
                None if session.digest().is_some_and(|d| d.ssl_digest.is_some()) => "https",
                None => "http",
            },
            route: ctx.route.pattern(),
            pool: ctx.route.pool().map_or("", |p| p.name.as_str()),
            status: session.as_downstream().response_written().map(|r| r.status.as_u16()).or(ctx.local_status).unwrap_or(0),
            cache_status: ctx.cache.outcome.as_ref().map_or(phase_status, |o| o.status).label(),
            duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
            origin_ms: ctx.upstream.time.map(|d| d.as_secs_f64() * 1000.0),
            bytes: ctx.body_bytes,
            encoding: session
                .as_downstream()
                .response_written()
                .and_then(|r| r.headers.get(http::header::CONTENT_ENCODING))
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            content_type: crate::telemetry::ContentClass::of(
                session.as_downstream().response_written().and_then(|r| r.headers.get(http::header::CONTENT_TYPE)).map(|v| v.as_bytes()),
            ),
            client: ctx.request.client,
            request_id: &ctx.request.id,
            trace_id: trace_id.as_deref(),
            stored: error.is_none() && ctx.cache.outcome.as_ref().is_some_and(|o| o.details.stored),
        };
        if self.config.telemetry.metrics {
            self.metrics.record_request(&summary, self.cache().is_some());
            self.record_for_operator(ctx, &summary);
        }
        if let Some(cx) = ctx.trace.server.take() {
            traces::finish(&cx, summary.status, || span_attributes(&summary));
        }
        self.access_log.log(&summary);
    }
}

impl State {
    /// Counts a request by path for the admin `/ui` page, when the cache had a say in it.
    fn record_for_operator(&self, ctx: &Ctx, summary: &RequestSummary<'_>) {
        use crate::cache::status::CacheDecision;
        if let (Some(o), CacheDecision::Eligible | CacheDecision::NotStored(_) | CacheDecision::Bypass(_)) =
            (&ctx.cache.outcome, ctx.cache.decision)
        {
            self.operator.record(summary.path, o.status, o.details.detail.or(o.details.fwd));
        }
    }

    /// A miss that took the shared tier's fill lock and stored nothing (not storable, the
    /// origin failed, the client left) gives it up now instead of making the other replicas
    /// wait for it to expire. A stored fill released it already.
    fn release_fill_lock(&self, ctx: &Ctx, status: CacheStatus, ok: bool) {
        let stored = ok && ctx.cache.outcome.as_ref().is_some_and(|o| o.details.stored);
        if stored || !matches!(status, CacheStatus::Miss | CacheStatus::Bypass | CacheStatus::Expired) {
            return;
        }
        if let (Some(cache), Some(key)) = (self.cache(), &ctx.cache.key_hash) {
            cache.request_ended(key);
        }
    }
}

fn span_attributes(s: &RequestSummary<'_>) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("http.request.method", s.method_label.to_string()),
        KeyValue::new("http.method", s.method_label.to_string()),
        KeyValue::new("http.route", s.route.to_string()),
        KeyValue::new("network.protocol.version", s.protocol),
        KeyValue::new("url.scheme", s.scheme),
        KeyValue::new("cache.status", s.cache_status.name),
        KeyValue::new("portier.pool", s.pool.to_string()),
        KeyValue::new("portier.request_id", s.request_id.to_string()),
    ];
    if s.method_label == OTHER {
        attrs.push(KeyValue::new("http.request.method_original", s.method.to_string()));
    }
    attrs
}
