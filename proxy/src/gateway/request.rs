//! The request phase: identify, check the target, route, answer PURGE, plan the cache's part.
//! Each check returns the answer it decides on ([`Refusal`]); none writes a response.

use super::refusal::Refusal;
use super::{Ctx, State};
use crate::cache::policy::{self, RequestRules};
use crate::cache::purge::PurgeReason;
use crate::cache::status::{BypassReason, CacheDecision, LocalAnswer};
use crate::cache::url::CacheUrl;
use crate::cache::{invalidate, key, purge};
use crate::edge::access;
use crate::edge::forwarding;
use crate::edge::limits;
use crate::edge::target::{self, Scheme};
use crate::gateway::error_page;
use crate::telemetry::traces;
use bytes::Bytes;
use pingora_cache::key::CacheHashKey as _;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness};
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;
use std::time::SystemTime;

/// Largest request body kept to read an invalidation rule's JSON field from.
const MAX_CAPTURED_BODY: usize = 16 * 1024;

fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

impl State {
    /// The request id and the client keep-alive.
    pub(super) fn identify(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.request.id = forwarding::request_id(session.req_header());
        ctx.request.client = access::client_address(peer_ip(session), session.req_header(), &self.config.server.trusted_proxies);
        ctx.request.method_label = self.methods.label(&session.req_header().method);
        // Only where Pingora keeps the connection: it has turned keep-alive off for requests
        // that must close (Content-Length beside Transfer-Encoding, `Connection: close`,
        // HTTP/1.0 without keep-alive), and that must stand.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.config.timeouts.client_idle.as_secs()));
            // RFC 9112 §9.3.2: requests a client sent ahead are answered in order (Pingora
            // otherwise answers the first and closes, dropping the rest).
            session.as_downstream_mut().set_pipelining_enabled(true);
        }
        // RFC 9110 §15.2: no interim (1xx) responses to an HTTP/1.0 client.
        if session.req_header().version == http::Version::HTTP_10 {
            if let pingora_core::protocols::http::ServerSession::H1(h1) = session.as_downstream_mut() {
                h1.set_ignore_info_resp(true);
            }
        }
    }

    /// The server span starts when the route (and so the span name) is known; background
    /// refreshes have no client and get none.
    pub(super) fn start_trace(&self, session: &Session, ctx: &mut Ctx, span_name: String) {
        ctx.route.span_name = span_name;
        if let (Some(t), None) = (&self.tracing, &session.subrequest_ctx) {
            match t.decide(session.req_header()) {
                traces::Decision::Record => {
                    ctx.trace.server = Some(t.server_span(session.req_header(), ctx.route.span_name.clone(), ctx.started_at))
                }
                traces::Decision::Skip { trace_id } => ctx.trace.unsampled_trace_id = trace_id,
            }
        }
    }

    /// Every check a request passes before the cache and the origin see it, in order; the
    /// first that answers it decides (written once by `State::answer`).
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Option<Refusal> {
        if let Some(r) = self.check_limits(session, ctx) {
            return Some(r);
        }
        if let Some(r) = self.accept_target(session, ctx) {
            return Some(r);
        }
        if let Some(r) = self.route(session, ctx) {
            return Some(r);
        }
        if let Some(r) = self.check_access(session, ctx).await {
            return Some(r);
        }
        if let Some(r) = self.check_body_size(session, ctx) {
            return Some(r);
        }
        if let Some(r) = self.answer_purge(session, ctx) {
            return Some(r);
        }
        self.plan_cache(session, ctx);
        self.refuse_fat_get(session, ctx)
    }

    /// Checks the request target and Host (see [`crate::edge::target`]) and rewrites the request to
    /// the checked origin-form target. A refused request gets a 400 and its connection is
    /// closed; `OPTIONS *` is answered here.
    fn accept_target(&self, session: &mut Session, ctx: &mut Ctx) -> Option<Refusal> {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        match target::accept(session.req_header_mut(), scheme) {
            Ok(t) if t.asterisk => Some(Refusal::with_body(LocalAnswer::ServerOptions, 200, None, Bytes::new()).named("*")),
            Ok(t) => {
                // Before the redirect: a CA validates HTTP-01 over plain HTTP.
                if let Some(key_auth) = self.challenges.answer(t.path()) {
                    let body = Bytes::from(key_auth);
                    return Some(
                        Refusal::with_body(LocalAnswer::AcmeChallenge, 200, Some("application/octet-stream"), body).named("(acme)"),
                    );
                }
                let redirect = self.https_location(&t);
                ctx.request.url = Some(CacheUrl::of(&t));
                ctx.request.target = Some(t);
                let location = redirect?;
                Some(
                    Refusal::page(LocalAnswer::RedirectToHttps, 308, "this site is served over HTTPS")
                        .header("location", location)
                        .named("(redirect)"),
                )
            }
            Err(why) => Some(Refusal::page(LocalAnswer::Refused, 400, why.0).closing()),
        }
    }

    /// The request head's size (414/431) and the client's requests in flight (503), before
    /// anything reads the request.
    fn check_limits(&self, session: &Session, ctx: &mut Ctx) -> Option<Refusal> {
        let limits = &self.config.limits;
        if let Err(too_large) = limits::check_head(session.req_header(), limits) {
            self.metrics.limited(if too_large.status == 414 { "uri" } else { "headers" });
            return Some(Refusal::page(LocalAnswer::TooLarge, too_large.status, too_large.detail).closing());
        }
        // An unknown client (an unreadable X-Forwarded-For) is counted as its peer: an
        // unreadable hop must not buy a way around the limit.
        let ip = ctx.request.client.or_else(|| peer_ip(session))?;
        ctx.request.slot = self.client_slots.acquire(ip);
        if ctx.request.slot.is_some() {
            return None;
        }
        self.metrics.limited("requests_per_client");
        let retry = limits.retry_after.as_secs().max(1).to_string();
        Some(
            Refusal::page(LocalAnswer::Busy, 503, "too many requests in flight from this address")
                .header("retry-after", retry)
                .named("(busy)"),
        )
    }

    /// A declared body larger than the route accepts is refused before the origin sees it;
    /// a chunked one is cut off by [`count_request_body`] when it gets there.
    fn check_body_size(&self, session: &Session, ctx: &mut Ctx) -> Option<Refusal> {
        ctx.request.max_body = ctx.route.active.as_ref().map_or(self.config.limits.max_body.bytes(), |r| r.max_body);
        if !limits::declared_body_too_large(session.req_header(), ctx.request.max_body) {
            return None;
        }
        self.metrics.limited("body");
        Some(Refusal::page(LocalAnswer::TooLarge, 413, error_page::detail_for(413)).closing())
    }

    /// With `tls.redirect_http`, where a plain-HTTP request goes instead.
    fn https_location(&self, t: &target::Target) -> Option<String> {
        let tls = self.config.tls.as_ref().filter(|c| c.redirect_http)?;
        if t.scheme != Scheme::Http || t.host().is_empty() {
            return None;
        }
        let port = tls.listen.0.port();
        let port = if port == 443 { String::new() } else { format!(":{port}") };
        Some(format!("https://{}{port}{}", t.host(), t.path_and_query))
    }

    /// Picks the route and its pool, and names the span after it; no route is a 404.
    fn route(&self, session: &Session, ctx: &mut Ctx) -> Option<Refusal> {
        // `accept_target` set it or answered; without one nothing is forwarded (fail closed).
        let Some(t) = ctx.request.target.as_ref() else {
            return Some(Refusal::page(LocalAnswer::Refused, 400, error_page::detail_for(400)).closing());
        };
        let Some(r) = self.router.route(t.host(), t.path()) else {
            return Some(Refusal::page(LocalAnswer::NoRoute, 404, error_page::detail_for(404)).named("(no route)"));
        };
        let r = r.clone();
        ctx.compress.coding = crate::edge::compression::negotiate(session.req_header(), &r.compress);
        if let Some(rd) = &r.dictionary {
            ctx.compress.dictionary = crate::edge::dictionary::offered(session.req_header(), &r.pattern, rd, &self.dictionaries, t.path());
        }
        // Pushed, not `format!`: per request, and core::fmt cost ~500 instructions here.
        let mut span_name = String::with_capacity(ctx.request.method_label.len() + 1 + r.pattern.len());
        span_name.push_str(ctx.request.method_label);
        span_name.push(' ');
        span_name.push_str(&r.pattern);
        ctx.route.active = Some(r);
        self.start_trace(session, ctx, span_name);
        None
    }

    /// The route's address rules and password, before anything else (the cache included)
    /// sees the request.
    async fn check_access(&self, session: &Session, ctx: &mut Ctx) -> Option<Refusal> {
        let route = ctx.route.active.clone()?;
        let rules = &route.access;
        let (verdict, outcome) = rules.verdict(ctx.request.client, peer_ip(session), session.req_header()).await;
        if let Some(o) = outcome {
            self.metrics.auth_checked(o.as_str());
        }
        match verdict {
            access::Verdict::Allowed => None,
            access::Verdict::TooManyAttempts { retry_after } => Some(
                Refusal::page(LocalAnswer::Unauthorized, 429, "too many failed password attempts from this address")
                    .header("retry-after", retry_after.to_string()),
            ),
            access::Verdict::Busy => {
                let retry = self.config.limits.retry_after.as_secs().max(1).to_string();
                Some(Refusal::page(LocalAnswer::Busy, 503, "too many password checks in progress").header("retry-after", retry))
            }
            access::Verdict::Forbidden => Some(Refusal::page(LocalAnswer::Forbidden, 403, error_page::detail_for(403))),
            access::Verdict::Unauthorized { realm } => {
                let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", realm.replace(['"', '\\'], ""));
                Some(Refusal::page(LocalAnswer::Unauthorized, 401, error_page::detail_for(401)).header("www-authenticate", challenge))
            }
        }
    }

    /// `PURGE <url>`: only from allowed addresses or with the token; drops every variant.
    fn answer_purge(&self, session: &Session, ctx: &Ctx) -> Option<Refusal> {
        if session.req_header().method.as_str() != "PURGE" {
            return None;
        }
        let (code, body) = match (self.cache(), &ctx.request.url) {
            (Some(cache), Some(url)) => {
                if purge::authorized(&self.config.purge, ctx.request.client, session.req_header()) {
                    let soft = session.req_header().headers.get("x-purge-soft").is_some_and(|v| v.as_bytes() == b"1");
                    let n = cache.purge_url(url, soft);
                    self.metrics.purged(if soft { PurgeReason::PurgeMethodSoft } else { PurgeReason::PurgeMethod }.as_str(), n);
                    (if n > 0 { 200 } else { 404 }, serde_json::json!({"purged": n, "soft": soft}))
                } else {
                    (403, serde_json::json!({"error": "PURGE not allowed from this address without the token"}))
                }
            }
            _ => (405, serde_json::json!({"error": "the cache is disabled"})),
        };
        Some(Refusal::with_body(LocalAnswer::Purge, code, Some("application/json"), Bytes::from(body.to_string())))
    }

    /// Decides whether the cache takes part, and which invalidation rules apply.
    fn plan_cache(&self, session: &Session, ctx: &mut Ctx) {
        let (Some(cache), Some(route)) = (self.cache(), ctx.route.active.clone()) else {
            ctx.cache.decision = CacheDecision::Bypass(BypassReason::Off);
            return;
        };
        let req = session.req_header();
        ctx.cache.invalidation_rules = invalidate::matching(&cache.rules, req);
        let wants_body = ctx.cache.invalidation_rules.iter().any(|i| cache.rules[*i].match_param.is_some());
        let json = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
        if wants_body && json {
            ctx.cache.captured_body = Some(Vec::new());
        }
        ctx.cache.decision = if !matches!(req.method, http::Method::GET | http::Method::HEAD) {
            CacheDecision::Bypass(BypassReason::Method)
        } else if !(cache.config.enabled && route.cache.enabled) {
            CacheDecision::Bypass(BypassReason::Off)
        } else {
            CacheDecision::Eligible
        };
        let rules = policy::request_rules(req);
        ctx.cache.rules =
            if cache.config.honor_client_no_cache { rules } else { RequestRules { no_store: rules.no_store, ..Default::default() } };
    }

    /// A body on a GET or HEAD the cache takes part in: refused, since the stored answer would
    /// depend on a body that is not in the key ("fat GET" poisoning), and the cache lock
    /// would be held while it arrives.
    fn refuse_fat_get(&self, session: &Session, ctx: &Ctx) -> Option<Refusal> {
        if ctx.cache.decision != CacheDecision::Eligible || !target::has_body(session.req_header()) {
            return None;
        }
        Some(Refusal::page(LocalAnswer::Refused, 400, "a GET or HEAD served from the cache carries no body").closing())
    }

    /// Switches Pingora's cache on for an eligible request.
    pub(super) fn enable_cache(&self, session: &mut Session, ctx: &Ctx) {
        if let (CacheDecision::Eligible, Some(cache)) = (ctx.cache.decision, self.cache()) {
            cache.enable(session);
        }
    }

    /// Before the origin is asked: a client that waited on another request's fill, which the
    /// origin just failed, gets that failure at once (see [`crate::cache::failed_fills`]);
    /// `only-if-cached` with nothing usable stored gets a 504 instead of an origin request.
    pub(super) fn answer_before_origin(&self, session: &Session, ctx: &Ctx) -> Option<Refusal> {
        if ctx.cache.decision != CacheDecision::Eligible {
            return None;
        }
        let waited = session.cache.lock_duration().is_some();
        // A miss, or a waiter Pingora gave up on after its lock retries (each answered client
        // releases the lock again).
        let missed = matches!(session.cache.phase(), pingora_cache::CachePhase::Miss | pingora_cache::CachePhase::Disabled(_));
        if let (Some(cache), true) = (self.cache(), waited && missed) {
            if let Some(failure) = ctx.cache.key_hash.and_then(|k| cache.recent_failure(&k)) {
                return Some(Refusal::failed_fill(failure.status, failure.detail));
            }
        }
        ctx.cache.rules.only_if_cached.then(|| Refusal::page(LocalAnswer::OnlyIfCached, 504, "only-if-cached and nothing usable is stored"))
    }
}

