//! The sample origin: imitates the API behind the runbook's curl proofs (stats summary with an
//! ETag, games with a short max-age, a sync that changes data) and a small web page. It counts
//! every request it receives so tests and demos can prove when the proxy did not ask it.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const RESULTS: [&str; 3] = ["win", "loss", "draw"];

#[derive(Debug, Clone)]
struct User {
    version: u64,
    synced_at: SystemTime,
}

/// What the origin has seen and holds.
#[derive(Debug, Default)]
pub struct OriginState {
    total: AtomicU64,
    by_target: Mutex<HashMap<String, u64>>,
    users: Mutex<HashMap<String, User>>,
}

impl OriginState {
    fn new() -> Self {
        let s = OriginState::default();
        s.sync("demo");
        s
    }

    /// Requests received for exactly this `path?query` (any method).
    pub fn hits(&self, target: &str) -> u64 {
        self.by_target.lock().map(|m| m.get(target).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// All requests received.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    fn sync(&self, user: &str) -> u64 {
        let Ok(mut users) = self.users.lock() else {
            return 0;
        };
        let u = users.entry(user.to_string()).or_insert(User { version: 0, synced_at: SystemTime::now() });
        u.version += 1;
        u.synced_at = SystemTime::now();
        u.version
    }

    fn user(&self, name: &str) -> Option<User> {
        self.users.lock().ok()?.get(name).cloned()
    }
}

/// A running origin.
#[derive(Debug, Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
}

impl Origin {
    /// Binds `addr` (port 0 picks one) and serves on the current Tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Origin> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(OriginState::new());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Ok(Origin { addr, state })
    }

    /// Starts on a runtime of its own, for callers without one (`portier demo`).
    pub fn start_in_thread(addr: SocketAddr) -> std::io::Result<Origin> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let origin = rt.block_on(Origin::start(addr))?;
        std::thread::Builder::new().name("demo-origin".into()).spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(origin)
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, ctype: &str, cache_control: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", ctype.parse().unwrap_or(http::HeaderValue::from_static("text/plain")));
    if let Ok(v) = cache_control.parse() {
        h.insert("cache-control", v);
    }
    r
}

fn json_resp(status: StatusCode, cache_control: &str, v: serde_json::Value) -> Resp {
    respond(status, "application/json; charset=utf-8", cache_control, v.to_string())
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

/// FNV-1a: a stable content hash for the demo's ETags.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

fn summary(user: &str, u: &User) -> serde_json::Value {
    let openings: Vec<_> = (0..40)
        .map(|i| json!({"eco": format!("C{:02}", (i * 7 + u.version) % 100), "games": 10 + i * 3, "score": 0.4 + (i as f64) / 100.0}))
        .collect();
    json!({"username": user, "version": u.version, "rating": {"blitz": 1500 + u.version, "rapid": 1600 + u.version},
           "synced_at": httpdate::fmt_http_date(u.synced_at), "openings": openings})
}

async fn handle(st: Arc<OriginState>, req: Request<Incoming>) -> Result<Resp, std::convert::Infallible> {
    let target = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    st.total.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut m) = st.by_target.lock() {
        *m.entry(target).or_default() += 1;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers: serde_json::Map<String, serde_json::Value> =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into())).collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let user = query_param(query.as_deref(), "username");

    let resp = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/health") => json_resp(StatusCode::OK, "no-store", json!({"status": "ok"})),
        (&Method::POST, "/api/sync") => {
            let from_body = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("username").and_then(|u| u.as_str()).map(str::to_string));
            match user.or(from_body).filter(|u| !u.is_empty()) {
                Some(u) => {
                    let version = st.sync(&u);
                    json_resp(StatusCode::OK, "no-store", json!({"synced": u, "version": version}))
                }
                None => json_resp(StatusCode::BAD_REQUEST, "no-store", json!({"error": "username is required"})),
            }
        }
        (&Method::GET | &Method::HEAD, "/api/stats/summary") => match user.as_deref().and_then(|u| st.user(u).map(|d| (u, d))) {
            None => {
                json_resp(StatusCode::NOT_FOUND, "no-store", json!({"error": "user not synced", "hint": "POST /api/sync?username=..."}))
            }
            Some((u, data)) => {
                let text = summary(u, &data).to_string();
                let etag = format!("\"{:016x}\"", fnv(text.as_bytes()));
                let mut r =
                    respond(StatusCode::OK, "application/json; charset=utf-8", "public, max-age=60, stale-while-revalidate=30", text);
                let h = r.headers_mut();
                if let Ok(v) = etag.parse() {
                    h.insert("etag", v);
                }
                if let Ok(v) = httpdate::fmt_http_date(data.synced_at).parse() {
                    h.insert("last-modified", v);
                }
                r
            }
        },
        (&Method::GET | &Method::HEAD, "/api/games") => {
            let u = user.unwrap_or_default();
            let version = st.user(&u).map(|d| d.version).unwrap_or(0);
            let games: Vec<_> = (0..5).map(|i| json!({"id": format!("{u}-{version}-{i}"), "result": RESULTS[i % 3]})).collect();
            let text = json!({"username": u, "version": version, "games": games}).to_string();
            let etag = format!("\"{:016x}\"", fnv(text.as_bytes()));
            let mut r = respond(StatusCode::OK, "application/json; charset=utf-8", "public, max-age=2, stale-while-revalidate=30", text);
            if let Ok(v) = etag.parse() {
                r.headers_mut().insert("etag", v);
            }
            r
        }
        (_, "/api/echo") => json_resp(
            StatusCode::OK,
            "no-store",
            json!({"method": method.as_str(), "path": path, "query": query, "headers": headers, "body": String::from_utf8_lossy(&body)}),
        ),
        (&Method::GET, "/api/slow") => {
            let ms = query_param(query.as_deref(), "ms").and_then(|m| m.parse().ok()).unwrap_or(1000u64).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_resp(StatusCode::OK, "no-store", json!({"slept_ms": ms}))
        }
        // Browsers revalidate the page every time (max-age=0); Portier keeps it for a minute
        // (s-maxage), so a reload's revalidation is answered 304 at the edge.
        (&Method::GET | &Method::HEAD, "/") => {
            let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", "public, max-age=0, s-maxage=60", INDEX_HTML);
            if let Ok(v) = format!("\"{:016x}\"", fnv(INDEX_HTML.as_bytes())).parse() {
                r.headers_mut().insert("etag", v);
            }
            r
        }
        (&Method::GET | &Method::HEAD, "/assets/app.js") => {
            respond(StatusCode::OK, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable", APP_JS)
        }
        _ => json_resp(StatusCode::NOT_FOUND, "no-store", json!({"error": "not found", "path": path})),
    };
    Ok(resp)
}

