//! The cache status of a response, decided once from Pingora's cache phase; `X-Cache`,
//! `Cache-Status` (RFC 9211), `Server-Timing`, the metric label and the log field all derive
//! from it.

use pingora_cache::CachePhase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CacheStatus {
    /// Served from a fresh stored entry (coalesced waiters too).
    Hit,
    /// Not in cache; fetched (and stored if cacheable).
    Miss,
    /// Served from a stale entry: stale-while-revalidate, or stale-if-error.
    Stale,
    /// A stale entry the origin confirmed with 304.
    Revalidated,
    /// A stale entry replaced by a new 200.
    Expired,
    /// Not cacheable, or the cache is off for this request.
    Bypass,
}

pub(crate) const ALL: [CacheStatus; 6] =
    [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Stale, CacheStatus::Revalidated, CacheStatus::Expired, CacheStatus::Bypass];

impl CacheStatus {
    /// What telemetry records of it.
    pub(crate) fn label(self) -> crate::telemetry::CacheLabel {
        crate::telemetry::CacheLabel { name: self.as_str(), from_store: self.answered_from_store() }
    }

    pub(crate) fn from_phase(phase: CachePhase) -> CacheStatus {
        match phase {
            CachePhase::Hit => CacheStatus::Hit,
            CachePhase::Miss => CacheStatus::Miss,
            CachePhase::Stale | CachePhase::StaleUpdating => CacheStatus::Stale,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
            CachePhase::Expired => CacheStatus::Expired,
            CachePhase::Disabled(_) | CachePhase::Bypass | CachePhase::Uninit | CachePhase::CacheKey => CacheStatus::Bypass,
        }
    }

    /// The `X-Cache` value and the `cache_status` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// Answered without asking the origin (`cache_hit_total`).
    pub(crate) fn answered_from_store(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Stale)
    }

    /// Whether the response is built from a stored entry (so it carries our `Age`).
    pub(crate) fn built_from_store(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated)
    }
}

/// Why the cache did not take part in a request it could have served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BypassReason {
    /// Only GET and HEAD are served from the cache.
    Method,
    /// The route says `cache = false`, or the cache is off.
    Off,
}

/// What Portier answered itself, without the cache or the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalAnswer {
    /// The request target or Host was refused (400).
    Refused,
    /// No route matches (404).
    NoRoute,
    /// The route refuses the client's address (403).
    Forbidden,
    /// The route wants a user name and password (401).
    Unauthorized,
    /// `PURGE` (200/404/403/405).
    Purge,
    /// `OPTIONS *` (200).
    ServerOptions,
    /// Plain HTTP sent to HTTPS (308, `tls.redirect_http`).
    RedirectToHttps,
    /// An ACME HTTP-01 challenge (200).
    AcmeChallenge,
    /// `only-if-cached` and nothing usable stored (504).
    OnlyIfCached,
    /// A request head or body over a limit (413, 414, 431).
    TooLarge,
    /// Too many requests in flight from the client's address (503).
    Busy,
}

impl LocalAnswer {
    fn detail(self) -> &'static str {
        match self {
            LocalAnswer::Refused => "refused",
            LocalAnswer::NoRoute => "no-route",
            LocalAnswer::Forbidden => "forbidden",
            LocalAnswer::Unauthorized => "unauthorized",
            LocalAnswer::Purge => "purge",
            LocalAnswer::ServerOptions => "server-options",
            LocalAnswer::RedirectToHttps => "redirect-https",
            LocalAnswer::AcmeChallenge => "acme-challenge",
            LocalAnswer::OnlyIfCached => "only-if-cached",
            LocalAnswer::TooLarge => "too-large",
            LocalAnswer::Busy => "busy",
        }
    }
}

