//! The response phase: whether to store, the cache status headers, preconditions, stale
//! serving, invalidation after writes, and the answer when the origin failed.

use super::{Ctx, State};
use crate::cache::purge::PurgeReason;
use crate::cache::status::{CacheDecision, CacheStatus, Facts, Outcome};
use crate::cache::{conditional, invalidate, policy, revalidate};
use crate::gateway::error_page;
use crate::gateway::response_headers;
use bytes::Bytes;
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorSource, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};
use std::time::SystemTime;

impl State {
    /// The cache status of this response, decided here once and kept in `ctx` for the log,
    /// the metrics and the span.
    pub(super) fn outcome(&self, session: &Session, ctx: &mut Ctx) -> Outcome {
        self.outcome_after(session, ctx, None)
    }

    /// [`Self::outcome`] for an origin failure this request did not see itself.
    pub(super) fn outcome_with_error(&self, session: &Session, ctx: &mut Ctx, detail: &'static str) -> Outcome {
        self.outcome_after(session, ctx, Some(detail))
    }

    /// [`Self::outcome`] when the origin failed (`upstream_error` is the `Cache-Status` detail).
    fn outcome_after(&self, session: &Session, ctx: &mut Ctx, upstream_error: Option<&'static str>) -> Outcome {
        let facts = Facts {
            decision: ctx.cache.decision,
            phase: session.cache.phase(),
            meta: session.cache.maybe_cache_meta(),
            origin_status: ctx.upstream.status,
            upstream_error,
            origin_down: ctx.cache.stale_while_origin_down,
            hit_tier: ctx.cache.hit_tier,
            refreshed_elsewhere: ctx.cache.stale_refreshed_elsewhere,
        };
        let o = crate::cache::status::outcome(&facts, SystemTime::now());
        ctx.cache.outcome = Some(o.clone());
        o
    }

    /// Store or not, by RFC 9111 and the route's overrides.
    pub(super) fn storage_plan(&self, session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) -> RespCacheable {
        let (Some(cache), Some(route)) = (self.cache(), ctx.route.active.clone()) else {
            return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
        };
        let merged;
        let resp = match ctx.cache.revalidation_304.take() {
            Some(nm) => {
                ctx.cache.cookies_for_client = revalidate::cookies_for_client(&nm);
                merged = revalidate::merge_304(resp, &nm, session.cache.maybe_cache_meta());
                &merged
            }
            None => resp,
        };
        let rp = &route.cache;
        let now = SystemTime::now();
        match policy::decide(session.req_header(), resp, rp, &cache.config, ctx.cache.rules.no_store, now) {
            Ok(plan) => RespCacheable::Cacheable(policy::build_meta(&plan, resp, now)),
            Err(why) => {
                ctx.cache.decision = CacheDecision::NotStored(why);
                RespCacheable::Uncacheable(NoCacheReason::Custom(why.as_str()))
            }
        }
    }

    /// What the client sees: cache status headers, `Age` from the store, the request id.
    pub(super) fn status_headers(&self, session: &Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if !final_response(resp) {
            return Ok(());
        }
        let o = self.outcome(session, ctx);
        if o.status == CacheStatus::Hit && session.cache.lock_duration().is_some() {
            self.metrics.coalesced.inc();
        }
        self.stamp(resp, ctx, &o, session.cache.maybe_cache_meta())
    }

    /// The headers every answer gets from its decided outcome: `Cache-Status` and the rest,
    /// `Age` when built from `stored`, the precondition's 412, HSTS, `Alt-Svc`, the request id.
    pub(super) fn stamp(&self, resp: &mut ResponseHeader, ctx: &mut Ctx, o: &Outcome, stored: Option<&CacheMeta>) -> Result<()> {
        o.write_headers(resp, ctx.upstream.time.map(|d| d.as_secs_f64() * 1000.0), self.config.server.name.as_str())?;
        // A fresh hit went through `cache_hit_header` (Pingora's or the fast path's), which
        // set `Age` from the same meta; the others (stale, revalidated) did not.
        if o.status.built_from_store() && !(o.status == CacheStatus::Hit && resp.headers.contains_key(http::header::AGE)) {
            if let Some(meta) = stored {
                resp.insert_header(http::header::AGE, meta.age().as_secs())?;
            }
        }
        if ctx.cache.precondition_failed {
            // Pingora made this a header-only 304; the answer is a 412 without a body.
            resp.set_status(412)?;
            resp.insert_header("content-length", "0")?;
        }
        for f in &response_headers::NEVER_SENT {
            resp.remove_header(f);
        }
        response_headers::expose_cache_headers(resp)?;
        let https = ctx.request.target.as_ref().is_some_and(|t| t.scheme == crate::edge::target::Scheme::Https);
        if let (true, Some(hsts)) = (https, self.config.tls.as_ref().and_then(|t| t.hsts.as_deref())) {
            resp.insert_header("strict-transport-security", hsts)?;
        }
        if let (true, Some(alt_svc)) = (https, &self.alt_svc) {
            resp.insert_header(http::header::ALT_SVC, alt_svc.clone())?;
        }
        for cookie in ctx.cache.cookies_for_client.drain(..) {
            resp.append_header(http::header::SET_COOKIE, cookie)?;
        }
        resp.insert_header(crate::edge::fields::X_REQUEST_ID, ctx.request.id.value())?;
        Ok(())
    }

