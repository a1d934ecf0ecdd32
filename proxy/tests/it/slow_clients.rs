//! Silent and slow clients on every listener and protocol: a connection that sends nothing,
//! a TLS connection that never says ClientHello, an HTTP/2 connection that stops after the
//! preface or in the middle of a HEADERS frame, an idle HTTP/2 connection, and a request body
//! trickled a byte at a time are each closed by a deadline, and HTTP/2 connections count
//! against `limits.max_connections` like HTTP/1 ones. HTTP/2 frames are written by hand here:
//! a client library will not leave a HEADERS frame unfinished.

use crate::common::client::{Front, Proto};
use crate::common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal field without indexing, its name from the static table (`index` < 15).
fn literal(index: u8, value: &str) -> Vec<u8> {
    let mut b = vec![index, value.len() as u8];
    b.extend_from_slice(value.as_bytes());
    b
}

/// A request's header block: `:method` (GET/POST), `:scheme https`, `:path`, `:authority`,
/// and `content-length` when given.
fn header_block(post: bool, path: &str, authority: &str, content_length: Option<usize>) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x87];
    b.extend(literal(4, path));
    b.extend(literal(1, authority));
    if let Some(n) = content_length {
        // content-length is static entry 28: a 4-bit prefix of 15, then 13.
        b.extend([0x0f, 0x0d, n.to_string().len() as u8]);
        b.extend_from_slice(n.to_string().as_bytes());
    }
    b
}

/// The client's opening: preface, empty SETTINGS, and an ACK of the server's.
fn opening() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(frame(4, 0, 0, &[]));
    b.extend(frame(4, 1, 0, &[]));
    b
}

/// Reads until the peer closes (EOF or error); how long that took, or None past `limit`.
async fn closed_within(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn config(origin: SocketAddr, extra: &str) -> String {
    format!(
        "[limits]\nhead_timeout = \"1s\"\nhandshake_timeout = \"1s\"\nbody_timeout = \"1s\"\nmin_body_rate = \"100B\"\n{extra}\
         [timeouts]\nclient_idle = \"2s\"\n[upstreams.o]\naddresses = [\"{origin}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n"
    )
}

fn in_window(took: Option<Duration>, low: Duration, high: Duration, what: &str) {
    let took = took.unwrap_or_else(|| panic!("{what}: still open after {high:?}"));
    assert!(took >= low && took < high, "{what}: closed after {took:?}, expected between {low:?} and {high:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_stalled_connections_are_closed_on_every_listener() {
    let o = crate::common::scripted::Scripted::start(|_, _| crate::common::scripted::Reply::new(200, &[], "ok")).await;
    let f = Front::start(&config(o.addr, ""));
    let (low, high) = (Duration::from_millis(800), Duration::from_secs(4));
    let tls = f.addr(Proto::H2Tls);

    let mut plain = tokio::net::TcpStream::connect(f.addr(Proto::H1)).await.unwrap();
    in_window(closed_within(&mut plain, high).await, low, high, "plain port, zero bytes (head_timeout from accept)");
    let mut hello_never = tokio::net::TcpStream::connect(tls).await.unwrap();
    in_window(closed_within(&mut hello_never, high).await, low, high, "TLS port, no ClientHello (handshake_timeout)");
    let mut h1_tls = f.cert.connect(tls, b"http/1.1").await.unwrap();
    in_window(closed_within(&mut h1_tls, high).await, low, high, "HTTP/1.1 over TLS, no request");

    let mut no_preface = f.cert.connect(tls, b"h2").await.unwrap();
    in_window(closed_within(&mut no_preface, high).await, low, high, "h2 without its preface");
    let mut preface_only = f.cert.connect(tls, b"h2").await.unwrap();
    preface_only.write_all(&opening()).await.unwrap();
    in_window(closed_within(&mut preface_only, high).await, low, high, "h2 preface and SETTINGS, no request");
    let mut unfinished = f.cert.connect(tls, b"h2").await.unwrap();
    let mut bytes = opening();
    // HEADERS with END_STREAM but not END_HEADERS: a CONTINUATION that never comes.
    bytes.extend(frame(1, 0x1, 1, &header_block(false, "/x", &f.authority(Proto::H2Tls), None)));
    unfinished.write_all(&bytes).await.unwrap();
    in_window(closed_within(&mut unfinished, high).await, low, high, "h2 HEADERS never finished");

    // After a complete exchange, an h2 connection with no stream open is idle: client_idle.
    let mut idle = f.cert.connect(tls, b"h2").await.unwrap();
    let mut bytes = opening();
    bytes.extend(frame(1, 0x5, 1, &header_block(false, "/idle", &f.authority(Proto::H2Tls), None)));
    idle.write_all(&bytes).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || o.count("/idle") == 1).await, "the request was served");
    in_window(closed_within(&mut idle, Duration::from_secs(6)).await, Duration::from_millis(1500), Duration::from_secs(6), "idle h2");
    assert_eq!(f.get(Proto::H2Tls, "/after", &[]).await.status, 200, "ordinary clients are unaffected");
}

