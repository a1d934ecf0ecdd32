//! The origin `vs-bench` puts behind the three proxies: fixed bodies, nothing computed per
//! request, so the proxies are what is measured. Counts requests per path and query.
//!
//! - `/2k?…`: 2,048 bytes of JSON, `public, max-age=3600` (the query makes distinct URLs)
//! - `/100k`: 102,400 bytes, `application/octet-stream`, `public, max-age=3600`
//! - `/slow?ms=N&…`: the 2 KB body after N ms, cacheable (coalescing)
//! - `/miss`: the 2 KB body with `no-store` (every request goes to the origin)

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct StaticOrigin {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

fn body(len: usize) -> Bytes {
    let mut v = b"{\"pad\":\"".to_vec();
    v.resize(len - 2, b'a');
    v.extend_from_slice(b"\"}");
    Bytes::from(v)
}

impl StaticOrigin {
    pub async fn start() -> StaticOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the origin");
        let addr = listener.local_addr().expect("origin address");
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let (small, large) = (body(2048), body(100 * 1024));
        let seen = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let (seen, small, large) = (seen.clone(), small.clone(), large.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, small, large) = (seen.clone(), small.clone(), large.clone());
                        async move {
                            let target = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
                            if let Ok(mut m) = seen.lock() {
                                *m.entry(target).or_default() += 1;
                            }
                            let query = req.uri().query().unwrap_or("");
                            let (ctype, cc, b) = match req.uri().path() {
                                "/100k" => ("application/octet-stream", "public, max-age=3600", large),
                                "/miss" => ("application/json", "no-store", small),
                                "/slow" => {
                                    let ms = query
                                        .split('&')
                                        .find_map(|kv| kv.strip_prefix("ms="))
                                        .and_then(|v| v.parse().ok())
                                        .unwrap_or(50u64);
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    ("application/json", "public, max-age=3600", small)
                                }
                                _ => ("application/json", "public, max-age=3600", small),
                            };
                            let resp = Response::builder()
                                .header("content-type", ctype)
                                .header("cache-control", cc)
                                .header("etag", "\"bench-1\"")
                                .header("last-modified", "Sun, 29 Nov 2026 00:00:00 GMT")
                                .body(Full::new(b));
                            Ok::<_, std::convert::Infallible>(resp.unwrap_or_default())
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service).await;
                });
            }
        });
        StaticOrigin { addr, counts }
    }

    /// Requests seen for one path-and-query.
    pub fn hits(&self, target: &str) -> u64 {
        self.counts.lock().map(|m| m.get(target).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Requests seen in all.
    pub fn total(&self) -> u64 {
        self.counts.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}
