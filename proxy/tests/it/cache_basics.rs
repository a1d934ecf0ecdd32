//! Storing and serving: MISS then HIT with the origin asked once, Age, HEAD from a stored GET,
//! Vary, and the RFC 9111 refusals (no-store, private, Authorization, Set-Cookie, Vary: *),
//! no-cache, targeted fields.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::time::Duration;

async fn fixed(headers: &'static [(&'static str, &'static str)]) -> Scripted {
    Scripted::start(move |req, n| Reply::new(200, headers, format!("body {} #{n}", req.target))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_asks_the_origin_once_with_exact_headers() {
    let api = origin().await;
    let p = Portier::start(&two_pool_config(api.addr, api.addr));
    let url = "/api/stats/summary?username=demo";
    let first = get(p.public, url).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), "MISS");
    assert_eq!(first.header("cache-status"), "portier; fwd=miss; fwd-status=200; stored");
    assert!(first.header("server-timing").starts_with("cache;desc=\"MISS\", origin;dur="), "{first:?}");
    assert_eq!(first.header("cache-control"), "public, max-age=60, stale-while-revalidate=30");
    let etag = first.header("etag").to_string();

    let second = get(p.public, url).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), "HIT");
    assert_eq!(second.header("server-timing"), "cache;desc=\"HIT\"");
    assert!(second.header("cache-status").starts_with("portier; hit; ttl="), "{second:?}");
    assert_eq!(second.header("etag"), etag, "the origin's ETag passes through unchanged");
    assert_eq!(second.header("cache-control"), "public, max-age=60, stale-while-revalidate=30");
    assert_eq!(second.body, first.body);
    assert_eq!(api.state.hits(url), 1, "the origin was asked once");
}