pub(super) fn count_request_body(ctx: &mut Ctx, body: Option<&Bytes>) -> Result<()> {
    ctx.request.body_read += body.map_or(0, |b| b.len() as u64);
    if ctx.request.body_read > ctx.request.max_body {
        return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the route's max_body");
    }
    Ok(())
}

/// Keeps the start of a JSON body an invalidation rule may read its field from.
pub(super) fn capture_body(ctx: &mut Ctx, body: Option<&Bytes>) {
    if let (Some(buf), Some(b)) = (ctx.cache.captured_body.as_mut(), body) {
        let room = MAX_CAPTURED_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&b[..b.len().min(room)]);
    }
}

/// The key Pingora looks the request up by; its hash is kept in `ctx` for the failed-fill
/// memory, so nothing hashes the URL again.
pub(super) fn cache_key(ctx: &mut Ctx) -> Result<CacheKey> {
    // The cache is enabled only after the target was accepted, so this is always set.
    let url = ctx
        .request
        .url
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache key asked before the target was checked"))?;
    let key = match ctx.cache.key_hash {
        Some(hash) => key::cache_key_hashed(url, hash),
        None => key::cache_key(url),
    };
    ctx.cache.key_hash = Some(key.primary_bin());
    Ok(key)
}

/// How a found entry is used. A fresh one is still revalidated when the client asks
/// (`no-cache`, `max-age`, `min-fresh`). A stale one whose pool is down (health checks or
/// ejections) is served at once where stale-if-error allows: asking the origin would only
/// fail, and concurrent requests would queue on the cache lock behind each failure until
/// Pingora gave up on them with a 502.
pub(super) fn hit_freshness(ctx: &mut Ctx, meta: &CacheMeta, is_fresh: bool, refreshing_elsewhere: bool) -> Option<ForcedFreshness> {
    let now = SystemTime::now();
    if is_fresh {
        return ctx.cache.rules.forces_revalidation(meta, now).then_some(ForcedFreshness::ForceExpired);
    }
    // Another replica holds the shared refresh lock: serve stale as stale-while-revalidate
    // allows, without a second refresh of our own.
    if refreshing_elsewhere && meta.serve_stale_while_revalidate(now) && !ctx.cache.rules.forces_revalidation(meta, now) {
        ctx.cache.stale_refreshed_elsewhere = true;
        return Some(ForcedFreshness::ForceFresh);
    }
    let pool_down = ctx.route.pool().is_some_and(|p| !p.any_healthy());
    if pool_down && meta.serve_stale_if_error(now) && !ctx.cache.rules.forces_revalidation(meta, now) {
        ctx.cache.stale_while_origin_down = true;
        return Some(ForcedFreshness::ForceFresh);
    }
    None
}
