//! Who may use a route: client address allow/deny lists (403) and HTTP Basic authentication
//! with bcrypt hashes (401), both decided before the cache so a stored response never reaches
//! a client the route refuses. The client address is the peer's, or for a peer listed in
//! `server.trusted_proxies`, the nearest untrusted address of its `X-Forwarded-For`.

use crate::config::{Cidr, Route};
use base64::Engine as _;
use parking_lot::Mutex;
use pingora_http::RequestHeader;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// What a route's rules say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// 403: the client address is refused.
    Forbidden,
    /// 401 with `WWW-Authenticate: Basic realm="..."`.
    Unauthorized {
        realm: String,
    },
    /// 429 with `Retry-After`: this address failed too often; nothing was checked.
    TooManyAttempts {
        retry_after: u64,
    },
    /// 503 with `Retry-After`: too many password checks already waiting.
    Busy,
}

/// Verified credentials kept so a bcrypt check (tens of milliseconds at usual costs) runs once
/// per user and password, not once per request; the most recent few are kept, as keyed
/// hashes, never as passwords.
const VERIFIED_CACHE: usize = 256;

/// Password checks run at once, off Pingora's worker threads (bcrypt at cost 12 is ~270 ms of
/// CPU: on a worker it stalled every request that thread served). Two leave a 2-core
/// machine's other work a core.
const CONCURRENT_CHECKS: usize = 2;
/// Checks waiting for a place; beyond this, 503 at once instead of a growing queue.
const WAITING_CHECKS: usize = 32;
/// Failures an address may have before it must wait: the wait doubles with each further
/// failure, from 1 s up to [`MAX_BACKOFF`], and a success clears it. Checks in progress count
/// as failures until they end, so parallel guesses get no more than serial ones; an IPv6
/// address is counted by its /64 (one host owns a whole /64).
const FREE_FAILURES: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Addresses remembered for their failures (the least recently failing are forgotten first).
const TRACKED_ADDRESSES: usize = 10_000;

/// Shared by every route and kept across reloads: the places for checks, the failures per
/// address, and the key of the verified-credential hashes.
struct Checks {
    places: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    failures: Mutex<lru::LruCache<IpAddr, Attempts>>,
    key: [u8; 32],
}

static CHECKS: LazyLock<Checks> = LazyLock::new(|| Checks {
    places: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
    waiting: AtomicUsize::new(0),
    failures: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(TRACKED_ADDRESSES).unwrap_or(std::num::NonZeroUsize::MIN))),
    key: random_key(),
});

/// One address's (or IPv6 /64's) record.
#[derive(Clone, Copy)]
struct Attempts {
    failed: u32,
    last_failure: Instant,
    in_flight: u32,
}

/// 256 bits from the OS-seeded keys of four `RandomState`s (no extra dependency for a key
/// that only has to be unknown outside this process).
fn random_key() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

/// How a check ended, for `auth_checks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// Verified by bcrypt.
    Verified,
    /// Verified earlier: found among the keyed hashes.
    Remembered,
    /// No credentials (a browser's first request, before its prompt).
    Missing,
    /// Wrong user or password.
    Failed,
    /// Refused without a check: the address is backing off.
    RateLimited,
    /// Refused without a check: too many waiting.
    Busy,
}

impl CheckOutcome {
    pub(crate) const ALL: [CheckOutcome; 6] = [
        CheckOutcome::Verified,
        CheckOutcome::Remembered,
        CheckOutcome::Missing,
        CheckOutcome::Failed,
        CheckOutcome::RateLimited,
        CheckOutcome::Busy,
    ];
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Verified => "verified",
            CheckOutcome::Remembered => "remembered",
            CheckOutcome::Missing => "missing",
            CheckOutcome::Failed => "failed",
            CheckOutcome::RateLimited => "rate_limited",
            CheckOutcome::Busy => "busy",
        }
    }
}

