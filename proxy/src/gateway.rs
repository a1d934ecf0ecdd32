//! The Pingora `ProxyHttp` implementation, read top to bottom as a request's steps. Each step
//! calls into the module that owns the concept (routing, upstream, forwarding, cache policy,
//! cache status, invalidation, purge, telemetry, error pages).

use crate::cache::policy::{self, RequestRules};
use crate::cache::status::{self, CacheStatus, Details};
use crate::cache::url::CacheUrl;
use crate::cache::{conditional, invalidate, key, purge, CacheLayer};
use crate::config::Config;
use crate::error_page;
use crate::forwarding;
use crate::routing::Router;
use crate::target::{self, Scheme, Target};
use crate::telemetry::access_log::{AccessLog, AccessRecord};
use crate::telemetry::method::KnownMethods;
use crate::telemetry::metrics::{Metrics, RequestRecord};
use crate::telemetry::traces::{self, Tracing};
use opentelemetry::KeyValue;

use crate::upstream::{Pool, Upstreams};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::{CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Requests being served right now; graceful shutdown waits for this to reach zero.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Largest request body kept to read an invalidation rule's JSON field from.
const MAX_CAPTURED_BODY: usize = 16 * 1024;

struct InFlight;
impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything a request may need, built once at start-up.
pub struct State {
    pub config: Config,
    pub router: Router,
    pub upstreams: Arc<Upstreams>,
    pub cache: Option<CacheLayer>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub tracing: Option<Tracing>,
    pub profiling: crate::telemetry::profiling::Profiling,
    pub methods: KnownMethods,
}

impl State {
    pub fn new(config: Config, upstreams: Arc<Upstreams>, metrics: Metrics, tracing: Option<Tracing>) -> Self {
        let cache = config.cache.enabled.then(|| CacheLayer::new(&config));
        let access_log = AccessLog::new(config.telemetry.access_log.format);
        let profiling = crate::telemetry::profiling::Profiling::new();
        let methods = KnownMethods::new(
            config.invalidation.iter().filter_map(|r| http::Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()).ok()),
        );
        State { router: Router::new(&config.routes), config, upstreams, cache, metrics, access_log, tracing, profiling, methods }
    }
}

pub struct Gateway {
    pub state: Arc<State>,
}

/// Per-request state.
pub struct Ctx {
    pub started: Instant,
    pub started_at: SystemTime,
    /// The server span (and, while the origin is asked, the client span) when tracing is on.
    pub trace: Option<opentelemetry::Context>,
    pub upstream_trace: Option<opentelemetry::Context>,
    /// Unsampled requests: the trace id for the log, and the `traceparent` for the origin.
    pub unsampled_trace_id: Option<String>,
    pub inject_traceparent: Option<String>,
    pub request_id: String,
    /// The checked target; None until `request_filter` accepted it (and for refused requests).
    pub(crate) target: Option<Target>,
    /// The cache key's URL, derived from `target`.
    pub(crate) url: Option<CacheUrl>,
    /// The method as metrics and spans record it (`_OTHER` for unknown ones).
    pub method_label: &'static str,
    /// Index of the matched route.
    pub route: Option<usize>,
    pub span_name: String,
    pub pool: Option<Arc<Pool>>,
    /// Address indexes of the pool already tried for this request.
    pub tried: Vec<usize>,
    pub backend: Option<usize>,
    pub upstream_started: Option<Instant>,
    pub upstream_time: Option<Duration>,
    pub origin_status: Option<u16>,
    /// The cache may serve or store this request.
    pub cache_on: bool,
    /// Why not, for `Cache-Status: fwd=...` (`method`, `request`, `bypass`).
    pub bypass_kind: Option<&'static str>,
    pub req_rules: RequestRules,
    pub no_store_reason: Option<policy::NoStore>,
    /// Headers of an upstream 304, merged in full into the stored response.
    pub revalidation_304: Option<ResponseHeader>,
    pub cache_status: Option<CacheStatus>,
    pub rules: Vec<usize>,
    pub captured_body: Option<Vec<u8>>,
    pub body_bytes: u64,
    pub error_status: Option<u16>,
    _in_flight: InFlight,
}

fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri.host())
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

/// The headers that prove the cache, readable by a cross-origin page's script.
const EXPOSED: &str = "X-Cache, Age, ETag, Cache-Status, Server-Timing, X-Request-Id";

