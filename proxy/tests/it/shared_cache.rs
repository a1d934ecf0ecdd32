//! Replicas sharing one cache through a real Redis (Debian `redis-server`, started here on a
//! free port): one origin request per object across replicas, purges everywhere, Redis
//! outages without a failed request, warm restarts.

use crate::common::redis::Redis;
use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RULE: &str = "[[invalidation]]\nmethod = \"POST\"\npath = \"/api/sync\"\nprefixes = [\"/api/stats/\"]\nmatch_param = \"username\"\n";

/// Every path answers `v<n>` (its n-th origin request), cacheable for a minute.
async fn versioned_origin(delay: Duration) -> Scripted {
    Scripted::start(move |req, n| {
        if req.method == "POST" {
            return Reply::new(200, &[("Content-Type", "text/plain")], "synced");
        }
        Reply::new(200, &[("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")], format!("v{n} {}", req.target)).delay(delay)
    })
    .await
}

/// Replicas behind one load balancer see the same `Host`, so they share keys.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> Resp {
    get_with(addr, path, &[("Host", "app.test")]).await
}

/// A replica whose Redis calls may take up to 2 s: these tests are about what replicas share,
/// and on a loaded two-core machine (the whole suite at once) a call sometimes took longer
/// than the 100 ms default, the request then went on without Redis and a second replica
/// filled. The tests of Redis failing use [`replica_with_timeout`] with the default.
fn replica(origin: &Scripted, redis: &Redis) -> Portier {
    replica_with_timeout(origin, redis, "2s")
}

fn replica_with_timeout(origin: &Scripted, redis: &Redis, timeout: &str) -> Portier {
    let top = format!("[cache.shared]\nurl = \"{}\"\ntimeout = \"{timeout}\"\n{RULE}", redis.url());
    Portier::start(&config_for(origin.addr, "", &top))
}

async fn metrics(p: &Portier) -> String {
    get(p.admin, "/metrics").await.text()
}

/// The replica has connected to Redis and subscribed to purges.
async fn wait_connected(p: &Portier) {
    let up = eventually(Duration::from_secs(15), async || metric_value(&metrics(p).await, "cache_shared_up") == Some(1.0)).await;
    assert!(up, "replica connected to redis; stderr: {:?}", p.stderr.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_ask_the_origin_once_per_url() {
    let redis = Redis::start().await;
    let origin = versioned_origin(Duration::from_millis(100)).await;
    let replicas: Vec<Portier> = (0..3).map(|_| replica(&origin, &redis)).collect();
    for r in &replicas {
        wait_connected(r).await;
    }
    let addrs: Vec<_> = replicas.iter().map(|r| r.public).collect();
    // 200 clients at once, 4 per URL, spread over the replicas.
    let started = Instant::now();
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let addr = addrs[i % 3];
            tokio::spawn(async move {
                let path = format!("/cold/{}", i / 4);
                let r = fetch(addr, &path).await;
                (path, r)
            })
        })
        .collect();
    let mut shared_hits = 0;
    for c in clients {
        let (path, r) = c.await.unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), format!("v1 {path}"), "every client gets the one stored copy");
        shared_hits += usize::from(r.header("cache-status").contains("detail=shared"));
    }
    let slowest = started.elapsed();
    let origin_requests = origin.seen().len();
    println!(
        "shared cache coalescing: 3 replicas, 200 clients, 50 URLs: {origin_requests} origin requests ({:.2} per URL), \
         {shared_hits} answered from Redis, slowest client {slowest:?}",
        origin_requests as f64 / 50.0
    );
    assert!(origin_requests as f64 / 50.0 <= 1.05, "{origin_requests} origin requests for 50 URLs");
    assert!(shared_hits > 0, "replicas that did not fill read the object from Redis");

    // A hit from Redis says so, exactly.
    let r = fetch(addrs[1], "/cold/0").await;
    assert_eq!(r.header("x-cache"), "HIT");
    let again = fetch(addrs[2], "/fresh-one").await;
    assert_eq!(again.header("cache-status"), "portier; fwd=miss; fwd-status=200; stored");
    let other = fetch(addrs[0], "/fresh-one").await;
    assert_eq!(other.header("x-cache"), "HIT");
    assert!(other.header("cache-status").starts_with("portier; hit; ttl="), "{other:?}");
    assert!(other.header("cache-status").ends_with("; detail=shared"), "{other:?}");
    assert_eq!(origin.count("/fresh-one"), 1);
}

