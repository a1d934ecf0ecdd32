//! RFC 9111 storage and freshness rules for a shared cache, with RFC 9213 targeted fields and
//! per-route overrides. Pure functions of the request, the response and the config, so every
//! rule is unit-tested here; the gateway turns a [`Plan`] into a Pingora `CacheMeta`.

use super::directives::Directives;
use crate::config::{CacheConfig, EtagMode, Route};
use pingora_cache::CacheMeta;
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// Portier's own targeted field, then the CDN one (RFC 9213), then `Cache-Control`.
/// `Surrogate-Control` (the older Edge Architecture field) comes last.
pub(crate) const TARGETED_FIELDS: [&str; 3] = ["portier-cache-control", "cdn-cache-control", "surrogate-control"];

/// The fields addressed to Portier alone, removed before the response goes on.
/// `CDN-Cache-Control` addresses every CDN on the path and is forwarded (RFC 9213 §2.1).
pub(crate) const OWN_FIELDS: [&str; 2] = ["portier-cache-control", "surrogate-control"];

/// Status codes Portier understands (RFC 9110), for `must-understand` (RFC 9111 §5.2.2.3).
const UNDERSTOOD: [u16; 39] = [
    200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412,
    413, 414, 415, 416, 417, 421, 422, 426, 500, 501, 502, 503,
];

/// Status codes cacheable by default, i.e. heuristically (RFC 9110 §15.1), minus 206 (Portier
/// stores complete responses only).
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

const HEURISTIC_CAP: Duration = Duration::from_secs(86_400);

/// Transfer-Encoding goes too: the storage re-frames the body with Content-Length.
const HOP_BY_HOP: [&str; 7] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Per-route cache options.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoutePolicy {
    pub enabled: bool,
    pub ttl: Option<Duration>,
    pub swr: Option<Duration>,
    pub sie: Option<Duration>,
    pub etag: EtagMode,
    pub cache_set_cookie: bool,
}

impl RoutePolicy {
    pub(crate) fn from_route(r: &Route) -> Self {
        RoutePolicy {
            enabled: r.cache,
            ttl: r.ttl.map(|d| d.get()),
            swr: r.stale_while_revalidate.map(|d| d.get()),
            sie: r.stale_if_error.map(|d| d.get()),
            etag: r.etag,
            cache_set_cookie: r.cache_set_cookie,
        }
    }
}

/// Why a response is not stored; also the `detail` in `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstorable {
    Status,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryStar,
    NoFreshness,
    RequestNoStore,
}

impl Unstorable {
    /// For Pingora's predictor: reasons that come from the request, not the response (another
    /// client's request for the same URL may be stored), are not remembered.
    pub(crate) fn is_request_side(reason: &'static str) -> bool {
        [Unstorable::RequestNoStore, Unstorable::Authorization].iter().any(|r| r.as_str() == reason)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unstorable::Status => "status",
            Unstorable::NoStore => "no-store",
            Unstorable::Private => "private",
            Unstorable::Authorization => "authorization",
            Unstorable::SetCookie => "set-cookie",
            Unstorable::VaryStar => "vary-star",
            Unstorable::NoFreshness => "no-freshness",
            Unstorable::RequestNoStore => "request-no-store",
        }
    }
}

/// How to store a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Freshness lifetime (0 = store, but revalidate on every use).
    pub lifetime: Duration,
    /// Age the response already had when it arrived (RFC 9111 §4.2.3).
    pub age: Duration,
    pub swr: u32,
    pub sie: u32,
    /// Header fields not to store (`private="x"`, `no-cache="x"`, cookies, targeted fields).
    pub strip: Vec<String>,
    pub generate_etag: bool,
}

/// The directives that govern this response for Portier: the first targeted field with a
/// value wins and then `Cache-Control` and `Expires` are ignored (RFC 9213 §2.2).
pub(crate) fn response_directives(resp: &ResponseHeader) -> (Directives, bool) {
    for f in TARGETED_FIELDS {
        // Surrogate-Control predates Structured Fields and keeps the Cache-Control syntax.
        let d =
            if f == "surrogate-control" { Directives::from_headers(&resp.headers, f) } else { Directives::from_targeted(&resp.headers, f) };
        if d.present {
            return (d, true);
        }
    }
    (Directives::from_headers(&resp.headers, http::header::CACHE_CONTROL), false)
}

