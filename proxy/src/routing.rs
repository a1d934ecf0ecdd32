//! Route selection: host and path matching, first match wins.

use crate::config::Route;

#[derive(Debug, Clone)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
enum PathMatch {
    /// `/api/*`: the prefix `/api/` and the bare `/api`.
    Prefix(String),
    Exact(String),
}

/// A route ready for matching. `pattern` is the low-cardinality name used in span names and
/// metric labels (`/api/*`), never the request's own path.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub index: usize,
    pub pattern: String,
    pub pool: String,
    host: HostMatch,
    path: PathMatch,
}

impl CompiledRoute {
    fn new(index: usize, r: &Route) -> Self {
        let host = match r.host.as_deref().map(str::to_ascii_lowercase) {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix("*.") {
                Some(rest) => HostMatch::Suffix(format!(".{rest}")),
                None => HostMatch::Exact(h),
            },
        };
        let path = match r.path.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_string()),
            None => PathMatch::Exact(r.path.clone()),
        };
        let pattern = match &r.host {
            Some(h) => format!("{h}{}", r.path),
            None => r.path.clone(),
        };
        CompiledRoute { index, pattern, pool: r.pool.clone(), host, path }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s),
        };
        host_ok
            && match &self.path {
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()) || (p.ends_with('/') && path == &p[..p.len() - 1]),
            }
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

    /// `host` is the request's Host (or `:authority`), with or without a port.
    pub fn route(&self, host: &str, path: &str) -> Option<&CompiledRoute> {
        let host = strip_port(host);
        self.routes.iter().find(|r| r.matches(host, path))
    }

    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, pool: &str) -> Route {
        Route::new(host, path, pool)
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
        assert_eq!(pool("a.example.com:8080", "/api/x"), Some("tenant"));
        assert_eq!(pool("example.com", "/api/x"), Some("api"));
        assert_eq!(pool("localhost", "/api"), Some("api"));
        assert_eq!(pool("localhost", "/apix"), Some("web"));
        assert_eq!(pool("localhost", "/health"), Some("api"));
        assert_eq!(pool("localhost", "/healthz"), Some("web"));
        assert_eq!(r.route("localhost", "/api/stats").map(|r| r.pattern.as_str()), Some("/api/*"));
    }
}