/// Polls `addr` over one keep-alive connection (a browser's, not a new connection per
/// poll) until `path` no longer answers `old`; the time it took.
async fn until_changed(addr: std::net::SocketAddr, path: &str, old: &str, since: Instant) -> Duration {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..2000 {
        let Some((status, body)) = keep_alive_get(&mut conn, "app.test", path).await else {
            conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            continue;
        };
        assert_eq!(status, 200);
        if body != old {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{addr}{path} still serves {old:?} after {:?}", since.elapsed());
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_on_one_replica_reaches_the_others() {
    let redis = Redis::start().await;
    let origin = versioned_origin(Duration::ZERO).await;
    let (a, b, c) = (replica(&origin, &redis), replica(&origin, &redis), replica(&origin, &redis));
    for r in [&a, &b, &c] {
        wait_connected(r).await;
    }
    let mut purges = Vec::new();
    for _ in 0..100 {
        // B and C hold the current version in memory.
        let current = fetch(a.public, "/p").await.text();
        for r in [&b, &c] {
            let h = fetch(r.public, "/p").await;
            assert_eq!((h.text(), h.header("x-cache")), (current.clone(), "HIT"));
        }
        let t0 = Instant::now();
        let r = request(a.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"url":"/p"}"#).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let (tb, tc) = tokio::join!(until_changed(b.public, "/p", &current, t0), until_changed(c.public, "/p", &current, t0));
        purges.push(tb.max(tc));
    }
    let mut syncs = Vec::new();
    let url = "/api/stats/summary?username=demo";
    for _ in 0..20 {
        let current = fetch(a.public, url).await.text();
        for r in [&b, &c] {
            assert_eq!(fetch(r.public, url).await.text(), current);
        }
        let t0 = Instant::now();
        assert_eq!(request(a.public, "POST", "/api/sync?username=demo", &[("Host", "app.test")], b"").await.unwrap().status, 200);
        let (tb, tc) = tokio::join!(until_changed(b.public, url, &current, t0), until_changed(c.public, url, &current, t0));
        syncs.push(tb.max(tc));
    }
    let (purge_p99, sync_p99) = (p99(purges.clone()), p99(syncs.clone()));
    println!(
        "shared cache purge fan-out: 100 purges on A, B and C serving the new object after p50 {:?} / p99 {purge_p99:?}; \
         20 POST /api/sync: p99 {sync_p99:?}",
        {
            let mut v = purges.clone();
            v.sort();
            v[49]
        }
    );
    assert!(purge_p99 <= Duration::from_millis(100), "purge p99 {purge_p99:?}");
    assert!(sync_p99 <= Duration::from_millis(100), "sync p99 {sync_p99:?}");
    let m = metrics(&b).await;
    assert!(metric_value(&m, "cache_shared_purge_delay_seconds_count").unwrap_or(0.0) >= 100.0, "B counted the purges it applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_run_fails_no_request_and_hits_resume() {
    let mut redis = Redis::start().await;
    let origin = versioned_origin(Duration::ZERO).await;
    let (a, b) = (replica_with_timeout(&origin, &redis, "100ms"), replica_with_timeout(&origin, &redis, "100ms"));
    wait_connected(&a).await;
    wait_connected(&b).await;
    let addrs = [a.public, b.public];
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                // Bounded: 20,000 requests per worker at most, whatever the timing.
                while !stop.load(Ordering::Relaxed) && i < 20_000 {
                    let addr = addrs[(w + i) % 2];
                    let path = format!("/o/{}", i % 20);
                    match tokio::time::timeout(Duration::from_secs(5), get_result(addr, &path)).await {
                        Ok(Ok(r)) if answered(&r, &path) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        })
        .collect();
    // B keeps this in memory; the purge sent to A while Redis is down cannot reach B.
    assert_eq!(fetch(b.public, "/kept").await.text(), "v1 /kept");
    assert_eq!(fetch(b.public, "/kept").await.header("x-cache"), "HIT");
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    let r = request(a.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"url":"/kept"}"#).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(fetch(b.public, "/kept").await.text(), "v1 /kept", "B cannot know yet");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = ok.load(Ordering::Relaxed);
    redis.restart().await;
    wait_connected(&a).await;
    wait_connected(&b).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("shared cache outage: {ok} requests answered (of which {during} before Redis came back), {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 100, "the load ran: {ok}");

    // Reconnected, B no longer serves what was purged while it could not hear it.
    let kept = fetch(b.public, "/kept").await;
    assert_ne!(kept.text(), "v1 /kept", "{kept:?}");

    // After reconnection, a fill on A is a hit on B, without the origin.
    let first = fetch(a.public, "/after").await;
    assert_eq!(first.header("x-cache"), "MISS");
    let second = fetch(b.public, "/after").await;
    assert_eq!(second.header("x-cache"), "HIT");
    assert!(second.header("cache-status").ends_with("; detail=shared"), "{second:?}");
    assert_eq!(origin.count("/after"), 1);
}

/// During the outage each replica fills on its own, so a later copy may be `v2` or more.
fn answered(r: &Resp, path: &str) -> bool {
    r.status == 200 && r.text().starts_with('v') && r.text().ends_with(&format!(" {path}"))
}

async fn get_result(addr: std::net::SocketAddr, path: &str) -> std::io::Result<Resp> {
    request(addr, "GET", path, &[("Host", "app.test")], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_answers_its_first_request_from_redis() {
    let redis = Redis::start().await;
    let origin = versioned_origin(Duration::ZERO).await;
    let first = replica(&origin, &redis);
    wait_connected(&first).await;
    assert_eq!(fetch(first.public, "/warm").await.header("x-cache"), "MISS");
    // The copy reaches Redis as the fill completes, just after the client has its answer.
    let stored = eventually(Duration::from_secs(5), async || {
        metric_value(&metrics(&first).await, "cache_shared_calls_total{op=\"put\",outcome=\"ok\"}") == Some(1.0)
    })
    .await;
    assert!(stored, "the fill was written to redis");
    drop(first);
    let again = replica(&origin, &redis);
    wait_connected(&again).await;
    let r = fetch(again.public, "/warm").await;
    assert_eq!((r.status, r.text().as_str(), r.header("x-cache")), (200, "v1 /warm", "HIT"));
    assert!(r.header("cache-status").ends_with("; detail=shared"), "{r:?}");
    assert_eq!(origin.count("/warm"), 1, "no origin request after the restart");
    let m = metrics(&again).await;
    assert_eq!(metric_value(&m, "cache_shared_lookups_total{result=\"hit\"}"), Some(1.0));
}

/// A frozen Redis (SIGSTOP: connections open, no answer) costs at most the call timeout,
/// then nothing: the circuit opens and requests go on from memory and the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_a_bounded_wait_then_nothing() {
    let redis = Redis::start().await;
    let origin = versioned_origin(Duration::ZERO).await;
    let a = replica_with_timeout(&origin, &redis, "100ms");
    wait_connected(&a).await;
    assert_eq!(fetch(a.public, "/before").await.header("x-cache"), "MISS");
    redis.pause(true);
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let path = format!("/frozen/{i}");
        let r = fetch(a.public, &path).await;
        assert_eq!((r.status, r.text()), (200, format!("v1 {path}")));
        slowest = slowest.max(t.elapsed());
    }
    // Memory still answers what it holds.
    assert_eq!(fetch(a.public, "/before").await.header("x-cache"), "HIT");
    let m = metrics(&a).await;
    redis.pause(false);
    println!("frozen redis: 20 new URLs answered, slowest {slowest:?}");
    // Each request waits at most for its Redis calls' timeouts (100 ms each, a few calls).
    assert!(slowest < Duration::from_secs(1), "slowest request {slowest:?}");
    // Every lookup went without Redis; after the first timeouts the circuit opened and
    // writes were no longer even tried.
    assert_eq!(metric_value(&m, "cache_shared_lookups_total{result=\"error\"}"), Some(20.0), "{m}");
    assert!(metric_value(&m, "cache_shared_calls_total{op=\"put\",outcome=\"skipped\"}").unwrap_or(0.0) >= 10.0, "the circuit opened: {m}");
    assert_eq!(metric_value(&m, "cache_shared_up"), Some(0.0));
    wait_connected(&a).await;
}

/// Index entries of expired objects go as later fills come in, so Redis does not grow with
/// every URL ever seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_objects_leave_no_index_entries_behind() {
    let redis = Redis::start().await;
    let origin = Scripted::start(|req, _| Reply::new(200, &[("Cache-Control", "max-age=1")], format!("body {}", req.target))).await;
    let top = format!("[cache]\nstale_if_error = \"0s\"\n[cache.shared]\nurl = \"{}\"\n", redis.url());
    let a = Portier::start(&config_for(origin.addr, "", &top));
    wait_connected(&a).await;
    for i in 0..5 {
        assert_eq!(fetch(a.public, &format!("/short/{i}")).await.header("x-cache"), "MISS");
    }
    let count = async |key: &str| redis.command(&["ZCARD", key]).await.unwrap_or_default().trim().to_string();
    let stored = eventually(Duration::from_secs(5), async || count("portier:urls").await == ":5").await;
    assert!(stored, "5 URLs indexed: {}", count("portier:urls").await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fetch(a.public, "/later").await.header("x-cache"), "MISS");
    let pruned = eventually(Duration::from_secs(5), async || {
        count("portier:urls").await == ":1" && count("portier:paths").await == ":1" && count("portier:expiries").await == ":1"
    })
    .await;
    assert!(pruned, "only /later stays indexed: urls {} paths {}", count("portier:urls").await, count("portier:paths").await);
}

/// Stale-while-revalidate refreshes once for all replicas: the replica that takes the shared
/// lock refreshes, the others serve stale without asking the origin, then pick up the
/// refreshed copy from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_while_revalidate_refreshes_once_across_replicas() {
    let redis = Redis::start().await;
    let origin = Scripted::start(|_, n| {
        Reply::new(200, &[("Cache-Control", "max-age=1, stale-while-revalidate=30")], format!("v{n}")).delay(Duration::from_millis(200))
    })
    .await;
    let top = format!("[cache.shared]\nurl = \"{}\"\n", redis.url());
    let replicas: Vec<Portier> = (0..3).map(|_| Portier::start(&config_for(origin.addr, "", &top))).collect();
    for r in &replicas {
        wait_connected(r).await;
    }
    assert_eq!(fetch(replicas[0].public, "/swr").await.text(), "v1");
    for r in &replicas[1..] {
        assert_eq!(fetch(r.public, "/swr").await.header("x-cache"), "HIT");
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Stale everywhere: all three replicas asked at once, twice.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let asks: Vec<_> = replicas
            .iter()
            .map(|r| {
                let addr = r.public;
                tokio::spawn(async move { fetch(addr, "/swr").await })
            })
            .collect();
        for ask in asks {
            let r = ask.await.unwrap();
            assert_eq!((r.status, r.text()), (200, "v1".to_string()), "stale served at once: {r:?}");
            statuses.push(r.header("cache-status").to_string());
        }
    }
    // The refresh lands (200 ms origin), then every replica serves the new copy.
    let refreshed = eventually(Duration::from_secs(5), async || {
        let mut all = true;
        for r in &replicas {
            all &= fetch(r.public, "/swr").await.text() == "v2";
        }
        all
    })
    .await;
    assert!(refreshed, "every replica serves the refreshed copy");
    println!("swr across replicas: origin requests {}, statuses {statuses:?}", origin.count("/swr"));
    assert_eq!(origin.count("/swr"), 2, "one fill and one refresh for three replicas");
    assert!(statuses.iter().all(|s| s.contains("detail=stale-while-revalidate")), "{statuses:?}");
}

/// A revalidation (the origin's 304) refreshes the copy in Redis too: another replica then
/// reads a fresh copy instead of revalidating again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidated_entry_is_fresh_in_redis_for_the_other_replicas() {
    let redis = Redis::start().await;
    let origin = Scripted::start(|req, _| {
        let headers = [("Cache-Control", "max-age=1"), ("ETag", "\"v1\"")];
        if req.header("if-none-match") == Some("\"v1\"") {
            Reply::new(304, &headers, "")
        } else {
            Reply::new(200, &headers, "body")
        }
    })
    .await;
    let (a, b) = (replica(&origin, &redis), replica(&origin, &redis));
    wait_connected(&a).await;
    wait_connected(&b).await;
    assert_eq!(fetch(a.public, "/reval").await.header("x-cache"), "MISS");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = fetch(a.public, "/reval").await;
    assert_eq!((r.header("x-cache"), r.text().as_str()), ("REVALIDATED", "body"));
    assert_eq!(origin.seen().iter().filter(|s| s.header("if-none-match").is_some()).count(), 1);
    // B has no copy of its own: Redis's is fresh again, so B answers without the origin.
    let r = fetch(b.public, "/reval").await;
    assert_eq!((r.header("x-cache"), r.text().as_str()), ("HIT", "body"), "{r:?}");
    assert!(r.header("cache-status").ends_with("; detail=shared"), "{r:?}");
    assert_eq!(origin.count("/reval"), 2, "one fill and one revalidation, nothing for B");
}

/// An entry read from Redis is checked whole before it is served: a value cut short (its
/// body shorter than its Content-Length used to be served and stall the connection) or with
/// one byte changed is a miss, deleted from Redis, and counted; the origin answers instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_value_in_redis_is_never_served() {
    let redis = Redis::start().await;
    let origin = versioned_origin(Duration::ZERO).await;
    let first = replica(&origin, &redis);
    wait_connected(&first).await;
    for path in ["/cut", "/flipped"] {
        assert_eq!(fetch(first.public, path).await.header("x-cache"), "MISS");
    }
    let stored = eventually(Duration::from_secs(5), async || {
        metric_value(&metrics(&first).await, "cache_shared_calls_total{op=\"put\",outcome=\"ok\"}") == Some(2.0)
    })
    .await;
    assert!(stored, "both fills were written to redis");
    drop(first);
    // Damage them in place, keeping their expiry: one loses its last 5 bytes, one has a
    // body byte changed.
    let keys = redis.command(&["KEYS", "portier:o:*"]).await.unwrap_or_default();
    let keys: Vec<&str> = keys.lines().filter(|l| l.starts_with("portier:o:")).collect();
    assert_eq!(keys.len(), 2, "two objects in redis: {keys:?}");
    let cut = "local v = redis.call('GET', KEYS[1]); redis.call('SET', KEYS[1], string.sub(v, 1, #v - 5), 'KEEPTTL'); return #v";
    let flip = "local v = redis.call('GET', KEYS[1]); local i = #v - 8; \
                redis.call('SET', KEYS[1], string.sub(v, 1, i - 1) .. string.char((string.byte(v, i) + 1) % 256) .. string.sub(v, i + 1), 'KEEPTTL'); return #v";
    for (key, script) in keys.iter().zip([cut, flip]) {
        assert!(redis.command(&["EVAL", script, "1", key]).await.unwrap_or_default().starts_with(':'), "damaged {key}");
    }
    let again = replica(&origin, &redis);
    wait_connected(&again).await;
    for path in ["/cut", "/flipped"] {
        let r = tokio::time::timeout(Duration::from_secs(5), fetch(again.public, path)).await.expect("answered, not stalled");
        assert_eq!((r.status, r.header("x-cache"), r.text()), (200, "MISS", format!("v2 {path}")), "{path}: from the origin: {r:?}");
    }
    assert_eq!(origin.count("/cut") + origin.count("/flipped"), 4, "each asked of the origin again");
    let m = metrics(&again).await;
    assert_eq!(metric_value(&m, "cache_shared_lookups_total{result=\"corrupt\"}"), Some(2.0), "{m}");
    // The damaged values were deleted (and replaced by the new fills).
    let replaced = eventually(Duration::from_secs(5), async || {
        metric_value(&metrics(&again).await, "cache_shared_calls_total{op=\"put\",outcome=\"ok\"}") == Some(2.0)
    })
    .await;
    assert!(replaced, "the origin's answers were written again");
    drop(again);
    let third = replica(&origin, &redis);
    wait_connected(&third).await;
    for path in ["/cut", "/flipped"] {
        let r = fetch(third.public, path).await;
        assert_eq!((r.header("x-cache"), r.text()), ("HIT", format!("v2 {path}")), "{path}: the good copy from redis");
    }
}

/// A replica's memory answers a fresh hit before Pingora's lookup, but not from a stale
/// primary: there Pingora asks Redis for a fresher one, and another replica's refresh may
/// have started a new `Vary` family that makes this replica's fresh copy of a variant
/// obsolete. A keeps `en` (the primary, short-lived) and `fr` (a variant, long-lived); once
/// `en` is stale, B refreshes it and the origin has stopped varying on `X-Lang`. A's next
/// `fr` request is then B's new answer from Redis, not A's old `fr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_in_memory_is_not_served_past_another_replicas_new_vary_family() {
    let redis = Redis::start().await;
    let changed = Arc::new(AtomicBool::new(false));
    let flag = changed.clone();
    let origin = Scripted::start(move |req, n| {
        if flag.load(Ordering::SeqCst) {
            let headers = [("Cache-Control", "max-age=60"), ("Vary", "X-Other"), ("Content-Type", "text/plain")];
            return Reply::new(200, &headers, format!("new v{n}"));
        }
        let lang = req.header("x-lang").unwrap_or("none").to_string();
        let max_age = if lang == "en" { "max-age=1" } else { "max-age=60" };
        let headers = [("Cache-Control", max_age), ("Vary", "X-Lang"), ("Content-Type", "text/plain")];
        Reply::new(200, &headers, format!("{lang} v{n}"))
    })
    .await;
    let (a, b) = (replica(&origin, &redis), replica(&origin, &redis));
    wait_connected(&a).await;
    wait_connected(&b).await;
    let lang = |l: &'static str| [("Host", "app.test"), ("X-Lang", l)];
    assert_eq!(get_with(a.public, "/v", &lang("en")).await.header("x-cache"), "MISS");
    assert_eq!(get_with(a.public, "/v", &lang("fr")).await.header("x-cache"), "MISS");
    let r = get_with(a.public, "/v", &lang("fr")).await;
    assert_eq!((r.header("x-cache"), r.text().as_str()), ("HIT", "fr v2"), "A's fresh variant from memory");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    changed.store(true, Ordering::SeqCst);
    let r = get_with(b.public, "/v", &lang("en")).await;
    assert_eq!(r.text(), "new v3", "B refreshed the stale primary: {r:?}");
    let stored = eventually(Duration::from_secs(5), async || {
        metric_value(&metrics(&b).await, "cache_shared_calls_total{op=\"put\",outcome=\"ok\"}") == Some(1.0)
    })
    .await;
    assert!(stored, "B's refresh was written to redis");
    let r = get_with(a.public, "/v", &lang("fr")).await;
    assert_eq!((r.header("x-cache"), r.text().as_str()), ("HIT", "new v3"), "{r:?}");
    assert!(r.header("cache-status").ends_with("; detail=shared"), "{r:?}");
    assert_eq!(origin.count("/v"), 3, "A's answer came from Redis, not the origin");
}
