//! The eco report's measure, for real: Lighthouse (npm `lighthouse`, driving Debian's
//! Chromium) on a page that loads a large script through Portier. With compression the
//! "Enable text compression" audit passes and the page weighs at least 60% less than
//! through the same Portier with `compress = []`.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::process::Command;

fn lighthouse(url: &str) -> serde_json::Value {
    lighthouse_only(url, "--only-audits=uses-text-compression,total-byte-weight")
}

/// Lighthouse on `url` with one `--only-audits=...` or `--only-categories=...` selection.
pub(crate) fn lighthouse_only(url: &str, selection: &str) -> serde_json::Value {
    let dir = root().join("proxy/tests/browser");
    let profile = tempfile::tempdir().unwrap();
    let flags = format!(
        "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --disable-background-networking \
         --disable-component-update --disable-sync --disable-quic --user-data-dir={}",
        profile.path().display()
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .env("CHROME_PATH", "/usr/bin/chromium")
        .arg("node_modules/lighthouse/cli/index.js")
        .arg(url)
        .args(["--quiet", "--output=json", "--output-path=stdout", selection])
        .args(["--form-factor=desktop", "--screenEmulation.disabled", "--throttling-method=provided", "--max-wait-for-load=20000"])
        .arg(format!("--chrome-flags={flags}"))
        .output()
        .expect("node runs lighthouse (make test installs it with npm)");
    assert!(out.status.success(), "lighthouse failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("lighthouse JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn lighthouse_text_compression_passes_and_bytes_drop_by_60_percent() {
    assert!(
        root().join("proxy/tests/browser/node_modules/lighthouse").exists(),
        "lighthouse missing: run `make test` (it runs `npm ci` in proxy/tests/browser)"
    );
    let o = Scripted::start(|req, _| match req.target.as_str() {
        "/app.js" => {
            let js: String = (0..6000).map(|i| format!("function handler{i}(event) {{ return event.detail * {i}; }}\n")).collect();
            Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=600")], js)
        }
        _ => Reply::new(
            200,
            &[("content-type", "text/html; charset=utf-8"), ("cache-control", "max-age=600")],
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>eco</title></head><body><h1>Eco</h1><script src=\"/app.js\"></script></body></html>",
        ),
    })
    .await;
    let on = Portier::start(&config_for(o.addr, "", ""));
    let off = Portier::start(&config_for(o.addr, "compress = []", ""));
    let (url_on, url_off) = (format!("http://127.0.0.1:{}/", on.public.port()), format!("http://127.0.0.1:{}/", off.public.port()));
    let (with, without) = tokio::task::spawn_blocking(move || (lighthouse(&url_on), lighthouse(&url_off))).await.unwrap();
    let audit = |r: &serde_json::Value, id: &str| r["audits"][id].clone();
    assert_eq!(audit(&with, "uses-text-compression")["score"], 1.0, "{}", audit(&with, "uses-text-compression"));
    assert_ne!(audit(&without, "uses-text-compression")["score"], 1.0, "Lighthouse flags the uncompressed page");
    let bytes = |r: &serde_json::Value| audit(r, "total-byte-weight")["numericValue"].as_f64().unwrap();
    let (b_on, b_off) = (bytes(&with), bytes(&without));
    assert!(b_on <= 0.4 * b_off, "transferred {b_on} bytes compressed vs {b_off} uncompressed");
    println!("lighthouse total-byte-weight: {b_on} compressed, {b_off} uncompressed ({:.0}% less)", (1.0 - b_on / b_off) * 100.0);
}

/// Caddy 2 (Debian's), as the runbook's front door was: `encode zstd gzip` and
/// `reverse_proxy`; killed on drop.
struct Caddy {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Caddy {
    fn start(origin: std::net::SocketAddr) -> Caddy {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_port();
        let file = dir.path().join("Caddyfile");
        std::fs::write(
            &file,
            format!("{{\n  admin off\n  auto_https off\n}}\nhttp://{addr} {{\n  encode zstd gzip\n  reverse_proxy {origin}\n}}\n"),
        )
        .unwrap();
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("caddy runs (make test installs Debian's caddy)");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "caddy did not listen on {addr}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Caddy { child, addr, _dir: dir }
    }
}

/// The same page with a real 247 KB library (acorn) through Caddy and through Portier, in
/// Lighthouse: Portier's stored copy, re-compressed at the strongest level once stored, makes
/// the page at most 0.9× Caddy's weight.
#[tokio::test(flavor = "multi_thread")]
async fn page_weight_is_at_most_nine_tenths_of_caddys() {
    let lib = crate::compression::library();
    let o = Scripted::start(move |req, _| match req.target.as_str() {
        "/lib.js" => Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=600"), ("etag", "\"l1\"")], lib.clone()),
        _ => Reply::new(
            200,
            &[("content-type", "text/html; charset=utf-8"), ("cache-control", "max-age=600")],
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>eco</title></head><body><h1>Eco</h1><script src=\"/lib.js\"></script></body></html>",
        ),
    })
    .await;
    let caddy = Caddy::start(o.addr);
    let p = Portier::start(&config_for(o.addr, "", ""));
    // One visit fills the cache, the next hits it; the re-compression then replaces the
    // stored copy.
    let ae = [("accept-encoding", "gzip, deflate, br, zstd")];
    assert_eq!(get_with(p.public, "/lib.js", &ae).await.header("x-cache"), "MISS");
    assert_eq!(get_with(p.public, "/lib.js", &ae).await.header("x-cache"), "HIT");
    let start = std::time::Instant::now();
    while !get_with(p.public, "/lib.js", &ae).await.header("etag").ends_with("-max\"") {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "re-compressed within 20 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (url_p, url_c) = (format!("http://127.0.0.1:{}/", p.public.port()), format!("http://{}/", caddy.addr));
    let (portier, caddy_report) = tokio::task::spawn_blocking(move || {
        let sel = "--only-audits=total-byte-weight";
        (lighthouse_only(&url_p, sel), lighthouse_only(&url_c, sel))
    })
    .await
    .unwrap();
    let bytes = |r: &serde_json::Value| r["audits"]["total-byte-weight"]["numericValue"].as_f64().unwrap();
    let (b_p, b_c) = (bytes(&portier), bytes(&caddy_report));
    println!("lighthouse total-byte-weight: Portier {b_p} B, Caddy (encode zstd gzip) {b_c} B: {:.3}×", b_p / b_c);
    assert!(b_p <= 0.9 * b_c, "Portier {b_p} B vs Caddy {b_c} B");
}
