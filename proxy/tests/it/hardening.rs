//! Hostile or unusual clients over real sockets: pipelined requests, oversized heads, slow
//! heads, too many connections or concurrent requests, oversized bodies.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::sync::{Arc, Mutex};
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

/// RFC 9110 §15.5.15 and RFC 6585 §5: a target or header section over the limits gets 414 or
/// 431, with the cache status and request id, and never reaches the origin; past Pingora's
/// own parser limit (256 fields) too.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_get_414_and_431() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let r = get(p.public, &format!("/{}", "a".repeat(9000))).await;
    assert_eq!((r.status, r.header("x-cache"), r.header("cache-status")), (414, "BYPASS", "portier; detail=too-large"), "{r:?}");
    assert!(r.text().contains(r.header("x-request-id")), "{r:?}");

    let big = "v".repeat(70 * 1024);
    assert_eq!(get_with(p.public, "/", &[("x-big", &big)]).await.status, 431);
    let quarter = "v".repeat(7 * 1024);
    let five: Vec<(&str, &str)> = ["x-a", "x-b", "x-c", "x-d", "x-e"].iter().map(|k| (*k, quarter.as_str())).collect();
    assert_eq!(get_with(p.public, "/", &five).await.status, 431, "35 KiB of fields, each under 8 KiB");
    for count in [150, 300] {
        let names: Vec<String> = (0..count).map(|i| format!("x-n{i}")).collect();
        let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let r = get_with(p.public, "/", &fields).await;
        assert_eq!(r.status, 431, "{count} fields: {r:?}");
    }
    assert!(o.seen().is_empty(), "nothing reached the origin: {:?}", o.seen().len());
    assert_eq!(get(p.public, "/fine").await.status, 200);
    let m = get(p.admin, "/metrics").await.text();
    assert_eq!(metric_value(&m, r#"limits_refused_total{limit="uri"}"#), Some(1.0), "{m}");
    assert_eq!(metric_value(&m, r#"limits_refused_total{limit="headers"}"#), Some(3.0), "the 300-field one is Pingora's");
}

/// Slowloris: a head sent a byte at a time is cut off at `limits.head_timeout` with a 408
/// and a close, however steadily the bytes come.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_byte_by_byte_is_cut_off_at_the_head_timeout() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", "[limits]\nhead_timeout = \"1s\"\n"));
    let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
    let started = std::time::Instant::now();
    let head = format!("GET / HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n\r\n", p.public, "s".repeat(100));
    let mut refused_after = None;
    for b in head.as_bytes() {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
            refused_after = Some(started.elapsed());
            break;
        }
    }
    let after = refused_after.expect("a 408 before the head was complete");
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(3), "{after:?}");
    assert!(o.seen().is_empty());
    // An ordinary request is unaffected.
    assert_eq!(get(p.public, "/").await.status, 200);
}

/// `limits.max_connections`: connections past the limit are answered 503 with
/// `Retry-After` and closed; a closed connection frees its place.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_get_503_with_retry_after() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", "[limits]\nmax_connections = 3\nretry_after = \"2s\"\n"));
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(p.public).await.unwrap());
    }
    let counted =
        eventually(Duration::from_secs(5), async || metric_value(&get(p.admin, "/metrics").await.text(), "connections_open") == Some(3.0))
            .await;
    assert!(counted, "three idle connections are counted");
    let r = get(p.public, "/").await;
    assert_eq!((r.status, r.header("retry-after")), (503, "2"), "{r:?}");
    assert!(r.header("connection").eq_ignore_ascii_case("close"));
    idle.pop();
    let freed = eventually(Duration::from_secs(5), async || get(p.public, "/").await.status == 200).await;
    assert!(freed, "a closed connection frees its place");
    let m = get(p.admin, "/metrics").await.text();
    // At least the one above; a retry racing the close may have been refused too.
    assert!(metric_value(&m, r#"limits_refused_total{limit="connections"}"#) >= Some(1.0), "{m}");
}

/// `limits.max_requests_per_client`: a client address with that many requests in flight
/// gets 503 with `Retry-After`; another address is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_past_its_requests_in_flight_gets_503() {
    let o = Scripted::start(|_, _| Reply::new(200, &[("cache-control", "no-store")], "slow").delay(Duration::from_millis(1500))).await;
    let p = Portier::start(&config_for(o.addr, "", "[limits]\nmax_requests_per_client = 2\n"));
    let addr = p.public;
    let slow: Vec<_> = (0..2).map(|i| tokio::spawn(async move { get(addr, &format!("/slow{i}")).await.status })).collect();
    let busy = eventually(Duration::from_secs(5), async || o.seen().len() == 2).await;
    assert!(busy, "two requests in flight");
    let r = get(p.public, "/third").await;
    assert_eq!((r.status, r.header("retry-after"), r.header("cache-status")), (503, "1", "portier; detail=busy"), "{r:?}");
    let other = request_from("127.0.0.2".parse().unwrap(), p.public, "GET", "/other", &[], b"").await.unwrap();
    assert_eq!(other.status, 200, "another address is not limited");
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(get(p.public, "/after").await.status, 200, "the places were given back");
    assert_eq!(o.count("/third"), 0);
}

