//! Hostile or unusual clients over real sockets: pipelined requests, oversized heads, slow
//! heads, too many connections or concurrent requests, oversized bodies.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_origin() -> Scripted {
    Scripted::start(|req, n| Reply::new(200, &[("cache-control", "no-store")], format!("{} #{n}", req.target))).await
}

/// Reads what the server sends until it closes or `limit` passes.
async fn read_all(s: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// RFC 9112 §9.3.2: requests pipelined in one segment are all answered, in order.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
    let host = p.public;
    let batch = format!(
        "GET /one HTTP/1.1\r\nHost: {host}\r\n\r\nPOST /two HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(batch.as_bytes()).await.unwrap();
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let (one, two, three) = (text.find("/one #").unwrap(), text.find("/two #").unwrap(), text.find("/three #").unwrap());
    assert!(one < two && two < three, "{text}");
}