fn header_date(h: &ResponseHeader, name: &str) -> Option<SystemTime> {
    let mut values = h.headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?.trim()).ok()
}

/// The `Age` field (RFC 9111 §5.1): the first member of the first line; a value that is not
/// a non-negative integer is ignored as if absent. 2^31 and more mean "older than anything",
/// capped there.
fn reported_age(resp: &ResponseHeader) -> Option<u64> {
    const CAP: u64 = 1 << 31;
    let first = resp.headers.get_all("age").iter().next()?;
    let member = first.as_bytes().split(|&b| b == b',').next()?.trim_ascii();
    if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All digits: parsing fails only on overflow, which is past the cap anyway.
    Some(std::str::from_utf8(member).ok()?.parse::<u64>().map_or(CAP, |v| v.min(CAP)))
}

/// `max(Age, now - Date)`: the apparent and the reported age, whichever is larger.
pub(crate) fn initial_age(resp: &ResponseHeader, now: SystemTime) -> Duration {
    let reported = Duration::from_secs(reported_age(resp).unwrap_or(0));
    // Whole seconds, as RFC 9111 counts: `Date` has one-second resolution, so a sub-second
    // remainder is the clock tick, not age.
    let apparent =
        header_date(resp, "date").and_then(|d| now.duration_since(d).ok()).map(|d| Duration::from_secs(d.as_secs())).unwrap_or_default();

    reported.max(apparent)
}

fn has_token(h: &ResponseHeader, name: &str, token: &str) -> bool {
    crate::edge::fields::has_token(&h.headers, name, token)
}

/// Decides whether and how to store `resp`, the answer to `req`.
pub(crate) fn decide(
    req: &RequestHeader,
    resp: &ResponseHeader,
    route: &RoutePolicy,
    cfg: &CacheConfig,
    request_no_store: bool,
    now: SystemTime,
) -> Result<Plan, Unstorable> {
    if request_no_store {
        return Err(Unstorable::RequestNoStore);
    }
    let status = resp.status.as_u16();
    if !(200..600).contains(&status) || status == 206 || status == 304 {
        return Err(Unstorable::Status);
    }
    let (d, targeted) = response_directives(resp);
    // must-understand: store only statuses Portier understands, and then no-store yields.
    if d.must_understand && !UNDERSTOOD.contains(&status) {
        return Err(Unstorable::Status);
    }
    if d.no_store && !d.must_understand {
        return Err(Unstorable::NoStore);
    }
    if d.private.as_ref().is_some_and(Vec::is_empty) {
        return Err(Unstorable::Private);
    }
    if req.headers.contains_key(http::header::AUTHORIZATION) && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
        return Err(Unstorable::Authorization);
    }
    if has_token(resp, "vary", "*") {
        return Err(Unstorable::VaryStar);
    }
    let mut strip: Vec<String> = OWN_FIELDS.iter().map(|s| s.to_string()).collect();
    strip.extend(d.private.iter().flatten().cloned());
    strip.extend(d.no_cache.iter().flatten().cloned());
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        let qualified = strip.iter().any(|f| f == "set-cookie");
        if !route.cache_set_cookie && !qualified {
            return Err(Unstorable::SetCookie);
        }
        strip.push("set-cookie".into());
    }

    let explicit = if let Some(s) = d.s_maxage {
        Some(Duration::from_secs(s))
    } else if let Some(m) = d.max_age {
        Some(Duration::from_secs(m))
    } else if !targeted && resp.headers.contains_key(http::header::EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
        Some(match header_date(resp, "expires") {
            Some(exp) => {
                let base = header_date(resp, "date").unwrap_or(now);
                exp.duration_since(base).unwrap_or_default()
            }
            None => Duration::ZERO,
        })
    } else {
        None
    };
    let heuristic_ok = HEURISTIC_STATUSES.contains(&status) || d.public;
    let lifetime = match (explicit, route.ttl) {
        (Some(t), _) => t,
        (None, Some(t)) if heuristic_ok => t,
        (None, _) if !heuristic_ok => return Err(Unstorable::Status),
        (None, _) => {
            let lm = header_date(resp, "last-modified");
            let base = header_date(resp, "date").unwrap_or(now);
            match lm.and_then(|lm| base.duration_since(lm).ok()).filter(|_| cfg.heuristic) {
                Some(since) => (since / 10).min(HEURISTIC_CAP),
                // no-cache: store, and revalidate on every use.
                None if d.no_cache.is_some() => Duration::ZERO,
                None => return Err(Unstorable::NoFreshness),
            }
        }
    };
    // no-cache: store, but stale from the start.
    let lifetime = if d.no_cache.as_ref().is_some_and(Vec::is_empty) { Duration::ZERO } else { lifetime };
    // must-revalidate, proxy-revalidate and s-maxage (which implies proxy-revalidate) forbid
    // serving stale; so does no-cache (RFC 9111 §4.2.4).
    let no_stale = d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some() || d.no_cache.as_ref().is_some_and(Vec::is_empty);
    let secs = |dir: Option<u64>, fallback: Option<Duration>| -> u32 {
        if no_stale {
            0
        } else {
            dir.or(fallback.map(|f| f.as_secs())).unwrap_or(0).min(u64::from(u32::MAX)) as u32
        }
    };
    Ok(Plan {
        lifetime,
        age: initial_age(resp, now),
        swr: secs(d.stale_while_revalidate, route.swr),
        sie: secs(d.stale_if_error, route.sie.or(Some(cfg.stale_if_error.get()))),
        strip,
        generate_etag: route.etag == EtagMode::Generate && !resp.headers.contains_key(http::header::ETAG),
    })
}

