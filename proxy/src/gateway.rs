//! The Pingora `ProxyHttp` implementation, read top to bottom as a request's steps. Each step
//! calls into the module that owns the concept (routing, upstream, forwarding, error pages).

use crate::config::Config;
use crate::error_page;
use crate::forwarding;
use crate::routing::Router;
use crate::upstream::{Pool, Upstreams};
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests being served right now; graceful shutdown waits for this to reach zero.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

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
}

impl State {
    pub fn new(config: Config, upstreams: Arc<Upstreams>) -> Self {
        State {
            router: Router::new(&config.routes),
            config,
            upstreams,
        }
    }
}

pub struct Gateway {
    pub state: Arc<State>,
}

/// Per-request state.
pub struct Ctx {
    pub started: Instant,
    pub request_id: String,
    /// Index of the matched route.
    pub route: Option<usize>,
    pub pool: Option<Arc<Pool>>,
    /// Address indexes of the pool already tried for this request.
    pub tried: Vec<usize>,
    pub backend: Option<usize>,
    pub upstream_started: Option<Instant>,
    pub upstream_time: Option<Duration>,
    _in_flight: InFlight,
}

fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            request_id: String::new(),
            route: None,
            pool: None,
            tried: Vec::new(),
            backend: None,
            upstream_started: None,
            upstream_time: None,
            _in_flight: InFlight::new(),
        }
    }

    /// Step 1: identify the request and set the client keep-alive.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.request_id = forwarding::request_id(session.req_header());
        let idle = self.state.config.timeouts.client_idle.as_secs();
        session.set_keepalive(Some(idle));
        Ok(())
    }

    /// Step 2: pick the route; no route is a 404 written here.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let host = host_of(req).unwrap_or("");
        let route = self
            .state
            .router
            .route(host, req.uri.path())
            .map(|r| (r.index, r.pool.clone()));
        match route {
            Some((index, pool)) => {
                ctx.route = Some(index);
                ctx.pool = self.state.upstreams.get(&pool).cloned();
                Ok(false)
            }
            None => {
                error_page::respond(session, 404, &ctx.request_id, error_page::detail_for(404))
                    .await?;
                Ok(true)
            }
        }
    }

    /// Step 3: choose an address of the route's pool (round-robin, healthy first).
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "route has no pool"))?;
        let i = pool.select(&ctx.tried).ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("no address left in pool {}", pool.name),
            )
        })?;
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
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.backend) {
            pool.report_connect_failure(i);
            ctx.tried.push(i);
            let limit = if session.req_header().method.is_idempotent() {
                pool.backends.len().max(2)
            } else {
                pool.backends.len()
            };
            if ctx.tried.len() < limit {
                if ctx.tried.len() >= pool.backends.len() {
                    ctx.tried.clear();
                }
                e.set_retry(true);
            }
        }
        e
    }

    /// Step 4: the forwarded request carries the request id and `X-Forwarded-*`.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        let host = host_of(session.req_header()).map(str::to_string);
        forwarding::add_forwarded(req, client_ip.as_deref(), host.as_deref(), &ctx.request_id);
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    /// Step 5: the origin answered.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_time = ctx.upstream_started.map(|t| t.elapsed());
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.backend) {
            pool.report_success(i);
        }
        Ok(())
    }

    /// Step 6: every response the client gets carries the request id.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header(forwarding::REQUEST_ID, &ctx.request_id)?;
        Ok(())
    }

    /// No answer from upstream: 502 or 504 with a body naming the request id.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_page::status_for(e);
        if code > 0 {
            let _ =
                error_page::respond(session, code, &ctx.request_id, error_page::detail_for(code))
                    .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