/// An origin that answers only once the whole declared body arrived, counting those answers.
async fn body_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let complete = Arc::new(AtomicUsize::new(0));
    let c = complete.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize =
                            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            c.fetch_add(1, Ordering::SeqCst);
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                            return;
                        }
                    }
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    (addr, complete)
}

/// A body trickled a byte every 200 ms (5 B/s, under `min_body_rate` = 100 B/s) fails at
/// about `body_timeout` on HTTP/1.1, HTTP/1.1 over TLS and HTTP/2; a body at a real rate
/// passes; the origin never gets the trickled one whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_request_body_is_cut_off_on_every_protocol() {
    let (origin, complete) = body_origin().await;
    let f = Front::start(&config(origin, ""));
    let (low, high) = (Duration::from_millis(800), Duration::from_secs(5));
    let head = |proto: Proto| format!("POST /up HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n", f.authority(proto));

    async fn trickle(s: &mut (impl AsyncRead + AsyncWrite + Unpin), first: &[u8], each: &[u8], high: Duration) -> Option<Duration> {
        let start = Instant::now();
        s.write_all(first).await.ok()?;
        let mut buf = [0u8; 4096];
        while start.elapsed() < high {
            if s.write_all(each).await.is_err() {
                return Some(start.elapsed());
            }
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                // An answer before the body was whole: the request failed; the connection must close.
                Ok(Ok(_)) => return closed_within(s, high.saturating_sub(start.elapsed())).await.map(|_| start.elapsed()),
                Err(_) => {}
            }
        }
        None
    }

    let mut plain = tokio::net::TcpStream::connect(f.addr(Proto::H1)).await.unwrap();
    in_window(trickle(&mut plain, head(Proto::H1).as_bytes(), b"x", high).await, low, high, "HTTP/1.1 body trickle");
    let mut tls = f.cert.connect(f.addr(Proto::H1Tls), b"http/1.1").await.unwrap();
    in_window(trickle(&mut tls, head(Proto::H1Tls).as_bytes(), b"x", high).await, low, high, "HTTP/1.1 over TLS body trickle");

    let mut h2 = f.cert.connect(f.addr(Proto::H2Tls), b"h2").await.unwrap();
    let mut first = opening();
    first.extend(frame(1, 0x4, 1, &header_block(true, "/up", &f.authority(Proto::H2Tls), Some(100))));
    let took = trickle(&mut h2, &first, &frame(0, 0, 1, b"x"), high).await;
    // On HTTP/2 the stream is reset or answered; either way no body reaches the origin whole.
    if let Some(t) = took {
        assert!(t >= low, "h2 body trickle failed after {t:?}, before body_timeout");
    }
    assert_eq!(complete.load(Ordering::SeqCst), 0, "no trickled body reached the origin whole");

    for proto in Proto::ALL {
        let r = f.send(proto, "POST", "/up", &[], &[b'y'; 100]).await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{proto:?}: a body sent at once passes");
    }
    assert_eq!(complete.load(Ordering::SeqCst), Proto::ALL.len());
}

/// Twenty HTTP/2 connections holding nothing but a preface used to keep
/// `limits.max_connections = 20` full for as long as they liked. They count against it (a
/// new HTTP/1 client is refused while they are open) and are closed at the head deadline,
/// after which clients are served again.
#[tokio::test(flavor = "multi_thread")]
async fn held_http2_connections_count_against_the_limit_and_are_released() {
    let o = crate::common::scripted::Scripted::start(|_, _| crate::common::scripted::Reply::new(200, &[], "ok")).await;
    let f = Front::start(&config(o.addr, "max_connections = 4\n"));
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = f.cert.connect(f.addr(Proto::H2Tls), b"h2").await.unwrap();
        s.write_all(&opening()).await.unwrap();
        held.push(s);
    }
    let counted = eventually(Duration::from_secs(3), async || {
        metric_value(&get(f.portier.admin, "/metrics").await.text(), "connections_open") == Some(4.0)
    })
    .await;
    assert!(counted, "four h2 connections are counted");
    let r = f.get(Proto::H1, "/x", &[]).await;
    assert_eq!(r.status, 503, "the gate is full: {r:?}");
    for s in &mut held {
        in_window(closed_within(s, Duration::from_secs(4)).await, Duration::ZERO, Duration::from_secs(4), "held h2 connection");
    }
    let served = eventually(Duration::from_secs(3), async || f.get(Proto::H1, "/x", &[]).await.status == 200).await;
    assert!(served, "the places are free again");
}
