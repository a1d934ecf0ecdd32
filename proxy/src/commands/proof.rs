//! `portier proof URL`: the runbook's cache proof as one command (optional invalidation,
//! MISS, HIT with a growing Age, 304 with the same ETag, optionally STALE then HIT), printed
//! as a person reads it, or as JSON or Markdown for a report.

use serde::Serialize;
use std::time::Duration;

/// The headers that prove the cache, in the order they are shown.
pub(crate) const SHOWN: [&str; 6] = ["x-cache", "age", "cache-control", "etag", "cache-status", "server-timing"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProofError {
    #[error("invalid URL {0:?}: expected http://host[:port]/path")]
    BadUrl(String),
    #[error("{0}: https is not supported; point proof at Portier's http listener")]
    Https(String),
    #[error("invalid --invalidate {0:?}: expected \"METHOD /path?query\"")]
    BadInvalidate(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{addr}: {reason}")]
    Io { addr: String, reason: String },
}

#[derive(Debug, Clone)]
pub(crate) struct ProofUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl ProofUrl {
    pub(crate) fn parse(url: &str) -> Result<ProofUrl, ProofError> {
        if url.starts_with("https://") {
            return Err(ProofError::Https(url.to_string()));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| ProofError::BadUrl(url.to_string()))?;
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match auth.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || auth.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| ProofError::BadUrl(url.to_string()))?)
            }
            _ => (auth, 80),
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(ProofError::BadUrl(url.to_string()));
        }
        Ok(ProofUrl {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            path: if path.is_empty() { "/".into() } else { path.to_string() },
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.path)
    }
}

/// Sets (or replaces) `name=value` in a path's query string.
pub(crate) fn with_query_param(path: &str, name: &str, value: &str) -> String {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let mut pairs: Vec<String> =
        q.split('&').filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(name)).map(str::to_string).collect();
    pairs.push(format!("{name}={value}"));
    format!("{p}?{}", pairs.join("&"))
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Exchange {
    pub request: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Exchange {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn send(t: &ProofUrl, method: &str, path: &str, extra: &[(&str, &str)]) -> Result<Exchange, ProofError> {
    let addr = t.authority();
    let mut headers = vec![("Accept", "*/*")];
    headers.extend_from_slice(extra);
    let req = crate::http_client::Request { method, target: path, host: &addr, headers: &headers, body: b"" };
    let head = crate::http_client::send_blocking(&addr, &req, Duration::from_secs(30)).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::TimedOut => {
            ProofError::Io { addr: addr.clone(), reason: e.to_string() }
        }
        _ => ProofError::Connect { addr: addr.clone(), reason: e.to_string() },
    })?;
    Ok(Exchange { request: format!("{method} {path}"), status: head.status, headers: head.headers })
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub name: String,
    pub expected: String,
    pub passed: bool,
    pub why: String,
    pub exchange: Exchange,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub url: String,
    pub passed: bool,
    pub steps: Vec<Step>,
}

pub(crate) struct Options {
    pub invalidate: Option<String>,
    pub username: Option<String>,
    pub stale: bool,
    pub wait: Duration,
}

fn max_age(ex: &Exchange) -> Option<u64> {
    let cc = ex.header("cache-control")?;
    cc.split(',').find_map(|d| d.trim().strip_prefix("max-age=")).and_then(|v| v.trim().parse().ok())
}

fn age(ex: &Exchange) -> Option<u64> {
    ex.header("age").and_then(|a| a.trim().parse().ok())
}