pub(crate) struct BasicAuth {
    realm: String,
    users: Arc<BTreeMap<String, String>>,
    verified: Mutex<lru::LruCache<[u8; 32], ()>>,
}

impl BasicAuth {
    /// A keyed hash of the credentials (BLAKE2b with a per-process key): what the verified
    /// cache holds, so the process's memory never keeps a password that once worked.
    fn fingerprint(user: &str, password: &str) -> [u8; 32] {
        use blake2::digest::{FixedOutput, Mac};
        let mut mac = match blake2::Blake2bMac::<blake2::digest::consts::U32>::new_from_slice(&CHECKS.key) {
            Ok(m) => m,
            // A 32-byte key is always accepted; an empty fingerprint would only miss the cache.
            Err(_) => return [0; 32],
        };
        mac.update(&(user.len() as u64).to_le_bytes());
        mac.update(user.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize_fixed().into()
    }

    /// `limiter`: the address failures are counted for (the client, or its peer when the
    /// client is unknown).
    async fn check(&self, limiter: Option<IpAddr>, req: &RequestHeader) -> (Verdict, CheckOutcome) {
        let unauthorized = || Verdict::Unauthorized { realm: self.realm.clone() };
        let Some((user, password)) = credentials(req) else { return (unauthorized(), CheckOutcome::Missing) };
        let fingerprint = Self::fingerprint(&user, &password);
        if self.verified.lock().get(&fingerprint).is_some() {
            return (Verdict::Allowed, CheckOutcome::Remembered);
        }
        let limiter = limiter.map(limiter_key);
        if let Some(key) = limiter {
            if let Err(retry_after) = begin_attempt(key) {
                return (Verdict::TooManyAttempts { retry_after }, CheckOutcome::RateLimited);
            }
        }
        // Ends the attempt however this check ends (a client gone mid-check counts as a failure).
        struct Attempt(Option<IpAddr>, bool);
        impl Drop for Attempt {
            fn drop(&mut self) {
                if let Some(key) = self.0 {
                    end_attempt(key, self.1);
                }
            }
        }
        let mut attempt = Attempt(limiter, false);
        if CHECKS.waiting.fetch_add(1, Ordering::AcqRel) >= WAITING_CHECKS {
            CHECKS.waiting.fetch_sub(1, Ordering::AcqRel);
            attempt.0 = None;
            if let Some(key) = limiter {
                cancel_attempt(key);
            }
            return (Verdict::Busy, CheckOutcome::Busy);
        }
        let place = CHECKS.places.acquire().await;
        CHECKS.waiting.fetch_sub(1, Ordering::AcqRel);
        let Ok(_place) = place else { return (Verdict::Busy, CheckOutcome::Busy) };
        let users = self.users.clone();
        let ok = tokio::task::spawn_blocking(move || match users.get(&user) {
            Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
            None => {
                // An unknown user costs a check against a real hash of the same cost, so
                // timing does not tell which names exist.
                if let Some(any) = users.values().next() {
                    let _ = bcrypt::verify(&password, any);
                }
                false
            }
        })
        .await
        .unwrap_or(false);
        attempt.1 = ok;
        drop(attempt);
        if ok {
            self.verified.lock().put(fingerprint, ());
            (Verdict::Allowed, CheckOutcome::Verified)
        } else {
            (unauthorized(), CheckOutcome::Failed)
        }
    }
}

/// An IPv6 address counts by its /64; an IPv4 one by itself.
fn limiter_key(ip: IpAddr) -> IpAddr {
    match crate::config::unmapped(ip) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Seconds `a` must still wait before another check may start, if any.
fn wait_left(a: &Attempts) -> Option<u64> {
    if a.failed >= FREE_FAILURES {
        let wait = Duration::from_secs(1u64 << (a.failed - FREE_FAILURES).min(6)).min(MAX_BACKOFF);
        if let Some(left) = wait.checked_sub(a.last_failure.elapsed()).filter(|l| !l.is_zero()) {
            return Some(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        // Past its wait, one probe at a time.
        return (a.in_flight > 0).then_some(1);
    }
    (a.failed + a.in_flight >= FREE_FAILURES).then_some(1)
}

/// A check may start for `key` (counted as in progress), or the seconds to wait.
fn begin_attempt(key: IpAddr) -> Result<(), u64> {
    let mut failures = CHECKS.failures.lock();
    let a = failures.get_or_insert_mut(key, || Attempts { failed: 0, last_failure: Instant::now(), in_flight: 0 });
    if let Some(left) = wait_left(a) {
        return Err(left);
    }
    a.in_flight += 1;
    Ok(())
}

/// A check for `key` ended: a success clears the record, a failure counts.
fn end_attempt(key: IpAddr, ok: bool) {
    let mut failures = CHECKS.failures.lock();
    let a = failures.get_or_insert_mut(key, || Attempts { failed: 0, last_failure: Instant::now(), in_flight: 1 });
    a.in_flight = a.in_flight.saturating_sub(1);
    if ok {
        a.failed = 0;
        if a.in_flight == 0 {
            failures.pop(&key);
        }
    } else {
        a.failed = a.failed.saturating_add(1);
        a.last_failure = Instant::now();
    }
}

/// A check that was counted as in progress never ran (no place for it).
fn cancel_attempt(key: IpAddr) {
    if let Some(a) = CHECKS.failures.lock().get_mut(&key) {
        a.in_flight = a.in_flight.saturating_sub(1);
    }
}

/// Seconds this address must still wait, if it is backing off (for tests and reading only).
#[cfg(test)]
fn backing_off(ip: IpAddr) -> Option<u64> {
    CHECKS.failures.lock().peek(&limiter_key(ip)).and_then(wait_left)
}

/// `Authorization: Basic base64(user:password)`.
fn credentials(req: &RequestHeader) -> Option<(String, String)> {
    let v = req.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// One route's rules, built at start-up.
#[derive(Default)]
pub(crate) struct RouteAccess {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    basic: Option<BasicAuth>,
}

impl RouteAccess {
    pub(crate) fn new(r: &Route) -> RouteAccess {
        RouteAccess {
            allow: r.allow.clone(),
            deny: r.deny.clone(),
            basic: r.basic_auth.as_ref().map(|b| BasicAuth {
                realm: b.realm.clone(),
                users: Arc::new(b.users.iter().map(|(u, h)| (u.clone(), h.0.clone())).collect()),
                verified: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(std::num::NonZeroUsize::MIN),
                )),
            }),
        }
    }

    /// Address rules first (a refused address never gets to try a password), then the
    /// password, checked off the worker threads; the outcome of a password check, if one ran.
    /// An unknown client (an unreadable `X-Forwarded-For`) matches no `allow` and every
    /// `deny`: it could be anyone. `peer` is the connection's address, which failed
    /// passwords are counted for when the client is unknown.
    pub(crate) async fn verdict(
        &self,
        client: Option<IpAddr>,
        peer: Option<IpAddr>,
        req: &RequestHeader,
    ) -> (Verdict, Option<CheckOutcome>) {
        let listed = |list: &[Cidr]| client.is_some_and(|ip| list.iter().any(|c| c.contains(ip)));
        let denied = if client.is_none() { !self.deny.is_empty() } else { listed(&self.deny) };
        if denied || (!self.allow.is_empty() && !listed(&self.allow)) {
            return (Verdict::Forbidden, None);
        }
        match &self.basic {
            Some(b) => {
                let (verdict, outcome) = b.check(client.or(peer), req).await;
                (verdict, Some(outcome))
            }
            None => (Verdict::Allowed, None),
        }
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy (the one a client cannot
/// forge, since every hop after it appended honestly). Fails closed: a hop that cannot be
/// read (empty, a name, a byte outside ASCII) before that address makes the client unknown,
/// which no `allow` matches, instead of falling back to the trusted proxy's own address.
pub(crate) fn client_address(peer: Option<IpAddr>, req: &RequestHeader, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = crate::config::unmapped(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let fields: Vec<&[u8]> = req.headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()).collect();
    if fields.is_empty() {
        return Some(peer);
    }
    let mut nearest = peer;
    for hop in fields.iter().rev().flat_map(|f| f.rsplit(|&b| b == b',')) {
        let ip = forwarded_hop(hop)?;
        if !is_trusted(ip) {
            return Some(ip);
        }
        nearest = ip;
    }
    // Every hop is trusted: the request started inside, at the farthest one.
    Some(nearest)
}

/// One `X-Forwarded-For` hop: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or
/// `[2001:db8::1]:443` (what load balancers write), IPv4-mapped IPv6 as IPv4. None otherwise.
fn forwarded_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim_matches([' ', '\t']);
    let ip = if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) if !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            None if after.is_empty() => {}
            _ => return None,
        }
        IpAddr::V6(inside.parse().ok()?)
    } else if let Ok(ip) = hop.parse::<IpAddr>() {
        ip
    } else {
        let (v4, port) = hop.split_once(':')?;
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        IpAddr::V4(v4.parse().ok()?)
    };
    Some(crate::config::unmapped(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>, xff: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(a) = auth {
            r.insert_header("authorization", a).unwrap();
        }
        if let Some(x) = xff {
            r.insert_header("x-forwarded-for", x).unwrap();
        }
        r
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
    }

    #[tokio::test]
    async fn addresses_then_passwords() {
        let mut route = Route::new(None, crate::config::PathPattern::everything(), "p");
        route.allow = vec!["127.0.0.0/8".parse().unwrap()];
        route.deny = vec!["127.0.0.2".parse().unwrap()];
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        route.basic_auth =
            Some(crate::config::BasicAuth { realm: "Grafana".into(), users: [("admin".to_string(), hash.parse().unwrap())].into() });
        let a = RouteAccess::new(&route);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(a.verdict(ip("127.0.0.2"), None, &req(Some(&basic("admin", "s3cret")), None)).await.0, Verdict::Forbidden);
        assert_eq!(a.verdict(ip("10.0.0.1"), None, &req(Some(&basic("admin", "s3cret")), None)).await.0, Verdict::Forbidden);
        assert_eq!(a.verdict(None, None, &req(Some(&basic("admin", "s3cret")), None)).await.0, Verdict::Forbidden, "no address, no allow");
        let unauthorized = Verdict::Unauthorized { realm: "Grafana".into() };
        assert_eq!(a.verdict(ip("127.0.0.1"), None, &req(None, None)).await.0, unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), None, &req(Some(&basic("admin", "wrong")), None)).await.0, unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), None, &req(Some(&basic("nobody", "s3cret")), None)).await.0, unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), None, &req(Some("Bearer s3cret"), None)).await.0, unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), None, &req(Some(&basic("admin", "s3cret")), None)).await.0, Verdict::Allowed);
        assert_eq!(
            a.verdict(ip("127.0.0.1"), None, &req(Some(&basic("admin", "s3cret")), None)).await,
            (Verdict::Allowed, Some(CheckOutcome::Remembered)),
            "from the cache"
        );
    }

    #[tokio::test]
    async fn failures_back_off_per_address_and_a_success_clears_them() {
        let mut route = Route::new(None, crate::config::PathPattern::everything(), "p");
        let hash = bcrypt::hash("right", 4).unwrap();
        route.basic_auth = Some(crate::config::BasicAuth { realm: "r".into(), users: [("u".to_string(), hash.parse().unwrap())].into() });
        let a = RouteAccess::new(&route);
        let (attacker, other) = (Some("127.0.9.1".parse().unwrap()), Some("127.0.9.2".parse().unwrap()));
        for _ in 0..FREE_FAILURES {
            assert_eq!(a.verdict(attacker, None, &req(Some(&basic("u", "guess")), None)).await.1, Some(CheckOutcome::Failed));
        }
        let (v, o) = a.verdict(attacker, None, &req(Some(&basic("u", "right")), None)).await;
        assert_eq!((v, o), (Verdict::TooManyAttempts { retry_after: 1 }, Some(CheckOutcome::RateLimited)), "even the right password waits");
        assert_eq!(a.verdict(other, None, &req(Some(&basic("u", "right")), None)).await.0, Verdict::Allowed, "per address");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(a.verdict(attacker, None, &req(Some(&basic("u", "guess2")), None)).await.1, Some(CheckOutcome::Failed));
        assert_eq!(backing_off(attacker.unwrap()), Some(2), "the wait doubles");
        assert_eq!(BasicAuth::fingerprint("u", "right"), BasicAuth::fingerprint("u", "right"));
        assert_ne!(BasicAuth::fingerprint("u", "right"), BasicAuth::fingerprint("ur", "ight"), "the user's length is hashed");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let r = req(None, Some("6.6.6.6, 203.0.113.7, 10.0.0.5"));
        assert_eq!(client_address(ip("10.0.0.1"), &r, &trusted), ip("203.0.113.7"), "the nearest untrusted hop");
        assert_eq!(client_address(ip("198.51.100.1"), &r, &trusted), ip("198.51.100.1"), "an untrusted peer is the client");
        assert_eq!(client_address(ip("10.0.0.1"), &req(None, None), &trusted), ip("10.0.0.1"));
        for (xff, client) in [
            ("6.6.6.6:4711", ip("6.6.6.6")),
            ("[2001:db8::1]:443", ip("2001:db8::1")),
            ("[2001:db8::1]", ip("2001:db8::1")),
            ("::ffff:6.6.6.6", ip("6.6.6.6")),
            ("1.1.1.1,6.6.6.6 , 10.0.0.9", ip("6.6.6.6")),
            ("10.0.0.3, 10.0.0.9", ip("10.0.0.3")),
            // Unreadable before the nearest untrusted hop: unknown, never the proxy.
            ("", None),
            ("unknown", None),
            ("6.6.6.6, ", None),
            ("6.6.6.6, bogus, 10.0.0.9", None),
            ("6.6.6.6:", None),
            ("6.6.6.6:99999x", None),
            ("[2001:db8::1]x", None),
            // Beyond the nearest untrusted hop, what a client wrote does not matter.
            ("bogus, 6.6.6.6", ip("6.6.6.6")),
        ] {
            assert_eq!(client_address(ip("10.0.0.1"), &req(None, Some(xff)), &trusted), client, "X-Forwarded-For: {xff:?}");
        }
        let mut raw = RequestHeader::build("GET", b"/", None).unwrap();
        raw.insert_header("x-forwarded-for", http::HeaderValue::from_bytes(b"6.6.6.\xff").unwrap()).unwrap();
        assert_eq!(client_address(ip("10.0.0.1"), &raw, &trusted), None, "a byte outside ASCII");
        assert_eq!(client_address(ip("::ffff:10.0.0.1"), &req(None, Some("6.6.6.6")), &trusted), ip("6.6.6.6"), "a mapped peer");
    }

    #[test]
    fn mapped_ranges_mean_their_ipv4_range() {
        let c = |s: &str| s.parse::<Cidr>().map(|c| c.0.to_string());
        assert_eq!(c("::ffff:127.0.0.1"), Ok("127.0.0.1/32".into()));
        assert_eq!(c("::ffff:0:0/96"), Ok("0.0.0.0/0".into()));
        assert_eq!(c("::ffff:10.0.0.0/104"), Ok("10.0.0.0/8".into()));
        assert_eq!(c("2001:db8::/32"), Ok("2001:db8::/32".into()));
        assert!(c("::fffe:0:0/95").is_err_and(|e| e.contains("IPv4-mapped")), "wider than the mapped block");
        let local: Cidr = "::ffff:127.0.0.0/104".parse().unwrap();
        assert!(local.contains("127.0.0.1".parse().unwrap()));
    }
}
