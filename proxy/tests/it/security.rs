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

/// Unkeyed inputs from web-cache-poisoning research: fields frameworks read as the URL,
/// host, scheme or method never reach the origin, so a stored response is what a plain
/// request gets; a GET with a body and Content-Length beside Transfer-Encoding are refused.
#[tokio::test(flavor = "multi_thread")]
async fn unkeyed_inputs_never_change_what_is_stored() {
    let o = Scripted::start(|req, n| {
        let seen: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.starts_with("x-original")
                    || k.starts_with("x-rewrite")
                    || k.contains("override")
                    || k == "forwarded"
                    || k == "x-forwarded-scheme"
                    || k == "x-forwarded-port"
                    || k == "x-forwarded-prefix"
                    || k == "x-http-method"
                    || k.contains('_')
            })
            .map(|(k, v)| format!("{k}={v}"))
            .chain(req.header("x-forwarded-host").map(|h| format!("xfh={h}")))
            .chain(req.header("x-real-ip").map(|h| format!("xri={h}")))
            .collect();
        Reply::new(200, &[("cache-control", "max-age=60"), ("cache-tag", "page")], format!("{} {:?} #{n}", req.target, seen))
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let host = p.public.to_string();
    let attack = [
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Scheme", "nothttps"),
        ("Forwarded", "host=evil.example;proto=http"),
        ("X-Forwarded-Port", "1"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Real-IP", "6.6.6.6"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X_Forwarded_Host", "evil.example"),
    ];
    let r = get_with(p.public, "/page", &attack).await;
    assert_eq!(
        r.text(),
        format!("/page [\"xfh={host}\", \"xri=127.0.0.1\"] #1"),
        "the origin saw none of them, and Portier's own X-Forwarded-Host and X-Real-IP"
    );
    assert!(r.opt_header("cache-tag").is_none(), "tags stay inside");
    let plain = get(p.public, "/page").await;
    assert_eq!((plain.header("x-cache"), plain.text()), ("HIT", r.text()));

    // A body on GET: refused before the cache.
    let fat = request(p.public, "GET", "/page2", &[], b"{\"q\":1}").await.unwrap();
    assert_eq!(fat.status, 400, "{fat:?}");
    assert_eq!(o.count("/page2"), 0);

    // Content-Length with Transfer-Encoding (RFC 9112 §6.1): Pingora drops the Content-Length
    // (the origin sees chunked framing only) and Portier keeps the connection closing after
    // the answer, as the RFC requires (it used to turn keep-alive back on).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
    s.write_all(format!("POST /p HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut raw)).await.is_ok();
    let text = String::from_utf8_lossy(&raw);
    assert!(closed, "the connection is closed after the answer: {text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    assert_eq!(o.last("/p").and_then(|r| r.header("content-length").map(str::to_string)), None, "no Content-Length next to chunked");

    // Tags still work for purges even though clients never see them.
    let r = request(p.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"tag":"page"}"#).await.unwrap();
    assert_eq!(r.json()["purged"], 1);
}

/// RFC 9112 §9.3: an HTTP/1.0 request without `Connection: keep-alive` is answered on a
/// connection that then closes (Portier used to answer `keep-alive` and hold it open).
#[tokio::test(flavor = "multi_thread")]
async fn http10_without_keep_alive_is_closed_after_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = echo_origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
    s.write_all(format!("GET /old HTTP/1.0\r\nHost: {}\r\n\r\n", p.public).as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut raw)).await.is_ok();
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(closed, "closed after the answer: {text}");
    assert!(text.starts_with("http/1.1 200") && !text.contains("connection: keep-alive"), "{text}");
}

/// The admin API's purge and profiles: a bearer token when `listen.admin_token` is set, and
/// refused outright on an admin listener that is not loopback-only without one; health and
/// metrics stay open.
#[tokio::test(flavor = "multi_thread")]
async fn admin_purge_and_profiles_need_the_token_beyond_loopback() {
    let o = echo_origin().await;
    let body = br#"{"url":"/x"}"#;
    let with_token = Portier::start(&format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nadmin_token = \"t0k\"\n{}",
        config_for(o.addr, "", "")
    ));
    let r = request(with_token.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], body).await.unwrap();
    assert_eq!(r.status, 401);
    let r =
        request(with_token.admin, "POST", "/cache/purge", &[("Authorization", "Bearer wrong"), ("Content-Type", "application/json")], body)
            .await
            .unwrap();
    assert_eq!(r.status, 401);
    let r =
        request(with_token.admin, "POST", "/cache/purge", &[("Authorization", "Bearer t0k"), ("Content-Type", "application/json")], body)
            .await
            .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(get(with_token.admin, "/debug/pprof/profile?seconds=1").await.status, 401);

    let open = Portier::start(&format!("[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:0\"\n{}", config_for(o.addr, "", "")));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], open.admin.port()));
    let r = request(admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], body).await.unwrap();
    assert_eq!(r.status, 403, "no token on a public admin listener: refused");
    assert!(r.text().contains("admin_token"));
    assert_eq!(get(admin, "/metrics").await.status, 200, "metrics stay open for Prometheus");
    assert_eq!(get(admin, "/healthz").await.status, 200);
}