/// The stored form: stripped header, freshness counted from the response's own age, so `Age`
/// on later hits includes what the origin reported.
pub(crate) fn build_meta(plan: &Plan, resp: &ResponseHeader, now: SystemTime) -> CacheMeta {
    let mut h = resp.clone();
    for name in &plan.strip {
        h.remove_header(name.as_str());
    }
    // Hop-by-hop fields describe one connection, never the stored response (RFC 9111 §3.1).
    let listed = super::directives::field_tokens(&h.headers, http::header::CONNECTION);
    for name in HOP_BY_HOP.iter().copied().chain(listed.iter().map(String::as_str)) {
        h.remove_header(name);
    }
    h.remove_header("age");
    if plan.generate_etag {
        let _ = h.insert_header(super::store::memory::GENERATE_ETAG_MARKER, "1");
    }
    // Not before 1970: a meta dated earlier cannot be serialized, and an Age that large
    // (2^31 s) only has to mean "stale".
    let born = now.checked_sub(plan.age).map_or(SystemTime::UNIX_EPOCH, |b| b.max(SystemTime::UNIX_EPOCH));
    let fresh_until = born + plan.lifetime;
    let mut meta = CacheMeta::new(fresh_until, now, plan.swr, plan.sie, h);
    meta.set_epoch_override(born);
    meta
}

/// Client request directives a shared cache honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestRules {
    /// Do not store the response (`Cache-Control: no-store`).
    pub no_store: bool,
    /// Revalidate before using a stored response (`no-cache`, `Pragma: no-cache`).
    pub no_cache: bool,
    pub max_age: Option<u64>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

pub(crate) fn request_rules(req: &RequestHeader) -> RequestRules {
    let d = Directives::from_headers(&req.headers, http::header::CACHE_CONTROL);
    let pragma_no_cache = !d.present
        && req
            .headers
            .get_all(http::header::PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("no-cache")));
    RequestRules {
        no_store: d.no_store,
        no_cache: d.no_cache.is_some() || pragma_no_cache,
        max_age: d.max_age,
        min_fresh: d.min_fresh,
        only_if_cached: d.only_if_cached,
    }
}

impl RequestRules {
    /// Whether a stored response with this meta must be revalidated for this request even
    /// if it is fresh.
    pub(crate) fn forces_revalidation(&self, meta: &CacheMeta, now: SystemTime) -> bool {
        if self.no_cache {
            return true;
        }
        let age = meta.age().as_secs();
        if self.max_age.is_some_and(|m| age > m) {
            return true;
        }
        let left = meta.fresh_until().duration_since(now).unwrap_or_default().as_secs();
        self.min_fresh.is_some_and(|m| left < m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }
    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }
    fn route() -> RoutePolicy {
        RoutePolicy { enabled: true, ..Default::default() }
    }
    fn go(rq: &[(&str, &str)], status: u16, rs: &[(&str, &str)]) -> Result<Plan, Unstorable> {
        decide(&req(rq), &resp(status, rs), &route(), &CacheConfig::default(), false, SystemTime::now())
    }
    fn life(p: Result<Plan, Unstorable>) -> u64 {
        p.unwrap().lifetime.as_secs()
    }

