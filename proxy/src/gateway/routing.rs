//! Route selection: host and path matching, first match wins. The router hands out the
//! matched route whole ([`ActiveRoute`]): its pool, access rules, cache policy and limits,
//! built once per configuration (at start and at each reload).

use crate::cache::policy::RoutePolicy;
use crate::config::{Coding, HostPattern, PathPattern, Route};
use crate::edge::access::RouteAccess;
use crate::upstream::{Pool, Upstreams};
use std::sync::Arc;

/// Everything a request needs to know about the route it matched. `pattern` is the
/// low-cardinality name used in span names and metric labels (`/api/*`), never the request's
/// own path.
pub(crate) struct ActiveRoute {
    pub(crate) pattern: String,
    /// `None` only for a pool the config does not define (refused by `portier check`).
    pub(crate) pool: Option<Arc<Pool>>,
    pub(crate) access: RouteAccess,
    pub(crate) cache: RoutePolicy,
    /// The request body limit in bytes (the route's, else `limits.max_body`).
    pub(crate) max_body: u64,
    pub(crate) compress: Vec<Coding>,
    pub(crate) dictionary: Option<crate::edge::dictionary::RouteDictionary>,
    host: Option<HostPattern>,
    path: PathPattern,
}

impl ActiveRoute {
    fn new(r: &Route, upstreams: &Upstreams, default_max_body: u64) -> Self {
        let pattern = match &r.host {
            Some(h) => format!("{h}{}", r.path),
            None => r.path.to_string(),
        };
        ActiveRoute {
            pattern,
            pool: upstreams.get(&r.pool).cloned(),
            access: RouteAccess::new(r),
            cache: RoutePolicy::from_route(r),
            max_body: r.max_body.map_or(default_max_body, |b| b.bytes()),
            compress: r.compress.clone(),
            dictionary: r.dictionary.as_ref().and_then(crate::edge::dictionary::RouteDictionary::new),
            host: r.host.clone(),
            path: r.path.clone(),
        }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(host)) && self.path.matches(path)
    }
}

#[derive(Default)]
pub(crate) struct Router {
    routes: Vec<Arc<ActiveRoute>>,
}

impl Router {
    pub(crate) fn new(routes: &[Route], upstreams: &Upstreams, default_max_body: u64) -> Self {
        Router { routes: routes.iter().map(|r| Arc::new(ActiveRoute::new(r, upstreams, default_max_body))).collect() }
    }

    /// `host` is the checked request's host, without its port.
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<&Arc<ActiveRoute>> {
        self.routes.iter().find(|r| r.matches(host, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, pool: &str) -> Route {
        Route::new(host.map(|h| h.parse().unwrap()), path.parse().unwrap(), pool)
    }

    #[test]
    fn first_match_wins() {
        let routes = [
            route(Some("*.example.com"), "/*", "tenant"),
            route(None, "/api/*", "api"),
            route(None, "/health", "api"),
            route(None, "/*", "web"),
        ];
        let upstreams = Upstreams::default();
        let r = Router::new(&routes, &upstreams, 1024);
        let pattern = |h: &str, p: &str| r.route(h, p).map(|r| r.pattern.as_str());
        assert_eq!(pattern("a.example.com", "/api/x"), Some("*.example.com/*"));
        assert_eq!(pattern("example.com", "/api/x"), Some("/api/*"));
        assert_eq!(pattern("localhost", "/api"), Some("/api/*"));
        assert_eq!(pattern("localhost", "/apix"), Some("/*"));
        assert_eq!(pattern("localhost", "/health"), Some("/health"));
        assert_eq!(pattern("localhost", "/healthz"), Some("/*"));
        assert_eq!(r.route("localhost", "/api/stats").map(|r| r.pattern.as_str()), Some("/api/*"));
    }
}