/// Responses: Portier's own HTTP version on the status line whatever the origin's (RFC 9110
/// §2.5), no `Content-Length` on a 204 (§8.6), and no cache status on an interim 103.
#[tokio::test(flavor = "multi_thread")]
async fn status_line_204_and_interim_responses() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = raw_origin(|req| {
        let answer: &[u8] = if req.starts_with("GET /old") {
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok"
        } else if req.starts_with("GET /empty") {
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nCache-Control: no-store\r\n\r\n"
        } else {
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nhi"
        };
        answer.to_vec()
    })
    .await;
    let p = Portier::start(&config_for(origin, "", ""));
    let raw = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", p.public).as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).to_ascii_lowercase()
    };
    let old = raw("/old").await;
    assert!(old.starts_with("http/1.1 200"), "{old}");
    let empty = raw("/empty").await;
    assert!(empty.starts_with("http/1.1 204") && !empty.contains("content-length"), "{empty}");
    let hints = raw("/hints").await;
    let (interim, rest) = hints.split_once("\r\n\r\n").unwrap();
    if interim.starts_with("http/1.1 103") {
        assert!(!interim.contains("x-cache") && !interim.contains("cache-status"), "{interim}");
    }
    assert!(rest.contains("x-cache: bypass") || interim.contains("x-cache: bypass"), "{hints}");
}

/// A web page in the operator's browser could purge every replica (a `text/plain` fetch),
/// reload the configuration (a cross-site form) and, by DNS rebinding, read `/ui/data`. The
/// admin listener now answers only Hosts that name it, takes POSTs only as JSON, and refuses
/// cross-site requests to its guarded endpoints.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_refuses_what_a_web_page_can_send() {
    let o = Scripted::start(|_, _| Reply::new(200, &[("cache-control", "max-age=60")], "page")).await;
    let p = Portier::start(&format!(
        "{}[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nadmin_hosts = [\"proxy\"]\n",
        config_for(o.addr, "", "")
    ));
    assert_eq!(get(p.public, "/x").await.header("x-cache"), "MISS");
    let admin = p.admin;
    let port = admin.port();
    let purge_all = br#"{"prefix":"/"}"#;
    // What a cross-site `fetch` can send without a preflight, and a form.
    for (ct, body, path) in [
        ("text/plain", &purge_all[..], "/cache/purge"),
        ("application/x-www-form-urlencoded", b"prefix=/", "/cache/purge"),
        ("multipart/form-data; boundary=x", b"--x--", "/config/reload"),
    ] {
        let r = request(admin, "POST", path, &[("Content-Type", ct)], body).await.unwrap();
        assert_eq!(r.status, 415, "{ct} to {path}: {r:?}");
    }
    let json = ("Content-Type", "application/json");
    for (name, value) in [("Origin", "http://evil.test"), ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Site", "same-site")] {
        let r = request(admin, "POST", "/cache/purge", &[json, (name, value)], purge_all).await.unwrap();
        assert_eq!(r.status, 403, "{name}: {value}: {r:?}");
        let r = request(admin, "GET", "/ui/data", &[(name, value)], b"").await.unwrap();
        assert_eq!(r.status, 403, "GET /ui/data with {name}: {value}");
    }
    assert_eq!(get(p.public, "/x").await.header("x-cache"), "HIT", "nothing was purged");
    // DNS rebinding: the page's own name in Host.
    for host in [format!("evil.test:{port}"), "evil.test".into(), format!("proxy.evil.test:{port}")] {
        let r = request(admin, "GET", "/ui/data", &[("Host", host.as_str())], b"").await.unwrap();
        assert_eq!(r.status, 421, "Host {host}: {r:?}");
        assert_eq!(request(admin, "GET", "/metrics", &[("Host", host.as_str())], b"").await.unwrap().status, 421);
    }
    for host in
        [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("grafana.localhost:{port}"), "proxy:9901".into(), "[::1]".into()]
    {
        let r = request(admin, "GET", "/ui/data", &[("Host", host.as_str())], b"").await.unwrap();
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
    }
    // The operator page's own purge (same origin, JSON) works, and so does a tool's.
    let origin = format!("http://127.0.0.1:{port}");
    let r = request(admin, "POST", "/cache/purge", &[json, ("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")], purge_all)
        .await
        .unwrap();
    assert_eq!((r.status, r.json()["purged"].as_u64()), (200, Some(1)), "{r:?}");
    let out = std::process::Command::new(bin()).args(["reload", "--admin", &admin.to_string()]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("reloaded"), "portier reload still works: {out:?}");
}
