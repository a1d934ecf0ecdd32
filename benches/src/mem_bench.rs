//! What the cache really holds: fills a release Portier with distinct small responses (the
//! sample origin's ~1.8 KB stats JSON) until the byte budget evicts, and compares resident
//! memory with what the cache says it holds; then purges everything and looks again.
//!
//! Usage: `mem-bench [--portier target/release/portier] [--entries 1000000] [--max-size 256MiB]
//!         [--connections 8]`

use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

mod common;
use common::{read_response, start_proxy};

struct Args {
    portier: String,
    entries: usize,
    max_size: String,
    connections: usize,
}

fn args() -> Args {
    let mut a = Args { portier: "target/release/portier".into(), entries: 1_000_000, max_size: "256MiB".into(), connections: 8 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--portier", Some(p)) => a.portier = p.clone(),
            ("--entries", Some(n)) => a.entries = n.parse().unwrap_or(a.entries),
            ("--max-size", Some(s)) => a.max_size = s.clone(),
            ("--connections", Some(n)) => a.connections = n.parse().unwrap_or(a.connections),
            _ => {
                eprintln!("usage: mem-bench [--portier PATH] [--entries N] [--max-size SIZE] [--connections N]");
                std::process::exit(2);
            }
        }
    }
    a
}

async fn stats(admin: std::net::SocketAddr) -> serde_json::Value {
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("admin");
    s.write_all(b"GET /cache/stats HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
    read_response(&mut s, &mut buf, &mut filled).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("{}").trim_end_matches('\0');
    serde_json::from_str(body).unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let a = args();
    let origin = portier::demo::Origin::start("127.0.0.1:0".parse().expect("addr")).await.expect("origin");
    let settings = format!(
        "[telemetry]\nmetrics = false\n[telemetry.access_log]\nformat = \"off\"\n[cache]\nmax_size = \"{}\"\nmax_object_size = \"1MiB\"",
        a.max_size
    );
    let proxy = start_proxy(&a.portier, origin.addr, &settings, "mem");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = proxy.rss_kib();
    let started = Instant::now();
    let per = a.entries.div_ceil(a.connections);
    let mut fills = Vec::new();
    for c in 0..a.connections {
        let addr = proxy.public;
        fills.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
            let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
            for i in c * per..(c + 1) * per {
                let req = format!("GET /api/stats/summary?username=demo&n={i} HTTP/1.1\r\nHost: bench\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() || !read_response(&mut s, &mut buf, &mut filled).await {
                    return;
                }
            }
        }));
    }
    let mut peak = base;
    while fills.iter().any(|f| !f.is_finished()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(proxy.rss_kib());
    }
    for f in fills {
        let _ = f.await;
    }
    let full = proxy.rss_kib();
    let st = stats(proxy.admin).await;
    let (entries, bytes) = (st["entries"].as_u64().unwrap_or(0), st["bytes"].as_u64().unwrap_or(0));
    println!(
        "{} URLs in {:.1} s; cache: {entries} entries, {:.1} MiB accounted, {} evictions",
        a.entries,
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0,
        st["evictions"]
    );
    println!(
        "resident: {:.1} MiB at start, {:.1} MiB full (peak {:.1}); {:.0} B per entry resident, {:.0} B accounted",
        base as f64 / 1024.0,
        full as f64 / 1024.0,
        peak as f64 / 1024.0,
        (full.saturating_sub(base) * 1024) as f64 / entries.max(1) as f64,
        bytes as f64 / entries.max(1) as f64
    );
    let mut s = tokio::net::TcpStream::connect(proxy.admin).await.expect("admin");
    let purge = br#"{"prefix":"/"}"#;
    let req = format!(
        "POST /cache/purge HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        purge.len()
    );
    let _ = s.write_all(req.as_bytes()).await;
    let _ = s.write_all(purge).await;
    let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
    read_response(&mut s, &mut buf, &mut filled).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = stats(proxy.admin).await;
    println!("after purging everything: {} entries, resident {:.1} MiB", st["entries"], proxy.rss_kib() as f64 / 1024.0);
}
