//! HTTP/3 hits against HTTP/2 hits of the same 2 KB and 100 KB objects from the same Portier
//! (one thread, pinned to `--cpu`), the load generator and the origin on the other CPU.
//!
//! No HTTP/3 load generator installs here (Debian 12's h2load is built without it), so both
//! protocols are driven by one Rust client of the same shape: `--connections` connections with
//! `--streams` requests in flight each, closed loop, on one tokio thread; HTTP/2 through
//! hyper (h2), HTTP/3 through quinn + h3 (the stacks Portier itself uses for each). The
//! rounds alternate H2, H3, H2, H3…; the table gives the median and the range of each figure
//! and of the per-round ratio H3 ÷ H2. `--smoke` runs one short round and fails on a zero
//! figure, an error answer or an origin request during the hit runs.
//!
//! Usage: h3-bench [--rounds 5] [--seconds 3] [--connections 4] [--streams 8] [--cpu 0]
//!                 [--portier target/release/portier] [--smoke]

mod common;
mod static_origin;
use bytes::{Buf, Bytes};
use common::{median, start_proxy_under};
use static_origin::StaticOrigin;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    rounds: usize,
    seconds: u64,
    connections: usize,
    streams: usize,
    cpu: String,
    portier: String,
    smoke: bool,
}

fn args() -> Args {
    let mut a =
        Args { rounds: 5, seconds: 3, connections: 4, streams: 8, cpu: "0".into(), portier: "target/release/portier".into(), smoke: false };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--rounds" => a.rounds = v().parse().expect("--rounds N"),
            "--seconds" => a.seconds = v().parse().expect("--seconds N"),
            "--connections" => a.connections = v().parse().expect("--connections N"),
            "--streams" => a.streams = v().parse().expect("--streams N"),
            "--cpu" => a.cpu = v(),
            "--portier" => a.portier = v(),
            "--smoke" => a.smoke = true,
            other => panic!("unknown argument {other}"),
        }
    }
    if a.smoke {
        (a.rounds, a.seconds) = (1, 1);
    }
    a
}

fn client_tls(cert_der: rustls::pki_types::CertificateDer<'static>, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("the bench certificate");
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    c
}

/// What one run measured.
#[derive(Clone, Copy, Default)]
struct Run {
    rps: f64,
    p99_ms: f64,
    errors: u64,
    /// Portier's CPU time (user + system) per request, µs: whether it or the client was the limit.
    cpu_us: f64,
}

/// Latencies in microseconds, kept per worker and merged at the end.
type Latencies = Vec<u32>;

