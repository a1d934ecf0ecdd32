//! Access control over real sockets: Basic authentication with bcrypt hashes (made by
//! `portier hash-password`, and the `$2y$` spelling htpasswd writes), checked before the cache;
//! allow/deny by client address from 127.0.0.2 vs 127.0.0.1; X-Forwarded-For believed only
//! from a trusted proxy.

use crate::common::scripted::{Reply, Scripted};
use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn hash(password: &str) -> String {
    let mut child =
        Command::new(bin()).args(["hash-password", "--cost", "4"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn config(origin: std::net::SocketAddr, admin_hash: &str, ops_hash: &str, trusted: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [{trusted}]\n[upstreams.o]\naddresses = [\"{origin}\"]\n\
         [[routes]]\npath = \"/admin/*\"\npool = \"o\"\nbasic_auth = {{ realm = \"Grafana\", users = {{ admin = \"{admin_hash}\", ops = \"{ops_hash}\" }} }}\n\
         [[routes]]\npath = \"/internal/*\"\npool = \"o\"\nallow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.2\"]\n\
         [[routes]]\npath = \"/*\"\npool = \"o\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_is_checked_before_the_cache() {
    // `public`: storable even for requests with Authorization (RFC 9111 §3.5).
    let o = Scripted::start(|req, n| Reply::new(200, &[("cache-control", "public, max-age=60")], format!("{} #{n}", req.target))).await;
    let admin = hash("s3cret");
    assert!(admin.starts_with("$2b$04$") && admin.len() == 60, "{admin}");
    let ops = hash("ops-pass").replacen("$2b$", "$2y$", 1);
    let p = Portier::start(&config(o.addr, &admin, &ops, ""));

    let r = get(p.public, "/admin/x").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), "Basic realm=\"Grafana\", charset=\"UTF-8\"");
    assert_eq!((r.header("x-cache"), r.header("cache-status")), ("BYPASS", "portier; detail=unauthorized"));
    let good = basic("admin", "s3cret");
    let r = get_with(p.public, "/admin/x", &[("Authorization", &good)]).await;
    assert_eq!((r.status, r.header("x-cache")), (200, "MISS"));
    let r = get_with(p.public, "/admin/x", &[("Authorization", &good)]).await;
    assert_eq!((r.status, r.header("x-cache")), (200, "HIT"));
    for auth in [None, Some(basic("admin", "wrong")), Some(basic("nobody", "s3cret")), Some("Basic !!!".to_string())] {
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = get_with(p.public, "/admin/x", &h).await;
        assert_eq!(r.status, 401, "{auth:?}: the stored response is never served without the password");
        assert!(!r.text().contains("#1"));
    }
    let r = get_with(p.public, "/admin/y", &[("Authorization", &basic("ops", "ops-pass"))]).await;
    assert_eq!(r.status, 200, "a $2y$ hash (htpasswd -B) is accepted");
    assert_eq!(o.count("/admin/x"), 1);
    assert_eq!(get(p.public, "/open").await.status, 200, "other routes need no password");
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_and_deny_by_client_address() {
    let o = Scripted::start(|req, _| Reply::new(200, &[], req.target.to_string())).await;
    let p = Portier::start(&config(o.addr, &hash("x"), &hash("y"), ""));
    let from = |ip: &str| ip.parse::<std::net::IpAddr>().unwrap();
    let r = request_from(from("127.0.0.1"), p.public, "GET", "/internal/a", &[], b"").await.unwrap();
    assert_eq!(r.status, 200);
    let r = request_from(from("127.0.0.2"), p.public, "GET", "/internal/a", &[], b"").await.unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("cache-status"), "portier; detail=forbidden");
    // A client cannot talk its way in with X-Forwarded-For when no proxy is trusted.
    let r = request_from(from("127.0.0.2"), p.public, "GET", "/internal/a", &[("X-Forwarded-For", "127.0.0.1")], b"").await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(o.count("/internal/a"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let o = Scripted::start(|req, _| Reply::new(200, &[], req.header("x-forwarded-for").unwrap_or("-").to_string())).await;
    let p = Portier::start(&config(o.addr, &hash("x"), &hash("y"), "\"127.0.0.1\""));
    let from = |ip: &str| ip.parse::<std::net::IpAddr>().unwrap();
    // 127.0.0.1 is a trusted proxy: the client it reports (127.0.0.2) is denied.
    let r = request_from(from("127.0.0.1"), p.public, "GET", "/internal/a", &[("X-Forwarded-For", "127.0.0.2")], b"").await.unwrap();
    assert_eq!(r.status, 403);
    let r = request_from(from("127.0.0.1"), p.public, "GET", "/internal/b", &[("X-Forwarded-For", "127.0.0.3")], b"").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "127.0.0.3".to_string()), "the origin sees the real client");
    // 127.0.0.2 is not trusted: what it says is ignored, and it is denied itself.
    let r = request_from(from("127.0.0.2"), p.public, "GET", "/internal/c", &[("X-Forwarded-For", "127.0.0.3")], b"").await.unwrap();
    assert_eq!(r.status, 403);
}

/// Behind a trusted proxy, an `X-Forwarded-For` hop that cannot be read makes the client
/// unknown, which no `allow` matches: it used to fall back to the proxy's own (allowed)
/// address. `ip:port` hops are understood, and IPv4-mapped ranges mean their IPv4 range.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_forwarded_for_fails_closed() {
    let o = Scripted::start(|req, _| Reply::new(200, &[], req.target.to_string())).await;
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[upstreams.o]\naddresses = [\"{}\"]\n\
         [[routes]]\npath = \"/intranet/*\"\npool = \"o\"\nallow = [\"127.0.0.0/8\"]\n\
         [[routes]]\npath = \"/mapped/*\"\npool = \"o\"\nallow = [\"::ffff:127.0.0.0/104\"]\n\
         [[routes]]\npath = \"/*\"\npool = \"o\"\n",
        o.addr
    );
    let p = Portier::start(&cfg);
    let proxy = "127.0.0.1".parse().unwrap();
    for (xff, status) in [
        ("127.0.0.5", 200),
        ("127.0.0.5:4711", 200),
        ("6.6.6.6:4711", 403),
        ("[2001:db8::1]:443", 403),
        ("", 403),
        ("unknown", 403),
        ("6.6.6.\u{ff}", 403),
        ("127.0.0.5, junk", 403),
    ] {
        let r = request_from(proxy, p.public, "GET", "/intranet/x", &[("X-Forwarded-For", xff)], b"").await.unwrap();
        assert_eq!(r.status, status, "X-Forwarded-For: {xff:?}: {r:?}");
    }
    let r = request_from(proxy, p.public, "GET", "/mapped/x", &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "::ffff:127.0.0.0/104 is 127.0.0.0/8");
    let r = request_from(proxy, p.public, "GET", "/mapped/x", &[("X-Forwarded-For", "6.6.6.6")], b"").await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(o.seen().iter().filter(|s| s.target.starts_with("/intranet/")).count(), 2, "only the two readable intranet hops");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg.replace("::ffff:127.0.0.0/104", "::fffe:0:0/95")).unwrap();
    let out = std::process::Command::new(bin()).arg("check").arg("--config").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("routes[1].allow") && text.contains("IPv4-mapped"), "{text}");
}

