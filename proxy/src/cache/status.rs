//! The cache status of a response, decided once from Pingora's cache phase; `X-Cache`,
//! `Cache-Status` (RFC 9211), `Server-Timing`, the metric label and the log field all derive
//! from it.

use pingora_cache::CachePhase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
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

pub const ALL: [CacheStatus; 6] =
    [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Stale, CacheStatus::Revalidated, CacheStatus::Expired, CacheStatus::Bypass];

impl CacheStatus {
    pub fn from_phase(phase: CachePhase) -> CacheStatus {
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
    pub fn as_str(self) -> &'static str {
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
    pub fn from_cache(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Stale)
    }

    /// Whether the response is built from a stored entry (so it carries our `Age`).
    pub fn built_from_store(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated)
    }
}

/// What `Cache-Status` needs besides the status.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// Remaining freshness in seconds (negative when stale).
    pub ttl: Option<i64>,
    pub origin_status: Option<u16>,
    pub stored: bool,
    pub detail: Option<&'static str>,
    /// `fwd=` for bypasses: `method`, `request` or `bypass`.
    pub bypass_kind: Option<&'static str>,
}

/// RFC 9211 `Cache-Status`, e.g. `portier; hit; ttl=57`, `portier; fwd=miss; fwd-status=200; stored`.
pub fn cache_status_header(s: CacheStatus, d: &Details) -> String {
    let mut out = String::from("portier");
    match s {
        CacheStatus::Hit | CacheStatus::Stale => out.push_str("; hit"),
        CacheStatus::Miss => out.push_str("; fwd=miss"),
        CacheStatus::Revalidated | CacheStatus::Expired => out.push_str("; fwd=stale"),
        CacheStatus::Bypass => {
            out.push_str("; fwd=");
            out.push_str(d.bypass_kind.unwrap_or("bypass"));
        }
    }
    if let (Some(code), false) = (d.origin_status, s.from_cache()) {
        out.push_str(&format!("; fwd-status={code}"));
    }
    if d.stored && matches!(s, CacheStatus::Miss | CacheStatus::Expired) {
        out.push_str("; stored");
    }
    if let Some(ttl) = d.ttl {
        out.push_str(&format!("; ttl={ttl}"));
    }
    if let Some(detail) = d.detail {
        out.push_str("; detail=");
        out.push_str(detail);
    }
    out
}

/// `cache;desc="HIT"`, plus `origin;dur=<ms>` when the origin was asked for this response.
pub fn server_timing(s: CacheStatus, origin_ms: Option<f64>) -> String {
    match origin_ms {
        Some(ms) => format!("cache;desc=\"{}\", origin;dur={ms:.1}", s.as_str()),
        None => format!("cache;desc=\"{}\"", s.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_the_rfc_examples() {
        let hit = Details { ttl: Some(57), ..Default::default() };
        assert_eq!(cache_status_header(CacheStatus::Hit, &hit), "portier; hit; ttl=57");
        let miss = Details { origin_status: Some(200), stored: true, ..Default::default() };
        assert_eq!(cache_status_header(CacheStatus::Miss, &miss), "portier; fwd=miss; fwd-status=200; stored");
        let reval = Details { origin_status: Some(304), ttl: Some(60), ..Default::default() };
        assert_eq!(cache_status_header(CacheStatus::Revalidated, &reval), "portier; fwd=stale; fwd-status=304; ttl=60");
        let by = Details { origin_status: Some(200), bypass_kind: Some("method"), ..Default::default() };
        assert_eq!(cache_status_header(CacheStatus::Bypass, &by), "portier; fwd=method; fwd-status=200");
        assert_eq!(server_timing(CacheStatus::Miss, Some(12.345)), "cache;desc=\"MISS\", origin;dur=12.3");
        assert_eq!(server_timing(CacheStatus::Hit, None), "cache;desc=\"HIT\"");
    }
}