    #[test]
    fn freshness_precedence_s_maxage_max_age_expires() {
        assert_eq!(life(go(&[], 200, &[("cache-control", "max-age=10, s-maxage=20")])), 20);
        assert_eq!(life(go(&[], 200, &[("cache-control", "max-age=10")])), 10);
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let exp = httpdate::fmt_http_date(now + Duration::from_secs(100));
        assert_eq!(life(go(&[], 200, &[("date", &date), ("expires", &exp)])), 100);
        assert_eq!(life(go(&[], 200, &[("expires", "0")])), 0, "invalid Expires = already stale");
        assert_eq!(go(&[], 200, &[]), Err(Unstorable::NoFreshness), "no default TTL");
    }

    #[test]
    fn heuristic_only_with_last_modified_and_allowed_status() {
        let now = SystemTime::now();
        let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        let date = httpdate::fmt_http_date(now);
        assert_eq!(life(go(&[], 200, &[("date", &date), ("last-modified", &lm)])), 100);
        assert_eq!(go(&[], 302, &[("date", &date), ("last-modified", &lm)]), Err(Unstorable::Status));
        assert_eq!(go(&[], 500, &[("last-modified", &lm)]), Err(Unstorable::Status));
        assert_eq!(life(go(&[], 500, &[("cache-control", "max-age=5")])), 5, "explicit freshness allows any final status");
    }

