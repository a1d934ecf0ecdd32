//! Hits from the shared tier (Redis) next to hits from memory. Starts a `redis-server` on a
//! free loopback port, the sample origin and release `portier` processes with one worker:
//! a filler stores the object in Redis, then the load runs against a replica whose memory
//! tier cannot keep it (object limit 1 KiB), so every request is a Redis hit; the same load
//! against a memory-only replica gives the baseline. Prints throughput (32 keep-alive
//! connections) and the mean latency of one connection.
//!
//! Usage: `shared-bench [--portier target/release/portier] [--seconds 4] [--connections 32]`

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{free_port, load, start_proxy};

struct Redis(std::process::Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(addr: SocketAddr) -> Redis {
    let child = Command::new("redis-server")
        .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server: {e} (Debian: apt-get install redis-server)"));
    let redis = Redis(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return redis;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not listen on {addr}");
}

async fn metrics(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = String::new();
    if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        let _ = s.read_to_string(&mut out).await;
    }
    out
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Waits until the replica's shared tier is connected.
async fn connected(admin: SocketAddr) {
    for _ in 0..200 {
        if sample(&metrics(admin).await, "cache_shared_up") == 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica did not connect to redis");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let (mut portier, mut seconds, mut connections) = ("target/release/portier".to_string(), 4u64, 32usize);
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--portier", Some(p)) => portier = p.clone(),
            ("--seconds", Some(n)) => seconds = n.parse().unwrap_or(seconds),
            ("--connections", Some(n)) => connections = n.parse().unwrap_or(connections),
            _ => {
                eprintln!("usage: shared-bench [--portier PATH] [--seconds N] [--connections N]");
                std::process::exit(2);
            }
        }
    }
    let redis_addr = free_port();
    let _redis = start_redis(redis_addr);
    let origin = portier::demo::Origin::start("127.0.0.1:0".parse().expect("addr")).await.expect("origin");
    let shared = format!("[cache.shared]\nurl = \"redis://{redis_addr}/0\"\n");
    let memory_only = start_proxy(&portier, origin.addr, "", "memory");
    let filler = start_proxy(&portier, origin.addr, &shared, "filler");
    let l2_only = start_proxy(&portier, origin.addr, &format!("[cache]\nmax_size = \"1KiB\"\nmax_object_size = \"1KiB\"\n{shared}"), "l2");
    connected(filler.admin).await;
    connected(l2_only.admin).await;
    // Store the object: the filler puts it in Redis; the memory-only replica keeps its own.
    load(filler.public, 1, 1).await;
    load(memory_only.public, 1, 1).await;
    let mut rows = Vec::new();
    for (name, p) in [("memory (L1) hit", &memory_only), ("Redis (L2) hit", &l2_only)] {
        load(p.public, 4, 1).await;
        let rps = load(p.public, connections, seconds).await;
        let one = load(p.public, 1, seconds).await;
        rows.push((name, rps, 1e6 / one.max(1e-9)));
    }
    println!("| hit from | req/s ({connections} connections) | mean latency, 1 connection |");
    println!("| --- | --- | --- |");
    for (name, rps, us) in &rows {
        println!("| {name} | {rps:.0} | {us:.0} µs |");
    }
    println!("L2/L1 throughput ratio: {:.2}", rows[1].1 / rows[0].1.max(1e-9));
    // The L2 side really was Redis hits, not origin requests.
    let m = metrics(l2_only.admin).await;
    let (hits, misses) = (sample(&m, "cache_shared_lookups_total{result=\"hit\"}"), sample(&m, "cache_miss_total"));
    println!("L2 replica: {hits:.0} Redis lookups that hit (concurrent misses share one), {misses:.0} requests to the origin");
}
