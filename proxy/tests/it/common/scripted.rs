//! A scripted origin over raw TCP: each test decides status, headers, body, delay, and can
//! cut a body short — things a well-behaved HTTP server library will not do. It records
//! every request it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Announce the full Content-Length but close after this many body bytes.
    pub cut_after: Option<usize>,
    /// Send the body chunked (no Content-Length).
    pub chunked: bool,
}

impl Reply {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.into(),
            delay: Duration::ZERO,
            cut_after: None,
            chunked: false,
        }
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Scripted {
    /// `handler(request, n)` where `n` counts requests to the same target (1 for the first).
    pub async fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Scripted {
        Self::start_at("127.0.0.1:0".parse().unwrap(), handler).await
    }

    /// [`Self::start`] on a chosen address (an origin restarted where it was).
    pub async fn start_at(addr: SocketAddr, handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let s2 = seen.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, handler) = (s2.clone(), handler.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("").to_string();
                    let target = first.next().unwrap_or("").to_string();
                    let headers: Vec<(String, String)> =
                        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
                    let req = Seen { method, target: target.clone(), headers };
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(req.clone());
                        s.iter().filter(|r| r.target == target).count()
                    };
                    let reply = handler(&req, n);
                    tokio::time::sleep(reply.delay).await;
                    let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    let no_body = req.method == "HEAD" || reply.status == 304 || reply.status == 204;
                    if reply.chunked {
                        out.push_str("Transfer-Encoding: chunked\r\n");
                    } else if !no_body {
                        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
                    }
                    out.push_str("Connection: close\r\n\r\n");
                    let mut bytes = out.into_bytes();
                    if !no_body {
                        let body = match reply.cut_after {
                            Some(n) => &reply.body[..n.min(reply.body.len())],
                            None => &reply.body[..],
                        };
                        if reply.chunked {
                            for c in body.chunks(4096) {
                                bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                                bytes.extend_from_slice(c);
                                bytes.extend_from_slice(b"\r\n");
                            }
                            if reply.cut_after.is_none() {
                                bytes.extend_from_slice(b"0\r\n\r\n");
                            }
                        } else {
                            bytes.extend_from_slice(body);
                        }
                    }
                    let _ = sock.write_all(&bytes).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Scripted { addr, seen, accept: Arc::new(Mutex::new(Some(accept))) }
    }

    /// Stops listening: new connections are refused from now on.
    pub async fn stop(&self) {
        let handle = self.accept.lock().unwrap().take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests received for this exact target.
    pub fn count(&self, target: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|r| r.target == target).count()
    }

    pub fn last(&self, target: &str) -> Option<Seen> {
        self.seen.lock().unwrap().iter().rev().find(|r| r.target == target).cloned()
    }
}

/// Config routing everything to `origin`, with extra TOML for the route and top level.
pub fn config_for(origin: SocketAddr, route_extra: &str, top_extra: &str) -> String {
    format!("{top_extra}\n[upstreams.o]\naddresses = [\"{origin}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n{route_extra}\n")
}
