//! Per-request state, grouped by the part of the request path that owns it.

use crate::cache::policy::RequestRules;
use crate::cache::status::{CacheDecision, Outcome};
use crate::cache::url::CacheUrl;
use crate::edge::target::Target;
use crate::gateway::routing::ActiveRoute;
use crate::upstream::Pool;
use pingora_http::ResponseHeader;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Requests being served right now; graceful shutdown waits for this to reach zero.
pub(crate) static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Set on SIGTERM/SIGINT: every answer from then on says `Connection: close`, so keep-alive
/// clients open their next connection elsewhere instead of sending into a closing socket.
pub(crate) static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) struct InFlight(());
impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight(())
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What was asked, once checked.
#[derive(Default)]
pub(crate) struct RequestPart {
    /// None until `request_filter` accepted the target (and for refused requests).
    pub(crate) target: Option<Target>,
    /// The cache key's URL, derived from `target`.
    pub(crate) url: Option<CacheUrl>,
    /// The method as metrics and spans record it (`_OTHER` for unknown ones).
    pub(crate) method_label: &'static str,
    pub(crate) id: crate::edge::forwarding::RequestId,
    /// The client's address: the peer's, or what a trusted proxy reports.
    pub(crate) client: Option<std::net::IpAddr>,
    /// This request's place among its client's requests in flight.
    pub(crate) slot: Option<crate::edge::limits::ClientSlot>,
    /// The route's body limit and what has been read of the body so far.
    pub(crate) max_body: u64,
    pub(crate) body_read: u64,
}

/// Where it goes.
#[derive(Default)]
pub(crate) struct RoutePart {
    /// The matched route, whole (its pool, rules and policy), as the state the request
    /// started with built it.
    pub(crate) active: Option<Arc<ActiveRoute>>,
    pub(crate) span_name: String,
}

impl RoutePart {
    pub(crate) fn pool(&self) -> Option<&Arc<Pool>> {
        self.active.as_ref().and_then(|r| r.pool.as_ref())
    }

    /// The route's pattern (`/api/*`), empty when none matched.
    pub(crate) fn pattern(&self) -> &str {
        self.active.as_ref().map_or("", |r| r.pattern.as_str())
    }
}

/// The origin's side.
#[derive(Default)]
pub(crate) struct UpstreamPart {
    /// Address indexes of the pool already tried for this request.
    pub(crate) tried: Vec<usize>,
    pub(crate) connect_attempts: usize,
    pub(crate) backend: Option<usize>,
    pub(crate) started: Option<Instant>,
    pub(crate) time: Option<Duration>,
    pub(crate) status: Option<u16>,
}

/// The cache's side.
#[derive(Default)]
pub(crate) struct CachePart {
    pub(crate) decision: CacheDecision,
    pub(crate) rules: RequestRules,
    /// Headers of an upstream 304, merged in full into the stored response.
    pub(crate) revalidation_304: Option<Box<ResponseHeader>>,
    /// The hash of the cache key, once Pingora has asked for the key.
    pub(crate) key_hash: Option<pingora_cache::key::HashBinary>,
    /// The hit came from a tier behind memory: its `Cache-Status` detail (`shared`, `disk`).
    pub(crate) hit_tier: Option<&'static str>,
    /// A stale entry served as is: another replica is refreshing it (stale-while-revalidate).
    pub(crate) stale_refreshed_elsewhere: bool,
    /// The stored entry is served stale without asking the origin: its pool is down.
    pub(crate) stale_while_origin_down: bool,
    /// `Set-Cookie` fields of that 304: for this client's answer, not for the store.
    pub(crate) cookies_for_client: Vec<http::HeaderValue>,
    /// `If-Match` / `If-Unmodified-Since` failed against the response about to be sent.
    pub(crate) precondition_failed: bool,
    /// Set once, where the response header is built; everything else reads it.
    pub(crate) outcome: Option<Outcome>,
    /// A fresh hit answered from memory before Pingora's cache ran (see `fast_hit`): the
    /// cache's phase says nothing about this request.
    pub(crate) answered_from_memory: bool,
    /// Invalidation rules matching this request, and the start of its body they may read.
    pub(crate) invalidation_rules: Vec<usize>,
    pub(crate) captured_body: Option<Vec<u8>>,
}

/// Compression of this response (see [`crate::edge::compression`]).
#[derive(Default)]
pub(crate) struct CompressPart {
    /// What the client's `Accept-Encoding` and the route's `compress` agree on.
    pub(crate) coding: Option<crate::config::Coding>,
    /// The dictionary the client holds and Portier too (RFC 9842): the response is then `dcz`.
    pub(crate) dictionary: Option<std::sync::Arc<crate::edge::dictionary::Dictionary>>,
    /// Set while the origin's body is being compressed on its way to the cache.
    pub(crate) encoder: Option<Box<crate::edge::compression::Encoder>>,
    /// Set while a response that becomes a dictionary is being received.
    pub(crate) capture: Option<Box<crate::edge::dictionary::Capture>>,
}

/// Tracing state.
#[derive(Default)]
pub(crate) struct TracePart {
    /// The server span when this request is sampled.
    pub(crate) server: Option<opentelemetry::Context>,
    /// The client span while the origin is asked.
    pub(crate) upstream: Option<opentelemetry::Context>,
    /// Unsampled requests that came with a `traceparent`: its trace id, for the log.
    pub(crate) unsampled_trace_id: Option<String>,
}

pub(crate) struct Ctx {
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    pub(crate) request: RequestPart,
    pub(crate) route: RoutePart,
    pub(crate) upstream: UpstreamPart,
    pub(crate) cache: CachePart,
    pub(crate) compress: CompressPart,
    pub(crate) trace: TracePart,
    pub(crate) body_bytes: u64,
    /// The status Portier answered with itself (error pages, PURGE), when it did.
    pub(crate) local_status: Option<u16>,
    _in_flight: InFlight,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            started: Instant::now(),
            started_at: SystemTime::now(),
            request: RequestPart { method_label: crate::telemetry::method::OTHER, ..Default::default() },
            route: RoutePart::default(),
            upstream: UpstreamPart::default(),
            cache: CachePart::default(),
            compress: CompressPart::default(),
            trace: TracePart::default(),
            body_bytes: 0,
            local_status: None,
            _in_flight: InFlight::new(),
        }
    }
}
