//! The upstream phase: choose an address, forward the request, take the origin's answer.

use super::{Ctx, State};
use crate::edge::forwarding;
use crate::telemetry::traces;
use crate::upstream::UpstreamErrorKind;
use opentelemetry::KeyValue;
use pingora_cache::CachePhase;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::Instant;

impl State {
    /// Round-robin over the route's pool, healthy addresses first.
    pub(super) fn choose_peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx.route.pool().cloned().ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "route has no pool"))?;
        let i = pool
            .select(&ctx.upstream.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("no address left in pool {}", pool.name)))?;
        ctx.upstream.backend = Some(i);
        let b = &pool.backends[i];
        // `select` only picks resolved addresses; one that stopped resolving since is a 502.
        let sock = b.sock().ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("{} does not resolve", b.addr)))?;
        let t = &self.config.timeouts;
        let mut peer = match &pool.tls {
            Some(tls) => {
                let mut p = HttpPeer::new(sock, true, pool.sni_for(b).to_string());
                p.options.verify_cert = tls.verify;
                p.options.verify_hostname = tls.verify;
                p.options.ca = tls.ca.clone();
                p
            }
            None => HttpPeer::new(sock, false, String::new()),
        };
        peer.options.connection_timeout = Some(t.connect.get());
        peer.options.read_timeout = Some(t.read.get());
        peer.options.write_timeout = Some(t.write.get());
        peer.options.idle_timeout = Some(t.upstream_idle.get());
        Ok(Box::new(peer))
    }

    /// A failed connect ejects the address after `max_fails` and moves on to the next one.
    /// Nothing reached the origin, so any method may be retried; idempotent ones get a second
    /// try even on a one-address pool (a transient refusal), others only on another address.
    pub(super) fn connect_failed(&self, session: &Session, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        if let (Some(pool), Some(i)) = (ctx.route.pool().cloned(), ctx.upstream.backend) {
            pool.report_connect_failure(i);
            let kind = UpstreamErrorKind::of_connect(e.etype());
            self.metrics.upstream_error(&pool.name, kind.as_str());
            ctx.upstream.tried.push(i);
            ctx.upstream.connect_attempts += 1;
            let limit = if session.req_header().method.is_idempotent() { pool.backends.len().max(2) } else { pool.backends.len() };
            // Counted apart from `tried`, which is cleared to allow the same address again.
            if ctx.upstream.connect_attempts < limit {
                if ctx.upstream.tried.len() >= pool.backends.len() {
                    ctx.upstream.tried.clear();
                }
                e.set_retry(true);
            }
        }
        e
    }

    /// The forwarded request carries the request id, `X-Forwarded-*`, `Via` (with the
    /// client's HTTP version) and the trace context; a revalidation names the origin's own
    /// validator, not an encoded variant's.
    pub(super) fn forward(&self, req: &mut RequestHeader, client_version: http::Version, ctx: &mut Ctx) -> Result<()> {
        for name in [http::header::IF_NONE_MATCH, http::header::IF_MATCH] {
            if let Some(tag) = req.headers.get(&name).and_then(|v| v.to_str().ok()).and_then(crate::edge::compression::origin_etag) {
                req.insert_header(name, tag)?;
            }
        }
        let proto = ctx.request.target.as_ref().map_or("http", |t| t.scheme.as_str());
        forwarding::add_forwarded(req, ctx.request.client, proto, ctx.request.id.value());
        if self.config.server.via {
            let via = forwarding::via(req.headers.get_all(http::header::VIA), client_version, &self.config.server.name);
            req.insert_header(crate::edge::fields::VIA, via)?;
        }
        if let (Some(t), Some(server)) = (&self.tracing, &ctx.trace.server) {
            let name = format!("{} {}", ctx.request.method_label, ctx.route.pool().map(|p| p.name.as_str()).unwrap_or("upstream"));
            ctx.trace.upstream = Some(t.client_span(server, name, req));
        }
        ctx.upstream.started = Some(Instant::now());
        Ok(())
    }

    /// The origin answered (before anything is cached). A textual response is made the
    /// variant of the negotiated coding here, so what the cache stores is already encoded.
    pub(super) fn origin_answered(&self, session: &Session, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        // `Via` goes on here, before the response is stored, so answers from the store carry
        // it without a field written per hit. Not on answers Portier writes itself (error
        // pages): they were not forwarded.
        if self.config.server.via {
            let via = forwarding::via(resp.headers.get_all(http::header::VIA), resp.version, &self.config.server.name);
            let _ = resp.insert_header(crate::edge::fields::VIA, via);
        }
        self.start_compression(session, resp, ctx);
        ctx.upstream.time = ctx.upstream.started.map(|t| t.elapsed());
        ctx.upstream.status = Some(resp.status.as_u16());
        if let Some(cx) = ctx.trace.upstream.take() {
            let pool = ctx.route.pool();
            traces::finish(&cx, resp.status.as_u16(), || {
                vec![KeyValue::new("portier.pool", pool.as_ref().map(|p| p.name.clone()).unwrap_or_default())]
            });
        }
        if let Some(pool) = ctx.route.pool() {
            if let Some(i) = ctx.upstream.backend {
                pool.report_success(i);
            }
            if let Some(t) = ctx.upstream.time {
                self.metrics.upstream_response(&pool.name, t.as_secs_f64() * 1000.0);
            }
        }
        if let (Some(cache), Some(key)) = (self.cache(), &ctx.cache.key_hash) {
            cache.on_origin_answer(key);
        }
        if resp.status.as_u16() == 304 && session.cache.phase() == CachePhase::Stale {
            ctx.cache.revalidation_304 = Some(Box::new(resp.clone()));
        }
    }
}