/// The cache's part in a request, decided once as the request goes and read by the one
/// function that turns it into a status: [`outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum CacheDecision {
    /// Nothing decided yet (the request ended before routing).
    #[default]
    Undecided,
    /// The cache serves or stores this request.
    Eligible,
    /// Eligible, but the response may not be stored (RFC 9111 §3 or the client's `no-store`).
    NotStored(super::policy::Unstorable),
    Bypass(BypassReason),
    Answered(LocalAnswer),
}

/// What `Cache-Status` needs besides the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Details {
    /// `hit`: answered from the store.
    pub(crate) hit: bool,
    /// `fwd=`: why the request went to the origin (`miss`, `stale`, `method`, `bypass`).
    pub(crate) fwd: Option<&'static str>,
    /// Remaining freshness in seconds (negative when stale).
    pub(crate) ttl: Option<i64>,
    pub(crate) origin_status: Option<u16>,
    pub(crate) stored: bool,
    pub(crate) detail: Option<&'static str>,
}

/// The cache status of one response and everything derived from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) status: CacheStatus,
    pub(crate) details: Details,
}

/// What the request path knows when the response header is built.
pub(crate) struct Facts<'a> {
    pub(crate) decision: CacheDecision,
    pub(crate) phase: CachePhase,
    /// The stored entry's meta, when the response is built from one.
    pub(crate) meta: Option<&'a pingora_cache::CacheMeta>,
    pub(crate) origin_status: Option<u16>,
    /// The origin could not be reached or did not answer.
    pub(crate) upstream_error: Option<&'static str>,
    /// A stale entry served without asking the origin, because every address of its pool is
    /// down (stale-if-error on an error already known).
    pub(crate) origin_down: bool,
    /// A hit read from a tier behind memory: its detail (`shared`: another replica stored
    /// it; `disk`: stored before a restart, or evicted from memory since).
    pub(crate) hit_tier: Option<&'static str>,
    /// A stale entry served without a refresh of its own: another replica is refreshing it.
    pub(crate) refreshed_elsewhere: bool,
}

/// The one place a cache status is decided.
pub(crate) fn outcome(f: &Facts<'_>, now: std::time::SystemTime) -> Outcome {
    let (status, fwd, detail) = match f.decision {
        CacheDecision::Answered(a) => {
            let status = if a == LocalAnswer::OnlyIfCached { CacheStatus::Miss } else { CacheStatus::Bypass };
            (status, None, Some(a.detail()))
        }
        CacheDecision::Bypass(r) => (CacheStatus::Bypass, Some(if r == BypassReason::Method { "method" } else { "bypass" }), None),
        CacheDecision::Undecided => (CacheStatus::Bypass, Some("bypass"), None),
        CacheDecision::Eligible | CacheDecision::NotStored(_) => {
            let status = match CacheStatus::from_phase(f.phase) {
                // Pingora disables the cache when the origin fails; for the client it was a
                // miss that could not be filled.
                CacheStatus::Bypass if f.upstream_error.is_some() => CacheStatus::Miss,
                CacheStatus::Hit if f.origin_down || f.refreshed_elsewhere => CacheStatus::Stale,
                s => s,
            };
            let detail = match (f.phase, f.decision) {
                (CachePhase::StaleUpdating, _) => Some("stale-while-revalidate"),
                (CachePhase::Stale, _) => Some("stale-if-error"),
                (CachePhase::Hit, _) if f.origin_down => Some("stale-if-error"),
                (CachePhase::Hit, _) if f.refreshed_elsewhere => Some("stale-while-revalidate"),
                (CachePhase::Hit, _) if f.hit_tier.is_some() => f.hit_tier,
                (_, CacheDecision::NotStored(why)) => Some(why.as_str()),
                // Pingora's own reasons: too large, lock timeout, storage error.
                (CachePhase::Disabled(r), _) => Some(match r {
                    pingora_cache::NoCacheReason::Custom(c) => c,
                    other => other.as_str(),
                }),
                _ => None,
            };
            let fwd = match status {
                CacheStatus::Hit | CacheStatus::Stale => None,
                CacheStatus::Miss => Some("miss"),
                CacheStatus::Revalidated | CacheStatus::Expired => Some("stale"),
                CacheStatus::Bypass => Some("bypass"),
            };
            (status, fwd, detail)
        }
    };
    let ttl = f.meta.filter(|_| status.built_from_store()).map(|m| match m.fresh_until().duration_since(now) {
        // Rounded, so a just-refreshed `max-age=1` reads ttl=1, not 0.
        Ok(d) => d.as_secs_f64().round() as i64,
        Err(e) => -(e.duration().as_secs_f64().round() as i64),
    });
    let stored = matches!(f.decision, CacheDecision::Eligible) && matches!(f.phase, CachePhase::Miss | CachePhase::Expired);
    Outcome {
        status,
        details: Details {
            hit: status.answered_from_store(),
            fwd,
            ttl,
            origin_status: f.origin_status.filter(|_| !status.answered_from_store()),
            stored: stored && f.upstream_error.is_none(),
            detail: f.upstream_error.or(detail),
        },
    }
}

