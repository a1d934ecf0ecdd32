//! Fresh hits of the memory tier answered in `request_filter`, after every check of the
//! request phase (target, route, access rules, limits, purge) and before Pingora's cache
//! machinery: no cache context, lock or predictor state, no boxed hit handler, no second
//! copy of the stored head. The answer is the one Pingora's hit path gives, step for step
//! (`proxy_cache_hit`: `cache_hit_header`, the conditional and range filters, then this
//! crate's `response_filter`), so every observable field is the same; whatever this path
//! does not take (a stale or missing entry, another tier, a range, a client that asks to
//! revalidate, a background refresh) goes down Pingora's path unchanged.

use super::{response, Ctx, State};
use crate::cache::status::{CacheDecision, Facts};
use bytes::Bytes;
use pingora_cache::{CacheMeta, CachePhase};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::SystemTime;

impl State {
    /// Answers a fresh memory hit; false leaves the request to Pingora.
    pub(super) async fn answer_fresh_hit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some((mut meta, body)) = self.fresh_hit(session, ctx) else { return Ok(false) };
        let mut header = hit_header(&mut meta)?;
        // Pingora's `cache_not_modified_filter` → `to_304`; a failed precondition is turned
        // into its 412 by `stamp`.
        let not_modified = response::answer_preconditions(session, &header, ctx);
        if not_modified {
            pingora_core::protocols::http::conditional_filter::to_304(&mut header);
        }
        // No `Range` reaches here, so of Pingora's range filter only this is left: a 200 with a
        // length may be asked for ranges next time (`range_header_filter`, nginx's behaviour).
        if header.status == http::StatusCode::OK && crate::edge::target::content_length(&header.headers).is_some() {
            let _ = header.insert_header(http::header::ACCEPT_RANGES, http::HeaderValue::from_static("bytes"));
        }
        let header_only = not_modified || session.req_header().method == http::Method::HEAD;
        let facts = Facts {
            decision: ctx.cache.decision,
            phase: CachePhase::Hit,
            meta: Some(&meta),
            origin_status: None,
            upstream_error: None,
            origin_down: false,
            hit_tier: None,
            refreshed_elsewhere: false,
        };
        let outcome = crate::cache::status::outcome(&facts, SystemTime::now());
        // The `response_filter` steps, with the outcome decided here.
        response::close_when_draining(session);
        response::frame_for_http10(session, &mut header);
        if response::final_response(&mut header) {
            self.stamp(&mut header, ctx, &outcome, Some(&meta))?;
        }
        ctx.cache.outcome = Some(outcome);
        ctx.cache.answered_from_memory = true;
        self.invalidate_after(session, &header, ctx);
        // A failed write is the client's connection (as Pingora's hit path marks it), not an
        // origin failure: no error page, and the hit stays the outcome logged and counted.
        session.write_response_header(Box::new(header), header_only).await.map_err(|e| e.into_down())?;
        if !header_only {
            let mut body = Some(body);
            response::count_body(ctx, &mut body);
            session.write_response_body(body, true).await.map_err(|e| e.into_down())?;
        }
        // As Pingora's hit path ends: a header-only answer is finished (and flushed) too,
        // and a failure there is the client's connection.
        session.finish_body().await.map_err(|e| e.into_down())?;
        Ok(true)
    }

    /// The fresh stored answer, when this path may give it.
    fn fresh_hit(&self, session: &Session, ctx: &mut Ctx) -> Option<(CacheMeta, Bytes)> {
        let cache = self.cache()?;
        let req = session.req_header();
        // A background refresh must reach the origin; a range needs Pingora's body filter.
        if ctx.cache.decision != CacheDecision::Eligible
            || session.subrequest_ctx.is_some()
            || req.headers.contains_key(http::header::RANGE)
        {
            return None;
        }
        let mut key = super::request::cache_key(ctx).ok()?;
        let (coding, dictionary) = (ctx.compress.coding, ctx.compress.dictionary.as_deref().map(|d| &d.data.hash));
        let now = SystemTime::now();
        let (meta, body) = cache.fresh_in_memory(&mut key, |m| crate::cache::key::variance(m, req, coding, dictionary), now)?;
        // What `cache_hit_filter` decides for a fresh entry: the client's `no-cache`,
        // `max-age` or `min-fresh` send it to the origin.
        if ctx.cache.rules.forces_revalidation(&meta, now) {
            return None;
        }
        cache.after_memory_hit(&self.metrics, &self.config.compression, &key, &meta, &body);
        ctx.cache.hit_tier = None;
        Some((meta, body))
    }
}

/// Pingora's `cache_hit_header`: the stored head with `Age`, as HTTP/1.1, chunked when it
/// has no length (a stored head always has one; kept for the same answer either way). The
/// head is moved out of this request's own copy of the meta, not copied again: what is read
/// of the meta later (its times, for `Cache-Status` and `Age`) is not in the head.
fn hit_header(meta: &mut CacheMeta) -> Result<ResponseHeader> {
    let age = meta.age().as_secs();
    let mut header = std::mem::replace(meta.response_header_mut(), ResponseHeader::build(200, Some(0))?);
    let no_body = matches!(header.status.as_u16(), 204 | 304);
    let _ = header.insert_header(http::header::AGE, age);
    header.set_version(http::Version::HTTP_11);
    if !no_body && !header.status.is_informational() && !header.headers.contains_key(http::header::CONTENT_LENGTH) {
        let _ = header.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    Ok(header)
}
