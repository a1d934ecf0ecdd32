//! `portier proof` against `portier demo` (all steps pass), against a route with the cache
//! off (fails at step 2 with the reason), against a closed port (one-line error); and a real
//! headless Chromium loading the demo page through Portier, as DevTools shows it.

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn proof(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).arg("proof").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn proof_passes_against_the_demo_including_stale() {
    let demo = start_demo(&root().join("config/portier.toml"));
    let url = format!("http://{}/api/stats/summary", demo.public);
    let (code, out, err) = proof(&[&url, "--username", "demo", "--invalidate", "POST /api/sync"]);
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "1. invalidate: POST /api/sync?username=demo",
        "2. first GET: GET /api/stats/summary?username=demo",
        "X-Cache: MISS",
        "X-Cache: HIT",
        "-> 304",
        "Cache-Status: portier; hit; ttl=",
        "Server-Timing: cache;desc=\"HIT\"",
        "ALL STEPS PASSED",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    assert!(!out.contains("FAIL"));

    // --stale on the short-lived games list, as JSON.
    let games = format!("http://{}/api/games", demo.public);
    let (code, out, err) = proof(&[&games, "--username", "demo", "--invalidate", "POST /api/sync", "--stale", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], true);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6);
    let xcache = |i: usize| {
        steps[i]["exchange"]["headers"].as_array().unwrap().iter().find(|h| h[0] == "x-cache").map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(xcache(4).as_deref(), Some("STALE"));
    assert_eq!(xcache(5).as_deref(), Some("HIT"));

    // Markdown for the report.
    let (code, out, _) = proof(&[&url, "--username", "demo", "--invalidate", "POST /api/sync", "--format", "markdown"]);
    assert_eq!(code, 0);
    assert!(out.contains("| # | step | request | status | X-Cache | Age | ETag | Cache-Status | result |"), "{out}");
    assert!(out.contains("| 304 | HIT |"), "{out}");
    assert!(out.contains("**All steps passed.**"));
}

#[test]
fn proof_fails_at_step_two_when_the_route_does_not_cache() {
    let base = std::fs::read_to_string(root().join("config/portier.toml")).unwrap();
    let cfg = base.replacen("path = \"/api/*\"\npool = \"api\"", "path = \"/api/*\"\npool = \"api\"\ncache = false", 1);
    assert_ne!(cfg, base);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nocache.toml");
    std::fs::write(&path, cfg).unwrap();
    let demo = start_demo(&path);
    let url = format!("http://{}/api/stats/summary", demo.public);
    let (code, out, _) = proof(&[&url, "--username", "demo"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL expected 200, X-Cache: MISS: expected X-Cache: MISS, got X-Cache: BYPASS"), "{out}");
    assert!(out.contains("FAIL expected 200, X-Cache: HIT, Age larger: expected X-Cache: HIT, got X-Cache: BYPASS"), "{out}");
    assert!(out.contains("STEP(S) FAILED"));
}

#[test]
fn proof_on_a_closed_port_or_a_bad_url_is_a_one_line_error() {
    let dead = closed_port();
    let (code, out, err) = proof(&[&format!("http://{dead}/api/stats/summary")]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("portier: cannot connect to {dead}: ")), "{err}");
    let (code, _, err) = proof(&["localhost:8080/x"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "portier: invalid URL \"localhost:8080/x\": expected http://host[:port]/path");
}

/// A real headless Chromium (Debian package) drives the demo page through Portier; the
/// DevTools protocol records what the Network panel would show.
#[test]
fn browser_devtools_sees_the_cache_headers_and_revalidations_answered_by_portier() {
    let script = root().join("proxy/tests/browser/check.mjs");
    assert!(
        root().join("proxy/tests/browser/node_modules/playwright-core").exists(),
        "playwright-core missing: run `make test` (it runs `npm ci` in proxy/tests/browser)"
    );
    assert!(Path::new("/usr/bin/chromium").exists(), "chromium missing: run `make test` or `apt-get install -y chromium`");
    let demo = start_demo(&root().join("config/portier.toml"));
    let base = format!("http://{}", demo.public);
    // Warm the API entry and let it age, as after a first visit.
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Warm the variant the browser will ask for: Chromium offers zstd, br and gzip, and the
    // cache keeps one variant per coding.
    rt.block_on(async {
        get_with(demo.public, "/api/stats/summary?username=demo", &[("Accept-Encoding", "gzip, deflate, br, zstd")]).await
    });
    std::thread::sleep(Duration::from_millis(1100));

    let artifacts = root().join("proxy/tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("demo-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node").arg(&script).arg(&base).arg(&shot).output().expect("node runs");
    assert!(out.status.success(), "browser check failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loads = report["loads"].as_array().unwrap();
    let find = |load: &serde_json::Value, path: &str| load["responses"].as_array().unwrap().iter().find(|r| r["path"] == path).cloned();

    // First load: the API call's headers, as a screenshot of DevTools would show them.
    let api = find(&loads[0], "/api/stats/summary?username=demo").expect("API call recorded");
    let h = &api["headers"];
    assert_eq!(api["status"], 200);
    assert_eq!(h["x-cache"], "HIT");
    assert!(h["age"].as_str().unwrap().parse::<u64>().unwrap() >= 1, "{h}");
    assert!(h["etag"].as_str().unwrap().starts_with('"'));
    assert_eq!(h["cache-control"], "public, max-age=60, stale-while-revalidate=30");
    assert!(h["cache-status"].as_str().unwrap().starts_with("portier; hit; ttl="));
    assert_eq!(h["server-timing"], "cache;desc=\"HIT\"");
    // The page's script could read them (the table it renders).
    let table = &loads[0]["table"];
    assert_eq!(table["x-cache"], "HIT", "{table}");
    assert_eq!(table["etag"], h["etag"]);
    assert_ne!(table["server-timing"], "(absent)");

    // Reload: the page is revalidated and Portier answers 304 itself (X-Cache: HIT on the wire).
    let wire = loads[1]["wire"].as_array().unwrap();
    assert!(wire.iter().any(|w| w["statusCode"] == 304 && w["headers"]["x-cache"] == "HIT"), "a 304 from Portier on reload: {wire:?}");
    // The immutable asset is not requested again.
    let lines = demo.lines.lock().unwrap().clone();
    let asset_requests = lines.iter().filter(|l| l.contains("\"path\":\"/assets/app.js\"")).count();
    assert_eq!(asset_requests, 1, "app.js reached Portier once");
    assert!(
        loads[1]["fromMemoryCache"].as_array().unwrap().iter().any(|p| p == "/assets/app.js")
            || find(&loads[1], "/assets/app.js").is_none()
    );

    let png = std::fs::read(&shot).expect("screenshot saved");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 5_000);
}
