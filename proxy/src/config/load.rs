//! Reading a config file: every problem is collected (syntax, unknown keys, bad values,
//! dangling references) and reported with the key path, so one `portier check` run shows them all.

use super::{Config, HostPort, ListenAddr, TOP_LEVEL_KEYS};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;

/// One thing wrong with a config: where (`upstreams.api.addresses[0]`, and the line and
/// column when the key is in the file) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub path: String,
    pub message: String,
    /// 1-based line and column of the key (or of its closest parent in the file).
    pub at: Option<(usize, usize)>,
}

/// Every problem found in one config source.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) struct Problems {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{}: {n} problem{}", self.source_name, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "  {}", self.source_name)?;
            if let Some((line, col)) = p.at {
                write!(f, ":{line}:{col}")?;
            }
            if p.path.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into(), at: None });
    }

    fn section<T: DeserializeOwned>(&mut self, path: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match inner.as_str() {
                    "." | "" => path.to_string(),
                    rest if rest.starts_with('[') => format!("{path}{rest}"),
                    rest => format!("{path}.{rest}"),
                };
                self.push(full, e.inner().to_string().trim_end().to_string());
                None
            }
        }
    }
}

/// Reads and validates a config file, then applies the `PORTIER_*` environment overrides.
pub(crate) fn load_file(path: &Path) -> Result<Config, Problems> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Problems {
        source_name: name.clone(),
        problems: vec![Problem { path: String::new(), message: format!("cannot read the file: {e}"), at: None }],
    })?;
    load_str(&text, &name, |k| std::env::var(k).ok())
}

/// Parses `text`; `env` looks up override variables (a closure so tests need not touch the
/// process environment).
pub(crate) fn load_str(text: &str, source_name: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, Problems> {
    let mut c = Collector { problems: Vec::new() };
    let fail = |problems| Problems { source_name: source_name.to_string(), problems };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            c.push("", format!("not valid TOML: {}", e.to_string().trim_end()));
            return Err(fail(c.problems));
        }
    };

    let mut cfg = Config::default();
    let mut saw_upstreams = false;
    // Pools named in the file, even those with errors, so a route naming one is not also flagged.
    let mut declared = std::collections::BTreeSet::new();
    let mut saw_routes = false;
    for (key, value) in table {
        match key.as_str() {
            "listen" => cfg.listen = c.section(&key, value).unwrap_or_default(),
            "server" => cfg.server = c.section(&key, value).unwrap_or_default(),
            "timeouts" => cfg.timeouts = c.section(&key, value).unwrap_or_default(),
            "limits" => cfg.limits = c.section(&key, value).unwrap_or_default(),
            "cache" => cfg.cache = c.section(&key, value).unwrap_or_default(),
            "compression" => cfg.compression = c.section(&key, value).unwrap_or_default(),
            "tls" => cfg.tls = c.section(&key, value),
            "purge" => cfg.purge = c.section(&key, value).unwrap_or_default(),
            "telemetry" => cfg.telemetry = c.section(&key, value).unwrap_or_default(),
            "invalidation" => match value {
                toml::Value::Array(rules) => {
                    for (i, r) in rules.into_iter().enumerate() {
                        if let Some(r) = c.section(&format!("invalidation[{i}]"), r) {
                            cfg.invalidation.push(r);
                        }
                    }
                }
                _ => c.push("invalidation", "expected an array of tables, e.g. [[invalidation]]"),
            },
            "upstreams" => {
                saw_upstreams = true;
                match value {
                    toml::Value::Table(pools) => {
                        for (name, pool) in pools {
                            declared.insert(name.clone());
                            if let Some(p) = c.section(&format!("upstreams.{name}"), pool) {
                                cfg.upstreams.insert(name, p);
                            }
                        }
                    }
                    _ => c.push("upstreams", "expected a table of named pools, e.g. [upstreams.api]"),
                }
            }
            "routes" => {
                saw_routes = true;
                match value {
                    toml::Value::Array(routes) => {
                        for (i, r) in routes.into_iter().enumerate() {
                            if let Some(r) = c.section(&format!("routes[{i}]"), r) {
                                cfg.routes.push(r);
                            }
                        }
                    }
                    _ => c.push("routes", "expected an array of tables, e.g. [[routes]]"),
                }
            }
            other => c.push(other, format!("unknown key; allowed top-level keys: {}", TOP_LEVEL_KEYS.join(", "))),
        }
    }
    if !saw_upstreams {
        c.push("upstreams", "missing: at least one pool is required, e.g. [upstreams.api] addresses = [\"127.0.0.1:3001\"]");
    }
    if !saw_routes {
        c.push("routes", "missing: at least one [[routes]] entry is required");
    }

    apply_env(&mut cfg, &env, &mut c);
    validate(&cfg, &declared, &mut c);
    if c.problems.is_empty() {
        Ok(cfg)
    } else {
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            for p in &mut c.problems {
                p.at = locate(doc.get_ref(), &p.path).map(|offset| line_col(text, offset));
            }
        }
        Err(fail(c.problems))
    }
}