impl State {
    fn start_compression(&self, session: &Session, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        let Some(route) = ctx.route.active.clone() else { return };
        let z = &self.config.compression;
        if route.compress.is_empty()
            || !crate::edge::compression::eligible(resp, z)
            || session.req_header().method == http::Method::HEAD && !session.cache.enabled()
        {
            return;
        }
        // Long-lived assets are compressed once for good: the highest level pays off.
        let immutable = crate::edge::fields::has_token(&resp.headers, http::header::CACHE_CONTROL, "immutable");
        let path = ctx.request.target.as_ref().map_or("", |t| t.path());
        let max_dictionary = self.dictionaries.max_one();
        let keep_dictionary = route.dictionary.as_ref().is_some_and(|rd| crate::edge::dictionary::start(resp, rd, path, max_dictionary));
        let dictionary = ctx.compress.dictionary.as_deref().map(|d| &d.data);
        let level = match (ctx.compress.coding, immutable) {
            _ if dictionary.is_some() => {
                if immutable {
                    19
                } else {
                    z.zstd_level
                }
            }
            (Some(crate::config::Coding::Gzip), true) => 9,
            (Some(crate::config::Coding::Br), true) => 11,
            (Some(crate::config::Coding::Zstd), true) => 19,
            (Some(crate::config::Coding::Gzip), false) => z.gzip_level,
            (Some(crate::config::Coding::Br), false) => z.br_level,
            (Some(crate::config::Coding::Zstd), false) => z.zstd_level,
            (None, _) => 0,
        };
        // Before `prepare` drops the origin's Content-Length, which sizes the capture.
        if keep_dictionary {
            ctx.compress.capture = Some(Box::new(crate::edge::dictionary::Capture::new(resp, max_dictionary)));
        }
        // Boxed: most requests compress nothing, and the request's state is moved whole.
        ctx.compress.encoder = crate::edge::compression::prepare(resp, ctx.compress.coding, dictionary, level).map(Box::new);
    }

    /// Compresses the origin's body chunk by chunk, before the cache sees it. A response that
    /// becomes a dictionary is collected as the origin sent it (decoded), first.
    pub(super) fn compress_body(&self, body: &mut Option<bytes::Bytes>, end: bool, ctx: &mut Ctx) -> Result<()> {
        if let Some(c) = ctx.compress.capture.as_mut() {
            c.push(body.as_deref().unwrap_or_default());
        }
        if let Some(enc) = ctx.compress.encoder.as_mut() {
            enc.encode(body, end)?;
            if end {
                let (before, after) = enc.sizes();
                self.metrics.compressed(ctx.route.pattern(), enc.label, before, after);
            }
        }
        // The whole body arrived: a dictionary's is kept.
        if let Some(whole) = ctx.compress.capture.take_if(|_| end).and_then(|c| c.into_body()) {
            let min = usize::try_from(self.config.compression.min_size.0).unwrap_or(usize::MAX);
            crate::edge::dictionary::keep(whole, min, ctx.route.pattern(), &self.dictionaries);
        }
        Ok(())
    }
}
