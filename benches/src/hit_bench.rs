//! The cache-hit path's throughput with telemetry fully on (span metrics, JSON access log,
//! traces sampled at 10% to a live OTLP receiver) and off (no per-request metrics, no log,
//! no traces). Runs a release `portier` against the sample origin on loopback, alternating
//! the two configurations over several rounds, and prints the medians and their ratio.
//!
//! Usage: `hit-bench [--portier target/release/portier] [--rounds 5] [--seconds 5] [--connections 32]`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod common;
use common::{load, median, start_proxy};

struct Args {
    portier: String,
    rounds: usize,
    seconds: u64,
    connections: usize,
    /// Which telemetry the "on" side has: all, metrics, log, traces.
    only: String,
}

fn args() -> Args {
    let mut a = Args { portier: "target/release/portier".into(), rounds: 5, seconds: 5, connections: 32, only: "all".into() };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--portier", Some(p)) => a.portier = p.clone(),
            ("--rounds", Some(n)) => a.rounds = n.parse().unwrap_or(a.rounds),
            ("--seconds", Some(n)) => a.seconds = n.parse().unwrap_or(a.seconds),
            ("--connections", Some(n)) => a.connections = n.parse().unwrap_or(a.connections),
            ("--only", Some(w)) if ["all", "metrics", "log", "traces"].contains(&w.as_str()) => a.only = w.clone(),
            _ => {
                eprintln!("usage: hit-bench [--portier PATH] [--rounds N] [--seconds N] [--connections N] [--only all|metrics|log|traces]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// An OTLP/HTTP sink that reads and acknowledges every export (the "live receiver").
async fn otlp_sink() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = listener.local_addr().expect("sink addr");
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let b = b.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        b.fetch_add(body.len() as u64, Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(sock), svc).await;
            });
        }
    });
    (addr, bytes)
}

/// CPU seconds (user + system) the process has used, from /proc (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a = args();
    let origin = portier::demo::Origin::start("127.0.0.1:0".parse().expect("addr")).await.expect("origin");
    let (sink, sink_bytes) = otlp_sink().await;
    let off = "[telemetry]\nmetrics = false\n[telemetry.access_log]\nformat = \"off\"\n";
    let has = |part: &str| a.only == "all" || a.only == part;
    let mut on = format!(
        "[telemetry]\nmetrics = {}\n[telemetry.access_log]\nformat = \"{}\"\n",
        has("metrics"),
        if has("log") { "json" } else { "off" }
    );
    if has("traces") {
        on.push_str(&format!("[telemetry.traces]\nendpoint = \"http://{sink}\"\nsample_ratio = 0.1\n"));
    }
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_per_req: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..a.rounds {
        for (i, (name, tel)) in [("off", off.to_string()), ("on", on.clone())].into_iter().enumerate() {
            let p = start_proxy(&a.portier, origin.addr, &tel, &format!("{name}{round}"));
            // Warm: fill the cache and the connection pool.
            load(p.public, 4, 1).await;
            let cpu0 = cpu_seconds(p.child.id());
            let rps = load(p.public, a.connections, a.seconds).await;
            let cpu = cpu_seconds(p.child.id()) - cpu0;
            let us = cpu * 1e6 / (rps * a.seconds as f64).max(1.0);
            println!("round {round} telemetry {name:>3}: {rps:>10.0} req/s, {us:>6.1} us of proxy CPU per request");
            rates[i].push(rps);
            cpu_per_req[i].push(us);
        }
    }
    let (m_off, m_on) = (median(&rates[0]), median(&rates[1]));
    let (c_off, c_on) = (median(&cpu_per_req[0]), median(&cpu_per_req[1]));
    println!("\ntelemetry on = {}", a.only);
    println!(
        "\nmedian over {} rounds of {} s, {} keep-alive connections, 1 proxy thread:\n  telemetry off: {m_off:.0} req/s\n  telemetry on:  {m_on:.0} req/s\n  difference:    {:.1}% (goal: under 5%)\n  proxy CPU per request: off {c_off:.1} us, on {c_on:.1} us ({:+.1}%)\n  OTLP bytes received by the sink: {}\n  origin requests: {}",
        a.rounds,
        a.seconds,
        a.connections,
        (1.0 - m_on / m_off) * 100.0,
        (c_on / c_off - 1.0) * 100.0,
        sink_bytes.load(Ordering::Relaxed),
        origin.state.total()
    );
}
