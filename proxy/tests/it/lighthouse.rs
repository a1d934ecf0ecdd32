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
