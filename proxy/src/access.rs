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
}

/// Verified credentials kept so a bcrypt check (tens of milliseconds at usual costs) runs once
/// per user and password, not once per request; the most recent few are kept.
const VERIFIED_CACHE: usize = 256;

pub(crate) struct BasicAuth {
    realm: String,
    users: BTreeMap<String, String>,
    verified: Mutex<lru::LruCache<(String, String), ()>>,
}

impl BasicAuth {
    fn check(&self, req: &RequestHeader) -> bool {
        let Some((user, password)) = credentials(req) else { return false };
        let key = (user, password);
        if self.verified.lock().get(&key).is_some() {
            return true;
        }
        let (user, password) = &key;
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                // An unknown user costs a check against a real hash of the same cost, so
                // timing does not tell which names exist.
                if let Some(any) = self.users.values().next() {
                    let _ = bcrypt::verify(password, any);
                }
                false
            }
        };
        if ok {
            self.verified.lock().put(key, ());
        }
        ok
    }
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
                users: b.users.iter().map(|(u, h)| (u.clone(), h.0.clone())).collect(),
                verified: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(std::num::NonZeroUsize::MIN),
                )),
            }),
        }
    }

    /// Address rules first (a refused address never gets to try a password), then the password.
    pub(crate) fn verdict(&self, client: Option<IpAddr>, req: &RequestHeader) -> Verdict {
        let listed = |list: &[Cidr]| client.is_some_and(|ip| list.iter().any(|c| c.contains(ip)));
        if listed(&self.deny) || (!self.allow.is_empty() && !listed(&self.allow)) {
            return Verdict::Forbidden;
        }
        match &self.basic {
            Some(b) if !b.check(req) => Verdict::Unauthorized { realm: b.realm.clone() },
            _ => Verdict::Allowed,
        }
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy (the one a client cannot
/// forge, since every hop after it appended honestly).
pub(crate) fn client_address(peer: Option<IpAddr>, req: &RequestHeader, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    Some(hops.into_iter().rev().find(|ip| !is_trusted(*ip)).unwrap_or(peer))
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

    #[test]
    fn addresses_then_passwords() {
        let mut route = Route::new(None, crate::config::PathPattern::everything(), "p");
        route.allow = vec!["127.0.0.0/8".parse().unwrap()];
        route.deny = vec!["127.0.0.2".parse().unwrap()];
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        route.basic_auth =
            Some(crate::config::BasicAuth { realm: "Grafana".into(), users: [("admin".to_string(), hash.parse().unwrap())].into() });
        let a = RouteAccess::new(&route);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(a.verdict(ip("127.0.0.2"), &req(Some(&basic("admin", "s3cret")), None)), Verdict::Forbidden);
        assert_eq!(a.verdict(ip("10.0.0.1"), &req(Some(&basic("admin", "s3cret")), None)), Verdict::Forbidden);
        assert_eq!(a.verdict(None, &req(Some(&basic("admin", "s3cret")), None)), Verdict::Forbidden, "no address, no allow");
        let unauthorized = Verdict::Unauthorized { realm: "Grafana".into() };
        assert_eq!(a.verdict(ip("127.0.0.1"), &req(None, None)), unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), &req(Some(&basic("admin", "wrong")), None)), unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), &req(Some(&basic("nobody", "s3cret")), None)), unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), &req(Some("Bearer s3cret"), None)), unauthorized);
        assert_eq!(a.verdict(ip("127.0.0.1"), &req(Some(&basic("admin", "s3cret")), None)), Verdict::Allowed);
        assert_eq!(a.verdict(ip("127.0.0.1"), &req(Some(&basic("admin", "s3cret")), None)), Verdict::Allowed, "from the cache");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let r = req(None, Some("6.6.6.6, 203.0.113.7, 10.0.0.5"));
        assert_eq!(client_address(ip("10.0.0.1"), &r, &trusted), ip("203.0.113.7"), "the nearest untrusted hop");
        assert_eq!(client_address(ip("198.51.100.1"), &r, &trusted), ip("198.51.100.1"), "an untrusted peer is the client");
        assert_eq!(client_address(ip("10.0.0.1"), &req(None, None), &trusted), ip("10.0.0.1"));
    }
}