/// Parsed once: looking a field up by `&str` parses the name on every response.
use crate::edge::fields::{CACHE_STATUS, SERVER_TIMING, X_CACHE};

impl Outcome {
    /// `X-Cache`, `Cache-Status` and `Server-Timing` on a response Portier sends, `name`
    /// being this cache's identifier (`server.name`).
    ///
    /// `Cache-Status` and `Server-Timing` are lists: Portier's member goes last (RFC 9211
    /// §2: nearest the user last) after what the origin said, so a chain of caches and the
    /// application's own timings (`db;dur=53`) stay readable. A response from the store keeps
    /// its stored `Cache-Status` (what the caches behind said when it was filled) but not its
    /// stored `Server-Timing`, which timed another request. `X-Cache` is one value, the
    /// answer of the cache nearest the user that took part: Portier's own, except when it
    /// only passed the request on (`BYPASS`) and the origin, a cache itself, said one.
    pub(crate) fn write_headers(
        &self,
        resp: &mut pingora_http::ResponseHeader,
        origin_ms: Option<f64>,
        name: &str,
    ) -> pingora_error::Result<()> {
        if !(self.status == CacheStatus::Bypass && resp.headers.contains_key(&X_CACHE.0)) {
            resp.insert_header(X_CACHE, http::HeaderValue::from_static(self.status.as_str()))?;
        }
        let member = cache_status_header(name, &self.details);
        if resp.headers.contains_key(&CACHE_STATUS.0) {
            append_member(resp, CACHE_STATUS, member.as_bytes())?;
        } else {
            resp.insert_header(CACHE_STATUS, member)?;
        }
        let timing = server_timing(self.status, origin_ms);
        if origin_ms.is_none() {
            // Replaces every stored line.
            resp.insert_header(SERVER_TIMING, timing)?;
        } else {
            append_member(resp, SERVER_TIMING, timing.as_bytes())?;
        }
        Ok(())
    }
}

/// Appends `member` to the list field `name` (see [`crate::edge::fields::appended`]).
fn append_member(resp: &mut pingora_http::ResponseHeader, name: crate::edge::fields::Name, member: &[u8]) -> pingora_error::Result<()> {
    let value = crate::edge::fields::appended(resp.headers.get_all(&name.0), member)
        .or_else(|| http::HeaderValue::from_bytes(member).ok())
        .unwrap_or(http::HeaderValue::from_static("portier"));
    resp.insert_header(name, value)
}