    /// Invalidation after writes (RFC 9111 §4.4) and by rule, before the client can send its
    /// next request.
    pub(super) fn invalidate_after(&self, session: &Session, resp: &ResponseHeader, ctx: &Ctx) {
        let (Some(cache), Some(url)) = (self.cache(), &ctx.request.url) else { return };
        let req = session.req_header();
        if invalidate::is_unsafe(&req.method) || !ctx.cache.invalidation_rules.is_empty() {
            let rules: Vec<&invalidate::Rule> = ctx.cache.invalidation_rules.iter().filter_map(|i| cache.rules.get(*i)).collect();
            let body = ctx.cache.captured_body.as_deref().unwrap_or(&[]);
            let done = invalidate::after_response(cache.store(), &rules, url, req, resp, body);
            self.metrics.purged(if rules.is_empty() { PurgeReason::UnsafeMethod } else { PurgeReason::Rule }.as_str(), done.purged);
            self.metrics.invalidation_skipped.inc_by(done.skipped as u64);
        }
    }

    /// The origin could not be reached or did not answer: 502 or 504, counted once.
    pub(super) async fn answer_failure(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A fresh hit answered from memory failed while being written (a client that stops
        // reading, an HTTP/2 or HTTP/3 write timeout): the answer has started, so there is
        // nothing to send and no origin to blame; the hit stays the outcome logged, as when
        // Pingora's own hit path fails a write.
        if ctx.cache.answered_from_memory {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        let crate::upstream::Failure { status: code, kind: upstream_kind } = crate::upstream::Failure::of(e);
        if let (Some(pool), Some(kind)) = (ctx.route.pool(), upstream_kind) {
            // A connect failure was counted where it happened, in `connect_failed`.
            if !kind.is_connect() {
                self.metrics.upstream_error(&pool.name, kind.as_str());
            }
        }
        if let (Some(kind), Some(cache), true) = (
            upstream_kind,
            self.cache(),
            matches!(session.cache.phase(), pingora_cache::CachePhase::Miss | pingora_cache::CachePhase::Disabled(_)),
        ) {
            if ctx.cache.decision == CacheDecision::Eligible && matches!(code, 502 | 504) {
                if let Some(key) = ctx.cache.key_hash {
                    cache.on_origin_failure(key, code, kind.detail());
                }
            }
        }
        if code > 0 {
            // The connection is closed after an error: say so, or a keep-alive client sends
            // its next request into a closing socket.
            session.set_keepalive(None);
            ctx.local_status = Some(code);
            let o = self.outcome_after(session, ctx, upstream_kind.map(|k| k.detail()));
            let stamp = error_page::Stamp { request_id: &ctx.request.id, outcome: &o, name: self.config.server.name.as_str() };
            let _ = error_page::respond(session, code, error_page::detail_for(code), stamp, &[]).await;
            error_page::linger(session).await;
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }
}

/// Portier's HTTP version and a 204's framing; false for an interim response (103 Early
/// Hints), which is not the response and gets no cache status.
pub(super) fn final_response(resp: &mut ResponseHeader) -> bool {
    // Portier speaks its own HTTP version (RFC 9110 §2.5), whatever the origin's status line said.
    resp.set_version(http::Version::HTTP_11);
    if resp.status.is_informational() {
        return false;
    }
    // A 204 has no content, so no Content-Length either (RFC 9110 §8.6).
    if resp.status == 204 {
        resp.remove_header(&http::header::CONTENT_LENGTH);
    }
    true
}

/// `If-Match` / `If-Unmodified-Since` (RFC 9110 §13.2.2, evaluated first) fail with 412,
/// against the response actually about to be sent: a fresh hit of the right variant, or
/// the origin's answer. Otherwise Pingora's `If-None-Match` / `If-Modified-Since` → 304.
pub(super) fn answer_preconditions(session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) -> bool {
    let req = session.req_header();
    if resp.status.is_success() && conditional::has_preconditions(req) && conditional::precondition_failed(req, resp) {
        ctx.cache.precondition_failed = true;
        return true;
    }
    pingora_core::protocols::http::conditional_filter::not_modified_filter(req, resp)
}

/// On SIGTERM/SIGINT every answer says `Connection: close` (see [`super::DRAINING`]).
pub(super) fn close_when_draining(session: &mut Session) {
    if super::DRAINING.load(std::sync::atomic::Ordering::Relaxed) {
        session.set_keepalive(None);
    }
}

/// RFC 9112 §6.1: an HTTP/1.0 client does not know chunked framing. A body of unknown length
/// (Pingora chunks it for HTTP/1.1) goes to it delimited by the close of the connection.
pub(super) fn frame_for_http10(session: &mut Session, resp: &mut ResponseHeader) {
    if session.req_header().version == http::Version::HTTP_10 && resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        session.set_keepalive(None);
    }
}

/// stale-while-revalidate whenever the stored response's window allows it (Pingora checked
/// that before asking); stale-if-error on upstream failures and 5xx.
pub(super) fn may_serve_stale(_session: &Session, error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
}

/// Counts body bytes sent; a 412 made from a response sends none of its body.
pub(super) fn count_body(ctx: &mut Ctx, body: &mut Option<Bytes>) {
    if ctx.cache.precondition_failed {
        *body = None;
    }
    if let Some(b) = body {
        ctx.body_bytes += b.len() as u64;
    }
}

/// Pingora's range handling, except that a range no byte satisfies is a 416 (RFC 9110
/// §14.1.3): `bytes=-0`, a range past the end, or any range of an empty body, which Pingora
/// turned into `bytes 100-99/100`, or `bytes 0-18446744073709551615/0` (an overflow that
/// panics in a debug build).
pub(super) fn ranges(session: &Session, resp: &mut ResponseHeader) -> pingora_proxy::RangeType {
    use pingora_proxy::{range_header_filter, RangeType};
    let total = crate::edge::target::content_length(&resp.headers).and_then(|n| usize::try_from(n).ok());
    let req = session.req_header();
    let asks_range = req.headers.contains_key(http::header::RANGE) && matches!(req.method, http::Method::GET | http::Method::HEAD);
    if asks_range && resp.status == 200 && total == Some(0) {
        return not_satisfiable(resp, 0);
    }
    // A body Portier encoded may be encoded again (re-compressed at the strongest level)
    // under the same Last-Modified: a date says nothing about which bytes the client holds,
    // so only an entity tag (one per encoded copy) may resume a range (RFC 9110 §13.1.5).
    let if_range_date =
        req.headers.get(http::header::IF_RANGE).is_some_and(|v| !v.as_bytes().starts_with(b"\"") && !v.as_bytes().starts_with(b"W/"));
    if asks_range && if_range_date && resp.headers.contains_key(crate::edge::compression::MARKER_NAME) {
        return RangeType::None;
    }
    let t = range_header_filter(req, resp, Some(200));
    let Some(total) = total else { return t };
    let empty = |r: &std::ops::Range<usize>| r.start >= r.end || r.end > total;
    let unsatisfiable = match &t {
        RangeType::Single(r) => empty(r),
        RangeType::Multi(m) => m.ranges.iter().all(empty),
        _ => false,
    };
    if unsatisfiable {
        not_satisfiable(resp, total)
    } else {
        t
    }
}

fn not_satisfiable(resp: &mut ResponseHeader, total: usize) -> pingora_proxy::RangeType {
    let _ = resp.set_status(416);
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, "0");
    for h in [http::header::ACCEPT_RANGES, http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING, http::header::TRANSFER_ENCODING] {
        resp.remove_header(&h);
    }
    let _ = resp.insert_header(http::header::CONTENT_RANGE, format!("bytes */{total}"));
    pingora_proxy::RangeType::Invalid
}