#[tokio::test(flavor = "multi_thread")]
async fn age_grows_and_counts_the_origins_age() {
    let o = fixed(&[("cache-control", "max-age=60"), ("age", "10")]).await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let miss = get(p.public, "/a").await;
    assert_eq!(miss.header("x-cache"), "MISS");
    assert_eq!(miss.header("age"), "10", "a miss passes the origin's Age on");
    let hit = get(p.public, "/a").await;
    let age1: u64 = hit.header("age").parse().unwrap();
    assert!((10..=11).contains(&age1), "{age1}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = get(p.public, "/a").await;
    let age2: u64 = later.header("age").parse().unwrap();
    assert!(age2 >= age1 + 2, "Age grows: {age1} then {age2}");
    let ttl: i64 = later.header("cache-status").rsplit("ttl=").next().unwrap().parse().unwrap();
    assert!((47..=48).contains(&ttl), "freshness left counts the origin's age: {ttl}");
    assert_eq!(o.count("/a"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_is_served_from_a_stored_get() {
    let o = fixed(&[("cache-control", "max-age=60")]).await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get(p.public, "/h").await.header("x-cache"), "MISS");
    let head = request(p.public, "HEAD", "/h", &[], b"").await.unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-cache"), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(o.count("/h"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_accept_encoding_keeps_variants_apart_and_vary_star_is_never_served() {
    let o = Scripted::start(|req, _| {
        let enc = req.header("accept-encoding").unwrap_or("identity").to_string();
        if req.target == "/star" {
            return Reply::new(200, &[("cache-control", "max-age=60"), ("vary", "*")], "star");
        }
        Reply::new(200, &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")], format!("encoded as {enc}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let gz = [("Accept-Encoding", "gzip, br")];
    let gz2 = [("Accept-Encoding", "br,gzip")];
    let id = [("Accept-Encoding", "identity")];
    assert_eq!(get_with(p.public, "/v", &gz).await.header("x-cache"), "MISS");
    let r = get_with(p.public, "/v", &id).await;
    assert_eq!(r.header("x-cache"), "MISS", "another variant");
    assert_eq!(r.text(), "encoded as identity");
    let r = get_with(p.public, "/v", &gz2).await;
    assert_eq!(r.header("x-cache"), "HIT", "same variant, tokens reordered");
    assert_eq!(r.text(), "encoded as gzip, br");
    assert_eq!(get_with(p.public, "/v", &id).await.text(), "encoded as identity");
    assert_eq!(o.count("/v"), 2);

    for _ in 0..2 {
        let r = get(p.public, "/star").await;
        assert_eq!(r.header("x-cache"), "BYPASS");
        assert_eq!(r.header("cache-status"), "portier; fwd=bypass; fwd-status=200; detail=vary-star");
    }
    assert_eq!(o.count("/star"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_refusals_and_no_cache() {
    let o = Scripted::start(|req, n| {
        let cc = match req.target.as_str() {
            "/no-store" => "no-store, max-age=60",
            "/private" => "private, max-age=60",
            "/no-cache" => "no-cache",
            "/none" => "",
            _ => "max-age=60",
        };
        let mut h = vec![("etag", "\"v1\"")];
        if !cc.is_empty() {
            h.push(("cache-control", cc));
        }
        if req.target == "/cookie" {
            h.push(("set-cookie", "session=abc"));
        }
        if req.target == "/no-cache" && req.header("if-none-match") == Some("\"v1\"") {
            return Reply::new(304, &h, "");
        }
        Reply::new(200, &h, format!("n={n}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    for (path, detail) in [("/no-store", "no-store"), ("/private", "private"), ("/cookie", "set-cookie"), ("/none", "no-freshness")] {
        for _ in 0..2 {
            let r = get(p.public, path).await;
            assert_eq!(r.header("x-cache"), "BYPASS", "{path}");
            assert_eq!(r.header("cache-status"), format!("portier; fwd=bypass; fwd-status=200; detail={detail}"), "{path}");
        }
        assert_eq!(o.count(path), 2, "{path} reached the origin every time");
    }
    // Set-Cookie reached the client on the uncached response.
    assert_eq!(get(p.public, "/cookie").await.header("set-cookie"), "session=abc");

    // no-cache: stored, but every use is revalidated (origin answers 304).
    assert_eq!(get(p.public, "/no-cache").await.header("x-cache"), "MISS");
    let r = get(p.public, "/no-cache").await;
    assert_eq!(r.header("x-cache"), "REVALIDATED");
    assert_eq!(r.text(), "n=1", "the stored body, confirmed by 304");
    assert_eq!(o.last("/no-cache").unwrap().header("if-none-match"), Some("\"v1\""));
    assert_eq!(o.count("/no-cache"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_needs_public_s_maxage_or_must_revalidate() {
    let o = Scripted::start(|req, n| {
        let cc = if req.target.starts_with("/public") { "public, max-age=60" } else { "max-age=60" };
        Reply::new(200, &[("cache-control", cc)], format!("n={n}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let auth = [("Authorization", "Bearer t")];
    for _ in 0..2 {
        assert_eq!(get_with(p.public, "/plain", &auth).await.header("x-cache"), "BYPASS");
    }
    assert_eq!(o.count("/plain"), 2);
    assert_eq!(get_with(p.public, "/public", &auth).await.header("x-cache"), "MISS");
    assert_eq!(get_with(p.public, "/public", &auth).await.header("x-cache"), "HIT");
    assert_eq!(o.count("/public"), 1);
}

/// RFC 9213: targeted fields are Structured Field Dictionaries; one that fails to parse as a
/// whole is ignored (Cache-Control governs). CDN-Cache-Control addresses every CDN on the
/// path and is forwarded; Portier-Cache-Control is Portier's alone and is removed.
#[tokio::test(flavor = "multi_thread")]
async fn targeted_fields_govern_portier_and_only_portiers_own_is_removed() {
    let o = Scripted::start(|req, n| match req.target.as_str() {
        "/cdn" => Reply::new(200, &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")], format!("n={n}")),
        "/broken" => Reply::new(200, &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60,")], format!("n={n}")),
        _ => Reply::new(200, &[("cache-control", "max-age=60"), ("portier-cache-control", "no-store")], format!("n={n}")),
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let r = get(p.public, "/cdn").await;
    assert_eq!(r.header("x-cache"), "MISS");
    assert_eq!(r.header("cache-control"), "no-store", "the browser still gets the origin's Cache-Control");
    assert_eq!(r.header("cdn-cache-control"), "max-age=60", "forwarded for the CDNs after Portier");
    let r = get(p.public, "/cdn").await;
    assert_eq!(r.header("x-cache"), "HIT");
    assert_eq!(r.header("cdn-cache-control"), "max-age=60", "stored with the response");
    for _ in 0..2 {
        let r = get(p.public, "/broken").await;
        assert_eq!(r.header("x-cache"), "BYPASS", "an unparseable CDN-Cache-Control is ignored: no-store governs");
        assert_eq!(r.header("cache-status"), "portier; fwd=bypass; fwd-status=200; detail=no-store");
    }
    let r = get(p.public, "/pcc").await;
    assert_eq!(r.header("x-cache"), "BYPASS");
    assert!(r.opt_header("portier-cache-control").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn route_overrides_and_cache_off() {
    let o = Scripted::start(|_, n| Reply::new(200, &[("content-type", "text/plain")], format!("n={n}"))).await;
    let cfg = format!(
        "[upstreams.o]\naddresses = [\"{a}\"]\n[[routes]]\npath = \"/off/*\"\npool = \"o\"\ncache = false\n[[routes]]\npath = \"/*\"\npool = \"o\"\nttl = \"30s\"\netag = \"generate\"\n",
        a = o.addr
    );
    let p = Portier::start(&cfg);
    assert_eq!(get(p.public, "/x").await.header("x-cache"), "MISS");
    let hit = get(p.public, "/x").await;
    assert_eq!(hit.header("x-cache"), "HIT", "route ttl applies when the origin says nothing");
    let etag = hit.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() == 26, "generated strong ETag: {etag}");
    let nm = get_with(p.public, "/x", &[("If-None-Match", &etag)]).await;
    assert_eq!(nm.status, 304);
    for _ in 0..2 {
        let r = get(p.public, "/off/y").await;
        assert_eq!(r.header("x-cache"), "BYPASS");
        assert_eq!(r.header("cache-status"), "portier; fwd=bypass; fwd-status=200");
    }
    assert_eq!(o.count("/off/y"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_origin_responses_expose_the_cache_headers_to_scripts() {
    let o = Scripted::start(|req, _| {
        if req.target == "/cors" {
            Reply::new(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("access-control-allow-origin", "https://app.example"),
                    ("access-control-expose-headers", "X-Total"),
                ],
                "c",
            )
        } else {
            Reply::new(200, &[("cache-control", "max-age=60")], "s")
        }
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    for _ in 0..2 {
        let r = get_with(p.public, "/cors", &[("Origin", "https://app.example")]).await;
        assert_eq!(r.header("access-control-expose-headers"), "X-Total, X-Cache, Age, ETag, Cache-Status, Server-Timing, X-Request-Id");
        assert_eq!(r.header("timing-allow-origin"), "https://app.example");
    }
    let same = get(p.public, "/same").await;
    assert!(same.opt_header("access-control-expose-headers").is_none(), "no CORS, nothing added");
}

/// RFC 9111 §5.1: a list `Age` uses its first member, an invalid one is ignored (the response
/// is not stale for it), and 2^31 or more means stale.
#[tokio::test(flavor = "multi_thread")]
async fn age_first_member_invalid_ignored_huge_is_stale() {
    let o = Scripted::start(|req, n| {
        let age = match req.target.as_str() {
            "/list" => "5, 100",
            "/bad" => "abc",
            _ => "2147483648",
        };
        Reply::new(200, &[("cache-control", "max-age=60"), ("age", age)], format!("{} #{n}", req.target))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    for path in ["/list", "/bad", "/huge"] {
        let r = get(p.public, path).await;
        assert_eq!(r.header("x-cache"), "MISS", "{path}: {r:?}");
    }
    let list = get(p.public, "/list").await;
    assert_eq!(list.header("x-cache"), "HIT");
    let a: u64 = list.header("age").parse().unwrap();
    assert!((5..=6).contains(&a), "the first member: {a}");
    let bad = get(p.public, "/bad").await;
    assert_eq!(bad.header("x-cache"), "HIT", "an invalid Age is ignored, not stale");
    assert!(bad.header("age").parse::<u64>().unwrap() <= 1);
    assert_ne!(get(p.public, "/huge").await.header("x-cache"), "HIT", "2^31 means stale");
    assert_eq!((o.count("/list"), o.count("/bad")), (1, 1));
    assert_eq!(o.count("/huge"), 2);
}

/// RFC 9110 §6.6.1: the origin's `Date` is forwarded, and a response served from the store
/// keeps the stored `Date` (its age is told by `Age`). Pingora 0.9 overwrote it with now;
/// Portier carries a patch for this (vendor/README.md).
#[tokio::test(flavor = "multi_thread")]
async fn date_is_the_origins_and_a_hit_keeps_the_stored_one() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(30));
    let d2 = date.clone();
    let o = Scripted::start(move |_, n| Reply::new(200, &[("cache-control", "max-age=600"), ("date", &d2)], format!("#{n}"))).await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let miss = get(p.public, "/d").await;
    assert_eq!((miss.header("x-cache"), miss.header("date")), ("MISS", date.as_str()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = get(p.public, "/d").await;
    assert_eq!((hit.header("x-cache"), hit.header("date")), ("HIT", date.as_str()), "the stored Date, not now");
    let age: u64 = hit.header("age").parse().unwrap();
    assert!((30..=33).contains(&age), "Age tells how old it is: {age}");
    // Portier's own answers get a Date of now.
    let r = get_with(p.public, "/", &[("Host", "bad/host")]).await;
    assert_eq!(r.status, 400);
    let own = httpdate::parse_http_date(r.header("date")).unwrap();
    assert!(std::time::SystemTime::now().duration_since(own).unwrap_or_default() < Duration::from_secs(3));
}

/// RFC 9110 §14.1.3: a range no byte satisfies is a 416 with `Content-Range: bytes */length`
/// (Pingora answered `bytes 100-99/100` for `bytes=-0` and `bytes 0-18446744073709551615/0`
/// for `bytes=-1` on an empty body); satisfiable ones still get a 206.
#[tokio::test(flavor = "multi_thread")]
async fn unsatisfiable_ranges_are_416() {
    let o = Scripted::start(|req, _| {
        let body = if req.target == "/empty" { String::new() } else { "x".repeat(100) };
        Reply::new(200, &[("cache-control", "max-age=60"), ("content-type", "application/octet-stream")], body)
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    for path in ["/empty", "/hundred"] {
        get(p.public, path).await;
    }
    for (path, range, length) in [("/empty", "bytes=-1", "0"), ("/hundred", "bytes=-0", "100"), ("/hundred", "bytes=200-", "100")] {
        let r = get_with(p.public, path, &[("Range", range)]).await;
        assert_eq!(r.status, 416, "{path} {range}: {r:?}");
        assert_eq!(r.header("content-range"), format!("bytes */{length}"), "{path} {range}");
    }
    let r = get_with(p.public, "/hundred", &[("Range", "bytes=-10")]).await;
    assert_eq!((r.status, r.header("content-range"), r.body.len()), (206, "bytes 90-99/100", 10));
}