/// On a CORS response (the origin set `Access-Control-Allow-Origin`), lets the page's script
/// read the cache headers and DevTools show `Server-Timing` for the cross-origin call.
fn expose_cache_headers(resp: &mut ResponseHeader) -> Result<()> {
    let Some(allow) = resp.headers.get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN).cloned() else { return Ok(()) };
    let merged = match resp.headers.get(http::header::ACCESS_CONTROL_EXPOSE_HEADERS).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {EXPOSED}"),
        _ => EXPOSED.to_string(),
    };
    resp.insert_header(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, merged)?;
    if !resp.headers.contains_key("timing-allow-origin") {
        resp.insert_header("timing-allow-origin", allow)?;
    }
    Ok(())
}

/// Fields in the 304 that must not replace the stored ones (framing, hop-by-hop, encoding;
/// RFC 9111 §3.2).
const NOT_MERGED: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "content-encoding",
    "content-range",
];

/// RFC 9111 §4.3.4: every field of the 304 replaces the stored one (Pingora copies only five).
/// A 304 without `Date` is dated now, so the stored `Date` does not make the refreshed entry
/// look as old as the first fill.
fn merge_304(stored: &ResponseHeader, not_modified: &ResponseHeader) -> ResponseHeader {
    let mut merged = stored.clone();
    if !not_modified.headers.contains_key(http::header::DATE) {
        let _ = merged.insert_header(http::header::DATE, httpdate::fmt_http_date(SystemTime::now()));
    }
    for name in not_modified.headers.keys() {
        if NOT_MERGED.contains(&name.as_str()) {
            continue;
        }
        merged.remove_header(name);
        for v in not_modified.headers.get_all(name) {
            let _ = merged.append_header(name.clone(), v.clone());
        }
    }
    merged
}

impl Gateway {
    fn cache(&self) -> Option<&CacheLayer> {
        self.state.cache.as_ref()
    }

    /// The matched route's pattern (`/api/*`), empty when none matched.
    fn route_pattern(&self, ctx: &Ctx) -> &str {
        ctx.route.and_then(|i| self.state.router.routes().get(i)).map_or("", |r| r.pattern.as_str())
    }

    /// The server span starts when the route (and so the span name) is known; background
    /// refreshes have no client and get none.
    fn start_trace(&self, session: &Session, ctx: &mut Ctx) {
        if let (Some(t), None) = (&self.state.tracing, &session.subrequest_ctx) {
            match t.decide(session.req_header()) {
                traces::Decision::Record => ctx.trace = Some(t.server_span(session.req_header(), ctx.span_name.clone(), ctx.started_at)),
                traces::Decision::Skip { trace_id, inject } => {
                    ctx.unsampled_trace_id = Some(trace_id);
                    ctx.inject_traceparent = inject;
                }
            }
        }
    }

    async fn respond_json(session: &mut Session, status: u16, request_id: &str, body: serde_json::Value) -> Result<()> {
        let text = body.to_string();
        let mut resp = ResponseHeader::build(status, Some(5))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", text.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header(forwarding::REQUEST_ID, request_id)?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(Bytes::from(text)), true).await
    }

    /// `PURGE <url>`: only from allowed addresses or with the token; drops every variant.
    async fn purge_request(&self, session: &mut Session, ctx: &Ctx) -> Result<()> {
        let Some(cache) = self.cache() else {
            return Self::respond_json(session, 405, &ctx.request_id, serde_json::json!({"error": "the cache is disabled"})).await;
        };
        if !purge::authorized(&self.state.config.purge, client_ip(session), session.req_header()) {
            return Self::respond_json(
                session,
                403,
                &ctx.request_id,
                serde_json::json!({"error": "PURGE not allowed from this address without the token"}),
            )
            .await;
        }
        let soft = session.req_header().headers.get("x-purge-soft").is_some_and(|v| v.as_bytes() == b"1");
        let n = ctx.url.as_ref().map_or(0, |u| cache.storage.purge_key(&key::cache_key(u), soft));
        self.state.metrics.purged(if soft { "purge_method_soft" } else { "purge_method" }, n);
        let code = if n > 0 { 200 } else { 404 };
        Self::respond_json(session, code, &ctx.request_id, serde_json::json!({"purged": n, "soft": soft})).await
    }