/// One canonical path and host for every spelling (target.rs): with `/admin/*` behind a
/// password and `/*` open, every spelling an origin reads as `/admin/x` is asked for the
/// password, on every protocol, in front of a real nginx (which decodes `%61` and merges
/// `//` itself: asked directly, it serves the admin page for each of them).
#[tokio::test(flavor = "multi_thread")]
async fn path_and_host_spellings_do_not_walk_past_the_rules() {
    use crate::common::client::{Front, Proto};
    let nginx = crate::common::nginx::Nginx::start();
    for spelling in ["/%61dmin/x", "/%61%64%6d%69%6e/x", "//admin/x"] {
        let r = get_with(nginx.addr, spelling, &[("Host", "a.test")]).await;
        assert_eq!((r.status, r.text().as_str()), (200, "the admin page"), "nginx itself reads {spelling} as /admin/x");
    }
    let direct = nginx.log().len();
    let cfg = format!(
        "[upstreams.o]\naddresses = [\"{}\"]\n\
         [[routes]]\nhost = \"admin.test\"\npath = \"/*\"\npool = \"o\"\nbasic_auth = {{ realm = \"host\", users = {{ admin = \"{h}\" }} }}\n\
         [[routes]]\npath = \"/admin/*\"\npool = \"o\"\nbasic_auth = {{ realm = \"path\", users = {{ admin = \"{h}\" }} }}\n\
         [[routes]]\npath = \"/*\"\npool = \"o\"\n",
        nginx.addr,
        h = hash("pw")
    );
    let f = Front::start(&cfg);
    for proto in Proto::ALL {
        for spelling in ["/admin/x", "/%61dmin/x", "/%61%64%6d%69%6e/x", "//admin/x", "/ADMIN/x", "/Admin/x", "///%61dmin//x"] {
            let r = f.get(proto, spelling, &[]).await;
            assert_eq!(r.status, 401, "{proto:?} {spelling}: {r:?}");
            assert!(!r.text().contains("the admin page"));
        }
        for spelling in ["/admin;/x", "/admin%2fx", "/admin%2Fx", "/adm%00in/x", "/admin%5cx"] {
            let r = f.get(proto, spelling, &[]).await;
            assert_eq!(r.status, 400, "{proto:?} {spelling}: {r:?}");
        }
        let ok = f.get(proto, "/%61dmin/x", &[("authorization", &basic("admin", "pw"))]).await;
        assert_eq!((ok.status, ok.text().as_str()), (200, "the admin page"), "{proto:?}: with the password");
    }
    // Host spellings against the host-scoped route (plain HTTP/1.1: Host is what is spelled).
    let public = f.portier.public;
    for host in ["admin.test", "admin.test.", "ADMIN.test.", "admin.test.:80"] {
        let r = get_with(public, "/page.html", &[("Host", host)]).await;
        assert_eq!((r.status, r.header("www-authenticate")), (401, "Basic realm=\"host\", charset=\"UTF-8\""), "Host {host:?}");
    }
    for host in ["admin%2etest", "admin..test", "%61dmin.test"] {
        assert_eq!(get_with(public, "/page.html", &[("Host", host)]).await.status, 400, "Host {host:?}");
    }
    // What nginx was asked: the canonical path, never a spelling.
    let asked: Vec<String> = nginx.log().into_iter().skip(direct).map(|(_, uri, _)| uri).collect();
    assert_eq!(asked, vec!["/admin/x"; Proto::ALL.len()], "one authorised request per protocol, each for /admin/x");
}

