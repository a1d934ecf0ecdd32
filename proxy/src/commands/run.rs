//! `portier run` (from a config file) and `portier proxy` (one upstream, no file): both
//! serve until shutdown.

use super::fail;
use crate::config::{self, Config, HostPort, ListenAddr, Route, Upstream};
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn run(config: PathBuf) -> ExitCode {
    match config::load_file(&config) {
        Ok(c) => serve(c, Some(config)),
        Err(problems) => {
            eprint!("{problems}");
            ExitCode::from(1)
        }
    }
}

pub(super) fn proxy(listen: &str, upstream: &str, admin: &str, shared_cache: Option<&str>) -> ExitCode {
    match quick_config(listen, upstream, admin, shared_cache) {
        Ok(c) => serve(c, None),
        Err(e) => fail(e),
    }
}

pub(super) fn serve(c: Config, source: Option<PathBuf>) -> ExitCode {
    serve_then(c, source, |_| {})
}

pub(super) fn serve_then(c: Config, source: Option<PathBuf>, on_bound: impl FnOnce(crate::listeners::BoundAddrs)) -> ExitCode {
    match crate::listeners::run(c, source, on_bound) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// `portier proxy`: one pool, one catch-all route, every other setting at its default.
pub(super) fn quick_config(listen: &str, upstream: &str, admin: &str, shared_cache: Option<&str>) -> Result<Config, String> {
    let target = upstream.strip_prefix("http://").unwrap_or(upstream).trim_end_matches('/');
    if target.contains("://") {
        return Err(format!("--upstream {upstream:?}: only http:// upstreams are supported"));
    }
    let target: HostPort = target.parse().map_err(|e| format!("--upstream: {e}"))?;
    let mut c = Config::default();
    c.listen.public = listen.parse::<ListenAddr>().map_err(|e| format!("--listen: {e}"))?;
    c.listen.admin = admin.parse::<ListenAddr>().map_err(|e| format!("--admin: {e}"))?;
    let from_env = std::env::var("PORTIER_CACHE_SHARED_URL").ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = shared_cache.map(str::to_string).or(from_env) {
        c.cache.shared.url = Some(url.parse().map_err(|e| format!("--shared-cache: {e}"))?);
    }
    c.upstreams.insert(
        "upstream".into(),
        Upstream {
            addresses: vec![target],
            health_check: None,
            max_fails: 2,
            fail_timeout: config::HumanDuration::from_secs(10),
            tls: None,
        },
    );
    c.routes.push(Route::new(None, config::PathPattern::everything(), "upstream"));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_takes_a_shared_cache_url_and_refuses_a_bad_one() {
        let c = quick_config("127.0.0.1:0", "127.0.0.1:3000", "127.0.0.1:0", Some("redis://127.0.0.1:6379/0")).unwrap();
        assert_eq!(c.cache.shared.url.as_ref().map(|u| u.as_str()), Some("redis://127.0.0.1:6379/0"));
        let e = quick_config("127.0.0.1:0", "127.0.0.1:3000", "127.0.0.1:0", Some("http://cache:6379")).unwrap_err();
        assert!(e.starts_with("--shared-cache: "), "{e}");
    }
}