    /// Checks the request target and Host (see [`crate::target`]) and rewrites the request to
    /// the checked origin-form target. A refused request gets a 400 and its connection is
    /// closed; `OPTIONS *` is answered here. `None` means the request has been answered.
    async fn accept_target(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Option<Target>> {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        match target::accept(session.req_header_mut(), scheme) {
            Ok(t) if t.asterisk => {
                ctx.span_name = format!("{} *", ctx.method_label);
                self.start_trace(session, ctx);
                let mut resp = ResponseHeader::build(200, Some(3))?;
                resp.insert_header("content-length", "0")?;
                resp.insert_header(forwarding::REQUEST_ID, &ctx.request_id)?;
                session.write_response_header(Box::new(resp), true).await?;
                Ok(None)
            }
            Ok(t) => Ok(Some(t)),
            Err(why) => {
                ctx.span_name = format!("{} (no route)", ctx.method_label);
                self.start_trace(session, ctx);
                session.set_keepalive(None);
                error_page::respond(session, 400, &ctx.request_id, why.0).await?;
                ctx.error_status = Some(400);
                Ok(None)
            }
        }
    }

    /// Decides the cache status once; every header, label and log field derives from it.
    fn decide_status(&self, session: &Session, ctx: &mut Ctx) -> (CacheStatus, Details) {
        let phase = session.cache.phase();
        let s = CacheStatus::from_phase(phase);
        ctx.cache_status = Some(s);
        let now = SystemTime::now();
        let ttl = session.cache.maybe_cache_meta().filter(|_| s.built_from_store()).map(|m| {
            // Rounded, so a just-refreshed `max-age=1` reads ttl=1, not 0.
            match m.fresh_until().duration_since(now) {
                Ok(d) => d.as_secs_f64().round() as i64,
                Err(e) => -(e.duration().as_secs_f64().round() as i64),
            }
        });
        let detail = match phase {
            CachePhase::StaleUpdating => Some("stale-while-revalidate"),
            CachePhase::Stale => Some("stale-if-error"),
            CachePhase::Disabled(r) if ctx.cache_on => Some(ctx.no_store_reason.map(|n| n.as_str()).unwrap_or(match r {
                NoCacheReason::Custom(c) => c,
                other => other.as_str(),
            })),
            _ => None,
        };
        let stored = matches!(phase, CachePhase::Miss | CachePhase::Expired);
        let bypass_kind = if s == CacheStatus::Bypass { ctx.bypass_kind.or(Some("bypass")) } else { None };
        (s, Details { ttl, origin_status: ctx.origin_status, stored, detail, bypass_kind })
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            started_at: SystemTime::now(),
            trace: None,
            upstream_trace: None,
            unsampled_trace_id: None,
            inject_traceparent: None,
            request_id: String::new(),
            target: None,
            url: None,
            method_label: crate::telemetry::method::OTHER,
            route: None,
            span_name: String::new(),
            pool: None,
            tried: Vec::new(),
            backend: None,
            upstream_started: None,
            upstream_time: None,
            origin_status: None,
            cache_on: false,
            bypass_kind: None,
            req_rules: RequestRules::default(),
            no_store_reason: None,
            revalidation_304: None,
            cache_status: None,
            rules: Vec::new(),
            captured_body: None,
            body_bytes: 0,
            error_status: None,
            _in_flight: InFlight::new(),
        }
    }

