//! The frame: routing, forwarding, request ids, error pages, health checks, config checks,
//! env overrides and graceful shutdown, each over real sockets.

use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_path_and_host_first_match_wins() {
    let api = origin().await;
    let web = origin().await;
    let tenant = origin().await;
    let cfg = format!(
        r#"
[upstreams.api]
addresses = ["{}"]
[upstreams.web]
addresses = ["{}"]
[upstreams.tenant]
addresses = ["{}"]
[[routes]]
host = "*.tenant.test"
path = "/*"
pool = "tenant"
[[routes]]
path = "/api/*"
pool = "api"
[[routes]]
path = "/health"
pool = "api"
[[routes]]
path = "/*"
pool = "web"
"#,
        api.addr, web.addr, tenant.addr
    );
    let p = Portier::start(&cfg);
    assert_eq!(get(p.public, "/api/games?username=x").await.status, 200);
    assert_eq!(get(p.public, "/health").await.status, 200);
    assert_eq!(get(p.public, "/assets/app.js").await.status, 200);
    let r = get_with(p.public, "/api/games?username=t", &[("Host", "a.tenant.test:8080")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(api.state.hits("/api/games?username=x"), 1);
    assert_eq!(api.state.hits("/health"), 1);
    assert_eq!(web.state.hits("/assets/app.js"), 1);
    assert_eq!(api.state.hits("/assets/app.js") + tenant.state.hits("/assets/app.js"), 0);
    assert_eq!(tenant.state.hits("/api/games?username=t"), 1);
    assert_eq!(api.state.hits("/api/games?username=t"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_a_404_naming_the_request_id() {
    let api = origin().await;
    let cfg = format!("[upstreams.api]\naddresses = [\"{}\"]\n[[routes]]\npath = \"/api/*\"\npool = \"api\"\n", api.addr);
    let p = Portier::start(&cfg);
    let r = get(p.public, "/nowhere").await;
    assert_eq!(r.status, 404);
    assert_eq!((r.header("x-cache"), r.header("cache-status")), ("BYPASS", "portier; detail=no-route"));
    let id = r.header("x-request-id").to_string();
    assert_eq!(r.text(), format!("404 Not Found: no route matches this request (request id {id})\n"));
    assert_eq!(api.state.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_is_forwarded_with_its_body() {
    let api = origin().await;
    let p = Portier::start(&two_pool_config(api.addr, api.addr));
    // GET too, but not with a body on a cached route: see security::unkeyed_inputs_never_change_what_is_stored.
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "REPORT", "FROBNICATE"] {
        let body = format!("body for {method}");
        let r = request(p.public, method, "/api/echo?q=1", &[("Content-Type", "text/plain")], body.as_bytes()).await.unwrap();
        assert_eq!(r.status, 200, "{method}: {r:?}");
        let v = r.json();
        assert_eq!(v["method"], method);
        assert_eq!(v["query"], "q=1");
        assert_eq!(v["body"], body, "{method}");
    }
    let head = request(p.public, "HEAD", "/api/echo", &[], b"").await.unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let fat = request(p.public, "GET", "/api/echo?q=1", &[("Content-Type", "text/plain")], b"body").await.unwrap();
    assert_eq!(fat.status, 400, "a GET with a body on a cached route");
    assert_eq!(api.state.hits("/api/echo?q=1"), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_and_request_id() {
    let api = origin().await;
    let p = Portier::start(&two_pool_config(api.addr, api.addr));
    let r = get_with(p.public, "/api/echo", &[("Host", "shop.example:8080"), ("X-Forwarded-For", "6.6.6.6")]).await;
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "client-sent XFF is replaced, not trusted");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8080");
    assert_eq!(h["host"], "shop.example:8080", "Host passes through unchanged");
    let id = r.header("x-request-id");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(h["x-request-id"], id, "the origin sees the id the client gets back");

    let r = get_with(p.public, "/api/echo", &[("X-Request-Id", "trace-abc.123")]).await;
    assert_eq!(r.header("x-request-id"), "trace-abc.123");
    assert_eq!(r.json()["headers"]["x-request-id"], "trace-abc.123");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_upstream_is_a_502_naming_the_request_id() {
    let dead = closed_port();
    let p = Portier::start(&two_pool_config(dead, dead));
    let start = Instant::now();
    let r = get_with(p.public, "/api/stats/summary?username=demo", &[("X-Request-Id", "req-502")]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-request-id"), "req-502");
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!((r.header("x-cache"), r.header("cache-status")), ("MISS", "portier; fwd=miss; detail=origin-unreachable"));
    assert_eq!(r.text(), "502 Bad Gateway: the upstream could not be reached or sent an invalid response (request id req-502)\n");
    assert!(start.elapsed() < Duration::from_secs(3), "no hang: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_a_504_after_the_read_timeout() {
    let api = origin().await;
    let cfg = format!("[timeouts]\nread = \"300ms\"\n{}", two_pool_config(api.addr, api.addr));
    let p = Portier::start(&cfg);
    let start = Instant::now();
    let r = get_with(p.public, "/api/slow?ms=3000", &[("X-Request-Id", "req-504")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.text(), "504 Gateway Timeout: the upstream did not answer in time (request id req-504)\n");
    assert_eq!(r.header("cache-status"), "portier; fwd=miss; detail=origin-timeout");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "answered after the timeout, not the origin: {took:?}");
    // A GET that timed out is not retried: the origin saw it once.
    assert_eq!(api.state.hits("/api/slow?ms=3000"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_address_is_skipped_after_health_checks_and_readyz_says_so() {
    let live = origin().await;
    let dead = closed_port();
    let cfg = format!(
        r#"
[upstreams.api]
addresses = ["{dead}", "{live}"]
max_fails = 0
health_check = {{ path = "/health", interval = "200ms", timeout = "500ms" }}
[upstreams.other]
addresses = ["{dead}"]
health_check = {{ path = "/health", interval = "200ms", timeout = "500ms" }}
[[routes]]
path = "/api/*"
pool = "api"
[[routes]]
path = "/*"
pool = "other"
"#,
        live = live.addr
    );
    let p = Portier::start(&cfg);
    let ready = eventually(Duration::from_secs(5), async || {
        let r = get(p.admin, "/readyz").await;
        r.json()["pools"]["api"]["addresses"][0]["healthy"] == false
    })
    .await;
    assert!(ready, "health check marks the dead address down");
    let r = get(p.admin, "/readyz").await;
    assert_eq!(r.status, 503, "pool 'other' has no healthy address");
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["pools"]["api"]["ready"], true);
    assert_eq!(v["pools"]["other"]["ready"], false);
    assert_eq!(v["pools"]["other"]["addresses"][0]["address"], dead.to_string());

    let before = live.state.total();
    for _ in 0..10 {
        assert_eq!(get(p.public, "/api/echo?n=1").await.status, 200);
    }
    assert_eq!(live.state.hits("/api/echo?n=1"), 10, "every request reached the live address");
    assert!(live.state.total() - before >= 10);
    assert_eq!(get(p.admin, "/healthz").await.json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failure_is_retried_on_the_next_address() {
    let live = origin().await;
    let dead = closed_port();
    // No health check: only the retry on connect failure can save these requests.
    let cfg = format!(
        "[upstreams.api]\naddresses = [\"{dead}\", \"{}\"]\nmax_fails = 100\n[[routes]]\npath = \"/*\"\npool = \"api\"\n",
        live.addr
    );
    let p = Portier::start(&cfg);
    for i in 0..6 {
        let r = request(p.public, "POST", &format!("/api/echo?i={i}"), &[], b"x").await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn env_overrides_upstream_addresses() {
    let api = origin().await;
    let dead = closed_port();
    let p = Portier::start_with_env(&two_pool_config(dead, dead), &[("PORTIER_UPSTREAM_API", &api.addr.to_string())]);
    assert_eq!(get(p.public, "/health").await.status, 200);
    assert_eq!(api.state.hits("/health"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish() {
    let api = origin().await;
    let cfg = format!("[server]\ngrace_period = \"5s\"\n{}", two_pool_config(api.addr, api.addr));
    let mut p = Portier::start(&cfg);
    let addr = p.public;
    let slow = tokio::spawn(async move { request(addr, "GET", "/api/slow?ms=1200", &[], b"").await });
    assert!(eventually(Duration::from_secs(2), async || api.state.hits("/api/slow?ms=1200") == 1).await);
    p.signal(libc::SIGTERM);
    let r = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["slept_ms"], 1200);
    let st = tokio::task::spawn_blocking(move || {
        let st = p.wait_exit(Duration::from_secs(5));
        (st, p.stdout_lines())
    })
    .await
    .unwrap();
    let (status, lines) = st;
    assert!(status.expect("exits within the grace period").success());
    assert!(
        lines.iter().any(|l| l.contains("\"event\":\"shutdown_complete\"") && l.contains("\"in_flight_abandoned\":\"0\"")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"event\":\"request\"") && l.contains("\"path\":\"/api/slow\"")),
        "the last request's access log line is written before exit: {lines:?}"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// Keep-alive clients with requests in flight at SIGTERM get their answers, each saying
/// `Connection: close`, and then the close: none is left sending into a dead socket.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_tells_keep_alive_clients_to_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = origin().await;
    let cfg = format!("[server]\ngrace_period = \"5s\"\n{}", two_pool_config(api.addr, api.addr));
    let p = Portier::start(&cfg);
    let mut conns = Vec::new();
    for i in 0..3 {
        let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
        // A first exchange proves the connection is kept alive.
        s.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", p.public).as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(first.starts_with("http/1.1 200") && first.contains("connection: keep-alive"), "{first}");
        s.write_all(format!("GET /api/slow?ms=800&c={i} HTTP/1.1\r\nHost: {}\r\n\r\n", p.public).as_bytes()).await.unwrap();
        conns.push(s);
    }
    assert!(eventually(Duration::from_secs(3), async || (0..3).all(|i| api.state.hits(&format!("/api/slow?ms=800&c={i}")) == 1)).await);
    p.signal(libc::SIGTERM);
    for mut s in conns {
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(closed.is_ok(), "the server closed after the answer: {text}");
        assert!(text.starts_with("http/1.1 200") && text.contains("connection: close"), "{text}");
    }
}

/// Bug: the process exited with status 0 even when it abandoned requests at the end of the
/// grace period.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_non_zero_when_requests_are_abandoned() {
    let api = origin().await;
    let cfg = format!("[server]\ngrace_period = \"300ms\"\n{}", two_pool_config(api.addr, api.addr));
    let mut p = Portier::start(&cfg);
    let addr = p.public;
    let slow = tokio::spawn(async move { request(addr, "GET", "/api/slow?ms=4000", &[], b"").await });
    assert!(eventually(Duration::from_secs(2), async || api.state.hits("/api/slow?ms=4000") == 1).await);
    p.signal(libc::SIGTERM);
    let (status, lines) = tokio::task::spawn_blocking(move || (p.wait_exit(Duration::from_secs(5)), p.stdout_lines())).await.unwrap();
    let status = status.expect("exits at the end of the grace period");
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("\"in_flight_abandoned\":\"1\"")), "{lines:?}");
    slow.abort();
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin()).arg("check").arg("--config").arg(&path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_accepts_the_shipped_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/portier.toml");
    let out = std::process::Command::new(bin()).arg("check").arg("--config").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (3 upstream pools, 4 routes)"));
    let grafana = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/public-grafana.toml");
    let out = std::process::Command::new(bin()).arg("check").arg("--config").arg(grafana).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_accepts_the_front_of_the_scaled_stack_and_explains_shared_cache_mistakes() {
    let front = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/front.toml");
    let out = std::process::Command::new(bin()).arg("check").arg("--config").arg(front).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 upstream pools, 1 routes)"));
    let base = "[upstreams.api]\naddresses = [\"127.0.0.1:3001\"]\n[[routes]]\npath = \"/api/*\"\npool = \"api\"\n";
    let (ok, out) = check(&format!("{base}[cache.shared]\nurl = \"http://u:secret@cache:6379\"\n"));
    assert!(!ok);
    assert!(out.contains("cache.shared.url: \"http://u:***@cache:6379\": expected redis://host:port/db or rediss://"), "{out}");
    assert!(!out.contains("secret"), "the password is never printed: {out}");
    let (ok, out) = check(&format!("{base}[cache.shared]\nurl = \"redis://cache:6379/0\"\ntimeout = \"0s\"\nprefix = \"\"\n"));
    assert!(!ok);
    assert!(
        out.contains("cache.shared.timeout: must be greater than 0") && out.contains("cache.shared.prefix: must be non-empty"),
        "{out}"
    );
}

#[test]
fn check_names_the_key_path_of_each_problem() {
    let base = "[upstreams.api]\naddresses = [\"127.0.0.1:3001\"]\n[[routes]]\npath = \"/api/*\"\npool = \"api\"\n";
    let (ok, out) = check(&format!("{base}[timeouts]\nconect = \"2s\"\n"));
    assert!(!ok);
    assert!(out.contains("timeouts.conect: unknown field `conect`, expected one of"), "{out}");

    let (ok, out) = check(&format!("{base}[timeouts]\nread = \"30 seconds\"\n"));
    assert!(!ok);
    assert!(out.contains("timeouts.read: invalid duration \"30 seconds\""), "{out}");

    let (ok, out) = check(&base.replace("pool = \"api\"", "pool = \"backend\""));
    assert!(!ok);
    assert!(out.contains("routes[0].pool: unknown upstream \"backend\"; defined pools: api"), "{out}");

    // Problems in different places are all reported in one run.
    let all =
        format!("{}[timeouts]\nconect = \"2s\"\n[server]\ngrace_period = \"soon\"\n", base.replace("pool = \"api\"", "pool = \"backend\""));
    let (ok, out) = check(&all);
    assert!(!ok);
    assert!(out.contains(": 3 problems"), "{out}");
    for key in [":5:1: routes[0].pool: ", ":7:1: timeouts.conect: ", ":9:1: server.grace_period: invalid duration \"soon\""] {
        assert!(out.contains(key), "line, column and key path {key} in {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn error_pages_announce_that_the_connection_closes() {
    let dead = closed_port();
    let p = Portier::start(&two_pool_config(dead, dead));
    // A keep-alive request (no Connection: close from the client).
    let mut s = tokio::net::TcpStream::connect(p.public).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 502"), "{text}");
    assert!(text.contains("connection: close"), "the client is told not to reuse the socket: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_proxy_mode_needs_no_config_file() {
    let api = origin().await;
    let mut child = std::process::Command::new(bin())
        .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--upstream"])
        .arg(format!("http://{}", api.addr))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out).lines().map_while(Result::ok).find(|l| l.contains("\"event\":\"listening\""))
    })
    .await
    .unwrap()
    .expect("listening event");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let public: std::net::SocketAddr = v["public"].as_str().unwrap().parse().unwrap();
    let r = get(public, "/api/stats/summary?username=demo").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), "MISS", "the same defaults as a config file: cache on");
    assert_eq!(get(public, "/api/stats/summary?username=demo").await.header("x-cache"), "HIT");
    let _ = child.kill();
    let _ = child.wait();
    let bad = std::process::Command::new(bin()).args(["proxy", "--upstream", "https://x:1"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("only http:// upstreams are supported"));
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_subcommand_reads_the_admin_listener() {
    let api = origin().await;
    let p = Portier::start(&two_pool_config(api.addr, api.addr));
    let out = std::process::Command::new(bin()).args(["healthcheck", "--admin", &p.admin.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The public listener has no /healthz route to the admin API: not healthy by that check.
    let out = std::process::Command::new(bin()).args(["healthcheck", "--admin", &p.public.to_string()]).output().unwrap();
    assert!(!out.status.success());
}

/// A listener whose accept queue is full, so a connect to it times out (on loopback).
fn black_hole() -> (std::net::SocketAddr, Vec<std::net::TcpStream>) {
    // The socket is never closed: it stays in the listen state for the rest of the process.
    let addr = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &a as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        assert_eq!(libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len), 0);
        std::net::SocketAddr::from(([127, 0, 0, 1], u16::from_be(got.sin_port)))
    };
    // Fill the queue; later SYNs are dropped and connects hang until their timeout.
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            held.push(s);
        }
    }
    (addr, held)
}

/// Bug: a connect timeout that ended a request was counted twice (`connect_timeout` and
/// `timeout`), and the documented kind `other` was never emitted.
#[tokio::test(flavor = "multi_thread")]
async fn each_upstream_failure_is_counted_once_by_kind() {
    let (hole, _held) = black_hole();
    // An origin that accepts and hangs up without answering.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude_addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = rude.accept().await {
            drop(s);
        }
    });
    let cfg = format!(
        "[timeouts]\nconnect = \"200ms\"\n[upstreams.hole]\naddresses = [\"{hole}\"]\n[upstreams.rude]\naddresses = [\"{rude_addr}\"]\n\
         [[routes]]\npath = \"/hole\"\npool = \"hole\"\n[[routes]]\npath = \"/rude\"\npool = \"rude\"\n"
    );
    let p = Portier::start(&cfg);
    let r = get(p.public, "/hole").await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.header("cache-status"), "portier; fwd=miss; detail=origin-connect-timeout");
    let r = get(p.public, "/rude").await;
    assert_eq!(r.status, 502, "{r:?}");
    let m = get(p.admin, "/metrics").await.text();
    let v = |kind: &str, pool: &str| metric_value(&m, &format!("upstream_errors_total{{kind=\"{kind}\",pool=\"{pool}\"}}"));
    assert_eq!(v("connect_timeout", "hole"), Some(2.0), "a GET gets a second try; each try counts once:\n{m}");
    assert_eq!(v("timeout", "hole"), None, "and nothing else");
    assert_eq!(v("other", "rude"), Some(1.0), "a hang-up is `other`");
}

/// Bug: a route path ending in a multi-byte character panicked at config load (byte slicing).
#[tokio::test(flavor = "multi_thread")]
async fn a_route_path_with_non_ascii_characters_loads_and_matches_the_encoded_path() {
    let web = origin().await;
    let api = origin().await;
    let cfg = format!(
        "[upstreams.web]\naddresses = [\"{}\"]\n[upstreams.api]\naddresses = [\"{}\"]\n\
         [[routes]]\npath = \"/caf\u{e9}\"\npool = \"api\"\n[[routes]]\npath = \"/*\"\npool = \"web\"\n",
        web.addr, api.addr
    );
    let (ok, out) = check(&format!("[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{cfg}"));
    assert!(ok, "{out}");
    let p = Portier::start(&cfg);
    let r = get(p.public, "/caf%C3%A9").await;
    assert_eq!(r.status, 404, "the demo origin has no such page, but the api pool was asked: {r:?}");
    assert_eq!(api.state.total(), 1);
    assert_eq!(web.state.total(), 0);
}

/// Compose starts containers in any order: an upstream name that does not resolve yet must
/// not stop Portier. That address is down (and `/readyz` says so) until it resolves; names
/// are resolved again every few seconds, so a recreated container's new address is picked up.
#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_upstream_name_is_down_not_fatal() {
    let api = origin().await;
    let cfg = format!(
        "[upstreams.api]\naddresses = [\"portier-unresolved.invalid:3001\", \"{}\"]\n[upstreams.ghost]\naddresses = [\"portier-unresolved.invalid:80\"]\n\
         [[routes]]\npath = \"/ghost\"\npool = \"ghost\"\n[[routes]]\npath = \"/*\"\npool = \"api\"\n",
        api.addr
    );
    let p = Portier::start(&cfg);
    for _ in 0..3 {
        assert_eq!(get(p.public, "/health").await.status, 200, "the resolvable address serves");
    }
    let r = get(p.public, "/ghost").await;
    assert_eq!(r.status, 502, "{r:?}");
    let ready = get(p.admin, "/readyz").await;
    assert_eq!(ready.status, 503);
    let v = ready.json();
    assert_eq!(v["pools"]["api"]["ready"], true);
    assert_eq!(v["pools"]["api"]["addresses"][0]["healthy"], false, "{v}");
    assert_eq!(v["pools"]["ghost"]["ready"], false);
    assert!(p.stdout_lines().iter().any(|l| l.contains("upstream_unresolved") && l.contains("portier-unresolved.invalid:3001")));
}
