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
