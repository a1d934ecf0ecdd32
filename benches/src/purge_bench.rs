//! Do invalidations stall hits? Fills the cache with many entries, then measures the latency
//! of hits on one URL over keep-alive connections, first alone and then while a stream of
//! `POST /api/sync?username=...` runs beside them (the runbook's invalidation rule, for a
//! user with nothing cached, so every hit stays a hit and only the purge's lookup costs).
//! Before the storage had indexes, each sync scanned every entry under the storage lock.
//!
//! Usage: `purge-bench [--portier target/release/portier] [--entries 50000] [--seconds 4]
//!         [--connections 8] [--syncs-per-second 200]`

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

mod common;
use common::{read_response, start_proxy};

struct Args {
    portier: String,
    entries: usize,
    seconds: u64,
    connections: usize,
    syncs_per_second: u64,
}

fn args() -> Args {
    let mut a = Args { portier: "target/release/portier".into(), entries: 50_000, seconds: 4, connections: 8, syncs_per_second: 200 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--portier", Some(p)) => a.portier = p.clone(),
            ("--entries", Some(n)) => a.entries = n.parse().unwrap_or(a.entries),
            ("--seconds", Some(n)) => a.seconds = n.parse().unwrap_or(a.seconds),
            ("--connections", Some(n)) => a.connections = n.parse().unwrap_or(a.connections),
            ("--syncs-per-second", Some(n)) => a.syncs_per_second = n.parse().unwrap_or(a.syncs_per_second),
            _ => {
                eprintln!("usage: purge-bench [--portier PATH] [--entries N] [--seconds N] [--connections N] [--syncs-per-second N]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// One keep-alive connection; sends `req` and reads each response whole. Returns the
/// latency of every exchange until `deadline`.
async fn exchanges(addr: SocketAddr, req: Vec<u8>, deadline: Instant, pace: Option<Duration>) -> Vec<Duration> {
    let mut out = Vec::new();
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return out };
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(p) = pace {
            tokio::time::sleep_until(next.into()).await;
            next += p;
        }
        let start = Instant::now();
        if s.write_all(&req).await.is_err() {
            return out;
        }
        if !read_response(&mut s, &mut buf, &mut filled).await {
            return out;
        }
        out.push(start.elapsed());
    }
    out
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn hits(addr: SocketAddr, a: &Args, with_syncs: bool) -> (Vec<Duration>, usize) {
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let hit = b"GET /api/stats/summary?username=demo HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec();
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        tasks.push(tokio::spawn(exchanges(addr, hit.clone(), deadline, None)));
    }
    let syncs = with_syncs.then(|| {
        let sync = b"POST /api/sync?username=nobody HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n".to_vec();
        tokio::spawn(exchanges(addr, sync, deadline, Some(Duration::from_secs(1) / a.syncs_per_second.max(1) as u32)))
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let n_syncs = match syncs {
        Some(t) => t.await.map(|v| v.len()).unwrap_or(0),
        None => 0,
    };
    all.sort();
    (all, n_syncs)
}

#[tokio::main]
async fn main() {
    let a = args();
    let origin = portier::demo::Origin::start("127.0.0.1:0".parse().expect("addr")).await.expect("origin");
    let rule = "[[invalidation]]\nmethod = \"POST\"\npath = \"/api/sync\"\nprefixes = [\"/api/stats/\", \"/api/games\"]\nmatch_param = \"username\"\n\
                [telemetry]\nmetrics = false\n[telemetry.access_log]\nformat = \"off\"\n[cache]\nmax_size = \"1GiB\"";
    let proxy = start_proxy(&a.portier, origin.addr, rule, "purge");
    // Fill: distinct cached URLs under the rule's prefix, for a user the syncs never name.
    let fill_deadline = Instant::now() + Duration::from_secs(120);
    let per = a.entries.div_ceil(8);
    let mut fills = Vec::new();
    for c in 0..8 {
        let addr = proxy.public;
        fills.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0;
            for i in c * per..(c + 1) * per {
                if Instant::now() > fill_deadline {
                    return;
                }
                let req = format!("GET /api/stats/summary?username=demo&n={i} HTTP/1.1\r\nHost: bench\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() || !read_response(&mut s, &mut buf, &mut filled).await {
                    return;
                }
            }
        }));
    }
    for f in fills {
        let _ = f.await;
    }
    println!("filled {} entries ({} origin requests)", a.entries, origin.state.total());
    for (label, with_syncs) in [("hits alone", false), ("hits + syncs", true), ("hits alone", false), ("hits + syncs", true)] {
        let (lat, syncs) = hits(proxy.public, &a, with_syncs).await;
        println!(
            "{label:>13}: {:>8} hits  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  ({syncs} syncs)",
            lat.len(),
            quantile(&lat, 0.5).as_secs_f64() * 1000.0,
            quantile(&lat, 0.99).as_secs_f64() * 1000.0,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        );
    }
}
