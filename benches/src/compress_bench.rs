//! Compression: what each coding and level saves and costs, and what serving a compressed
//! variant from the cache costs against an identity one.
//!
//! 1. Ratio and CPU per KB for gzip, br and zstd at several levels, on real text from this
//!    repository: its Rust sources (code, like a JS bundle) and its Grafana dashboards (JSON,
//!    like API answers). In-process, the same crates Portier uses.
//! 2. Hits of a ~100 KB script through a release `portier`, identity vs zstd variant.
//! 3. The background re-compression (`compression.recompress`): the first request's time for
//!    a 250 KB script (a miss: compressed at the quick level while it passes) with it on and
//!    off, 5 alternating rounds of 20 new URLs each, each then hit once (which queues its
//!    re-compression, running beside the next misses); and the bytes a hit then sends.
//!
//! Usage: `compress-bench [--portier target/release/portier] [--seconds 3] [--connections 16]`

use bytes::Bytes;
use http_body_util::Full;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod common;
use common::{load_with, median, start_proxy};

/// One GET on a new connection, read to its end: (milliseconds, body-and-head bytes).
async fn one_get(addr: SocketAddr, path: &str) -> (f64, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: zstd\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    (t.elapsed().as_secs_f64() * 1000.0, out.len())
}

fn files(dir: &std::path::Path, ext: &str, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
}

fn compress(coding: &str, level: u32, input: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(input).expect("gzip");
            e.finish().expect("gzip")
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, level, 22);
                w.write_all(input).expect("br");
            }
            out
        }
        _ => zstd::encode_all(input, level as i32).expect("zstd"),
    }
}

fn measure(name: &str, input: &[u8]) {
    println!("\n{name}: {} KB", input.len() / 1024);
    println!("| coding | level | ratio (out/in) | µs per KB |");
    println!("| --- | --- | --- | --- |");
    for (coding, levels) in [("gzip", &[1u32, 4, 6, 9][..]), ("br", &[1, 4, 5, 7, 11]), ("zstd", &[1, 3, 6, 12, 19])] {
        for &level in levels {
            let mut best = Duration::MAX;
            let mut out_len = 0;
            for _ in 0..3 {
                let t = Instant::now();
                out_len = compress(coding, level, input).len();
                best = best.min(t.elapsed());
            }
            let per_kb = best.as_secs_f64() * 1e6 / (input.len() as f64 / 1024.0);
            println!("| {coding} | {level} | {:.3} | {per_kb:.1} |", out_len as f64 / input.len() as f64);
        }
    }
}

/// An origin serving `body` as a cacheable script at every path.
async fn origin(body: Bytes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(body));
                        r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/javascript"));
                        r.headers_mut().insert("cache-control", hyper::header::HeaderValue::from_static("public, max-age=3600"));
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(sock), svc).await;
            });
        }
    });
    addr
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut portier = "target/release/portier".to_string();
    let (mut seconds, mut connections) = (3u64, 16usize);
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--portier", Some(p)) => portier = p.clone(),
            ("--seconds", Some(n)) => seconds = n.parse().unwrap_or(seconds),
            ("--connections", Some(n)) => connections = n.parse().unwrap_or(connections),
            _ => {
                eprintln!("usage: compress-bench [--portier PATH] [--seconds N] [--connections N]");
                std::process::exit(2);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut code = Vec::new();
    files(&root.join("proxy/src"), "rs", &mut code);
    let mut json = Vec::new();
    files(&root.join("observability/grafana"), "json", &mut json);
    measure("code (proxy/src/**/*.rs)", &code);
    measure("JSON (observability/grafana/**/*.json)", &json);

    let script = Bytes::from(code[..code.len().min(100 * 1024)].to_vec());
    let addr = origin(script.clone()).await;
    let p = start_proxy(&portier, addr, "[telemetry]\nmetrics = false\n[telemetry.access_log]\nformat = \"off\"", "compress");
    let identity: &'static [u8] = b"GET /bundle.js HTTP/1.1\r\nHost: bench\r\n\r\n";
    let zstd: &'static [u8] = b"GET /bundle.js HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: zstd\r\n\r\n";
    load_with(p.public, 2, 1, identity).await;
    load_with(p.public, 2, 1, zstd).await;
    println!("\nhits of a {} KB script, {connections} keep-alive connections, 1 proxy thread, {seconds} s each:", script.len() / 1024);
    for round in 0..2 {
        for (name, req) in [("identity", identity), ("zstd", zstd)] {
            let rps = load_with(p.public, connections, seconds, req).await;
            println!("  round {round} {name:>8}: {rps:>8.0} req/s");
        }
    }
    drop(p);

    let big = Bytes::from(code[..code.len().min(250 * 1024)].to_vec());
    let addr = origin(big.clone()).await;
    let quiet = "[telemetry]\nmetrics = false\n[telemetry.access_log]\nformat = \"off\"";
    let on = start_proxy(&portier, addr, quiet, "recompress-on");
    let off = start_proxy(&portier, addr, &format!("[compression]\nrecompress = false\n{quiet}"), "recompress-off");
    // Two cases: new scripts one after another (the background re-compression of the
    // earlier ones runs beside the request measured), and one at a time with the background
    // idle (the request path's own cost).
    for (case, gap) in [("back to back", Duration::ZERO), ("background idle", Duration::from_millis(400))] {
        println!("\nfirst request (a miss) for a {} KB script, zstd, {case}, 20 new URLs per round, medians:", big.len() / 1024);
        println!("| round | recompress on (ms) | off (ms) | on / off |");
        println!("| --- | --- | --- | --- |");
        let mut ratios = Vec::new();
        for round in 0..5 {
            let mut times = [Vec::new(), Vec::new()];
            for i in 0..20 {
                for (k, p) in [&on, &off].iter().enumerate() {
                    let path = format!("/{}/r{round}/{i}.js", gap.as_millis());
                    times[k].push(one_get(p.public, &path).await.0);
                    one_get(p.public, &path).await;
                    tokio::time::sleep(gap).await;
                }
            }
            let (a, b) = (median(&times[0]), median(&times[1]));
            ratios.push(a / b);
            println!("| {round} | {a:.2} | {b:.2} | {:.2} |", a / b);
        }
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        println!("on / off: median {:.2} (range {:.2}–{:.2})", median(&ratios), sorted[0], sorted[sorted.len() - 1]);
    }
    // A new script, filled and hit once, once the queue has drained (at most 60 s).
    for p in [&on, &off] {
        one_get(p.public, "/final.js").await;
        one_get(p.public, "/final.js").await;
    }
    let (_, hit_off) = one_get(off.public, "/final.js").await;
    let start = Instant::now();
    let mut hit_on = one_get(on.public, "/final.js").await.1;
    while hit_on >= hit_off && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        hit_on = one_get(on.public, "/final.js").await.1;
    }
    println!("a hit afterwards sends {hit_on} bytes with it on, {hit_off} off ({:.3}×)", hit_on as f64 / hit_off as f64);
}