/// Runs the proof. Connection problems end it with an error; a response that is not what the
/// cache should give is a failed step, and the run goes on so the report shows everything.
pub(crate) fn run(url: &str, o: &Options) -> Result<Report, ProofError> {
    let mut t = ProofUrl::parse(url)?;
    if let Some(u) = &o.username {
        t.path = with_query_param(&t.path, "username", u);
    }
    let mut steps = Vec::new();
    let mut step = |name: &str, expected: &str, ex: Exchange, check: &dyn Fn(&Exchange) -> Result<(), String>| {
        let r = check(&ex);
        steps.push(Step {
            name: name.into(),
            expected: expected.into(),
            passed: r.is_ok(),
            why: r.err().unwrap_or_else(|| "as expected".into()),
            exchange: ex,
        });
    };
    let xcache = |want: &'static str| {
        move |ex: &Exchange| match ex.header("x-cache") {
            Some(v) if v == want => Ok(()),
            Some(v) => Err(format!("expected X-Cache: {want}, got X-Cache: {v}")),
            None => Err(format!("expected X-Cache: {want}, got no X-Cache header (is this URL served through Portier?)")),
        }
    };

    if let Some(inv) = &o.invalidate {
        let (method, path) = inv.trim().split_once(' ').ok_or_else(|| ProofError::BadInvalidate(inv.clone()))?;
        let mut path = path.trim().to_string();
        if !path.starts_with('/') || method.is_empty() {
            return Err(ProofError::BadInvalidate(inv.clone()));
        }
        if let (Some(u), false) = (&o.username, path.contains("username=")) {
            path = with_query_param(&path, "username", u);
        }
        let ex = send(&t, &method.to_ascii_uppercase(), &path, &[])?;
        step("invalidate", "2xx", ex, &|ex| {
            if (200..300).contains(&ex.status) {
                Ok(())
            } else {
                Err(format!("expected a 2xx answer, got {}", ex.status))
            }
        });
    }

    let first = send(&t, "GET", &t.path, &[])?;
    let first_age = age(&first).unwrap_or(0);
    step("first GET", "200, X-Cache: MISS", first.clone(), &|ex| {
        if ex.status != 200 {
            return Err(format!("expected 200, got {}", ex.status));
        }
        xcache("MISS")(ex).map_err(|e| format!("{e} (an entry was already stored: use --invalidate to start from a miss)"))
    });

    std::thread::sleep(o.wait);
    let second = send(&t, "GET", &t.path, &[])?;
    step("second GET", "200, X-Cache: HIT, Age larger", second.clone(), &|ex| {
        xcache("HIT")(ex)?;
        match age(ex) {
            Some(a) if a > first_age || (a >= 1 && first.header("age").is_none()) => Ok(()),
            Some(a) => Err(format!("expected Age above {first_age}, got Age: {a}")),
            None => Err("expected an Age header on a HIT, got none".into()),
        }
    });

    let etag = second.header("etag").or(first.header("etag")).map(str::to_string);
    match &etag {
        Some(tag) => {
            let ex = send(&t, "GET", &t.path, &[("If-None-Match", tag)])?;
            let tag = tag.clone();
            step("conditional GET (If-None-Match)", "304 Not Modified, same ETag", ex, &|ex| {
                if ex.status != 304 {
                    return Err(format!("expected 304, got {}", ex.status));
                }
                match ex.header("etag") {
                    Some(e) if e == tag => Ok(()),
                    Some(e) => Err(format!("expected ETag {tag}, got {e}")),
                    None => Err("expected an ETag on the 304, got none".into()),
                }
            });
        }
        None => {
            let ex = second.clone();
            step("conditional GET (If-None-Match)", "304 Not Modified, same ETag", ex, &|_| {
                Err("expected an ETag to send in If-None-Match, the responses had none".into())
            });
        }
    }

    if o.stale {
        let wait = max_age(&second).unwrap_or(0) + 1;
        std::thread::sleep(Duration::from_secs(wait.saturating_sub(o.wait.as_secs())));
        let ex = send(&t, "GET", &t.path, &[])?;
        step("GET after max-age", "X-Cache: STALE (stale-while-revalidate)", ex, &xcache("STALE"));
        // The background refresh needs a moment.
        std::thread::sleep(Duration::from_millis(500));
        let ex = send(&t, "GET", &t.path, &[])?;
        step("GET after the refresh", "X-Cache: HIT", ex, &xcache("HIT"));
    }
    let passed = steps.iter().all(|s| s.passed);
    Ok(Report { url: t.url(), passed, steps })
}

