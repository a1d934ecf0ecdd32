//! Route selection: host and path matching, first match wins.

use crate::config::{HostPattern, PathPattern, Route};

/// A route ready for matching. `pattern` is the low-cardinality name used in span names and
/// metric labels (`/api/*`), never the request's own path.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub index: usize,
    pub pattern: String,
    pub pool: String,
    host: Option<HostPattern>,
    path: PathPattern,
}

impl CompiledRoute {
    fn new(index: usize, r: &Route) -> Self {
        let pattern = match &r.host {
            Some(h) => format!("{h}{}", r.path),
            None => r.path.to_string(),
        };
        CompiledRoute { index, pattern, pool: r.pool.clone(), host: r.host.clone(), path: r.path.clone() }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(host)) && self.path.matches(path)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<CompiledRoute>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        Router { routes: routes.iter().enumerate().map(|(i, r)| CompiledRoute::new(i, r)).collect() }
    }

    /// `host` is the checked request's host, without its port.
    pub fn route(&self, host: &str, path: &str) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matches(host, path))
    }

    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
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
        let r = Router::new(&[
            route(Some("*.example.com"), "/*", "tenant"),
            route(None, "/api/*", "api"),
            route(None, "/health", "api"),
            route(None, "/*", "web"),
        ]);
        let pool = |h: &str, p: &str| r.route(h, p).map(|r| r.pool.as_str());
        assert_eq!(pool("a.example.com", "/api/x"), Some("tenant"));
        assert_eq!(pool("example.com", "/api/x"), Some("api"));
        assert_eq!(pool("localhost", "/api"), Some("api"));
        assert_eq!(pool("localhost", "/apix"), Some("web"));
        assert_eq!(pool("localhost", "/health"), Some("api"));
        assert_eq!(pool("localhost", "/healthz"), Some("web"));
        assert_eq!(r.route("localhost", "/api/stats").map(|r| r.pattern.as_str()), Some("/api/*"));
    }
}