/// The byte offset of the key at `path` (`routes[1].path`), or of its deepest parent found.
fn locate(doc: &toml::de::DeTable<'_>, path: &str) -> Option<usize> {
    use toml::de::DeValue;
    let mut table = Some(doc);
    let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
    let mut found = None;
    'walk: for segment in path.split('.') {
        let (name, indexes) = segment.split_once('[').map_or((segment, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            let Some((k, v)) = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == name)) else { break };
            found = Some(k.span().start);
            table = v.get_ref().as_table();
            array = v.get_ref().as_array().map(|a| &a[..]);
        }
        for i in indexes.split('[').filter_map(|x| x.trim_end_matches(']').parse::<usize>().ok()) {
            let Some(v) = array.and_then(|a| a.get(i)) else { break 'walk };
            found = Some(v.span().start);
            table = v.get_ref().as_table();
            array = v.get_ref().as_array().map(|a| &a[..]);
        }
    }
    found
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The variable that overrides a pool's addresses: `api` → `PORTIER_UPSTREAM_API`.
pub(super) fn upstream_env_var(pool: &str) -> String {
    format!("PORTIER_UPSTREAM_{}", pool.to_ascii_uppercase().replace('-', "_"))
}

/// A comma-separated environment value (`a, b`), empty items skipped; the first bad item's
/// reason.
fn comma_list<T: std::str::FromStr<Err = String>>(v: &str) -> Result<Vec<T>, String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

fn apply_env(cfg: &mut Config, env: &impl Fn(&str) -> Option<String>, c: &mut Collector) {
    if let Some(t) = env("PORTIER_ADMIN_TOKEN").filter(|t| !t.trim().is_empty()) {
        cfg.listen.admin_token = Some(t);
    }
    if let Some(v) = env("PORTIER_ADMIN_HOSTS") {
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.parse::<super::HostPattern>() {
                Ok(h) => cfg.listen.admin_hosts.push(h),
                Err(e) => c.push("env PORTIER_ADMIN_HOSTS", e),
            }
        }
    }
    for (var, slot) in [("PORTIER_LISTEN_PUBLIC", &mut cfg.listen.public), ("PORTIER_LISTEN_ADMIN", &mut cfg.listen.admin)] {
        if let Some(v) = env(var) {
            match v.parse::<ListenAddr>() {
                Ok(a) => *slot = a,
                Err(e) => c.push(format!("env {var}"), e),
            }
        }
    }
    if let Some(v) = env("PORTIER_TRUSTED_PROXIES") {
        // Replaces the file's list: the deployment knows its own network.
        match comma_list::<super::Cidr>(&v) {
            Ok(list) => cfg.server.trusted_proxies = list,
            Err(e) => c.push("env PORTIER_TRUSTED_PROXIES", e),
        }
    }
    if let Some(v) = env("PORTIER_SERVER_NAME").filter(|v| !v.trim().is_empty()) {
        match v.trim().parse() {
            Ok(n) => cfg.server.name = n,
            Err(e) => c.push("env PORTIER_SERVER_NAME", e),
        }
    }
    if let Some(v) = env("PORTIER_CACHE_SHARED_URL").filter(|v| !v.trim().is_empty()) {
        match v.parse() {
            Ok(u) => cfg.cache.shared.url = Some(u),
            Err(e) => c.push("env PORTIER_CACHE_SHARED_URL", e),
        }
    }
    if let Some(v) = env("PORTIER_CACHE_DISK_PATH").filter(|v| !v.trim().is_empty()) {
        cfg.cache.disk.path = Some(v.trim().into());
    }
    for (name, pool) in cfg.upstreams.iter_mut() {
        let var = upstream_env_var(name);
        if let Some(v) = env(&var) {
            match comma_list::<HostPort>(&v) {
                Ok(a) if !a.is_empty() => pool.addresses = a,
                Ok(_) => c.push(format!("env {var}"), "empty: expected host:port[,host:port...]"),
                Err(e) => c.push(format!("env {var}"), e),
            }
        }
    }
}