    #[test]
    fn storage_refusals() {
        assert_eq!(go(&[], 200, &[("cache-control", "no-store, max-age=60")]), Err(Unstorable::NoStore));
        assert_eq!(go(&[], 200, &[("cache-control", "private, max-age=60")]), Err(Unstorable::Private));
        assert_eq!(go(&[], 200, &[("cache-control", "max-age=60"), ("vary", "Accept, *")]), Err(Unstorable::VaryStar));
        assert_eq!(go(&[], 200, &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]), Err(Unstorable::SetCookie));
        assert_eq!(go(&[], 206, &[("cache-control", "max-age=60")]), Err(Unstorable::Status));
        let auth = [("authorization", "Bearer x")];
        assert_eq!(go(&auth, 200, &[("cache-control", "max-age=60")]), Err(Unstorable::Authorization));
        for ok in ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"] {
            assert!(go(&auth, 200, &[("cache-control", ok)]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn qualified_private_and_set_cookie_strip_fields() {
        let p = go(&[], 200, &[("cache-control", "max-age=60, private=\"x-user\""), ("x-user", "u")]).unwrap();
        assert!(p.strip.contains(&"x-user".to_string()));
        let p = go(&[], 200, &[("cache-control", "max-age=60, no-cache=\"set-cookie\""), ("set-cookie", "a=b")]).unwrap();
        assert!(p.strip.contains(&"set-cookie".to_string()));
        let mut r = route();
        r.cache_set_cookie = true;
        let p = decide(
            &req(&[]),
            &resp(200, &[("cache-control", "max-age=9"), ("set-cookie", "a")]),
            &r,
            &CacheConfig::default(),
            false,
            SystemTime::now(),
        )
        .unwrap();
        assert!(p.strip.contains(&"set-cookie".to_string()), "the cookie itself is never stored");
    }

    #[test]
    fn no_cache_stores_but_always_revalidates_and_forbids_stale() {
        let p = go(&[], 200, &[("cache-control", "no-cache, max-age=60, stale-while-revalidate=30"), ("etag", "\"a\"")]).unwrap();
        assert_eq!(p.lifetime, Duration::ZERO);
        assert_eq!(p.swr, 0);
        let p = go(&[], 200, &[("cache-control", "max-age=60, must-revalidate, stale-if-error=99")]).unwrap();
        assert_eq!(p.sie, 0);
        let p = go(&[], 200, &[("cache-control", "s-maxage=60, stale-while-revalidate=30")]).unwrap();
        assert_eq!(p.swr, 0, "s-maxage implies proxy-revalidate");
        let p = go(&[], 200, &[("cache-control", "max-age=60, stale-while-revalidate=30, stale-if-error=40")]).unwrap();
        assert_eq!((p.swr, p.sie), (30, 40));
    }

    #[test]
    fn targeted_fields_win_over_cache_control() {
        let p = go(&[], 200, &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=30")]).unwrap();
        assert_eq!(p.lifetime.as_secs(), 30);
        let p = go(&[], 200, &[("cdn-cache-control", "max-age=30"), ("portier-cache-control", "max-age=5")]).unwrap();
        assert_eq!(p.lifetime.as_secs(), 5);
        assert_eq!(go(&[], 200, &[("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")]), Err(Unstorable::NoStore));
        assert!(p.strip.contains(&"portier-cache-control".to_string()));
        assert!(!p.strip.contains(&"cdn-cache-control".to_string()), "stored and forwarded for the CDNs after Portier");
    }

    #[test]
    fn age_counts_upstream_age_and_date() {
        let now = SystemTime::now();
        let p = go(&[], 200, &[("cache-control", "max-age=60"), ("age", "10")]).unwrap();
        assert_eq!(p.age.as_secs(), 10);
        let date = httpdate::fmt_http_date(now - Duration::from_secs(30));
        let p = go(&[], 200, &[("cache-control", "max-age=60"), ("age", "10"), ("date", &date)]).unwrap();
        assert!(p.age.as_secs() >= 29);
        let m = build_meta(&p, &resp(200, &[("age", "10")]), now);
        assert!(m.age().as_secs() >= 29);
        assert!(m.fresh_until() <= now + Duration::from_secs(31));
        assert!(m.response_header().headers.get("age").is_none());
    }

    #[test]
    fn age_is_the_first_member_and_an_invalid_one_is_ignored_and_must_understand() {
        let age = |v: &[&str]| {
            let h: Vec<(&str, &str)> = std::iter::once(("cache-control", "max-age=3600")).chain(v.iter().map(|a| ("age", *a))).collect();
            go(&[], 200, &h).unwrap().age.as_secs()
        };
        for bad in ["abc", "-1", "1.5", "", "3600 ; x=1"] {
            assert_eq!(age(&[bad]), 0, "Age {bad:?} is ignored");
            let p = go(&[], 200, &[("cache-control", "max-age=3600"), ("age", bad)]).unwrap();
            assert_eq!(p.lifetime.as_secs(), 3600, "Age {bad:?} does not make the response stale");
        }
        assert_eq!(age(&["5, 100"]), 5, "a list uses its first member");
        assert_eq!(age(&["7", "100"]), 7, "several lines use the first");
        assert_eq!(age(&["2147483648"]), 1 << 31);
        assert_eq!(age(&["99999999999999999999999"]), 1 << 31, "past u64 is still just very old");
        assert_eq!(go(&[], 599, &[("cache-control", "max-age=60, must-understand")]), Err(Unstorable::Status));
        assert!(go(&[], 200, &[("cache-control", "max-age=60, must-understand, no-store")]).is_ok(), "understood: no-store yields");
        let p = go(&[], 200, &[("cache-control", "no-store"), ("surrogate-control", "max-age=30")]).unwrap();
        assert_eq!(p.lifetime.as_secs(), 30);
    }

    #[test]
    fn route_overrides_apply_only_without_origin_freshness() {
        let mut r = route();
        r.ttl = Some(Duration::from_secs(42));
        r.swr = Some(Duration::from_secs(7));
        let p = decide(&req(&[]), &resp(200, &[]), &r, &CacheConfig::default(), false, SystemTime::now()).unwrap();
        assert_eq!((p.lifetime.as_secs(), p.swr), (42, 7));
        let p = decide(&req(&[]), &resp(200, &[("cache-control", "max-age=3")]), &r, &CacheConfig::default(), false, SystemTime::now())
            .unwrap();
        assert_eq!(p.lifetime.as_secs(), 3);
    }

    #[test]
    fn request_directives() {
        assert!(request_rules(&req(&[("pragma", "no-cache")])).no_cache);
        assert!(!request_rules(&req(&[("pragma", "no-cache"), ("cache-control", "max-age=5")])).no_cache, "Cache-Control wins over Pragma");
        let r = request_rules(&req(&[("cache-control", "max-age=0, only-if-cached, no-store")]));
        assert_eq!(r.max_age, Some(0));
        assert!(r.only_if_cached && r.no_store);
    }
}
