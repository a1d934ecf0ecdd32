//! Conditional requests: 304 from the edge (If-None-Match strong, weak, lists, `*`;
//! If-Modified-Since) on hits and misses, 412 for failed If-Match / If-Unmodified-Since, and
//! revalidation upstream whose 304 refreshes the entry with all of its headers.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::time::Duration;

const LM: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

async fn origin_with_validators() -> Scripted {
    Scripted::start(|_, n| {
        Reply::new(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"v1\""), ("last-modified", LM), ("content-type", "text/plain")],
            format!("n={n}"),
        )
    })
    .await
}

fn assert_304(r: &Resp, cache: &str) {
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), "\"v1\"");
    assert_eq!(r.header("cache-control"), "max-age=60");
    assert_eq!(r.header("x-cache"), cache);
    assert!(r.body.is_empty());
    assert!(r.opt_header("content-type").is_none(), "RFC 9110 §15.4.5: no representation metadata");
}

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_and_if_modified_since_on_a_hit() {
    let o = origin_with_validators().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get(p.public, "/c").await.header("x-cache"), "MISS");
    for inm in ["\"v1\"", "W/\"v1\"", "\"x\", \"v1\"", "*"] {
        let r = get_with(p.public, "/c", &[("If-None-Match", inm)]).await;
        assert_304(&r, "HIT");
        assert!(r.opt_header("age").is_some(), "{inm}: Age on a 304 built from the store");
    }
    let r = get_with(p.public, "/c", &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "n=1");
    assert_304(&get_with(p.public, "/c", &[("If-Modified-Since", LM)]).await, "HIT");
    let older = get_with(p.public, "/c", &[("If-Modified-Since", "Tue, 20 Oct 2015 07:28:00 GMT")]).await;
    assert_eq!(older.status, 200);
    assert_eq!(o.count("/c"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_on_a_miss_is_answered_304_and_the_full_response_stored() {
    let o = origin_with_validators().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let r = get_with(p.public, "/m", &[("If-None-Match", "\"v1\"")]).await;
    assert_304(&r, "MISS");
    assert!(o.last("/m").unwrap().header("if-none-match").is_none(), "the origin was asked for the full response");
    let full = get(p.public, "/m").await;
    assert_eq!(full.header("x-cache"), "HIT");
    assert_eq!(full.text(), "n=1");
    assert_eq!(o.count("/m"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_preconditions_are_412_from_the_store() {
    let o = origin_with_validators().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    get(p.public, "/p").await;
    let r = get_with(p.public, "/p", &[("If-Match", "\"v2\""), ("X-Request-Id", "pre")]).await;
    assert_eq!(r.status, 412);
    assert_eq!(r.header("x-cache"), "HIT", "a 412 answered from the store says so");
    assert!(r.header("cache-status").starts_with("portier; hit; ttl="), "{r:?}");
    assert_eq!(r.header("content-length"), "0");
    assert_eq!(r.header("x-request-id"), "pre");
    assert!(r.body.is_empty());
    assert_eq!(get_with(p.public, "/p", &[("If-Match", "\"v1\"")]).await.status, 200);
    assert_eq!(get_with(p.public, "/p", &[("If-Match", "W/\"v1\"")]).await.status, 412, "If-Match compares strongly");
    assert_eq!(get_with(p.public, "/p", &[("If-Unmodified-Since", "Tue, 20 Oct 2015 07:28:00 GMT")]).await.status, 412);
    assert_eq!(get_with(p.public, "/p", &[("If-Unmodified-Since", LM)]).await.status, 200);
    assert_eq!(o.count("/p"), 1);
    // Nothing stored: the full response is fetched and stored, and the precondition judged
    // against it.
    let r = get_with(p.public, "/fresh", &[("If-Match", "\"zz\"")]).await;
    assert_eq!((r.status, r.header("x-cache")), (412, "MISS"));
    assert_eq!(o.last("/fresh").unwrap().header("if-match"), None);
    assert_eq!(get(p.public, "/fresh").await.header("x-cache"), "HIT");
    assert_eq!(o.count("/fresh"), 1);
}

/// Bug: the 412 was judged against the primary slot's stored headers, whatever the request's
/// variant and however stale the entry.
#[tokio::test(flavor = "multi_thread")]
async fn preconditions_are_judged_against_the_right_variant_and_a_fresh_response() {
    let o = Scripted::start(|req, n| {
        let (etag, cc) = match (req.target.as_str(), req.header("x-v")) {
            ("/v", Some(v)) => (format!("\"{v}\""), "max-age=60"),
            ("/v", None) => ("\"none\"".to_string(), "max-age=60"),
            _ => (format!("\"v{n}\""), "max-age=1"),
        };
        Reply::new(200, &[("cache-control", cc), ("etag", &etag), ("vary", "X-V")], format!("{etag} #{n}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get_with(p.public, "/v", &[("X-V", "a")]).await.header("x-cache"), "MISS");
    let r = get_with(p.public, "/v", &[("X-V", "b"), ("If-Match", "\"b\"")]).await;
    assert_eq!((r.status, r.header("x-cache"), r.text()), (200, "MISS", "\"b\" #2".to_string()), "variant b, not a's ETag");
    let r = get_with(p.public, "/v", &[("X-V", "a"), ("If-Match", "\"b\"")]).await;
    assert_eq!((r.status, r.header("x-cache")), (412, "HIT"));

    assert_eq!(get(p.public, "/s").await.header("etag"), "\"v1\"");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get_with(p.public, "/s", &[("If-Match", "\"v2\"")]).await;
    assert_eq!(r.status, 200, "the stale entry's ETag is not the representation's any more: {r:?}");
    assert_eq!(r.header("etag"), "\"v2\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn revalidation_sends_validators_and_merges_every_header_of_the_304() {
    let o = Scripted::start(|req, n| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::new(
                304,
                &[("cache-control", "max-age=1"), ("etag", "\"v1\""), ("x-origin-n", &n.to_string()), ("x-extra", "from-304")],
                "",
            );
        }
        Reply::new(
            200,
            &[("cache-control", "max-age=1"), ("etag", "\"v1\""), ("x-origin-n", &n.to_string()), ("last-modified", LM)],
            "stored body",
        )
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get(p.public, "/r").await.header("x-origin-n"), "1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(p.public, "/r").await;

    assert_eq!(r.header("x-cache"), "REVALIDATED");
    assert_eq!(r.header("cache-status"), "portier; fwd=stale; fwd-status=304; ttl=1");
    assert_eq!(r.text(), "stored body");
    let seen = o.last("/r").unwrap();
    assert_eq!(seen.header("if-none-match"), Some("\"v1\""));
    assert_eq!(seen.header("if-modified-since"), Some(LM));
    assert_eq!(r.header("x-origin-n"), "2", "a custom header of the 304 replaced the stored one");
    assert_eq!(r.header("x-extra"), "from-304");
    let hit = get(p.public, "/r").await;
    assert_eq!(hit.header("x-cache"), "HIT");
    assert_eq!(hit.header("x-extra"), "from-304", "the merge was stored");
    assert_eq!(hit.header("last-modified"), LM, "stored fields the 304 did not send are kept");
    assert_eq!(o.count("/r"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_no_cache_and_only_if_cached() {
    let o = origin_with_validators().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let r = get_with(p.public, "/n", &[("Cache-Control", "only-if-cached")]).await;
    assert_eq!(r.status, 504);
    assert_eq!((r.header("x-cache"), r.header("cache-status")), ("MISS", "portier; detail=only-if-cached"));
    assert_eq!(o.count("/n"), 0);
    get(p.public, "/n").await;
    assert_eq!(get_with(p.public, "/n", &[("Cache-Control", "only-if-cached")]).await.header("x-cache"), "HIT");
    let r = get_with(p.public, "/n", &[("Cache-Control", "no-cache")]).await;
    assert_ne!(r.header("x-cache"), "HIT", "client no-cache goes to the origin");
    assert_eq!(o.count("/n"), 2);
    let r = get_with(p.public, "/n", &[("Pragma", "no-cache")]).await;
    assert_ne!(r.header("x-cache"), "HIT");
    assert_eq!(o.count("/n"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_directives_can_be_ignored_by_config() {
    let o = origin_with_validators().await;
    let p = Portier::start(&config_for(o.addr, "", "[cache]\nhonor_client_no_cache = false\n"));
    get(p.public, "/i").await;
    for h in [("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Pragma", "no-cache")] {
        assert_eq!(get_with(p.public, "/i", &[h]).await.header("x-cache"), "HIT", "{h:?} ignored");
    }
    // no-store from the client is still honoured: nothing it gets is stored.
    get_with(p.public, "/j", &[("Cache-Control", "no-store")]).await;
    assert_eq!(get(p.public, "/j").await.header("x-cache"), "MISS");
    assert_eq!(o.count("/i"), 1);
}

/// A `Set-Cookie` on the origin's 304 (a session renewed while revalidating) reaches the
/// client whose request revalidated, and is never stored for anyone else.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_cookie_on_a_revalidation_304_reaches_that_client_only() {
    let o = Scripted::start(|req, _| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::new(304, &[("cache-control", "max-age=1"), ("etag", "\"v1\""), ("set-cookie", "session=renewed; Path=/")], "");
        }
        Reply::new(200, &[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "stored body")
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    assert_eq!(get(p.public, "/c").await.header("x-cache"), "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(p.public, "/c").await;
    assert_eq!((r.header("x-cache"), r.text()), ("REVALIDATED", "stored body".to_string()));
    assert_eq!(r.opt_header("set-cookie"), Some("session=renewed; Path=/"), "{r:?}");
    let hit = get(p.public, "/c").await;
    assert_eq!(hit.header("x-cache"), "HIT");
    assert_eq!(hit.opt_header("set-cookie"), None, "the cookie was not stored");
    assert_eq!(o.count("/c"), 2);
}