fn validate(cfg: &Config, declared: &std::collections::BTreeSet<String>, c: &mut Collector) {
    if cfg.listen.public.0 == cfg.listen.admin.0 && cfg.listen.public.0.port() != 0 {
        c.push("listen.admin", "must differ from listen.public: the admin API is never served on the public port");
    }
    let t = &cfg.timeouts;
    for (key, d) in [("connect", t.connect), ("read", t.read), ("write", t.write), ("upstream_idle", t.upstream_idle)] {
        if d.get().is_zero() {
            c.push(format!("timeouts.{key}"), "must be greater than 0");
        }
    }
    let l = &cfg.limits;
    if l.max_header_count == 0 || l.max_header_count > super::PARSER_MAX_HEADER_COUNT {
        c.push("limits.max_header_count", format!("{} is out of range 1..={}", l.max_header_count, super::PARSER_MAX_HEADER_COUNT));
    }
    for (key, size) in [("max_uri", l.max_uri), ("max_header", l.max_header), ("max_headers", l.max_headers)] {
        if size.bytes() < 256 {
            c.push(format!("limits.{key}"), format!("{size} is too small for ordinary requests (at least 256 bytes)"));
        }
    }
    for (key, d) in [("head_timeout", l.head_timeout), ("handshake_timeout", l.handshake_timeout), ("body_timeout", l.body_timeout)] {
        if d.get().is_zero() {
            c.push(format!("limits.{key}"), "must be greater than 0");
        }
    }
    if l.max_requests_per_client == 0 {
        c.push("limits.max_requests_per_client", "must be at least 1");
    }
    for (name, pool) in &cfg.upstreams {
        if pool.addresses.is_empty() {
            c.push(format!("upstreams.{name}.addresses"), "must list at least one host:port");
        }
        if let Some(hc) = &pool.health_check {
            if !hc.path.starts_with('/') {
                c.push(format!("upstreams.{name}.health_check.path"), "must start with '/'");
            }
            if hc.interval.get().is_zero() || hc.timeout.get().is_zero() {
                c.push(format!("upstreams.{name}.health_check"), "interval and timeout must be greater than 0");
            }
            if hc.unhealthy_after == 0 || hc.healthy_after == 0 {
                c.push(format!("upstreams.{name}.health_check"), "unhealthy_after and healthy_after must be at least 1");
            }
        }
    }
    if cfg.cache.max_object_size > cfg.cache.max_size {
        c.push("cache.max_object_size", format!("{} is larger than cache.max_size ({})", cfg.cache.max_object_size, cfg.cache.max_size));
    }
    let shared = &cfg.cache.shared;
    if shared.timeout.get().is_zero() {
        c.push("cache.shared.timeout", "must be greater than 0");
    }
    if shared.prefix.is_empty() || !shared.prefix.bytes().all(|b| b.is_ascii_graphic()) {
        c.push("cache.shared.prefix", "must be non-empty visible ASCII");
    }
    let disk = &cfg.cache.disk;
    if disk.path.is_some() {
        if disk.max_size.bytes() == 0 {
            c.push("cache.disk.max_size", "must be greater than 0");
        }
        if disk.max_object_size > disk.max_size {
            c.push(
                "cache.disk.max_object_size",
                format!("{} is larger than cache.disk.max_size ({})", disk.max_object_size, disk.max_size),
            );
        }
        if disk.path.as_ref().is_some_and(|p| p.as_os_str().is_empty() || p.is_file()) {
            c.push("cache.disk.path", "must name a directory (it is created if missing)");
        }
    }
    if cfg.cache.enabled && cfg.cache.max_size.bytes() == 0 {
        c.push("cache.max_size", "must be greater than 0 (use cache.enabled = false to turn the cache off)");
    }
    if let Some(r) = cfg.telemetry.traces.sample_ratio {
        if !(0.0..=1.0).contains(&r) {
            c.push("telemetry.traces.sample_ratio", format!("{r} is not between 0.0 and 1.0"));
        }
    }
    for (key, url) in [
        ("telemetry.traces.endpoint", &cfg.telemetry.traces.endpoint),
        ("telemetry.profiling.pyroscope_url", &cfg.telemetry.profiling.pyroscope_url),
    ] {
        if let Some(u) = url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                c.push(key, format!("{u:?} must be an http:// or https:// URL"));
            }
        }
    }
    if cfg.purge.token.as_deref() == Some("") {
        c.push("purge.token", "must not be empty (leave it out to allow PURGE only from purge.allow_from)");
    }
    for (i, r) in cfg.invalidation.iter().enumerate() {
        if r.prefixes.is_empty() || r.prefixes.iter().any(|p| !p.starts_with('/')) {
            c.push(format!("invalidation[{i}].prefixes"), "must list at least one path prefix, each starting with '/'");
        }
    }
    if let Some(t) = &cfg.tls {
        if t.certificates.is_empty() && t.acme.is_none() {
            c.push("tls.certificates", "list at least one { cert = \"...pem\", key = \"...pem\" }, or set tls.acme");
        }
        if let Some(a) = &t.acme {
            if a.domains.is_empty() {
                c.push("tls.acme.domains", "name at least one domain the certificate is for");
            }
            if !a.email.contains('@') {
                c.push("tls.acme.email", format!("{:?} is not an email address", a.email));
            }
            if !a.directory.starts_with("https://") {
                c.push("tls.acme.directory", "must be an https:// URL");
            }
        }
        for (i, files) in t.certificates.iter().enumerate() {
            if let Err(e) = super::certs::load_pair(files) {
                c.push(format!("tls.certificates[{i}]"), e.to_string());
            }
        }
        if t.listen.0.port() != 0 && (t.listen.0 == cfg.listen.public.0 || t.listen.0 == cfg.listen.admin.0) {
            c.push("tls.listen", "must differ from listen.public and listen.admin");
        }
    }
    let z = &cfg.compression;
    for (key, level, range) in [("gzip_level", z.gzip_level, 1..=9), ("br_level", z.br_level, 1..=11), ("zstd_level", z.zstd_level, 1..=19)]
    {
        if !range.contains(&level) {
            c.push(format!("compression.{key}"), format!("{level} is out of range {}..={}", range.start(), range.end()));
        }
    }
    if z.dictionary_max_size.0 > z.dictionaries_max_size.0 {
        c.push("compression.dictionary_max_size", "must not exceed compression.dictionaries_max_size");
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        if r.dictionary.is_some() && r.compress.is_empty() {
            c.push(format!("routes[{i}].dictionary"), "needs compression on this route (compress is [])");
        }
        if r.basic_auth.as_ref().is_some_and(|b| b.users.is_empty()) {
            c.push(format!("routes[{i}].basic_auth.users"), "must name at least one user = \"<bcrypt hash>\"");
        }
        if !declared.contains(&r.pool) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            c.push(
                format!("routes[{i}].pool"),
                format!(
                    "unknown upstream {:?}; defined pools: {}",
                    r.pool,
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [upstreams.api]
        addresses = ["127.0.0.1:3001"]
        [[routes]]
        path = "/api/*"
        pool = "api"
    "#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load_str(GOOD, "t", no_env).unwrap();
        assert_eq!(c.listen.public.to_string(), "0.0.0.0:8080");
        assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9901");
        assert_eq!(c.timeouts.upstream_idle.as_secs(), 4);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            colour = "blue"
            [timeouts]
            connect = "2 parsecs"
            [upstreams.api]
            addresses = ["127.0.0.1:3001"]
            adresses = ["x:1"]
            [[routes]]
            path = "/api/*"
            pool = "apii"
        "#;
        let e = load_str(text, "bad.toml", no_env).unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"colour"), "{e}");
        assert!(paths.contains(&"timeouts.connect"), "{e}");
        assert!(paths.contains(&"upstreams.api.adresses"), "{e}");
        assert!(paths.contains(&"routes[0].pool"), "{e}");
        assert!(e.to_string().contains("unknown upstream \"apii\""), "{e}");
        let at = |path: &str| e.problems.iter().find(|p| p.path == path).and_then(|p| p.at);
        assert_eq!(at("colour"), Some((2, 13)), "{e}");
        assert_eq!(at("timeouts.connect"), Some((4, 13)));
        assert_eq!(at("upstreams.api.adresses"), Some((7, 13)));
        assert_eq!(at("routes[0].pool"), Some((10, 13)));
        assert!(e.to_string().contains("bad.toml:4:13: timeouts.connect: "), "{e}");
    }

    #[test]
    fn the_shared_cache_url_comes_from_the_environment_and_is_checked() {
        let env = |k: &str| (k == "PORTIER_CACHE_SHARED_URL").then(|| "redis://:pw@cache:6379/1".to_string());
        let c = load_str(GOOD, "t", env).unwrap();
        assert_eq!(c.cache.shared.url.as_ref().map(|u| u.as_str()), Some("redis://:pw@cache:6379/1"));
        assert_eq!(c.cache.shared.url.as_ref().map(|u| u.redacted()).as_deref(), Some("redis://:***@cache:6379/1"));
        let bad = |k: &str| (k == "PORTIER_CACHE_SHARED_URL").then(|| "memcached://cache".to_string());
        let e = load_str(GOOD, "t", bad).unwrap_err();
        assert_eq!(e.problems[0].path, "env PORTIER_CACHE_SHARED_URL");
    }

    #[test]
    fn the_disk_tier_is_checked_with_its_key_paths() {
        let env = |k: &str| (k == "PORTIER_CACHE_DISK_PATH").then(|| "/var/cache/portier".to_string());
        let c = load_str(GOOD, "t", env).unwrap();
        assert_eq!(c.cache.disk.path.as_deref(), Some(std::path::Path::new("/var/cache/portier")));
        assert_eq!(c.cache.disk.max_size.bytes(), 1024 * 1024 * 1024);
        let text = format!("{GOOD}\n[cache.disk]\npath = \"/tmp/x\"\nmax_size = \"1MiB\"\nmax_object_size = \"2MiB\"\n");
        let e = load_str(&text, "t", |_| None).unwrap_err();
        assert_eq!(e.problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["cache.disk.max_object_size"]);
        let e = load_str(&format!("{GOOD}\n[cache.disk]\npath = \"/tmp/x\"\nmax_size = \"0B\"\nsize = 1\n"), "t", |_| None).unwrap_err();
        assert!(e.problems.iter().any(|p| p.path.starts_with("cache.disk")), "{:?}", e.problems);
    }

    #[test]
    fn env_overrides_addresses() {
        let env = |k: &str| match k {
            "PORTIER_UPSTREAM_API" => Some("api:3001,api2:3001".to_string()),
            "PORTIER_LISTEN_ADMIN" => Some("0.0.0.0:9901".to_string()),
            _ => None,
        };
        let c = load_str(GOOD, "t", env).unwrap();
        assert_eq!(c.upstreams["api"].addresses.len(), 2);
        assert_eq!(c.upstreams["api"].addresses[0].host, "api");
        assert_eq!(c.listen.admin.to_string(), "0.0.0.0:9901");
        let bad = |k: &str| (k == "PORTIER_UPSTREAM_API").then(|| "http://api".to_string());
        let e = load_str(GOOD, "t", bad).unwrap_err();
        assert_eq!(e.problems[0].path, "env PORTIER_UPSTREAM_API");
    }

    #[test]
    fn env_sets_trusted_proxies_and_the_name() {
        let env = |k: &str| match k {
            "PORTIER_TRUSTED_PROXIES" => Some("10.0.0.0/8, 172.16.0.0/12".to_string()),
            "PORTIER_SERVER_NAME" => Some("proxy-2".to_string()),
            _ => None,
        };
        let c = load_str(GOOD, "t", env).unwrap();
        let nets: Vec<String> = c.server.trusted_proxies.iter().map(|n| n.0.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "172.16.0.0/12"]);
        assert_eq!(c.server.name.as_str(), "proxy-2");
        let bad = |k: &str| match k {
            "PORTIER_TRUSTED_PROXIES" => Some("10.0.0.0/8,proxy".to_string()),
            "PORTIER_SERVER_NAME" => Some("two words".to_string()),
            _ => None,
        };
        let e = load_str(GOOD, "t", bad).unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["env PORTIER_TRUSTED_PROXIES", "env PORTIER_SERVER_NAME"], "both reported at once");
    }
}