/// RFC 9211 `Cache-Status` member, e.g. `portier; hit; ttl=57`, `portier; fwd=miss; fwd-status=200; stored`.
pub(crate) fn cache_status_header(name: &str, d: &Details) -> String {
    use crate::text::{push_i64, push_u64};
    let mut out = String::with_capacity(64);
    out.push_str(name);
    if d.hit {
        out.push_str("; hit");
    }
    if let Some(fwd) = d.fwd {
        out.push_str("; fwd=");
        out.push_str(fwd);
    }
    if let Some(code) = d.origin_status {
        out.push_str("; fwd-status=");
        push_u64(&mut out, u64::from(code));
    }
    if d.stored {
        out.push_str("; stored");
    }
    if let Some(ttl) = d.ttl {
        out.push_str("; ttl=");
        push_i64(&mut out, ttl);
    }
    if let Some(detail) = d.detail {
        out.push_str("; detail=");
        out.push_str(detail);
    }
    out
}

/// `cache;desc="HIT"`, plus `origin;dur=<ms>` when the origin was asked for this response.
pub(crate) fn server_timing(s: CacheStatus, origin_ms: Option<f64>) -> http::HeaderValue {
    let Some(ms) = origin_ms else {
        // A hit asks nothing of the origin: one static value per status, nothing to format.
        return http::HeaderValue::from_static(match s {
            CacheStatus::Hit => "cache;desc=\"HIT\"",
            CacheStatus::Stale => "cache;desc=\"STALE\"",
            CacheStatus::Miss => "cache;desc=\"MISS\"",
            CacheStatus::Expired => "cache;desc=\"EXPIRED\"",
            CacheStatus::Revalidated => "cache;desc=\"REVALIDATED\"",
            CacheStatus::Bypass => "cache;desc=\"BYPASS\"",
        });
    };
    let mut out = String::with_capacity(48);
    out.push_str("cache;desc=\"");
    out.push_str(s.as_str());
    out.push_str("\", origin;dur=");
    crate::text::push_fixed(&mut out, ms, 1);
    http::HeaderValue::from_str(&out).unwrap_or_else(|_| http::HeaderValue::from_static("cache"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::Unstorable;

    fn header(decision: CacheDecision, phase: CachePhase, origin_status: Option<u16>) -> String {
        let f = Facts {
            decision,
            phase,
            meta: None,
            origin_status,
            upstream_error: None,
            origin_down: false,
            hit_tier: None,
            refreshed_elsewhere: false,
        };
        cache_status_header("portier", &outcome(&f, std::time::SystemTime::now()).details)
    }

    #[test]
    fn headers_read_as_the_rfc_examples() {
        let hit = Details { hit: true, ttl: Some(57), ..Default::default() };
        assert_eq!(cache_status_header("portier", &hit), "portier; hit; ttl=57");
        assert_eq!(cache_status_header("edge-1", &hit), "edge-1; hit; ttl=57");
        assert_eq!(header(CacheDecision::Eligible, CachePhase::Miss, Some(200)), "portier; fwd=miss; fwd-status=200; stored");
        assert_eq!(header(CacheDecision::Eligible, CachePhase::Revalidated, Some(304)), "portier; fwd=stale; fwd-status=304");
        assert_eq!(
            header(
                CacheDecision::Bypass(BypassReason::Method),
                CachePhase::Disabled(pingora_cache::NoCacheReason::NeverEnabled),
                Some(200)
            ),
            "portier; fwd=method; fwd-status=200"
        );
        assert_eq!(
            header(
                CacheDecision::NotStored(Unstorable::Private),
                CachePhase::Disabled(pingora_cache::NoCacheReason::OriginNotCache),
                Some(200)
            ),
            "portier; fwd=bypass; fwd-status=200; detail=private"
        );
        assert_eq!(header(CacheDecision::Answered(LocalAnswer::OnlyIfCached), CachePhase::Miss, None), "portier; detail=only-if-cached");
        assert_eq!(header(CacheDecision::Answered(LocalAnswer::Purge), CachePhase::Uninit, None), "portier; detail=purge");
        assert_eq!(server_timing(CacheStatus::Miss, Some(12.345)), "cache;desc=\"MISS\", origin;dur=12.3");
        assert_eq!(server_timing(CacheStatus::Hit, None), "cache;desc=\"HIT\"");
    }
}
