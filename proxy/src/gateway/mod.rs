//! The Pingora `ProxyHttp` implementation. Each hook is a few named calls into the phase that
//! owns it — `request` (target, route, purge, cache plan), `upstream` (peer, forwarding,
//! origin answer), `response` (storing, status headers, invalidation) and `finish` (the one
//! summary that feeds metrics, log and span) — and those call the modules that own a concept.

mod ctx;
pub(crate) mod error_page;
mod fast_hit;
mod finish;
pub(crate) mod operator_view;
mod refusal;
mod request;
mod response;
pub(crate) mod response_headers;
pub(crate) mod routing;
mod upstream;

pub(crate) use ctx::{Ctx, DRAINING, IN_FLIGHT};

use crate::cache::CacheLayer;
use crate::config::Config;
use crate::gateway::routing::Router;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::method::KnownMethods;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::Tracing;
use crate::upstream::Upstreams;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

/// Everything a request may need. Built at start-up and again by each configuration reload
/// ([`State::reconfigured`]); what outlives a reload (the cache's storage, telemetry,
/// connection counts) is shared between the two.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) router: Router,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) cache: Option<CacheLayer>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: Arc<AccessLog>,
    pub(crate) tracing: Option<Arc<Tracing>>,
    pub(crate) profiling: Arc<crate::telemetry::profiling::Profiling>,
    pub(crate) methods: KnownMethods,
    /// Pending ACME HTTP-01 answers.
    pub(crate) challenges: Arc<crate::edge::challenges::Challenges>,
    pub(crate) client_slots: Arc<crate::edge::limits::ClientSlots>,
    /// Open client connections, counted by Pingora's accept loop against `limits.max_connections`.
    pub(crate) connections: Arc<pingora_core::apps::ConnectionLimit>,
    /// The admin `/ui` page's counts and history.
    pub(crate) operator: Arc<crate::gateway::operator_view::OperatorView>,
    /// Compression dictionaries (RFC 9842), kept across reloads.
    pub(crate) dictionaries: Arc<crate::edge::dictionary::Dictionaries>,
    /// `Alt-Svc` for HTTPS responses when HTTP/3 is served.
    pub(crate) alt_svc: Option<http::HeaderValue>,
}

/// What outlives a configuration reload.
struct Lasting {
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    tracing: Option<Arc<Tracing>>,
    profiling: Arc<crate::telemetry::profiling::Profiling>,
    challenges: Arc<crate::edge::challenges::Challenges>,
    connections: Arc<pingora_core::apps::ConnectionLimit>,
    operator: Arc<crate::gateway::operator_view::OperatorView>,
    dictionaries: Arc<crate::edge::dictionary::Dictionaries>,
}

impl State {
    pub(crate) fn new(
        config: Config,
        upstreams: Arc<Upstreams>,
        metrics: Metrics,
        tier_metrics: crate::cache::TierMetrics,
        tracing: Option<Tracing>,
    ) -> Self {
        let cache = config.cache.enabled.then(|| CacheLayer::new(&config, tier_metrics));
        let shared = Lasting {
            metrics: Arc::new(metrics),
            access_log: Arc::new(AccessLog::new(config.telemetry.access_log.format)),
            tracing: tracing.map(Arc::new),
            profiling: Arc::new(crate::telemetry::profiling::Profiling::new()),
            challenges: Arc::default(),
            connections: crate::edge::limits::connection_gate(&config.limits),
            operator: Arc::default(),
            dictionaries: Arc::new(crate::edge::dictionary::Dictionaries::new(&config.compression)),
        };
        crate::gateway::operator_view::OperatorView::start_sampling(&shared.operator, &shared.metrics);
        State::build(config, upstreams, cache, shared)
    }

    /// The state for a reloaded configuration: new routes, pools, rules and limits; the same
    /// cache contents, telemetry and connection counts.
    pub(crate) fn reconfigured(&self, config: Config, upstreams: Arc<Upstreams>) -> Self {
        // `cache.enabled` is a start-up key (reload.rs): the store is this process's for good.
        let cache = self.cache.as_ref().map(|old| old.reconfigured(&config));
        let shared = Lasting {
            metrics: self.metrics.clone(),
            access_log: self.access_log.clone(),
            tracing: self.tracing.clone(),
            profiling: self.profiling.clone(),
            challenges: self.challenges.clone(),
            connections: self.connections.clone(),
            operator: self.operator.clone(),
            dictionaries: self.dictionaries.clone(),
        };
        shared.dictionaries.resize(&config.compression);
        State::build(config, upstreams, cache, shared)
    }

    fn build(config: Config, upstreams: Arc<Upstreams>, cache: Option<CacheLayer>, shared: Lasting) -> Self {
        let Lasting { metrics, access_log, tracing, profiling, challenges, connections, operator, dictionaries } = shared;
        State {
            router: Router::new(&config.routes, &upstreams, config.limits.max_body.bytes()),
            alt_svc: config.tls.as_ref().and_then(crate::edge::tls::alt_svc),
            methods: KnownMethods::new(config.invalidation.iter().map(|r| r.method.0.clone())),
            client_slots: crate::edge::limits::ClientSlots::new(config.limits.max_requests_per_client),
            config,
            upstreams,
            cache,
            metrics,
            access_log,
            tracing,
            profiling,
            challenges,
            connections,
            operator,
            dictionaries,
        }
    }
}

/// The state requests start with; `portier reload` and SIGHUP swap it, and a request keeps the
/// one it started with to its end (its route index means the same thing throughout).
pub(crate) struct Gateway {
    pub(crate) live: Arc<arc_swap::ArcSwap<State>>,
}

