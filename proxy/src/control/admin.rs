//! The admin listener: liveness, readiness, metrics and the cache API. Never served on the
//! public port.

use crate::gateway::State;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

pub(crate) struct Admin {
    pub(crate) live: Arc<arc_swap::ArcSwap<State>>,
    pub(crate) reloader: Arc<crate::control::reload::Reloader>,
}

/// A profile to save (`curl -o`), named for the browser.
fn download(bytes: Vec<u8>, filename: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("content-disposition", format!("attachment; filename=\"{filename}\""))
        .header("content-length", bytes.len())
        .body(bytes)
        .unwrap_or_default()
}

/// Hits over lookups since start (0 before any), as `/cache/stats` and `/ui/data` show it.
fn hit_ratio(hits: u64, misses: u64) -> f64 {
    if hits + misses > 0 {
        hits as f64 / (hits + misses) as f64
    } else {
        0.0
    }
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    let bytes = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("cache-control", "no-store")
        .body(bytes)
        .unwrap_or_default()
}

impl Admin {
    /// 200 only when every pool has at least one healthy address; the body says which are down.
    fn readiness(&self) -> Response<Vec<u8>> {
        let mut pools = serde_json::Map::new();
        let mut ready = true;
        for pool in self.state().upstreams.pools() {
            let addrs: Vec<_> = pool.backends.iter().map(|b| json!({"address": b.addr.to_string(), "healthy": b.healthy()})).collect();
            let ok = pool.any_healthy();
            ready &= ok;
            pools.insert(pool.name.clone(), json!({"ready": ok, "addresses": addrs}));
        }
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, &json!({"ready": ready, "pools": pools}))
    }
}

const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Reads a request body up to `MAX_ADMIN_BODY`; `Err` when it is larger or unreadable.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_ADMIN_BODY {
                    return Err(format!("body larger than {MAX_ADMIN_BODY} bytes"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("cannot read the body: {e}")),
        }
    }
}

const ENDPOINTS: [&str; 11] = [
    "GET /ui",
    "GET /ui/data",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /metrics/totals",
    "GET /cache/stats",
    "POST /cache/purge",
    "POST /config/reload",
    "GET /debug/pprof/profile?seconds=N",
    "GET /debug/pprof/heap",
];

impl Admin {
    /// The state new requests get (swapped by a reload).
    fn state(&self) -> Arc<State> {
        self.live.load_full()
    }