fn summarise(lat: &mut [u32], done: u64, errors: u64, secs: f64) -> Run {
    lat.sort_unstable();
    let p99 = lat.get(((lat.len() as f64 * 0.99) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    Run { rps: done as f64 / secs, p99_ms: f64::from(p99) / 1000.0, errors, cpu_us: 0.0 }
}

async fn run_h2(addr: SocketAddr, cert: &rustls::pki_types::CertificateDer<'static>, path: &str, a: &Args) -> Run {
    use http_body_util::BodyExt;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    let tls = Arc::new(client_tls(cert.clone(), b"h2"));
    for _ in 0..a.connections {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.expect("TLS");
        let (send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        for _ in 0..a.streams {
            let uri = format!("https://localhost:{}{path}", addr.port());
            workers.push(tokio::spawn(worker(&stop, &done, &errors, send.clone(), move |mut send| {
                let uri = uri.clone();
                async move {
                    let req = http::Request::get(&uri).body(http_body_util::Empty::<Bytes>::new()).expect("request");
                    let ok = match send.send_request(req).await {
                        Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    (send, ok)
                }
            })));
        }
    }
    finish(workers, stop, done, errors, a.seconds).await
}

async fn run_h3(addr: SocketAddr, cert: &rustls::pki_types::CertificateDer<'static>, path: &str, a: &Args) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(cert.clone(), b"h3")).expect("QUIC TLS");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("UDP socket");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let mut drivers = Vec::new();
    for _ in 0..a.connections {
        let conn = endpoint.connect(addr, "localhost").expect("connect").await.expect("QUIC handshake");
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await.expect("h3 connection");
        drivers.push(tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await }));
        for _ in 0..a.streams {
            let uri = format!("https://localhost:{}{path}", addr.port());
            workers.push(tokio::spawn(worker(&stop, &done, &errors, send.clone(), move |mut send| {
                let uri = uri.clone();
                async move {
                    let ok = async {
                        let req = http::Request::get(&uri).body(()).ok()?;
                        let mut s = send.send_request(req).await.ok()?;
                        s.finish().await.ok()?;
                        let resp = s.recv_response().await.ok()?;
                        while let Some(mut chunk) = s.recv_data().await.ok()? {
                            chunk.advance(chunk.remaining());
                        }
                        (resp.status() == 200).then_some(())
                    }
                    .await
                    .is_some();
                    (send, ok)
                }
            })));
        }
    }
    let r = finish(workers, stop, done, errors, a.seconds).await;
    for d in drivers {
        d.abort();
    }
    endpoint.close(0u32.into(), b"done");
    r
}

/// One closed-loop client: `request` (which hands its sender back) until `stop`, the
/// successes counted and timed, the failures counted.
fn worker<S, F, Fut>(
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicU64>,
    errors: &Arc<AtomicU64>,
    send: S,
    mut request: F,
) -> impl std::future::Future<Output = Latencies>
where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = (S, bool)>,
{
    let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
    async move {
        let mut lat = Latencies::new();
        let mut send = Some(send);
        while let (false, Some(s)) = (stop.load(Ordering::Relaxed), send.take()) {
            let t = Instant::now();
            let (s, ok) = request(s).await;
            send = Some(s);
            if ok {
                done.fetch_add(1, Ordering::Relaxed);
                lat.push(t.elapsed().as_micros() as u32);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        lat
    }
}

async fn finish(
    workers: Vec<tokio::task::JoinHandle<Latencies>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    seconds: u64,
) -> Run {
    let start = Instant::now();
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let counted = done.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for w in workers {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(10), w).await {
            lat.extend(l);
        }
    }
    summarise(&mut lat, counted, errors.load(Ordering::Relaxed), secs)
}

/// User + system CPU seconds of a process so far (/proc/PID/stat, clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// One measured run with Portier's CPU time per request.
async fn measured(pid: u32, seconds: u64, run: impl std::future::Future<Output = Run>) -> Run {
    let before = cpu_seconds(pid);
    let mut r = run.await;
    let requests = r.rps * seconds as f64;
    if requests > 0.0 {
        r.cpu_us = (cpu_seconds(pid) - before) * 1e6 / requests;
    }
    r
}

fn range(v: &[f64]) -> (f64, f64) {
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

fn main() {
    let a = args();
    if !std::path::Path::new(&a.portier).exists() {
        eprintln!("{} not found: build it with `cargo build --release -p portier`, or pass --portier PATH", a.portier);
        std::process::exit(1);
    }
    if std::thread::available_parallelism().map_or(0, |n| n.get()) < 2 {
        eprintln!("h3-bench pins Portier and the load generator to two different CPUs: this machine has one");
        std::process::exit(1);
    }
    let other = if a.cpu == "0" { "1" } else { "0" };
    let _ = Command::new("taskset").args(["-a", "-p", "-c", other, &std::process::id().to_string()]).stdout(Stdio::null()).status();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let origin = StaticOrigin::start().await;
        let dir = std::env::temp_dir().join(format!("portier-h3-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).expect("cert.pem");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("key.pem");
        let der = c.cert.der().clone();
        let settings = format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\nhttp3 = true\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
             [limits]\nmax_requests_per_client = 100000\n",
            cert.display(),
            key.display()
        );
        let mut p = start_proxy_under(&[], &a.portier, origin.addr, &settings, "h3");
        let _ = Command::new("taskset").args(["-a", "-p", "-c", &a.cpu, &p.child.id().to_string()]).stdout(Stdio::null()).status();
        let tls = p.tls.expect("the TLS listener");
        let objects = [("2 KB", "/2k?h3bench"), ("100 KB", "/100k")];
        // Warm each object into the cache (one origin request each), over both protocols.
        let warm = Args { seconds: 1, connections: 1, streams: 1, ..args() };
        for (_, path) in objects {
            run_h2(tls, &der, path, &warm).await;
            run_h3(tls, &der, path, &warm).await;
        }
        // One origin request per object: the H3 warm-up was a hit of the H2 one's entry.
        let fills: Vec<u64> = objects.iter().map(|(_, path)| origin.hits(path)).collect();
        let origin_before = origin.total();
        let mut failed = false;
        let mut out = format!(
            "HTTP/3 vs HTTP/2 hits, {} round(s) × {} s each, {} connections × {} streams, Portier (one thread) on CPU {}, client and origin on CPU {other}\n\n\
             | object | HTTP/2 req/s | HTTP/3 req/s | H3 ÷ H2 | HTTP/2 p99 | HTTP/3 p99 | Portier CPU per request, H2 / H3 |\n|---|---|---|---|---|---|---|\n",
            a.rounds, a.seconds, a.connections, a.streams, a.cpu
        );
        for (label, path) in objects {
            let (mut h2, mut h3) = (Vec::new(), Vec::new());
            for _ in 0..a.rounds {
                let pid = p.child.id();
                h2.push(measured(pid, a.seconds, run_h2(tls, &der, path, &a)).await);
                h3.push(measured(pid, a.seconds, run_h3(tls, &der, path, &a)).await);
            }
            let med = |v: &[Run], f: fn(&Run) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
            let rng = |v: &[Run], f: fn(&Run) -> f64| range(&v.iter().map(f).collect::<Vec<_>>());
            let ratios: Vec<f64> = h2.iter().zip(&h3).map(|(a, b)| if a.rps > 0.0 { b.rps / a.rps } else { 0.0 }).collect();
            let (rl, rh) = range(&ratios);
            let cell = |v: &[Run], f: fn(&Run) -> f64, d: usize| {
                let (lo, hi) = rng(v, f);
                format!("{:.d$} ({lo:.d$}–{hi:.d$})", med(v, f))
            };
            out += &format!(
                "| {label} | {} | {} | {:.2} ({rl:.2}–{rh:.2}) | {} ms | {} ms | {:.0} / {:.0} µs |\n",
                cell(&h2, |r| r.rps, 0),
                cell(&h3, |r| r.rps, 0),
                median(&ratios),
                cell(&h2, |r| r.p99_ms, 2),
                cell(&h3, |r| r.p99_ms, 2),
                med(&h2, |r| r.cpu_us),
                med(&h3, |r| r.cpu_us),
            );
            let errors: u64 = h2.iter().chain(&h3).map(|r| r.errors).sum();
            if errors > 0 || h2.iter().chain(&h3).any(|r| r.rps <= 0.0) {
                eprintln!("{label}: {errors} failed requests, or a zero figure");
                failed = true;
            }
        }
        let origin_during = origin.total() - origin_before;
        out += &format!("\norigin requests: {fills:?} to fill the objects, {origin_during} during the hit runs\n");
        failed |= fills.iter().any(|n| *n != 1);
        print!("{out}");
        p.terminate();
        let _ = std::fs::remove_dir_all(&dir);
        if a.smoke && (failed || origin_during > 0) {
            std::process::exit(1);
        }
    });
}
