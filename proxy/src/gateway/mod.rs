//! The Pingora `ProxyHttp` implementation. Each hook is a few named calls into the phase that
//! owns it — `request` (target, route, purge, cache plan), `upstream` (peer, forwarding,
//! origin answer), `response` (storing, status headers, invalidation) and `finish` (the one
//! summary that feeds metrics, log and span) — and those call the modules that own a concept.

mod ctx;
mod finish;
mod request;
mod response;
mod upstream;

pub use ctx::{Ctx, IN_FLIGHT};

use crate::cache::CacheLayer;
use crate::config::Config;
use crate::routing::Router;
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

/// Everything a request may need, built once at start-up.
pub struct State {
    pub(crate) config: Config,
    pub(crate) router: Router,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) cache: Option<CacheLayer>,
    pub(crate) metrics: Metrics,
    pub(crate) access_log: AccessLog,
    pub(crate) tracing: Option<Tracing>,
    pub(crate) profiling: crate::telemetry::profiling::Profiling,
    pub(crate) methods: KnownMethods,
    /// Per route index: its address rules and password.
    pub(crate) access: Vec<crate::access::RouteAccess>,
    /// Pending ACME HTTP-01 answers.
    pub(crate) challenges: Arc<crate::acme::Challenges>,
    pub(crate) client_slots: Arc<crate::limits::ClientSlots>,
    /// Open client connections, counted by Pingora's accept loop against `limits.max_connections`.
    pub(crate) connections: Arc<pingora_core::apps::ConnectionLimit>,
}

impl State {
    pub(crate) fn new(config: Config, upstreams: Arc<Upstreams>, metrics: Metrics, tracing: Option<Tracing>) -> Self {
        let cache = config.cache.enabled.then(|| CacheLayer::new(&config));
        let access_log = AccessLog::new(config.telemetry.access_log.format);
        let profiling = crate::telemetry::profiling::Profiling::new();
        let methods = KnownMethods::new(config.invalidation.iter().map(|r| r.method.0.clone()));
        let access = config.routes.iter().map(crate::access::RouteAccess::new).collect();
        let challenges = Arc::default();
        let client_slots = crate::limits::ClientSlots::new(config.limits.max_requests_per_client);
        let connections = crate::limits::connection_gate(&config.limits);
        State {
            router: Router::new(&config.routes),
            config,
            upstreams,
            cache,
            metrics,
            access_log,
            tracing,
            profiling,
            methods,
            access,
            challenges,
            client_slots,
            connections,
        }
    }
}

pub struct Gateway {
    pub(crate) state: Arc<State>,
}

impl Gateway {
    fn cache(&self) -> Option<&CacheLayer> {
        self.state.cache.as_ref()
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        self.identify(session, ctx);
        Ok(())
    }

    /// Returns true when Portier answered the request itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.check_limits(session, ctx).await?
            || self.accept_target(session, ctx).await?
            || self.route(session, ctx).await?
            || self.check_access(session, ctx).await?
            || self.check_body_size(session, ctx).await?
            || self.answer_purge(session, ctx).await?
        {
            return Ok(true);
        }
        self.plan_cache(session, ctx);
        self.refuse_fat_get(session, ctx).await
    }

    async fn request_body_filter(&self, _session: &mut Session, body: &mut Option<Bytes>, _end: bool, ctx: &mut Ctx) -> Result<()> {
        request::count_request_body(ctx, body.as_ref())?;
        request::capture_body(ctx, body.as_ref());
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        self.enable_cache(session, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        request::cache_key(ctx)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        Ok(request::client_forces_revalidation(ctx, meta, is_fresh).then_some(ForcedFreshness::ForceExpired))
    }

    fn cache_vary_filter(&self, meta: &CacheMeta, ctx: &mut Ctx, req: &RequestHeader) -> Option<pingora_cache::key::HashBinary> {
        crate::cache::key::variance(meta, req, ctx.compress.coding)
    }

    fn cache_not_modified_filter(&self, session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) -> Result<bool> {
        Ok(response::answer_preconditions(session, resp, ctx))
    }

    fn range_header_filter(&self, session: &mut Session, resp: &mut ResponseHeader, _ctx: &mut Ctx) -> pingora_proxy::RangeType {
        response::ranges(session, resp)
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        Ok(!self.answer_only_if_cached(session, ctx).await?)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        self.choose_peer(ctx)
    }

    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, e: Box<Error>) -> Box<Error> {
        self.connect_failed(session, ctx, e)
    }

    async fn upstream_request_filter(&self, _session: &mut Session, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        self.forward(req, ctx)
    }

    async fn upstream_response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        self.origin_answered(session, resp, ctx);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        self.compress_body(body, end, ctx)?;
        Ok(None)
    }

    fn response_cache_filter(&self, session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) -> Result<RespCacheable> {
        Ok(self.storage_plan(session, resp, ctx))
    }

    fn should_serve_stale(&self, session: &mut Session, _ctx: &mut Ctx, error: Option<&Error>) -> bool {
        response::may_serve_stale(session, error)
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        self.status_headers(session, resp, ctx)?;
        self.invalidate_after(session, resp, ctx);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        response::count_body(ctx, body);
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        self.finish(session, ctx);
    }
}