impl State {
    fn cache(&self) -> Option<&CacheLayer> {
        self.cache.as_ref()
    }
}

/// Pingora's per-request context: the state pinned for this request and the request's own part.
pub(crate) struct Pinned {
    state: Arc<State>,
    /// Boxed: Pingora moves the whole request future (this included) into a box per
    /// request, and copies every byte of it; a pointer is cheaper to move than the context.
    ctx: Box<Ctx>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Pinned;

    fn new_ctx(&self) -> Pinned {
        Pinned { state: self.live.load_full(), ctx: Box::default() }
    }

    async fn early_request_filter(&self, session: &mut Session, p: &mut Pinned) -> Result<()> {
        let Pinned { state, ctx } = p;
        state.identify(session, ctx);
        Ok(())
    }

    /// Returns true when Portier answered the request itself: a refusal, a local answer, or
    /// a fresh hit from memory.
    async fn request_filter(&self, session: &mut Session, p: &mut Pinned) -> Result<bool> {
        let Pinned { state, ctx } = p;
        let Some(refusal) = state.admit(session, ctx).await else { return state.answer_fresh_hit(session, ctx).await };
        state.answer(session, ctx, refusal).await?;
        Ok(true)
    }

    async fn request_body_filter(&self, _session: &mut Session, body: &mut Option<Bytes>, _end: bool, p: &mut Pinned) -> Result<()> {
        let Pinned { ctx, .. } = p;
        request::count_request_body(ctx, body.as_ref())?;
        request::capture_body(ctx, body.as_ref());
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, p: &mut Pinned) -> Result<()> {
        let Pinned { state, ctx } = p;
        state.enable_cache(session, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, p: &mut Pinned) -> Result<CacheKey> {
        let Pinned { ctx, .. } = p;
        request::cache_key(ctx)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        hit: &mut HitHandler,
        is_fresh: bool,
        p: &mut Pinned,
    ) -> Result<Option<ForcedFreshness>> {
        let Pinned { state, ctx } = p;
        if let (true, Some(cache), Some(key)) = (is_fresh, state.cache(), session.cache.maybe_cache_key()) {
            crate::cache::after_hit(cache, &state.metrics, &state.config.compression, key, meta, hit);
        }
        let source = crate::cache::HitSource::of(hit);
        ctx.cache.hit_tier = source.tier;
        Ok(request::hit_freshness(ctx, meta, is_fresh, source.refreshing_elsewhere))
    }

    fn cache_vary_filter(&self, meta: &CacheMeta, p: &mut Pinned, req: &RequestHeader) -> Option<pingora_cache::key::HashBinary> {
        let Pinned { ctx, .. } = p;
        crate::cache::key::variance(meta, req, ctx.compress.coding, ctx.compress.dictionary.as_deref().map(|d| &d.data.hash))
    }

    fn cache_not_modified_filter(&self, session: &Session, resp: &ResponseHeader, p: &mut Pinned) -> Result<bool> {
        let Pinned { ctx, .. } = p;
        Ok(response::answer_preconditions(session, resp, ctx))
    }

    fn range_header_filter(&self, session: &mut Session, resp: &mut ResponseHeader, _p: &mut Pinned) -> pingora_proxy::RangeType {
        response::ranges(session, resp)
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, p: &mut Pinned) -> Result<bool> {
        let Pinned { state, ctx } = p;
        let Some(refusal) = state.answer_before_origin(session, ctx) else { return Ok(true) };
        state.answer(session, ctx, refusal).await?;
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, p: &mut Pinned) -> Result<Box<HttpPeer>> {
        let Pinned { state, ctx } = p;
        state.choose_peer(ctx)
    }

    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, p: &mut Pinned, e: Box<Error>) -> Box<Error> {
        let Pinned { state, ctx } = p;
        state.connect_failed(session, ctx, e)
    }

    async fn upstream_request_filter(&self, session: &mut Session, req: &mut RequestHeader, p: &mut Pinned) -> Result<()> {
        let Pinned { state, ctx } = p;
        state.forward(req, session.req_header().version, ctx)
    }

    async fn upstream_response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, p: &mut Pinned) -> Result<()> {
        let Pinned { state, ctx } = p;
        state.origin_answered(session, resp, ctx);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        p: &mut Pinned,
    ) -> Result<Option<Duration>> {
        let Pinned { state, ctx } = p;
        state.compress_body(body, end, ctx)?;
        Ok(None)
    }

    fn response_cache_filter(&self, session: &Session, resp: &ResponseHeader, p: &mut Pinned) -> Result<RespCacheable> {
        let Pinned { state, ctx } = p;
        Ok(state.storage_plan(session, resp, ctx))
    }

    fn should_serve_stale(&self, session: &mut Session, _p: &mut Pinned, error: Option<&Error>) -> bool {
        response::may_serve_stale(session, error)
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, p: &mut Pinned) -> Result<()> {
        let Pinned { state, ctx } = p;
        response::close_when_draining(session);
        response::frame_for_http10(session, resp);
        state.status_headers(session, resp, ctx)?;
        state.invalidate_after(session, resp, ctx);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        p: &mut Pinned,
    ) -> Result<Option<Duration>> {
        let Pinned { ctx, .. } = p;
        response::count_body(ctx, body);
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, p: &mut Pinned) -> FailToProxy {
        let Pinned { state, ctx } = p;
        state.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, p: &mut Pinned) {
        let Pinned { state, ctx } = p;
        state.finish(session, ctx, e);
    }
}
