//! The protocol matrix: what the cache proves over plain HTTP/1.1 it proves over HTTP/1.1 on
//! TLS and HTTP/2 on TLS, the way browsers arrive (`:authority` and no `Host`, one `cookie`
//! field per cookie). Each test runs its scenario on every [`Proto`], against the scripted
//! origin (which records exactly what it was sent) and against a real nginx with
//! `server_name` checks, which refuses an empty `Host` (400) and a wrong one (421).

use crate::common::client::{Front, Proto};
use crate::common::nginx::Nginx;
use crate::common::scripted::{Reply, Scripted};
use crate::common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn pool_config(origin: std::net::SocketAddr, extra_routes: &str) -> String {
    format!("[upstreams.o]\naddresses = [\"{origin}\"]\n{extra_routes}[[routes]]\npath = \"/*\"\npool = \"o\"\n")
}

/// The origin's `Date`, five seconds before now: a hit must carry this one, not the proxy's.
fn past_date() -> String {
    httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forwarded_request_is_the_same_on_every_protocol() {
    let o = Scripted::start(|_, _| Reply::new(200, &[("cache-control", "no-store")], "ok")).await;
    let f = Front::start(&pool_config(o.addr, ""));
    for proto in Proto::ALL {
        let path = format!("/fwd/{}?q=1", proto.name());
        let r = f.get(proto, &path, &[("cookie", "a=1"), ("cookie", "b=2"), ("accept", "text/html")]).await;
        assert_eq!(r.status, 200, "{proto:?}: {r:?}");
        let seen = o.seen().into_iter().find(|s| s.target == path).unwrap_or_else(|| panic!("{proto:?}: the origin saw {path}"));
        let all =
            |name: &str| seen.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect::<Vec<_>>();
        let authority = f.authority(proto);
        assert_eq!(all("host"), std::slice::from_ref(&authority), "{proto:?}: Host from :authority (RFC 9113 §8.3.1): {seen:?}");
        assert_eq!(all("x-forwarded-host"), [authority], "{proto:?}: {seen:?}");
        assert_eq!(all("x-forwarded-proto"), [proto.scheme()], "{proto:?}: {seen:?}");
        assert_eq!(all("cookie"), ["a=1; b=2"], "{proto:?}: one Cookie, joined with \"; \" (RFC 9113 §8.2.3): {seen:?}");
        assert_eq!(all("accept"), ["text/html"], "{proto:?}");
        assert_eq!(seen.method, "GET");
        assert!(all("x-request-id").len() == 1 && all("x-forwarded-for") == ["127.0.0.1"], "{proto:?}: {seen:?}");
        for hop in ["te", "connection", "upgrade", "keep-alive", "transfer-encoding"] {
            assert!(all(hop).is_empty(), "{proto:?}: no {hop} upstream: {seen:?}");
        }
    }
    // The access log names each request's host the same way (its lines are written after the answer).
    let logged = async || f.portier.stdout_lines().iter().filter(|l| l.contains("\"path\":\"/fwd/")).count() == Proto::ALL.len();
    assert!(eventually(Duration::from_secs(5), logged).await, "{:#?}", f.portier.stdout_lines());
    let lines = f.portier.stdout_lines();
    for proto in Proto::ALL {
        let path = format!("\"path\":\"/fwd/{}\"", proto.name());
        let line = lines
            .iter()
            .find(|l| l.contains(&path) && l.contains("\"status\":200"))
            .unwrap_or_else(|| panic!("access log for {path}: {lines:#?}"));
        assert!(line.contains("\"host\":\"a.test\""), "{line}");
        let version = proto.version();
        assert!(line.contains(&format!("\"protocol\":\"{version}\"")), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_hit_age_date_and_304_on_every_protocol() {
    let date = past_date();
    let d = date.clone();
    let o = Scripted::start(move |req, _| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::new(304, &[("etag", "\"v1\""), ("date", &d)], "");
        }
        Reply::new(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\""), ("date", &d)], "body-v1")
    })
    .await;
    let f = Front::start(&pool_config(o.addr, ""));
    for proto in Proto::ALL {
        let path = format!("/hit/{}", proto.name());
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache"), r.text().as_str()), (200, "MISS", "body-v1"), "{proto:?}: {r:?}");
        assert_eq!(r.header("date"), date, "{proto:?}: the origin's Date is forwarded");
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache"), r.text().as_str()), (200, "HIT", "body-v1"), "{proto:?}: {r:?}");
        assert!(r.header("cache-status").starts_with("portier; hit; ttl="), "{proto:?}: {r:?}");
        assert_eq!(r.header("date"), date, "{proto:?}: a hit carries the stored Date (RFC 9110 §6.6.1)");
        let age: u64 = r.header("age").parse().unwrap_or_else(|_| panic!("{proto:?}: Age is a number: {r:?}"));
        assert!((5..60).contains(&age), "{proto:?}: Age counts from the origin's Date: {age}");
        let r = f.get(proto, &path, &[("if-none-match", "\"v1\"")]).await;
        assert_eq!((r.status, r.header("etag")), (304, "\"v1\""), "{proto:?}: a conditional hit is a 304: {r:?}");
        assert!(r.body.is_empty());
        assert_eq!(o.count(&path), 1, "{proto:?}: one origin request for the miss; the rest from the cache");
    }
    // HTTP/1.1 and HTTP/2 over TLS share one key (same scheme and authority): no second fill.
    let shared = "/hit/shared";
    assert_eq!(f.get(Proto::H1Tls, shared, &[]).await.header("x-cache"), "MISS");
    assert_eq!(f.get(Proto::H2Tls, shared, &[]).await.header("x-cache"), "HIT");
    assert_eq!(o.count(shared), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_and_compressed_variants_on_every_protocol() {
    let page = "<p>portier</p>".repeat(200);
    let o = Scripted::start(move |req, _| {
        if req.target.starts_with("/vary/") {
            let lang = req.header("accept-language").unwrap_or("none").to_string();
            return Reply::new(200, &[("cache-control", "max-age=60"), ("vary", "Accept-Language")], lang);
        }
        Reply::new(200, &[("cache-control", "max-age=60"), ("content-type", "text/html")], page.clone())
    })
    .await;
    let f = Front::start(&pool_config(o.addr, ""));
    for proto in Proto::ALL {
        let path = format!("/vary/{}", proto.name());
        for (lang, cache) in [("en", "MISS"), ("fr", "MISS"), ("en", "HIT"), ("fr", "HIT")] {
            let r = f.get(proto, &path, &[("accept-language", lang)]).await;
            assert_eq!((r.text().as_str(), r.header("x-cache")), (lang, cache), "{proto:?} {lang}: {r:?}");
        }
        assert_eq!(o.count(&path), 2, "{proto:?}: one fill per variant");

        let path = format!("/gz/{}", proto.name());
        for cache in ["MISS", "HIT"] {
            let r = f.get(proto, &path, &[("accept-encoding", "gzip")]).await;
            assert_eq!((r.header("content-encoding"), r.header("x-cache")), ("gzip", cache), "{proto:?}: {r:?}");
            assert!(r.header("vary").to_ascii_lowercase().contains("accept-encoding"), "{proto:?}");
            let mut plain = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain).unwrap();
            assert_eq!(plain, "<p>portier</p>".repeat(200), "{proto:?}: the gzip variant decodes to the page");
        }
        let r = f.get(proto, &path, &[]).await;
        assert!(r.opt_header("content-encoding").is_none(), "{proto:?}: identity for a client without Accept-Encoding: {r:?}");
        assert_eq!(r.text(), "<p>portier</p>".repeat(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_stale_while_revalidate_and_stale_if_error_on_every_protocol() {
    let failing = Arc::new(AtomicBool::new(false));
    let fail = failing.clone();
    let o = Scripted::start(move |req, n| {
        if req.target.starts_with("/sie/") && fail.load(Ordering::SeqCst) {
            return Reply::new(503, &[], "down");
        }
        let cc = if req.target.starts_with("/swr/") { "max-age=1, stale-while-revalidate=30" } else { "max-age=1, stale-if-error=60" };
        Reply::new(200, &[("cache-control", cc)], format!("n={n}"))
    })
    .await;
    let f = Front::start(&pool_config(o.addr, ""));
    for proto in Proto::ALL {
        for kind in ["swr", "sie", "purge"] {
            let r = f.get(proto, &format!("/{kind}/{}", proto.name()), &[]).await;
            assert_eq!(r.header("x-cache"), "MISS", "{proto:?} {kind}");
        }
        // A purge by URL reaches the entry whichever protocol stored it.
        let body = format!(r#"{{"url":"/purge/{}"}}"#, proto.name());
        let r = request(f.portier.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], body.as_bytes()).await.unwrap();
        assert_eq!(r.json()["purged"], 1, "{proto:?}: {}", r.text());
        let r = f.get(proto, &format!("/purge/{}", proto.name()), &[]).await;
        assert_eq!((r.header("x-cache"), r.text().as_str()), ("MISS", "n=2"), "{proto:?}: purged, fetched again");
    }
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for proto in Proto::ALL {
        let path = format!("/swr/{}", proto.name());
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache"), r.text().as_str()), (200, "STALE", "n=1"), "{proto:?}: {r:?}");
        assert!(r.header("cache-status").ends_with("detail=stale-while-revalidate"), "{proto:?}: {r:?}");
        let o2 = o.clone();
        let p2 = path.clone();
        assert!(
            eventually(Duration::from_secs(5), async || o2.count(&p2) == 2).await,
            "{proto:?}: one background refresh; {:#?} {:#?}",
            f.portier.stdout_lines().iter().filter(|l| l.contains("swr")).collect::<Vec<_>>(),
            f.portier.stderr.lock().unwrap()
        );
        // The origin has answered the refresh; its storing may finish a moment later.
        let mut r = f.get(proto, &path, &[]).await;
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while (r.header("x-cache"), r.text().as_str()) != ("HIT", "n=2") && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            r = f.get(proto, &path, &[]).await;
        }
        assert_eq!((r.header("x-cache"), r.text().as_str()), ("HIT", "n=2"), "{proto:?}: the refreshed copy");
        assert_eq!(o.count(&path), 2, "{proto:?}: one refresh, however many looked");

        let path = format!("/sie/{}", proto.name());
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache"), r.text().as_str()), (200, "STALE", "n=1"), "{proto:?}: {r:?}");
        assert!(r.header("cache-status").ends_with("detail=stale-if-error"), "{proto:?}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn coalescing_access_rules_and_limits_on_every_protocol() {
    let o = Scripted::start(|req, n| {
        let reply = Reply::new(200, &[("cache-control", "public, max-age=60")], format!("{} #{n}", req.target));
        if req.target.starts_with("/slow/") {
            reply.delay(Duration::from_millis(300))
        } else {
            reply
        }
    })
    .await;
    let hash = {
        use std::io::Write;
        let mut child = std::process::Command::new(bin())
            .args(["hash-password", "--cost", "4"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
    };
    let routes = format!(
        "[[routes]]\npath = \"/admin/*\"\npool = \"o\"\nbasic_auth = {{ realm = \"ops\", users = {{ admin = \"{hash}\" }} }}\n\
         [[routes]]\npath = \"/internal/*\"\npool = \"o\"\ndeny = [\"127.0.0.1\"]\n\
         [[routes]]\npath = \"/upload/*\"\npool = \"o\"\nmax_body = \"1KiB\"\n"
    );
    let f = Arc::new(Front::start(&pool_config(o.addr, &routes)));
    let good = {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:s3cret"))
    };
    for proto in Proto::ALL {
        // Eight clients at once on a cold URL: one origin request.
        let path = format!("/slow/{}", proto.name());
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (f, path) = (f.clone(), path.clone());
                tokio::spawn(async move { f.get(proto, &path, &[]).await })
            })
            .collect();
        for c in clients {
            let r = c.await.unwrap();
            assert_eq!((r.status, r.text()), (200, format!("{path} #1")), "{proto:?}");
        }
        assert_eq!(o.count(&path), 1, "{proto:?}: coalesced into one fill");

        let path = format!("/admin/{}", proto.name());
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("www-authenticate")), (401, "Basic realm=\"ops\", charset=\"UTF-8\""), "{proto:?}");
        assert_eq!(f.get(proto, &path, &[("authorization", &good)]).await.header("x-cache"), "MISS", "{proto:?}");
        assert_eq!(f.get(proto, &path, &[]).await.status, 401, "{proto:?}: the stored answer needs the password too");
        assert_eq!(f.get(proto, &path, &[("authorization", &good)]).await.header("x-cache"), "HIT", "{proto:?}");
        let r = f.get(proto, &format!("/internal/{}", proto.name()), &[]).await;
        assert_eq!(r.status, 403, "{proto:?}: deny by address");

        let big = vec![b'x'; 2048];
        let r = f.send(proto, "POST", &format!("/upload/{}", proto.name()), &[], &big).await.unwrap();
        assert_eq!(r.status, 413, "{proto:?}: a body over the route's max_body");
        let many: Vec<(String, String)> = (0..120).map(|i| (format!("x-n{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = f.send(proto, "GET", &format!("/many/{}", proto.name()), &many, b"").await.unwrap();
        assert_eq!(r.status, 431, "{proto:?}: more header fields than limits.max_header_count");
    }
    assert_eq!(o.seen().iter().filter(|s| s.target.starts_with("/upload/") || s.target.starts_with("/many/")).count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http2_requests_are_refused() {
    let o = Scripted::start(|_, _| Reply::new(200, &[("cache-control", "max-age=60")], "ok")).await;
    let f = Front::start(&pool_config(o.addr, ""));
    // `:authority` and a `Host` naming another: one request, two authorities.
    let r = f.get(Proto::H2Tls, "/two-hosts", &[("host", "b.test")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    // The same Host as :authority is fine.
    let r = f.get(Proto::H2Tls, "/same-host", &[("host", &f.authority(Proto::H2Tls))]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(o.count("/two-hosts"), 0);
}

/// h2's own `tracing` events reach the JSON log as `library` events at the level
/// `PORTIER_LIBRARY_LOG` names (through Portier's subscriber, not tracing's `log` bridge,
/// which cost every HTTP/2 request its spans): a DATA frame on stream 0 is h2's connection
/// error, logged at `debug`, and not at the default `warn`.
#[tokio::test(flavor = "multi_thread")]
async fn http2_library_events_reach_the_log_at_the_chosen_level() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Scripted::start(|_, _| Reply::new(200, &[], "ok")).await;
    let config = pool_config(o.addr, "");
    let h2_lines = |f: &Front| {
        let lines = f.portier.stdout_lines();
        lines.into_iter().filter(|l| l.contains("\"event\":\"library\"") && l.contains("\"target\":\"h2::")).collect::<Vec<_>>()
    };
    let broken_connection = async |f: &Front| {
        let mut tls = f.cert.connect(f.addr(Proto::H2Tls), b"h2").await.unwrap();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0]); // DATA on stream 0
        tls.write_all(&bytes).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
    };
    let debug = Front::start_with_env(&config, &[("PORTIER_LIBRARY_LOG", "debug")]);
    broken_connection(&debug).await;
    let logged = eventually(Duration::from_secs(5), async || !h2_lines(&debug).is_empty()).await;
    assert!(logged, "h2's connection error logged at debug: {:?}", debug.portier.stdout_lines());
    let line: serde_json::Value = serde_json::from_str(&h2_lines(&debug)[0]).unwrap();
    assert_eq!(line["level"], "debug", "{line}");
    assert!(!line["message"].as_str().unwrap_or("").is_empty(), "{line}");
    let quiet = Front::start(&config);
    broken_connection(&quiet).await;
    assert_eq!(quiet.get(Proto::H2Tls, "/after", &[]).await.status, 200);
    assert!(h2_lines(&quiet).is_empty(), "nothing below warn by default: {:?}", h2_lines(&quiet));
}

/// A library line a client can cause per frame (h2 warns of every PING acknowledgement it
/// never asked for) is bounded: at most 100 library lines a second reach the log, and the
/// next line after a second that dropped some says how many were dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_library_warnings_is_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Scripted::start(|_, _| Reply::new(200, &[], "ok")).await;
    let f = Front::start(&pool_config(o.addr, ""));
    let mut tls = f.cert.connect(f.addr(Proto::H2Tls), b"h2").await.unwrap();
    let ping_ack = [0, 0, 8, 6, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for _ in 0..1000 {
        bytes.extend_from_slice(&ping_ack);
    }
    tls.write_all(&bytes).await.unwrap();
    let pings = |f: &Front| f.portier.stdout_lines().iter().filter(|l| l.contains("never sent")).count();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await;
    assert!(eventually(Duration::from_secs(5), async || pings(&f) > 0).await, "h2's warning is logged");
    // One more, a second later: it opens a new second's budget and reports the drops.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tls.write_all(&ping_ack).await.unwrap();
    let dropped_line = |f: &Front| f.portier.stdout_lines().into_iter().find(|l| l.contains("\"event\":\"library_lines_dropped\""));
    assert!(eventually(Duration::from_secs(5), async || dropped_line(&f).is_some()).await, "{:?}", f.portier.stdout_lines().len());
    let line: serde_json::Value = serde_json::from_str(&dropped_line(&f).unwrap()).unwrap();
    let dropped: usize = line["dropped"].as_str().unwrap().parse().unwrap();
    let written = pings(&f);
    assert!(written <= 201, "at most 100 a second (the flood may straddle two): {written}");
    assert!(dropped >= 1000 - written, "every line not written is counted: {dropped} dropped, {written} written");
    assert_eq!(f.get(Proto::H2Tls, "/after", &[]).await.status, 200, "the proxy still answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strict_nginx_origin_serves_every_protocol() {
    let nginx = Nginx::start();
    let f = Front::start(&pool_config(nginx.addr, ""));
    for proto in Proto::ALL {
        let path = format!("/page.html?p={}", proto.name());
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache")), (200, "MISS"), "{proto:?}: nginx answered {r:?}; its log: {:?}", nginx.log());
        assert_eq!(r.text(), "<h1>nginx</h1>".repeat(100));
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache")), (200, "HIT"), "{proto:?}");
        let etag = r.header("etag").to_string();
        let r = f.get(proto, &path, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, 304, "{proto:?}: nginx's own ETag validates the stored copy");
        let asked: Vec<_> = nginx.log().into_iter().filter(|(_, uri, _)| *uri == path).collect();
        assert_eq!(asked, [("a.test".to_string(), path.clone(), 200)], "{proto:?}: one request, for a.test");

        // `no-cache`: stored, revalidated with nginx's ETag every time (nginx answers 304).
        let path = format!("/reval/r.txt?p={}", proto.name());
        assert_eq!(f.get(proto, &path, &[]).await.header("x-cache"), "MISS", "{proto:?}");
        let r = f.get(proto, &path, &[]).await;
        assert_eq!((r.status, r.header("x-cache"), r.text().as_str()), (200, "REVALIDATED", "revalidate me"), "{proto:?}: {r:?}");
        let statuses: Vec<u16> = nginx.log().into_iter().filter(|(_, uri, _)| *uri == path).map(|(_, _, s)| s).collect();
        assert_eq!(statuses, [200, 304], "{proto:?}");
    }
    assert!(nginx.log().iter().all(|(host, _, status)| host == "a.test" && *status != 400 && *status != 421), "{:?}", nginx.log());
}

/// A real browser (Debian's headless Chromium) over `[tls]`: HTTP/2 is negotiated, the origin
/// sees the `Host` the browser meant, and a second visit (a fresh browser cache) is a HIT.
#[tokio::test(flavor = "multi_thread")]
async fn chromium_over_http2_reaches_the_origin_intact_and_hits() {
    let o = Scripted::start(|req, n| {
        let host = req.header("host").unwrap_or("(none)").to_string();
        Reply::new(200, &[("cache-control", "max-age=60"), ("content-type", "text/html")], format!("<p>host={host} #{n}</p>"))
    })
    .await;
    let f = Front::start(&pool_config(o.addr, ""));
    f.chromium_visits_twice(Proto::H2Tls, "/page", &format!("host={} #1", f.authority(Proto::H2Tls))).await;
    assert_eq!(o.count("/page"), 1, "the second visit came from Portier's cache");
    assert_eq!(o.last("/page").unwrap().header("host"), Some(f.authority(Proto::H2Tls).as_str()));
}