    /// Step 1: identify the request and set the client keep-alive.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.request_id = forwarding::request_id(session.req_header());
        session.set_keepalive(Some(self.state.config.timeouts.client_idle.as_secs()));
        Ok(())
    }

    /// Step 2: route, answer PURGE, decide whether the cache takes part, and answer failed
    /// preconditions from a stored entry.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let method = session.req_header().method.clone();
        ctx.method_label = self.state.methods.label(&method);
        let Some(target) = self.accept_target(session, ctx).await? else {
            return Ok(true);
        };
        let route = self.state.router.route(target.host(), target.path()).map(|r| (r.index, r.pool.clone(), r.pattern.clone()));
        ctx.url = Some(CacheUrl::of(&target));
        ctx.target = Some(target);
        let Some((index, pool, pattern)) = route else {
            ctx.span_name = format!("{} (no route)", ctx.method_label);
            self.start_trace(session, ctx);
            error_page::respond(session, 404, &ctx.request_id, error_page::detail_for(404)).await?;
            ctx.error_status = Some(404);
            return Ok(true);
        };
        ctx.route = Some(index);
        ctx.span_name = format!("{} {pattern}", ctx.method_label);
        ctx.pool = self.state.upstreams.get(&pool).cloned();
        self.start_trace(session, ctx);

        if method.as_str() == "PURGE" {
            self.purge_request(session, ctx).await?;
            return Ok(true);
        }
        let Some(cache) = self.cache() else {
            return Ok(false);
        };
        let req = session.req_header();
        ctx.rules = invalidate::matching(&cache.rules, req);
        let wants_body = ctx.rules.iter().any(|i| cache.rules[*i].match_param.is_some());
        let json = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
        if wants_body && json {
            ctx.captured_body = Some(Vec::new());
        }
        if !matches!(method, http::Method::GET | http::Method::HEAD) {
            ctx.bypass_kind = Some("method");
            return Ok(false);
        }
        if !cache.route_enabled(index) {
            ctx.bypass_kind = Some("bypass");
            return Ok(false);
        }
        ctx.cache_on = true;
        ctx.req_rules = if cache.config.honor_client_no_cache {
            policy::request_rules(req)
        } else {
            RequestRules { no_store: policy::request_rules(req).no_store, ..Default::default() }
        };
        if conditional::has_preconditions(req) {
            match ctx.url.as_ref().and_then(|u| cache.storage.peek_meta(&key::cache_key(u))) {
                Some(meta) if conditional::precondition_failed(req, meta.response_header()) => {
                    error_page::respond(
                        session,
                        412,
                        &ctx.request_id,
                        "the stored representation does not match the request's preconditions",
                    )
                    .await?;
                    ctx.error_status = Some(412);
                    ctx.cache_status = Some(CacheStatus::Hit);
                    return Ok(true);
                }
                Some(_) => {}
                // Nothing stored to judge by: let the origin evaluate If-Match itself.
                None => {
                    ctx.cache_on = false;
                    ctx.bypass_kind = Some("request");
                }
            }
        }
        Ok(false)
    }

    /// Keeps the start of a JSON body an invalidation rule may read its field from.
    async fn request_body_filter(&self, _session: &mut Session, body: &mut Option<Bytes>, _end: bool, ctx: &mut Ctx) -> Result<()> {
        if let (Some(buf), Some(b)) = (ctx.captured_body.as_mut(), body.as_ref()) {
            let room = MAX_CAPTURED_BODY.saturating_sub(buf.len());
            buf.extend_from_slice(&b[..b.len().min(room)]);
        }
        Ok(())
    }

    /// Step 3 (cache): switch the cache on for this request.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if let (true, Some(cache)) = (ctx.cache_on, self.cache()) {
            cache.enable(session);
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        // The cache is enabled only after the target was accepted, so this is always set.
        let url =
            ctx.url.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "cache key asked before the target was checked"))?;
        Ok(key::cache_key(url))
    }

    /// A fresh entry is still revalidated when the client asks (`no-cache`, `max-age`, `min-fresh`).
    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        if is_fresh && ctx.req_rules.forces_revalidation(meta, SystemTime::now()) {
            return Ok(Some(ForcedFreshness::ForceExpired));
        }
        Ok(None)
    }

    fn cache_vary_filter(&self, meta: &CacheMeta, _ctx: &mut Ctx, req: &RequestHeader) -> Option<pingora_cache::key::HashBinary> {
        key::variance(meta, req)
    }

    /// The cache could not answer: `only-if-cached` gets a 504 instead of an origin request.
    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if ctx.cache_on && ctx.req_rules.only_if_cached {
            error_page::respond(session, 504, &ctx.request_id, "only-if-cached and nothing usable is stored").await?;
            ctx.error_status = Some(504);
            return Ok(false);
        }
        Ok(true)
    }

    /// Step 4: choose an address of the route's pool (round-robin, healthy first).
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx.pool.clone().ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "route has no pool"))?;
        let i = pool
            .select(&ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("no address left in pool {}", pool.name)))?;
        ctx.backend = Some(i);
        let b = &pool.backends[i];
        let t = &self.state.config.timeouts;
        let mut peer = HttpPeer::new(b.sock, false, String::new());
        peer.options.connection_timeout = Some(t.connect.get());
        peer.options.read_timeout = Some(t.read.get());
        peer.options.write_timeout = Some(t.write.get());
        peer.options.idle_timeout = Some(t.upstream_idle.get());
        Ok(Box::new(peer))
    }

    /// A failed connect ejects the address after `max_fails` and moves on to the next one.
    /// Nothing reached the origin, so any method may be retried; idempotent ones get a second
    /// try even on a one-address pool (a transient refusal), others only on another address.
    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.backend) {
            pool.report_connect_failure(i);
            self.state
                .metrics
                .upstream_error(&pool.name, if matches!(e.etype(), ErrorType::ConnectTimedout) { "connect_timeout" } else { "connect" });
            ctx.tried.push(i);
            let limit = if session.req_header().method.is_idempotent() { pool.backends.len().max(2) } else { pool.backends.len() };
            if ctx.tried.len() < limit {
                if ctx.tried.len() >= pool.backends.len() {
                    ctx.tried.clear();
                }
                e.set_retry(true);
            }
        }
        e
    }

    /// Step 5: the forwarded request carries the request id and `X-Forwarded-*`.
    async fn upstream_request_filter(&self, session: &mut Session, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        let ip = client_ip(session).map(|a| a.to_string());
        let host = host_of(session.req_header()).map(str::to_string);
        forwarding::add_forwarded(req, ip.as_deref(), host.as_deref(), &ctx.request_id);
        if let (Some(t), Some(server)) = (&self.state.tracing, &ctx.trace) {
            let name = format!("{} {}", req.method, ctx.pool.as_ref().map(|p| p.name.as_str()).unwrap_or("upstream"));
            ctx.upstream_trace = Some(t.client_span(server, name, req));
        } else if let Some(tp) = &ctx.inject_traceparent {
            req.insert_header("traceparent", tp.as_str())?;
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    /// Step 6: the origin answered (before anything is cached).
    async fn upstream_response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        ctx.upstream_time = ctx.upstream_started.map(|t| t.elapsed());
        ctx.origin_status = Some(resp.status.as_u16());
        if let Some(cx) = ctx.upstream_trace.take() {
            let pool = &ctx.pool;
            traces::finish(&cx, resp.status.as_u16(), || {
                vec![KeyValue::new("portier.pool", pool.as_ref().map(|p| p.name.clone()).unwrap_or_default())]
            });
        }
        if let Some(pool) = &ctx.pool {
            if let Some(i) = ctx.backend {
                pool.report_success(i);
            }
            if let Some(t) = ctx.upstream_time {
                self.state.metrics.upstream_response(&pool.name, t.as_secs_f64() * 1000.0);
            }
        }
        if resp.status.as_u16() == 304 && session.cache.phase() == CachePhase::Stale {
            ctx.revalidation_304 = Some(resp.clone());
        }
        Ok(())
    }

    /// Step 7 (cache): store or not, by RFC 9111 and the route's overrides.
    fn response_cache_filter(&self, session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) -> Result<RespCacheable> {
        let (Some(cache), Some(route)) = (self.cache(), ctx.route) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let merged;
        let resp = match ctx.revalidation_304.take() {
            Some(nm) => {
                let mut m = merge_304(resp, &nm);
                // The stored validators stay: a 304 updates the response it validated, and
                // Pingora's own merge already copied the 304's ETag.
                if let Some(stored) = session.cache.maybe_cache_meta() {
                    for name in ["etag", "content-md5"] {
                        m.remove_header(name);
                        for v in stored.response_header().headers.get_all(name) {
                            let _ = m.append_header(name, v.clone());
                        }
                    }
                }
                merged = m;
                &merged
            }
            None => resp,
        };
        let now = SystemTime::now();
        let Some(rp) = cache.routes.get(route) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        match policy::decide(session.req_header(), resp, rp, &cache.config, ctx.req_rules.no_store, now) {
            Ok(plan) => Ok(RespCacheable::Cacheable(policy::build_meta(&plan, resp, now))),
            Err(why) => {
                ctx.no_store_reason = Some(why);
                Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(why.as_str())))
            }
        }
    }

    /// stale-while-revalidate is on whenever the stored response's window allows it (Pingora
    /// checked that before asking); stale-if-error on upstream failures and 5xx.
    fn should_serve_stale(&self, _session: &mut Session, _ctx: &mut Ctx, error: Option<&Error>) -> bool {
        error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
    }

    /// Step 8: what the client sees: cache status headers, our `Age`, the request id;
    /// invalidation after writes happens here, before the client can send its next request.
    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let (s, details) = self.decide_status(session, ctx);
        if s == CacheStatus::Hit && session.cache.lock_duration().is_some() {
            self.state.metrics.coalesced.inc();
        }
        resp.insert_header("x-cache", s.as_str())?;
        resp.insert_header("cache-status", status::cache_status_header(s, &details))?;
        let origin_ms = ctx.upstream_time.map(|d| d.as_secs_f64() * 1000.0);
        resp.insert_header("server-timing", status::server_timing(s, origin_ms))?;
        if s.built_from_store() {
            if let Some(meta) = session.cache.maybe_cache_meta() {
                resp.insert_header("age", meta.age().as_secs().to_string())?;
            }
        }
        for f in policy::TARGETED_FIELDS {
            resp.remove_header(f);
        }
        expose_cache_headers(resp)?;
        resp.insert_header(forwarding::REQUEST_ID, &ctx.request_id)?;

        if let (Some(cache), Some(url)) = (self.cache(), &ctx.url) {
            let req = session.req_header();
            if invalidate::is_unsafe(&req.method) || !ctx.rules.is_empty() {
                let rules: Vec<&invalidate::Rule> = ctx.rules.iter().filter_map(|i| cache.rules.get(*i)).collect();
                let body = ctx.captured_body.as_deref().unwrap_or(&[]);
                let n = invalidate::after_response(cache.storage, &rules, url, req, resp, body);
                self.state.metrics.purged(if rules.is_empty() { "unsafe_method" } else { "rule" }, n);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
        }
        Ok(None)
    }

    /// No answer from upstream: 502 or 504 with a body naming the request id.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_page::status_for(e);
        if code == 504 {
            if let Some(pool) = &ctx.pool {
                self.state.metrics.upstream_error(&pool.name, "timeout");
            }
        }
        if code > 0 {
            // The connection is closed after an error: say so, or a keep-alive client sends
            // its next request into a closing socket.
            session.set_keepalive(None);
            let _ = error_page::respond(session, code, &ctx.request_id, error_page::detail_for(code)).await;
            ctx.error_status = Some(code);
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Last step: count the request (background refreshes apart).
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let phase_status = CacheStatus::from_phase(session.cache.phase());
        if session.subrequest_ctx.is_some() {
            self.state.metrics.background_refresh(phase_status);
            return;
        }
        let s = ctx.cache_status.unwrap_or(phase_status);
        let status = session.as_downstream().response_written().map(|r| r.status.as_u16()).or(ctx.error_status).unwrap_or(0);
        let method = ctx.method_label;
        let span_name = if ctx.span_name.is_empty() { format!("{method} (no route)") } else { std::mem::take(&mut ctx.span_name) };
        let duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0;
        if self.state.config.telemetry.metrics {
            self.state.metrics.record_request(&RequestRecord {
                span_name: &span_name,
                method,
                status,
                cache_status: s,
                duration_ms,
                body_bytes: ctx.body_bytes,
            });
        }
        let pool = || ctx.pool.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        if let Some(cx) = ctx.upstream_trace.take() {
            // The origin never answered (connect failure, timeout).
            traces::finish(&cx, 0, || vec![KeyValue::new("portier.pool", pool())]);
        }
        let trace_id = match (&ctx.trace, ctx.unsampled_trace_id.take()) {
            (Some(cx), _) => traces::trace_id(cx),
            (None, Some(id)) => Some(id),
            (None, None) => traces::incoming_trace_id(session.req_header()),
        };
        if let Some(cx) = ctx.trace.take() {
            traces::finish(&cx, status, || {
                let route = self.route_pattern(ctx).to_string();
                let mut attrs = vec![
                    KeyValue::new("http.request.method", method),
                    KeyValue::new("http.method", method),
                    KeyValue::new("http.route", route),
                    KeyValue::new("cache.status", s.as_str()),
                    KeyValue::new("portier.pool", pool()),
                    KeyValue::new("portier.request_id", ctx.request_id.clone()),
                ];
                if method == crate::telemetry::method::OTHER {
                    attrs.push(KeyValue::new("http.request.method_original", session.req_header().method.as_str().to_string()));
                }
                attrs
            });
        }
        if self.state.access_log.enabled() {
            let req = session.req_header();
            let route = self.route_pattern(ctx);
            // A refused request logs the target it sent (escaped by the log), not Pingora's `/`.
            let raw_target;
            let path = match &ctx.target {
                Some(t) => t.path(),
                None => {
                    raw_target = String::from_utf8_lossy(req.raw_path());
                    &raw_target
                }
            };
            self.state.access_log.log(&AccessRecord {
                method: req.method.as_str(),
                host: host_of(req).unwrap_or(""),
                path,
                route,
                status,
                cache_status: s.as_str(),
                duration_ms,
                origin_ms: ctx.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
                bytes: ctx.body_bytes,
                client: client_ip(session).map(|ip| ip.to_string()),
                request_id: &ctx.request_id,
                trace_id: trace_id.as_deref(),
            });
        }
    }
}