pub(crate) fn render_text(r: &Report) -> String {
    let mut o = format!("Cache proof for {}\n", r.url);
    for (i, s) in r.steps.iter().enumerate() {
        o.push_str(&format!("\n{}. {}: {}\n   -> {}\n", i + 1, s.name, s.exchange.request, s.exchange.status));
        for h in SHOWN {
            if let Some(v) = s.exchange.header(h) {
                o.push_str(&format!("   {}: {v}\n", canonical(h)));
            }
        }
        o.push_str(&format!("   {} expected {}: {}\n", if s.passed { "PASS" } else { "FAIL" }, s.expected, s.why));
    }
    let failed = r.steps.iter().filter(|s| !s.passed).count();
    o.push_str(&format!("\n{}\n", if r.passed { "ALL STEPS PASSED".to_string() } else { format!("{failed} STEP(S) FAILED") }));
    o
}

pub(crate) fn render_markdown(r: &Report) -> String {
    let mut o = format!("### Cache proof: `{}`\n\n| # | step | request | status | X-Cache | Age | ETag | Cache-Status | result |\n|---|---|---|---|---|---|---|---|---|\n", r.url);
    for (i, s) in r.steps.iter().enumerate() {
        let h = |n: &str| s.exchange.header(n).unwrap_or("").replace('|', "\\|");
        let code = |n: &str| match h(n) {
            v if v.is_empty() => String::new(),
            v => format!("`{v}`"),
        };
        o.push_str(&format!(
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            s.name,
            s.exchange.request,
            s.exchange.status,
            h("x-cache"),
            h("age"),
            code("etag"),
            code("cache-status"),
            if s.passed { "PASS".to_string() } else { format!("FAIL: {}", s.why.replace('|', "\\|")) }
        ));
    }
    if let Some(cc) = r.steps.iter().filter(|s| s.name != "invalidate").find_map(|s| s.exchange.header("cache-control")) {
        o.push_str(&format!("\n`Cache-Control: {cc}`\n"));
    }
    o.push_str(&format!("\n**{}**\n", if r.passed { "All steps passed." } else { "Some steps failed." }));
    o
}

fn canonical(h: &str) -> String {
    match h {
        "x-cache" => "X-Cache".into(),
        "etag" => "ETag".into(),
        other => other.split('-').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect::<Vec<_>>().join("-"),
    }
}

/// `portier proof`: runs the proof and prints it; exit 0 only when every step passed.
pub(super) fn command(
    url: &str,
    invalidate: Option<String>,
    username: Option<String>,
    stale: bool,
    wait: f64,
    format: super::ProofFormat,
) -> std::process::ExitCode {
    use super::ProofFormat;
    use std::process::ExitCode;
    let o = Options { invalidate, username, stale, wait: std::time::Duration::from_secs_f64(wait.clamp(0.0, 60.0)) };
    match run(url, &o) {
        Ok(report) => {
            let out = match format {
                ProofFormat::Text => render_text(&report),
                ProofFormat::Markdown => render_markdown(&report),
                ProofFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
            };
            print!("{out}");
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => super::fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_params() {
        let t = ProofUrl::parse("http://localhost:8080/api/stats/summary?username=x").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("localhost", 8080, "/api/stats/summary?username=x"));
        assert_eq!(ProofUrl::parse("http://h").unwrap().path, "/");
        assert!(matches!(ProofUrl::parse("ftp://h"), Err(ProofError::BadUrl(_))));
        assert!(matches!(ProofUrl::parse("https://h"), Err(ProofError::Https(_))));
        assert!(ProofUrl::parse("http://h:99999/").is_err());
        assert_eq!(with_query_param("/a?username=x&b=1", "username", "bob"), "/a?b=1&username=bob");
        assert_eq!(with_query_param("/a", "username", "bob"), "/a?username=bob");
        assert_eq!(canonical("cache-status"), "Cache-Status");
    }
}