/// `portier demo`: the sample origin and Portier in front of it, and what to try.
pub(crate) mod command {
    use super::super::{fail, run::serve_then, SAMPLE_CONFIG};
    use crate::config::{self, HostPort, ListenAddr};
    use std::path::Path;
    use std::process::ExitCode;

    pub(crate) fn demo(listen: &str, origin: &str, admin: &str, config_path: &Path) -> ExitCode {
        let env = |k: &str| std::env::var(k).ok();
        let loaded = if config_path.exists() {
            config::load_file(config_path)
        } else {
            config::load_str(SAMPLE_CONFIG, "built-in config/portier.toml", env)
        };
        let mut c = match loaded {
            Ok(c) => c,
            Err(p) => {
                eprint!("{p}");
                return ExitCode::from(1);
            }
        };
        let origin_addr = match origin.parse::<ListenAddr>() {
            Ok(a) => a.0,
            Err(e) => return fail(format!("--origin: {e}")),
        };
        let origin = match crate::commands::demo::Origin::start_in_thread(origin_addr) {
            Ok(o) => o,
            Err(e) => return fail(format!("cannot start the sample origin on {origin_addr}: {e}")),
        };
        let origin_hp = HostPort { host: origin.addr.ip().to_string(), port: origin.addr.port() };
        for pool in c.upstreams.values_mut() {
            pool.addresses = vec![origin_hp.clone()];
        }
        match (listen.parse::<ListenAddr>(), admin.parse::<ListenAddr>()) {
            (Ok(l), Ok(a)) => {
                c.listen.public = l;
                c.listen.admin = a;
            }
            (Err(e), _) => return fail(format!("--listen: {e}")),
            (_, Err(e)) => return fail(format!("--admin: {e}")),
        }
        // The demo rewrites the file's pools to the sample origin: there is no file to reload.
        serve_then(c, None, move |bound| {
            let public = match bound.public {
                a if a.ip().is_unspecified() => format!("localhost:{}", a.port()),
                a => a.to_string(),
            };
            let admin = bound.admin;
            eprintln!(
                "\nPortier demo: sample origin on {origin}, Portier on {public}, admin on {admin}\n\
                 Try:\n  \
                 curl -i http://{public}/health\n  \
                 curl -i \"http://{public}/api/stats/summary?username=demo\"      # X-Cache: MISS, then HIT with a growing Age\n  \
                 curl -i -H 'If-None-Match: \"<etag from above>\"' \"http://{public}/api/stats/summary?username=demo\"   # 304\n  \
                 curl -i -X POST \"http://{public}/api/sync?username=demo\"      # changes the data (and invalidates it)\n  \
                 curl -s http://{admin}/readyz\n  \
                 portier proof http://{public}/api/stats/summary --username demo --invalidate \"POST /api/sync\"   # the whole proof\n  \
                 open http://{public}/ in a browser (DevTools > Network shows the headers)\n",
                origin = origin.addr
            );
        })
    }
}
