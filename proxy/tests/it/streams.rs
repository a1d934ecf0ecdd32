//! Responses that must not wait: server-sent events reach the client as the origin sends them
//! (never compressed), a streamed body that is compressed is flushed chunk by chunk, and a
//! WebSocket upgrade tunnels both ways and is never cached.

use crate::common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GAP: Duration = Duration::from_millis(500);
const EVENTS: usize = 4;

/// An origin answering with a chunked body of [`EVENTS`] chunks sent [`GAP`] apart, each
/// chunk `data: event N\n\n`, with the given content type.
async fn streaming_origin(content_type: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for n in 0..EVENTS {
                    if n > 0 {
                        tokio::time::sleep(GAP).await;
                    }
                    let event = format!("data: event {n}\n\n");
                    if s.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

/// When each `event N` became readable by the client, measured from the request; the body is
/// decoded by `decode` from everything received so far (de-chunked).
async fn arrivals(addr: SocketAddr, accept_encoding: &str, decode: impl Fn(&[u8]) -> String) -> (String, Vec<Duration>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /events HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: {accept_encoding}\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    s.write_all(req.as_bytes()).await.unwrap();
    let (mut raw, mut seen, mut buf) = (Vec::new(), Vec::new(), [0u8; 4096]);
    let mut head = String::new();
    while seen.len() < EVENTS {
        let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let body = dechunk_partial(&raw[end + 4..]);
        let text = decode(&body);
        while seen.len() < EVENTS && text.contains(&format!("event {}", seen.len())) {
            seen.push(start.elapsed());
        }
    }
    (head, seen)
}

/// The data of the complete chunks so far.
fn dechunk_partial(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let Some(size) = std::str::from_utf8(&b[..nl]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok()) else { break };
        if size == 0 || b.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
    out
}

/// Event N is sent at N × GAP: it must be readable before event N + 1 is sent.
fn each_before_the_next(seen: &[Duration], what: &str) {
    assert_eq!(seen.len(), EVENTS, "{what}: all events arrived: {seen:?}");
    for (n, t) in seen.iter().enumerate() {
        let next_sent = GAP * (n as u32 + 1);
        assert!(*t < next_sent, "{what}: event {n} arrived at {t:?}, after event {} was sent ({next_sent:?}): {seen:?}", n + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_arrive_as_they_are_sent() {
    let o = streaming_origin("text/event-stream").await;
    let p = Portier::start(&format!("[upstreams.o]\naddresses = [\"{o}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n"));
    // Every browser sends Accept-Encoding; an event stream is never compressed.
    let (head, seen) = arrivals(p.public, "gzip, deflate, br, zstd", |b| String::from_utf8_lossy(b).into_owned()).await;
    assert!(!head.contains("content-encoding"), "{head}");
    each_before_the_next(&seen, "text/event-stream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_that_is_compressed_is_flushed_chunk_by_chunk() {
    let o = streaming_origin("text/plain").await;
    let p = Portier::start(&format!("[upstreams.o]\naddresses = [\"{o}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n"));
    let gunzip = |b: &[u8]| {
        use std::io::Write;
        let mut d = flate2::write::GzDecoder::new(Vec::new());
        let _ = d.write_all(b);
        let _ = d.flush();
        String::from_utf8_lossy(d.get_ref()).into_owned()
    };
    let (head, seen) = arrivals(p.public, "gzip", gunzip).await;
    assert!(head.contains("content-encoding: gzip"), "compressed: {head}");
    each_before_the_next(&seen, "gzip, chunked");
}

/// An origin accepting WebSocket upgrades (101) and echoing what follows; counts upgrades.
async fn websocket_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(AtomicUsize::new(0));
    let u = upgrades.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let u = u.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                if !req.contains("upgrade: websocket") {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
                    return;
                }
                u.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nCache-Control: max-age=600\r\n\r\n")
                    .await;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, upgrades)
}

/// Sends a WebSocket upgrade through Portier and returns the tunnel once its 101 is read.
async fn upgrade(public: SocketAddr) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(public).await.unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("101 in time").unwrap();
        assert!(n > 0, "closed before the 101");
        raw.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&raw).to_ascii_lowercase())
}

/// Writes `msg` into the tunnel and asserts it comes back whole.
async fn echo(s: &mut tokio::net::TcpStream, msg: &[u8], what: &str) {
    s.write_all(msg).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < msg.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("echo in time").unwrap();
        assert!(n > 0, "{what}: tunnel closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, msg, "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_tunnel_and_a_101_is_never_cached() {
    let (o, upgrades) = websocket_origin().await;
    let p = Portier::start(&format!("[upstreams.o]\naddresses = [\"{o}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n"));
    // Many rounds: whether the origin's 101 or the request's (empty) end of body reaches
    // Pingora first is a race, and one ordering used to tear the tunnel down (pingora#946).
    const ROUNDS: usize = 40;
    for round in 1..=ROUNDS {
        let (mut s, head) = upgrade(p.public).await;
        assert!(head.starts_with("http/1.1 101"), "round {round}: {head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        // Both ways through the tunnel, written the moment the 101 is read, as browsers do.
        for msg in [&b"ping"[..], b"second frame"] {
            echo(&mut s, msg, &format!("round {round}")).await;
        }
        assert_eq!(upgrades.load(Ordering::SeqCst), round, "every upgrade reaches the origin: a 101 is never stored");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_websocket_outlives_the_body_deadline_and_a_silent_socket_gets_no_408() {
    let (o, _) = websocket_origin().await;
    let p = Portier::start(&format!(
        "[limits]\nbody_timeout = \"1s\"\nmin_body_rate = \"0B\"\nhead_timeout = \"1s\"\n[upstreams.o]\naddresses = [\"{o}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n"
    ));
    let (mut s, head) = upgrade(p.public).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo(&mut s, b"hello", "before the pause").await;
    // A tunnel is not a request body: quiet longer than body_timeout, it stays open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    echo(&mut s, b"still here", "after 2.5 s of quiet").await;

    // A connection that never sends a byte is closed at the head deadline without an answer:
    // a client reusing a preconnected socket at that moment would take a 408 for its own.
    let mut silent = tokio::net::TcpStream::connect(p.public).await.unwrap();
    let mut buf = [0u8; 256];
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "no bytes for a silent socket: {:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(started.elapsed() < Duration::from_secs(5), "closed at the head deadline: {:?}", started.elapsed());
}
