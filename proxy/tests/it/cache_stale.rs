//! Stale content and coalescing: stale-while-revalidate answers at once and refreshes with
//! one background request; stale-if-error covers 503s and a dead origin; concurrent cold
//! misses make one origin request.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn swr_serves_stale_at_once_and_refreshes_once_for_twenty_clients() {
    let o = Scripted::start(|req, n| {
        let h = [("cache-control", "max-age=1, stale-while-revalidate=30"), ("etag", "\"v1\"")];
        if req.header("if-none-match").is_some() {
            // A slow refresh: clients must not wait for it.
            return Reply::new(304, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], "").delay(Duration::from_millis(1500));
        }
        Reply::new(200, &h, format!("n={n}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get(p.public, "/s").await.header("x-cache"), "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let start = Instant::now();
    let clients: Vec<_> = (0..20).map(|_| tokio::spawn(async move { get(p.public, "/s").await })).collect();
    let mut answers = Vec::new();
    for c in clients {
        answers.push(c.await.unwrap());
    }
    let took = start.elapsed();
    for r in &answers {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), "STALE", "{r:?}");
        assert!(r.header("cache-status").ends_with("detail=stale-while-revalidate"), "{r:?}");
        assert_eq!(r.text(), "n=1");
        let age: u64 = r.header("age").parse().unwrap();
        assert!(age >= 2);
    }
    assert!(took < Duration::from_millis(1200), "stale answers did not wait for the 1.5 s refresh: {took:?}");
    // Until the refresh lands, further requests are STALE too (and start no new refresh).
    let mut extra_stale = 0;
    let refreshed = eventually(Duration::from_secs(3), async || {
        let r = get(p.public, "/s").await;
        if r.header("x-cache") == "STALE" {
            extra_stale += 1;
        }
        r.header("x-cache") == "HIT"
    })
    .await;
    assert!(refreshed, "the 304 refreshed the entry");
    let conditional: Vec<_> = o.seen().into_iter().filter(|r| r.target == "/s" && r.header("if-none-match").is_some()).collect();
    assert_eq!(conditional.len(), 1, "exactly one conditional background request");
    assert_eq!(o.count("/s"), 2);
    let metrics = get(p.admin, "/metrics").await.text();
    assert!(metrics.contains("cache_background_refreshes_total{outcome=\"REVALIDATED\"} 1"), "{metrics}");
    let stale_line = format!("cache_requests_total{{cache_status=\"STALE\"}} {}", 20 + extra_stale);
    assert!(metrics.contains(&stale_line), "background refresh is not a client request: want {stale_line} in {metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_on_503_within_its_window_only() {
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let o = Scripted::start(move |_, n| {
        if f.load(Ordering::SeqCst) {
            return Reply::new(503, &[("content-type", "text/plain")], "down");
        }
        Reply::new(200, &[("cache-control", "max-age=1, stale-if-error=60")], format!("n={n}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get(p.public, "/e").await.header("x-cache"), "MISS");
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(p.public, "/e").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-cache"), "STALE");
    assert!(r.header("cache-status").ends_with("detail=stale-if-error"), "{r:?}");
    assert_eq!(r.text(), "n=1");
    assert_eq!(o.count("/e"), 2, "the origin was asked and failed");

    // Past the window: the error goes through.
    let short = Scripted::start(|_, n| {
        if n > 1 {
            return Reply::new(503, &[], "down");
        }
        Reply::new(200, &[("cache-control", "max-age=1")], "once")
    })
    .await;
    let p2 = Portier::start(&config_for(short.addr, "", "[cache]\nstale_if_error = \"0s\"\n"));
    get(p2.public, "/x").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(p2.public, "/x").await.status, 503, "no stale-if-error anywhere: the 503 passes");
}

/// RFC 9111 §4.2.4: with the origin gone, a stored response is served stale by default
/// (cache.stale_if_error, 1h), unless it forbids it (must-revalidate, s-maxage, ...).
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_origin_gets_stale_copies_by_default_unless_the_response_forbids_it() {
    let o = Scripted::start(|req, n| {
        let cc = if req.target == "/strict" {
            "max-age=1, must-revalidate"
        } else if req.target == "/shared" {
            "max-age=1, s-maxage=1"
        } else {
            "max-age=1"
        };
        Reply::new(200, &[("cache-control", cc)], format!("{} #{n}", req.target))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    for path in ["/plain", "/strict", "/shared"] {
        assert_eq!(get(p.public, path).await.header("x-cache"), "MISS");
    }
    o.stop().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(p.public, "/plain").await;
    assert_eq!((r.status, r.header("x-cache"), r.text()), (200, "STALE", "/plain #1".to_string()), "{r:?}");
    assert!(r.header("cache-status").ends_with("detail=stale-if-error"), "{r:?}");
    for path in ["/strict", "/shared"] {
        let r = get(p.public, path).await;
        assert_eq!(r.status, 502, "{path} forbids serving stale: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_when_the_origin_cannot_be_reached() {
    let o = Scripted::start(|_, n| Reply::new(200, &[("cache-control", "max-age=1")], format!("n={n}"))).await;
    // The origin gives no stale-if-error; the route's override does.
    let p = Portier::start(&config_for(o.addr, "stale_if_error = \"60s\"", ""));
    assert_eq!(get(p.public, "/d").await.header("x-cache"), "MISS");
    o.stop().await;
    assert!(tokio::net::TcpStream::connect(o.addr).await.is_err(), "origin is down");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(p.public, "/d").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-cache"), "STALE");
    assert!(r.header("cache-status").ends_with("detail=stale-if-error"), "{r:?}");
    assert_eq!(r.text(), "n=1");
    // A URL never stored has nothing to fall back on.
    assert_eq!(get(p.public, "/never").await.status, 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_cold_requests_make_one_origin_request() {
    let origin_time = Duration::from_millis(300);
    let o = Scripted::start(move |_, n| Reply::new(200, &[("cache-control", "max-age=60")], format!("n={n}")).delay(origin_time)).await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    // Warm the connection path (process, pools) on another URL.
    get(p.public, "/warm").await;
    let start = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let r = get(p.public, "/cold").await;
                (r, start.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut miss_at = Duration::ZERO;
    let mut statuses = std::collections::HashMap::new();
    for c in clients {
        let (r, at) = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "n=1");
        *statuses.entry(r.header("x-cache").to_string()).or_insert(0) += 1;
        slowest = slowest.max(at);
        if r.header("x-cache") == "MISS" {
            miss_at = at;
        }
    }
    assert_eq!(o.count("/cold"), 1, "one origin request for 50 clients");
    assert_eq!(statuses.get("MISS"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("HIT"), Some(&49), "coalesced waiters say HIT: {statuses:?}");
    println!("slowest of 50 coalesced clients: {slowest:?}, the filling request: {miss_at:?} (origin takes {origin_time:?})");
    // Waiters are woken by the fill itself, not a polling timer: the last of them is answered
    // within 50 ms of the request that filled the entry. (The absolute figure depends on how
    // loaded the machine is; it is printed, and bounded loosely so a timer would still show.)
    assert!(slowest.saturating_sub(miss_at) <= Duration::from_millis(50), "waiters {slowest:?} vs fill {miss_at:?}");
    assert!(slowest <= origin_time + Duration::from_millis(250), "{slowest:?}");
    let m = get(p.admin, "/metrics").await.text();
    assert!(m.contains("cache_coalesced_total 49"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uncacheable_url_is_remembered_and_not_queued_again() {
    let o =
        Scripted::start(|_, n| Reply::new(200, &[("cache-control", "no-store")], format!("n={n}")).delay(Duration::from_millis(300))).await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let wave = |n: usize| async move {
        let start = Instant::now();
        let hs: Vec<_> = (0..n).map(|_| tokio::spawn(async move { get(p.public, "/u").await })).collect();
        for h in hs {
            let r = h.await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-cache"), "BYPASS");
        }
        start.elapsed()
    };
    let first = wave(10).await;
    let second = wave(10).await;
    assert_eq!(o.count("/u"), 20, "no-store: every request reaches the origin");
    println!("uncacheable URL, 10 concurrent: first wave {first:?}, second wave {second:?}");
    // First wave: the lock holder's answer, then the waiters released to the origin (two origin
    // times). Second wave: no lock, all in parallel (one origin time).
    assert!(second < first.mul_f64(0.75), "second wave went straight to the origin in parallel, no lock wait: {second:?} vs {first:?}");
}

/// Bug: a client's `no-store` (and an `Authorization` request) reached Pingora's predictor as
/// an uncacheable reason, so the URL was bypassed for everyone after that.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_directive_never_changes_what_other_clients_get() {
    let o = Scripted::start(|req, n| {
        Reply::new(200, &[("cache-control", "max-age=60")], format!("{} #{n}", req.target))
            .delay(Duration::from_millis(if req.target == "/slow" { 300 } else { 0 }))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    for (path, h) in [("/ns", ("Cache-Control", "no-store")), ("/auth", ("Authorization", "Bearer x"))] {
        let r = get_with(p.public, path, &[h]).await;
        assert_eq!(r.header("x-cache"), "BYPASS", "{path}");
        assert_eq!(get(p.public, path).await.header("x-cache"), "MISS", "{path}: the next client stores it");
        assert_eq!(get(p.public, path).await.header("x-cache"), "HIT", "{path}");
    }
    // After a no-store request, concurrent plain clients are still coalesced into one fill
    // (the predictor would have let them all skip the cache lock).
    assert_eq!(get_with(p.public, "/slow", &[("Cache-Control", "no-store")]).await.header("x-cache"), "BYPASS");
    let public = p.public;
    let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(async move { get(public, "/slow").await })).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(o.count("/slow"), 2, "the no-store request and one fill for the four others");
    assert_eq!(get(p.public, "/slow").await.header("x-cache"), "HIT");
}

/// stale-if-error holds for every client while the origin is down, not only for the one
/// whose request failed: concurrent requests used to queue on the cache lock behind each
/// failed revalidation until Pingora gave up on them with a 502 (125 of 320 here).
#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_holds_for_concurrent_clients_while_the_origin_is_down() {
    use crate::common::scripted::{Reply, Scripted};
    let origin = Scripted::start(|_, _| Reply::new(200, &[("cache-control", "max-age=1")], "ok")).await;
    let cfg = format!(
        "[upstreams.o]\naddresses = [\"{}\"]\nhealth_check = {{ path = \"/health\", interval = \"1s\", timeout = \"500ms\" }}\n[[routes]]\npath = \"/*\"\npool = \"o\"\n",
        origin.addr
    );
    let p = Portier::start(&cfg);
    assert_eq!(get(p.public, "/cached").await.status, 200);
    origin.stop().await;
    let addr = p.public;
    let mut seen = std::collections::BTreeMap::<(u16, String), usize>::new();
    for _ in 0..30 {
        let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(async move { get(addr, "/cached").await })).collect();
        for t in tasks {
            let r = t.await.unwrap();
            *seen.entry((r.status, r.header("x-cache").to_string())).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.keys().all(|(status, _)| *status == 200), "{seen:?}");
    assert!(seen.get(&(200, "STALE".to_string())).copied().unwrap_or(0) > 100, "{seen:?}");
}

/// Clients coalesced on one fill all get an answer, promptly, when the origin fails it:
/// by hanging up, or by not answering within the read timeout. Each waiter used to become
/// the next writer and wait for the origin again: the last of ten got its 504 after four
/// read timeouts, and the origin saw ten requests.
#[tokio::test(flavor = "multi_thread")]
async fn coalesced_clients_of_a_failed_fill_all_get_an_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).starts_with("GET /silent") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let _ = s.shutdown().await; // /hangup: read the request, answer nothing
            });
        }
    });
    let p = Portier::start(&config_for(origin, "", "[timeouts]\nread = \"1s\"\n"));
    for (path, want) in [("/hangup", 502), ("/silent", 504)] {
        let started = std::time::Instant::now();
        let addr = p.public;
        let tasks: Vec<_> = (0..10).map(|_| tokio::spawn(async move { get(addr, path).await.status })).collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        let took = started.elapsed();
        eprintln!(
            "{path}: 10 coalesced clients answered {statuses:?} in {took:?}; origin connections so far {}",
            requests.load(std::sync::atomic::Ordering::SeqCst)
        );
        assert!(statuses.iter().all(|s| *s == want), "{path}: {statuses:?}");
        // One read timeout (1 s) for the group, two when a client arrives late on a loaded
        // machine; not one per client in turn (four, before: Pingora's lock retries).
        assert!(took < Duration::from_millis(2600), "{path}: the last answer took {took:?}");
    }
    let asked = requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked <= 6, "the waiters did not each ask the origin again: {asked} origin connections for 20 clients (20 before)");
}