    /// `POST /config/reload`: 200 with the keys that need a restart to change, 422 with every
    /// problem of an invalid file (the running configuration stays).
    async fn reload(&self) -> Response<Vec<u8>> {
        let reloader = self.reloader.clone();
        let result = tokio::task::spawn_blocking(move || reloader.reload()).await;
        match result {
            Ok(Ok(kept)) => json_response(StatusCode::OK, &json!({"reloaded": true, "restart_needed_for": kept})),
            Ok(Err(e @ crate::control::reload::ReloadError::NoFile)) => {
                json_response(StatusCode::CONFLICT, &json!({"error": e.to_string()}))
            }
            Ok(Err(e)) => json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({"reloaded": false, "error": e.to_string()})),
            Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()})),
        }
    }

    /// Purges and profiles change state or cost CPU: with `listen.admin_token` they need it as
    /// a bearer token; without one they answer only when the admin listener is loopback-only
    /// (in a container it listens on 0.0.0.0 for Prometheus, and /metrics stays open).
    /// Either way a browser cannot be made to send them from another site: a cross-site
    /// `Sec-Fetch-Site` or an `Origin` that does not name this listener is refused.
    /// `Some` is the refusal to send.
    fn guard(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        if let Some(why) = cross_site(session.req_header()) {
            return Some(json_response(StatusCode::FORBIDDEN, &json!({ "error": why })));
        }
        let st = self.state();
        let listen = &st.config.listen;
        match &listen.admin_token {
            Some(token) => {
                let sent = session
                    .req_header()
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if crate::cache::purge::same(sent.trim().as_bytes(), token.as_bytes()) {
                    None
                } else {
                    Some(json_response(StatusCode::UNAUTHORIZED, &json!({"error": "send Authorization: Bearer <listen.admin_token>"})))
                }
            }
            None if listen.admin.0.ip().is_loopback() => None,
            None => Some(json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": "the admin listener is not loopback-only: set listen.admin_token (or PORTIER_ADMIN_TOKEN) to use this"}),
            )),
        }
    }

    /// `GET /debug/pprof/profile?seconds=N` (default 30, at most 300): a pprof protobuf.
    async fn profile(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        use crate::telemetry::profiling::{ProfileError, MAX_SECONDS};
        let query = session.req_header().uri.query().unwrap_or("");
        let seconds = match crate::cache::url::query_param(Some(query), "seconds") {
            None => 30,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=MAX_SECONDS).contains(&n) => n,
                _ => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("seconds must be a whole number from 1 to {MAX_SECONDS}")}),
                    );
                }
            },
        };
        // The request has no body: reading completes only when the client closes.
        let client_gone = async { while let Ok(Some(_)) = session.read_body_or_idle(true).await {} };
        match self.state().profiling.cpu_profile(seconds, client_gone).await {
            Ok(bytes) => download(bytes, "profile.pb"),
            Err(e @ (ProfileError::Busy | ProfileError::PushActive)) => {
                json_response(StatusCode::CONFLICT, &json!({"error": e.to_string()}))
            }
            Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()})),
        }
    }

    /// `GET /debug/pprof/heap`: what the heap holds now (gzipped pprof, `go tool pprof` reads it).
    async fn heap_profile(&self) -> Response<Vec<u8>> {
        match tokio::task::spawn_blocking(crate::telemetry::profiling::Profiling::heap_profile).await {
            Ok(Ok(bytes)) => download(bytes, "heap.pb.gz"),
            Ok(Err(e)) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()})),
            Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()})),
        }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        let st = self.state();
        let ext = crate::telemetry::metrics::External {
            store: st.cache.as_ref().map(|c| {
                let s = c.stats();
                crate::telemetry::metrics::StoreGauges {
                    entries: s.entries as u64,
                    bytes: s.bytes as u64,
                    capacity: s.capacity as u64,
                    evictions: s.evictions,
                }
            }),
            upstream_health: st
                .upstreams
                .pools()
                .flat_map(|p| p.backends.iter().map(move |b| (p.name.as_str(), b.addr.to_string(), b.healthy())))
                .collect(),
            spans: st.tracing.as_ref().map(|t| t.counters.as_ref()),
            access_log_dropped: st.access_log.dropped.load(std::sync::atomic::Ordering::Relaxed),
            profiles: Some(st.profiling.counters.as_ref()),
            connections: Some(st.connections.as_ref()),
            dictionaries: st.dictionaries.stats(),
        };
        let text = st.metrics.render(&ext).into_bytes();

        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .header("content-length", text.len())
            .body(text)
            .unwrap_or_default()
    }

    fn cache_stats(&self) -> Response<Vec<u8>> {
        let st = self.state();
        let Some(c) = &st.cache else {
            return json_response(StatusCode::OK, &json!({"enabled": false}));
        };
        let m = &st.metrics;
        let s = c.stats();
        let (hits, misses) = (m.cache_hit.get(), m.cache_miss.get());
        json_response(
            StatusCode::OK,
            &json!({
                "enabled": true,
                "entries": s.entries,
                "bytes": s.bytes,
                "capacity": s.capacity,
                "max_object_size": s.max_object,
                "hits": hits,
                "misses": misses,
                "hit_ratio": hit_ratio(hits, misses),
                "evictions": s.evictions,
                "coalesced": m.coalesced.get(),
                "tiers": c.tier_stats(),
            }),
        )
    }

    /// `GET /ui`: the operator's page (static; it reads `/ui/data`).
    fn ui_page(&self) -> Response<Vec<u8>> {
        let page = crate::control::operator::PAGE.as_bytes().to_vec();
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "no-store")
            .header("content-security-policy", "default-src 'self'; img-src data:; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
            .header("content-length", page.len())
            .body(page)
            .unwrap_or_default()
    }

    /// `GET /ui/data`: what the page shows. It names request paths (never query strings) and
    /// the pools' addresses, so it is guarded like purges.
    fn ui_data(&self) -> Response<Vec<u8>> {
        let st = self.state();
        let m = &st.metrics;
        let (hits, misses) = (m.cache_hit.get(), m.cache_miss.get());
        let (from_cache, from_origin) = m.served_bytes();
        let stats = st.cache.as_ref().map(|c| c.stats()).unwrap_or_default();
        let history = st.operator.history();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // The last minute: live counters against the newest point at least a minute old
        // (or the oldest there is).
        let since = history.iter().rev().find(|p| now.saturating_sub(p.t) >= 60).or(history.first());
        let (rps, recent_ratio) = match since {
            Some(p) if now > p.t => {
                let n = (hits + misses).saturating_sub(p.hits + p.misses);
                let h = hits.saturating_sub(p.hits);
                (n as f64 / (now - p.t) as f64, (n > 0).then(|| h as f64 / n as f64))
            }
            _ => (0.0, None),
        };
        // The chart ends now, not at the last 5-second sample.
        let mut history = history;
        if history.last().is_some_and(|p| now > p.t) {
            history.push(crate::gateway::operator_view::Point { t: now, hits, misses, cache_bytes: from_cache, origin_bytes: from_origin });
        }
        let (top_hits, top_misses) = st.operator.top(10);
        let urls = |v: Vec<crate::gateway::operator_view::TopUrl>| {
            v.into_iter().map(|(path, c)| json!({"path": path, "hits": c.hits, "misses": c.misses, "reason": c.reason})).collect::<Vec<_>>()
        };
        let pools: Vec<serde_json::Value> = st
            .upstreams
            .pools()
            .flat_map(|p| {
                p.backends.iter().map(move |b| json!({"pool": p.name.as_str(), "address": b.addr.to_string(), "healthy": b.healthy()}))
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "cache": {
                    "enabled": st.cache.is_some(),
                    "hits": hits,
                    "misses": misses,
                    "hit_ratio": hit_ratio(hits, misses),
                    "entries": stats.entries,
                    "bytes": stats.bytes,
                    "capacity": stats.capacity,
                    "tiers": st.cache.as_ref().map(|c| c.tier_stats()).unwrap_or_default(),
                    "served_from_cache_bytes": from_cache,
                    "served_from_origin_bytes": from_origin,
                },
                "recent": {"rps": rps, "hit_ratio": recent_ratio},
                "history": history,
                "top_hits": urls(top_hits),
                "top_misses": urls(top_misses),
                "pools": pools,
            }),
        )
    }

    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let st = self.state();
        let Some(c) = &st.cache else {
            return json_response(StatusCode::CONFLICT, &json!({"error": "the cache is disabled"}));
        };
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(e) => return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": e})),
        };
        match crate::cache::purge::PurgeRequest::parse(&body) {
            Ok((sel, soft)) => {
                let n = c.purge_matching(&sel, soft);
                let reason = if soft { crate::cache::purge::PurgeReason::ApiSoft } else { crate::cache::purge::PurgeReason::Api };
                st.metrics.purged(reason.as_str(), n);
                json_response(StatusCode::OK, &json!({"purged": n, "soft": soft}))
            }
            Err(e) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": e, "expected": {"url|prefix|tag": "string", "soft": "bool (optional)"}}),
            ),
        }
    }
}

