//! The admin listener: liveness, readiness (and, as they land, metrics and the cache API).
//! Never served on the public port.

use crate::gateway::State;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

pub struct Admin {
    pub state: Arc<State>,
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    let bytes = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("cache-control", "no-store")
        .body(bytes)
        .unwrap_or_default()
}

impl Admin {
    /// 200 only when every pool has at least one healthy address; the body says which are down.
    fn readiness(&self) -> Response<Vec<u8>> {
        let mut pools = serde_json::Map::new();
        let mut ready = true;
        for pool in self.state.upstreams.pools() {
            let addrs: Vec<_> = pool
                .backends
                .iter()
                .map(|b| json!({"address": b.addr.to_string(), "healthy": b.healthy()}))
                .collect();
            let ok = pool.any_healthy();
            ready &= ok;
            pools.insert(pool.name.clone(), json!({"ready": ok, "addresses": addrs}));
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &json!({"ready": ready, "pools": pools}))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            ("GET" | "HEAD", "/readyz") => self.readiness(),
            (_, "/healthz" | "/readyz") => {
                json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "use GET"}))
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not found", "endpoints": ["GET /healthz", "GET /readyz"]}),
            ),
        }
    }
}