/// A body over the route's `max_body` is refused with 413: at once when `Content-Length`
/// says so (the origin never sees it), and when a chunked body grows past it.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_route_limit_gets_413() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "max_body = \"1KiB\"", ""));
    let r = request(p.public, "POST", "/upload", &[], &[b'x'; 2000]).await.unwrap();
    assert_eq!((r.status, r.header("cache-status")), (413, "portier; detail=too-large"), "{r:?}");
    assert_eq!(o.count("/upload"), 0);
    let r = request(p.public, "POST", "/small", &[], &[b'x'; 1000]).await.unwrap();
    assert_eq!(r.status, 200);

    let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
    let chunk = "x".repeat(600);
    let head = format!("POST /chunked HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n", p.public);
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        let _ = s.write_all(format!("258\r\n{chunk}\r\n").as_bytes()).await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// xorshift64*: a fixed seed makes every run send the same requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutated request: a well-formed base (GET, HEAD, POST with a length or chunks,
/// pipelined pairs, absolute-form) with bytes flipped, inserted, deleted or lines repeated.
fn mutated(rng: &mut Rng, host: std::net::SocketAddr) -> Vec<u8> {
    let bases = [
        format!("GET /a?q=1 HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip\r\n\r\n"),
        format!("HEAD /b HTTP/1.1\r\nHost: {host}\r\nIf-None-Match: \"x\"\r\n\r\n"),
        format!("POST /c HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"),
        format!("POST /d HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        format!("GET /e HTTP/1.1\r\nHost: {host}\r\n\r\nGET /f HTTP/1.1\r\nHost: {host}\r\nRange: bytes=0-1\r\n\r\n"),
        format!("GET http://{host}/g HTTP/1.1\r\nHost: {host}\r\nCache-Control: max-age=0\r\n\r\n"),
        format!("GET /h HTTP/1.0\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"),
    ];
    let mut b = bases[rng.below(bases.len())].clone().into_bytes();
    const SPICE: &[&[u8]] =
        &[b" ", b"\r", b"\n", b":", b"\0", b"%", b"/", b"..", b"\t", b"\xff", b",", b"\"", b"0", b"-1", b"99999999999999999999"];
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1).min(b.len());
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = rng.next() as u8;
            }
            1 => b.splice(at..at, SPICE[rng.below(SPICE.len())].iter().copied()).for_each(drop),
            2 => {
                let end = (at + 1 + rng.below(8)).min(b.len());
                b.drain(at..end);
            }
            3 => {
                // Repeat one header line (duplicate Host, Content-Length, ...).
                let lines: Vec<Vec<u8>> = b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
                let mut line = lines.get(1 + rng.below(lines.len().saturating_sub(1))).cloned().unwrap_or_default();
                line.push(b'\n');
                let pos = b.iter().position(|c| *c == b'\n').map_or(0, |i| i + 1);
                b.splice(pos..pos, line).for_each(drop);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// A bounded randomized run against a live Portier: mutated request lines, fields, chunking
/// and pipelining, sent in pieces, with early closes. Every connection is answered or closed
/// (no hang), nothing answers 500, Portier keeps serving, and memory comes back to its level.
#[tokio::test(flavor = "multi_thread")]
async fn mutated_requests_crash_nothing_hang_nothing_and_leak_nothing() {
    let o = Scripted::start(|req, _| Reply::new(200, &[("cache-control", "public, max-age=60")], req.target.clone())).await;
    let p = Portier::start(&config_for(o.addr, "", "[limits]\nhead_timeout = \"1s\"\n[timeouts]\nread = \"2s\"\n"));
    for i in 0..200 {
        assert_eq!(get(p.public, &format!("/warm{}", i % 20)).await.status, 200);
    }
    const CASES: usize = 1500;
    let started = std::time::Instant::now();
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let hangs = Arc::new(Mutex::new(Vec::new()));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut rss = vec![p.memory_kib("VmRSS")];
    for _round in 0..3 {
        let cases: Vec<(Vec<u8>, usize, bool)> =
            (0..CASES).map(|_| (mutated(&mut rng, p.public), rng.below(3), rng.below(8) == 0)).collect();
        let addr = p.public;
        for batch in cases.chunks(25) {
            let mut tasks = Vec::new();
            for (bytes, split, drop_early) in batch.iter().cloned() {
                let (statuses, hangs) = (statuses.clone(), hangs.clone());
                tasks.push(tokio::spawn(async move {
                    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
                    let cut = if split > 0 && bytes.len() > 1 { bytes.len() / (split + 1) } else { bytes.len() };
                    let _ = s.write_all(&bytes[..cut]).await;
                    if drop_early {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let _ = s.write_all(&bytes[cut..]).await;
                    let _ = s.shutdown().await;
                    let mut out = Vec::new();
                    match tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut out)).await {
                        Err(_) => hangs.lock().unwrap().push(String::from_utf8_lossy(&bytes).to_string()),
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&out);
                            let key =
                                if text.starts_with("HTTP/1.") { text.get(9..12).unwrap_or("?").to_string() } else { "closed".into() };
                            *statuses.lock().unwrap().entry(key).or_default() += 1;
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss.push(p.memory_kib("VmRSS"));
    }
    let statuses = statuses.lock().unwrap().clone();
    eprintln!("{} mutated requests in {:?}: {statuses:?}", 3 * CASES, started.elapsed());
    assert!(hangs.lock().unwrap().is_empty(), "connections neither answered nor closed: {:?}", hangs.lock().unwrap());
    assert!(!statuses.contains_key("500"), "{statuses:?}");
    assert!(statuses.get("200").copied().unwrap_or(0) > 50 && statuses.get("400").copied().unwrap_or(0) > 100, "{statuses:?}");
    assert_eq!(get(p.public, "/after").await.status, 200, "still serving");
    assert!(p.stdout_lines().iter().all(|l| !l.contains("panicked")), "no panic logged");
    // The first round grows the allocator's per-thread arenas; after it, another round of such
    // requests must not hold more memory (a leak grows with every round).
    eprintln!("resident memory (KiB) before and after each round of {CASES}: {rss:?}");
    assert!(rss[3] < rss[1] + 4 * 1024, "memory grew round after round: {rss:?}");
}

/// RFC 9112 §6.1 and RFC 9110 §15.2: an HTTP/1.0 client never gets chunked framing (a body
/// the origin delimits by closing reaches it the same way) nor an interim 1xx response.
#[tokio::test(flavor = "multi_thread")]
async fn http10_clients_get_no_chunked_body_and_no_interim_response() {
    let origin = raw_origin(|req| {
        let hints: &[u8] =
            if req.starts_with("GET /hints") { b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n" } else { b"" };
        [hints, b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nuntil the end"].concat()
    })
    .await;
    let p = Portier::start(&config_for(origin, "", ""));
    for path in ["/close-delimited", "/hints"] {
        let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", p.public).as_bytes()).await.unwrap();
        let text = read_all(&mut s, Duration::from_secs(5)).await;
        let lower = text.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 200"), "{path}: no interim response first: {text}");
        // The interim response's status line, not any "103" (a random request id may hold one).
        assert!(!lower.contains("transfer-encoding") && !lower.contains("http/1.1 103"), "{path}: {text}");
        assert!(text.ends_with("\r\n\r\nuntil the end"), "{path}: the body as sent: {text}");
    }
}

/// Lingering close: a POST whose origin cannot be reached gets its 502 even while the
/// client is still sending the body (closing with unread bytes would reset the connection
/// and the client would lose the answer).
#[tokio::test(flavor = "multi_thread")]
async fn an_error_answered_before_the_body_was_read_still_reaches_the_client() {
    let p = Portier::start(&config_for(closed_port(), "", "[timeouts]\nconnect = \"200ms\"\n"));
    let mut got = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..10 {
        let s = tokio::net::TcpStream::connect(p.public).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let body = vec![b'x'; 4 << 20];
        let head = format!("POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", p.public, body.len());
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(head.as_bytes()).await;
            for chunk in body.chunks(64 * 1024) {
                if wr.write_all(chunk).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            wr
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let key = match read {
            Ok(Ok(_)) if text.starts_with("HTTP/1.1 502") => "502".to_string(),
            Ok(Err(e)) if out.is_empty() => format!("error: {:?}", e.kind()),
            other => format!("{other:?}: {}", text.lines().next().unwrap_or("")),
        };
        *got.entry(key).or_default() += 1;
        let _ = writer.await;
    }
    assert_eq!(got, std::collections::BTreeMap::from([("502".to_string(), 10)]), "every client read its 502");
}