/// Password checks run off the worker thread: with one worker thread and attackers sending
/// wrong passwords (cost-10 bcrypt, ~260 ms each in this debug build) from many addresses,
/// over HTTP/1.1 and HTTP/2, an unrelated cache hit keeps its latency. One address that keeps
/// failing is told to wait (429 with Retry-After) and checked no more, even with the right
/// password, until the wait is over.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_stall_no_one_and_are_rate_limited() {
    use crate::common::client::{Front, Proto};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let o = Scripted::start(|req, _| Reply::new(200, &[("cache-control", "max-age=600")], req.target.to_string())).await;
    let h = {
        let mut child =
            Command::new(bin()).args(["hash-password", "--cost", "10"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"right\n").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
    };
    let cfg = format!(
        "[server]\nthreads = 1\n[upstreams.o]\naddresses = [\"{}\"]\n\
         [[routes]]\npath = \"/admin/*\"\npool = \"o\"\nbasic_auth = {{ realm = \"r\", users = {{ u = \"{h}\" }} }}\n\
         [[routes]]\npath = \"/*\"\npool = \"o\"\n",
        o.addr
    );
    let f = Arc::new(Front::start(&cfg));
    let public = f.portier.public;
    assert_eq!(get(public, "/hit").await.header("x-cache"), "MISS");
    let hit_ms = async || {
        let t = Instant::now();
        let r = get(public, "/hit").await;
        assert_eq!(r.header("x-cache"), "HIT");
        t.elapsed().as_secs_f64() * 1000.0
    };
    let mut quiet = Vec::new();
    for _ in 0..10 {
        quiet.push(hit_ms().await);
    }

    // Six attackers from six addresses over HTTP/1.1, two over HTTP/2, each a wrong password
    // after another, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..8u8 {
        let (f, stop) = (f.clone(), stop.clone());
        attackers.push(tokio::spawn(async move {
            let wrong = basic("u", &format!("guess{i}"));
            let source: std::net::IpAddr = format!("127.0.2.{}", i + 1).parse().unwrap();
            let mut answered = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = if i < 6 {
                    request_from(source, public, "GET", "/admin/x", &[("Authorization", &wrong)], b"").await
                } else {
                    f.send(Proto::H2Tls, "GET", "/admin/x", &[("authorization", &wrong)], b"").await
                };
                if r.is_ok_and(|r| matches!(r.status, 401 | 429 | 503)) {
                    answered += 1;
                }
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut loaded = Vec::new();
    for _ in 0..20 {
        loaded.push(hit_ms().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut answered = 0;
    for a in attackers {
        answered += a.await.unwrap();
    }
    quiet.sort_by(f64::total_cmp);
    loaded.sort_by(f64::total_cmp);
    let (q50, l50, l90) = (quiet[5], loaded[10], loaded[18]);
    eprintln!("hit latency: quiet median {q50:.1} ms; under attack median {l50:.1} ms, p90 {l90:.1} ms; {answered} attack answers");
    assert!(answered >= 8, "the attackers were answered ({answered})");
    assert!(l50 < 50.0 && l90 < 150.0, "hits under attack: median {l50:.1} ms, p90 {l90:.1} ms (quiet median {q50:.1} ms): {loaded:?}");

    // One address, failing again and again: after five failures it waits, right password or not.
    let from: std::net::IpAddr = "127.0.3.1".parse().unwrap();
    for n in 0..5 {
        let r = request_from(from, public, "GET", "/admin/x", &[("Authorization", &basic("u", "nope"))], b"").await.unwrap();
        assert_eq!(r.status, 401, "failure {n}");
    }
    let r = request_from(from, public, "GET", "/admin/x", &[("Authorization", &basic("u", "right"))], b"").await.unwrap();
    assert_eq!((r.status, r.header("retry-after")), (429, "1"), "{r:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = request_from(from, public, "GET", "/admin/x", &[("Authorization", &basic("u", "right"))], b"").await.unwrap();
    assert_eq!(r.status, 200, "after the wait, the right password works and clears the failures");
    let m = get(f.portier.admin, "/metrics").await.text();
    assert!(metric_value(&m, r#"auth_checks_total{outcome="rate_limited"}"#) >= Some(1.0), "{m}");
    assert!(metric_value(&m, r#"auth_checks_total{outcome="failed"}"#) >= Some(5.0), "{m}");
    assert_eq!(metric_value(&m, r#"auth_checks_total{outcome="verified"}"#), Some(1.0), "{m}");
}
