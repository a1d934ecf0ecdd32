//! The admin listener's `/ui` page in a real headless Chromium (Debian package, driven by
//! playwright-core): the numbers and tables it renders match what Portier counted, and its
//! purge form purges. The screenshot is kept in `proxy/tests/artifacts/operator-ui.png`.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::path::Path;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_page_shows_the_cache_and_purges_from_its_form() {
    assert!(
        root().join("proxy/tests/browser/node_modules/playwright-core").exists(),
        "playwright-core missing: run `make test` (it runs `npm ci` in proxy/tests/browser)"
    );
    assert!(Path::new("/usr/bin/chromium").exists(), "chromium missing: run `make test` or `apt-get install -y chromium`");
    let origin = Scripted::start(|req, _| {
        let cc = if req.target.starts_with("/private") { "no-store" } else { "max-age=60" };
        Reply::new(200, &[("Cache-Control", cc)], format!("body of {}", req.target))
    })
    .await;
    let p = Portier::start(&config_for(origin.addr, "", ""));
    // The page's history starts with the process; the chart needs a second point.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..5 {
        get(p.public, "/hot").await;
    }
    for _ in 0..3 {
        get(p.public, "/private").await;
    }
    get(p.public, "/warm").await;
    get(p.public, "/warm").await;

    // What the page must show, from the JSON it reads.
    let data = get(p.admin, "/ui/data").await.json();
    assert_eq!(data["cache"]["hits"], 5, "{data}");
    assert_eq!(data["top_hits"][0]["path"], "/hot");
    assert_eq!(data["top_hits"][0]["hits"], 4);
    assert_eq!(data["top_misses"][0]["path"], "/private");
    assert_eq!(data["top_misses"][0]["reason"], "no-store");
    let ui = get(p.admin, "/ui").await;
    assert_eq!((ui.status, ui.header("content-type")), (200, "text/html; charset=utf-8"));

    let artifacts = root().join("proxy/tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("operator-ui.png");
    let _ = std::fs::remove_file(&shot);
    let script = root().join("proxy/tests/browser/ui.mjs");
    let admin = format!("http://{}", p.admin);
    let out = tokio::task::spawn_blocking(move || Command::new("node").arg(&script).arg(&admin).arg(&shot).arg("/hot").output())
        .await
        .unwrap()
        .expect("node runs");
    assert!(out.status.success(), "ui check failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("operator page: {report}");
    assert_eq!(report["errors"], serde_json::json!([]), "no script errors");
    assert_eq!(report["error"], "");
    // 5 hits of 10 requests.
    assert_eq!(report["hitRatio"]["text"], "50.0%");
    assert_eq!(report["entries"], 2, "/hot and /warm are stored");
    assert_eq!(report["topHits"][0], serde_json::json!(["/hot", "4", "1"]));
    assert_eq!(report["topHits"][1], serde_json::json!(["/warm", "1", "1"]));
    assert_eq!(report["topMisses"][0], serde_json::json!(["/private", "3", "no-store"]));
    assert_eq!(report["pools"][0], serde_json::json!(["o", origin.addr.to_string(), "up"]));
    assert!(report["memory"].as_str().unwrap().ends_with("/ 256.0 MiB"), "{report}");
    assert!(root().join("proxy/tests/artifacts/operator-ui.png").exists());
    assert!(report["chartPoints"].as_u64().unwrap_or(0) >= 1, "the chart has a segment: {report}");

    // The form purged /hot: the next request goes to the origin.
    assert_eq!(report["purge"], serde_json::json!({"status": 200, "text": "purged 1"}));
    assert_eq!(get(p.public, "/hot").await.header("x-cache"), "MISS");
    assert_eq!(origin.count("/hot"), 2);
}

/// With an admin token, the page's data and its purge need it; the page itself loads.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_data_needs_the_admin_token_when_one_is_set() {
    let origin = Scripted::start(|_, _| Reply::new(200, &[("Cache-Control", "max-age=60")], "x")).await;
    let p = Portier::start(&config_for(
        origin.addr,
        "",
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nadmin_token = \"s3cret\"\n",
    ));
    assert_eq!(get(p.admin, "/ui").await.status, 200);
    assert_eq!(get(p.admin, "/ui/data").await.status, 401);
    let r = get_with(p.admin, "/ui/data", &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["cache"]["enabled"], true);
}