/// Whether `Host` names the admin listener: absent (HTTP/1.0), an IP address, `localhost` or
/// `*.localhost` (browsers resolve those without DNS), or one of `listen.admin_hosts`. A DNS
/// rebinding page reaches the listener under its own name, which is none of these.
fn host_names_us(req: &pingora_http::RequestHeader, extra: &[crate::config::HostPattern]) -> bool {
    let Some(host) = req.headers.get(http::header::HOST) else { return true };
    let Ok(host) = host.to_str() else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.len() > ".localhost".len() && name[name.len() - ".localhost".len()..].eq_ignore_ascii_case(".localhost")
        || extra.iter().any(|h| h.matches(name))
}

/// Why a request a browser sent from another site is refused, if it is one: `Sec-Fetch-Site`
/// other than `same-origin` or `none` (typed in the address bar), or an `Origin` whose host
/// is not one this listener answers to. Tools (curl, Prometheus, `portier`) send neither.
fn cross_site(req: &pingora_http::RequestHeader) -> Option<&'static str> {
    let h = &req.headers;
    if let Some(site) = h.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Some("refused: a request from another site (Sec-Fetch-Site)");
        }
    }
    let origin = h.get(http::header::ORIGIN)?;
    let same = origin.to_str().ok().and_then(|o| o.split_once("://")).zip(h.get(http::header::HOST).and_then(|v| v.to_str().ok()));
    match same {
        Some(((_, origin_host), host)) if origin_host.eq_ignore_ascii_case(host) => None,
        _ => Some("refused: a request from another origin (Origin)"),
    }
}

/// State-changing requests carry JSON (`Content-Type: application/json`), which a cross-site
/// form or a "simple" `fetch` cannot send without a preflight this listener never answers.
fn is_json(req: &pingora_http::RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if !host_names_us(session.req_header(), &self.state().config.listen.admin_hosts) {
            return json_response(
                StatusCode::MISDIRECTED_REQUEST,
                &json!({"error": "this Host does not name the admin listener: add it to listen.admin_hosts (PORTIER_ADMIN_HOSTS)"}),
            );
        }
        if method == http::Method::POST && !is_json(session.req_header()) {
            return json_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &json!({"error": "send Content-Type: application/json"}));
        }
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            ("GET" | "HEAD", "/readyz") => self.readiness(),
            ("GET", "/metrics") => self.metrics(),
            ("GET", "/metrics/totals") => json_response(
                StatusCode::OK,
                &json!({"time_ms": crate::telemetry::time::unix_ms_now(), "totals": self.state().metrics.totals()}),
            ),
            ("GET", "/cache/stats") => self.cache_stats(),
            ("GET" | "HEAD", "/ui" | "/ui/") => self.ui_page(),
            ("GET", "/ui/data") => match self.guard(session) {
                Some(refused) => refused,
                None => self.ui_data(),
            },
            ("POST", "/cache/purge") => match self.guard(session) {
                None => self.purge(session).await,
                Some(refusal) => refusal,
            },
            ("POST", "/config/reload") => match self.guard(session) {
                None => self.reload().await,
                Some(refusal) => refusal,
            },
            ("GET", "/debug/pprof/heap") => match self.guard(session) {
                Some(refused) => refused,
                None => self.heap_profile().await,
            },
            ("GET", "/debug/pprof/profile") => match self.guard(session) {
                None => self.profile(session).await,
                Some(refusal) => refusal,
            },
            (_, "/healthz" | "/readyz" | "/metrics" | "/metrics/totals" | "/cache/stats") => {
                json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "use GET"}))
            }
            (_, "/cache/purge" | "/config/reload") => json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "use POST"})),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found", "endpoints": ENDPOINTS})),
        }
    }
}
