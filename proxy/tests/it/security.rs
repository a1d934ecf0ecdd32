//! Cache poisoning and unbounded telemetry, tried as an attacker would over real sockets:
//! request targets that are not origin-form, a `Host` holding `/`, `Vary` on a non-ASCII
//! cookie, made-up methods. Each case stores nothing and changes nothing for other clients.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::time::Duration;

/// An origin that caches everything for a minute and names the target it received.
async fn echo_origin() -> Scripted {
    Scripted::start(|req, n| Reply::new(200, &[("cache-control", "public, max-age=60")], format!("{} #{n}", req.target))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_that_are_not_origin_form_are_refused_and_poison_nothing() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    // Double space before the target: Pingora escapes it to `%20/x`, which is not origin-form.
    for target in ["upload-123.html", "../x", "a:b/c", "\\\\x", " /x", "https://h/x", "ftp://h/x", "*", "/a/../x", "/a/%2e%2e/x"] {
        let r = get(p.public, target).await;
        assert_eq!(r.status, 400, "{target:?}: {r:?}");
        assert!(r.header("cache-control").contains("no-store"), "{target:?}");
        // Pingora itself refuses a few (no cache headers); Portier says why for the rest.
        if let Some(x) = r.opt_header("x-cache") {
            assert_eq!((x, r.header("cache-status")), ("BYPASS", "portier; detail=refused"), "{target:?}");
        }
    }
    assert!(o.seen().is_empty(), "nothing reached the origin: {:?}", o.seen());

    // `/` and `/x` were not poisoned: each is a miss fetched by its own target, then a hit.
    for path in ["/", "/x"] {
        let r = get(p.public, path).await;
        assert_eq!((r.status, r.header("x-cache"), r.text()), (200, "MISS", format!("{path} #1")));
        assert_eq!(get(p.public, path).await.header("x-cache"), "HIT");
    }

    // Absolute-form for this connection's scheme and Host is accepted, sent upstream as
    // origin-form and shares the `/x` key.
    let abs = format!("http://{}/x", p.public);
    let r = get(p.public, &abs).await;
    assert_eq!((r.status, r.header("x-cache"), r.text()), (200, "HIT", "/x #1".to_string()));
    let r = get(p.public, &format!("http://{}/y?q=1", p.public)).await;
    assert_eq!((r.header("x-cache"), r.text()), ("MISS", "/y?q=1 #1".to_string()));
    assert_eq!(o.last("/y?q=1").map(|s| s.header("host").map(str::to_string)), Some(Some(p.public.to_string())));
    let r = get_with(p.public, "http://other.example/x", &[]).await;
    assert_eq!(r.status, 400, "authority differs from Host: {r:?}");

    // `OPTIONS *` is the one asterisk-form, answered without the origin.
    let r = request(p.public, "OPTIONS", "*", &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let targets: Vec<String> = o.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(targets, ["/", "/x", "/y?q=1"], "the origin only ever saw checked origin-form targets");

    let logged = eventually(Duration::from_secs(5), async || p.stdout_lines().join("\n").contains(r#""path":"upload-123.html""#)).await;
    assert!(logged, "a refused target is logged as sent: {:?}", p.stdout_lines());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_is_not_host_and_port_is_refused() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let with_path = format!("{}/assets", p.public);
    for host in [with_path.as_str(), "v/a", "h h", "h:port", "u@h", "h?x", "[::1"] {
        let r = get_with(p.public, "/", &[("Host", host)]).await;
        assert_eq!(r.status, 400, "Host {host:?}: {r:?}");
    }
    let r = get_with(p.public, "/", &[("Host", "h"), ("Host", "h")]).await;
    assert_eq!(r.status, 400, "two Host fields");
    assert!(o.seen().is_empty(), "{:?}", o.seen());

    // `/assets/` was not filled with `/` by the `Host: .../assets` request.
    let r = get(p.public, "/assets/").await;
    assert_eq!((r.header("x-cache"), r.text()), ("MISS", "/assets/ #1".to_string()));
    // Case and the default port do not split the key.
    let r = get_with(p.public, "/k", &[("Host", "Example.org")]).await;
    assert_eq!(r.header("x-cache"), "MISS");
    let r = get_with(p.public, "/k", &[("Host", "example.org:80")]).await;
    assert_eq!(r.header("x-cache"), "HIT");
    let r = get_with(p.public, "/k", &[("Host", "example.org:8080")]).await;
    assert_eq!(r.header("x-cache"), "MISS", "another port is another origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_cookie_never_serves_one_users_page_to_another() {
    let o = Scripted::start(|req, n| {
        let who = req.header("cookie").map_or("anonymous".to_string(), |c| format!("page for cookie [{c}]"));
        Reply::new(200, &[("cache-control", "public, max-age=60"), ("vary", "Cookie")], format!("{who} #{n}"))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let alice = [("Cookie", "session=alice-secret; name=Jos\u{e9}")];
    let r = get_with(p.public, "/account", &alice).await;
    assert_eq!(r.header("x-cache"), "MISS");
    assert!(r.text().contains("alice-secret"), "{}", r.text());

    let anon = get(p.public, "/account").await;
    assert_eq!(anon.header("x-cache"), "MISS", "a client without the cookie is another variant");
    assert_eq!(anon.text(), "anonymous #2");
    let empty = get_with(p.public, "/account", &[("Cookie", "")]).await;
    assert!(!empty.text().contains("alice"), "{}", empty.text());
    assert_eq!(empty.header("x-cache"), "MISS", "an empty Cookie is neither absent nor Alice's");
    let bob = get_with(p.public, "/account", &[("Cookie", "session=bob; name=Jos\u{e8}")]).await;
    assert_eq!(bob.header("x-cache"), "MISS", "another non-ASCII value is another variant");
    assert!(bob.text().contains("session=bob"), "{}", bob.text());

    // Each variant is still a hit for its own client.
    let again = get_with(p.public, "/account", &alice).await;
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(again.text(), r.text());
    assert_eq!(get(p.public, "/account").await.text(), "anonymous #2");
    assert_eq!(o.count("/account"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_methods_do_not_grow_the_metrics() {
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    get(p.public, "/").await;
    let before = get(p.admin, "/metrics").await.text();
    for i in 0..40 {
        let r = request(p.public, &format!("M{i:05}XYZ"), "/", &[], b"").await.unwrap();
        assert_eq!(r.status, 200, "forwarded like any extension method");
    }
    let after = get(p.admin, "/metrics").await.text();
    assert!(!after.contains("XYZ"), "no client method became a label");
    let series = |t: &str| t.lines().filter(|l| l.starts_with("traces_spanmetrics_calls_total{")).count();
    assert_eq!(series(&after), series(&before) + 1, "one new series for every unknown method:\n{after}");
    let other = after
        .lines()
        .find(|l| l.starts_with("traces_spanmetrics_calls_total{") && l.contains(r#"http_method="_OTHER""#))
        .unwrap_or_else(|| panic!("an _OTHER series:\n{after}"));
    assert!(other.contains(r#"span_name="_OTHER /*""#), "{other}");
    assert!(other.ends_with(" 40"), "{other}");
    let logged = eventually(Duration::from_secs(5), async || p.stdout_lines().join("\n").contains(r#""method":"M00039XYZ""#)).await;
    assert!(logged, "the access log keeps the method as sent");
}
